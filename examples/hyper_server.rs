//! An HTTP server: hyper 1.x on sloop's bridge, with no tokio runtime.
//!
//! - I/O: each connection is a [`TransportStream`] (futures-io), turned
//!   into hyper's `rt::Read`/`rt::Write` by `smol_hyper::rt::FuturesIo`.
//! - Timer: hyper's `rt::Timer` needs `Send + Sync` sleeps;
//!   [`HyperTimer`] wraps sloop's [`LoopTimer`], whose [`SendSleep`]s are
//!   both, riding on the loop's timer heap. HTTP/1 uses it for the header
//!   read timeout (the second argument, in milliseconds; 10 s by default).
//! - Executor: HTTP/2 spawns a task per stream; [`HyperExecutor`] hands
//!   them to [`LocalExecutor`] (`spawn_local`), so neither the futures nor
//!   the service need to be `Send`.
//! - HTTP/1.1 (with keep-alive) and HTTP/2 with prior knowledge (h2c) on
//!   the same port: the first bytes are compared with the HTTP/2
//!   connection preface, then handed back to whichever protocol it is.
//!
//! Routes: `GET /` answers `200` with a short text; `POST /echo` answers
//! with the request body; anything else is `404`.
//!
//! ```text
//! cargo run --example hyper_server -- 127.0.0.1:8888
//! curl http://127.0.0.1:8888/
//! curl --data-binary 'hello' http://127.0.0.1:8888/echo
//! curl http://127.0.0.1:8888/ http://127.0.0.1:8888/     # one connection
//! curl --http2-prior-knowledge http://127.0.0.1:8888/
//! ```
//!
//! It prints `listening on ADDR` (the bound address, so `127.0.0.1:0`
//! works) and runs until killed. Usage:
//! `hyper_server [ADDR] [HEADER_READ_TIMEOUT_MS]`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use sloop::bridge::rt::{LocalExecutor, LoopTimer, SendSleep};
use sloop::{EventLoop, LoopHandle, TransportStream};
use smol_hyper::rt::FuturesIo;

/// hyper's `rt::Timer` on the loop's timer heap.
#[derive(Clone, Debug)]
struct HyperTimer(LoopTimer);

/// A [`SendSleep`] as hyper's `rt::Sleep` (a newtype: both the trait and
/// the type are foreign here).
#[derive(Debug)]
struct HyperSleep(SendSleep);

impl Future for HyperSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(self.0.sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(self.0.sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        // Reuse our own sleep in place; anything else is replaced.
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            Some(mut ours) => ours.0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// hyper's `rt::Executor` as `spawn_local`: `!Send` futures are fine.
#[derive(Clone, Debug)]
struct HyperExecutor(LocalExecutor);

impl<F: Future<Output = ()> + 'static> hyper::rt::Executor<F> for HyperExecutor {
    fn execute(&self, fut: F) {
        self.0.execute(fut);
    }
}

/// The routes.
async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => Response::new(Full::new(Bytes::from_static(b"hello from sloop\n"))),
        (&Method::POST, "/echo") => {
            let body = req.into_body().collect().await?.to_bytes();
            Response::new(Full::new(body))
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(response)
}

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads as much of the HTTP/2 preface as the client sent: returns how
/// many of its bytes were read (consumed from `stream`). A whole preface
/// means HTTP/2; anything else is HTTP/1, and nothing past the matching
/// part was consumed.
async fn read_preface(stream: &mut TransportStream) -> io::Result<usize> {
    let mut matched = 0;
    while matched < H2_PREFACE.len() {
        let buf = stream.fill_buf().await?;
        let n = buf.len().min(H2_PREFACE.len() - matched);
        if n == 0 || buf[..n] != H2_PREFACE[matched..matched + n] {
            break;
        }
        stream.consume_unpin(n);
        matched += n;
    }
    Ok(matched)
}

/// A stream with some bytes put back in front of it, to be read first.
struct Rewind<S> {
    prefix: &'static [u8],
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if !self.prefix.is_empty() && !buf.is_empty() {
            let n = buf.len().min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix = &self.prefix[n..];
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2 by its first bytes.
async fn serve(
    mut stream: TransportStream,
    lp: LoopHandle,
    timer: HyperTimer,
    header_timeout: Duration,
) {
    let matched = match read_preface(&mut stream).await {
        Ok(n) => n,
        Err(_) => return,
    };
    let io = FuturesIo::new(Rewind {
        prefix: &H2_PREFACE[..matched],
        inner: stream,
    });
    let service = service_fn(route);
    let result = if matched == H2_PREFACE.len() {
        http2::Builder::new(HyperExecutor(LocalExecutor::new(lp)))
            .timer(timer)
            .serve_connection(io, service)
            .await
    } else {
        http1::Builder::new()
            .timer(timer)
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            .serve_connection(io, service)
            .await
    };
    if let Err(e) = result {
        eprintln!("connection error: {e}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8888".to_owned());
    let header_timeout = match args.next() {
        Some(ms) => Duration::from_millis(ms.parse()?),
        None => Duration::from_secs(10),
    };
    let lp = EventLoop::new()?;
    let timer = HyperTimer(LoopTimer::new(lp.remote()));
    let h = lp.handle();
    let handler = move |stream| serve(stream, h.clone(), timer.clone(), header_timeout);
    let server = lp.run_until_complete(lp.start_server(handler, &addr))??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}
