//! A line-based echo server: `asynchronous-codec`'s `Framed` with
//! `LinesCodec` on sloop's bridge. Each line comes back upper-cased.
//!
//! The connection's [`TransportStream`] becomes a `Stream` of lines and a
//! `Sink` of lines (`Framed::new(stream, LinesCodec)`); `forward` feeds
//! each reply to the sink, flushes whenever no more input is ready, and
//! closes the sink at the end, which sends EOF once the client has sent
//! its own. A last line without a newline is an error for `LinesCodec`
//! (`bytes remaining in stream`): it is reported and the connection closed.
//!
//! ```text
//! cargo run --example codec_lines -- 127.0.0.1:8888
//! ```
//!
//! Then try it with any line-based client:
//!
//! ```text
//! printf 'hello\nworld\n' | nc -N 127.0.0.1 8888
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until killed. Usage: `codec_lines [ADDR] [--backlog N]`
//! (the listen backlog, 1024 by default as in `echo_protocol`).
//!
//! Like the echo servers it lets an idle client wait as long as it likes.
//! `LinesCodec` has no limit on a line's length either: a server facing
//! untrusted clients wants a codec that caps it.

use asynchronous_codec::{Framed, LinesCodec};
use futures::StreamExt;
use sloop::{EventLoop, TransportStream};

/// The default listen backlog (asyncio's 100 loses connections in a burst).
const BACKLOG: u32 = 1024;

/// Upper-cases each line (the newline stays) until the client sends EOF.
async fn shout(stream: TransportStream) {
    let peer = stream.transport().peer_addr();
    let (sink, lines) = Framed::new(stream, LinesCodec).split();
    let replies = lines.map(|line| line.map(|l| l.to_uppercase()));
    if let Err(e) = replies.forward(sink).await {
        eprintln!("{peer:?}: {e}");
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
    let server = lp.run_until_complete(lp.start_server(shout, &addr).backlog(backlog))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
