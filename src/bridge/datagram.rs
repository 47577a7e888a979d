//! [`DatagramSocket`]: a datagram transport as a `Stream` of received
//! datagrams and a `Sink` of datagrams to send (docs/design.md D10).
//!
//! As for [`TransportStream`](crate::TransportStream), the bridge is just
//! another protocol: [`DatagramSocketProtocol`] queues what the transport
//! delivers and wakes the task receiving; sends go straight to the
//! transport's [`sendto`](DatagramTransport::sendto). Nothing here touches
//! the socket. The address type `A` is [`SocketAddr`] (UDP, the default)
//! or [`UnixAddr`] (Unix datagram sockets), as for the transport.
//!
//! # Receiving
//!
//! - The [`Stream`] yields `Ok((payload, sender))` for each datagram, in
//!   the order the transport received them; zero-length datagrams are
//!   yielded as empty vectors.
//! - An OS error the transport reports through `error_received` is
//!   yielded **as an `Err` item in its place in the queue, and the stream
//!   goes on**: an ICMP port unreachable answer to a connected UDP socket
//!   comes out as `ConnectionRefused`, and the next item may be a
//!   datagram. This includes errors of sends: a datagram that
//!   [`start_send`](Sink::start_send) accepted and the kernel later refused
//!   (e.g. `EMSGSIZE`) is reported on the receiving side, because that is
//!   where the transport reports it. Code that does not care filters them
//!   out; [`StreamExt::forward`](futures::StreamExt::forward) stops at the
//!   first one.
//! - The stream ends (`None`) once the transport is closed and every
//!   queued item was taken. If the transport was closed by a fatal error,
//!   that error is the last item before the end.
//!
//! # Receive backpressure
//!
//! Received datagrams wait in a queue until the stream is polled. When
//! the queue holds [`max_datagrams`](DatagramSocket::set_recv_queue_limits)
//! items (1024 by default) or `max_bytes` payload bytes (256 KiB by
//! default), the socket stops reading from the kernel (`pause_reading`); it
//! resumes once the queue is down to half of both. The queue therefore
//! never holds more than `max_datagrams` items, nor more than `max_bytes`
//! plus one datagram. Nothing is dropped here: datagrams that arrive while
//! reading is paused wait in the socket's kernel receive buffer. For Unix
//! datagram sockets the sender then blocks (or gets `EAGAIN`), so nothing
//! is lost; for UDP the kernel drops what does not fit in its receive
//! buffer (`SO_RCVBUF`), as it would for any slow UDP reader, and those
//! drops are counted only by the kernel (`/proc/net/snmp`,
//! `RcvbufErrors`).
//!
//! # Sending
//!
//! - [`poll_ready`](Sink::poll_ready) is `Pending` while the transport has
//!   paused writing (its send queue is above the high-water mark, see
//!   [`set_write_buffer_limits`](DatagramTransport::set_write_buffer_limits))
//!   and is woken by `resume_writing`.
//! - [`start_send`](Sink::start_send) hands the datagram to
//!   [`sendto`](DatagramTransport::sendto): it goes out at once if the
//!   socket takes it, else it waits in the transport's queue.
//! - [`poll_flush`](Sink::poll_flush) waits until that queue is empty,
//!   through the transport's
//!   [`empty_waiter`](DatagramTransport::empty_waiter) (one at a time per
//!   transport: a flush fails with "Empty waiter is already set" while
//!   someone else holds one).
//! - [`poll_close`](Sink::poll_close) flushes, then closes the transport.
//! - Errors are [`io::Error`]s made from the transport's
//!   [`Error`]s, with their [kinds](crate::Error::kind): a
//!   send or flush after the transport closed is `BrokenPipe`
//!   ([`ConnectionLost`](crate::Error::ConnectionLost)), a destination
//!   other than a connected socket's peer is `InvalidInput`
//!   ([`InvalidAddress`](crate::Error::InvalidAddress)). A datagram
//!   refused by `start_send` is dropped; [`send_to`](DatagramSocket::send_to)
//!   borrows its payload instead.
//!
//! # Closing
//!
//! Dropping the socket (both halves, after
//! [`split`](DatagramSocket::split)) closes the transport: datagrams queued
//! for sending are still sent, as [`close`](DatagramTransport::close)
//! does.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::stream::FusedStream;
use futures::{Sink, Stream};

use crate::datagram_endpoint::{DatagramEndpointBuilder, UnixDatagramEndpointBuilder};
use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::net::ToAddrs;
use crate::transport::datagram::{DatagramAddr, DatagramProtocol, DatagramTransport, UnixAddr};
use crate::transport::EmptyWaiter;

/// The default bound on queued received datagrams. See the example on
/// [`DatagramSocket::recv_queue_limits`].
pub const DEFAULT_MAX_QUEUED_DATAGRAMS: usize = 1024;

/// The default bound on the payload bytes of queued received datagrams.
/// See the example on [`DatagramSocket::recv_queue_limits`].
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 * 1024;

/// What the receiving side yields.
type Item<A> = io::Result<(Vec<u8>, A)>;

/// What the protocol and the two halves share. Touched only for short
/// moments, never across a call into user code.
struct Shared<A> {
    /// Received datagrams and errors, oldest first.
    queue: RefCell<VecDeque<Item<A>>>,
    /// Payload bytes in `queue`.
    queued_bytes: Cell<usize>,
    max_datagrams: Cell<usize>,
    max_bytes: Cell<usize>,
    /// Whether this bridge paused the transport's reading.
    reading_paused: Cell<bool>,
    writing_paused: Cell<bool>,
    /// `connection_lost` ran.
    lost: Cell<bool>,
    read_waker: RefCell<Option<Waker>>,
    write_waker: RefCell<Option<Waker>>,
}

impl<A> Shared<A> {
    fn new() -> Shared<A> {
        Shared {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            max_datagrams: Cell::new(DEFAULT_MAX_QUEUED_DATAGRAMS),
            max_bytes: Cell::new(DEFAULT_MAX_QUEUED_BYTES),
            reading_paused: Cell::new(false),
            writing_paused: Cell::new(false),
            lost: Cell::new(false),
            read_waker: RefCell::new(None),
            write_waker: RefCell::new(None),
        }
    }

    fn queued_len(&self) -> usize {
        self.queue.borrow().len()
    }

    fn is_full(&self) -> bool {
        self.queued_len() >= self.max_datagrams.get()
            || self.queued_bytes.get() >= self.max_bytes.get()
    }

    fn is_half_empty(&self) -> bool {
        self.queued_len() <= self.max_datagrams.get() / 2
            && self.queued_bytes.get() <= self.max_bytes.get() / 2
    }

    fn push(&self, item: Item<A>) {
        if let Ok((data, _)) = &item {
            self.queued_bytes.set(self.queued_bytes.get() + data.len());
        }
        self.queue.borrow_mut().push_back(item);
        wake(&self.read_waker);
    }

    fn pop(&self) -> Option<Item<A>> {
        let item = self.queue.borrow_mut().pop_front()?;
        if let Ok((data, _)) = &item {
            self.queued_bytes.set(self.queued_bytes.get() - data.len());
        }
        Some(item)
    }
}

impl<A: DatagramAddr> Shared<A> {
    /// Resumes reading once the queue is down to half of both bounds.
    fn maybe_resume_reading(&self, transport: &DatagramTransport<A>) {
        if self.reading_paused.get() && self.is_half_empty() {
            self.reading_paused.set(false);
            transport.resume_reading();
        }
    }
}

/// Takes the waker out of its slot, then wakes it (no borrow is held while
/// it runs; our wakers only queue the task anyway, docs/design.md D9).
fn wake(slot: &RefCell<Option<Waker>>) {
    let waker = slot.borrow_mut().take();
    if let Some(w) = waker {
        w.wake();
    }
}

fn register(slot: &RefCell<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = slot.borrow_mut();
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// A send (or flush) on a closed transport: [`Error::ConnectionLost`], as
/// the transport's own `sendto` and empty waiter report it.
fn closed_error() -> io::Error {
    Error::ConnectionLost.into()
}

/// `recv_from` once the stream has ended: what `read_exact` gives at EOF.
fn ended_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the datagram socket is closed and its queue is empty",
    )
}

/// The protocol behind a [`DatagramSocket`]: queues received datagrams and
/// errors, pauses reading when the queue is full, and tracks the
/// transport's write flow control.
///
/// Opaque, and made only by sloop: it is named in the type of the endpoint
/// builder that [`DatagramSocket::with_endpoint`] and
/// [`DatagramSocket::with_unix_endpoint`] configure, whose factory, a plain
/// `fn() -> DatagramSocketProtocol`, makes the socket's protocol.
pub struct DatagramSocketProtocol<A: DatagramAddr = SocketAddr> {
    shared: Rc<Shared<A>>,
    transport: Option<DatagramTransport<A>>,
}

/// The factory of the endpoint that a [`DatagramSocket`] wraps.
type Factory<A> = fn() -> DatagramSocketProtocol<A>;

impl<A: DatagramAddr> fmt::Debug for DatagramSocketProtocol<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSocketProtocol")
            .field("queued", &self.shared.queued_len())
            .finish()
    }
}

impl<A: DatagramAddr> DatagramProtocol<A> for DatagramSocketProtocol<A> {
    fn connection_made(&mut self, transport: &DatagramTransport<A>) {
        self.transport = Some(transport.clone());
    }

    fn datagram_received(&mut self, data: &[u8], addr: A) {
        let s = &self.shared;
        s.push(Ok((data.to_vec(), addr)));
        self.maybe_pause_reading();
    }

    fn error_received(&mut self, exc: io::Error) {
        self.shared.push(Err(exc));
        self.maybe_pause_reading();
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        // Drop the transport: no cycle protocol -> transport remains.
        self.transport = None;
        let s = &self.shared;
        if let Some(e) = exc {
            s.queue.borrow_mut().push_back(Err(e));
        }
        s.lost.set(true);
        wake(&s.read_waker);
        wake(&s.write_waker);
    }

    fn pause_writing(&mut self) {
        self.shared.writing_paused.set(true);
    }

    fn resume_writing(&mut self) {
        self.shared.writing_paused.set(false);
        wake(&self.shared.write_waker);
    }
}

impl<A: DatagramAddr> DatagramSocketProtocol<A> {
    fn maybe_pause_reading(&self) {
        let s = &self.shared;
        if !s.reading_paused.get() && s.is_full() {
            if let Some(t) = &self.transport {
                s.reading_paused.set(true);
                t.pause_reading();
            }
        }
    }
}

/// Closes the transport when the last half of a socket is dropped.
struct CloseOnDrop<A: DatagramAddr> {
    transport: DatagramTransport<A>,
}

impl<A: DatagramAddr> Drop for CloseOnDrop<A> {
    fn drop(&mut self) {
        self.transport.close();
    }
}

/// A datagram transport as a [`Stream`] of received datagrams and a
/// [`Sink`] of datagrams to send, for `async` code.
///
/// `A` is [`SocketAddr`] for UDP (the default) and [`UnixAddr`] for Unix
/// datagram sockets. Made with [`bind`](DatagramSocket::bind),
/// [`connect`](DatagramSocket::connect),
/// [`with_endpoint`](DatagramSocket::with_endpoint) (any option of
/// [`create_datagram_endpoint`](LoopHandle::create_datagram_endpoint)) and
/// their Unix counterparts. A cheap `!Send` value that lives on the loop's
/// thread, like the transport under it. See the [module docs](self) for
/// the contract: errors as stream items, receive backpressure, flushing
/// and closing.
///
/// - `Stream<Item = io::Result<(Vec<u8>, A)>>`: received datagrams and the
///   transport's OS errors, in order.
/// - `Sink<(Vec<u8>, A), Error = io::Error>`: `poll_ready` waits while the
///   transport has paused writing, `poll_flush` until its send queue is
///   empty, `poll_close` flushes and closes.
/// - [`split`](DatagramSocket::split) gives halves that two tasks can use
///   at once.
/// - Dropping it closes the transport (queued datagrams are still sent).
///
/// ```
/// use futures::{SinkExt, StreamExt};
/// use sloop::DatagramSocket;
///
/// let lp = sloop::EventLoop::new()?;
/// let h = lp.handle();
/// lp.run_until_complete(async move {
///     let mut sock = DatagramSocket::bind(&h, "127.0.0.1:0").await?;
///     let me = sock.local_addr().unwrap();
///     // Sink: send (and flush) a datagram to ourselves.
///     sock.send((b"ping".to_vec(), me)).await?;
///     // Stream: the next datagram and its sender.
///     let (data, from) = sock.next().await.expect("open")?;
///     assert_eq!((&data[..], from), (&b"ping"[..], me));
///     // The async methods do the same without the traits.
///     sock.send_to(b"pong", me).await?;
///     assert_eq!(sock.recv_from().await?, (b"pong".to_vec(), me));
///     Ok::<(), std::io::Error>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DatagramSocket<A: DatagramAddr = SocketAddr> {
    recv: DatagramRecvHalf<A>,
    send: DatagramSendHalf<A>,
}

/// The receiving half of a [`DatagramSocket`]: the `Stream`.
pub struct DatagramRecvHalf<A: DatagramAddr = SocketAddr> {
    shared: Rc<Shared<A>>,
    transport: DatagramTransport<A>,
    _guard: Rc<CloseOnDrop<A>>,
}

/// The sending half of a [`DatagramSocket`]: the `Sink`.
pub struct DatagramSendHalf<A: DatagramAddr = SocketAddr> {
    shared: Rc<Shared<A>>,
    transport: DatagramTransport<A>,
    _guard: Rc<CloseOnDrop<A>>,
    flush: Option<EmptyWaiter>,
}

impl DatagramSocket<SocketAddr> {
    /// A UDP socket bound to `addr`, any [`ToAddrs`] (port 0: any free
    /// port; a name is resolved off the loop thread), not connected: it
    /// receives from anyone and sends anywhere.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed address, a resolution error, the OS
    /// error of `socket` or `bind`; an error if the loop is closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves nothing open: the
    /// socket is made in the poll that completes it.
    pub async fn bind(lp: &LoopHandle, addr: impl ToAddrs) -> io::Result<Self> {
        Self::with_endpoint(lp, |b| b.local_addr(addr)).await
    }

    /// A UDP socket bound to `local` and connected to `remote` (both any
    /// [`ToAddrs`], resolved as for
    /// [`create_datagram_endpoint`](LoopHandle::create_datagram_endpoint)):
    /// the kernel drops datagrams from other senders, an ICMP error from
    /// `remote` comes out of the stream as an `Err` item (e.g.
    /// `ConnectionRefused`), and sending to any other address fails with
    /// `InvalidInput`.
    ///
    /// # Errors
    ///
    /// As [`bind`](DatagramSocket::bind), and the OS error of `connect`;
    /// `InvalidInput` if the addresses have no family in common.
    ///
    /// # Cancel safety
    ///
    /// As [`bind`](DatagramSocket::bind).
    pub async fn connect(
        lp: &LoopHandle,
        local: impl ToAddrs,
        remote: impl ToAddrs,
    ) -> io::Result<Self> {
        Self::with_endpoint(lp, |b| b.local_addr(local).remote_addr(remote)).await
    }

    /// Wraps an existing UDP socket (bound or not, connected or not); it is
    /// made non-blocking. At once: there is nothing to resolve or wait for.
    ///
    /// # Errors
    ///
    /// The OS error of making it non-blocking; an error if the loop is
    /// closed.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let addr = std_sock.local_addr()?;
    /// let sock = sloop::DatagramSocket::from_std(&lp.handle(), std_sock)?;
    /// assert_eq!(sock.local_addr(), Some(addr));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_std(lp: &LoopHandle, sock: UdpSocket) -> io::Result<Self> {
        let transport = lp
            .create_datagram_endpoint(DatagramSocketProtocol::new as Factory<_>)
            .create_on_socket(sock)?;
        Ok(DatagramSocket::from_transport(transport))
    }

    /// A UDP socket with any options of
    /// [`create_datagram_endpoint`](LoopHandle::create_datagram_endpoint):
    /// `configure` gets the builder and returns it configured; the socket
    /// wraps the endpoint it starts.
    ///
    /// ```
    /// # let lp = sloop::EventLoop::new()?;
    /// let sock = lp.run_until_complete(sloop::DatagramSocket::with_endpoint(&lp.handle(), |b| {
    ///     b.local_addr("127.0.0.1:0").reuse_port(true)
    /// }))??;
    /// assert_ne!(sock.local_addr().unwrap().port(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of awaiting the [`DatagramEndpointBuilder`].
    pub async fn with_endpoint(
        lp: &LoopHandle,
        configure: impl FnOnce(
            DatagramEndpointBuilder<fn() -> DatagramSocketProtocol>,
        ) -> DatagramEndpointBuilder<fn() -> DatagramSocketProtocol>,
    ) -> io::Result<Self> {
        let builder = lp.create_datagram_endpoint(DatagramSocketProtocol::new as Factory<_>);
        let transport = configure(builder).await?;
        Ok(DatagramSocket::from_transport(transport))
    }
}

impl DatagramSocket<UnixAddr> {
    /// A Unix datagram socket bound to `path` (a stale socket file there
    /// is removed first), not connected. Async as
    /// [`bind`](DatagramSocket::bind) is, though a path needs no resolving:
    /// every endpoint is awaited the same way.
    ///
    /// # Errors
    ///
    /// The OS error of `socket` or `bind`; an error if the loop is
    /// closed.
    ///
    /// # Cancel safety
    ///
    /// The socket is made in the future's first poll, which completes it.
    pub async fn bind_unix(lp: &LoopHandle, path: impl AsRef<Path>) -> io::Result<Self> {
        Self::with_unix_endpoint(lp, |b| b.local_addr(path)).await
    }

    /// An unbound Unix datagram socket connected to `path`. (Bind one with
    /// [`with_unix_endpoint`](DatagramSocket::with_unix_endpoint) if the
    /// peer must answer.)
    ///
    /// # Errors
    ///
    /// The OS error of `socket` or `connect`.
    ///
    /// # Cancel safety
    ///
    /// As [`bind_unix`](DatagramSocket::bind_unix).
    pub async fn connect_unix(lp: &LoopHandle, path: impl AsRef<Path>) -> io::Result<Self> {
        Self::with_unix_endpoint(lp, |b| b.remote_addr(path)).await
    }

    /// Wraps an existing Unix datagram socket (e.g. one end of
    /// [`UnixDatagram::pair`], whose peer is [`UnixAddr::Unnamed`]); it is
    /// made non-blocking. At once, as [`from_std`](DatagramSocket::from_std).
    ///
    /// # Errors
    ///
    /// The OS error of making it non-blocking; an error if the loop is
    /// closed.
    pub fn from_unix(lp: &LoopHandle, sock: UnixDatagram) -> io::Result<Self> {
        let transport = lp
            .create_unix_datagram_endpoint(DatagramSocketProtocol::new as Factory<_>)
            .socket(sock)
            .create_now()?;
        Ok(DatagramSocket::from_transport(transport))
    }

    /// A Unix datagram socket with any options of
    /// [`create_unix_datagram_endpoint`](LoopHandle::create_unix_datagram_endpoint),
    /// as [`with_endpoint`](DatagramSocket::with_endpoint) does for UDP.
    ///
    /// # Errors
    ///
    /// The errors of awaiting the [`UnixDatagramEndpointBuilder`].
    pub async fn with_unix_endpoint(
        lp: &LoopHandle,
        configure: impl FnOnce(
            UnixDatagramEndpointBuilder<fn() -> DatagramSocketProtocol<UnixAddr>>,
        )
            -> UnixDatagramEndpointBuilder<fn() -> DatagramSocketProtocol<UnixAddr>>,
    ) -> io::Result<Self> {
        let builder = lp.create_unix_datagram_endpoint(DatagramSocketProtocol::new as Factory<_>);
        let transport = configure(builder).await?;
        Ok(DatagramSocket::from_transport(transport))
    }
}

impl<A: DatagramAddr> DatagramSocketProtocol<A> {
    fn new() -> Self {
        DatagramSocketProtocol {
            shared: Rc::new(Shared::new()),
            transport: None,
        }
    }
}

impl<A: DatagramAddr> DatagramSocket<A> {
    /// The socket over a transport that `start` just made with a
    /// [`Factory`]: its protocol is in place and idle (`connection_made`
    /// comes in the next iteration), so it can be asked for its state.
    fn from_transport(transport: DatagramTransport<A>) -> Self {
        let shared = transport
            .with_protocol(|p: &mut DatagramSocketProtocol<A>| p.shared.clone())
            .expect("a new endpoint's protocol is a DatagramSocketProtocol, idle");
        let guard = Rc::new(CloseOnDrop {
            transport: transport.clone(),
        });
        DatagramSocket {
            recv: DatagramRecvHalf {
                shared: shared.clone(),
                transport: transport.clone(),
                _guard: guard.clone(),
            },
            send: DatagramSendHalf {
                shared,
                transport,
                _guard: guard,
                flush: None,
            },
        }
    }

    /// The transport under the socket: for its options
    /// ([`set_write_buffer_limits`](DatagramTransport::set_write_buffer_limits),
    /// [`with_socket`](DatagramTransport::with_socket)), its queue
    /// ([`write_buffer_len`](DatagramTransport::write_buffer_len)), or to
    /// send from callback code. Closing it ends the stream.
    ///
    /// ```
    /// # let lp = sloop::EventLoop::new()?;
    /// let sock = lp.run_until_complete(sloop::DatagramSocket::bind(&lp.handle(), "127.0.0.1:0"))??;
    /// sock.transport().set_write_buffer_limits(Some(4096), None)?;
    /// assert_eq!(sock.transport().write_buffer_limits(), (1024, 4096));
    /// assert_eq!(sock.transport().write_buffer_len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transport(&self) -> &DatagramTransport<A> {
        &self.send.transport
    }

    /// The socket's local address. See the example on [`DatagramSocket`].
    pub fn local_addr(&self) -> Option<A> {
        self.send.transport.local_addr()
    }

    /// The connected peer's address; `None` if not connected.
    ///
    /// ```
    /// use sloop::DatagramSocket;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// lp.run_until_complete(async move {
    ///     let a = DatagramSocket::bind(&h, "127.0.0.1:0").await?;
    ///     let a_addr = a.local_addr().unwrap();
    ///     let b = DatagramSocket::connect(&h, "127.0.0.1:0", a_addr).await?;
    ///     assert_eq!(b.peer_addr(), Some(a_addr));
    ///     assert_eq!(a.peer_addr(), None);
    ///     Ok::<(), std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_addr(&self) -> Option<A> {
        self.send.transport.peer_addr()
    }

    /// Received items (datagrams and errors) waiting to be taken.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sloop::DatagramSocket;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// lp.run_until_complete(async move {
    ///     let mut sock = DatagramSocket::bind(&h, "127.0.0.1:0").await?;
    ///     let me = sock.local_addr().unwrap();
    ///     sock.send_to(b"one", me).await?;
    ///     sock.send_to(b"three", me).await?;
    ///     // Wait until both are queued, without taking them.
    ///     while sock.queued_len() < 2 {
    ///         sloop::sleep(Duration::from_millis(1)).await;
    ///     }
    ///     assert_eq!(sock.queued_bytes(), 8);
    ///     sock.recv_from().await?;
    ///     assert_eq!((sock.queued_len(), sock.queued_bytes()), (1, 5));
    ///     Ok::<(), std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queued_len(&self) -> usize {
        self.recv.queued_len()
    }

    /// Payload bytes of the received datagrams waiting to be taken. See
    /// the example on [`queued_len`](DatagramSocket::queued_len).
    pub fn queued_bytes(&self) -> usize {
        self.recv.queued_bytes()
    }

    /// The receive queue's bounds, `(max_datagrams, max_bytes)`.
    ///
    /// ```
    /// use sloop::bridge::datagram::{DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_DATAGRAMS};
    ///
    /// # let lp = sloop::EventLoop::new()?;
    /// let sock = lp.run_until_complete(sloop::DatagramSocket::bind(&lp.handle(), "127.0.0.1:0"))??;
    /// assert_eq!(
    ///     sock.recv_queue_limits(),
    ///     (DEFAULT_MAX_QUEUED_DATAGRAMS, DEFAULT_MAX_QUEUED_BYTES)
    /// );
    /// // Each bound is at least 1.
    /// sock.set_recv_queue_limits(16, 0);
    /// assert_eq!(sock.recv_queue_limits(), (16, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_queue_limits(&self) -> (usize, usize) {
        self.recv.recv_queue_limits()
    }

    /// Sets the receive queue's bounds (see "Receive backpressure" in the
    /// [module docs](self)); each is at least 1. Takes effect with the next
    /// datagram, or at once if the queue is now small enough to resume.
    pub fn set_recv_queue_limits(&self, max_datagrams: usize, max_bytes: usize) {
        self.recv.set_recv_queue_limits(max_datagrams, max_bytes);
    }

    /// Receives the next datagram and its sender.
    ///
    /// # Errors
    ///
    /// An OS error the transport reported (see the [module docs](self));
    /// the socket stays usable. `UnexpectedEof` once the transport is
    /// closed and the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a datagram is taken from the queue only in the poll
    /// that returns it, so dropping the future loses nothing.
    pub async fn recv_from(&mut self) -> io::Result<(Vec<u8>, A)> {
        self.recv.recv_from().await
    }

    /// Sends `data` to `addr`, waiting first while the transport has
    /// paused writing. Returns once the transport has the datagram (sent,
    /// or queued); flush to wait for the queue. A connected socket sends
    /// to its [`peer_addr`](DatagramSocket::peer_addr). (There is no
    /// inherent `send`: it would hide [`SinkExt::send`](futures::SinkExt::send).)
    ///
    /// # Errors
    ///
    /// `BrokenPipe` ([`Error::ConnectionLost`]) if the transport is
    /// closed; `InvalidInput` ([`Error::InvalidAddress`]) if the
    /// socket is connected to another address.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the datagram is handed over in the poll that returns
    /// `Ready`; a future dropped before that sent nothing.
    pub async fn send_to(&mut self, data: &[u8], addr: A) -> io::Result<()> {
        self.send.send_to(data, addr).await
    }

    /// Splits the socket into halves that two tasks can use at once. The
    /// transport closes when both are dropped.
    ///
    /// ```
    /// use futures::{SinkExt, StreamExt};
    /// use sloop::DatagramSocket;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// lp.run_until_complete(async move {
    ///     let sock = DatagramSocket::bind(&h, "127.0.0.1:0").await?;
    ///     let me = sock.local_addr().unwrap();
    ///     let (mut rx, mut tx) = sock.split();
    ///     assert_eq!(tx.transport().local_addr(), Some(me));
    ///     // One task sends while this one receives.
    ///     let sender = h.spawn_local(async move {
    ///         tx.send((b"hi".to_vec(), me)).await?;
    ///         Ok::<_, std::io::Error>(tx)
    ///     });
    ///     let (data, from) = rx.next().await.expect("open")?;
    ///     assert_eq!((&data[..], from), (&b"hi"[..], me));
    ///     assert_eq!(rx.queued_len(), 0);
    ///     let tx = sender.await.expect("the task ran")?;
    ///     // And back together.
    ///     let sock = DatagramSocket::unsplit(rx, tx).ok().expect("one socket's halves");
    ///     assert_eq!(sock.local_addr(), Some(me));
    ///     Ok::<(), std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn split(self) -> (DatagramRecvHalf<A>, DatagramSendHalf<A>) {
        (self.recv, self.send)
    }

    /// Puts the halves of one socket back together. See the example on
    /// [`split`](DatagramSocket::split).
    ///
    /// # Errors
    ///
    /// Gives the halves back if they come from different sockets.
    #[allow(clippy::type_complexity)]
    pub fn unsplit(
        recv: DatagramRecvHalf<A>,
        send: DatagramSendHalf<A>,
    ) -> Result<Self, (DatagramRecvHalf<A>, DatagramSendHalf<A>)> {
        if Rc::ptr_eq(&recv.shared, &send.shared) {
            Ok(DatagramSocket { recv, send })
        } else {
            Err((recv, send))
        }
    }
}

impl<A: DatagramAddr> DatagramRecvHalf<A> {
    /// The transport under the socket, as [`DatagramSocket::transport`].
    pub fn transport(&self) -> &DatagramTransport<A> {
        &self.transport
    }

    /// Received items waiting to be taken, as
    /// [`DatagramSocket::queued_len`].
    pub fn queued_len(&self) -> usize {
        self.shared.queued_len()
    }

    /// Payload bytes of the received datagrams waiting to be taken, as
    /// [`DatagramSocket::queued_bytes`].
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.get()
    }

    /// The receive queue's bounds, `(max_datagrams, max_bytes)`, as
    /// [`DatagramSocket::recv_queue_limits`].
    pub fn recv_queue_limits(&self) -> (usize, usize) {
        (self.shared.max_datagrams.get(), self.shared.max_bytes.get())
    }

    /// As [`DatagramSocket::set_recv_queue_limits`].
    pub fn set_recv_queue_limits(&self, max_datagrams: usize, max_bytes: usize) {
        self.shared.max_datagrams.set(max_datagrams.max(1));
        self.shared.max_bytes.set(max_bytes.max(1));
        self.shared.maybe_resume_reading(&self.transport);
    }

    /// As [`DatagramSocket::recv_from`].
    ///
    /// # Errors
    ///
    /// As [`DatagramSocket::recv_from`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken from the queue unless returned.
    pub async fn recv_from(&mut self) -> io::Result<(Vec<u8>, A)> {
        futures::future::poll_fn(|cx| self.poll_item(cx))
            .await
            .unwrap_or_else(|| Err(ended_error()))
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item<A>>> {
        let s = &self.shared;
        if let Some(item) = s.pop() {
            s.maybe_resume_reading(&self.transport);
            return Poll::Ready(Some(item));
        }
        if s.lost.get() {
            return Poll::Ready(None);
        }
        register(&s.read_waker, cx);
        Poll::Pending
    }
}

impl<A: DatagramAddr> Stream for DatagramRecvHalf<A> {
    type Item = io::Result<(Vec<u8>, A)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.shared.queued_len();
        (
            n,
            if self.shared.lost.get() {
                Some(n)
            } else {
                None
            },
        )
    }
}

impl<A: DatagramAddr> FusedStream for DatagramRecvHalf<A> {
    fn is_terminated(&self) -> bool {
        self.shared.lost.get() && self.shared.queued_len() == 0
    }
}

impl<A: DatagramAddr> DatagramSendHalf<A> {
    /// The transport under the socket, as [`DatagramSocket::transport`].
    pub fn transport(&self) -> &DatagramTransport<A> {
        &self.transport
    }

    /// As [`DatagramSocket::send_to`].
    ///
    /// # Errors
    ///
    /// As [`DatagramSocket::send_to`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the datagram is handed over in the poll that returns
    /// `Ready`.
    pub async fn send_to(&mut self, data: &[u8], addr: A) -> io::Result<()> {
        futures::future::poll_fn(|cx| self.poll_writable(cx)).await?;
        Ok(self.transport.sendto(data, Some(addr))?)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.lost.get() || self.transport.is_closing() {
            return Poll::Ready(Err(closed_error()));
        }
        if self.shared.writing_paused.get() {
            register(&self.shared.write_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl<A: DatagramAddr> Sink<(Vec<u8>, A)> for DatagramSendHalf<A> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_writable(cx)
    }

    fn start_send(self: Pin<&mut Self>, (data, addr): (Vec<u8>, A)) -> io::Result<()> {
        Ok(self.transport.sendto(&data, Some(addr))?)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let transport = &this.transport;
        super::poll_flush_with(&mut this.flush, cx, || {
            // The datagram count, not the payload bytes: queued empty
            // datagrams count too.
            if transport.write_buffer_len() == 0 {
                return Ok(None);
            }
            Ok(Some(transport.empty_waiter()?))
        })
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::ready!(self.as_mut().poll_flush(cx))?;
        self.transport.close();
        Poll::Ready(Ok(()))
    }
}

impl<A: DatagramAddr> Stream for DatagramSocket<A> {
    type Item = io::Result<(Vec<u8>, A)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.recv).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.recv.size_hint()
    }
}

impl<A: DatagramAddr> FusedStream for DatagramSocket<A> {
    fn is_terminated(&self) -> bool {
        self.recv.is_terminated()
    }
}

impl<A: DatagramAddr> Sink<(Vec<u8>, A)> for DatagramSocket<A> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: (Vec<u8>, A)) -> io::Result<()> {
        Pin::new(&mut self.send).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_close(cx)
    }
}

impl<A: DatagramAddr> fmt::Debug for DatagramSocket<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSocket")
            .field("transport", &self.send.transport)
            .field("queued", &self.recv.queued_len())
            .finish()
    }
}

impl<A: DatagramAddr> fmt::Debug for DatagramRecvHalf<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramRecvHalf")
            .field("queued", &self.queued_len())
            .finish()
    }
}

impl<A: DatagramAddr> fmt::Debug for DatagramSendHalf<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSendHalf")
            .field("transport", &self.transport)
            .finish()
    }
}
