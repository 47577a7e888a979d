//! The examples run as users run them, against plain socket clients:
//! `echo_async` (an `async fn` echo server), `mixed` (a callback handshake
//! upgraded to an async task, its handshake bounded by a timer), and every
//! server's listen backlog (`--backlog N`, 1024 by default).

mod examples_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use std::time::{Duration, Instant};

use examples_support::{
    assert_closed_after, connect_burst, open_files_limit, ExampleServer, SAFETY,
};

fn connect(server: &ExampleServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s
}

/// Writes `input` (from a thread, so big inputs cannot deadlock), then EOF;
/// returns everything the server sent until it closed.
fn exchange(server: &ExampleServer, input: Vec<u8>) -> Vec<u8> {
    let s = connect(server);
    let mut writer = s.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        writer.write_all(&input).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    writing.join().unwrap();
    got
}

#[test]
fn echo_async_echoes_everything_then_closes() {
    let server = ExampleServer::start("echo_async", &[]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    assert!(exchange(&server, data.clone()) == data);
    assert!(exchange(&server, Vec::new()).is_empty());
}

#[test]
fn mixed_upgrades_after_the_handshake_without_losing_bytes() {
    let server = ExampleServer::start("mixed", &[]);
    // Handshake and conversation in one write: the upgrade must hand the
    // bytes after the handshake line to the async side.
    let got = exchange(&server, b"HELLO alice\nhow are you?\nfine\n".to_vec());
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "OK alice\nalice: HOW ARE YOU?\nalice: FINE\n"
    );
    // One byte at a time works too.
    let mut s = connect(&server);
    for b in b"HELLO bob\nhi\n" {
        s.write_all(&[*b]).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "OK bob\nbob: HI\n");
    // A bad handshake is refused by the callback side.
    assert_eq!(
        exchange(&server, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        b"ERR\n"
    );
}

/// The handshake timeout passed to `mixed` (`--timeout`, in ms).
const MIXED_TIMEOUT_MS: u64 = 300;

fn start_mixed_with_timeout() -> ExampleServer {
    ExampleServer::start("mixed", &["--timeout", &MIXED_TIMEOUT_MS.to_string()])
}

#[test]
fn mixed_closes_a_client_that_never_sends_its_handshake() {
    let mut server = start_mixed_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    let got = assert_closed_after(&mut s, start, Duration::from_millis(MIXED_TIMEOUT_MS));
    assert!(got.is_empty(), "{got:?}");
    server.assert_running();
}

#[test]
fn mixed_closes_a_client_that_sends_half_a_handshake() {
    let mut server = start_mixed_with_timeout();
    let start = Instant::now();
    let mut s = connect(&server);
    s.write_all(b"HELLO al").unwrap();
    let got = assert_closed_after(&mut s, start, Duration::from_millis(MIXED_TIMEOUT_MS));
    assert!(got.is_empty(), "{got:?}");
    server.assert_running();
}

#[test]
fn mixed_upgraded_connection_outlives_the_handshake_timeout() {
    let server = start_mixed_with_timeout();
    let mut talker = connect(&server);
    talker.write_all(b"HELLO carol\n").unwrap();
    let mut ok = [0u8; 9];
    talker.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK carol\n");
    // A silent client opened after the handshake is closed by its own
    // timer: by then the talker's timer would have fired too.
    let start = Instant::now();
    let mut silent = connect(&server);
    assert_closed_after(&mut silent, start, Duration::from_millis(MIXED_TIMEOUT_MS));
    talker.write_all(b"still here\n").unwrap();
    talker.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    talker.read_to_string(&mut got).unwrap();
    assert_eq!(got, "carol: STILL HERE\n");
}

/// With `--with-tcp`, both echoes share one port number, also when the
/// kernel picks it (port 0).
#[test]
fn udp_echo_with_tcp_echoes_both_on_one_port_number() {
    let mut server = ExampleServer::start("udp_echo", &["--with-tcp"]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(SAFETY)).unwrap();
    udp.send_to(b"datagram", server.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"datagram"[..], server.addr));
    let mut tcp = connect(&server);
    tcp.write_all(b"stream").unwrap();
    let mut got = [0u8; 6];
    tcp.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"stream");
    server.assert_running();
}

/// Whether this process may open `n` more sockets (and the example it
/// starts as many), with room to spare.
fn may_open(n: usize) -> bool {
    match open_files_limit() {
        Some(limit) if limit < n as u64 + 200 => {
            eprintln!("skipped: the open files limit ({limit}) is below {n} connections");
            false
        }
        _ => true,
    }
}

/// The benchmark's shape: thousands of clients connect at once. With the
/// server stopped, none is accepted until all have connected, so each
/// connect needs room in the listen backlog; then every connection is
/// served.
#[test]
fn echo_protocol_with_backlog_2048_serves_2000_connects_made_before_it_accepts_any() {
    const N: usize = 2000;
    if !may_open(N) {
        return;
    }
    let mut server = ExampleServer::start("echo_protocol", &["--backlog", "2048"]);
    server.stop();
    let mut clients = connect_burst(&server, N);
    server.resume();
    for (i, s) in clients.iter_mut().enumerate() {
        s.set_read_timeout(Some(SAFETY)).unwrap();
        let byte = [i as u8];
        s.write_all(&byte).unwrap();
        let mut got = [0u8];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, byte, "connection {i}");
    }
    server.assert_running();
}

/// The default backlog (1024) holds a burst of 1000 (asyncio's 100 would
/// drop most of it).
#[test]
fn echo_protocol_default_backlog_holds_a_burst_of_1000_connects() {
    const N: usize = 1000;
    if !may_open(N) {
        return;
    }
    let mut server = ExampleServer::start("echo_protocol", &[]);
    server.stop();
    let mut clients = connect_burst(&server, N);
    server.resume();
    // The last connection to come in is served.
    let last = clients.last_mut().unwrap();
    last.set_read_timeout(Some(SAFETY)).unwrap();
    last.write_all(b"x").unwrap();
    let mut got = [0u8];
    last.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"x");
    server.assert_running();
}
/// Every server example takes `--backlog N` (after its address and any
/// other argument): a burst larger than the default backlog fits.
#[test]
fn every_server_example_takes_the_backlog_option() {
    const N: usize = 1100;
    if !may_open(N) {
        return;
    }
    let examples: &[(&str, &[&str])] = &[
        ("echo_protocol", &[]),
        ("echo_buffered", &[]),
        ("echo_async", &[]),
        ("mixed", &[]),
        ("udp_echo", &["--with-tcp"]),
        ("websocket_echo", &[]),
        ("hyper_server", &["10000"]),
        ("codec_lines", &[]),
    ];
    for (name, extra) in examples {
        let mut args = extra.to_vec();
        args.extend(["--backlog", "1200"]);
        let mut server = ExampleServer::start(name, &args);
        server.stop();
        let clients = connect_burst(&server, N);
        server.resume();
        drop(clients);
        server.assert_running();
    }
}
