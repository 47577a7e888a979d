//! A TCP echo server written as a [`BufferedProtocol`]: the socket reads
//! straight into the protocol's own buffer, which is then echoed.
//!
//! ```text
//! cargo run --release --example echo_buffered -- 127.0.0.1:8888
//! ```
//!
//! The same backpressure rule as `echo_protocol`: pause reading while the
//! transport has paused writing. On EOF the transport sends what it holds,
//! then closes.

use sloop::{Buffered, BufferedProtocol, EventLoop, Transport};

/// How much one read may fill; allocated once per connection, on its first
/// read, so idle connections hold none.
const CHUNK: usize = 64 * 1024;

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
            self.buf = vec![0; CHUNK];
        }
        &mut self.buf
    }

    fn buffer_updated(&mut self, nbytes: usize) {
        if let Some(t) = &self.transport {
            let _ = t.write(&self.buf[..nbytes]);
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
        self.transport = None;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(lp.create_server(|| Buffered(Echo::default()), &addr))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
