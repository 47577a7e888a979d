//! Running an example binary as a server for interop tests: start it on
//! `127.0.0.1:0`, read the address from its `listening on ADDR` line, and
//! kill it when the test ends (also when it fails).
//!
//! `cargo test` builds the examples next to the test binaries
//! (`target/<profile>/examples/`). With a narrower target selection (for
//! instance `cargo test --test interop_hyper`) cargo does not build them:
//! the tests then fail with a message asking for `cargo build --examples`,
//! when the binary is missing or older than its source or the library's.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The safety net for waiting on a child or a client: generous, never the
/// thing waited on.
pub const SAFETY: Duration = Duration::from_secs(30);

/// The path of example `name`, built for the same profile as this test.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary> → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary is in target/<profile>/deps");
    dir.join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The newest modification time of `path` or, for a directory, of any
/// file under it.
fn newest(path: &Path) -> SystemTime {
    let Ok(meta) = std::fs::metadata(path) else {
        return SystemTime::UNIX_EPOCH;
    };
    if !meta.is_dir() {
        return meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| newest(&e.path()))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A running example server; killed (and reaped) on drop. If the test is
/// failing, the child's stderr is printed then.
pub struct ExampleServer {
    name: String,
    child: Child,
    /// The address from its `listening on ADDR` line.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// What it printed after its `listening on` line.
    stdout: Arc<Mutex<String>>,
}

impl ExampleServer {
    /// Starts example `name` on `127.0.0.1:0` with `extra` arguments after
    /// the address, and waits (at most [`SAFETY`]) for its `listening on`
    /// line.
    pub fn start(name: &str, extra: &[&str]) -> ExampleServer {
        let path = example_path(name);
        let built = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| {
                panic!(
                    "example binary {} not found ({e}): it is built by a plain \
                     `cargo test`; with a narrower selection (`--test ...`) run \
                     `cargo build --examples` first",
                    path.display()
                )
            });
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let source = newest(&root.join("examples").join(format!("{name}.rs")))
            .max(newest(&root.join("src")));
        assert!(
            source <= built,
            "example binary {} is older than its sources: run `cargo build --examples` \
             (a narrower `cargo test --test ...` does not rebuild examples)",
            path.display()
        );
        let mut child = Command::new(&path)
            .arg("127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));

        // Keep the child's stderr, to show it if the test fails.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock().unwrap().push_str(&text);
            }
        });

        // Read stdout on a thread so a silent child cannot hang the test;
        // keep draining it afterwards so the child never blocks on a full
        // pipe.
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let rest = stdout.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                    break;
                }
            }
            for line in lines.map_while(Result::ok) {
                let mut rest = rest.lock().unwrap();
                rest.push_str(&line);
                rest.push('\n');
            }
        });
        let mut server = ExampleServer {
            name: name.to_owned(),
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            stderr,
            stdout,
        };
        let line = match rx.recv_timeout(SAFETY) {
            Ok(line) => line,
            Err(_) => panic!(
                "example {name} did not print `listening on ADDR` (status: {:?}); stderr:\n{}",
                server.child.try_wait(),
                server.stderr()
            ),
        };
        server.addr = line
            .parse()
            .unwrap_or_else(|e| panic!("bad address {line:?} from {name}: {e}"));
        server
    }

    /// `http://ADDR` for this server.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the child (`SIGSTOP`): its loop accepts nothing until
    /// [`resume`](Self::resume), while the kernel still completes
    /// handshakes into the listen backlog. (Killing it on drop works on a
    /// stopped process too.)
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`stop`](Self::stop)ped child run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {} failed", self.pid());
    }

    /// Sends `signal` to the child (its own process only) and waits (at
    /// most [`SAFETY`]) for it to exit; returns its status and what it
    /// printed after `listening on`.
    pub fn signal_and_wait(&mut self, signal: i32) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) to our own child, which is not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill {signal} {}", self.child.id());
        let deadline = Instant::now() + SAFETY;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "example {} did not exit on signal {signal}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        // Its stdout is closed now: the reader thread ends soon after.
        let deadline = Instant::now() + SAFETY;
        while Arc::strong_count(&self.stdout) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        (status, self.stdout.lock().unwrap().clone())
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Asserts the child is still running (it did not crash meanwhile).
    pub fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "example {} exited: {status:?}; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- stderr of example {} ---\n{}", self.name, self.stderr());
        }
    }
}

/// Runs `cmd` with `stdin` as its input, killing it if it takes longer than
/// [`SAFETY`]; returns its output.
pub fn run_with_timeout(mut cmd: Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    // The watchdog kills the child by pid if it outlives the safety net.
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(SAFETY).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            true
        } else {
            false
        }
    });
    let output = child.wait_with_output().expect("wait for child");
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap();
    let _ = writer.join();
    assert!(!killed, "{cmd:?} timed out after {SAFETY:?}");
    output
}

/// Whether `program` runs (`program args` exits successfully).
pub fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A deterministic byte pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The soft limit on open files of this process (and so of the examples it
/// starts), from `/proc/self/limits`; `None` if unknown.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Opens `n` connections to `server`, one after the other. Meant for a
/// [`stop`](ExampleServer::stop)ped server: a connect then completes only
/// if the listen backlog has room, since the kernel drops a SYN to a full
/// accept queue (the client would retry for a minute), so each connect
/// gets a bound and the first failure says how many fitted.
pub fn connect_burst(server: &ExampleServer, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).unwrap_or_else(|e| {
                let name = &server.name;
                panic!("connect {} of {n} to stopped {name} failed: {e}", i + 1)
            })
        })
        .collect()
}

/// How late after its timeout a server may close a connection, on a busy
/// machine, and still count as closed by that timeout.
pub const CLOSE_SLACK: Duration = Duration::from_secs(5);

/// Asserts the server closes `s` (EOF or a reset) `timeout` after `start`:
/// not before (less a little slack for a coarse clock), and within
/// [`CLOSE_SLACK`] after. Returns what the server sent before closing.
pub fn assert_closed_after(s: &mut TcpStream, start: Instant, timeout: Duration) -> Vec<u8> {
    // The read timeout is only the safety net: the assertion is the EOF.
    s.set_read_timeout(Some(timeout + CLOSE_SLACK)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "EOF",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!(
                "the server did not close the connection (read: {e}) after {:?}",
                start.elapsed()
            ),
        }
    };
    let waited = start.elapsed();
    assert!(
        waited + Duration::from_millis(50) >= timeout,
        "{end} after {waited:?}, before the {timeout:?} timeout"
    );
    assert!(
        waited < timeout + CLOSE_SLACK,
        "{end} after {waited:?}: not by the {timeout:?} timeout"
    );
    got
}
