//! One server, both styles on one connection: each connection starts as a
//! callback [`Protocol`] that reads a line-based handshake, then upgrades
//! to an async task holding a [`TransportStream`] for the rest.
//!
//! ```text
//! cargo run --example mixed -- 127.0.0.1:8888
//! printf 'HELLO alice\nhow are you?\n' | nc -q1 127.0.0.1 8888
//! ```
//!
//! Usage: `mixed [ADDR] [--timeout MS] [--backlog N]`. It prints
//! `listening on ADDR` (the bound address, so `127.0.0.1:0` works) and
//! runs until killed.
//!
//! The handshake is `HELLO <name>\n`; anything else gets `ERR` and the
//! connection is closed by the protocol. After `OK <name>` the task answers
//! each line with `<name>: <LINE IN CAPITALS>`. Bytes that arrived in the
//! same read as the handshake line are handed to the stream
//! ([`TransportStream::with_buffered`]), so nothing is lost at the switch.
//!
//! The handshake is bounded: a client that connects and sends no complete
//! line within `--timeout` (10 s by default) is closed, by a timer that
//! `connection_made` starts and the upgrade cancels. Without it a silent
//! client would hold its fd (and this protocol) for as long as it likes.
//! After the handshake the conversation goes at the client's pace, as an
//! echo does. `--backlog N` sets the listen backlog (default 1024, as in
//! `echo_protocol`).

use std::time::Duration;

use futures::io::{AsyncBufReadExt, AsyncWriteExt};
use sloop::{EventLoop, LoopHandle, Protocol, TimerHandle, Transport, TransportStream};

/// The default listen backlog (asyncio's 100 loses connections in a burst).
const BACKLOG: u32 = 1024;

/// The callback half: collects the first line, checks it, upgrades.
struct Handshake {
    lp: LoopHandle,
    /// How long the client has to send its handshake line.
    timeout: Duration,
    transport: Option<Transport>,
    /// Closes the connection when the handshake takes too long.
    deadline: Option<TimerHandle>,
    pending: Vec<u8>,
}

impl Protocol for Handshake {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
        let t = transport.clone();
        // Only fails once the loop is closing, and then nothing runs anyway.
        self.deadline = self.lp.call_later(self.timeout, move || t.close()).ok();
    }

    fn data_received(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        let Some(end) = self.pending.iter().position(|&b| b == b'\n') else {
            if self.pending.len() > 1024 {
                self.refuse(); // no line in sight: not a client of ours
            }
            return;
        };
        let rest = self.pending.split_off(end + 1);
        let line = String::from_utf8_lossy(&self.pending).trim_end().to_owned();
        let Some(name) = line.strip_prefix("HELLO ").map(str::to_owned) else {
            return self.refuse();
        };
        let Some(transport) = self.transport.take() else {
            return;
        };
        self.cancel_deadline();
        // Upgrade: from here on the stream's protocol receives the data.
        let _ = transport.write(format!("OK {name}\n").as_bytes());
        let stream = TransportStream::with_buffered(&transport, &rest);
        self.lp.spawn_local(session(name, stream)).detach();
    }

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        // The transport drops this protocol after this call, but the timer
        // holds a clone of the transport of its own: cancel it, so both go
        // now rather than when it would have fired.
        self.cancel_deadline();
    }
}

impl Handshake {
    fn refuse(&mut self) {
        self.cancel_deadline();
        if let Some(t) = self.transport.take() {
            let _ = t.write(b"ERR\n");
            t.close();
        }
    }

    fn cancel_deadline(&mut self) {
        if let Some(timer) = self.deadline.take() {
            timer.cancel();
        }
    }
}

/// The async half: a line-at-a-time conversation.
async fn session(name: String, mut stream: TransportStream) {
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let reply = format!("{name}: {}\n", line.trim_end().to_uppercase());
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.close().await;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut addr, mut backlog) = ("127.0.0.1:8888".to_owned(), BACKLOG);
    let mut timeout = Duration::from_secs(10);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            "--timeout" => {
                let ms = args.next().ok_or("--timeout needs MS")?.parse()?;
                timeout = Duration::from_millis(ms);
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => addr = arg,
        }
    }
    let lp = EventLoop::new()?;
    let h = lp.handle();
    let factory = move || Handshake {
        lp: h.clone(),
        timeout,
        transport: None,
        deadline: None,
        pending: Vec::new(),
    };
    let server = lp.run_until_complete(lp.create_server(factory, &addr).backlog(backlog))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
