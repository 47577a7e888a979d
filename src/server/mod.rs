//! Servers (asyncio's `create_server`, `create_unix_server` and `Server`):
//! the [`Server`] handle and [`WaitClosed`] here, how a server is made in
//! [`ServerBuilder`] (`builder.rs`), and how it accepts in `listener.rs`.
//!
//! # Who owns a server
//!
//! While it serves, the loop does: each listener's registration holds the
//! server, so dropping every [`Server`] handle leaves it accepting (as in
//! asyncio), and [`Server::close`] or the loop's close ends it. A server
//! that is not serving is owned by its handles and its connections only.
//!
//! # Connections
//!
//! Each accepted connection's transport holds a link to its server
//! (asyncio's `_attach`/`_detach`), dropped when the connection is lost:
//! that is how the server counts its connections, caps them
//! ([`ServerBuilder::max_connections`]), and knows when
//! [`wait_closed`](Server::wait_closed) may complete.
//!
//! # Serving forever
//!
//! [`Server::serve_forever`] is asyncio's: it starts accepting if the
//! server does not yet, and completes once the server is closed (by
//! [`Server::close`], from anywhere) and its last connection has ended.
//! Dropping it while it serves closes the server, as cancelling asyncio's
//! `serve_forever` does.
//!
//! # Unix paths
//!
//! A leftover socket file is removed only if it is a socket and a connect
//! to it is refused; a live server's path or a non-socket gives
//! `AddrInUse`. On close the file is unlinked only if its device and inode
//! are still the ones bound.

mod builder;
mod listener;

pub use builder::{ServerBuilder, DEFAULT_BACKLOG};
pub use listener::ACCEPT_RETRY_DELAY;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::protocol::AnyProtocol;
use crate::transport::socket::SocketTransport;
use crate::transport::{ConnectionOwner, Transport};
use listener::Listener;

/// Makes the protocol of each accepted connection.
type Factory = Box<dyn FnMut() -> AnyProtocol>;

/// What a server's handles, the loop (while it serves) and each of its
/// connections' links share.
pub(crate) struct ServerInner {
    lp: LoopHandle,
    factory: RefCell<Option<Factory>>,
    listeners: RefCell<Vec<Rc<Listener>>>,
    closed: Cell<bool>,
    serving: Cell<bool>,
    /// A [`ServeForever`] is running (asyncio's `_serving_forever_fut`).
    serving_forever: Cell<bool>,
    backlog: u32,
    max_connections: Option<usize>,
    clients: RefCell<Slab<Weak<SocketTransport>>>,
    /// One slot per live [`WaitClosed`] that was polled: its latest waker,
    /// taken out when woken.
    waiters: RefCell<Slab<Option<Waker>>>,
}

/// A connection's end detaches it from its server (asyncio's `_detach`):
/// the transport drops its `ConnectionGuard` at loss.
impl ConnectionOwner for ServerInner {
    fn connection_gone(&self, slot: usize) {
        let s = self;
        s.clients.borrow_mut().try_remove(slot);
        if s.closed.get() {
            if s.clients.borrow().is_empty() {
                s.wake_waiters();
            }
        } else if let Some(cap) = s.max_connections {
            if s.clients.borrow().len() + 1 == cap {
                // We were at the cap: accept again (the backlog's edges are gone).
                for l in s.listeners.borrow().iter() {
                    l.schedule();
                }
            }
        }
    }
}

impl ServerInner {
    /// [`Server::close`]; also run when the loop closes.
    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.serving.set(false);
        // As asyncio's close (which cancels and forgets the serve_forever
        // future): from now on a new serve_forever hears "closed", even
        // while the running one still waits for the connections.
        self.serving_forever.set(false);
        let listeners = std::mem::take(&mut *self.listeners.borrow_mut());
        for l in &listeners {
            l.close();
        }
        // The factory may hold user state, this server's handles included.
        let factory = self.factory.borrow_mut().take();
        drop(factory);
        if self.clients.borrow().is_empty() {
            self.wake_waiters();
        }
    }

    fn wake_waiters(&self) {
        // Taken out first: nothing is borrowed while they wake.
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// How many wakers wait for the server to close.
    #[cfg(test)]
    fn stored_wakers(&self) -> usize {
        self.waiters
            .borrow()
            .iter()
            .filter(|(_, w)| w.is_some())
            .count()
    }

    fn at_cap(&self) -> bool {
        self.max_connections
            .is_some_and(|cap| self.clients.borrow().len() >= cap)
    }
}

/// A listening server (asyncio's `Server`).
///
/// Cheap to clone (`Rc`), `!Send`. Closing it stops accepting and closes
/// the listening sockets at once; connections already accepted stay open.
/// [`wait_closed`](Server::wait_closed) completes once the server is closed
/// **and** its last connection has ended (asyncio 3.12.1+).
///
/// Dropping every handle does not close a serving server: as in asyncio,
/// the loop owns it and it accepts until [`close`](Server::close) or the
/// loop's close (a server that is not serving closes with its last
/// handle, since nothing could start it any more).
///
/// ```
/// use sloop::{EventLoop, Protocol, Transport};
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: &Transport) {
///         t.write(b"hi\n").unwrap();
///         t.close();
///     }
/// }
///
/// let lp = EventLoop::new()?;
/// let server = lp.run_until_complete(lp.create_server(|| Hello, "127.0.0.1:0"))??;
/// let addr = server.local_addrs()[0];
/// assert!(server.is_serving());
/// // A blocking client on another thread, for the example's sake.
/// let client = std::thread::spawn(move || {
///     use std::io::Read;
///     let mut s = std::net::TcpStream::connect(addr).unwrap();
///     let mut got = String::new();
///     s.read_to_string(&mut got).unwrap();
///     got
/// });
/// let h = lp.handle();
/// let waiter = lp.spawn_local(async move {
///     while !client.is_finished() { sloop::sleep(std::time::Duration::from_millis(1)).await; }
///     client.join().unwrap()
/// });
/// assert_eq!(lp.run_until_complete(waiter)?.unwrap(), "hi\n");
/// server.close();
/// lp.run_until_complete(server.wait_closed())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Rc<ServerInner>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("sockets", &self.inner.listeners.borrow().len())
            .field("serving", &self.inner.serving.get())
            .field("closed", &self.inner.closed.get())
            .field("connections", &self.inner.clients.borrow().len())
            .finish()
    }
}

impl Server {
    /// Whether the server accepts connections.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.get()
    }

    /// Starts accepting (after `start_serving(false)`); idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::ServerClosed`] if the server is closed; an I/O error from
    /// `listen` or the poller.
    pub fn start_serving(&self) -> Result<(), Error> {
        let s = &self.inner;
        if s.closed.get() {
            return Err(Error::ServerClosed);
        }
        if s.serving.replace(true) {
            return Ok(());
        }
        for l in s.listeners.borrow().iter() {
            l.start(s)?;
        }
        Ok(())
    }

    /// Stops accepting and closes the listening sockets now; existing
    /// connections continue. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Serves until the server is closed (asyncio's `serve_forever`): a
    /// future that, when first polled, starts accepting (if the server
    /// does not yet) and then completes with `Ok(())` once the server is
    /// [closed](Server::close) — by anyone: a protocol, a timer, a signal
    /// handler — and its last connection has ended, as
    /// [`wait_closed`](Server::wait_closed) would.
    ///
    /// Only one `serve_forever` of a server runs at a time; the future does
    /// nothing until it is polled. Once the server is closed, a new call
    /// fails with [`Error::ServerClosed`] even while the running one still
    /// waits for the connections, as in asyncio.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sloop::{EventLoop, Protocol, Transport};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: &Transport) {
    ///         let _ = t.write(b"hello\n");
    ///         t.close();
    ///     }
    /// }
    ///
    /// let lp = EventLoop::new()?;
    /// let server = lp.run_until_complete(
    ///     lp.create_server(|| Hello, "127.0.0.1:0").start_serving(false),
    /// )??;
    /// // Somebody closes the server later: here, a timer.
    /// let s = server.clone();
    /// lp.call_later(Duration::from_millis(10), move || s.close())?;
    /// lp.run_until_complete(server.serve_forever())??;
    /// assert!(!server.is_serving());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The future fails with [`Error::AlreadyServingForever`] if another
    /// `serve_forever` of this server is running, [`Error::ServerClosed`]
    /// if the server is closed when it is first polled, or the error of
    /// [`start_serving`](Server::start_serving).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it serves closes the server (asyncio
    /// closes it when `serve_forever` is cancelled); its connections stay
    /// open, as with [`close`](Server::close). Dropped before its first
    /// poll or after it completed, it changes nothing.
    pub fn serve_forever(&self) -> ServeForever {
        ServeForever {
            server: self.inner.clone(),
            state: ServeState::NotStarted,
        }
    }

    /// Closes every connection of this server (buffered data is sent
    /// first); asyncio 3.13's `close_clients`.
    pub fn close_clients(&self) {
        for t in self.clients() {
            t.close();
        }
    }

    /// Aborts every connection of this server; asyncio 3.13's
    /// `abort_clients`.
    pub fn abort_clients(&self) {
        for t in self.clients() {
            t.abort();
        }
    }

    fn clients(&self) -> Vec<Transport> {
        self.inner
            .clients
            .borrow()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .map(Transport::from_socket)
            .map(app_transport)
            .collect()
    }

    /// How many connections of this server are open.
    pub fn connection_count(&self) -> usize {
        self.inner.clients.borrow().len()
    }

    /// A future that completes once the server is closed and all its
    /// connections have ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it changes nothing.
    pub fn wait_closed(&self) -> WaitClosed {
        WaitClosed {
            server: self.inner.clone(),
            slot: None,
        }
    }

    /// The listening sockets' addresses (IP listeners), empty once closed.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .listeners
            .borrow()
            .iter()
            .filter_map(|l| l.local_addr()?.as_socket())
            .collect()
    }

    /// Calls `f` with the listening sockets (asyncio's `Server.sockets`),
    /// borrowed for the call: to read an option, set one, or take the fd
    /// for a log line. The slice is empty once the server is closed.
    ///
    /// The sockets stay open while `f` runs, even if `f` closes the server
    /// (their fds close when it returns), so a fd seen here is never one
    /// the kernel has reused. Closing or `accept`ing on them yourself
    /// would fight the server; read and set options only.
    ///
    /// ```
    /// struct Quiet;
    /// impl sloop::Protocol for Quiet {}
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let server = lp.run_until_complete(lp.create_server(|| Quiet, "127.0.0.1:0"))??;
    /// let (n, port) = server.with_sockets(|socks| {
    ///     (socks.len(), socks[0].local_addr().unwrap().as_socket().unwrap().port())
    /// });
    /// assert_eq!((n, port), (1, server.local_addrs()[0].port()));
    /// server.close();
    /// assert_eq!(server.with_sockets(|socks| socks.len()), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_sockets<R>(&self, f: impl FnOnce(&[socket2::SockRef<'_>]) -> R) -> R {
        // Lent, not borrowed: `f` may close the server or the loop (D2).
        let lent: Vec<_> = self
            .inner
            .listeners
            .borrow()
            .iter()
            .filter_map(|l| l.lend())
            .collect();
        let refs: Vec<socket2::SockRef<'_>> =
            lent.iter().map(|s| socket2::SockRef::from(&**s)).collect();
        f(&refs)
    }
}

/// See [`Server::wait_closed`].
pub struct WaitClosed {
    server: Rc<ServerInner>,
    /// This future's entry in the server's `waiters`, once polled.
    slot: Option<usize>,
}

impl fmt::Debug for WaitClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitClosed")
    }
}

impl Future for WaitClosed {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let s = &this.server;
        if s.closed.get() && s.clients.borrow().is_empty() {
            return Poll::Ready(());
        }
        let mut waiters = s.waiters.borrow_mut();
        match this.slot {
            // One slot per future: a new poll replaces the waker it holds
            // (unless it is the same), so polling never makes it grow.
            Some(k) => match &mut waiters[k] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => this.slot = Some(waiters.insert(Some(cx.waker().clone()))),
        }
        Poll::Pending
    }
}

impl Drop for WaitClosed {
    fn drop(&mut self) {
        if let Some(k) = self.slot {
            self.server.waiters.borrow_mut().try_remove(k);
        }
    }
}

/// See [`Server::serve_forever`].
#[must_use = "futures do nothing unless polled"]
pub struct ServeForever {
    server: Rc<ServerInner>,
    state: ServeState,
}

enum ServeState {
    /// Not polled yet: nothing is claimed or started.
    NotStarted,
    /// Serving: this future holds the server's `serving_forever` flag and
    /// waits for the close and the last connection.
    Serving(WaitClosed),
    /// Completed (or failed): nothing held.
    Done,
}

impl fmt::Debug for ServeForever {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ServeState::NotStarted => "not started",
            ServeState::Serving(_) => "serving",
            ServeState::Done => "done",
        };
        f.debug_struct("ServeForever")
            .field("state", &state)
            .finish()
    }
}

impl Future for ServeForever {
    type Output = Result<(), Error>;

    /// # Panics
    ///
    /// If polled again after it returned `Ready`.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let ServeState::NotStarted = this.state {
            this.state = ServeState::Done;
            let s = &this.server;
            // asyncio's order of checks.
            if s.serving_forever.get() {
                return Poll::Ready(Err(Error::AlreadyServingForever));
            }
            if s.closed.get() {
                return Poll::Ready(Err(Error::ServerClosed));
            }
            Server { inner: s.clone() }.start_serving()?;
            s.serving_forever.set(true);
            this.state = ServeState::Serving(WaitClosed {
                server: s.clone(),
                slot: None,
            });
        }
        let ServeState::Serving(wait) = &mut this.state else {
            panic!("ServeForever polled after it completed");
        };
        futures::ready!(Pin::new(wait).poll(cx));
        this.state = ServeState::Done; // `close` cleared the flag
        Poll::Ready(Ok(()))
    }
}

impl Drop for ServeForever {
    fn drop(&mut self) {
        if let ServeState::Serving(_) = self.state {
            // Cancelled while serving: asyncio closes the server (which
            // clears the serving_forever flag, if it is not closed yet).
            self.server.close();
        }
    }
}

/// The transport a client's protocol sees: the TLS transport on top of
/// the connection's socket when there is one (so that `close_clients`
/// sends close_notify), else the socket transport itself (also when the
/// TLS layer is running, from inside one of its callbacks).
fn app_transport(socket: Transport) -> Transport {
    #[cfg(feature = "tls")]
    if let Some(tls) = socket.with_protocol(|l: &mut crate::transport::tls::Layer| l.tls()) {
        return Transport::from_tls(tls);
    }
    socket
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    use crate::{EventLoop, Protocol};

    struct Idle;
    impl Protocol for Idle {}

    /// A waker that counts its wakes.
    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn wait_closed_keeps_one_waker_per_future() {
        let lp = EventLoop::new().unwrap();
        let server = lp
            .run_until_complete(lp.create_server(|| Idle, "127.0.0.1:0"))
            .unwrap()
            .unwrap();
        let (first, w1) = counter();
        let (second, w2) = counter();
        let mut a = pin!(server.wait_closed());
        for _ in 0..1000 {
            assert!(a.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        }
        assert_eq!(server.inner.stored_wakers(), 1, "polled 1,000 times");
        // Polled with another waker (moved to another task): replaced.
        assert!(a.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        assert_eq!(server.inner.stored_wakers(), 1);
        {
            let mut b = pin!(server.wait_closed());
            assert!(b.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
            assert_eq!(server.inner.stored_wakers(), 2, "one per future");
        }
        assert_eq!(server.inner.stored_wakers(), 1, "a dropped future's goes");
        server.close();
        assert_eq!(first.0.load(Ordering::SeqCst), 0, "the replaced waker");
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "the current waker");
        assert!(a.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
    }
}
