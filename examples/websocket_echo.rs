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
//! works) and runs until killed.

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use sloop::{EventLoop, TransportStream};

/// Runs the WebSocket handshake on `stream` and echoes until the client
/// closes.
async fn echo(stream: TransportStream) {
    let peer = stream.transport().peer_addr();
    let mut ws = match async_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("{peer:?}: handshake failed: {e}");
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
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(lp.start_server(echo, &addr))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
