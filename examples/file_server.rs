//! A tiny HTTP/1.1 file server: every `GET` is answered with one file,
//! its body sent by `sendfile` on the async bridge, so the bytes go from
//! the page cache to the socket without a copy through this process.
//!
//! ```text
//! cargo run --release --example file_server -- 127.0.0.1:8080 /path/to/file
//! curl -o /dev/null http://127.0.0.1:8080/
//! file_server ADDR FILE [--fallback] [--timeout MS]
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until killed. Each response has a `Content-Length`
//! header; connections are kept alive for the next request (HTTP/1.1's
//! default) unless the client says `Connection: close` or speaks
//! HTTP/1.0. A client has `--timeout` (10 s by default) to send each
//! request's head, so a silent one does not hold its connection forever.
//! `HEAD` gets the head only; other methods get `405`. `--fallback` skips
//! the zero-copy path and reads and writes the file instead (what a TLS
//! transport does), for comparison.
//!
//! The file is opened for each request, so a replaced file is served at
//! once, and each response has its own file position.

use std::fs::File;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures::io::{AsyncBufReadExt, AsyncWriteExt};
use sloop::{EventLoop, TransportStream};

/// The default listen backlog (as the other example servers).
const BACKLOG: u32 = 1024;

/// The largest request head accepted (a client sending more is closed).
const MAX_HEAD: usize = 16 * 1024;

struct Config {
    path: PathBuf,
    fallback: bool,
    timeout: Duration,
}

/// A request's head, as far as this server cares.
struct Request {
    method: String,
    keep_alive: bool,
}

/// Reads one request head (through the empty line). `None` at EOF before
/// a request, on a malformed or oversized head, or when the client takes
/// longer than the timeout.
async fn read_head(stream: &mut TransportStream, timeout: Duration) -> Option<Request> {
    let mut head = Vec::new();
    let read = async {
        loop {
            let before = head.len();
            let n = stream.read_until(b'\n', &mut head).await.ok()?;
            if n == 0 || head.len() > MAX_HEAD {
                return None;
            }
            let line = &head[before..];
            if line == b"\r\n" || line == b"\n" {
                return Some(());
            }
        }
    };
    sloop::timeout(timeout, read).await.ok()??;
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let _target = first.next()?;
    let version = first.next()?;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("connection") {
                let value = value.trim();
                if value.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    Some(Request { method, keep_alive })
}

/// Answers requests on one connection until the client is done.
async fn serve(mut stream: TransportStream, config: Rc<Config>) {
    while let Some(req) = read_head(&mut stream, config.timeout).await {
        let ok = match respond(&mut stream, &config, &req).await {
            Ok(ok) => ok,
            Err(_) => return, // the client went away mid-response
        };
        if !ok || !req.keep_alive {
            break;
        }
    }
    let _ = stream.close().await;
}

/// Sends the response; `Ok(false)` if the connection must close after it.
async fn respond(
    stream: &mut TransportStream,
    config: &Config,
    req: &Request,
) -> std::io::Result<bool> {
    let connection = if req.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    if req.method != "GET" && req.method != "HEAD" {
        let head = format!(
            "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        return Ok(true);
    }
    let file = match File::open(&config.path) {
        Ok(f) => f,
        Err(_) => {
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            return Ok(true);
        }
    };
    let len = file.metadata()?.len();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: {connection}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    if req.method == "HEAD" || len == 0 {
        return Ok(true);
    }
    // Exactly the announced length, even if the file grows meanwhile.
    let sent = stream
        .sendfile(&file, 0, Some(len))
        .native(!config.fallback)
        .await?;
    // A file that shrank meanwhile: the response is short, so the
    // connection cannot carry another.
    Ok(sent == len)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = None;
    let mut path = None;
    let mut fallback = false;
    let mut timeout = Duration::from_secs(10);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fallback" => fallback = true,
            "--timeout" => {
                let ms: u64 = args.next().ok_or("--timeout needs MS")?.parse()?;
                timeout = Duration::from_millis(ms);
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ if addr.is_none() => addr = Some(arg),
            _ if path.is_none() => path = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}").into()),
        }
    }
    let usage = "usage: file_server ADDR FILE [--fallback] [--timeout MS]";
    let addr = addr.ok_or(usage)?;
    let path = path.ok_or(usage)?;
    File::open(&path)?; // fail now, not at the first request
    let config = Rc::new(Config {
        path,
        fallback,
        timeout,
    });
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(
        lp.start_server(move |s| serve(s, config.clone()), &addr)
            .backlog(BACKLOG),
    )??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
