//! The servers of `examples/` stop cleanly on SIGINT and SIGTERM with
//! clients connected: they close the server and the clients, print
//! `closed N connections` and exit 0. Each signal goes to the example's
//! own process.
//!
//! Needs the example binaries: a plain `cargo test` builds them (see
//! `examples_support`).

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use examples_support::{ExampleServer, SAFETY};

fn connected_echo_client(server: &ExampleServer) -> TcpStream {
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(SAFETY)).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    c
}

fn http_client(server: &ExampleServer) -> TcpStream {
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(SAFETY)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0; 12];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    c
}

fn stops_cleanly(name: &str, signal: i32, client: fn(&ExampleServer) -> TcpStream) {
    let mut server = ExampleServer::start(name, &[]);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| client(&server)).collect();
    let (status, out) = server.signal_and_wait(signal);
    assert_eq!(
        status.code(),
        Some(0),
        "{name}: {status:?}; stderr:\n{}",
        server.stderr()
    );
    assert!(
        out.contains("closed 3 connections"),
        "{name} printed {out:?}"
    );
    // Each client sees its connection end (EOF, or a reset if aborted).
    for c in &mut clients {
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
}

#[test]
fn echo_protocol_stops_on_sigint_and_sigterm() {
    stops_cleanly("echo_protocol", libc::SIGINT, connected_echo_client);
    stops_cleanly("echo_protocol", libc::SIGTERM, connected_echo_client);
}

#[test]
fn echo_async_stops_on_sigint_and_sigterm() {
    stops_cleanly("echo_async", libc::SIGINT, connected_echo_client);
    stops_cleanly("echo_async", libc::SIGTERM, connected_echo_client);
}

#[test]
fn hyper_server_stops_on_sigint_and_sigterm() {
    stops_cleanly("hyper_server", libc::SIGINT, http_client);
    stops_cleanly("hyper_server", libc::SIGTERM, http_client);
}
