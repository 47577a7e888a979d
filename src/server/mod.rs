//! Servers: listening sockets, the accept loop, and [`Server`] (asyncio's
//! `create_server`, `create_unix_server`, `Server`, `_accept_connection`).
//!
//! # The accept loop
//!
//! Each listening socket is an I/O source. On readiness it accepts up to
//! `backlog` connections; if the budget runs out it re-queues itself (the
//! fd is edge-triggered, so waiting for an event would strand the backlog).
//! Each accepted socket becomes a transport at once, in the accept callback
//! (asyncio defers it to a task, which lets a `close` slip in between:
//! gh-109564).
//!
//! An error of one new connection (`ECONNABORTED`, and the pending network
//! errors accept(2) lists: `ENETDOWN`, `EPROTO`, `EHOSTUNREACH`, ...) is
//! skipped and the next connection accepted, as accept(2) asks (gh-127529).
//! On `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` the loop reports "socket.accept()
//! out of system resource" once, stops accepting, and retries after
//! [`ACCEPT_RETRY_DELAY`] — never a busy loop (gh-151615); any other error
//! is reported ("Error in accept") and backed off from the same way, so a
//! queued connection never waits for an edge that will not come. With
//! [`ServerBuilder::max_connections`], accepting pauses at the cap (the
//! kernel's backlog holds the rest) and resumes as connections close.
//!
//! # Who owns a server
//!
//! While it serves, the loop does: each listener's registration holds the
//! server, so dropping every [`Server`] handle leaves it accepting (as in
//! asyncio), and [`Server::close`] or the loop's close ends it. A server
//! that is not serving is owned by its handles and its connections only.
//!
//! # Unix paths
//!
//! A leftover socket file is removed only if it is a socket and a connect
//! to it is refused; a live server's path or a non-socket gives
//! `AddrInUse`. On close the file is unlinked only if its device and inode
//! are still the ones bound.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::Error;
use crate::event_loop::{IoKey, IoSource, LoopHandle, Readiness};
use crate::exception::{panic_message, Exception, ExceptionContext};
use crate::net::{self, SocketFile};
use crate::protocol::{AnyProtocol, IntoProtocol};
use crate::transport::socket::{Kind, SocketTransport};
use crate::transport::{Transport, TransportRef};
use crate::TimerHandle;

/// asyncio's `ACCEPT_RETRY_DELAY`: how long accepting stops after running
/// out of file descriptors or memory.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// asyncio's default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 100;

type Factory = Box<dyn FnMut() -> AnyProtocol>;

/// A listening socket with its kind and, for a Unix path, its file.
type Bound = (Socket, Kind, Option<SocketFile>);

enum ListenSock {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

struct Listener {
    lp: LoopHandle,
    me: Weak<Listener>,
    sock: RefCell<Option<ListenSock>>,
    key: Cell<Option<IoKey>>,
    /// Accepting is off for the EMFILE back-off.
    backoff: Cell<bool>,
    retry: RefCell<Option<TimerHandle>>,
    /// Unix: the socket file, removed on close if still ours.
    unix_file: Option<SocketFile>,
}

/// What the loop holds for a serving listener. It holds the server
/// strongly: a serving server belongs to the loop, as in asyncio, so it
/// serves on when every [`Server`] handle is gone, until
/// [`Server::close`] or the loop's close deregisters it.
struct Serving {
    server: Rc<ServerInner>,
    listener: Rc<Listener>,
}

pub(crate) struct ServerInner {
    lp: LoopHandle,
    factory: RefCell<Option<Factory>>,
    listeners: RefCell<Vec<Rc<Listener>>>,
    closed: Cell<bool>,
    serving: Cell<bool>,
    backlog: u32,
    max_connections: Option<usize>,
    clients: RefCell<Slab<Weak<SocketTransport>>>,
    waiters: RefCell<Vec<Waker>>,
}

/// A transport's membership of its server (asyncio's `_attach`/`_detach`):
/// dropping it detaches.
pub(crate) struct ServerLink {
    server: Rc<ServerInner>,
    slot: usize,
}

impl Drop for ServerLink {
    fn drop(&mut self) {
        let s = &self.server;
        s.clients.borrow_mut().try_remove(self.slot);
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
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn at_cap(&self) -> bool {
        self.max_connections
            .is_some_and(|cap| self.clients.borrow().len() >= cap)
    }

    fn new_connection(self: &Rc<Self>, sock: Socket, kind: Kind) {
        let Some(mut factory) = self.factory.borrow_mut().take() else {
            return; // the factory is running (it accepted re-entrantly?)
        };
        let made = self.lp.catch_user(&mut factory);
        if self.closed.get() {
            // Closed from inside the factory: the factory goes now, since
            // it may hold a handle of this server (an Rc cycle otherwise).
            drop(factory);
        } else {
            *self.factory.borrow_mut() = Some(factory);
        }
        let protocol = match made {
            Ok(p) => p,
            Err(payload) => {
                // gh-155934: report always and close the socket (dropped).
                let msg = panic_message(&*payload);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Error on transport creation for incoming connection")
                        .with_exception(Exception::Panic(msg)),
                );
                return;
            }
        };
        let slot = self.clients.borrow_mut().insert(Weak::new());
        let link = ServerLink {
            server: self.clone(),
            slot,
        };
        match SocketTransport::create(&self.lp, sock, kind, protocol, Some(Box::new(link))) {
            Ok((rc, _started)) => {
                if let Some(w) = self.clients.borrow_mut().get_mut(slot) {
                    *w = Rc::downgrade(&rc);
                }
            }
            Err((e, link)) => {
                drop(link);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Error on transport creation for incoming connection")
                        .with_exception(Exception::Other(Box::new(io::Error::from(e)))),
                );
            }
        }
    }
}

/// What the accept loop does after `accept` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptAction {
    /// The queue is empty: wait for the next readiness.
    Drained,
    /// Only this connection failed (it is gone from the queue): accept the
    /// next one.
    Retry,
    /// Out of fds or memory: report once, stop accepting, and try again
    /// after [`ACCEPT_RETRY_DELAY`].
    Backoff,
    /// Anything else (a bug, a broken listener): report it, and back off
    /// as for `Backoff`.
    Report,
}

/// The accept loop's answer to `accept` failing with `errno`.
fn accept_error_action(errno: i32) -> AcceptAction {
    match errno {
        libc::EAGAIN => AcceptAction::Drained,
        // accept(2): errors of the new connection alone (already pending
        // network errors, a firewall's refusal) are to be retried.
        libc::EINTR
        | libc::ECONNABORTED
        | libc::ENETDOWN
        | libc::EPROTO
        | libc::ENOPROTOOPT
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::EHOSTUNREACH
        | libc::EOPNOTSUPP
        | libc::ENETUNREACH
        | libc::EPERM
        | libc::ETIMEDOUT => AcceptAction::Retry,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => AcceptAction::Backoff,
        _ => AcceptAction::Report,
    }
}

impl Listener {
    fn schedule(&self) {
        if let Some(key) = self.key.get() {
            self.lp.schedule_io(key, Readiness::READABLE);
        }
    }

    fn accept(&self) -> io::Result<(Socket, Kind)> {
        match &*self.sock.borrow() {
            Some(ListenSock::Tcp(l)) => {
                let (s, _) = l.accept()?;
                Ok((Socket::from(OwnedFd::from(s)), Kind::Tcp))
            }
            Some(ListenSock::Unix(l)) => {
                let (s, _) = l.accept()?;
                Ok((Socket::from(OwnedFd::from(s)), Kind::Unix))
            }
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        }
    }

    fn accept_loop(&self, server: &Rc<ServerInner>) {
        for _ in 0..server.backlog.max(1) {
            if server.closed.get() || !server.serving.get() || self.backoff.get() {
                return;
            }
            if server.at_cap() {
                return; // resumed by ServerLink::drop
            }
            match self.accept() {
                Ok((sock, kind)) => server.new_connection(sock, kind),
                Err(e) => match accept_error_action(e.raw_os_error().unwrap_or(0)) {
                    AcceptAction::Drained => return,
                    AcceptAction::Retry => continue,
                    AcceptAction::Backoff => {
                        return self.back_off("socket.accept() out of system resource", e);
                    }
                    AcceptAction::Report => return self.back_off("Error in accept", e),
                },
            }
        }
        // Budget spent with more possibly waiting: come back next iteration.
        self.schedule();
    }

    /// Reports `e`, stops accepting, and accepts again after
    /// [`ACCEPT_RETRY_DELAY`]: never a busy loop, and never a backlog left
    /// waiting for an edge.
    fn back_off(&self, message: &str, e: io::Error) {
        self.lp.call_exception_handler(
            ExceptionContext::new(message)
                .with_exception(Exception::Io(e))
                .with_socket(self.describe()),
        );
        self.backoff.set(true);
        let me = self.me.clone();
        let timer = self.lp.call_later(ACCEPT_RETRY_DELAY, move || {
            if let Some(me) = me.upgrade() {
                me.backoff.set(false);
                me.retry.borrow_mut().take();
                me.schedule();
            }
        });
        *self.retry.borrow_mut() = timer.ok();
    }

    /// Deregisters and closes the socket, and removes a Unix socket file
    /// that is still ours. Idempotent.
    fn close(&self) {
        if let Some(t) = self.retry.borrow_mut().take() {
            t.cancel();
        }
        if let Some(key) = self.key.take() {
            self.lp.deregister_source(key);
        }
        if self.sock.borrow_mut().take().is_none() {
            return;
        }
        if let Some(file) = &self.unix_file {
            file.remove_if_ours();
        }
    }

    fn local_addr(&self) -> Option<SockAddr> {
        match &*self.sock.borrow() {
            Some(ListenSock::Tcp(l)) => l.local_addr().ok().map(SockAddr::from),
            Some(ListenSock::Unix(l)) => {
                let a = l.local_addr().ok()?;
                SockAddr::unix(a.as_pathname()?).ok()
            }
            None => None,
        }
    }

    fn describe(&self) -> String {
        format!("<listening socket fd={:?}>", self.fd())
    }

    fn fd(&self) -> Option<i32> {
        match &*self.sock.borrow() {
            Some(ListenSock::Tcp(l)) => Some(l.as_raw_fd()),
            Some(ListenSock::Unix(l)) => Some(l.as_raw_fd()),
            None => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // A server that never served, dropped: nobody can start it now.
        self.close();
    }
}

impl IoSource for Serving {
    fn ready(&self, readiness: Readiness) {
        if readiness.is_readable() {
            self.listener.accept_loop(&self.server);
        }
    }

    fn is_closing(&self) -> bool {
        self.listener.sock.borrow().is_none()
    }

    fn describe(&self) -> String {
        self.listener.describe()
    }

    fn loop_closed(&self) {
        self.server.close();
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
    /// [`Error::Closed`] if the server is closed; an I/O error from
    /// `listen` or the poller.
    pub fn start_serving(&self) -> Result<(), Error> {
        let s = &self.inner;
        if s.closed.get() {
            return Err(Error::Closed);
        }
        if s.serving.replace(true) {
            return Ok(());
        }
        for l in s.listeners.borrow().iter() {
            if let Some(fd) = l.fd() {
                let source = Rc::new(Serving {
                    server: s.clone(),
                    listener: l.clone(),
                });
                let key = s.lp.register_source(fd, source)?;
                l.key.set(Some(key));
                // A listener only ever reads.
                s.lp.reregister_source(key, mio::Interest::READABLE)?;
                // Connections may already wait in the backlog.
                l.schedule();
            }
        }
        Ok(())
    }

    /// Stops accepting and closes the listening sockets now; existing
    /// connections continue. Idempotent.
    pub fn close(&self) {
        self.inner.close();
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
            .map(|rc| Transport {
                inner: TransportRef::Socket(rc),
            })
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

    /// The listening sockets' file descriptors (asyncio's `sockets`),
    /// empty once closed.
    pub fn sockets(&self) -> Vec<std::os::fd::RawFd> {
        self.inner
            .listeners
            .borrow()
            .iter()
            .filter_map(|l| l.fd())
            .collect()
    }
}

/// See [`Server::wait_closed`].
pub struct WaitClosed {
    server: Rc<ServerInner>,
}

impl fmt::Debug for WaitClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitClosed")
    }
}

impl Future for WaitClosed {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let s = &self.server;
        if s.closed.get() && s.clients.borrow().is_empty() {
            return Poll::Ready(());
        }
        s.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

// ----- creation -----

enum Bind {
    /// `host:port` strings and addresses to resolve and bind.
    Addrs(Vec<String>),
    /// A Unix path.
    Unix(PathBuf),
    /// An existing listening (or bound) socket.
    Sock(Socket, Kind),
}

/// Options for a server; a future that creates it. Made by
/// [`LoopHandle::create_server`], [`LoopHandle::create_unix_server`] and
/// [`LoopHandle::create_server_from_socket`].
///
/// Await it (in a task or with `run_until_complete`) to get the
/// [`Server`].
pub struct ServerBuilder {
    lp: LoopHandle,
    factory: Option<Factory>,
    bind: Option<Bind>,
    backlog: u32,
    reuse_address: bool,
    reuse_port: bool,
    start_serving: bool,
    max_connections: Option<usize>,
    unix_mode: Option<u32>,
    fut: Option<Pin<Box<dyn Future<Output = io::Result<Server>>>>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("backlog", &self.backlog)
            .field("reuse_address", &self.reuse_address)
            .field("reuse_port", &self.reuse_port)
            .field("start_serving", &self.start_serving)
            .field("max_connections", &self.max_connections)
            .field("unix_mode", &self.unix_mode)
            .finish()
    }
}

impl ServerBuilder {
    /// The `listen` backlog, which is also how many connections one
    /// readiness accepts (100).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// `SO_REUSEADDR` (on by default, as asyncio on POSIX).
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT`: several loops (threads) may listen on one port.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Whether to accept at once (true) or only after
    /// [`Server::start_serving`].
    pub fn start_serving(mut self, on: bool) -> Self {
        self.start_serving = on;
        self
    }

    /// Also listen on `addr` (`"host:port"`).
    pub fn also_bind(mut self, addr: &str) -> Self {
        if let Some(Bind::Addrs(v)) = &mut self.bind {
            v.push(addr.to_owned());
        }
        self
    }

    /// At most this many connections open at once: accepting pauses at the
    /// cap and resumes as connections close.
    pub fn max_connections(mut self, cap: usize) -> Self {
        self.max_connections = Some(cap.max(1));
        self
    }

    /// The permission bits of a Unix server's socket file (e.g. `0o600`:
    /// only this user may connect). They are set after `bind` and before
    /// `listen`, so no connection is ever accepted under the wider mode
    /// that `bind` gives (R30). Ignored for TCP and abstract names.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.unix_mode = Some(mode & 0o7777);
        self
    }

    fn start(&mut self) -> Pin<Box<dyn Future<Output = io::Result<Server>>>> {
        let lp = self.lp.clone();
        let factory = self.factory.take();
        let bind = self.bind.take();
        let backlog = self.backlog;
        let reuse_address = self.reuse_address;
        let reuse_port = self.reuse_port;
        let start_serving = self.start_serving;
        let max_connections = self.max_connections;
        let unix_mode = self.unix_mode;
        Box::pin(async move {
            let factory =
                factory.ok_or_else(|| io::Error::other("builder polled after completion"))?;
            let socks: Vec<Bound> = match bind {
                Some(Bind::Addrs(addrs)) => {
                    net::bind_tcp(&addrs, reuse_address, reuse_port, backlog)
                        .await?
                        .into_iter()
                        .map(|s| (s, Kind::Tcp, None))
                        .collect()
                }
                Some(Bind::Unix(path)) => {
                    let (s, file) = net::bind_unix(&path, backlog, unix_mode)?;
                    vec![(s, Kind::Unix, file)]
                }
                Some(Bind::Sock(s, kind)) => {
                    s.set_nonblocking(true)?;
                    s.listen(backlog as i32)?;
                    vec![(s, kind, None)]
                }
                None => return Err(io::Error::other("builder polled after completion")),
            };
            let inner = Rc::new(ServerInner {
                lp: lp.clone(),
                factory: RefCell::new(Some(factory)),
                listeners: RefCell::new(Vec::new()),
                closed: Cell::new(false),
                serving: Cell::new(false),
                backlog,
                max_connections,
                clients: RefCell::new(Slab::new()),
                waiters: RefCell::new(Vec::new()),
            });
            for (s, kind, unix_file) in socks {
                let fd = OwnedFd::from(s);
                let sock = match kind {
                    Kind::Tcp => ListenSock::Tcp(mio::net::TcpListener::from(fd)),
                    Kind::Unix => ListenSock::Unix(mio::net::UnixListener::from(fd)),
                };
                let l = Rc::new_cyclic(|me| Listener {
                    lp: lp.clone(),
                    me: me.clone(),
                    sock: RefCell::new(Some(sock)),
                    key: Cell::new(None),
                    backoff: Cell::new(false),
                    retry: RefCell::new(None),
                    unix_file,
                });
                inner.listeners.borrow_mut().push(l);
            }
            let server = Server { inner };
            if start_serving {
                if let Err(e) = server.start_serving() {
                    server.close();
                    return Err(e.into());
                }
            }
            Ok(server)
        })
    }
}

impl Future for ServerBuilder {
    type Output = io::Result<Server>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.fut.is_none() {
            let f = self.start();
            self.fut = Some(f);
        }
        self.fut.as_mut().expect("set above").as_mut().poll(cx)
    }
}

impl LoopHandle {
    /// Creates a TCP server on `addr` (`"host:port"`; an empty host or `*`
    /// means every interface, IPv4 and IPv6), calling `factory` for each
    /// connection. Returns a builder for asyncio's options; await it.
    ///
    /// # Errors
    ///
    /// The future fails with the bind error ("error while attempting to
    /// bind on address ..."), a resolution error, or a poller error.
    pub fn create_server<F, P>(&self, mut factory: F, addr: &str) -> ServerBuilder
    where
        F: FnMut() -> P + 'static,
        P: IntoProtocol,
    {
        self.server_builder(
            Box::new(move || factory().into_protocol()),
            Bind::Addrs(vec![addr.to_owned()]),
        )
    }

    /// Creates a Unix stream server at `path`. A leftover socket file is
    /// replaced only if nothing listens on it; a live server's path and
    /// any other file are left alone. On close the file is removed if it
    /// is still the one this server bound. A path starting with a NUL byte
    /// is a Linux abstract name: no file, and no permission check at all
    /// (anyone on the host may connect). The socket file gets the mode the
    /// process umask allows, or the one given with
    /// [`unix_mode`](ServerBuilder::unix_mode).
    ///
    /// # Errors
    ///
    /// The future fails with `AddrInUse` ("Address '...' is already in
    /// use") if a live server or a non-socket file holds the path.
    pub fn create_unix_server<F, P>(&self, mut factory: F, path: impl AsRef<Path>) -> ServerBuilder
    where
        F: FnMut() -> P + 'static,
        P: IntoProtocol,
    {
        self.server_builder(
            Box::new(move || factory().into_protocol()),
            Bind::Unix(path.as_ref().to_path_buf()),
        )
    }

    /// Creates a server on an existing bound (or listening) stream socket,
    /// TCP or Unix (asyncio's `sock=`). `listen(backlog)` is called on it.
    ///
    /// # Errors
    ///
    /// The future fails with `InvalidInput` ("A Stream Socket was
    /// expected") if `sock` is not a stream socket.
    pub fn create_server_from_socket<F, P>(&self, mut factory: F, sock: Socket) -> ServerBuilder
    where
        F: FnMut() -> P + 'static,
        P: IntoProtocol,
    {
        let kind = match sock.domain() {
            Ok(d) if d == Domain::UNIX => Kind::Unix,
            _ => Kind::Tcp,
        };
        let ok = sock.r#type().map(|t| t == Type::STREAM).unwrap_or(false);
        let mut b = self.server_builder(
            Box::new(move || factory().into_protocol()),
            Bind::Sock(sock, kind),
        );
        if !ok {
            b.bind = None;
            b.fut = Some(Box::pin(async {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "A Stream Socket was expected",
                ))
            }));
        }
        b
    }

    fn server_builder(&self, factory: Factory, bind: Bind) -> ServerBuilder {
        ServerBuilder {
            lp: self.clone(),
            factory: Some(factory),
            bind: Some(bind),
            backlog: DEFAULT_BACKLOG,
            reuse_address: true,
            reuse_port: false,
            start_serving: true,
            max_connections: None,
            unix_mode: None,
            fut: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{accept_error_action, AcceptAction};

    #[test]
    fn accept_errors_of_one_connection_are_retried() {
        // accept(2): pending network errors of the new socket come back
        // from accept; treat them like EAGAIN and accept again, or the rest
        // of the queue waits for an edge that may never come.
        for errno in [
            libc::EINTR,
            libc::ECONNABORTED,
            libc::ENETDOWN,
            libc::EPROTO,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
            libc::EPERM,
            libc::ETIMEDOUT,
        ] {
            assert_eq!(
                accept_error_action(errno),
                AcceptAction::Retry,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn accept_errors_are_classified() {
        assert_eq!(accept_error_action(libc::EAGAIN), AcceptAction::Drained);
        assert_eq!(
            accept_error_action(libc::EWOULDBLOCK),
            AcceptAction::Drained
        );
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(
                accept_error_action(errno),
                AcceptAction::Backoff,
                "errno {errno}"
            );
        }
        for errno in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EFAULT, 0] {
            assert_eq!(
                accept_error_action(errno),
                AcceptAction::Report,
                "errno {errno}"
            );
        }
    }
}
