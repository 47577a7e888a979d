//! A UDP echo server: every datagram goes back to its sender.
//!
//! ```text
//! cargo run --example udp_echo -- 127.0.0.1:8888
//! ```
//!
//! The address is the first argument (default `127.0.0.1:8888`); the
//! program prints `listening on ADDR` once the socket is bound, and runs
//! on one thread until killed.
//!
//! With `--with-tcp` after the address it also echoes TCP on the same port
//! number, as the reference servers of the shared benchmark do: the
//! harness finds a server by its TCP listener, so this is how its `udp64`
//! scenario measures this program (`--server "sloop-udp=.../udp_echo
//! 127.0.0.1:{port} --with-tcp"`).

use std::net::SocketAddr;

use sloop::{DatagramProtocol, DatagramTransport, EventLoop, Protocol, Transport};

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

/// The TCP echo of `--with-tcp` (see `echo_protocol` for the full pattern).
#[derive(Default)]
struct TcpEcho(Option<Transport>);

impl Protocol for TcpEcho {
    fn connection_made(&mut self, transport: &Transport) {
        self.0 = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            let _ = t.write(data);
        }
    }

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        self.0 = None;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned())
        .parse()?;
    let with_tcp = args.any(|a| a == "--with-tcp");
    let lp = EventLoop::new()?;
    let transport = lp
        .create_datagram_endpoint(|| Echo { transport: None })
        .local_addr(addr)
        .start()?;
    let bound = transport.local_addr().unwrap_or(addr);
    let _tcp = if with_tcp {
        Some(lp.run_until_complete(lp.create_server(TcpEcho::default, &bound.to_string()))??)
    } else {
        None
    };
    println!("listening on {bound}");
    lp.run_forever()?;
    Ok(())
}
