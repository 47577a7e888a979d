//! `examples/websocket_echo.rs` (async-tungstenite on the bridge) against
//! Python's `websockets` client, a real outside implementation, and raw
//! sockets for the handshake timeout.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use examples_support::{assert_closed_after, have, run_with_timeout, ExampleServer, SAFETY};

/// The client: sends text and binary messages of many sizes (0 B to 1 MiB,
/// across the 7-bit, 16-bit and 64-bit frame length encodings), one at a
/// time and then pipelined, checks every echo, pings, and closes. Prints
/// `ok N CODE` at the end.
const CLIENT: &str = r#"
import sys
from websockets.sync.client import connect

uri = sys.argv[1]
kwargs = dict(max_size=2 ** 21, open_timeout=20, close_timeout=20)
try:
    ws = connect(uri, proxy=None, **kwargs)
except TypeError:  # websockets < 15 has no proxy argument
    ws = connect(uri, **kwargs)

def payload(n, salt):
    return bytes((i * 7 + salt + i // 251) % 256 for i in range(n))

sizes = [0, 1, 2, 125, 126, 127, 128, 1000, 65535, 65536, 65537, 100000, 1 << 20]
count = 0
for n in sizes:
    b = payload(n, n)
    ws.send(b)
    got = ws.recv(timeout=20)
    assert isinstance(got, bytes), (n, type(got))
    assert got == b, ("binary", n, len(got))
    # Text with multi-byte characters: n bytes of UTF-8 (é is 2 bytes).
    t = ("é" * (n // 2)) + ("x" * (n % 2))
    assert len(t.encode()) == n
    ws.send(t)
    got = ws.recv(timeout=20)
    assert isinstance(got, str), (n, type(got))
    assert got == t, ("text", n, len(got))
    count += 2

# Pipelined: 200 messages out before reading any echo.
sent = []
for i in range(200):
    m = payload(i * 37 % 5000, i) if i % 2 else ("message %d " % i) * (i % 13)
    ws.send(m)
    sent.append(m)
for m in sent:
    got = ws.recv(timeout=20)
    assert got == m, ("pipelined", len(m))
    count += 1

# A ping is answered by a pong with the same payload.
pong = ws.ping(b"are you there")
assert pong.wait(20), "no pong"

ws.close()
# The server replied to our close frame with code 1000 (normal closure).
assert ws.protocol.close_rcvd is not None, "no close frame from the server"
assert ws.protocol.close_rcvd.code == 1000, ws.protocol.close_rcvd
assert ws.close_code == 1000, ws.close_code
print("ok", count, ws.close_code)
"#;

fn have_websockets() -> bool {
    have("python3", &["-c", "import websockets.sync.client"])
}

fn run_client(server: &ExampleServer) -> String {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT, &format!("ws://{}/", server.addr)]);
    let out = run_with_timeout(cmd, b"");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn python_websockets_client_gets_every_message_back_and_a_clean_close() {
    if !have_websockets() {
        eprintln!("skipped: python3 with `websockets` (>= 12) is not installed");
        return;
    }
    let mut server = ExampleServer::start("websocket_echo", &[]);
    let stdout = run_client(&server);
    assert_eq!(stdout.trim(), "ok 226 1000");
    server.assert_running();
}

#[test]
fn two_python_clients_at_once_on_the_single_threaded_server() {
    if !have_websockets() {
        eprintln!("skipped: python3 with `websockets` (>= 12) is not installed");
        return;
    }
    let mut server = ExampleServer::start("websocket_echo", &[]);
    std::thread::scope(|s| {
        let a = s.spawn(|| run_client(&server));
        let b = s.spawn(|| run_client(&server));
        assert_eq!(a.join().unwrap().trim(), "ok 226 1000");
        assert_eq!(b.join().unwrap().trim(), "ok 226 1000");
    });
    server.assert_running();
}

/// The handshake timeout passed to the example (`--timeout`, in ms).
const TIMEOUT_MS: u64 = 300;

fn start_with_timeout() -> ExampleServer {
    ExampleServer::start("websocket_echo", &["--timeout", &TIMEOUT_MS.to_string()])
}

fn connect(server: &ExampleServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s
}

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn a_client_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let mut server = start_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    let got = assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
    assert!(got.is_empty(), "{got:?}");
    server.assert_running();
}

#[test]
fn a_client_that_sends_half_its_upgrade_request_is_closed_after_the_timeout() {
    let mut server = start_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    s.write_all(&UPGRADE[..UPGRADE.len() / 2]).unwrap();
    let got = assert_closed_after(&mut s, start, Duration::from_millis(TIMEOUT_MS));
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    server.assert_running();
}

#[test]
fn an_upgraded_connection_outlives_the_handshake_timeout() {
    let server = start_with_timeout();
    let mut ws = connect(&server);
    ws.write_all(UPGRADE).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).expect("the upgrade response");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    // A silent client connected now is closed by its own timeout: by then
    // the upgraded connection's would have passed too.
    let start = Instant::now();
    let mut silent = connect(&server);
    assert_closed_after(&mut silent, start, Duration::from_millis(TIMEOUT_MS));
    // A masked text frame "hi" (a client must mask), echoed unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().zip(mask).map(|(b, m)| b ^ m));
    ws.write_all(&frame).unwrap();
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"\x81\x02hi");
}
