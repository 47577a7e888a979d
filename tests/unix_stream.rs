//! Unix stream servers and clients, and the socket-path rules (reliability
//! R29, R30).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use sloop::Address;
use support::*;

#[test]
fn unix_echo_server_and_client() {
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let server = run(&lp, lp.create_unix_server(Echo::default, &path)).unwrap();
    let (p, rec) = Recorder::new();
    let t = run(&lp, lp.create_unix_connection(move || p, &path)).unwrap();
    assert_eq!(t.peer_addr(), Some(Address::Unix(Some(path.clone()))));
    let body = pattern(1_000_003);
    t.write(&body).unwrap();
    t.write_eof().unwrap();
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    let r = rec.borrow();
    assert!(r.data == body);
    assert_eq!(r.events.last(), Some(&Ev::Lost(None)));
    drop(r);
    server.close();
    run(&lp, server.wait_closed());
    assert!(!path.exists(), "our socket file is removed on close");
}

#[test]
fn stale_socket_file_is_replaced() {
    // R29 (a): a path left by a dead server.
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = run(&lp, lp.create_unix_server(Echo::default, &path)).unwrap();
    let got = run(
        &lp,
        on_thread({
            let path = path.clone();
            move || {
                let mut c = UnixStream::connect(&path).unwrap();
                c.write_all(b"hi").unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let mut v = Vec::new();
                c.read_to_end(&mut v).unwrap();
                v
            }
        }),
    );
    assert_eq!(got, b"hi");
    server.close();
}

#[test]
fn live_server_path_and_non_socket_are_never_removed() {
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    // (b) a live server's path.
    let path = dir.path().join("live.sock");
    let live = UnixListener::bind(&path).unwrap();
    let err = run(&lp, lp.create_unix_server(Echo::default, &path)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(
        err.to_string(),
        format!("Address '{}' is already in use", path.display())
    );
    let _c = UnixStream::connect(&path).unwrap();
    assert!(live.accept().is_ok(), "the live server still accepts");
    // (c) a regular file.
    let file = dir.path().join("data.txt");
    std::fs::write(&file, b"precious").unwrap();
    let err = run(&lp, lp.create_unix_server(Echo::default, &file)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn close_does_not_unlink_a_replaced_path() {
    // R29 (d): A's path replaced by B; A's close leaves B's file alone.
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let a = run(&lp, lp.create_unix_server(Echo::default, &path)).unwrap();
    std::fs::remove_file(&path).unwrap();
    let b = UnixListener::bind(&path).unwrap();
    a.close();
    assert!(path.exists(), "B's socket file survives A's close");
    let _c = UnixStream::connect(&path).unwrap();
    assert!(b.accept().is_ok());
}

#[test]
fn bad_paths_are_errors_not_truncated() {
    // R30: too long, or with a NUL.
    let lp = new_loop();
    let long = std::path::PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
    let err = run(&lp, lp.create_unix_server(Echo::default, &long)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(!long.exists());
    let (p, _) = Recorder::new();
    let err = run(&lp, lp.create_unix_connection(move || p, &long)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let dir = tempfile::tempdir().unwrap();
    let mut nul = dir.path().join("a").into_os_string();
    nul.push("\0b");
    let err = run(&lp, lp.create_unix_server(Echo::default, &nul)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        !dir.path().join("a").exists(),
        "no socket at the cut-off path"
    );
    let (p, _) = Recorder::new();
    let err = run(&lp, lp.create_unix_connection(move || p, &nul)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn abstract_unix_names() {
    // A leading NUL: Linux's abstract namespace (no file, no permission
    // check; documented on create_unix_server).
    let lp = new_loop();
    let name = format!("\0sloop-test-{}", std::process::id());
    let server = run(&lp, lp.create_unix_server(Echo::default, &name)).unwrap();
    let (p, rec) = Recorder::new();
    let t = run(&lp, lp.create_unix_connection(move || p, &name)).unwrap();
    t.write(b"abstract").unwrap();
    let r = rec.clone();
    run(&lp, until(move || r.borrow().data.len() == 8));
    assert_eq!(rec.borrow().data, b"abstract");
    t.close();
    server.close();
}

/// Connects to `path` as the `nobody` user (needs root, for `runuser`);
/// "ok" or "denied".
fn connect_as_nobody(path: &std::path::Path) -> String {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  try:\n    s.connect(sys.argv[1]); print('ok')\n\
                  except PermissionError:\n    print('denied')\n";
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "/usr/bin/python3", "-c", script])
        .arg(path)
        .output()
        .expect("runuser runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn unix_mode_limits_who_may_connect() {
    // R30: the mode is in place before the server listens, and another
    // user is refused by it.
    use std::os::unix::fs::PermissionsExt;
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    // Let other users reach the files, so each socket's own mode decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = dir.path().join("private.sock");
    let open = dir.path().join("open.sock");
    let s1 = run(
        &lp,
        lp.create_unix_server(Echo::default, &private)
            .unix_mode(0o600),
    )
    .unwrap();
    let s2 = run(
        &lp,
        lp.create_unix_server(Echo::default, &open).unix_mode(0o666),
    )
    .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    assert_eq!(mode(&open), 0o666);
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root && std::path::Path::new("/usr/sbin/runuser").exists() {
        assert_eq!(connect_as_nobody(&private), "denied");
        assert_eq!(connect_as_nobody(&open), "ok");
    } else {
        eprintln!("not root: the other-user half of this test is skipped");
    }
    s1.close();
    s2.close();
}

#[test]
fn loop_close_closes_the_server_and_removes_its_file() {
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let server = run(&lp, lp.create_unix_server(Echo::default, &path)).unwrap();
    lp.close().unwrap();
    assert!(!server.is_serving());
    assert!(!path.exists(), "the loop's close removed our socket file");
}

#[test]
fn dropping_a_server_that_never_served_closes_it() {
    // Nothing could start it any more: its socket closes and its file goes.
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let server = run(
        &lp,
        lp.create_unix_server(Echo::default, &path)
            .start_serving(false),
    )
    .unwrap();
    assert!(UnixStream::connect(&path).is_ok(), "listening, not serving");
    drop(server);
    assert!(!path.exists(), "the last handle's drop removed the file");
}

#[test]
fn create_unix_connection_dropped_after_its_transport_exists_closes_it() {
    // D15: asyncio closes the transport when the waiter is cancelled.
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (p, rec) = Recorder::new();
    // A Unix connect with room in the backlog completes at once: poll 1
    // makes the transport and waits for connection_made.
    run(
        &lp,
        drop_after_polls(lp.create_unix_connection(move || p, &path), 1),
    );
    let (peer, _) = listener.accept().unwrap();
    peer_sees_eof(&lp, peer);
    assert_eq!(rec.borrow().events, [], "no callback after the drop");
    assert_eq!(
        std::rc::Rc::strong_count(&rec),
        1,
        "the protocol was dropped"
    );
}
