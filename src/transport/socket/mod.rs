//! The socket transport for TCP and Unix streams: asyncio's
//! `_SelectorTransport` + `_SelectorSocketTransport`.
//!
//! # How it runs
//!
//! The socket is registered once, for reading and writing, edge-triggered
//! (docs/design.md D3). The transport keeps a `READABLE` flag: an event sets it,
//! and a `recv` that returns `WouldBlock`, or a short read with no hang-up
//! reported, clears it. Each readiness does one `recv` (the [`read`]
//! paths): into the loop's shared read buffer (D5) for a `Protocol`,
//! straight into the protocol's memory for a `BufferedProtocol` and the
//! stream bridge. A full read re-queues the transport (`schedule_io`)
//! instead of looping, so one busy peer cannot starve the others. A paused
//! transport just leaves the flag set; `resume_reading` re-queues it.
//!
//! `write` sends at once when nothing is buffered and buffers only what the
//! kernel did not take (the [`write`] paths, the `write_buf` module); the
//! rest goes out on the next writable edge.
//!
//! The protocol lives in the transport's [`ProtocolCell`], which takes it
//! out while it runs, holds back flow notifications, turns a panic into a
//! fatal error and delivers `connection_lost` once (D2, D6, D8). The state
//! bits are the cell's (`transport::cell`).
//!
//! # Closing
//!
//! `close` stops reading and lets the buffer drain; `abort` and fatal
//! errors (`force_close`) drop the buffer. Either way `connection_lost` is
//! scheduled (`LOST_SCHEDULED`) and runs in a later iteration; then the fd
//! is deregistered, the protocol dropped and the socket closed, in that
//! order, and the owner's [`ConnectionGuard`] released.

mod read;
mod sendfile;
pub(crate) mod slot;
mod write;
mod write_buf;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use socket2::Socket;

pub(crate) use slot::Installed;
use slot::ProtocolSlot;
use write_buf::WriteBuf;

use super::cell::{
    Host, ProtocolCell, BUFFERED, CLOSING, EOF, HAS_DATA, LOST_DONE, LOST_SCHEDULED, PAUSED,
    READABLE, READ_EOF, SENDFILE, STARTED,
};
use super::flow::FlowControl;
use super::{Address, ConnectionGuard, EmptyWaiter, Transport, TransportImpl, WaiterState};
use crate::error::Error;
use crate::event_loop::{
    ByteCounters, IoKey, IoSource, LoopHandle, Readiness, SourceTally, TransportStats,
};
use crate::exception::{TransportInfo, TransportKind};
use crate::protocol::stream_reader::StreamReaderProtocol;
use crate::protocol::AnyProtocol;
use crate::sys::OpenSocket;

/// What kind of stream the socket is (for TCP_NODELAY and descriptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Unix,
}

pub(crate) struct SocketTransport {
    lp: LoopHandle,
    me: Weak<SocketTransport>,
    /// Closed after `connection_lost` ran.
    sock: OpenSocket<Socket>,
    /// The fd number, for descriptions only.
    fd: RawFd,
    kind: Kind,
    key: Cell<Option<IoKey>>,
    cell: ProtocolCell<ProtocolSlot>,
    wbuf: RefCell<WriteBuf>,
    flow: Cell<FlowControl>,
    /// The hard cap on the write buffer (`usize::MAX`: none, as asyncio).
    cap: Cell<usize>,
    empty_waiter: RefCell<Option<Rc<WaiterState>>>,
    /// Dropped at loss: the owner's hold on this connection (a server's
    /// count of its clients), opaque here.
    guard: RefCell<Option<ConnectionGuard>>,
    started_waiter: RefCell<Option<Rc<WaiterState>>>,
    /// Bytes in and out, for `stats`.
    bytes: ByteCounters,
}

/// An `EBADF` error, for I/O on a transport whose socket is closed.
fn closed_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

impl SocketTransport {
    /// Wraps a connected, non-blocking socket, registers it and queues
    /// `connection_made` (then reading) for the next iteration, as asyncio's
    /// constructor does with `call_soon`. The returned waiter completes
    /// right after `connection_made`; dropping the transport's last handle
    /// before then does not stop it (use `abort`).
    pub(crate) fn create(
        lp: &LoopHandle,
        sock: Socket,
        kind: Kind,
        protocol: AnyProtocol,
        guard: Option<ConnectionGuard>,
    ) -> Result<(Rc<SocketTransport>, EmptyWaiter), (Error, Option<ConnectionGuard>)> {
        if kind == Kind::Tcp {
            // Latency over batching, as asyncio's `_set_nodelay`.
            let _ = sock.set_nodelay(true);
        }
        let fd = sock.as_raw_fd();
        let started = Rc::new(WaiterState::default());
        let rc = Rc::new_cyclic(|me| SocketTransport {
            lp: lp.clone(),
            me: me.clone(),
            sock: OpenSocket::new(sock),
            fd,
            kind,
            key: Cell::new(None),
            cell: ProtocolCell::default(),
            wbuf: RefCell::new(WriteBuf::default()),
            flow: Cell::new(FlowControl::default()),
            cap: Cell::new(usize::MAX),
            empty_waiter: RefCell::new(None),
            guard: RefCell::new(guard),
            started_waiter: RefCell::new(Some(started.clone())),
            bytes: ByteCounters::new(),
        });
        rc.install(protocol.into());
        match lp.register_source(fd, rc.clone()) {
            Ok(key) => rc.key.set(Some(key)),
            Err(e) => {
                let guard = rc.guard.borrow_mut().take();
                drop(rc.cell.loop_closed());
                return Err((e, guard));
            }
        }
        let me = rc.clone();
        lp.call_soon_internal(move || me.start());
        Ok((rc, EmptyWaiter::new(started)))
    }

    #[inline(always)]
    fn has(&self, bits: u32) -> bool {
        self.cell.flags.has(bits)
    }

    #[inline(always)]
    fn set_flag(&self, bits: u32, on: bool) {
        self.cell.flags.set(bits, on);
    }

    #[inline(always)]
    fn replace_flag(&self, bit: u32, on: bool) -> bool {
        self.cell.flags.replace(bit, on)
    }

    fn transport_kind(&self) -> TransportKind {
        match self.kind {
            Kind::Tcp => TransportKind::Tcp,
            Kind::Unix => TransportKind::Unix,
        }
    }

    /// Puts `p` in the cell (`set_protocol`) and records its kind.
    fn install(&self, p: Installed) {
        self.set_flag(BUFFERED, p.is_buffered());
        self.cell.replace(p);
    }

    fn handle(&self) -> Transport {
        Transport::from_socket(self.me.upgrade().expect("transport alive while used"))
    }

    /// `connection_made`, then reading starts (unless paused in it).
    /// Runs even if the transport was closed meanwhile: as in asyncio, the
    /// protocol then gets `connection_made` and `connection_lost`, queued
    /// in that order.
    fn start(&self) {
        self.set_flag(STARTED, true);
        let t = self.handle();
        self.cell
            .call(self, "connection_made", |p| p.connection_made(&t));
        if let Some(w) = self.started_waiter.borrow_mut().take() {
            w.complete(Ok(()));
        }
        if self.has(READABLE) && self.can_read() {
            self.read_ready();
        }
    }

    #[inline]
    fn can_read(&self) -> bool {
        // CLOSING is set whenever LOST_SCHEDULED is.
        self.cell.flags.get() & (STARTED | PAUSED | CLOSING | READ_EOF) == STARTED
    }

    /// Re-queues this transport's event for the next iteration.
    fn schedule(&self, readiness: Readiness) {
        if let Some(key) = self.key.get() {
            self.lp.schedule_io(key, readiness);
        }
    }

    /// [`Transport::with_protocol`]: the protocol is taken out of the cell
    /// for `f`, as for one of its own callbacks (notifications `f` causes
    /// arrive after it returns); a panic in `f` goes back to the caller
    /// once the protocol is back.
    pub(crate) fn with_protocol<P: Any, R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        self.cell.with_protocol(self, f)
    }

    // ----- closing -----

    fn close_impl(&self) {
        if self.replace_flag(CLOSING, true) {
            return;
        }
        if !self.has(HAS_DATA) && !self.has(LOST_SCHEDULED) {
            self.cell.loss_scheduled();
            self.schedule_connection_lost(None);
        }
    }

    #[cold]
    #[inline(never)]
    fn fatal_error(&self, e: io::Error, message: &str) {
        // Connection errors are expected; asyncio only logs them in debug.
        log::debug!("{}: {message}: {e}", TransportImpl::describe(self));
        self.force_close(Some(e));
    }

    /// asyncio's `_force_close`: the buffer is dropped (an empty waiter
    /// then fails: what it waited for will never be sent) and the loss
    /// scheduled.
    fn force_close_impl(&self, exc: Option<io::Error>) {
        if self.has(LOST_SCHEDULED) {
            return;
        }
        if self.has(HAS_DATA) {
            self.clear_buffer();
            self.fail_empty_waiter(Error::ConnectionLost);
        }
        let mut flow = self.flow.get();
        flow.reset();
        self.flow.set(flow);
        self.set_flag(CLOSING, true);
        self.cell.loss_scheduled();
        self.schedule_connection_lost(exc);
    }

    fn schedule_connection_lost(&self, exc: Option<io::Error>) {
        let me = self.me.upgrade().expect("transport alive while used");
        self.lp
            .call_soon_internal(move || me.call_connection_lost(exc));
    }

    /// asyncio's `_call_connection_lost`: deregister, drop the buffer,
    /// then the protocol's last call; the cell calls `after_lost`.
    fn call_connection_lost(&self, exc: Option<io::Error>) {
        if self.has(LOST_DONE) {
            return;
        }
        if let Some(key) = self.key.take() {
            self.lp.deregister_source(key);
            self.lp.transport_closed(&self.bytes.snapshot(0));
        }
        self.clear_buffer();
        self.fail_empty_waiter(Error::ConnectionLost);
        self.cell.lost(self, exc);
    }

    /// A new empty waiter (asyncio's `_make_empty_waiter`), unless one is
    /// alive.
    fn make_empty_waiter(&self) -> Result<EmptyWaiter, Error> {
        let mut slot = self.empty_waiter.borrow_mut();
        if slot.as_ref().is_some_and(|w| Rc::strong_count(w) > 1) {
            return Err(Error::EmptyWaiterAlreadySet);
        }
        let state = Rc::new(WaiterState::default());
        if self.has(LOST_SCHEDULED) {
            state.complete(Err(Error::ConnectionLost));
            *slot = None;
        } else if !self.has(HAS_DATA) {
            state.complete(Ok(()));
            *slot = None;
        } else {
            *slot = Some(state.clone());
        }
        Ok(EmptyWaiter::new(state))
    }

    fn fail_empty_waiter(&self, e: Error) {
        let waiter = self.empty_waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.complete(Err(e));
        }
    }

    /// The buffer just became empty: wake the empty waiter, then finish a
    /// close or a write_eof.
    fn drained(&self) {
        let waiter = self.empty_waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.complete(Ok(()));
        }
        if self.has(CLOSING) {
            if !self.has(LOST_SCHEDULED) {
                self.cell.loss_scheduled();
                self.call_connection_lost(None);
            }
        } else if self.has(EOF) {
            self.shutdown_write();
        }
    }
}

impl Host for SocketTransport {
    fn loop_handle(&self) -> &LoopHandle {
        &self.lp
    }

    fn info(&self) -> TransportInfo {
        TransportImpl::info(self)
    }

    fn force_close(&self, exc: Option<io::Error>) {
        self.force_close_impl(exc);
    }

    fn after_lost(&self) {
        // Close the socket after the protocol saw the loss, as asyncio does.
        let sock = self.sock.close();
        drop(sock);
        let waiter = self.started_waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.complete(Err(Error::ConnectionLost));
        }
        let guard = self.guard.borrow_mut().take();
        drop(guard); // detaches from the server
    }
}

impl IoSource for SocketTransport {
    #[inline]
    fn ready(&self, readiness: Readiness) {
        if readiness.contains(Readiness::HUP) {
            self.set_flag(super::cell::HUP, true);
        }
        if readiness.is_readable() {
            let flags = self.cell.flags.get() | READABLE;
            self.cell.flags.store(flags);
            // The common case in one test: reading may go on, into the
            // shared buffer, with a `Protocol` installed.
            if flags & (STARTED | PAUSED | CLOSING | READ_EOF | BUFFERED | LOST_DONE) == STARTED {
                self.read_into_shared();
            } else if self.can_read() {
                self.read_ready();
            }
        }
        // A sendfile waits for the same edges as a buffer to flush; one
        // test covers both.
        if readiness.is_writable() && self.has(HAS_DATA | SENDFILE) {
            self.write_ready();
        }
    }

    fn is_closing(&self) -> bool {
        self.has(CLOSING)
    }

    fn describe(&self) -> String {
        TransportImpl::describe(self)
    }

    fn transport_info(&self) -> Option<TransportInfo> {
        Some(TransportImpl::info(self))
    }

    fn tally(&self) -> Option<SourceTally> {
        Some(SourceTally::Transport {
            kind: self.transport_kind(),
            stats: TransportImpl::stats(self),
            paused_reading: self.has(PAUSED) && !self.has(CLOSING),
            paused_writing: self.flow.get().is_paused(),
        })
    }

    fn loop_closed(&self) {
        // No callback can run any more: drop the protocol (which may hold
        // this transport), close the socket, detach from the server, each
        // with nothing borrowed.
        if self.key.take().is_some() {
            self.lp.transport_closed(&self.bytes.snapshot(0));
        }
        self.clear_buffer();
        self.fail_empty_waiter(Error::ConnectionLost);
        let protocol = self.cell.loop_closed();
        let sock = self.sock.close();
        let guard = self.guard.borrow_mut().take();
        drop((protocol, sock, guard));
    }
}

impl TransportImpl for SocketTransport {
    #[inline]
    fn write(&self, data: &[u8]) -> Result<(), Error> {
        self.write_impl(data)
    }

    fn writelines(&self, bufs: &[&[u8]]) -> Result<(), Error> {
        self.writelines_impl(bufs)
    }

    fn write_eof(&self) -> Result<(), Error> {
        if self.has(CLOSING) || self.has(EOF) {
            return Ok(());
        }
        if self.has(SENDFILE) {
            return Err(Error::SendfileInProgress);
        }
        self.set_flag(EOF, true);
        if !self.has(HAS_DATA) {
            self.shutdown_write();
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(&self) {
        self.close_impl();
    }

    fn abort(&self) {
        self.force_close_impl(None);
    }

    fn is_closing(&self) -> bool {
        self.has(CLOSING)
    }

    fn pause_reading(&self) {
        if self.has(CLOSING) || self.has(PAUSED) {
            return;
        }
        self.set_flag(PAUSED, true);
        log::debug!("{} pauses reading", TransportImpl::describe(self));
    }

    fn resume_reading(&self) {
        if self.has(CLOSING) || !self.has(PAUSED) {
            return;
        }
        self.set_flag(PAUSED, false);
        // Data that arrived while paused gave its edge already: re-queue.
        if self.has(READABLE) && self.can_read() {
            self.schedule(Readiness::READABLE);
        }
    }

    fn is_reading(&self) -> bool {
        !self.has(CLOSING) && !self.has(PAUSED) && !self.has(READ_EOF)
    }

    fn write_buffer_size(&self) -> usize {
        self.wbuf.borrow().len()
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        self.flow.get().limits()
    }

    fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), Error> {
        let mut flow = self.flow.get();
        flow.set_limits(high, low)?;
        self.flow.set(flow);
        self.maybe_pause();
        Ok(())
    }

    fn set_write_buffer_cap(&self, cap: Option<usize>) {
        self.cap.set(cap.unwrap_or(usize::MAX));
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        self.install(protocol.into());
    }

    fn set_bridge_protocol(&self, protocol: StreamReaderProtocol) {
        self.install(Installed::Bridge(Box::new(protocol)));
    }

    fn empty_waiter(&self) -> Result<EmptyWaiter, Error> {
        if self.has(SENDFILE) {
            return Err(Error::SendfileInProgress);
        }
        self.make_empty_waiter()
    }

    fn native_sendfile(&self) -> Option<&dyn super::SocketSendfile> {
        Some(self)
    }

    fn local_addr(&self) -> Option<Address> {
        let addr = self.sock.with(|s| s.local_addr().ok())??;
        Address::from_sockaddr(&addr)
    }

    fn peer_addr(&self) -> Option<Address> {
        let addr = self.sock.with(|s| s.peer_addr().ok())??;
        Address::from_sockaddr(&addr)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.sock.raw_fd()
    }

    fn with_socket(&self, f: &mut dyn FnMut(&Socket)) {
        // Lent, not borrowed: the closure may close the transport or the
        // loop (D2); the fd stays open until it returns.
        if let Some(s) = self.sock.lend() {
            f(&s);
        }
    }

    fn stats(&self) -> TransportStats {
        let buffered = self.wbuf.try_borrow().map_or(0, |w| w.len());
        self.bytes.snapshot(buffered)
    }

    fn info(&self) -> TransportInfo {
        TransportInfo::new(
            self.transport_kind(),
            TransportImpl::raw_fd(self),
            TransportImpl::local_addr(self),
            TransportImpl::peer_addr(self),
            TransportImpl::describe(self),
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
        let kind = match self.kind {
            Kind::Tcp => "tcp",
            Kind::Unix => "unix",
        };
        format!(
            "<SocketTransport{state} {kind} fd={} read={} write=<bufsize={}{}>>",
            self.fd,
            if self.can_read() { "polling" } else { "idle" },
            self.wbuf.borrow().len(),
            if self.flow.get().is_paused() {
                ", paused"
            } else {
                ""
            }
        )
    }
}

impl fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&TransportImpl::describe(self))
    }
}
