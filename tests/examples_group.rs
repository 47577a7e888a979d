//! `examples/echo_group.rs`, `examples/top.rs` and `/metrics` of
//! `examples/hyper_server.rs`, run as the user runs them.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use examples_support::{ExampleServer, SAFETY};

fn echo(server: &ExampleServer, n: usize) {
    let mut clients: Vec<TcpStream> = (0..n)
        .map(|_| {
            let c = TcpStream::connect(server.addr).unwrap();
            c.set_read_timeout(Some(SAFETY)).unwrap();
            c
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("hello {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

#[test]
fn echo_group_echoes_on_two_loops() {
    let mut server = ExampleServer::start("echo_group", &["--loops", "2"]);
    echo(&server, 50);
    server.assert_running();
}

#[test]
fn echo_group_rejects_bad_options() {
    let out = std::process::Command::new(examples_support::example_path("echo_group"))
        .args(["127.0.0.1:0", "--loops", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one loop"));
}

#[test]
fn top_echoes_and_keeps_running() {
    let mut server = ExampleServer::start("top", &["--loops", "2"]);
    echo(&server, 10);
    server.assert_running();
}

#[test]
fn hyper_server_serves_metrics() {
    let mut server = ExampleServer::start("hyper_server", &[]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(SAFETY)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    // This very connection is open while the page is made.
    assert!(
        text.contains("sloop_transports{kind=\"tcp\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sloop_read_bytes_total counter\n"),
        "{text}"
    );
    server.assert_running();
}
