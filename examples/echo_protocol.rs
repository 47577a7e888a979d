//! A TCP echo server written as a [`Protocol`]: the pattern to copy.
//!
//! ```text
//! cargo run --release --example echo_protocol -- 127.0.0.1:8888
//! echo_protocol [ADDR] [--backlog N]
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until SIGINT (Ctrl-C) or SIGTERM: then it closes the
//! server and its connections, prints `closed N connections` and exits 0. `--backlog N` sets the listen backlog
//! (default 1024).
//!
//! Backpressure: when the transport's write buffer passes its high-water
//! mark (`pause_writing`), the server stops reading from that client; when
//! it drains (`resume_writing`), it reads again. A client that sends but
//! never reads therefore cannot grow the server's memory beyond the
//! high-water mark plus one read. On EOF the default `eof_received`
//! returns `false`: the transport sends what it still holds, then closes.
//!
//! Idle clients: an echo connection waits for its client as long as the
//! client likes, as an echo server should (the client sets the pace, and
//! an idle connection holds one fd and this small struct, no buffer). A
//! server whose clients owe it something, a handshake or a request, bounds
//! that wait: see `mixed` (a timer in the protocol), `websocket_echo`
//! (`sloop::timeout` around the handshake) and `hyper_server`.
//!
//! No cleanup in `connection_lost`: the transport drops its protocol right
//! after calling it, so the protocol's clone of the transport goes too.

use std::time::Duration;

use sloop::{EventLoop, Protocol, Transport};

/// The default listen backlog: how many connections the kernel holds
/// until the loop accepts them. asyncio's default (and the server
/// builder's) is 100, which loses connections in a burst of thousands of
/// connects; 1024 is what the benchmark's reference servers use.
const BACKLOG: u32 = 1024;

#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // Refused only once the connection is closing; nothing to do then.
            let _ = t.write(data);
        }
    }

    fn pause_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.pause_reading();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut addr, mut backlog) = ("127.0.0.1:8888".to_owned(), BACKLOG);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => addr = arg,
        }
    }
    let lp = EventLoop::new()?;
    let server =
        lp.run_until_complete(lp.create_server(Echo::default, &addr).backlog(backlog))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    // Ctrl-C or SIGTERM: stop accepting, close the clients (what they are
    // owed is sent first), and exit 0.
    lp.run_until_signal(&[libc::SIGINT, libc::SIGTERM])?;
    let n = server.connection_count();
    server.close();
    server.close_clients();
    // A client that never reads would keep its close waiting: abort after
    // a second.
    if lp
        .run_until_complete(sloop::timeout(Duration::from_secs(1), server.wait_closed()))?
        .is_err()
    {
        server.abort_clients();
        lp.run_until_complete(server.wait_closed())?;
    }
    println!("closed {n} connections");
    Ok(())
}
