//! A TCP echo server written with `async fn` and `futures::io` copy, on
//! sloop's bridge: each connection is a task on the loop, its stream a
//! [`TransportStream`].
//!
//! ```text
//! cargo run --release --example echo_async -- 127.0.0.1:8888
//! echo_async [ADDR] [--backlog N]
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until SIGINT (Ctrl-C) or SIGTERM: then it closes the
//! server and its connections, prints `closed N connections` and exits 0. `--backlog N` sets the listen backlog
//! (default 1024, as in `echo_protocol`). Like any echo server it lets an
//! idle client wait as long as it likes; to bound a wait on a client, wrap
//! it in `sloop::timeout` (see `websocket_echo`).
//!
//! `TransportStream` is `AsyncBufRead`, so `copy_buf` hands the bytes the
//! transport received straight to the writer, with no second buffer.
//! Backpressure is the stream's: when the client stops reading, writes pend
//! (`pause_writing`), so the copy stops reading, the stream's buffer fills
//! and the transport stops reading from the socket. On EOF the copy ends;
//! `close` flushes and half-closes, and dropping the stream closes it.

use std::time::Duration;

use futures::io::AsyncWriteExt;
use sloop::{EventLoop, TransportStream};

/// The default listen backlog (asyncio's 100 loses connections in a burst).
const BACKLOG: u32 = 1024;

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
    let (mut addr, mut backlog) = ("127.0.0.1:8888".to_owned(), BACKLOG);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => addr = arg,
        }
    }
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(lp.start_server(echo, &addr).backlog(backlog))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    // Ctrl-C or SIGTERM: stop accepting, close the clients (what they are
    // owed is sent first), and exit 0.
    lp.run_until_signal(&[libc::SIGINT, libc::SIGTERM])?;
    let n = server.connection_count();
    server.close();
    server.close_clients();
    // A client that never reads would keep its close waiting: abort after
    // a second.
    if lp
        .run_until_complete(sloop::timeout(Duration::from_secs(1), server.wait_closed()))?
        .is_err()
    {
        server.abort_clients();
        lp.run_until_complete(server.wait_closed())?;
    }
    println!("closed {n} connections");
    Ok(())
}
