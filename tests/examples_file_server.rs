//! `examples/file_server.rs` as users run it, fetched with `curl`: the
//! file arrives whole (zero-copy and `--fallback`), several requests share
//! one kept-alive connection, and a silent client is closed after the
//! request timeout.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use examples_support::{assert_closed_after, have, pattern, run_with_timeout, ExampleServer};

/// A file in a temp dir (kept while the returned guard lives).
fn file_of(len: usize) -> (tempfile::TempDir, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(len);
    let path = dir.path().join("served.bin");
    std::fs::write(&path, &data).unwrap();
    (dir, path.to_str().unwrap().to_owned(), data)
}

/// `curl` fetching `urls` (on one connection, as curl reuses it), each
/// response to its own file in `dir`; returns the files' bytes and
/// curl's stderr (`-v`: it says when it reused the connection).
fn curl(dir: &std::path::Path, urls: &[String]) -> (Vec<Vec<u8>>, String) {
    let mut cmd = Command::new("curl");
    cmd.arg("-sS").arg("-v").arg("--fail");
    let mut outs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let out = dir.join(format!("out{i}"));
        cmd.arg("-o").arg(&out).arg(url);
        outs.push(out);
    }
    let output = run_with_timeout(cmd, b"");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "curl failed: {stderr}");
    let bodies = outs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    (bodies, stderr)
}

#[test]
fn curl_gets_the_file_whole_on_a_kept_alive_connection() {
    if !have("curl", &["--version"]) {
        eprintln!("curl is not installed: skipped");
        return;
    }
    let (dir, path, data) = file_of(24 * 1024 * 1024 + 5);
    for extra in [&[][..], &["--fallback"][..]] {
        let mut args = vec![path.as_str()];
        args.extend_from_slice(extra);
        let server = ExampleServer::start("file_server", &args);
        let base = server.http_base();
        let urls = vec![
            format!("{base}/a"),
            format!("{base}/b"),
            format!("{base}/c"),
        ];
        let (bodies, stderr) = curl(dir.path(), &urls);
        for body in &bodies {
            assert_eq!(body.len(), data.len(), "{extra:?}");
            assert!(*body == data, "{extra:?}");
        }
        assert!(
            stderr.contains("Re-using existing connection")
                || stderr.contains("Reusing existing connection"),
            "curl kept the connection alive ({extra:?}): {stderr}"
        );
        assert!(stderr.contains(&format!("Content-Length: {}", data.len())));
    }
}

#[test]
fn head_and_other_methods_get_a_head_only() {
    let (_dir, path, data) = file_of(1000);
    let server = ExampleServer::start("file_server", &[path.as_str()]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(examples_support::SAFETY)).unwrap();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let want = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n\
         HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        data.len()
    );
    assert_eq!(got, want);
}

#[test]
fn a_client_that_sends_no_request_is_closed_after_the_timeout() {
    let (_dir, path, _) = file_of(10);
    let timeout = Duration::from_millis(300);
    let server = ExampleServer::start("file_server", &[path.as_str(), "--timeout", "300"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // never finished
    let got = assert_closed_after(&mut s, start, timeout);
    assert!(got.is_empty());
}
