//! Reliability R14: many idle connections cost the server little memory,
//! since a transport holds no read buffer of its own (docs/design.md D5).
//!
//! The echo_protocol example serves; this test opens connections to it,
//! has each echo once (so its transport and protocol exist), leaves them
//! idle, and reads the server's resident memory from /proc.

mod examples_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use examples_support::ExampleServer;

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

/// This process's soft limit on open files (/proc/self/limits).
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Opens `n` connections, each echoing one byte, and keeps them.
fn connect_idle(server: &ExampleServer, n: usize, into: &mut Vec<TcpStream>) {
    for _ in 0..n {
        let mut c = TcpStream::connect(server.addr).unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        into.push(c);
    }
}

#[test]
fn idle_connections_cost_under_2_kib_each() {
    let server = ExampleServer::start("echo_protocol", &[]);
    // Both processes hold one fd per connection: stay well inside the limit.
    let n = (open_files_limit().saturating_sub(200)).min(4000);
    assert!(n >= 500, "too few fds allowed to measure ({n})");
    let mut conns = Vec::new();
    // Warm up first (allocator arenas, the first slab pages), then measure
    // what the rest cost.
    connect_idle(&server, 100, &mut conns);
    let before = rss(server.pid());
    connect_idle(&server, n - 100, &mut conns);
    let after = rss(server.pid());
    let per_conn = after.saturating_sub(before) / (n - 100);
    eprintln!("{} idle connections: {per_conn} bytes each", n - 100);
    assert!(
        per_conn < 2048,
        "{per_conn} bytes per idle connection (target: under 2 KiB)"
    );
    drop(conns);
}
