//! A TCP echo server written as a [`Protocol`]: the pattern to copy.
//!
//! ```text
//! cargo run --release --example echo_protocol -- 127.0.0.1:8888
//! ```
//!
//! Backpressure: when the transport's write buffer passes its high-water
//! mark (`pause_writing`), the server stops reading from that client; when
//! it drains (`resume_writing`), it reads again. A client that sends but
//! never reads therefore cannot grow the server's memory beyond the
//! high-water mark plus one read. On EOF the default `eof_received`
//! returns `false`: the transport sends what it still holds, then closes.

use sloop::{EventLoop, Protocol, Transport};

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

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        // Break the protocol <-> transport cycle.
        self.transport = None;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(lp.create_server(Echo::default, &addr))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
