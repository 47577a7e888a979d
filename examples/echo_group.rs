//! The callback echo server of `echo_protocol` on a group of loops, one
//! per thread: every loop listens on the address with `SO_REUSEPORT`, the
//! kernel spreads the connections, and each connection stays on the loop
//! that accepted it.
//!
//! ```text
//! cargo run --release --example echo_group -- 127.0.0.1:8888 --loops 2
//! echo_group [ADDR] [--loops N] [--backlog N]
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until killed. `--loops N` sets the number of loops
//! (default: one per core), `--backlog N` each loop's listen backlog
//! (default 1024).
//!
//! The protocol is `echo_protocol`'s, backpressure included: when a
//! transport's write buffer passes its high-water mark the connection
//! stops reading until it drains, so a client that never reads cannot
//! grow the server's memory. The factory is `Send + Sync` (here, a plain
//! function): each loop calls it on its own thread.

use sloop::group::LoopGroup;
use sloop::{Protocol, Transport};

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
    let (mut addr, mut loops, mut backlog) = ("127.0.0.1:8888".to_owned(), None, 1024u32);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            "--loops" => loops = Some(args.next().ok_or("--loops needs N")?.parse()?),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => addr = arg,
        }
    }
    let group = match loops {
        Some(n) => LoopGroup::new(n)?,
        None => LoopGroup::per_core()?,
    };
    let server =
        group.start_server_with(Echo::default, addr.as_str(), move |b| b.backlog(backlog))?;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    // The loops run on their own threads; this one has nothing left to do.
    loop {
        std::thread::park();
    }
}
