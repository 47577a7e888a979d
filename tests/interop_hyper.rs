//! `examples/hyper_server.rs` (hyper 1.x over the bridge through
//! smol-hyper's `FuturesIo`, with sloop's timer and executor, no tokio)
//! against `curl`, and a raw TCP client for the header read timeout.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use examples_support::{have, pattern, run_with_timeout, ExampleServer, SAFETY};

fn have_curl() -> bool {
    if have("curl", &["--version"]) {
        true
    } else {
        eprintln!("skipped: curl is not installed");
        false
    }
}

fn have_curl_http2() -> bool {
    let Ok(out) = Command::new("curl").arg("--version").output() else {
        return false;
    };
    let ok = String::from_utf8_lossy(&out.stdout).contains("HTTP2");
    if !ok {
        eprintln!("skipped: this curl has no HTTP/2 support");
    }
    ok
}

/// Runs curl with `args` (and `-sS`, a bounded time), feeding `stdin`;
/// returns its stdout and stderr, failing the test if curl fails.
fn curl(args: &[&str], stdin: &[u8]) -> (Vec<u8>, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "20", "--noproxy", "*"])
        .args(args);
    let out = run_with_timeout(cmd, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {stderr}",
        out.status
    );
    (out.stdout, stderr)
}

const HELLO: &str = "hello from sloop\n";

#[test]
fn curl_get_root_answers_200_with_the_text() {
    if !have_curl() {
        return;
    }
    let mut server = ExampleServer::start("hyper_server", &[]);
    let url = format!("{}/", server.http_base());
    let (body, _) = curl(&["-w", "%{http_code} %{http_version}", &url], b"");
    assert_eq!(String::from_utf8(body).unwrap(), format!("{HELLO}200 1.1"));
    server.assert_running();
}

#[test]
fn curl_unknown_path_is_404() {
    if !have_curl() {
        return;
    }
    let server = ExampleServer::start("hyper_server", &[]);
    let url = format!("{}/nope", server.http_base());
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--noproxy", "*"])
        .args(["-o", "/dev/null", "-w", "%{http_code}", &url]);
    let out = run_with_timeout(cmd, b"");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"404");
}

#[test]
fn curl_post_echo_returns_a_body_of_several_hundred_kilobytes() {
    if !have_curl() {
        return;
    }
    let mut server = ExampleServer::start("hyper_server", &[]);
    let url = format!("{}/echo", server.http_base());
    for len in [1, 5_000, 300_000] {
        let body = pattern(len);
        // `@-`: the body comes from stdin, byte for byte. Above 1 KiB this
        // curl sends `Expect: 100-continue`, which hyper answers.
        let (got, _) = curl(
            &[
                "--data-binary",
                "@-",
                "-H",
                "Content-Type: application/octet-stream",
                &url,
            ],
            &body,
        );
        assert_eq!(got.len(), len);
        assert!(got == body, "echo of {len} bytes differs");
    }
    server.assert_running();
}

#[test]
fn curl_two_urls_reuse_one_keep_alive_connection() {
    if !have_curl() {
        return;
    }
    let mut server = ExampleServer::start("hyper_server", &[]);
    let url = format!("{}/", server.http_base());
    // `num_connects` is how many new connections each transfer opened.
    let (body, stderr) = curl(&["-v", "-w", "[%{num_connects}]", &url, &url], b"");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{HELLO}[1]{HELLO}[0]")
    );
    assert!(
        stderr.contains("Re-using existing connection")
            || stderr.contains("Reusing existing connection"),
        "curl did not reuse the connection:\n{stderr}"
    );
    server.assert_running();
}

/// One request per curl run: curl 7.88 (Debian 12's) fails to reuse a
/// prior-knowledge HTTP/2 connection ("Error in the HTTP2 framing layer"
/// before sending the second request; curl/curl#10634, fixed in 8.0), so
/// several URLs in one run would test curl's bug, not the server.
#[test]
fn curl_http2_prior_knowledge_get_and_a_post_beyond_the_flow_control_window() {
    if !have_curl() || !have_curl_http2() {
        return;
    }
    let mut server = ExampleServer::start("hyper_server", &[]);
    let base = server.http_base();
    let root = format!("{base}/");
    let (body, _) = curl(
        &["--http2-prior-knowledge", "-w", "[%{http_version}]", &root],
        b"",
    );
    assert_eq!(String::from_utf8(body).unwrap(), format!("{HELLO}[2]"));
    // A body larger than HTTP/2's initial 64 KiB flow-control window, both
    // ways: WINDOW_UPDATEs must flow while the streams wait.
    let echo = format!("{base}/echo");
    let data = pattern(200_000);
    let (got, _) = curl(
        &[
            "--http2-prior-knowledge",
            "--data-binary",
            "@-",
            "-w",
            "[%{http_version}]",
            &echo,
        ],
        &data,
    );
    let mut expected = data.clone();
    expected.extend_from_slice(b"[2]");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "HTTP/2 echo differs");
    server.assert_running();
}

#[test]
fn incomplete_headers_are_cut_off_by_the_header_read_timeout() {
    // The timeout runs on hyper's `rt::Timer`, here sloop's `LoopTimer`.
    let mut server = ExampleServer::start("hyper_server", &["300"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // The server closes the connection (possibly after a 408 response).
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the timeout"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed after {waited:?}: not by the 300 ms timeout"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text:?}"
    );
    // A complete request on a new connection is still served.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.ends_with(HELLO), "{text:?}");
    server.assert_running();
}

/// Reads one HTTP/1.1 response with a `content-length` body: returns the
/// head (status line and headers) and the body.
fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let mut body = vec![0; len];
    s.read_exact(&mut body).expect("response body");
    (head, body)
}

#[test]
fn post_then_get_on_one_raw_keep_alive_connection() {
    let mut server = ExampleServer::start("hyper_server", &[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    let body = pattern(10_000);
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    s.write_all(&request).unwrap();
    let (head, got) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert!(got == body, "echo differs");
    // Same connection: the server kept it open.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, got) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert_eq!(got, HELLO.as_bytes());
    // Two requests in one write (pipelined) are answered in order.
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head:?}");
    let (head, got) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert_eq!(got, HELLO.as_bytes());
    // `Connection: close`: the server closes after the answer.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    server.assert_running();
}

#[test]
fn wrk_short_run_has_no_errors_if_wrk_is_installed() {
    // `wrk -v` exits non-zero; that it starts at all is what counts.
    if Command::new("wrk").arg("-v").output().is_err() {
        eprintln!("skipped: wrk is not installed");
        return;
    }
    let mut server = ExampleServer::start("hyper_server", &[]);
    let url = format!("{}/", server.http_base());
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c8", "-d1s", "--timeout", "5s", &url]);
    let out = run_with_timeout(cmd, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert!(text.contains("Requests/sec"), "{text}");
    server.assert_running();
}
