//! Many idle connections cost the server little memory (reliability R14):
//! a callback protocol's transport holds no read buffer of its own
//! (docs/design.md D5), and an async stream with nothing unread holds no
//! receive buffer either (its blocks go back to the per-thread pool once
//! read; D10).
//!
//! An example server serves; each test opens connections to it, has each
//! echo once (so its transport, protocol, and for streams the task and
//! state, exist and have read), leaves them idle, and reads the server's
//! resident memory from /proc.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use examples_support::{open_files_limit, ExampleServer};

/// A process's resident set, in bytes (`VmRSS` of /proc/PID/status).
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Opens `n` connections, each echoing `msg`, and keeps them.
fn connect_idle(server: &ExampleServer, n: usize, msg: &[u8], into: &mut Vec<TcpStream>) {
    for _ in 0..n {
        let mut c = TcpStream::connect(server.addr).unwrap();
        c.write_all(msg).unwrap();
        let mut b = vec![0u8; msg.len()];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, msg);
        into.push(c);
    }
}

/// The server memory each idle connection to `example` costs, after one
/// echo of `msg`: measured over all but the first 100 connections (those
/// warm up allocator arenas, the first slab pages and the block pool).
fn idle_cost(example: &str, msg: &[u8]) -> usize {
    let server = ExampleServer::start(example, &[]);
    // Both processes hold one fd per connection: stay well inside the limit.
    let limit = open_files_limit().unwrap_or(1024) as usize;
    let n = limit.saturating_sub(200).min(4000);
    assert!(n >= 500, "too few fds allowed to measure ({n})");
    let mut conns = Vec::new();
    connect_idle(&server, 100, msg, &mut conns);
    let before = rss(server.pid());
    connect_idle(&server, n - 100, msg, &mut conns);
    let after = rss(server.pid());
    let per_conn = after.saturating_sub(before) / (n - 100);
    eprintln!(
        "{example}: {} idle connections, {per_conn} bytes each",
        n - 100
    );
    per_conn
}

#[test]
fn idle_connections_cost_under_2_kib_each() {
    let per_conn = idle_cost("echo_protocol", b"x");
    assert!(
        per_conn < 2048,
        "{per_conn} bytes per idle connection (target: under 2 KiB)"
    );
}

#[test]
fn idle_streams_cost_under_1_5_kib_each() {
    let per_conn = idle_cost("echo_async", &[7u8; 64]);
    // About 0.9 KiB today (5.2 KiB when each stream kept a 4 KiB buffer);
    // the margin is for slab growth and page granularity.
    assert!(
        per_conn < 1536,
        "{per_conn} bytes per idle stream (target: under 1 KiB)"
    );
}
