//! Datagram transports: asyncio's `_SelectorDatagramTransport` and
//! `DatagramProtocol`, for UDP and Unix datagram sockets.
//!
//! A [`DatagramTransport`] owns a non-blocking datagram socket registered
//! with the loop. Each datagram that arrives is handed to its
//! [`DatagramProtocol`]'s [`datagram_received`](DatagramProtocol::datagram_received)
//! as a slice of the loop's shared read buffer (docs/design.md D5), with the
//! sender's address. [`sendto`](DatagramTransport::sendto) sends at once
//! when nothing is queued; when the socket's send buffer is full the
//! datagram is copied into the transport's queue and sent, in order, when
//! the socket becomes writable (docs/design.md D6). Endpoints are created with
//! [`LoopHandle::create_datagram_endpoint`](crate::LoopHandle::create_datagram_endpoint)
//! (UDP) and
//! [`LoopHandle::create_unix_datagram_endpoint`](crate::LoopHandle::create_unix_datagram_endpoint).
//!
//! # Addresses
//!
//! The transport and the protocol are generic over the address type `A`
//! ([`DatagramAddr`]), which is sealed and has two implementations:
//!
//! - [`std::net::SocketAddr`], the default, for UDP. A UDP protocol is
//!   written as `impl DatagramProtocol for MyProtocol` and its transport is
//!   `DatagramTransport`; the address costs nothing (it is `Copy`), and
//!   the code is monomorphised, so there is no dispatch on the family.
//! - [`UnixAddr`] for Unix datagram sockets: a path, an abstract name
//!   (Linux) or unnamed (a socket that never bound, e.g. the sending side
//!   of a `socketpair`).
//!
//! One transport type for both keeps one implementation of the buffering,
//! flow control and closing rules, and a type error rather than a runtime
//! one when a Unix path is sent to a UDP socket.
//!
//! # Contract
//!
//! - `connection_made` is called first (in the iteration after the
//!   transport is created), then any number of `datagram_received`,
//!   `error_received`, `pause_writing`/`resume_writing`, and
//!   `connection_lost` last, exactly once, in a later iteration than the
//!   `close`/`abort`/fatal error that caused it. Nothing after it.
//! - Every method of the transport may be called from inside every
//!   protocol method (docs/design.md D2). A notification that a protocol's own
//!   call causes (`pause_writing` from a `sendto` inside
//!   `datagram_received`, `error_received` from a failed send) is delivered
//!   right after the running protocol method returns.
//! - An OS error on receive or send (other than `WouldBlock` and `EINTR`)
//!   goes to `error_received` and the transport stays open: an ICMP port
//!   unreachable answer to a connected socket shows up there as
//!   `ConnectionRefused`, a datagram too big for the socket as
//!   `EMSGSIZE`. A datagram whose send failed is dropped.
//! - A panic in a protocol method is reported to the loop's exception
//!   handler and is a fatal error of the transport: it is aborted, and
//!   `connection_lost` gets the panic's message as an error (docs/design.md D8).
//! - Zero-length datagrams are legal; they are sent and received as empty
//!   datagrams (CPython 3.13's behaviour).
//! - Reading takes at most [`READ_BUDGET`] datagrams per readiness event,
//!   then the transport queues itself behind the other ready callbacks
//!   (asyncio reads one per event; this is the same fairness, cheaper).
//!
//! # Write buffer and flow control
//!
//! [`write_buffer_size`](DatagramTransport::write_buffer_size) counts the
//! payload bytes of the queued datagrams. The high/low-water marks (64 KiB
//! and 16 KiB by default, as for streams) are compared with the payload
//! plus [`DATAGRAM_OVERHEAD`] (8) bytes per queued datagram, added when a
//! datagram is queued and subtracted when it leaves the queue (sent or
//! dropped), so the count never drifts (CPython gh-135444) and a flood of
//! empty datagrams still pauses the protocol (gh-113812). As in asyncio the
//! marks are advisory: `sendto` never refuses a datagram because the queue
//! is long.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use crate::error::Error;
use crate::event_loop::{
    ByteCounters, IoKey, IoSource, LoopHandle, Readiness, SourceTally, TransportStats,
};
use crate::exception::TransportInfo;
use crate::sys::OpenSocket;
use crate::transport::cell::{
    Host, ProtocolCell, Slot, BUSY, CLOSING, HAS_DATA, HELD, LOST_DONE, LOST_SCHEDULED, PAUSED,
    READABLE, READ_SCHEDULED, REPLACED, STARTED, WRITE_BLOCKED,
};
use crate::transport::flow::FlowControl;
use crate::transport::{EmptyWaiter, WaiterState};

mod addr;
mod slot;
mod write;

pub use crate::protocol::DatagramProtocol;
pub use addr::{DatagramAddr, UnixAddr};
use slot::{BoxedProtocol, ProtocolSlot, StoredProtocol};
use write::WriteState;

/// Set for the transport's life when it has a default destination
/// (`address`): `sendto`'s fast path then tests one word of flags, not
/// the flags and the address. A bit of this transport's own, at the top,
/// clear of the cell's.
const HAS_ADDRESS: u32 = 1 << 31;

/// How many datagrams one readiness event reads before the transport
/// requeues itself (see the [contract](self#contract)).
pub const READ_BUDGET: usize = 32;

/// The bytes each queued datagram adds to the size that flow control
/// compares with the watermarks, on top of its payload (see
/// [write buffer and flow control](self#write-buffer-and-flow-control)).
pub const DATAGRAM_OVERHEAD: usize = 8;

struct Inner<A: DatagramAddr> {
    lp: LoopHandle,
    /// A way back to this transport's `Rc`, for callbacks it schedules.
    me: Weak<Inner<A>>,
    /// Closed after `connection_lost` ran.
    sock: OpenSocket<A::Socket>,
    /// The fd number, for descriptions only.
    fd: RawFd,
    key: Cell<Option<IoKey>>,
    /// The protocol and the state bits (`CLOSING`, `PAUSED`, `HAS_DATA`
    /// for a non-empty queue, `STARTED`, `READABLE`, `WRITE_BLOCKED`,
    /// `READ_SCHEDULED`, and the cell's own).
    cell: ProtocolCell<ProtocolSlot<A>>,
    /// The default destination (asyncio's `_address`).
    address: Option<A>,
    /// Whether the socket is connected (asyncio's `peername` extra): sends
    /// use `send`, not `sendto`.
    connected: bool,
    local: Option<A>,
    write: RefCell<WriteState<A>>,
    /// The waiter of [`DatagramTransport::empty_waiter`], while one waits.
    empty_waiter: RefCell<Option<Rc<WaiterState>>>,
    /// Payload bytes in and out, for `stats`.
    bytes: ByteCounters,
}

/// Why a read batch ended.
enum BatchEnd {
    /// The socket has no more datagrams (`WouldBlock`).
    Drained,
    /// The budget ran out, or something needs the protocol back in the
    /// cell (held-back work, `set_protocol`, `close`, `pause_reading`).
    Stopped,
    /// An OS error for `error_received`.
    Error(io::Error),
}

/// A datagram endpoint: asyncio's `_SelectorDatagramTransport`.
///
/// A cheap handle (`Rc`), `!Send`; clones refer to the same transport.
/// `A` is [`SocketAddr`] for UDP (the default) and [`UnixAddr`] for Unix
/// datagram sockets. See the [module docs](self) for the contract.
///
/// # `close` and `abort`
///
/// [`close`](DatagramTransport::close) stops reading, sends what is queued,
/// then closes; [`abort`](DatagramTransport::abort) drops the queue and
/// closes at once. Either way `connection_lost` follows in a later
/// iteration and the socket is closed after it.
///
/// ```
/// use std::net::SocketAddr;
/// use sloop::transport::datagram::{DatagramProtocol, DatagramTransport};
///
/// /// Sends "ping" to itself and stops the loop when it arrives.
/// struct Myself;
///
/// impl DatagramProtocol for Myself {
///     fn connection_made(&mut self, t: &DatagramTransport) {
///         let me = t.local_addr().unwrap();
///         t.sendto(b"ping", Some(me)).unwrap();
///     }
///     fn datagram_received(&mut self, data: &[u8], _addr: SocketAddr) {
///         assert_eq!(data, b"ping");
///         sloop::get_running_loop().unwrap().stop();
///     }
/// }
///
/// let lp = sloop::EventLoop::new()?;
/// let transport = lp.run_until_complete(
///     lp.create_datagram_endpoint(|| Myself).local_addr("127.0.0.1:0"),
/// )??;
/// lp.run_forever()?;
/// transport.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DatagramTransport<A: DatagramAddr = SocketAddr> {
    inner: Rc<Inner<A>>,
}

impl<A: DatagramAddr> Clone for DatagramTransport<A> {
    fn clone(&self) -> Self {
        DatagramTransport {
            inner: self.inner.clone(),
        }
    }
}

impl<A: DatagramAddr> From<&DatagramTransport<A>> for TransportInfo {
    /// The transport as it is now.
    fn from(t: &DatagramTransport<A>) -> TransportInfo {
        t.inner.info()
    }
}

impl<A: DatagramAddr> fmt::Debug for DatagramTransport<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.describe())
    }
}

impl<A: DatagramAddr> DatagramTransport<A> {
    /// Wraps a non-blocking socket, registers it with the loop, and queues
    /// `connection_made`. `address` is the default destination; `connected`
    /// says whether the socket itself is connected.
    pub(crate) fn new(
        lp: &LoopHandle,
        sock: A::Socket,
        protocol: BoxedProtocol<A>,
        address: Option<A>,
    ) -> Result<DatagramTransport<A>, Error> {
        let fd = sock.as_raw_fd();
        let peer = A::peer_addr(&sock);
        let connected = peer.is_some();
        let address = address.or(peer);
        let local = A::local_addr(&sock);
        let inner = Rc::new_cyclic(|me| Inner {
            lp: lp.clone(),
            me: me.clone(),
            sock: OpenSocket::new(sock),
            fd,
            key: Cell::new(None),
            cell: ProtocolCell::default(),
            address,
            connected,
            local,
            write: RefCell::new(WriteState {
                queue: VecDeque::new(),
                payload: 0,
                flow: FlowControl::default(),
            }),
            empty_waiter: RefCell::new(None),
            bytes: ByteCounters::new(),
        });
        inner.cell.replace(protocol);
        if inner.address.is_some() {
            inner.cell.flags.set(HAS_ADDRESS, true);
        }
        let key = lp.register_source(fd, inner.clone())?;
        inner.key.set(Some(key));
        let t = DatagramTransport {
            inner: inner.clone(),
        };
        let handle = t.clone();
        if let Err(e) = lp.call_soon(move || handle.inner.connection_made(&handle)) {
            lp.deregister_source(key);
            return Err(e);
        }
        Ok(t)
    }

    /// Sends `data` to `addr`, or to the transport's remote address when
    /// `addr` is `None`. Sent at once if nothing is queued, else (or if the
    /// socket's buffer is full) copied into the queue and sent in order
    /// when the socket is writable. An OS error from the send goes to the
    /// protocol's `error_received` and the datagram is dropped; `sendto`
    /// still returns `Ok`.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidAddress`]: the transport has a remote address and
    ///   `addr` is another one (compared exactly, so an IPv6 address must
    ///   have the same flow info and scope id).
    /// - [`Error::AddressRequired`]: no `addr` and no remote address.
    /// - [`Error::ConnectionLost`]: the transport is closing or closed
    ///   (`close`, `abort`, a fatal error). Counted; past 5 such calls a
    ///   warning is logged, as asyncio does. (asyncio still queues a
    ///   datagram after `close` while others are queued, and raises
    ///   `AttributeError` after `connection_lost` on unconnected
    ///   transports; here every write after `close` is refused alike.)
    #[inline]
    pub fn sendto(&self, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        // The common case inline: no default destination, nothing queued.
        // Every other case, and a failed send, is out of line and takes
        // the handle, which the compiler keeps anyway: that leaves it the
        // registers the caller's own code wants.
        let inner = &*self.inner;
        let Some(a) = &addr else {
            return self.sendto_slow(data, addr);
        };
        if inner.has(CLOSING | HAS_DATA | HAS_ADDRESS) {
            return self.sendto_slow(data, addr);
        }
        match A::send_to(&inner.sock, data, a) {
            Ok(n) => {
                inner.bytes.sent(n);
                Ok(())
            }
            Err(e) => self.sendto_failed(e, data, addr),
        }
    }

    #[cold]
    #[inline(never)]
    fn sendto_slow(&self, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        self.inner.sendto(data, addr)
    }

    #[cold]
    #[inline(never)]
    fn sendto_failed(&self, e: io::Error, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        self.inner.sendto_failed(e, data, addr)
    }

    /// [`sendto`](DatagramTransport::sendto) the remote address.
    ///
    /// # Errors
    ///
    /// As `sendto(data, None)`.
    #[inline]
    pub fn send(&self, data: &[u8]) -> Result<(), Error> {
        self.inner.sendto(data, None)
    }

    /// Closes the transport once the queue is sent: reading stops at once,
    /// `connection_lost(None)` follows. Closing twice does nothing. See the
    /// example on [`DatagramTransport`].
    pub fn close(&self) {
        self.inner.close();
    }

    /// Closes the transport now, dropping queued datagrams;
    /// `connection_lost(None)` follows.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
    /// )??;
    /// assert!(!t.is_closing());
    /// t.abort();
    /// assert!(t.is_closing());
    /// assert!(t.sendto(b"refused", t.local_addr()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        self.inner.force_close(None);
    }

    /// Replaces the protocol (asyncio's `set_protocol`): every later call
    /// goes to `protocol`, which does not get `connection_made` (unless
    /// the transport's own `connection_made` has not run yet: then the new
    /// protocol is the one that gets it).
    ///
    /// Works from inside a callback of the current protocol: that call
    /// finishes, then the old protocol is dropped, and the datagrams not
    /// yet delivered go to the new one. A protocol set while
    /// `connection_lost` is pending gets it; one set after
    /// `connection_lost` ran is dropped at once, never called.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use sloop::DatagramProtocol;
    ///
    /// struct Ignore;
    /// impl DatagramProtocol for Ignore {
    ///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// }
    /// struct Stop;
    /// impl DatagramProtocol for Stop {
    ///     fn datagram_received(&mut self, data: &[u8], _: SocketAddr) {
    ///         assert_eq!(data, b"for the new one");
    ///         sloop::get_running_loop().unwrap().stop();
    ///     }
    /// }
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Ignore).local_addr("127.0.0.1:0"),
    /// )??;
    /// t.set_protocol(Stop);
    /// t.sendto(b"for the new one", t.local_addr())?;
    /// lp.run_forever()?;
    /// assert_eq!(t.with_protocol(|_: &mut Stop| ()), Some(()));
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_protocol<P: DatagramProtocol<A>>(&self, protocol: P) {
        self.inner.cell.replace(Box::new(protocol));
    }

    /// Runs `f` on the protocol if it is a `P` (asyncio's `get_protocol`,
    /// in a form Rust can lend safely): `Some(f's result)`, or `None` if
    /// the protocol is of another type or is not there to lend: it is
    /// running (this was called from inside one of its own callbacks,
    /// where it is `self`), or it is gone (after `connection_lost`, or
    /// once the loop closed).
    ///
    /// While `f` runs the protocol is out of the transport, as during its
    /// callbacks: `f` may call any method of the transport, and what those
    /// calls notify (`pause_writing`, `error_received`) reaches the
    /// protocol right after `f` returns. A panic in `f` is the caller's:
    /// the protocol is put back and the panic goes on up.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use sloop::{DatagramProtocol, DatagramTransport};
    ///
    /// struct Counter { datagrams: usize }
    /// impl DatagramProtocol for Counter {
    ///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {
    ///         self.datagrams += 1;
    ///     }
    /// }
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Counter { datagrams: 0 })
    ///         .local_addr("127.0.0.1:0"),
    /// )??;
    /// let me = t.local_addr().unwrap();
    /// let peer = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// peer.send_to(b"one", me)?;
    /// peer.send_to(b"two", me)?;
    /// let probe = t.clone();
    /// let task = lp.spawn_local(async move {
    ///     while probe.with_protocol(|c: &mut Counter| c.datagrams) != Some(2) {
    ///         sloop::sleep(std::time::Duration::from_millis(1)).await;
    ///     }
    /// });
    /// lp.run_until_complete(task)??;
    /// // Not a `Counter`: no access.
    /// struct Other;
    /// impl DatagramProtocol for Other {
    ///     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// }
    /// assert_eq!(t.with_protocol(|_: &mut Other| ()), None);
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_protocol<P, R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R>
    where
        P: DatagramProtocol<A>,
    {
        self.inner.cell.with_protocol(&*self.inner, f)
    }

    /// Whether the transport is closing or closed. See the example on
    /// [`abort`](DatagramTransport::abort).
    pub fn is_closing(&self) -> bool {
        self.inner.has(CLOSING)
    }

    /// Stops delivering datagrams until
    /// [`resume_reading`](DatagramTransport::resume_reading); they wait in
    /// the socket's receive buffer (and the kernel drops what does not
    /// fit). Does nothing if already paused or closing.
    pub fn pause_reading(&self) {
        if !self.inner.has(CLOSING) {
            self.inner.cell.flags.set(PAUSED, true);
        }
    }

    /// Delivers datagrams again, starting with those that waited. See the
    /// example on [`is_reading`](DatagramTransport::is_reading).
    pub fn resume_reading(&self) {
        let inner = &self.inner;
        if inner.has(CLOSING) || !inner.cell.flags.replace(PAUSED, false) {
            return;
        }
        if inner.has(READABLE) {
            inner.schedule_read();
        }
    }

    /// Whether datagrams are being delivered (not paused, not closing).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
    /// )??;
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
        !self.inner.has(CLOSING | PAUSED)
    }

    /// Payload bytes queued for sending. See the example on
    /// [`write_buffer_limits`](DatagramTransport::write_buffer_limits).
    pub fn write_buffer_size(&self) -> usize {
        self.inner.write.borrow().payload
    }

    /// This endpoint's figures: payload bytes received and sent, bytes
    /// queued, when it was created. See the example on
    /// [`TransportStats`].
    pub fn stats(&self) -> TransportStats {
        let buffered = self.inner.write.try_borrow().map_or(0, |w| w.payload);
        self.inner.bytes.snapshot(buffered)
    }

    /// Datagrams queued for sending. See the example on
    /// [`write_buffer_limits`](DatagramTransport::write_buffer_limits).
    pub fn write_buffer_len(&self) -> usize {
        self.inner.write.borrow().queue.len()
    }

    /// A future that completes once the send queue is empty (at once if it
    /// is): every queued datagram was handed to the kernel, or dropped
    /// after an OS error that went to `error_received`. It fails with
    /// [`Error::ConnectionLost`] if the queue is dropped first (`abort`, a
    /// fatal error, the loop closing), and at once if `connection_lost` is
    /// already on its way (as [`Transport::empty_waiter`](crate::Transport::empty_waiter)).
    /// A waiter made before `close` completes with `Ok` once `close` has
    /// sent the queue. One at a time.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyWaiterAlreadySet`] while another waiter is alive.
    pub fn empty_waiter(&self) -> Result<EmptyWaiter, Error> {
        let inner = &self.inner;
        let mut slot = inner.empty_waiter.borrow_mut();
        if slot.as_ref().is_some_and(|w| Rc::strong_count(w) > 1) {
            return Err(Error::EmptyWaiterAlreadySet);
        }
        let state = Rc::new(WaiterState::default());
        if inner.write.borrow().queue.is_empty() {
            state.complete(if inner.has(LOST_SCHEDULED) {
                Err(Error::ConnectionLost)
            } else {
                Ok(())
            });
            *slot = None;
        } else {
            *slot = Some(state.clone());
        }
        Ok(EmptyWaiter::new(state))
    }

    /// Sets the watermarks (see "Write buffer and flow control" in the
    /// [module docs](self)): with neither, 64 KiB and 16 KiB; with only `low`,
    /// high is `4 * low`; with only `high`, low is `high / 4`. May call
    /// `pause_writing` at once; raising the marks does not resume (as
    /// asyncio).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWriteLimits`] if `high < low`.
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), Error> {
        let pause = {
            let mut w = self.inner.write.borrow_mut();
            w.flow.set_limits(high, low)?;
            let size = w.flow_size();
            w.flow.should_pause(size)
        };
        if pause {
            self.inner.cell.notify_flow(&*self.inner, true);
        }
        Ok(())
    }

    /// The watermarks, `(low, high)` in asyncio's order.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
    /// )??;
    /// assert_eq!(t.write_buffer_limits(), (16 * 1024, 64 * 1024));
    /// t.set_write_buffer_limits(None, Some(1000))?;
    /// assert_eq!(t.write_buffer_limits(), (1000, 4000));
    /// t.sendto(b"sent at once", t.local_addr())?;
    /// assert_eq!((t.write_buffer_size(), t.write_buffer_len()), (0, 0));
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_buffer_limits(&self) -> (usize, usize) {
        self.inner.write.borrow().flow.limits()
    }

    /// The socket's local address (asyncio's `sockname` extra). See the
    /// example on [`DatagramTransport`].
    pub fn local_addr(&self) -> Option<A> {
        self.inner.local.clone()
    }

    /// The connected peer's address (asyncio's `peername` extra); `None`
    /// for an unconnected socket.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let peer = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let there = peer.local_addr()?;
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(lp.create_datagram_endpoint(|| Quiet).remote_addr(there))??;
    /// assert_eq!(t.peer_addr(), Some(there));
    /// assert_eq!(t.remote_addr(), Some(there));
    /// assert_eq!(t.get_extra_info("peername"), Some(format!("{there:?}")));
    /// assert!(t.raw_fd().is_some());
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_addr(&self) -> Option<A> {
        if self.inner.connected {
            self.inner.address.clone()
        } else {
            None
        }
    }

    /// The default destination of [`send`](DatagramTransport::send): the
    /// connected peer, or the remote address of a broadcast endpoint.
    pub fn remote_addr(&self) -> Option<A> {
        self.inner.address.clone()
    }

    /// The socket's file descriptor, while the socket is open. See the
    /// example on [`peer_addr`](DatagramTransport::peer_addr).
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.inner.sock.raw_fd()
    }

    /// Runs `f` with the socket (asyncio's `socket` extra), to read or set
    /// options, as [`Transport::with_socket`](crate::Transport::with_socket)
    /// does; `None` once the socket is closed. Reading or writing it
    /// directly bypasses the transport's queue and readiness flags: don't.
    pub fn with_socket<R>(&self, f: impl FnOnce(&socket2::Socket) -> R) -> Option<R> {
        // Lent, not borrowed: `f` may close the transport or the loop (D2).
        self.inner
            .sock
            .lend()
            .map(|s| f(&socket2::SockRef::from(&*s)))
    }

    /// asyncio's `get_extra_info` for `"sockname"`, `"peername"` and
    /// `"socket"` (the fd), as text; `None` for other names or missing
    /// values. See the example on [`peer_addr`](DatagramTransport::peer_addr).
    pub fn get_extra_info(&self, name: &str) -> Option<String> {
        match name {
            "sockname" => self.local_addr().map(|a| format!("{a:?}")),
            "peername" => self.peer_addr().map(|a| format!("{a:?}")),
            "socket" => self.raw_fd().map(|fd| fd.to_string()),
            _ => None,
        }
    }

    /// The loop this transport runs on.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
    /// )??;
    /// let closer = t.clone();
    /// t.loop_handle().call_soon(move || closer.close())?;
    /// lp.run_until_complete(sloop::sleep(std::time::Duration::from_millis(1)))?;
    /// assert!(t.is_closing());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loop_handle(&self) -> &LoopHandle {
        &self.inner.lp
    }
}

impl<A: DatagramAddr> Inner<A> {
    #[inline(always)]
    fn has(&self, bits: u32) -> bool {
        self.cell.flags.has(bits)
    }

    #[inline(always)]
    fn set_flag(&self, bits: u32, on: bool) {
        self.cell.flags.set(bits, on);
    }

    fn info(&self) -> TransportInfo {
        let peer = if self.connected {
            self.address.as_ref()
        } else {
            None
        };
        TransportInfo::new(
            A::KIND,
            self.sock.raw_fd(),
            self.local.as_ref().map(A::to_address),
            peer.map(A::to_address),
            self.describe(),
        )
    }

    fn describe(&self) -> String {
        let state = if self.has(LOST_DONE) {
            " closed"
        } else if self.has(CLOSING) {
            " closing"
        } else {
            ""
        };
        let w = self.write.borrow();
        format!(
            "<DatagramTransport{state} fd={} read={} write=<bufsize={} datagrams={}>>",
            self.fd,
            if self.has(PAUSED | CLOSING) {
                "idle"
            } else {
                "polling"
            },
            w.payload,
            w.queue.len()
        )
    }

    fn connection_made(&self, t: &DatagramTransport<A>) {
        self.set_flag(STARTED, true);
        self.cell
            .call(self, "connection_made", |p| p.connection_made(t));
        if self.has(READABLE) {
            self.schedule_read();
        }
        if !self.has(WRITE_BLOCKED) && self.has(HAS_DATA) {
            self.flush();
        }
    }

    fn schedule_read(&self) {
        if let Some(key) = self.key.get() {
            if !self.cell.flags.replace(READ_SCHEDULED, true) {
                self.lp.schedule_io(key, Readiness::READABLE);
            }
        }
    }

    /// Reads up to [`READ_BUDGET`] datagrams. The protocol is taken out of
    /// the cell once for the batch (D2 holds: nothing of ours is borrowed
    /// while it runs); the batch stops at anything but a plain
    /// `datagram_received` (an OS error for `error_received`, a held-back
    /// notification, a replaced protocol, `close` or `pause_reading`),
    /// which is handled with the protocol back in the cell. Reading goes
    /// on in the next iteration when the budget ran out or the batch
    /// stopped early.
    fn read_ready(&self) {
        if self.cell.flags.get() & (STARTED | CLOSING | PAUSED) != STARTED {
            return; // connection_made / resume_reading look at the flag
        }
        let Some(mut p) = self.cell.slot.take() else {
            return;
        };
        let mut buf = self.lp.take_read_buffer();
        self.set_flag(BUSY, true);
        let r = self.lp.catch_user(|| self.read_batch(&mut *p, &mut buf));
        self.set_flag(BUSY, false);
        self.lp.restore_read_buffer(buf);
        self.cell.put_back(p);
        let end = match r {
            Ok(end) => end,
            Err(payload) => {
                self.cell.panicked(self, "datagram_received", payload);
                return self.cell.after_call(self);
            }
        };
        self.cell.after_call(self);
        match end {
            BatchEnd::Drained => return,
            BatchEnd::Stopped => {}
            BatchEnd::Error(e) => {
                self.cell
                    .call(self, "error_received", |p| p.error_received(e));
            }
        }
        // What is left is read in the next iteration (resume_reading
        // requeues a paused transport itself).
        if self.cell.flags.get() & (STARTED | CLOSING | PAUSED) == STARTED {
            self.schedule_read();
        }
    }

    /// One batch of [`read_ready`](Self::read_ready): at most
    /// [`READ_BUDGET`] datagrams, each straight to `datagram_received`.
    #[inline]
    fn read_batch(&self, p: &mut dyn StoredProtocol<A>, buf: &mut [u8]) -> BatchEnd {
        for _ in 0..READ_BUDGET {
            // Closed (EBADF) only after connection_lost, which cannot run
            // inside the batch.
            match A::recv_from(&self.sock, buf) {
                Ok((n, addr)) => {
                    self.bytes.received(n);
                    p.datagram_received(&buf[..n], addr)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.set_flag(READABLE, false);
                    return BatchEnd::Drained;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return BatchEnd::Error(e),
            }
            // One test on the fast path for the rare cases.
            if self.has(HELD | CLOSING | PAUSED | REPLACED) {
                return BatchEnd::Stopped;
            }
        }
        BatchEnd::Stopped
    }

    /// Completes the empty waiter, if one waits. Its waker only queues the
    /// task (docs/design.md D9), so this is safe anywhere.
    fn complete_empty_waiter(&self, result: Result<(), Error>) {
        let waiter = self.empty_waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.complete(result);
        }
    }

    fn close(&self) {
        if self.cell.flags.replace(CLOSING, true) {
            return;
        }
        if !self.has(HAS_DATA) && !self.has(LOST_SCHEDULED) {
            self.cell.loss_scheduled();
            self.schedule_connection_lost(None);
        }
    }

    /// asyncio's `_force_close`.
    fn force_close(&self, exc: Option<io::Error>) {
        if self.has(LOST_SCHEDULED) {
            return;
        }
        let dropped = {
            let mut w = self.write.borrow_mut();
            w.payload = 0;
            w.flow.reset();
            self.set_flag(HAS_DATA, false);
            std::mem::take(&mut w.queue)
        };
        drop(dropped);
        self.complete_empty_waiter(Err(Error::ConnectionLost));
        self.set_flag(CLOSING, true);
        self.cell.loss_scheduled();
        self.schedule_connection_lost(exc);
    }

    fn schedule_connection_lost(&self, exc: Option<io::Error>) {
        let me = self.me.clone();
        self.lp.call_soon_internal(move || {
            if let Some(me) = me.upgrade() {
                me.call_connection_lost(exc);
            }
        });
    }

    /// asyncio's `_call_connection_lost`: the protocol's last call (the
    /// cell's), then the socket is deregistered and closed.
    fn call_connection_lost(&self, exc: Option<io::Error>) {
        self.cell.lost(self, exc);
    }
}

impl<A: DatagramAddr> Host for Inner<A> {
    fn loop_handle(&self) -> &LoopHandle {
        &self.lp
    }

    fn info(&self) -> TransportInfo {
        Inner::info(self)
    }

    fn force_close(&self, exc: Option<io::Error>) {
        Inner::force_close(self, exc);
    }

    fn after_lost(&self) {
        if let Some(key) = self.key.take() {
            self.lp.deregister_source(key);
            self.lp.transport_closed(&self.bytes.snapshot(0));
        }
        let sock = self.sock.close();
        drop(sock);
        self.write.borrow_mut().flow.reset();
    }
}

impl<A: DatagramAddr> IoSource for Inner<A> {
    fn ready(&self, readiness: Readiness) {
        if readiness.is_writable() {
            self.set_flag(WRITE_BLOCKED, false);
            if self.has(STARTED) && self.has(HAS_DATA) {
                self.flush();
            }
        }
        if readiness.is_readable() {
            self.set_flag(READ_SCHEDULED, false);
            self.set_flag(READABLE, true);
            self.read_ready();
        }
    }

    fn is_closing(&self) -> bool {
        self.has(CLOSING)
    }

    fn describe(&self) -> String {
        Inner::describe(self)
    }

    fn transport_info(&self) -> Option<TransportInfo> {
        Some(Inner::info(self))
    }

    fn tally(&self) -> Option<SourceTally> {
        let (buffered, paused) = self
            .write
            .try_borrow()
            .map_or((0, false), |w| (w.payload, w.flow.is_paused()));
        Some(SourceTally::Transport {
            kind: A::KIND,
            stats: self.bytes.snapshot(buffered),
            paused_reading: self.has(PAUSED) && !self.has(CLOSING),
            paused_writing: paused,
        })
    }

    fn loop_closed(&self) {
        // No callback can run any more: drop the protocol (which may hold
        // this transport) and close the socket, with nothing borrowed.
        if self.key.take().is_some() {
            self.lp.transport_closed(&self.bytes.snapshot(0));
        }
        let queued = std::mem::take(&mut self.write.borrow_mut().queue);
        self.complete_empty_waiter(Err(Error::ConnectionLost));
        self.set_flag(HAS_DATA, false);
        let protocol = self.cell.loop_closed();
        let sock = self.sock.close();
        drop((queued, protocol, sock));
    }
}
