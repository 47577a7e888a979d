//! `examples/subprocess_pipe.rs`: a command's stdout and stderr, line by
//! line with their prefixes, and its exit code.
//!
//! Needs the example binary: a plain `cargo test` builds it (see
//! `examples_support`).

mod examples_support;

use std::process::Command;

#[test]
fn subprocess_pipe_prefixes_lines_and_passes_the_exit_code() {
    let out = Command::new(examples_support::example_path("subprocess_pipe"))
        .args([
            "sh",
            "-c",
            "echo one; echo two >&2; echo three; printf 'no newline'; exit 7",
        ])
        .output()
        .expect("run subprocess_pipe (built by `cargo build --examples`)");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    // Each stream keeps its order; the two may interleave either way.
    let of = |p: &str| -> Vec<&str> { lines.iter().filter_map(|l| l.strip_prefix(p)).collect() };
    assert_eq!(of("out: "), ["one", "three", "no newline"], "{stdout}");
    assert_eq!(of("err: "), ["two"], "{stdout}");
    assert_eq!(lines.len(), 4);
}

#[test]
fn subprocess_pipe_reports_a_signal_as_128_plus_it() {
    let out = Command::new(examples_support::example_path("subprocess_pipe"))
        .args(["sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn subprocess_pipe_missing_program_fails() {
    let out = Command::new(examples_support::example_path("subprocess_pipe"))
        .arg("/no/such/program")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}
