//! The crate's layering (docs/design.md D14), checked on the source: each
//! top-level module names others only below it. `crate::x` paths (in `use`
//! lines and in code) form no cycle between top-level modules, except
//! protocol ⇄ transport, and nothing under `src/transport` names the
//! bridge, the server, connections or `net`. Paths through the crate root's
//! re-exports count as the module that defines the item.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The pairs of modules allowed to name each other.
const ALLOWED_CYCLES: &[(&str, &str)] = &[("protocol", "transport")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/transport/cell.rs` →
/// `transport`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// Code without comments (line comments and doc comments).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::name` → the top-level module it lives in: a module's own name,
/// or, for an item re-exported at the crate root, the module the
/// re-export comes from.
fn root_items(lib: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    let code = code_of(lib);
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap().trim().to_owned();
        let names: Vec<&str> = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) => rest[a + 1..b].split(',').collect(),
            _ => vec![rest.rsplit("::").next().unwrap()],
        };
        for name in names {
            let name = name.split(" as ").last().unwrap().trim();
            if !name.is_empty() {
                items.insert(name.to_owned(), module.clone());
            }
        }
    }
    items
}

fn imports() -> BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let items = root_items(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" {
            continue;
        }
        let code = code_of(&fs::read_to_string(file).unwrap());
        let mut rest = code.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let to = if modules.contains(&name) {
                name
            } else if let Some(m) = items.get(&name) {
                m.clone()
            } else {
                continue;
            };
            if to != from {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(file.strip_prefix(&src).unwrap().to_path_buf());
            }
        }
    }
    edges
}

fn allowed(a: &str, b: &str) -> bool {
    ALLOWED_CYCLES
        .iter()
        .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
}

#[test]
fn transport_names_nothing_above_it() {
    let edges = imports();
    let up: Vec<_> = edges
        .get("transport")
        .into_iter()
        .flatten()
        .filter(|(to, _)| ["bridge", "server", "connect", "net"].contains(&to.as_str()))
        .collect();
    assert!(up.is_empty(), "transport imports from above: {up:?}");
}

#[test]
fn top_level_modules_form_no_cycle_but_protocol_and_transport() {
    let edges = imports();
    // Depth-first search for a path back to the start, skipping the
    // allowed pair's edges.
    let next = |m: &str| -> Vec<String> {
        edges
            .get(m)
            .into_iter()
            .flat_map(|e| e.keys())
            .filter(|to| !allowed(m, to))
            .cloned()
            .collect()
    };
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for to in next(&m) {
                if &to == start {
                    let mut cycle = path.clone();
                    cycle.push(to);
                    let witness: Vec<_> = cycle
                        .windows(2)
                        .map(|w| (w[0].clone(), w[1].clone(), edges[&w[0]][&w[1]].clone()))
                        .collect();
                    panic!("import cycle {cycle:?}: {witness:?}");
                }
                if seen.insert(to.clone()) {
                    let mut p = path.clone();
                    p.push(to.clone());
                    stack.push((to, p));
                }
            }
        }
    }
}
