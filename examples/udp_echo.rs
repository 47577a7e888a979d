//! A UDP echo server: every datagram goes back to its sender.
//!
//! ```text
//! cargo run --example udp_echo -- 127.0.0.1:8888
//! ```
//!
//! The address is the first argument (default `127.0.0.1:8888`); the
//! program prints `listening on ADDR` once the socket is bound, and runs
//! on one thread until killed.

use std::net::SocketAddr;

use sloop::{DatagramProtocol, DatagramTransport, EventLoop};

/// Sends each datagram back where it came from.
struct Echo {
    transport: Option<DatagramTransport>,
}

impl DatagramProtocol for Echo {
    fn connection_made(&mut self, transport: &DatagramTransport) {
        self.transport = Some(transport.clone());
    }

    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        if let Some(t) = &self.transport {
            // An error here means the transport is closed: nothing to do.
            let _ = t.sendto(data, Some(addr));
        }
    }

    fn error_received(&mut self, exc: std::io::Error) {
        eprintln!("error received: {exc}");
    }

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        self.transport = None;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned())
        .parse()?;
    let lp = EventLoop::new()?;
    let transport = lp
        .create_datagram_endpoint(|| Echo { transport: None })
        .local_addr(addr)
        .start()?;
    println!("listening on {}", transport.local_addr().unwrap_or(addr));
    lp.run_forever()?;
    Ok(())
}
