//! An HTTP server: hyper 1.x on sloop's bridge, with no tokio runtime.
//!
//! - I/O: each connection is a [`TransportStream`] (futures-io), turned
//!   into hyper's `rt::Read`/`rt::Write` by `smol_hyper::rt::FuturesIo`.
//! - Timer: hyper's `rt::Timer` needs `Send + Sync` sleeps;
//!   [`HyperTimer`] wraps sloop's [`LoopTimer`], whose [`SendSleep`]s are
//!   both, riding on the loop's timer heap. HTTP/1 uses it for the header
//!   read timeout.
//! - Executor: HTTP/2 spawns a task per stream; [`HyperExecutor`] hands
//!   them to [`LocalExecutor`] (`spawn_local`), so neither the futures nor
//!   the service need to be `Send`.
//! - HTTP/1.1 (with keep-alive) and HTTP/2 with prior knowledge (h2c) on
//!   the same port: the first bytes are compared with the HTTP/2
//!   connection preface, then handed back to whichever protocol it is.
//!
//! Routes: `GET /` answers `200` with a short text; `POST /echo` answers
//! with the request body; `GET /metrics` answers the loop's statistics
//! in Prometheus' text format (`LoopStats::to_prometheus`); anything else
//! is `404`.
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
//! works) and runs until SIGINT (Ctrl-C) or SIGTERM: then it closes the
//! server and its connections, prints `closed N connections` and exits 0. Usage:
//! `hyper_server [ADDR] [TIMEOUT_MS] [--backlog N] [--tls CERT.pem KEY.pem]`
//! (or `--timeout MS`, as in the other examples); `--backlog N` sets the
//! listen backlog (default 1024, as in `echo_protocol`); `--tls` serves
//! HTTPS with that PEM chain and key, offering `h2` and `http/1.1` by ALPN
//! (`curl --cacert CA.pem https://localhost:8888/`).
//!
//! Every wait on a client is bounded by the timeout (10 s by default), so
//! no client can hold a connection open by saying nothing:
//!
//! - the first bytes, which tell HTTP/1 from HTTP/2: [`sloop::timeout`]
//!   around [`read_preface`] (hyper's own timeouts start only after it);
//! - an HTTP/1 request's headers, including the wait for the next request
//!   on an idle keep-alive connection: hyper's `header_read_timeout`,
//!   which runs from the moment hyper waits for a request to its last
//!   header line, so it also cuts off a client trickling its headers;
//! - everything else: [`IdleTimeout`] closes the connection once no byte
//!   has moved either way for that long. hyper has no bound for an idle
//!   HTTP/2 connection (nor for one that sent the preface and stopped), a
//!   request body that stops coming, or a client that stops reading its
//!   response. (A handler slower than the timeout would be cut off too:
//!   such a server wants a longer idle bound than its header bound.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use sloop::bridge::rt::{LocalExecutor, LoopTimer, SendSleep};
use sloop::{EventLoop, LoopHandle, Sleep, TransportStream};
use smol_hyper::rt::FuturesIo;

/// The default listen backlog (asyncio's 100 loses connections in a burst).
const BACKLOG: u32 = 1024;

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
        (&Method::GET, "/metrics") => metrics(),
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

/// A stream that fails with `TimedOut` once no byte has moved either way
/// for `idle`: checked whenever a read, write or flush of the inner
/// stream is pending, so it bounds every wait on the client.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    /// When a byte last moved.
    last: Instant,
    /// Fires at or before `last + idle`; when it fires early (bytes moved
    /// since it was set), it is moved on. Cheaper than resetting a timer
    /// on every read.
    timer: Sleep,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            last: Instant::now(),
            timer: sloop::sleep(idle),
        }
    }

    /// Notes that bytes moved, if they did; passes `res` on.
    fn moved(&mut self, res: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                self.last = Instant::now();
            }
        }
        res
    }

    /// For an inner stream that is pending: the error once the connection
    /// has been idle for `idle`, else pending, with the timer set to wake
    /// this task.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(Pin::new(&mut self.timer).poll(cx));
            let deadline = self.last + self.idle;
            if deadline <= self.timer.deadline() {
                let msg = format!("no byte moved for {:?}", self.idle);
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, msg));
            }
            self.timer.reset(deadline);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            res => self.moved(res),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            res => self.moved(res),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            res => self.moved(res),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            res => res,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_close(cx) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            res => res,
        }
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2 by its first bytes; every
/// wait on the client lasts at most `timeout`.
async fn serve(mut stream: TransportStream, lp: LoopHandle, timer: HyperTimer, timeout: Duration) {
    // On timeout (or an error) `stream` is dropped, which closes the
    // connection.
    let matched = match sloop::timeout(timeout, read_preface(&mut stream)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) | Err(_) => return,
    };
    let rewind = Rewind {
        prefix: &H2_PREFACE[..matched],
        inner: stream,
    };
    let io = FuturesIo::new(IdleTimeout::new(rewind, timeout));
    let service = service_fn(route);
    let result = if matched == H2_PREFACE.len() {
        http2::Builder::new(HyperExecutor(LocalExecutor::new(lp)))
            .timer(timer)
            .serve_connection(io, service)
            .await
    } else {
        http1::Builder::new()
            .timer(timer)
            .header_read_timeout(timeout)
            .keep_alive(true)
            .serve_connection(io, service)
            .await
    };
    if let Err(e) = result {
        eprintln!("connection error: {e}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut addr, mut backlog) = ("127.0.0.1:8888".to_owned(), BACKLOG);
    let mut timeout = Duration::from_secs(10);
    #[cfg(feature = "tls")]
    let mut tls = None; // --tls CERT.pem KEY.pem: HTTPS, HTTP/2 or 1.1 by ALPN
    let (mut args, mut positional) = (std::env::args().skip(1), 0);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            #[cfg(feature = "tls")]
            "--tls" => {
                let cert = args.next().ok_or("--tls needs CERT.pem KEY.pem")?;
                let key = args.next().ok_or("--tls needs CERT.pem KEY.pem")?;
                let (chain, key) = sloop::tls::load_pem_files(cert, key)?;
                let mut config = sloop::tls::server_config_builder(chain, key)?;
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                tls = Some(std::sync::Arc::new(config));
            }
            "--timeout" => {
                let ms = args.next().ok_or("--timeout needs MS")?.parse()?;
                timeout = Duration::from_millis(ms);
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ if positional == 0 => (addr, positional) = (arg, 1),
            _ => timeout = Duration::from_millis(arg.parse()?),
        }
    }
    let lp = EventLoop::new()?;
    let timer = HyperTimer(LoopTimer::new(lp.remote()));
    let h = lp.handle();
    let handler = move |stream| serve(stream, h.clone(), timer.clone(), timeout);
    #[allow(unused_mut)]
    let mut builder = lp.start_server(handler, &addr).backlog(backlog);
    #[cfg(feature = "tls")]
    if let Some(config) = tls {
        builder = builder.tls(config); // the preface still tells h2 from 1.1
    }
    let server = lp.run_until_complete(builder)??;
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

/// `GET /metrics`: the statistics of the loop this request runs on.
fn metrics() -> Response<Full<Bytes>> {
    let text = sloop::get_running_loop().map_or_else(String::new, |lp| lp.stats().to_prometheus());
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
