//! A WebSocket echo server: `async-tungstenite` running unchanged on sloop's
//! bridge, with no other runtime.
//!
//! Each connection is a [`TransportStream`] from
//! [`start_server`](sloop::LoopHandle::start_server); `accept_async` runs
//! the HTTP upgrade on it, and the resulting `WebSocketStream` (a `Stream`
//! and a `Sink` of messages) echoes every text and binary message back.
//! tungstenite answers pings itself and, when the client sends a close
//! frame, queues the close reply, which goes out on the next poll of the
//! stream; the stream then ends and the connection is closed.
//!
//! ```text
//! cargo run --example websocket_echo -- 127.0.0.1:8888
//! ```
//!
//! Then try it with Python's `websockets` client:
//!
//! ```text
//! python3 -m websockets ws://127.0.0.1:8888/
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until killed. Usage:
//! `websocket_echo [ADDR] [--timeout MS] [--backlog N]`.
//!
//! The handshake is bounded: `accept_async` runs inside
//! [`sloop::timeout`], so a client that connects and never completes its
//! HTTP upgrade request is dropped, and its connection closed, after
//! `--timeout` (10 s by default). Without it a silent client would hold
//! its fd and task for as long as it likes. Once upgraded, the echo goes
//! at the client's pace, as any echo does. `--backlog N` sets the listen
//! backlog (default 1024, as in `echo_protocol`).

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use sloop::{EventLoop, TransportStream};

/// The default listen backlog (asyncio's 100 loses connections in a burst).
const BACKLOG: u32 = 1024;

/// Runs the WebSocket handshake on `stream`, for at most `timeout`, and
/// echoes until the client closes.
async fn echo(stream: TransportStream, timeout: Duration) {
    let peer = stream.transport().peer_addr();
    // On timeout the handshake future is dropped, and with it the stream,
    // which closes the connection.
    let mut ws = match sloop::timeout(timeout, async_tungstenite::accept_async(stream)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            eprintln!("{peer:?}: handshake failed: {e}");
            return;
        }
        Err(_) => {
            eprintln!("{peer:?}: no handshake within {timeout:?}");
            return;
        }
    };
    while let Some(msg) = ws.next().await {
        let result = match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => ws.send(msg).await,
            // Pings are answered, and the close reply queued, by
            // tungstenite itself; the next poll of the stream sends them.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => {
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            eprintln!("{peer:?}: {e}");
            return;
        }
    }
    // The close handshake is complete: dropping `ws` drops the stream,
    // which closes the connection (the server side closes TCP first, as
    // RFC 6455 asks).
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
    let handler = move |stream| echo(stream, timeout);
    let server = lp.run_until_complete(lp.start_server(handler, &addr).backlog(backlog))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
