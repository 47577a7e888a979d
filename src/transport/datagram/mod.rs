//! Datagram transports: asyncio's `_SelectorDatagramTransport` and
//! `DatagramProtocol`, for UDP and Unix datagram sockets.
//!
//! A [`DatagramTransport`] owns a non-blocking datagram socket registered
//! with the loop. Each datagram that arrives is handed to its
//! [`DatagramProtocol`]'s [`datagram_received`](DatagramProtocol::datagram_received)
//! as a slice of the loop's shared read buffer (DESIGN.md D5), with the
//! sender's address. [`sendto`](DatagramTransport::sendto) sends at once
//! when nothing is queued; when the socket's send buffer is full the
//! datagram is copied into the transport's queue and sent, in order, when
//! the socket becomes writable (DESIGN.md D6). Endpoints are created with
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
//!   protocol method (DESIGN.md D2). A notification that a protocol's own
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
//!   `connection_lost` gets the panic's message as an error (DESIGN.md D8).
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

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use crate::error::Error;
use crate::event_loop::{IoKey, IoSource, LoopHandle, Readiness};
use crate::exception::{panic_message, ExceptionContext};
use crate::transport::flow::FlowControl;
use crate::transport::{EmptyWaiter, WaiterState};

mod addr;

use addr::sealed;
pub use addr::{DatagramAddr, UnixAddr};

/// How many datagrams one readiness event reads before the transport
/// requeues itself.
pub const READ_BUDGET: usize = 32;

/// The bytes each queued datagram adds to the size that flow control
/// compares with the watermarks, on top of its payload.
pub const DATAGRAM_OVERHEAD: usize = 8;

/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// The callbacks of a datagram endpoint: asyncio's `DatagramProtocol`.
///
/// `A` is the address type: [`SocketAddr`] (UDP, the default) or
/// [`UnixAddr`]. Every method but `datagram_received` has an empty default.
/// See the [module docs](self) for the order of the calls.
///
/// ```
/// use std::net::SocketAddr;
/// use sloop::transport::datagram::{DatagramProtocol, DatagramTransport};
///
/// /// Sends every datagram back where it came from.
/// struct Echo(Option<DatagramTransport>);
///
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, transport: &DatagramTransport) {
///         self.0 = Some(transport.clone());
///     }
///     fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
///         if let Some(t) = &self.0 {
///             let _ = t.sendto(data, Some(addr));
///         }
///     }
///     fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
///         self.0 = None; // drop the handle: no Rc cycle remains
///     }
/// }
/// ```
pub trait DatagramProtocol<A: DatagramAddr = SocketAddr>: 'static {
    /// The endpoint is ready; called once, before anything else. Keep a
    /// clone of `transport` to send.
    fn connection_made(&mut self, transport: &DatagramTransport<A>) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`. `data` borrows the loop's shared
    /// read buffer; copy what must outlive the call. It may be empty.
    fn datagram_received(&mut self, data: &[u8], addr: A);

    /// A send or receive failed with an OS error (e.g. `ConnectionRefused`
    /// after an ICMP port unreachable). The transport stays open.
    fn error_received(&mut self, exc: io::Error) {
        let _ = exc;
    }

    /// The transport is closed: `None` after `close`/`abort`, the error
    /// after a fatal one. The last call.
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// The write queue went above the high-water mark.
    fn pause_writing(&mut self) {}

    /// The write queue drained to the low-water mark or below.
    fn resume_writing(&mut self) {}
}

/// A notification that could not reach the protocol at once because the
/// protocol was running; delivered when it returns.
enum Pending {
    Pause,
    Resume,
    Error(io::Error),
}

/// The transport is closing or closed.
const CLOSING: u8 = 1;
/// Reading is paused (`pause_reading`).
const PAUSED: u8 = 2;
/// Notifications wait in `pending`.
const PENDING: u8 = 4;
/// Datagrams wait in the write queue.
const QUEUED: u8 = 8;

/// A few boolean states in one `Cell<u8>`.
#[derive(Default)]
struct Flags(Cell<u8>);

impl Flags {
    #[inline]
    fn get(&self, bit: u8) -> bool {
        self.0.get() & bit != 0
    }

    /// Whether any of `bits` is set.
    #[inline]
    fn any(&self, bits: u8) -> bool {
        self.0.get() & bits != 0
    }

    #[inline]
    fn set(&self, bit: u8, on: bool) {
        let v = self.0.get();
        self.0.set(if on { v | bit } else { v & !bit });
    }

    /// Sets `bit` to `on`, returns what it was.
    #[inline]
    fn replace(&self, bit: u8, on: bool) -> bool {
        let was = self.get(bit);
        self.set(bit, on);
        was
    }
}

struct WriteState<A> {
    /// Queued datagrams and their destinations (`None`: the connected peer).
    queue: VecDeque<(Vec<u8>, Option<A>)>,
    /// Payload bytes in `queue`.
    payload: usize,
    flow: FlowControl,
}

impl<A> WriteState<A> {
    /// What flow control compares with the marks.
    fn flow_size(&self) -> usize {
        self.payload + DATAGRAM_OVERHEAD * self.queue.len()
    }
}

type BoxedProtocol<A> = Box<dyn DatagramProtocol<A>>;

struct Inner<A: DatagramAddr> {
    lp: LoopHandle,
    /// A way back to this transport's `Rc`, for callbacks it schedules.
    me: Weak<Inner<A>>,
    /// `None` once `connection_lost` ran: the socket is closed.
    sock: RefCell<Option<A::Socket>>,
    fd: RawFd,
    key: Cell<Option<IoKey>>,
    /// Taken out while a protocol method runs (D2); `None` for good after
    /// `connection_lost`.
    protocol: RefCell<Option<BoxedProtocol<A>>>,
    pending: RefCell<VecDeque<Pending>>,
    /// `CLOSING`, `PAUSED` (reading), `PENDING` (`!pending.is_empty()`)
    /// and `QUEUED` (`!write.queue.is_empty()`): one byte, so the hot
    /// paths test what concerns them in one instruction, with no borrow.
    flags: Flags,
    /// The protocol method running, for reports of its panic.
    current: Cell<&'static str>,
    /// The default destination (asyncio's `_address`).
    address: Option<A>,
    /// Whether the socket is connected (asyncio's `peername` extra): sends
    /// use `send`, not `sendto`.
    connected: bool,
    local: Option<A>,
    write: RefCell<WriteState<A>>,
    /// The waiter of [`DatagramTransport::empty_waiter`], while one waits.
    empty_waiter: RefCell<Option<Rc<WaiterState>>>,
    /// `connection_made` has run.
    started: Cell<bool>,
    conn_lost: Cell<u32>,
    /// Writes refused because the transport is closing or closed.
    refused_writes: Cell<u32>,
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// Whether a requeued read is already on the ready list.
    read_scheduled: Cell<bool>,
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
/// let transport = lp
///     .create_datagram_endpoint(|| Myself)
///     .local_addr("127.0.0.1:0".parse().unwrap())
///     .start()?;
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
            sock: RefCell::new(Some(sock)),
            fd,
            key: Cell::new(None),
            protocol: RefCell::new(Some(protocol)),
            pending: RefCell::new(VecDeque::new()),
            flags: Flags::default(),
            current: Cell::new("connection_made"),
            address,
            connected,
            local,
            write: RefCell::new(WriteState {
                queue: VecDeque::new(),
                payload: 0,
                flow: FlowControl::default(),
            }),
            empty_waiter: RefCell::new(None),
            started: Cell::new(false),
            conn_lost: Cell::new(0),
            refused_writes: Cell::new(0),
            readable: Cell::new(false),
            writable: Cell::new(true),
            read_scheduled: Cell::new(false),
        });
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
        self.inner.sendto(data, addr)
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
    /// `connection_lost(None)` follows. Closing twice does nothing.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Closes the transport now, dropping queued datagrams;
    /// `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.inner.force_close(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.inner.flags.get(CLOSING)
    }

    /// Stops delivering datagrams until
    /// [`resume_reading`](DatagramTransport::resume_reading); they wait in
    /// the socket's receive buffer (and the kernel drops what does not
    /// fit). Does nothing if already paused or closing.
    pub fn pause_reading(&self) {
        if !self.inner.flags.get(CLOSING) {
            self.inner.flags.set(PAUSED, true);
        }
    }

    /// Delivers datagrams again, starting with those that waited.
    pub fn resume_reading(&self) {
        let inner = &self.inner;
        if inner.flags.get(CLOSING) || !inner.flags.replace(PAUSED, false) {
            return;
        }
        if inner.readable.get() {
            inner.schedule_read();
        }
    }

    /// Whether datagrams are being delivered (not paused, not closing).
    pub fn is_reading(&self) -> bool {
        !self.inner.flags.get(CLOSING) && !self.inner.flags.get(PAUSED)
    }

    /// Payload bytes queued for sending.
    pub fn write_buffer_size(&self) -> usize {
        self.inner.write.borrow().payload
    }

    /// Datagrams queued for sending.
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
            state.complete(if inner.conn_lost.get() > 0 {
                Err(Error::ConnectionLost)
            } else {
                Ok(())
            });
            *slot = None;
        } else {
            *slot = Some(state.clone());
        }
        Ok(EmptyWaiter { state })
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
            self.inner.notify(Pending::Pause);
        }
        Ok(())
    }

    /// The watermarks, `(low, high)` in asyncio's order.
    pub fn write_buffer_limits(&self) -> (usize, usize) {
        self.inner.write.borrow().flow.limits()
    }

    /// The socket's local address (asyncio's `sockname` extra).
    pub fn local_addr(&self) -> Option<A> {
        self.inner.local.clone()
    }

    /// The connected peer's address (asyncio's `peername` extra); `None`
    /// for an unconnected socket.
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

    /// The socket's file descriptor, while the socket is open.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.inner.sock.borrow().as_ref().map(|s| s.as_raw_fd())
    }

    /// Runs `f` with the socket (asyncio's `socket` extra), e.g. to read or
    /// set options through `socket2::SockRef::from(sock)`; `None` once the
    /// socket is closed. Reading or writing it directly bypasses the
    /// transport's queue and readiness flags: don't.
    pub fn with_socket<R>(&self, f: impl FnOnce(&<A as sealed::Sealed>::Socket) -> R) -> Option<R> {
        let sock = self.inner.sock.borrow();
        sock.as_ref().map(f)
    }

    /// asyncio's `get_extra_info` for `"sockname"`, `"peername"` and
    /// `"socket"` (the fd), as text; `None` for other names or missing
    /// values.
    pub fn get_extra_info(&self, name: &str) -> Option<String> {
        match name {
            "sockname" => self.local_addr().map(|a| format!("{a:?}")),
            "peername" => self.peer_addr().map(|a| format!("{a:?}")),
            "socket" => self.raw_fd().map(|fd| fd.to_string()),
            _ => None,
        }
    }

    /// The loop this transport runs on.
    pub fn loop_handle(&self) -> &LoopHandle {
        &self.inner.lp
    }
}

impl<A: DatagramAddr> Inner<A> {
    fn describe(&self) -> String {
        let state = if self.conn_lost.get() > 0 && self.sock.borrow().is_none() {
            " closed"
        } else if self.flags.get(CLOSING) {
            " closing"
        } else {
            ""
        };
        let w = self.write.borrow();
        format!(
            "<DatagramTransport{state} fd={} read={} write=<bufsize={} datagrams={}>>",
            self.fd,
            if self.flags.get(PAUSED) || self.flags.get(CLOSING) {
                "idle"
            } else {
                "polling"
            },
            w.payload,
            w.queue.len()
        )
    }

    /// Runs `f` on the protocol, taken out of its slot (D2), under
    /// `catch_unwind`, then delivers what the call queued. Does nothing if
    /// the protocol is not there (it is running further up the stack: the
    /// caller queues instead; or it is gone).
    fn call_protocol(&self, what: &'static str, f: impl FnOnce(&mut dyn DatagramProtocol<A>)) {
        let Some(mut p) = self.protocol.borrow_mut().take() else {
            return;
        };
        self.current.set(what);
        let r = self.lp.catch_user(|| {
            f(&mut *p);
            self.deliver_pending_to(&mut *p);
        });
        *self.protocol.borrow_mut() = Some(p);
        if let Err(payload) = r {
            self.protocol_panicked(payload);
        }
    }

    /// Delivers the queued notifications to `p`, which the caller took out
    /// of the slot; what these calls queue is delivered too, in order.
    #[inline]
    fn deliver_pending_to(&self, p: &mut dyn DatagramProtocol<A>) {
        if !self.flags.get(PENDING) {
            return;
        }
        self.deliver_pending_slow(p);
    }

    #[cold]
    #[inline(never)]
    fn deliver_pending_slow(&self, p: &mut dyn DatagramProtocol<A>) {
        loop {
            let ev = self.pending.borrow_mut().pop_front();
            let Some(ev) = ev else {
                self.flags.set(PENDING, false);
                return;
            };
            if self.conn_lost.get() > 0 {
                continue; // connection_lost is queued: nothing else comes
            }
            match ev {
                Pending::Pause => {
                    self.current.set("pause_writing");
                    p.pause_writing();
                }
                Pending::Resume => {
                    self.current.set("resume_writing");
                    p.resume_writing();
                }
                Pending::Error(e) => {
                    self.current.set("error_received");
                    p.error_received(e);
                }
            }
        }
    }

    /// Delivers a notification now, or queues it while the protocol runs.
    /// Nothing is delivered once `connection_lost` is queued.
    #[cold]
    #[inline(never)]
    fn notify(&self, ev: Pending) {
        if self.conn_lost.get() > 0 {
            return; // connection_lost is queued: nothing else comes
        }
        self.pending.borrow_mut().push_back(ev);
        self.flags.set(PENDING, true);
        // If the protocol is in its slot, no callback is running: deliver
        // now. Otherwise the running one delivers when it returns (and
        // before connection_made, connection_made does).
        let available = self.started.get() && self.protocol.borrow().is_some();
        if available {
            self.call_protocol("pending", |_| {});
        }
    }

    #[cold]
    #[inline(never)]
    fn protocol_panicked(&self, payload: Box<dyn Any + Send>) {
        let what = self.current.get();
        let msg = panic_message(&*payload);
        self.lp.handle_panic(
            payload,
            ExceptionContext::new(format!("Exception in protocol.{what}()"))
                .with_transport(self.describe()),
        );
        self.force_close(Some(io::Error::other(format!(
            "protocol.{what}() panicked: {msg}"
        ))));
    }

    fn connection_made(&self, t: &DatagramTransport<A>) {
        self.started.set(true);
        self.call_protocol("connection_made", |p| p.connection_made(t));
        if self.readable.get() {
            self.schedule_read();
        }
        if self.writable.get() && self.flags.get(QUEUED) {
            self.flush();
        }
    }

    fn schedule_read(&self) {
        if let Some(key) = self.key.get() {
            if !self.read_scheduled.replace(true) {
                self.lp.schedule_io(key, Readiness::READABLE);
            }
        }
    }

    /// Reads up to [`READ_BUDGET`] datagrams. The protocol is taken out of
    /// its slot once for the whole batch (D2 holds: nothing of ours is
    /// borrowed while it runs), and what each call queued is delivered
    /// before the next datagram.
    fn read_ready(&self) {
        if !self.started.get() || self.flags.get(CLOSING) || self.flags.get(PAUSED) {
            return; // connection_made / resume_reading look at the flag
        }
        let Some(mut p) = self.protocol.borrow_mut().take() else {
            return;
        };
        let mut buf = self.lp.take_read_buffer();
        let r = self.lp.catch_user(|| self.read_batch(&mut *p, &mut buf));
        self.lp.restore_read_buffer(buf);
        *self.protocol.borrow_mut() = Some(p);
        if let Err(payload) = r {
            self.protocol_panicked(payload);
        }
    }

    #[inline]
    fn read_batch(&self, p: &mut dyn DatagramProtocol<A>, buf: &mut [u8]) {
        self.current.set("datagram_received");
        for _ in 0..READ_BUDGET {
            // Not closing (checked before the loop and after each
            // datagram): the socket is open.
            match A::recv_from_open(&self.sock, self.fd, buf) {
                Ok((n, addr)) => p.datagram_received(&buf[..n], addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable.set(false);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.current.set("error_received");
                    p.error_received(e);
                    self.current.set("datagram_received");
                }
            }
            // One test on the fast path for the three rare cases.
            if self.flags.any(PENDING | CLOSING | PAUSED) {
                if self.flags.get(PENDING) {
                    self.deliver_pending_slow(p);
                    self.current.set("datagram_received");
                }
                if self.flags.any(CLOSING | PAUSED) {
                    return;
                }
            }
        }
        self.schedule_read();
    }

    #[inline]
    fn sendto(&self, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        // `addr` stays where it is (no moves of the address on the fast
        // path); with a remote address it is only compared, then dropped.
        let a = match (&self.address, &addr) {
            (None, Some(a)) => a,
            (Some(expected), Some(a)) if expected != a => return Err(self.invalid_address()),
            (Some(_), _) => return self.sendto_remote(data),
            (None, None) => return Err(Error::AddressRequired),
        };
        self.debug_check_queued();
        if self.flags.any(CLOSING | QUEUED) {
            return self.sendto_closing_or_queued(data, addr);
        }
        // Not closing: the socket is open (it is only closed after
        // `closing` is set). Nothing queued: send now.
        let r = A::send_to_open(&self.sock, self.fd, data, a);
        if self.sent(r) {
            self.enqueue(data, addr);
        }
        Ok(())
    }

    /// `sendto` when closing (refused) or when datagrams are queued (this
    /// one goes behind them).
    #[cold]
    #[inline(never)]
    fn sendto_closing_or_queued(&self, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        if self.flags.get(CLOSING) {
            return Err(self.refuse_write());
        }
        self.enqueue(data, addr);
        Ok(())
    }

    /// Debug builds check that `QUEUED` says what the queue says.
    #[inline]
    fn debug_check_queued(&self) {
        if cfg!(debug_assertions) {
            if let Ok(w) = self.write.try_borrow() {
                assert_eq!(self.flags.get(QUEUED), !w.queue.is_empty());
            }
        }
    }

    /// `sendto` to the remote address (connected, or a broadcast
    /// endpoint's default destination).
    fn sendto_remote(&self, data: &[u8]) -> Result<(), Error> {
        if self.flags.get(CLOSING) {
            return Err(self.refuse_write());
        }
        if !self.flags.get(QUEUED) {
            let r = match &*self.sock.borrow() {
                Some(sock) => self.send_one(sock, data, None),
                None => return Err(Error::ConnectionLost),
            };
            if !self.sent(r) {
                return Ok(());
            }
        }
        self.enqueue(data, None);
        Ok(())
    }

    /// Looks at the result of an immediate send: returns whether the
    /// datagram must be queued (the socket is full). An OS error goes to
    /// `error_received`; the datagram is dropped.
    #[inline]
    fn sent(&self, r: io::Result<usize>) -> bool {
        match r {
            Ok(_) => false,
            Err(e) => self.send_failed(e),
        }
    }

    #[cold]
    #[inline(never)]
    fn send_failed(&self, e: io::Error) -> bool {
        if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
            self.writable.set(false);
            true
        } else {
            self.notify(Pending::Error(e));
            false
        }
    }

    #[cold]
    #[inline(never)]
    fn invalid_address(&self) -> Error {
        Error::InvalidAddress {
            expected: format!("{:?}", self.address.as_ref().expect("checked")),
        }
    }

    /// A write after `close`, `abort` or a fatal error: counted, logged
    /// past the threshold, refused.
    #[cold]
    #[inline(never)]
    fn refuse_write(&self) -> Error {
        let n = self.refused_writes.get();
        if n >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            log::warn!("socket.sendto() raised exception.");
        }
        self.refused_writes.set(n.saturating_add(1));
        Error::ConnectionLost
    }

    /// Copies a datagram into the queue and runs flow control.
    #[cold]
    #[inline(never)]
    fn enqueue(&self, data: &[u8], addr: Option<A>) {
        let pause = {
            let mut w = self.write.borrow_mut();
            w.queue.push_back((data.to_vec(), addr));
            self.flags.set(QUEUED, true);
            w.payload += data.len();
            let size = w.flow_size();
            w.flow.should_pause(size)
        };
        if pause {
            self.notify(Pending::Pause);
        }
    }

    #[inline]
    fn send_one(&self, sock: &A::Socket, data: &[u8], addr: Option<&A>) -> io::Result<usize> {
        match addr {
            Some(a) => A::send_to(sock, data, a),
            None if self.connected => A::send(sock, data),
            None => match &self.address {
                Some(a) => A::send_to(sock, data, a),
                None => Err(io::Error::from(io::ErrorKind::NotConnected)),
            },
        }
    }

    /// asyncio's `_sendto_ready`: sends the queue in order until the socket
    /// is full. A datagram whose send fails with an OS error is dropped and
    /// reported, and the rest is still sent (edge-triggered: returning
    /// early would wait for a writable edge that may not come).
    fn flush(&self) {
        let mut errors = Vec::new();
        let resume = {
            let sock = self.sock.borrow();
            let Some(sock) = sock.as_ref() else { return };
            let mut w = self.write.borrow_mut();
            while let Some((data, addr)) = w.queue.front() {
                match self.send_one(sock, data, addr.as_ref()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.writable.set(false);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => {
                        let len = data.len();
                        w.queue.pop_front();
                        w.payload -= len;
                        if let Err(e) = r {
                            errors.push(e);
                        }
                    }
                }
            }
            self.flags.set(QUEUED, !w.queue.is_empty());
            let size = w.flow_size();
            w.flow.should_resume(size)
        };
        for e in errors {
            self.notify(Pending::Error(e));
        }
        if resume {
            self.notify(Pending::Resume);
        }
        if self.write.borrow().queue.is_empty() {
            self.complete_empty_waiter(Ok(()));
        }
        if self.flags.get(CLOSING)
            && self.conn_lost.get() == 0
            && self.write.borrow().queue.is_empty()
        {
            self.conn_lost.set(1);
            self.schedule_connection_lost(None);
        }
    }

    /// Completes the empty waiter, if one waits. Its waker only queues the
    /// task (DESIGN.md D9), so this is safe anywhere.
    fn complete_empty_waiter(&self, result: Result<(), Error>) {
        let waiter = self.empty_waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.complete(result);
        }
    }

    fn close(&self) {
        if self.flags.replace(CLOSING, true) {
            return;
        }
        if self.write.borrow().queue.is_empty() {
            self.conn_lost.set(self.conn_lost.get() + 1);
            self.schedule_connection_lost(None);
        }
    }

    /// asyncio's `_force_close`.
    fn force_close(&self, exc: Option<io::Error>) {
        if self.conn_lost.get() > 0 {
            return;
        }
        let dropped = {
            let mut w = self.write.borrow_mut();
            w.payload = 0;
            self.flags.set(QUEUED, false);
            std::mem::take(&mut w.queue)
        };
        drop(dropped);
        self.complete_empty_waiter(Err(Error::ConnectionLost));
        self.flags.set(CLOSING, true);
        self.conn_lost.set(1);
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

    /// asyncio's `_call_connection_lost`: the protocol's last call, then the
    /// socket is deregistered and closed and the protocol dropped (which
    /// breaks the cycle protocol -> transport -> protocol).
    fn call_connection_lost(&self, exc: Option<io::Error>) {
        if self.sock.borrow().is_none() {
            return;
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        self.flags.set(PENDING, false);
        drop(pending);
        let protocol = self.protocol.borrow_mut().take();
        let mut panicked = None;
        if let Some(mut p) = protocol {
            if let Err(payload) = self.lp.catch_user(|| p.connection_lost(exc)) {
                panicked = Some(payload);
            }
            // Dropped below, with no borrow held.
            if let Some(key) = self.key.take() {
                self.lp.deregister_source(key);
            }
            let sock = self.sock.borrow_mut().take();
            drop(sock);
            drop(p);
        } else {
            if let Some(key) = self.key.take() {
                self.lp.deregister_source(key);
            }
            let sock = self.sock.borrow_mut().take();
            drop(sock);
        }
        self.write.borrow_mut().flow.reset();
        if let Some(payload) = panicked {
            self.lp.handle_panic(
                payload,
                ExceptionContext::new("Exception in protocol.connection_lost()")
                    .with_transport(self.describe()),
            );
        }
    }
}

impl<A: DatagramAddr> IoSource for Inner<A> {
    fn ready(&self, readiness: Readiness) {
        if readiness.is_writable() {
            self.writable.set(true);
            if self.started.get() && self.flags.get(QUEUED) {
                self.flush();
            }
        }
        if readiness.is_readable() {
            self.read_scheduled.set(false);
            self.readable.set(true);
            self.read_ready();
        }
    }

    fn is_closing(&self) -> bool {
        self.flags.get(CLOSING)
    }

    fn describe(&self) -> String {
        Inner::describe(self)
    }

    fn loop_closed(&self) {
        // No callback can run any more: drop the protocol (which may hold
        // this transport) and close the socket.
        self.flags.set(CLOSING, true);
        self.conn_lost.set(self.conn_lost.get().max(1));
        self.key.take();
        let queued = std::mem::take(&mut self.write.borrow_mut().queue);
        self.complete_empty_waiter(Err(Error::ConnectionLost));
        self.flags.set(QUEUED, false);
        let protocol = self.protocol.borrow_mut().take();
        let sock = self.sock.borrow_mut().take();
        drop((queued, protocol, sock));
    }
}
