//! Transports: the objects that own a socket and move bytes between it and a
//! protocol.
//!
//! A protocol receives a [`Transport`]: a cheap `Rc` handle (`!Send`) to a
//! stream transport. Today that is the socket transport (TCP or Unix
//! stream, the `socket` submodule), called directly so that `write`, the
//! call of every echo, inlines; what a transport does is the crate-internal
//! `TransportImpl` trait, which a TLS transport is to implement as well
//! (docs/design.md D12). Every transport, stream or datagram, holds its protocol
//! in one protocol cell (the `cell` module), which owns the rules of
//! calling it (D2, D6, D8, D14).

pub(crate) mod cell;
pub mod datagram;
pub(crate) mod flow;
pub(crate) mod socket;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use std::cell::RefCell;

pub use crate::address::Address;
pub use datagram::{DatagramAddr, DatagramProtocol, DatagramTransport, UnixAddr};
pub use flow::DEFAULT_HIGH_WATER;

use crate::error::Error;
use crate::exception::TransportInfo;
use crate::protocol::stream_reader::StreamReaderProtocol;
use crate::protocol::{AnyProtocol, IntoProtocol};

/// Who holds a transport's connection besides its handles (a server
/// counting its connections): told once, when the connection is lost. The
/// transport knows nothing else of it (D14).
pub(crate) trait ConnectionOwner {
    /// The connection the owner knows as `slot` is gone.
    fn connection_gone(&self, slot: usize);
}

/// A transport's membership of its owner; the transport drops it when the
/// connection is lost, which tells the owner.
pub(crate) struct ConnectionGuard {
    owner: Rc<dyn ConnectionOwner>,
    slot: usize,
}

impl ConnectionGuard {
    pub(crate) fn new(owner: Rc<dyn ConnectionOwner>, slot: usize) -> ConnectionGuard {
        ConnectionGuard { owner, slot }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.owner.connection_gone(self.slot);
    }
}

/// What a stream transport does; [`Transport`] calls it. Crate-internal:
/// the socket transport implements it, and a TLS transport is to implement
/// it too and stand behind the same handle (docs/design.md D12).
pub(crate) trait TransportImpl {
    /// Bytes in and out, buffered, created at: `Transport::stats`.
    fn stats(&self) -> crate::event_loop::TransportStats;
    fn write(&self, data: &[u8]) -> Result<(), Error>;
    fn writelines(&self, bufs: &[&[u8]]) -> Result<(), Error>;
    fn write_eof(&self) -> Result<(), Error>;
    fn can_write_eof(&self) -> bool;
    fn close(&self);
    fn abort(&self);
    fn is_closing(&self) -> bool;
    fn pause_reading(&self);
    fn resume_reading(&self);
    fn is_reading(&self) -> bool;
    fn write_buffer_size(&self) -> usize;
    fn write_buffer_limits(&self) -> (usize, usize);
    fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>)
        -> Result<(), Error>;
    fn set_write_buffer_cap(&self, cap: Option<usize>);
    fn set_protocol(&self, protocol: AnyProtocol);
    /// Installs the bridge's protocol, kept as its concrete type (see
    /// `socket::Installed`).
    fn set_bridge_protocol(&self, protocol: StreamReaderProtocol);
    fn empty_waiter(&self) -> Result<EmptyWaiter, Error>;
    fn local_addr(&self) -> Option<Address>;
    fn peer_addr(&self) -> Option<Address>;
    fn raw_fd(&self) -> Option<RawFd>;
    /// Lends the socket to `f`, with nothing of the transport borrowed.
    fn with_socket(&self, f: &mut dyn FnMut(&socket2::Socket));
    fn describe(&self) -> String;
    fn info(&self) -> TransportInfo;
    /// The socket's part in a zero-copy sendfile, or `None` (the default):
    /// this transport is not a plain socket, and sendfile takes its
    /// fallback, which reads and writes through the public API.
    fn native_sendfile(&self) -> Option<&dyn SocketSendfile> {
        None
    }
}

/// What a zero-copy sendfile (the `sendfile` module) needs of a plain
/// socket transport. It only lends the socket and its writable events: the
/// sendfile module drives the transfer.
pub(crate) trait SocketSendfile {
    /// Takes the transport over: until [`sendfile_end`](Self::sendfile_end),
    /// `write`, `writelines`, `write_eof`, `empty_waiter` and another
    /// sendfile get [`Error::SendfileInProgress`]. The waiter completes once
    /// what was buffered before reached the kernel.
    fn sendfile_start(&self) -> Result<EmptyWaiter, Error>;
    /// One `sendfile(2)` of up to `count` bytes of `file` from `offset`,
    /// leaving the file's position alone; `EBADF` once the socket is closed.
    fn sendfile_send(&self, file: BorrowedFd<'_>, offset: u64, count: usize) -> io::Result<usize>;
    /// A waiter that completes at the socket's next writable event, or
    /// fails once the connection is lost.
    fn sendfile_wait_writable(&self) -> EmptyWaiter;
    /// Gives the transport back. `Some(error)` is the transport's fatal
    /// error, as a failed write's: `connection_lost(Some(error))` follows.
    fn sendfile_end(&self, error: Option<io::Error>);
}

/// A handle to a stream transport: what a protocol writes to and controls
/// its connection with (asyncio's `Transport`).
///
/// # Contract
///
/// - Cheap to clone (`Rc`), `!Send`: use it on the loop's thread.
/// - Every method may be called from inside any protocol callback,
///   including this transport's own (docs/design.md D2).
/// - [`write`](Transport::write) never blocks: it sends at once what the
///   kernel takes and buffers the rest. Above the high-water mark the
///   protocol gets `pause_writing`; at or below the low-water mark,
///   `resume_writing` (defaults 64 KiB and 16 KiB).
/// - [`close`](Transport::close) sends what is buffered, then closes and
///   calls `connection_lost(None)`; [`abort`](Transport::abort) discards
///   the buffer and closes now. Either way `connection_lost` comes exactly
///   once, in a later loop iteration, and is the protocol's last call.
/// - A `pause_writing` that a protocol's own `write` triggers (inside one
///   of its callbacks) arrives right after that callback returns, not in
///   the middle of it (docs/design.md D6). A protocol that writes in a loop
///   inside a callback should check [`write_buffer_size`](Transport::write_buffer_size)
///   against the high-water mark, or produce from a scheduled callback.
/// - After `close`, `abort` or a lost connection, writes are refused with
///   [`Error::ConnectionLost`] and counted; from the fifth on a warning is
///   logged (asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
///
/// ```
/// use sloop::{EventLoop, Protocol, Transport};
/// use std::{cell::RefCell, rc::Rc};
///
/// struct Echo(Option<Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: &Transport) { self.0 = Some(t.clone()); }
///     fn data_received(&mut self, data: &[u8]) {
///         let _ = self.0.as_ref().unwrap().write(data);
///     }
/// }
///
/// struct Client(Rc<RefCell<Vec<u8>>>);
/// impl Protocol for Client {
///     fn connection_made(&mut self, t: &Transport) { t.write(b"hello").unwrap(); }
///     fn data_received(&mut self, data: &[u8]) { self.0.borrow_mut().extend_from_slice(data); }
/// }
///
/// let lp = EventLoop::new()?;
/// let server = lp.run_until_complete(lp.create_server(|| Echo(None), "127.0.0.1:0"))??;
/// let addr = server.local_addrs()[0];
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let g = got.clone();
/// let client = lp.run_until_complete(lp.create_connection(move || Client(g.clone()), ("127.0.0.1", addr.port())))??;
/// let h = lp.handle();
/// let task = lp.spawn_local(async move {
///     while got.borrow().len() < 5 { sloop::sleep(std::time::Duration::from_millis(1)).await; }
///     got.borrow().clone()
/// });
/// assert_eq!(lp.run_until_complete(task)?.unwrap(), b"hello");
/// client.close();
/// server.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Inner,
}

/// The transports behind a [`Transport`]: one `Rc` each, matched per call
/// so that the socket arm, the echo path, stays inlined (a `dyn` would not
/// be; docs/design.md D12).
#[derive(Clone)]
pub(crate) enum Inner {
    Socket(Rc<socket::SocketTransport>),
    #[cfg(feature = "tls")]
    Tls(Rc<tls::TlsTransport>),
}

/// Calls `$call` with `$t` bound to whichever transport is behind the
/// handle.
macro_rules! dispatch {
    ($self:expr, $t:ident => $call:expr) => {
        match &$self.inner {
            Inner::Socket($t) => $call,
            #[cfg(feature = "tls")]
            Inner::Tls($t) => $call,
        }
    };
}

impl Transport {
    pub(crate) fn from_socket(socket: Rc<socket::SocketTransport>) -> Transport {
        Transport {
            inner: Inner::Socket(socket),
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn from_tls(tls: Rc<tls::TlsTransport>) -> Transport {
        Transport {
            inner: Inner::Tls(tls),
        }
    }

    /// The TLS session's facts (version, cipher suite, ALPN protocol,
    /// server name, the peer's certificates), or `None` for a plain
    /// transport (asyncio's `get_extra_info("ssl_object")` and friends).
    /// See the example in the [`tls`](crate::tls) module.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match &self.inner {
            Inner::Socket(_) => None,
            Inner::Tls(t) => t.tls_info(),
        }
    }

    /// Whether this is a TLS transport.
    pub fn is_tls(&self) -> bool {
        match &self.inner {
            Inner::Socket(_) => false,
            #[cfg(feature = "tls")]
            Inner::Tls(_) => true,
        }
    }
}

#[cfg(feature = "tls")]
pub use tls::TlsInfo;

#[cfg(feature = "tls")]
#[cold]
#[inline(never)]
fn tls_write(t: &tls::TlsTransport, data: &[u8]) -> Result<(), Error> {
    TransportImpl::write(t, data)
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dispatch!(self, t => TransportImpl::describe(&**t)))
    }
}

impl Transport {
    /// Sends `data`: at once if nothing is buffered (what the kernel does
    /// not take is buffered, copied), else after what is buffered. Empty
    /// data does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::WriteAfterEof`] after [`write_eof`](Transport::write_eof);
    /// [`Error::ConnectionLost`] once the transport is closing or closed
    /// (the data is dropped; see the type's contract);
    /// [`Error::SendfileInProgress`] while a zero-copy
    /// [`sendfile`](crate::LoopHandle::sendfile) has the transport.
    #[inline]
    pub fn write(&self, data: &[u8]) -> Result<(), Error> {
        match &self.inner {
            Inner::Socket(t) => TransportImpl::write(&**t, data),
            // Out of line: the socket arm is the echo path.
            #[cfg(feature = "tls")]
            Inner::Tls(t) => tls_write(t, data),
        }
    }

    /// Sends several buffers as one: with nothing buffered, in one vectored
    /// `sendmsg` (with `MSG_NOSIGNAL`, at most `IOV_MAX` slices per call).
    /// Empty slices are skipped. Flow control applies as for
    /// [`write`](Transport::write).
    ///
    /// # Errors
    ///
    /// As [`write`](Transport::write).
    pub fn writelines(&self, bufs: &[&[u8]]) -> Result<(), Error> {
        dispatch!(self, t => TransportImpl::writelines(&**t, bufs))
    }

    /// Closes the write side (`shutdown(SHUT_WR)`) once the buffer has
    /// drained. Idempotent; a no-op on a closing transport.
    ///
    /// # Errors
    ///
    /// [`Error::SendfileInProgress`] while a zero-copy
    /// [`sendfile`](crate::LoopHandle::sendfile) has the transport; a
    /// transport that cannot half-close would refuse (see
    /// [`can_write_eof`](Transport::can_write_eof)).
    pub fn write_eof(&self) -> Result<(), Error> {
        dispatch!(self, t => TransportImpl::write_eof(&**t))
    }

    /// Whether [`write_eof`](Transport::write_eof) is supported (always for
    /// sockets).
    pub fn can_write_eof(&self) -> bool {
        dispatch!(self, t => TransportImpl::can_write_eof(&**t))
    }

    /// Closes the transport after sending what is buffered; the protocol
    /// then gets `connection_lost(None)`. Reading stops at once. A second
    /// call does nothing. See the example on [`Transport`].
    pub fn close(&self) {
        dispatch!(self, t => TransportImpl::close(&**t))
    }

    /// Closes the transport now, discarding buffered data; the protocol
    /// gets `connection_lost(None)` in the next iteration.
    ///
    /// ```
    /// # use sloop::{EventLoop, Protocol};
    /// # struct Quiet;
    /// # impl Protocol for Quiet {}
    /// let lp = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let t = lp.run_until_complete(lp.create_connection(|| Quiet, listener.local_addr()?))??;
    /// assert!(!t.is_closing());
    /// t.write(b"dropped if not sent yet")?;
    /// t.abort();
    /// assert!(t.is_closing());
    /// assert!(t.write(b"refused").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        dispatch!(self, t => TransportImpl::abort(&**t))
    }

    /// Whether the transport is closing or closed. See the example on
    /// [`abort`](Transport::abort).
    pub fn is_closing(&self) -> bool {
        dispatch!(self, t => TransportImpl::is_closing(&**t))
    }

    /// Stops delivering data until [`resume_reading`](Transport::resume_reading).
    /// Idempotent; a no-op on a closing transport.
    pub fn pause_reading(&self) {
        dispatch!(self, t => TransportImpl::pause_reading(&**t))
    }

    /// Delivers data again, including what arrived meanwhile (in the next
    /// iteration). Idempotent. See the example on
    /// [`is_reading`](Transport::is_reading).
    pub fn resume_reading(&self) {
        dispatch!(self, t => TransportImpl::resume_reading(&**t))
    }

    /// Whether data is being delivered: not paused, not closing, and (unlike
    /// asyncio, which keeps reporting `True`) the peer has not sent EOF.
    ///
    /// ```
    /// # use sloop::{EventLoop, Protocol};
    /// # struct Quiet;
    /// # impl Protocol for Quiet {}
    /// let lp = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let t = lp.run_until_complete(lp.create_connection(|| Quiet, listener.local_addr()?))??;
    /// assert!(t.is_reading());
    /// t.pause_reading();
    /// assert!(!t.is_reading());
    /// t.resume_reading();
    /// assert!(t.is_reading());
    /// t.close();
    /// assert!(!t.is_reading());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_reading(&self) -> bool {
        dispatch!(self, t => TransportImpl::is_reading(&**t))
    }

    /// How many bytes are buffered, waiting for the kernel to take them.
    /// See the example on [`write_buffer_limits`](Transport::write_buffer_limits).
    pub fn write_buffer_size(&self) -> usize {
        dispatch!(self, t => TransportImpl::write_buffer_size(&**t))
    }

    /// This connection's figures: bytes received and sent, bytes buffered,
    /// when it was created. The loop's totals are in
    /// [`LoopHandle::stats`](crate::LoopHandle::stats). On a TLS transport
    /// these are the socket's figures: TLS records, not plaintext.
    ///
    /// ```
    /// use sloop::{EventLoop, Protocol, Transport};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: &Transport) {
    ///         t.write(b"hi").unwrap();
    ///     }
    /// }
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let (accepted, _) = listener.accept()?;
    /// let lp = EventLoop::new()?;
    /// let t = lp.run_until_complete(lp.connect_accepted_socket(|| Hello, accepted.into()))??;
    /// let stats = t.stats();
    /// assert_eq!((stats.bytes_received, stats.bytes_sent), (0, 2));
    /// assert_eq!(stats.write_buffered, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> crate::event_loop::TransportStats {
        dispatch!(self, t => TransportImpl::stats(&**t))
    }

    /// The write-buffer watermarks as `(low, high)` (asyncio's order).
    ///
    /// ```
    /// # use sloop::{EventLoop, Protocol};
    /// # struct Quiet;
    /// # impl Protocol for Quiet {}
    /// use sloop::transport::DEFAULT_HIGH_WATER;
    ///
    /// let lp = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let t = lp.run_until_complete(lp.create_connection(|| Quiet, listener.local_addr()?))??;
    /// assert_eq!(t.write_buffer_limits(), (DEFAULT_HIGH_WATER / 4, DEFAULT_HIGH_WATER));
    /// t.set_write_buffer_limits(Some(4096), None)?;
    /// assert_eq!(t.write_buffer_limits(), (1024, 4096));
    /// t.set_write_buffer_cap(Some(1 << 20));
    /// t.write(b"hello")?; // the kernel takes it at once
    /// assert_eq!(t.write_buffer_size(), 0);
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_buffer_limits(&self) -> (usize, usize) {
        dispatch!(self, t => TransportImpl::write_buffer_limits(&**t))
    }

    /// Sets the watermarks: with neither, 64 KiB and 16 KiB; with only
    /// `high`, low is `high / 4`; with only `low`, high is `4 * low`. May
    /// call `pause_writing` at once; raising the limits does not resume (as
    /// in asyncio).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWriteLimits`] if `high < low`; nothing changes.
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), Error> {
        dispatch!(self, t => TransportImpl::set_write_buffer_limits(&**t, high, low))
    }

    /// A hard cap on the write buffer, for protocols that may ignore
    /// `pause_writing` (asyncio has none; `None`, the default, means no
    /// cap). A write that would buffer past it fails the transport: the
    /// buffer is dropped, the write returns an `OutOfMemory` I/O error, and
    /// the protocol gets `connection_lost(Some(err))`. See the example on
    /// [`write_buffer_limits`](Transport::write_buffer_limits).
    pub fn set_write_buffer_cap(&self, cap: Option<usize>) {
        dispatch!(self, t => TransportImpl::set_write_buffer_cap(&**t, cap))
    }

    /// Runs `f` with the protocol, if it is a `P` (asyncio's
    /// `get_protocol`; the transport owns its protocol, so it is lent, not
    /// returned). `None` if the protocol is of another type, is running
    /// (this is called from inside one of its own callbacks: it has
    /// `&mut self` there already), or is gone after `connection_lost`. A
    /// [`BufferedProtocol`](crate::BufferedProtocol) is reached by its own
    /// type, not as `Buffered<P>`. While `f` runs the protocol is out of
    /// the transport as during its callbacks, so what `f` causes
    /// (`pause_writing` from a write) reaches it once `f` returns.
    ///
    /// ```
    /// use sloop::{EventLoop, Protocol, Transport};
    ///
    /// #[derive(Default)]
    /// struct Counter {
    ///     bytes: usize,
    /// }
    /// impl Protocol for Counter {
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         self.bytes += data.len();
    ///     }
    /// }
    ///
    /// let lp = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let t = lp.run_until_complete(
    ///     lp.create_connection(Counter::default, listener.local_addr()?),
    /// )??;
    /// let (mut peer, _) = listener.accept()?;
    /// std::io::Write::write_all(&mut peer, b"hello")?;
    /// let probe = t.clone();
    /// lp.run_until_complete(async move {
    ///     while probe.with_protocol(|c: &mut Counter| c.bytes) != Some(5) {
    ///         sloop::sleep(std::time::Duration::from_millis(1)).await;
    ///     }
    /// })?;
    /// assert_eq!(t.with_protocol(|_: &mut String| ()), None, "not a String");
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_protocol<P: 'static, R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        dispatch!(self, t => t.with_protocol(f))
    }

    /// Replaces the protocol; the next callback goes to the new one. Works
    /// from inside a callback of the old one (which is dropped once it
    /// returns), and between [`Protocol`](crate::Protocol) and
    /// [`BufferedProtocol`](crate::BufferedProtocol)
    /// (wrap it in [`Buffered`](crate::Buffered)). The new protocol does not
    /// get `connection_made`.
    pub fn set_protocol(&self, protocol: impl IntoProtocol) {
        dispatch!(self, t => TransportImpl::set_protocol(&**t, protocol.into_protocol()))
    }

    /// `set_protocol` for the bridge's own protocol.
    pub(crate) fn set_bridge_protocol(&self, protocol: StreamReaderProtocol) {
        dispatch!(self, t => TransportImpl::set_bridge_protocol(&**t, protocol))
    }

    /// A future that completes once the write buffer is empty (at once if
    /// it is), or fails if the connection is lost first. One at a time.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyWaiterAlreadySet`] while another waiter is alive;
    /// [`Error::SendfileInProgress`] while a zero-copy
    /// [`sendfile`](crate::LoopHandle::sendfile) has the transport.
    pub fn empty_waiter(&self) -> Result<EmptyWaiter, Error> {
        dispatch!(self, t => TransportImpl::empty_waiter(&**t))
    }

    /// The socket's part in a zero-copy sendfile, if this transport is a
    /// plain socket.
    pub(crate) fn native_sendfile(&self) -> Option<&dyn SocketSendfile> {
        dispatch!(self, t => TransportImpl::native_sendfile(&**t))
    }

    /// The local address, or `None` once closed.
    ///
    /// ```
    /// # use sloop::{EventLoop, Protocol};
    /// # struct Quiet;
    /// # impl Protocol for Quiet {}
    /// use sloop::Address;
    ///
    /// let lp = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let server = listener.local_addr()?;
    /// let t = lp.run_until_complete(lp.create_connection(|| Quiet, server))??;
    /// let (_, me) = listener.accept()?;
    /// assert_eq!(t.local_addr(), Some(Address::Inet(me)));
    /// assert_eq!(t.peer_addr(), Some(Address::Inet(server)));
    /// assert_eq!(t.get_extra_info("peername"), Some(server.to_string()));
    /// assert!(t.as_raw_fd().is_some());
    /// t.with_socket(|s| s.set_nodelay(true)).unwrap()?;
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> Option<Address> {
        dispatch!(self, t => TransportImpl::local_addr(&**t))
    }

    /// The peer's address, or `None` once closed or if not connected. See
    /// the example on [`local_addr`](Transport::local_addr).
    pub fn peer_addr(&self) -> Option<Address> {
        dispatch!(self, t => TransportImpl::peer_addr(&**t))
    }

    /// The socket's file descriptor while the transport owns it. See the
    /// example on [`local_addr`](Transport::local_addr).
    pub fn as_raw_fd(&self) -> Option<RawFd> {
        dispatch!(self, t => TransportImpl::raw_fd(&**t))
    }

    /// Runs `f` with the socket (to read or set options). Do not read,
    /// write or close through it: the transport owns it. `None` once
    /// closed. See the example on [`local_addr`](Transport::local_addr).
    pub fn with_socket<R>(&self, f: impl FnOnce(&socket2::Socket) -> R) -> Option<R> {
        let mut f = Some(f);
        let mut out = None;
        let mut lend = |s: &socket2::Socket| {
            if let Some(f) = f.take() {
                out = Some(f(s));
            }
        };
        dispatch!(self, t => TransportImpl::with_socket(&**t, &mut lend));
        out
    }

    /// asyncio's `get_extra_info(name)` in string form, for parity:
    /// `"peername"`, `"sockname"`, `"socket"` (the fd); on a TLS transport
    /// also `"cipher"`, `"tls_version"`, `"alpn_protocol"` and
    /// `"server_hostname"` (see [`tls_info`](Transport::tls_info)). Prefer the typed
    /// accessors. See the example on [`local_addr`](Transport::local_addr).
    pub fn get_extra_info(&self, name: &str) -> Option<String> {
        match name {
            "peername" => self.peer_addr().map(|a| a.to_string()),
            "sockname" => self.local_addr().map(|a| a.to_string()),
            "socket" => self.as_raw_fd().map(|fd| fd.to_string()),
            #[cfg(feature = "tls")]
            "cipher" | "tls_version" | "alpn_protocol" | "server_hostname" => {
                let info = self.tls_info()?;
                match name {
                    "cipher" => Some(info.cipher_suite),
                    "tls_version" => Some(info.version),
                    "alpn_protocol" => info
                        .alpn_protocol
                        .map(|p| String::from_utf8_lossy(&p).into_owned()),
                    _ => info.server_name,
                }
            }
            _ => None,
        }
    }
}

impl From<&Transport> for TransportInfo {
    /// The transport as it is now.
    fn from(t: &Transport) -> TransportInfo {
        dispatch!(t, x => TransportImpl::info(&**x))
    }
}

/// The shared state of an [`EmptyWaiter`]: the transport completes it, the
/// future reads it.
#[derive(Default)]
pub(crate) struct WaiterState {
    result: RefCell<Option<Result<(), Error>>>,
    waker: RefCell<Option<Waker>>,
}

impl WaiterState {
    /// Sets the result (the first one wins) and wakes the waiting task. The
    /// waker only queues the task (D9), so this is safe anywhere.
    pub(crate) fn complete(&self, result: Result<(), Error>) {
        let mut r = self.result.borrow_mut();
        if r.is_none() {
            *r = Some(result);
            drop(r);
            let waker = self.waker.borrow_mut().take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// Completes when a transport's write buffer is empty (asyncio's
/// `_make_empty_waiter`); see [`Transport::empty_waiter`]. Fails with
/// [`Error::ConnectionLost`] or the write error if the connection is lost
/// first.
///
/// # Cancel safety
///
/// Dropping it frees the transport's slot for a new waiter; nothing else
/// happens. Polled again after it completed, it gives the same outcome
/// again (an error as [`Error::ConnectionLost`]).
pub struct EmptyWaiter {
    state: Rc<WaiterState>,
    /// The outcome once it was returned: `Some(true)` for `Ok`.
    done: Option<bool>,
}

impl EmptyWaiter {
    pub(crate) fn new(state: Rc<WaiterState>) -> EmptyWaiter {
        EmptyWaiter { state, done: None }
    }
}

impl fmt::Debug for EmptyWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.done.is_some() || self.state.result.borrow().is_some();
        f.debug_struct("EmptyWaiter").field("done", &done).finish()
    }
}

impl Future for EmptyWaiter {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.done {
            Some(true) => return Poll::Ready(Ok(())),
            Some(false) => return Poll::Ready(Err(Error::ConnectionLost)),
            None => {}
        }
        let result = self.state.result.borrow_mut().take();
        if let Some(r) = result {
            self.done = Some(r.is_ok());
            return Poll::Ready(r);
        }
        let mut waker = self.state.waker.borrow_mut();
        match &mut *waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Copies an I/O error well enough to give it to two receivers.
pub(crate) fn clone_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
