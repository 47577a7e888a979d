//! A UDP echo server: every datagram goes back to its sender.
//!
//! ```text
//! cargo run --example udp_echo -- 127.0.0.1:8888
//! udp_echo [ADDR] [--with-tcp] [--backlog N]
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
//! 127.0.0.1:{port} --with-tcp"`). `--backlog N` sets that TCP listener's
//! backlog (default 1024, as in `echo_protocol`).
//!
//! Neither protocol clears its transport in `connection_lost`: the
//! transport drops its protocol right after calling it.

use std::net::SocketAddr;

use sloop::{Addrs, DatagramProtocol, DatagramTransport, EventLoop, Protocol, ToAddrs, Transport};

/// The default backlog of the `--with-tcp` listener.
const BACKLOG: u32 = 1024;

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
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut addr, mut with_tcp, mut backlog) = ("127.0.0.1:8888".to_owned(), false, BACKLOG);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--with-tcp" => with_tcp = true,
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => addr = arg,
        }
    }
    // Any address form will do ("localhost:8888" too); parse it now so a
    // typo fails before anything is bound.
    let mut addr: Addrs = addr.to_addrs()?;
    let lp = EventLoop::new()?;
    // The TCP listener binds first: given port 0, the kernel then picks a
    // port that is free for TCP, where connections and TIME_WAIT keep many
    // ports taken, and the UDP socket takes the same number.
    let _tcp = if with_tcp {
        let server = lp.create_server(TcpEcho::default, &addr).backlog(backlog);
        let server = lp.run_until_complete(server)??;
        addr = server.local_addrs()[0].to_addrs()?;
        Some(server)
    } else {
        None
    };
    let endpoint = lp
        .create_datagram_endpoint(|| Echo { transport: None })
        .local_addr(&addr);
    let transport = lp.run_until_complete(endpoint)??;
    let bound = transport.local_addr().ok_or("no local address")?;
    println!("listening on {bound}");
    lp.run_forever()?;
    Ok(())
}
