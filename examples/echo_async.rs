//! A TCP echo server written with `async fn` and `futures::io` copy, on
//! sloop's bridge: each connection is a task on the loop, its stream a
//! [`TransportStream`].
//!
//! ```text
//! cargo run --release --example echo_async -- 127.0.0.1:8888
//! ```
//!
//! `TransportStream` is `AsyncBufRead`, so `copy_buf` hands the bytes the
//! transport received straight to the writer, with no second buffer.
//! Backpressure is the stream's: when the client stops reading, writes pend
//! (`pause_writing`), so the copy stops reading, the stream's buffer fills
//! and the transport stops reading from the socket. On EOF the copy ends;
//! `close` flushes and half-closes, and dropping the stream closes it.

use futures::io::AsyncWriteExt;
use sloop::{EventLoop, TransportStream};

async fn echo(stream: TransportStream) {
    let (mut reader, mut writer) = stream.split();
    // An error here is the client's doing (a reset): just drop the stream.
    if futures::io::copy_buf(&mut reader, &mut writer)
        .await
        .is_ok()
    {
        let _ = writer.close().await;
    }
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
