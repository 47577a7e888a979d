//! One server, both styles on one connection: each connection starts as a
//! callback [`Protocol`] that reads a line-based handshake, then upgrades
//! to an async task holding a [`TransportStream`] for the rest.
//!
//! ```text
//! cargo run --example mixed -- 127.0.0.1:8888
//! printf 'HELLO alice\nhow are you?\n' | nc -q1 127.0.0.1 8888
//! ```
//!
//! The handshake is `HELLO <name>\n`; anything else gets `ERR` and the
//! connection is closed by the protocol. After `OK <name>` the task answers
//! each line with `<name>: <LINE IN CAPITALS>`. Bytes that arrived in the
//! same read as the handshake line are handed to the stream
//! ([`TransportStream::with_buffered`]), so nothing is lost at the switch.

use futures::io::{AsyncBufReadExt, AsyncWriteExt};
use sloop::{EventLoop, LoopHandle, Protocol, Transport, TransportStream};

/// The callback half: collects the first line, checks it, upgrades.
struct Handshake {
    lp: LoopHandle,
    transport: Option<Transport>,
    pending: Vec<u8>,
}

impl Protocol for Handshake {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
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
        // Upgrade: from here on the stream's protocol receives the data.
        let _ = transport.write(format!("OK {name}\n").as_bytes());
        let stream = TransportStream::with_buffered(&transport, &rest);
        self.lp.spawn_local(session(name, stream)).detach();
    }

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        self.transport = None;
    }
}

impl Handshake {
    fn refuse(&mut self) {
        if let Some(t) = self.transport.take() {
            let _ = t.write(b"ERR\n");
            t.close();
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
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let lp = EventLoop::new()?;
    let h = lp.handle();
    let factory = move || Handshake {
        lp: h.clone(),
        transport: None,
        pending: Vec::new(),
    };
    let server = lp.run_until_complete(lp.create_server(factory, &addr))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
