//! Opening connections: asyncio's `create_connection` (with Happy
//! Eyeballs), `create_unix_connection` and `connect_accepted_socket`.
//!
//! Every function takes its address as a [`ToAddrs`] and returns a
//! [`Connect`] builder: options chain on it, and awaiting it connects.
//! Host names are resolved on a short-lived thread (the system resolver
//! blocks); numeric addresses skip it. Each resolved address is tried in
//! turn, or, with a Happy Eyeballs delay, attempts are staggered: a new one
//! starts when the delay passes or the previous one fails, and the first
//! success wins (the others' sockets are closed). The transport is created
//! once a socket is connected, and the future completes after the
//! protocol's `connection_made` ran.
//!
//! When every attempt fails, the error is asyncio's: the one error, or,
//! from several that differ, "Multiple exceptions: ..."; with
//! [`Connect::all_errors`], a [`ConnectErrors`] holding each attempt's
//! error (asyncio 3.12's `ExceptionGroup`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::event_loop::{LoopHandle, TimerHandle};
use crate::net::{self, Addrs, Family, SockKind, ToAddrs, Use};
use crate::protocol::{AnyProtocol, IntoProtocol, Protocol};
use crate::transport::socket::{Kind, SocketTransport};
use crate::transport::{EmptyWaiter, Transport};

/// asyncio's `_interleave_addrinfos`: alternate families, the first family
/// getting `first_count` addresses in front.
fn interleave(addrs: Vec<SocketAddr>, first_count: usize) -> Vec<SocketAddr> {
    let Some(first) = addrs.first().copied() else {
        return addrs;
    };
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs
        .into_iter()
        .partition(|x| x.is_ipv4() == first.is_ipv4());
    let mut out: Vec<SocketAddr> = a
        .drain(..first_count.saturating_sub(1).min(a.len()))
        .collect();
    let mut a = a.into_iter();
    let mut b = b.drain(..);
    loop {
        match (b.next(), a.next()) {
            (None, None) => break,
            (x, y) => {
                // The first family leads each round.
                if let Some(y) = y {
                    out.push(y);
                }
                if let Some(x) = x {
                    out.push(x);
                }
            }
        }
    }
    out
}

/// A one-shot signal between a loop callback and the future waiting for
/// it: the callback fires it, the future sees it at its next poll.
#[derive(Default)]
struct Signal {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Marks it fired and wakes the waiting task (the waker taken out
    /// first: nothing is borrowed while it runs).
    fn fire(&self) {
        self.fired.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether it fired; if not, `cx`'s waker is kept for [`fire`](Signal::fire).
    fn poll(&self, cx: &Context<'_>) -> bool {
        if self.fired.get() {
            return true;
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        false
    }
}

/// Waits until `fd` is writable (a non-blocking connect finished), using
/// the loop's `add_writer`.
struct Writable {
    lp: LoopHandle,
    fd: i32,
    signal: Rc<Signal>,
    registered: bool,
}

impl Future for Writable {
    type Output = io::Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.signal.poll(cx) {
            return Poll::Ready(Ok(()));
        }
        if !self.registered {
            let signal = self.signal.clone();
            let fd = self.fd;
            if let Err(e) = self.lp.add_writer(&fd, move || signal.fire()) {
                return Poll::Ready(Err(e.into()));
            }
            self.registered = true;
        }
        Poll::Pending
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        if self.registered {
            let _ = self.lp.remove_writer(&self.fd);
        }
    }
}

/// Completes once `delay` has passed, on the loop's timer heap: the Happy
/// Eyeballs stagger. (The bridge's `sleep` is a layer above this module,
/// D14.) Dropping it cancels the timer.
struct Delay {
    lp: LoopHandle,
    delay: Duration,
    signal: Rc<Signal>,
    timer: Option<TimerHandle>,
}

impl Delay {
    fn new(lp: &LoopHandle, delay: Duration) -> Delay {
        Delay {
            lp: lp.clone(),
            delay,
            signal: Rc::default(),
            timer: None,
        }
    }
}

impl Future for Delay {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.poll(cx) {
            return Poll::Ready(());
        }
        if self.timer.is_none() {
            let signal = self.signal.clone();
            match self.lp.call_later(self.delay, move || signal.fire()) {
                Ok(t) => self.timer = Some(t),
                // A closed loop: nothing will ever fire; do not stall the
                // attempts waiting on it.
                Err(_) => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.cancel();
        }
    }
}

/// Connects a new non-blocking socket to `addr` (bound first to a
/// `local` address of the same family, if any are given).
async fn connect_one(lp: &LoopHandle, addr: SockAddr, local: &[SocketAddr]) -> io::Result<Socket> {
    let domain = addr.domain();
    let sock = Socket::new(domain, Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    if !local.is_empty() {
        net::bind_local(&sock, local)?;
    }
    match sock.connect(&addr) {
        Ok(()) => return Ok(sock),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {} // Unix: EAGAIN
        Err(e) => return Err(e),
    }
    Writable {
        lp: lp.clone(),
        fd: sock.as_raw_fd(),
        signal: Rc::default(),
        registered: false,
    }
    .await?;
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    Ok(sock)
}

/// Every failed attempt of a connection, in the order the attempts failed:
/// the error of a [`Connect`] with [`all_errors`](Connect::all_errors)
/// (asyncio 3.12's `ExceptionGroup("create_connection failed", ...)`).
///
/// The connect future fails with an [`io::Error`] that carries it: reach it
/// with [`ConnectErrors::of`] (or `get_ref`/`into_inner` and a downcast).
/// That error's [`kind`](io::Error::kind) is the attempts' kind when they
/// all share one (say `ConnectionRefused`), else `Other`, so code that only
/// looks at the kind keeps working.
///
/// ```
/// use sloop::{ConnectErrors, EventLoop, Protocol};
///
/// struct Nothing;
/// impl Protocol for Nothing {}
///
/// // A port nobody listens on: bind one, note it, close it.
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// let lp = EventLoop::new()?;
/// let err = lp
///     .run_until_complete(lp.create_connection(|| Nothing, ("127.0.0.1", port)).all_errors(true))?
///     .unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
/// let all = ConnectErrors::of(&err).expect("all_errors gives the group");
/// assert_eq!(all.errors().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ConnectErrors {
    errors: Vec<io::Error>,
}

impl ConnectErrors {
    /// The [`ConnectErrors`] inside `error`, if it carries one.
    pub fn of(error: &io::Error) -> Option<&ConnectErrors> {
        error.get_ref()?.downcast_ref()
    }

    /// Each attempt's error, in the order the attempts failed. See the
    /// example on [`ConnectErrors`].
    pub fn errors(&self) -> &[io::Error] {
        &self.errors
    }

    /// The attempts' errors, owned: [`errors`](ConnectErrors::errors) by
    /// value. See the example on [`ConnectErrors`].
    pub fn into_errors(self) -> Vec<io::Error> {
        self.errors
    }

    /// Wraps `errors` in an `io::Error` of their common kind (else
    /// `Other`).
    fn into_io(errors: Vec<io::Error>) -> io::Error {
        let kind = match errors.split_first() {
            Some((first, rest)) if rest.iter().all(|e| e.kind() == first.kind()) => first.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, ConnectErrors { errors })
    }
}

impl fmt::Display for ConnectErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "create_connection failed ({n} error{})",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectErrors {}

/// The error of a connection whose attempts all failed: with `all`, every
/// error as a [`ConnectErrors`]; otherwise asyncio's aggregation: one error
/// as is; all alike, the first; else "Multiple exceptions: ...".
fn combine(mut errors: Vec<io::Error>, all: bool) -> io::Error {
    if all {
        return ConnectErrors::into_io(errors);
    }
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    if texts.iter().all(|t| *t == texts[0]) {
        return errors.remove(0);
    }
    io::Error::other(format!("Multiple exceptions: {}", texts.join(", ")))
}

/// Wraps a connected socket in a transport and waits for
/// `connection_made`.
async fn make_transport(
    lp: &LoopHandle,
    sock: Socket,
    protocol: AnyProtocol,
) -> io::Result<Transport> {
    let kind = match sock.domain() {
        Ok(d) if d == Domain::UNIX => Kind::Unix,
        _ => Kind::Tcp,
    };
    sock.set_nonblocking(true)?;
    let (rc, started) = SocketTransport::create(lp, sock, kind, protocol, None)
        .map_err(|(e, _)| io::Error::from(e))?;
    let mut handover = Handover {
        transport: Some(Transport::from_socket(rc)),
        started,
    };
    // Resolves after connection_made; a loss before that (abort inside
    // connection_made) still hands the transport over, as asyncio does.
    let _ = (&mut handover.started).await;
    Ok(handover.transport.take().expect("handed over once"))
}

/// A new transport until the connect future hands it over. Dropped with
/// it (the future was dropped), it closes the transport, as asyncio's
/// cancelled waiter does (D15): a protocol whose `connection_made` has not
/// run yet is dropped with no callback, as when the connect fails; one
/// whose `connection_made` ran gets `connection_lost`.
struct Handover {
    transport: Option<Transport>,
    /// Completes right after `connection_made`.
    started: EmptyWaiter,
}

impl Drop for Handover {
    fn drop(&mut self) {
        let Some(t) = self.transport.take() else {
            return;
        };
        if (&mut self.started).now_or_never().is_none() {
            // connection_made is still queued: it goes to a stand-in.
            t.set_protocol(Unclaimed);
        }
        t.abort();
    }
}

/// The protocol of a transport whose connect future was dropped before
/// `connection_made`.
struct Unclaimed;

impl Protocol for Unclaimed {}

enum Target {
    /// Addresses to resolve, or the error that parsing them gave.
    Host(io::Result<Addrs>),
    Unix(PathBuf),
    Sock(Socket),
}

/// Options for a connection, then `.await` to open it. Made by
/// [`LoopHandle::create_connection`], [`LoopHandle::create_unix_connection`]
/// and [`LoopHandle::connect_accepted_socket`], which give a
/// [`Transport`], and by [`open_connection`](LoopHandle::open_connection)
/// and [`open_unix_connection`](LoopHandle::open_unix_connection), which
/// give a [`TransportStream`](crate::TransportStream) (`T`).
///
/// It is [`IntoFuture`], as [`ServerBuilder`](crate::ServerBuilder) is:
/// chain the options, then await it. Nothing happens until then; the
/// future resolves the address (off the loop thread for a name, see
/// [`ToAddrs`]), connects, and completes after the protocol's
/// `connection_made` ran.
///
/// # Cancel safety
///
/// Dropping the future before it completes closes any socket it opened,
/// and closes (aborts) the transport if one was made: the protocol then
/// gets no callback, or, if its `connection_made` already ran,
/// `connection_lost`. A resolution still running on its thread is left to
/// finish, its answer unread.
#[must_use = "a connection is opened by awaiting its builder"]
pub struct Connect<T = Transport> {
    lp: LoopHandle,
    protocol: AnyProtocol,
    target: Target,
    local_addr: Option<io::Result<Addrs>>,
    happy_eyeballs_delay: Option<Duration>,
    interleave: Option<usize>,
    family: Option<Family>,
    all_errors: bool,
    /// TLS on the connection (`.tls(..)`).
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
    /// Turns the connected transport into the output.
    finish: Box<dyn FnOnce(Transport) -> T>,
}

impl<T> fmt::Debug for Connect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            Target::Host(Ok(a)) => a.to_string(),
            Target::Host(Err(e)) => e.to_string(),
            Target::Unix(p) => p.display().to_string(),
            Target::Sock(s) => format!("{s:?}"),
        };
        f.debug_struct("Connect")
            .field("target", &target)
            .field("local_addr", &self.local_addr)
            .field("happy_eyeballs_delay", &self.happy_eyeballs_delay)
            .field("interleave", &self.interleave)
            .field("family", &self.family)
            .field("all_errors", &self.all_errors)
            .finish()
    }
}

impl<T: 'static> Connect<T> {
    /// Bind the socket to this local address first (asyncio's
    /// `local_addr`): any [`ToAddrs`], resolved as the remote one is; the
    /// first address of the socket's family is used. An empty host (`":0"`,
    /// `("", port)`) is every interface.
    ///
    /// The future fails with `InvalidInput` if `addr` is malformed.
    pub fn local_addr(mut self, addr: impl ToAddrs) -> Self {
        self.local_addr = Some(addr.to_addrs());
        self
    }

    /// Happy Eyeballs (RFC 8305): start the next address's attempt after
    /// this delay if the current one has not finished (0.25 s is the RFC's
    /// choice). Implies `interleave(1)` unless set.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// struct Quiet;
    /// impl sloop::Protocol for Quiet {}
    ///
    /// // Only IPv4 listens. If "localhost" also gives ::1, that attempt
    /// // fails and the IPv4 one, started on failure or after 50 ms, wins.
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = listener.local_addr()?.port();
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_connection(|| Quiet, ("localhost", port))
    ///         .happy_eyeballs_delay(Duration::from_millis(50))
    ///         .interleave(1),
    /// )??;
    /// assert_eq!(t.peer_addr(), Some(sloop::Address::Inet(listener.local_addr()?)));
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn happy_eyeballs_delay(mut self, delay: Duration) -> Self {
        self.happy_eyeballs_delay = Some(delay);
        self
    }

    /// Reorder the addresses to alternate families, the first family getting
    /// `first_count` in front. See the example on
    /// [`happy_eyeballs_delay`](Connect::happy_eyeballs_delay).
    pub fn interleave(mut self, first_count: usize) -> Self {
        self.interleave = Some(first_count.max(1));
        self
    }

    /// Only addresses of this family: the host's and
    /// [`local_addr`](Connect::local_addr)'s (asyncio's `family=`).
    /// Ignored for Unix paths and sockets.
    ///
    /// The future fails with `AddrNotAvailable` if the host has no
    /// address of the family (a numeric address of the other family, say).
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// When every attempt fails, fail with all their errors, as a
    /// [`ConnectErrors`] inside the `io::Error`, instead of the one error or
    /// the combined "Multiple exceptions: ..." message (asyncio 3.12's
    /// `all_errors=True`). Off by default. A resolution error is not an
    /// attempt's and comes as it is.
    pub fn all_errors(mut self, on: bool) -> Self {
        self.all_errors = on;
        self
    }

    /// TLS on the connection: the handshake runs after the connect, with
    /// `config` (see [`tls::client_config`](crate::tls::client_config)),
    /// verifying the server as `server_name`; the future completes once
    /// it is done, after the protocol's `connection_made` (asyncio's
    /// `ssl=` and `server_hostname=`). See the [`tls`](crate::tls) module.
    ///
    /// The future fails with [`Error::InvalidServerName`](crate::Error::InvalidServerName)
    /// (before connecting) for an empty or malformed name, and with the
    /// handshake's typed error ([`Error::Tls`](crate::Error::Tls),
    /// [`Error::TlsHandshakeTimeout`](crate::Error::TlsHandshakeTimeout)).
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        config: std::sync::Arc<crate::tls::rustls::ClientConfig>,
        server_name: &str,
    ) -> Self {
        let old = self.tls.take();
        let mut cfg = crate::tls::TlsConfig::client(config, server_name);
        if let Some(old) = old {
            cfg = cfg.timeouts_of(&old);
        }
        self.tls = Some(cfg);
        self
    }

    /// TLS with a full [`TlsConfig`](crate::tls::TlsConfig) (its
    /// timeouts included). A server-side configuration makes this end
    /// the TLS server of the connection.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: crate::tls::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// The same connection, giving `f(transport)` instead: how
    /// `open_connection` turns it into a stream.
    pub(crate) fn map_output<U>(self, f: impl FnOnce(T) -> U + 'static) -> Connect<U> {
        let finish = self.finish;
        Connect {
            lp: self.lp,
            protocol: self.protocol,
            target: self.target,
            local_addr: self.local_addr,
            happy_eyeballs_delay: self.happy_eyeballs_delay,
            interleave: self.interleave,
            family: self.family,
            all_errors: self.all_errors,
            #[cfg(feature = "tls")]
            tls: self.tls,
            finish: Box::new(move |t| f(finish(t))),
        }
    }

    /// What awaiting the builder runs.
    async fn open(self) -> io::Result<T> {
        let Connect {
            lp,
            protocol,
            target,
            local_addr,
            happy_eyeballs_delay: delay,
            interleave: inter,
            family,
            all_errors,
            #[cfg(feature = "tls")]
            tls,
            finish,
        } = self;
        // A bad server name fails before anything is opened.
        #[cfg(feature = "tls")]
        let (protocol, tls) = match tls {
            None => (protocol, None),
            Some(cfg) => {
                let (rc, layer, started) = cfg.wrap(&lp, protocol)?;
                (
                    crate::protocol::IntoProtocol::into_protocol(layer),
                    Some((rc, started)),
                )
            }
        };
        let inter = inter.or(delay.map(|_| 1));
        let sock = match target {
            Target::Sock(s) => {
                if s.r#type()? != Type::STREAM {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "A Stream Socket was expected",
                    ));
                }
                s
            }
            Target::Unix(path) => connect_one(&lp, net::unix_addr(&path)?, &[]).await?,
            Target::Host(addrs) => {
                let addrs = addrs?;
                let local = local_addr.transpose()?;
                let (mut addrs, locals) = futures::future::try_join(
                    addrs.resolve_family(SockKind::Stream, Use::Connect, family),
                    async {
                        match local {
                            Some(l) => l.resolve_family(SockKind::Stream, Use::Bind, family).await,
                            None => Ok(Vec::new()),
                        }
                    },
                )
                .await?;
                if let Some(n) = inter {
                    addrs = interleave(addrs, n);
                }
                let connected = match delay {
                    None => one_by_one(&lp, addrs, &locals).await,
                    Some(d) => staggered(&lp, addrs, &locals, d).await,
                };
                connected.map_err(|errors| combine(errors, all_errors))?
            }
        };
        let transport = make_transport(&lp, sock, protocol).await?;
        #[cfg(feature = "tls")]
        if let Some((rc, started)) = tls {
            // The plain transport is the layer's now; the user gets the
            // TLS one once the handshake is done.
            drop(transport);
            return Ok(finish(crate::tls::Handshake::new(rc, started).await?));
        }
        Ok(finish(transport))
    }
}

/// Awaiting the builder connects.
impl<T: 'static> IntoFuture for Connect<T> {
    type Output = io::Result<T>;
    type IntoFuture = LocalBoxFuture<'static, io::Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}

/// Tries each address in turn; the first success wins. Gives every
/// attempt's error, in order, if none succeeds.
async fn one_by_one(
    lp: &LoopHandle,
    addrs: Vec<SocketAddr>,
    locals: &[SocketAddr],
) -> Result<Socket, Vec<io::Error>> {
    let mut errors = Vec::new();
    for a in addrs {
        match connect_one(lp, SockAddr::from(a), locals).await {
            Ok(s) => return Ok(s),
            Err(e) => errors.push(e),
        }
    }
    Err(errors)
}

/// Happy Eyeballs: staggered attempts, first success wins; the losers'
/// futures are dropped, which closes their sockets. Gives every attempt's
/// error, in the order they failed, if none succeeds.
async fn staggered(
    lp: &LoopHandle,
    addrs: Vec<SocketAddr>,
    locals: &[SocketAddr],
    delay: Duration,
) -> Result<Socket, Vec<io::Error>> {
    let mut pending = FuturesUnordered::new();
    let mut next = addrs.into_iter();
    let mut errors = Vec::new();
    loop {
        if let Some(a) = next.next() {
            pending.push(connect_one(lp, SockAddr::from(a), locals));
        } else if pending.is_empty() {
            return Err(errors);
        }
        // Wait for a result, or the delay to start the next attempt; a
        // failure starts the next one at once.
        let timer = Delay::new(lp, delay);
        match futures::future::select(pending.next(), timer).await {
            futures::future::Either::Left((Some(Ok(s)), _)) => return Ok(s),
            futures::future::Either::Left((Some(Err(e)), _)) => errors.push(e),
            futures::future::Either::Left((None, _)) if next.len() == 0 => {
                return Err(errors);
            }
            futures::future::Either::Left((None, _)) | futures::future::Either::Right(_) => {}
        }
    }
}

impl LoopHandle {
    fn connect_builder(&self, protocol: AnyProtocol, target: Target) -> Connect {
        Connect {
            lp: self.clone(),
            protocol,
            target,
            local_addr: None,
            happy_eyeballs_delay: None,
            interleave: None,
            family: None,
            all_errors: false,
            #[cfg(feature = "tls")]
            tls: None,
            finish: Box::new(|t| t),
        }
    }

    /// Opens a TCP connection to `addr` and runs a protocol made by
    /// `factory` on it (asyncio's `create_connection`). `addr` is any
    /// [`ToAddrs`]: `("example.com", 80)`, `"example.com:http"`, a
    /// [`SocketAddr`] or a list of them; every address it resolves to is
    /// tried in turn (or staggered, with
    /// [`happy_eyeballs_delay`](Connect::happy_eyeballs_delay)).
    ///
    /// Returns a [`Connect`] builder: chain its options, then `.await` it;
    /// it gives the [`Transport`] once `connection_made` has run. A name is
    /// resolved by the future, on a short-lived thread. (`factory` is
    /// called at once; if the connection fails, the protocol is dropped
    /// without any callback.)
    ///
    /// # Errors
    ///
    /// The future fails with `InvalidInput` for a malformed `addr`, the
    /// resolution error, the connect error (one address), or "Multiple
    /// exceptions: ..." when several addresses fail differently; with
    /// [`all_errors`](Connect::all_errors), with every attempt's error in a
    /// [`ConnectErrors`].
    pub fn create_connection<F, P>(&self, factory: F, addr: impl ToAddrs) -> Connect
    where
        F: FnOnce() -> P,
        P: IntoProtocol,
    {
        self.connect_builder(factory().into_protocol(), Target::Host(addr.to_addrs()))
    }

    /// Opens a Unix stream connection to `path`.
    ///
    /// ```
    /// use sloop::{EventLoop, Protocol, Transport};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: &Transport) {
    ///         t.write(b"hi").unwrap();
    ///         t.close();
    ///     }
    /// }
    /// struct Stop;
    /// impl Protocol for Stop {
    ///     fn connection_lost(&mut self, _: Option<std::io::Error>) {
    ///         sloop::get_running_loop().unwrap().stop();
    ///     }
    /// }
    ///
    /// let path = std::env::temp_dir().join(format!("sloop-doc-{}.sock", std::process::id()));
    /// let lp = EventLoop::new()?;
    /// let server = lp.run_until_complete(
    ///     lp.create_unix_server(|| Hello, &path).unix_mode(0o600).max_connections(8),
    /// )??;
    /// let t = lp.run_until_complete(lp.create_unix_connection(|| Stop, &path))??;
    /// assert_eq!(t.peer_addr(), Some(sloop::Address::Unix(Some(path.clone()))));
    /// lp.run_forever()?; // until the server closes the connection
    /// server.close();
    /// lp.run_until_complete(server.wait_closed())?;
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The future fails with the connect error.
    pub fn create_unix_connection<F, P>(&self, factory: F, path: impl AsRef<Path>) -> Connect
    where
        F: FnOnce() -> P,
        P: IntoProtocol,
    {
        self.connect_builder(
            factory().into_protocol(),
            Target::Unix(path.as_ref().to_path_buf()),
        )
    }

    /// Runs a protocol on an already connected stream socket (TCP or
    /// Unix): asyncio's `create_connection(sock=)` and
    /// `connect_accepted_socket`.
    ///
    /// ```
    /// use sloop::{EventLoop, Protocol, Transport};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: &Transport) {
    ///         t.write(b"hi").unwrap();
    ///         t.close();
    ///     }
    /// }
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let (accepted, _) = listener.accept()?;
    /// let lp = EventLoop::new()?;
    /// lp.run_until_complete(lp.connect_accepted_socket(|| Hello, accepted.into()))??;
    /// // `connection_made` ran, so "hi" is sent.
    /// let mut got = [0; 2];
    /// std::io::Read::read_exact(&mut client, &mut got)?;
    /// assert_eq!(&got, b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The future fails with `InvalidInput` ("A Stream Socket was
    /// expected") for a non-stream socket.
    pub fn connect_accepted_socket<F, P>(&self, factory: F, sock: Socket) -> Connect
    where
        F: FnOnce() -> P,
        P: IntoProtocol,
    {
        self.connect_builder(factory().into_protocol(), Target::Sock(sock))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};
    use std::time::Duration;

    use futures::FutureExt;

    use super::{combine, ConnectErrors, Delay};
    use crate::EventLoop;

    #[test]
    fn a_delay_dropped_at_each_point_leaves_no_timer_armed() {
        // D15: unpolled, it arms nothing; polled, its timer is armed and
        // dropping it cancels that timer; run out, it completes.
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        let unpolled = Delay::new(&h, Duration::from_secs(60));
        assert!(unpolled.timer.is_none());
        drop(unpolled);
        let mut armed = Delay::new(&h, Duration::from_secs(60));
        assert!((&mut armed).now_or_never().is_none());
        let timer = armed.timer.clone().expect("armed by the first poll");
        assert!(!timer.cancelled());
        drop(armed);
        assert!(timer.cancelled(), "dropping it cancels its timer");
        lp.run_until_complete(Delay::new(&h, Duration::from_millis(1)))
            .unwrap();
    }

    fn refused() -> Error {
        Error::from(ErrorKind::ConnectionRefused)
    }

    fn unreachable() -> Error {
        Error::new(ErrorKind::NetworkUnreachable, "Network is unreachable")
    }

    #[test]
    fn all_errors_keeps_every_attempt_in_order_with_their_common_kind() {
        let e = combine(vec![refused(), unreachable()], true);
        assert_eq!(e.kind(), ErrorKind::Other, "kinds differ");
        let all = ConnectErrors::of(&e).expect("a group");
        let kinds: Vec<_> = all.errors().iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds,
            [ErrorKind::ConnectionRefused, ErrorKind::NetworkUnreachable]
        );
        assert!(
            e.to_string()
                .starts_with("create_connection failed (2 errors): "),
            "{e}"
        );
        assert!(e.to_string().ends_with("; Network is unreachable"), "{e}");

        let e = combine(vec![refused(), refused()], true);
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "one kind: kept");
        let owned = e
            .into_inner()
            .unwrap()
            .downcast::<ConnectErrors>()
            .unwrap()
            .into_errors();
        assert_eq!(owned.len(), 2);

        // Even a single error is a group (asyncio raises the group for one).
        let e = combine(vec![refused()], true);
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        assert_eq!(ConnectErrors::of(&e).unwrap().errors().len(), 1);
    }

    #[test]
    fn without_all_errors_it_is_asyncios_aggregation() {
        let e = combine(vec![refused()], false);
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        assert!(ConnectErrors::of(&e).is_none());
        let e = combine(vec![refused(), refused()], false);
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "all alike: one");
        let e = combine(vec![refused(), unreachable()], false);
        assert!(ConnectErrors::of(&e).is_none());
        assert!(e.to_string().starts_with("Multiple exceptions: "), "{e}");
    }
}
