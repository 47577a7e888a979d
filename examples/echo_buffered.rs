//! A TCP echo server written as a [`BufferedProtocol`]: the socket reads
//! straight into the protocol's own buffer, which is then echoed.
//!
//! ```text
//! cargo run --release --example echo_buffered -- 127.0.0.1:8888
//! echo_buffered [ADDR] [--backlog N]
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until killed. `--backlog N` sets the listen backlog
//! (default 1024, as in `echo_protocol`). Like any echo server it lets an
//! idle client wait as long as it likes.
//!
//! The same backpressure rule as `echo_protocol`: pause reading while the
//! transport has paused writing. On EOF the transport sends what it holds,
//! then closes.
//!
//! Memory: a connection borrows a read buffer from a small per-thread pool
//! in `get_buffer` and gives it back once a read came up short (the socket
//! is drained), so an idle connection holds no buffer at all, and a busy
//! one keeps its buffer only while data keeps coming. `connection_lost`
//! gives a buffer still held back to the pool (dropping the protocol,
//! which the transport does right after, would free it instead); the
//! transport clone needs no clearing, it goes with the protocol.

use std::cell::RefCell;

use sloop::{Buffered, BufferedProtocol, EventLoop, Transport};

/// How much one read may fill.
const CHUNK: usize = 64 * 1024;

/// The default listen backlog (asyncio's 100 loses connections in a burst).
const BACKLOG: u32 = 1024;

thread_local! {
    /// Spare read buffers (the loop is single-threaded: one is usually enough).
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn give_back(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let buf = std::mem::take(buf);
        POOL.with(|p| p.borrow_mut().push(buf));
    }
}

#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
    buf: Vec<u8>,
}

impl BufferedProtocol for Echo {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }

    fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = POOL
                .with(|p| p.borrow_mut().pop())
                .unwrap_or_else(|| vec![0; CHUNK]);
        }
        &mut self.buf
    }

    fn buffer_updated(&mut self, nbytes: usize) {
        if let Some(t) = &self.transport {
            let _ = t.write(&self.buf[..nbytes]);
        }
        if nbytes < self.buf.len() {
            // A short read: nothing more waits; don't hold memory while idle.
            give_back(&mut self.buf);
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

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        give_back(&mut self.buf);
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
    let server = lp.create_server(|| Buffered(Echo::default()), &addr);
    let server = lp.run_until_complete(server.backlog(backlog))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
