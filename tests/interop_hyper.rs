//! `examples/hyper_server.rs` (hyper 1.x over the bridge through
//! smol-hyper's `FuturesIo`, with sloop's timer and executor, no tokio)
//! against `curl` and Python's `h2`, and raw TCP clients for the timeouts
//! that bound every wait on a client.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use examples_support::{
    assert_closed_after, have, pattern, run_with_timeout, ExampleServer, SAFETY,
};

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

/// An HTTP/2 client on one connection that opens every stream before it
/// reads any response: GETs and POSTs of 0 B to 200 KB interleaved, so the
/// server multiplexes them and both sides' flow-control windows fill.
/// Python's `h2` (sans-I/O) drives a plain socket.
const H2_CLIENT: &str = r#"
import socket, sys
import h2.config, h2.connection, h2.events

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port), timeout=20)
conn = h2.connection.H2Connection(
    config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
sizes = [0, 1, 1000, 16384, 70000, 200000]
expect, to_send, got, status, ended = {}, {}, {}, {}, set()
for i in range(n):
    sid = conn.get_next_available_stream_id()
    got[sid] = bytearray()
    headers = [(":scheme", "http"), (":authority", f"{host}:{port}")]
    if i % 2 == 0:
        conn.send_headers(sid, [(":method", "GET"), (":path", "/")] + headers,
                          end_stream=True)
        expect[sid] = sys.argv[4].encode()
    else:
        size = sizes[(i // 2) % len(sizes)]
        body = bytes((sid * 7 + k) % 251 for k in range(size))
        conn.send_headers(sid, [(":method", "POST"), (":path", "/echo")] + headers
                          + [("content-length", str(size))], end_stream=size == 0)
        expect[sid] = body
        if size:
            to_send[sid] = body

def pump():
    # Send each body as far as the stream's and the connection's windows allow.
    for sid in list(to_send):
        body = to_send[sid]
        while body:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                break
            conn.send_data(sid, body[:room])
            body = body[room:]
        if body:
            to_send[sid] = body
        else:
            conn.end_stream(sid)
            del to_send[sid]
    sock.sendall(conn.data_to_send())

pump()
while len(ended) < n:
    data = sock.recv(65536)
    if not data:
        sys.exit(f"connection closed with {n - len(ended)} streams unanswered")
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived):
            status[ev.stream_id] = dict(ev.headers)[":status"]
        elif isinstance(ev, h2.events.DataReceived):
            got[ev.stream_id] += ev.data
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            ended.add(ev.stream_id)
        elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
            sys.exit(f"server ended a stream or the connection: {ev}")
    pump()
for sid in expect:
    assert status.get(sid) == "200", (sid, status.get(sid))
    assert bytes(got[sid]) == expect[sid], (sid, len(got[sid]), len(expect[sid]))
conn.close_connection()
sock.sendall(conn.data_to_send())
sock.close()
print("ok", len(ended))
"#;

#[test]
fn python_h2_client_multiplexes_many_streams_on_one_connection() {
    if !have("python3", &["-c", "import h2.connection"]) {
        eprintln!("skipped: python3 with `h2` (>= 4) is not installed");
        return;
    }
    let mut server = ExampleServer::start("hyper_server", &[]);
    let (host, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let mut cmd = Command::new("python3");
    cmd.args(["-c", H2_CLIENT, &host, &port, "24", HELLO]);
    let out = run_with_timeout(cmd, b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "h2 client failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "ok 24");
    server.assert_running();
}

#[test]
fn incomplete_headers_are_cut_off_by_the_header_read_timeout() {
    // The timeout runs on hyper's `rt::Timer`, here sloop's `LoopTimer`.
    // The timeout as the second argument: the command line of old.
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

/// The timeout passed to the example for the tests of the bounds
/// (`--timeout`, in ms).
const TIMEOUT_MS: u64 = 300;

fn start_with_timeout() -> ExampleServer {
    ExampleServer::start("hyper_server", &["--timeout", &TIMEOUT_MS.to_string()])
}

fn connect(server: &ExampleServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s
}

/// Before the first bytes tell HTTP/1 from HTTP/2, hyper is not running
/// yet, so its own timeouts cannot help: the example bounds that read.
#[test]
fn a_client_that_sends_nothing_is_closed_after_the_timeout() {
    let mut server = start_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    let got = assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
    assert!(got.is_empty(), "{got:?}");
    server.assert_running();
}

#[test]
fn half_an_http2_preface_is_closed_after_the_timeout() {
    let mut server = start_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let got = assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
    assert!(got.is_empty(), "{got:?}");
    server.assert_running();
}

/// hyper has no bound for an HTTP/2 connection with nothing to do.
#[test]
fn an_http2_connection_quiet_after_its_preface_and_settings_is_closed_after_the_timeout() {
    let mut server = start_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let got = assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
    // The server spoke HTTP/2 (its SETTINGS) before going quiet too.
    assert!(got.len() >= 9 && got[3] == 4, "{got:?}");
    server.assert_running();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let mut server = start_with_timeout();
    let mut s = connect(&server);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert_eq!(body, HELLO.as_bytes());
    let start = Instant::now();
    let got = assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    server.assert_running();
}

/// Headers complete, so hyper's header timeout is over, and the body
/// stops coming: hyper would wait for it forever.
#[test]
fn a_request_body_that_stops_coming_is_cut_off_after_the_timeout() {
    let mut server = start_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
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
