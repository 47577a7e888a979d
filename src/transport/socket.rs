//! The socket transport for TCP and Unix streams: asyncio's
//! `_SelectorTransport` + `_SelectorSocketTransport`.
//!
//! # How it runs
//!
//! The socket is registered once, for reading and writing, edge-triggered
//! (DESIGN.md D3). The transport keeps a `readable` flag: an event sets it,
//! and a `recv` that returns `WouldBlock`, or a short read with no hang-up
//! reported, clears it. Each readiness does one `recv` into the loop's
//! shared read buffer (D5); a full read re-queues the transport
//! (`schedule_io`) instead of looping, so one busy peer cannot starve the
//! others. A paused transport just leaves the flag set; `resume_reading`
//! re-queues it.
//!
//! `write` sends at once when nothing is buffered and buffers only what the
//! kernel did not take, in one contiguous `Vec` with a consumed-prefix
//! offset (no per-connection buffer while idle). The rest goes out on the
//! next writable edge.
//!
//! # State (asyncio's names)
//!
//! - `closing`: `close` or a fatal error happened; no more reading.
//! - `conn_lost`: how many writes were refused after closing, for the
//!   warning threshold; `LOST_SCHEDULED` says `connection_lost` is on its
//!   way (asyncio folds both into `_conn_lost`).
//! - `lost_done`: `connection_lost` ran (one-shot, gh-156512).
//!
//! The protocol is taken out of its slot while it runs (D2); a flow-control
//! notification for a protocol that is out is kept in `pending_flow` and
//! delivered when it returns (D6).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use socket2::Socket;

use super::flow::FlowControl;
use super::{
    clone_io_error, Address, ConnectionGuard, EmptyWaiter, Transport, TransportImpl, TransportRef,
    WaiterState,
};
use crate::error::Error;
use crate::event_loop::{IoKey, IoSource, LoopHandle, Readiness};
use crate::exception::{panic_message, Exception, ExceptionContext};
use crate::protocol::stream_reader::StreamReaderProtocol;
use crate::protocol::{AnyProtocol, BufferedProtocol, Protocol};

/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// The most slices one `sendmsg` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// A buffered chunk is released (not just cleared) above this capacity, so
/// an idle connection does not keep a large buffer.
const KEEP_CAPACITY: usize = 4096;

/// The write buffer: bytes `[head..]` of `data` are still to send.
#[derive(Default)]
struct WriteBuf {
    data: Vec<u8>,
    head: usize,
}

impl WriteBuf {
    fn len(&self) -> usize {
        self.data.len() - self.head
    }
    fn is_empty(&self) -> bool {
        self.head == self.data.len()
    }
    fn pending(&self) -> &[u8] {
        &self.data[self.head..]
    }
    fn push(&mut self, bytes: &[u8]) {
        // Compact before growing when more than half is already sent.
        if self.head > 0 && self.head >= self.data.len() / 2 {
            self.data.drain(..self.head);
            self.head = 0;
        }
        // A write at least as large as what is buffered gets exactly its
        // room: no doubling past a huge payload (M07).
        if bytes.len() > self.data.capacity() - self.data.len() && bytes.len() >= self.data.len() {
            self.data.reserve_exact(bytes.len());
        }
        self.data.extend_from_slice(bytes);
    }
    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.is_empty() {
            self.clear();
        }
    }
    fn clear(&mut self) {
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
        self.head = 0;
    }
}

/// A protocol as the transport holds it: the public kinds, and the
/// bridge's own protocol kept as its concrete type, so that the read path
/// of every [`TransportStream`](crate::TransportStream) calls it directly
/// rather than through a vtable.
pub(crate) enum Installed {
    Stream(Box<dyn Protocol>),
    Buffered(Box<dyn BufferedProtocol>),
    Bridge(Box<StreamReaderProtocol>),
}

impl From<AnyProtocol> for Installed {
    fn from(p: AnyProtocol) -> Installed {
        match p {
            AnyProtocol::Stream(p) => Installed::Stream(p),
            AnyProtocol::Buffered(p) => Installed::Buffered(p),
        }
    }
}

/// Calls the same method on whichever kind is installed.
macro_rules! on_each_kind {
    ($installed:expr, $p:ident => $call:expr) => {
        match $installed {
            Installed::Stream($p) => $call,
            Installed::Buffered($p) => $call,
            Installed::Bridge($p) => $call,
        }
    };
}

impl Installed {
    fn connection_made(&mut self, t: &Transport) {
        on_each_kind!(self, p => p.connection_made(t))
    }
    fn eof_received(&mut self) -> bool {
        on_each_kind!(self, p => p.eof_received())
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        on_each_kind!(self, p => p.connection_lost(exc))
    }
    fn pause_writing(&mut self) {
        on_each_kind!(self, p => p.pause_writing())
    }
    fn resume_writing(&mut self) {
        on_each_kind!(self, p => p.resume_writing())
    }
    /// The protocol as a `BufferedProtocol`, unless it is a `Protocol`.
    fn buffered(&mut self) -> Option<&mut dyn BufferedProtocol> {
        match self {
            Installed::Stream(_) => None,
            Installed::Buffered(p) => Some(p.as_mut()),
            Installed::Bridge(p) => Some(p.as_mut()),
        }
    }
}

/// The transport's protocol slot. It holds one `Option<Box<…>>` per kind
/// (all but one empty) rather than an `Option<Installed>`, so that the read
/// paths move a box out and back: two words, no tag.
#[derive(Default)]
struct ProtocolSlot {
    stream: Cell<Option<Box<dyn Protocol>>>,
    buffered: Cell<Option<Box<dyn BufferedProtocol>>>,
    bridge: Cell<Option<Box<StreamReaderProtocol>>>,
}

impl ProtocolSlot {
    fn take(&self) -> Option<Installed> {
        if let Some(p) = self.stream.take() {
            return Some(Installed::Stream(p));
        }
        if let Some(p) = self.bridge.take() {
            return Some(Installed::Bridge(p));
        }
        self.buffered.take().map(Installed::Buffered)
    }

    /// Puts `p` in and returns what was there.
    fn replace(&self, p: Option<Installed>) -> Option<Installed> {
        let old = self.take();
        match p {
            Some(Installed::Stream(p)) => self.stream.set(Some(p)),
            Some(Installed::Buffered(p)) => self.buffered.set(Some(p)),
            Some(Installed::Bridge(p)) => self.bridge.set(Some(p)),
            None => {}
        }
        old
    }

    fn set(&self, p: Option<Installed>) {
        drop(self.replace(p));
    }
}

/// What kind of stream the socket is (for TCP_NODELAY and descriptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Unix,
}

// State bits of `SocketTransport::flags`.
/// `close`, `abort` or a fatal error happened: no more reading.
const CLOSING: u32 = 1;
/// `connection_lost` ran or is being delivered (one-shot, gh-156512).
const LOST_DONE: u32 = 1 << 1;
/// `write_eof` was called.
const EOF: u32 = 1 << 2;
/// `shutdown(SHUT_WR)` was done.
const EOF_SENT: u32 = 1 << 3;
/// `pause_reading`.
const PAUSED: u32 = 1 << 4;
/// `connection_made` ran: reading may start.
const STARTED: u32 = 1 << 5;
/// The peer sent EOF.
const READ_EOF: u32 = 1 << 6;
/// The fd may have data (an edge came and no read saw `WouldBlock`).
const READABLE: u32 = 1 << 7;
/// The peer hung up or the fd is in error: a short read proves nothing.
const HUP: u32 = 1 << 8;
/// sendfile owns the transport: writes are refused.
const SENDFILE: u32 = 1 << 9;
/// The protocol is out of its slot, running.
const BUSY: u32 = 1 << 10;
/// `set_protocol` put a new protocol in while the old one ran.
const REPLACED: u32 = 1 << 11;
/// The protocol is a `BufferedProtocol`.
const BUFFERED: u32 = 1 << 12;
/// The write buffer holds data.
const HAS_DATA: u32 = 1 << 13;
/// `connection_lost` is scheduled (asyncio's `_conn_lost` being non-zero).
const LOST_SCHEDULED: u32 = 1 << 15;
/// A write went past the hard cap on the buffer (R16).
const CAP_EXCEEDED: u32 = 1 << 16;
/// Held-back work for `after_callback`: a flow notification or the loss.
const PENDING: u32 = 1 << 14;

pub(crate) struct SocketTransport {
    lp: LoopHandle,
    me: Weak<SocketTransport>,
    sock: RefCell<Option<Socket>>,
    fd: RawFd,
    kind: Kind,
    key: Cell<Option<IoKey>>,
    /// Empty while the protocol runs (taken out, D2) or after
    /// connection_lost.
    protocol: ProtocolSlot,
    /// The state bits below (one load for the hot-path checks).
    flags: Cell<u32>,
    /// A pause (`true`) or resume (`false`) for a protocol that was busy.
    pending_flow: Cell<Option<bool>>,
    /// `connection_lost`'s argument, kept while the protocol was busy.
    pending_lost: RefCell<Option<Option<io::Error>>>,
    wbuf: RefCell<WriteBuf>,
    flow: Cell<FlowControl>,
    /// The hard cap on the write buffer (`usize::MAX`: none, as asyncio).
    cap: Cell<usize>,
    conn_lost: Cell<u32>,
    empty_waiter: RefCell<Option<Rc<WaiterState>>>,
    /// Dropped at loss: the owner's hold on this connection (a server's
    /// count of its clients), opaque here.
    guard: RefCell<Option<ConnectionGuard>>,
    started_waiter: RefCell<Option<Rc<WaiterState>>>,
}

impl SocketTransport {
    /// Wraps a connected, non-blocking socket, registers it and queues
    /// `connection_made` (then reading) for the next iteration, as asyncio's
    /// constructor does with `call_soon`. The returned waiter completes
    /// right after `connection_made`.
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
            sock: RefCell::new(Some(sock)),
            fd,
            kind,
            key: Cell::new(None),
            protocol: ProtocolSlot::default(),
            flags: Cell::new(0),
            pending_flow: Cell::new(None),
            pending_lost: RefCell::new(None),
            wbuf: RefCell::new(WriteBuf::default()),
            flow: Cell::new(FlowControl::default()),
            cap: Cell::new(usize::MAX),
            conn_lost: Cell::new(0),
            empty_waiter: RefCell::new(None),
            guard: RefCell::new(guard),
            started_waiter: RefCell::new(Some(started.clone())),
        });
        rc.install(protocol.into());
        match lp.register_source(fd, rc.clone()) {
            Ok(key) => rc.key.set(Some(key)),
            Err(e) => {
                let link = rc.guard.borrow_mut().take();
                rc.protocol.take();
                return Err((e, link));
            }
        }
        let me = rc.clone();
        lp.call_soon_internal(move || me.start());
        Ok((rc, EmptyWaiter { state: started }))
    }

    #[inline]
    fn has(&self, f: u32) -> bool {
        self.flags.get() & f != 0
    }

    #[inline]
    fn set_flag(&self, f: u32, on: bool) {
        let v = self.flags.get();
        self.flags.set(if on { v | f } else { v & !f });
    }

    #[inline]
    fn replace_flag(&self, f: u32, on: bool) -> bool {
        let was = self.has(f);
        self.set_flag(f, on);
        was
    }

    /// `set_protocol`: the new protocol gets every later call; one that is
    /// running finishes its call first.
    fn replace_protocol(&self, protocol: Installed) {
        if self.has(LOST_DONE) && self.pending_lost.borrow().is_none() {
            return;
        }
        if self.has(BUSY) {
            self.set_flag(REPLACED, true);
        }
        self.install(protocol);
    }

    /// Puts `p` in the slot and records its kind.
    fn install(&self, p: Installed) {
        self.set_flag(BUFFERED, !matches!(p, Installed::Stream(_)));
        drop(self.protocol.replace(Some(p)));
    }

    fn handle(&self) -> Transport {
        Transport {
            inner: TransportRef::Socket(self.me.upgrade().expect("transport alive while used")),
        }
    }

    /// `connection_made`, then reading starts (unless paused in it).
    fn start(&self) {
        let t = self.handle();
        self.call_protocol("connection_made", |p| p.connection_made(&t));
        self.set_flag(STARTED, true);
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
        self.flags.get() & (STARTED | PAUSED | CLOSING | READ_EOF) == STARTED
    }

    // ----- calling the protocol -----

    /// Runs `f` on the protocol, taken out of its slot (D2). A panic is a
    /// fatal error of this transport. Returns `None` if there is no
    /// protocol (busy or gone) or it panicked.
    #[inline]
    fn call_protocol<R>(
        &self,
        method: &'static str,
        f: impl FnOnce(&mut Installed) -> R,
    ) -> Option<R> {
        let mut p = self.protocol.take()?;
        self.set_flag(BUSY, true);
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut p)));
        self.set_flag(BUSY, false);
        self.put_back(p);
        let out = match result {
            Ok(r) => Some(r),
            Err(payload) => {
                self.protocol_panicked(method, payload);
                None
            }
        };
        self.after_callback();
        out
    }

    #[inline(always)]
    fn put_back(&self, p: Installed) {
        if self.flags.get() & (REPLACED | LOST_DONE) == 0 {
            // The slot is empty here (set_protocol while busy sets
            // REPLACED), so this drops nothing.
            self.protocol.set(Some(p));
            return;
        }
        if self.replace_flag(REPLACED, false) {
            return; // the new protocol is in the slot; the old one goes
        }
        if self.pending_lost.borrow().is_some() {
            // Lost while it ran: it still gets connection_lost.
            self.protocol.set(Some(p));
        }
    }

    /// [`put_back`](Self::put_back) on a read path, with the protocol's
    /// own slot: when nothing happened while it ran, one store into that
    /// (empty) slot.
    #[inline(always)]
    fn put_back_into<P: ?Sized>(
        &self,
        slot: &Cell<Option<Box<P>>>,
        p: Box<P>,
        installed: impl FnOnce(Box<P>) -> Installed,
    ) {
        if self.flags.get() & (REPLACED | LOST_DONE) == 0 {
            // The slot is empty here: set_protocol while busy sets
            // REPLACED, and nothing else fills it. Nothing to drop, then.
            let old = slot.replace(Some(p));
            debug_assert!(old.is_none());
            std::mem::forget(old);
        } else {
            self.put_back(installed(p));
        }
    }

    /// Delivers what was held back while the protocol ran, if anything was.
    #[inline(always)]
    fn after_callback(&self) {
        if self.has(PENDING) {
            self.deliver_held_back();
        }
    }

    #[cold]
    #[inline(never)]
    fn deliver_held_back(&self) {
        self.set_flag(PENDING, false);
        let lost = self.pending_lost.borrow_mut().take();
        if let Some(lost) = lost {
            self.deliver_lost(lost);
            return;
        }
        if let Some(pause) = self.pending_flow.take() {
            if self.has(LOST_DONE) {
                return;
            }
            if pause {
                self.call_protocol("pause_writing", |p| p.pause_writing());
            } else {
                self.call_protocol("resume_writing", |p| p.resume_writing());
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn protocol_panicked(&self, method: &'static str, payload: Box<dyn std::any::Any + Send>) {
        let msg = panic_message(&*payload);
        match method {
            // asyncio reports these to the handler and does not close.
            "pause_writing" | "resume_writing" | "connection_lost" => {
                self.lp.handle_panic(
                    payload,
                    ExceptionContext::new(format!("protocol.{method}() failed"))
                        .with_transport(TransportImpl::describe(self))
                        .with_protocol("protocol"),
                );
            }
            _ => {
                self.lp.handle_panic(
                    payload,
                    ExceptionContext::new(format!("Fatal error: protocol.{method}() call failed."))
                        .with_transport(TransportImpl::describe(self))
                        .with_protocol("protocol"),
                );
                self.force_close(Some(io::Error::other(format!(
                    "protocol.{method}() panicked: {msg}"
                ))));
            }
        }
    }

    fn notify_flow(&self, pause: bool) {
        if self.has(LOST_DONE) {
            return;
        }
        if self.has(BUSY) {
            // Opposite notifications cancel out: the protocol never saw the
            // first, so alternation holds.
            match self.pending_flow.get() {
                Some(p) if p != pause => self.pending_flow.set(None),
                _ => {
                    self.pending_flow.set(Some(pause));
                    self.set_flag(PENDING, true);
                }
            }
            return;
        }
        if pause {
            self.call_protocol("pause_writing", |p| p.pause_writing());
        } else {
            self.call_protocol("resume_writing", |p| p.resume_writing());
        }
    }

    fn maybe_pause(&self) {
        let mut flow = self.flow.get();
        let pause = flow.should_pause(self.wbuf.borrow().len());
        self.flow.set(flow);
        if pause {
            self.notify_flow(true);
        }
    }

    fn maybe_resume(&self) {
        let mut flow = self.flow.get();
        let resume = flow.should_resume(self.wbuf.borrow().len());
        self.flow.set(flow);
        if resume {
            self.notify_flow(false);
        }
    }

    // ----- reading -----

    #[inline(always)]
    fn read_ready(&self) {
        if self.has(BUFFERED) {
            self.read_into_protocol();
        } else {
            self.read_into_shared();
        }
    }

    /// What to do after a successful read of `n` bytes into `cap`.
    fn after_read(&self, n: usize, cap: usize) {
        if n < cap && !self.has(HUP) {
            // A short read drained the socket; the next arrival is a new edge.
            self.set_flag(READABLE, false);
        }
        if self.has(READABLE) && self.can_read() {
            if let Some(key) = self.key.get() {
                self.lp.schedule_io(key, Readiness::READABLE);
            }
        }
    }

    /// One `recv` into the loop's shared buffer (D5), handed to
    /// `data_received`. The hot path of every stream transport: the buffer
    /// and the protocol are each taken out and put back once, with nothing
    /// borrowed while the protocol runs (D2).
    #[inline(always)]
    fn read_into_shared(&self) {
        if self.has(LOST_DONE) {
            return;
        }
        let mut buf = self.lp.take_read_buffer();
        let cap = buf.len();
        let n = match crate::sys::recv(self.fd, &mut buf) {
            Ok(n) if n > 0 => n.min(cap),
            res => {
                self.lp.restore_read_buffer(buf);
                return self.read_failed(res);
            }
        };
        let Some(mut p) = self.protocol.stream.take() else {
            return self.deliver_to_other(buf, n, cap);
        };
        self.set_flag(BUSY, true);
        let data = &buf[..n];
        let result = catch_unwind(AssertUnwindSafe(|| p.data_received(data)));
        self.set_flag(BUSY, false);
        self.put_back_into(&self.protocol.stream, p, Installed::Stream);
        self.finish_read(buf, n, cap, result);
    }

    /// What follows a read into the shared buffer, once the protocol ran.
    #[inline(always)]
    fn finish_read(&self, buf: Box<[u8]>, n: usize, cap: usize, result: std::thread::Result<()>) {
        self.lp.restore_read_buffer(buf);
        if let Err(payload) = result {
            self.protocol_panicked("data_received", payload);
        }
        self.after_callback();
        self.after_read(n, cap);
    }

    /// Bytes read into the shared buffer with no `Protocol` in the slot: a
    /// `BufferedProtocol` took its place (set_protocol switched kinds since
    /// the read began) and is fed by copy, or the protocol is running (a
    /// nested read) or gone and the bytes are dropped.
    #[cold]
    #[inline(never)]
    fn deliver_to_other(&self, buf: Box<[u8]>, n: usize, cap: usize) {
        let Some(mut p) = self.protocol.take() else {
            self.lp.restore_read_buffer(buf);
            return self.after_read(n, cap);
        };
        self.set_flag(BUSY, true);
        let data = &buf[..n];
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Some(bp) = p.buffered() {
                feed_buffered(bp, data);
            }
        }));
        self.set_flag(BUSY, false);
        self.put_back(p);
        self.finish_read(buf, n, cap, result);
    }

    /// A `recv` that returned EOF or an error.
    #[cold]
    #[inline(never)]
    fn read_failed(&self, res: io::Result<usize>) {
        match res {
            Ok(_) => self.on_eof(),
            Err(e) => self.read_error(e),
        }
    }

    /// One `recv` straight into a `BufferedProtocol`'s memory: `get_buffer`,
    /// the `recv`, and `buffer_updated`, all under one take of the protocol
    /// (D2). If `get_buffer` did something the transport must act on first
    /// (replaced the protocol, queued a flow notification or the loss), the
    /// protocol goes back and `buffer_updated` is a call of its own after
    /// that work, as with separate calls.
    #[inline(never)]
    fn read_into_protocol(&self) {
        if self.has(LOST_DONE) {
            return;
        }
        if let Some(bp) = self.protocol.bridge.take() {
            return self.read_into_buffered(bp, &self.protocol.bridge, Installed::Bridge);
        }
        if let Some(bp) = self.protocol.buffered.take() {
            return self.read_into_buffered(bp, &self.protocol.buffered, Installed::Buffered);
        }
        // A Protocol took its place (set_protocol), or the protocol is
        // running or gone.
        let stream = self.protocol.stream.take();
        let is_stream = stream.is_some();
        self.protocol.stream.set(stream);
        if is_stream {
            self.read_into_shared();
        }
    }

    /// One read into a buffered protocol's own buffer, taken out of `slot`
    /// (D2) and put back there. Generic so the bridge's protocol is called
    /// directly.
    #[inline(always)]
    fn read_into_buffered<P: BufferedProtocol + ?Sized>(
        &self,
        mut bp: Box<P>,
        slot: &Cell<Option<Box<P>>>,
        installed: impl FnOnce(Box<P>) -> Installed,
    ) {
        self.set_flag(BUSY, true);
        let (fd, flags) = (self.fd, &self.flags);
        let mut cap = 0;
        // Whether buffer_updated was called (in the same take).
        let mut updated = false;
        let step = catch_unwind(AssertUnwindSafe(|| {
            let buf = bp.get_buffer(0);
            cap = buf.len();
            if cap == 0 {
                return Ok(0);
            }
            let n = crate::sys::recv(fd, buf)?;
            if n > 0 && flags.get() & (REPLACED | LOST_DONE | PENDING) == 0 {
                updated = true;
                bp.buffer_updated(n.min(cap));
            }
            Ok(n)
        }));
        self.set_flag(BUSY, false);
        self.put_back_into(slot, bp, installed);
        if let (true, Ok(Ok(n))) = (updated, &step) {
            self.after_callback();
            return self.after_read((*n).min(cap), cap);
        }
        self.read_into_protocol_slow(step, cap, updated);
    }

    /// The rest of `read_into_protocol` when `buffer_updated` did not run
    /// (or panicked) under the first take: EOF, an error, a panic, an empty
    /// buffer, or work that `get_buffer` queued.
    #[cold]
    #[inline(never)]
    fn read_into_protocol_slow(
        &self,
        step: std::thread::Result<io::Result<usize>>,
        cap: usize,
        updated: bool,
    ) {
        let n = match step {
            Err(payload) => {
                let method = if updated {
                    "buffer_updated"
                } else {
                    "get_buffer"
                };
                self.protocol_panicked(method, payload);
                self.after_callback();
                return;
            }
            Ok(_) if cap == 0 => {
                let e = io::Error::other(Error::EmptyBuffer);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Fatal error: protocol.get_buffer() call failed.")
                        .with_exception(Exception::Io(clone_io_error(&e)))
                        .with_transport(TransportImpl::describe(self)),
                );
                return self.force_close(Some(e));
            }
            Ok(Err(e)) => {
                self.after_callback();
                return self.read_error(e);
            }
            Ok(Ok(n)) => n.min(cap),
        };
        self.after_callback();
        if n == 0 {
            return self.on_eof();
        }
        self.call_protocol("buffer_updated", |p| {
            // A Protocol that replaced it inside get_buffer: the bytes are
            // in the old protocol's buffer and cannot be handed on.
            if let Some(p) = p.buffered() {
                p.buffer_updated(n);
            }
        });
        self.after_read(n, cap);
    }

    #[cold]
    #[inline(never)]
    fn read_error(&self, e: io::Error) {
        match e.kind() {
            io::ErrorKind::WouldBlock => self.set_flag(READABLE, false),
            io::ErrorKind::Interrupted => {
                if let Some(key) = self.key.get() {
                    self.lp.schedule_io(key, Readiness::READABLE);
                }
            }
            _ => self.fatal_error(e, "Fatal read error on socket transport"),
        }
    }

    #[cold]
    #[inline(never)]
    fn on_eof(&self) {
        self.set_flag(READ_EOF, true);
        self.set_flag(READABLE, false);
        log::debug!("{} received EOF", TransportImpl::describe(self));
        let keep_open = self.call_protocol("eof_received", |p| p.eof_received());
        match keep_open {
            Some(true) => {}
            Some(false) => self.close_impl(),
            None => {} // panicked (fatal already) or no protocol
        }
    }

    // ----- writing -----

    /// asyncio's order of checks: after write_eof, during sendfile, empty
    /// data (a no-op: `Ok(false)`), closing or lost (refused and counted).
    fn check_write(&self, empty: bool) -> Result<bool, Error> {
        if self.has(EOF) {
            return Err(Error::WriteAfterEof);
        }
        if self.has(SENDFILE) {
            return Err(Error::SendfileInProgress);
        }
        if empty {
            return Ok(false);
        }
        if self.has(CLOSING) {
            let n = self.conn_lost.get();
            if n >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                log::warn!("socket.send() raised exception.");
            }
            self.conn_lost.set(n + 1);
            return Err(Error::ConnectionLost);
        }
        Ok(true)
    }

    /// `send` with `MSG_NOSIGNAL`. The fd is ours until `LOST_DONE`
    /// (the socket is closed only after that flag is set).
    #[inline]
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        if self.has(LOST_DONE) {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        crate::sys::send(self.fd, data)
    }

    /// Buffers `rest` (what the kernel did not take) and applies flow control.
    #[cold]
    #[inline(never)]
    fn buffer(&self, parts: &[&[u8]]) {
        let adding: usize = parts.iter().map(|p| p.len()).sum();
        if self.wbuf.borrow().len().saturating_add(adding) > self.cap.get() {
            // A writer that ignores pause_writing: fail the transport rather
            // than grow without bound.
            self.set_flag(CAP_EXCEEDED, true);
            self.force_close(Some(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "write buffer cap exceeded",
            )));
            return;
        }
        {
            let mut w = self.wbuf.borrow_mut();
            for p in parts {
                w.push(p);
            }
            self.set_flag(HAS_DATA, !w.is_empty());
        }
        self.maybe_pause();
    }

    /// What a write that buffered returns: `Ok`, or the cap error.
    fn write_result(&self) -> Result<(), Error> {
        if self.has(CAP_EXCEEDED) {
            Err(Error::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "write buffer cap exceeded",
            )))
        } else {
            Ok(())
        }
    }

    /// Sets the hard cap (see [`Transport::set_write_buffer_cap`]).
    pub(crate) fn set_cap(&self, cap: Option<usize>) {
        self.cap.set(cap.unwrap_or(usize::MAX));
    }

    #[cold]
    #[inline(never)]
    fn write_slow(&self, data: &[u8]) -> Result<(), Error> {
        if !self.check_write(data.is_empty())? {
            return Ok(());
        }
        if !self.has(HAS_DATA) {
            // Try to send now: the common case never touches the buffer.
            match self.send(data) {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(n) => self.buffer_after_short_send(&[&data[n..]]),
                Err(e) if is_retry(&e) => self.buffer(&[data]),
                Err(e) => {
                    self.fatal_error(e, "Fatal write error on socket transport");
                    return Err(Error::ConnectionLost);
                }
            }
        } else {
            self.buffer(&[data]);
        }
        self.write_result()
    }

    /// The fast path's send did not take everything: buffer the rest, or
    /// on an error go the slow way (which tries once more, then buffers or
    /// fails the transport).
    #[cold]
    #[inline(never)]
    fn write_after_send(&self, data: &[u8], res: io::Result<usize>) -> Result<(), Error> {
        match res {
            Ok(n) => {
                self.buffer_after_short_send(&[&data[n..]]);
                self.write_result()
            }
            Err(_) => self.write_slow(data),
        }
    }

    /// A send was short: buffer the rest and keep sending until the kernel
    /// says `WouldBlock`, so that a writable edge is sure to follow.
    #[cold]
    #[inline(never)]
    fn buffer_after_short_send(&self, rest: &[&[u8]]) {
        self.buffer(rest);
        if let Err(e) = self.flush() {
            self.clear_buffer();
            self.fatal_error(e, "Fatal write error on socket transport");
        } else if !self.has(HAS_DATA) {
            // Unlikely: it all went after all.
            self.maybe_resume();
        }
    }

    fn clear_buffer(&self) {
        self.wbuf.borrow_mut().clear();
        self.set_flag(HAS_DATA, false);
    }

    /// Sends from the buffer until it is empty or the kernel says
    /// `WouldBlock`. Stopping at a short send is not enough: the kernel
    /// does not always announce free space after one (seen on loopback
    /// with a small `SO_SNDBUF`), only after a send that found none.
    /// Returns whether the kernel may still take more (no `WouldBlock`).
    fn flush(&self) -> io::Result<bool> {
        loop {
            let res = {
                let w = self.wbuf.borrow();
                if w.is_empty() {
                    return Ok(true);
                }
                self.send(w.pending())
            };
            match res {
                Ok(n) => {
                    let mut w = self.wbuf.borrow_mut();
                    w.consume(n);
                    self.set_flag(HAS_DATA, !w.is_empty());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    fn write_ready(&self) {
        if self.has(LOST_SCHEDULED) || !self.has(HAS_DATA) {
            return;
        }
        let more = match self.flush() {
            Ok(more) => more,
            Err(e) => {
                self.clear_buffer();
                self.fail_empty_waiter(Error::Io(clone_io_error(&e)));
                return self.fatal_error(e, "Fatal write error on socket transport");
            }
        };
        self.maybe_resume();
        if !self.has(HAS_DATA) {
            self.drained();
        } else if more {
            // resume_writing wrote more after the kernel took everything:
            // no writable edge will come. Flush in the next iteration.
            if let Some(key) = self.key.get() {
                self.lp.schedule_io(key, Readiness::WRITABLE);
            }
        }
    }

    /// The buffer just became empty: wake the empty waiter, then finish a
    /// close or a write_eof.
    fn drained(&self) {
        if let Some(w) = self.empty_waiter.borrow_mut().take() {
            w.complete(Ok(()));
        }
        if self.has(CLOSING) {
            if !self.replace_flag(LOST_SCHEDULED, true) {
                self.call_connection_lost(None);
            }
        } else if self.has(EOF) {
            self.shutdown_write();
        }
    }

    fn shutdown_write(&self) {
        if self.replace_flag(EOF_SENT, true) {
            return;
        }
        if let Some(s) = &*self.sock.borrow() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }

    fn fail_empty_waiter(&self, e: Error) {
        if let Some(w) = self.empty_waiter.borrow_mut().take() {
            w.complete(Err(e));
        }
    }

    // ----- closing -----

    fn close_impl(&self) {
        if self.replace_flag(CLOSING, true) {
            return;
        }
        if !self.has(HAS_DATA) && !self.replace_flag(LOST_SCHEDULED, true) {
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

    fn force_close(&self, exc: Option<io::Error>) {
        if self.has(LOST_SCHEDULED) {
            return;
        }
        if self.has(HAS_DATA) {
            self.clear_buffer();
        }
        let mut flow = self.flow.get();
        flow.reset();
        self.flow.set(flow);
        self.pending_flow.set(None);
        self.set_flag(CLOSING | LOST_SCHEDULED, true);
        self.schedule_connection_lost(exc);
    }

    fn schedule_connection_lost(&self, exc: Option<io::Error>) {
        let me = self.me.upgrade().expect("transport alive while used");
        self.lp
            .call_soon_internal(move || me.call_connection_lost(exc));
    }

    fn call_connection_lost(&self, exc: Option<io::Error>) {
        if self.replace_flag(LOST_DONE, true) {
            return;
        }
        if let Some(key) = self.key.take() {
            self.lp.deregister_source(key);
        }
        self.clear_buffer();
        self.fail_empty_waiter(Error::ConnectionLost);
        if self.has(BUSY) {
            // The protocol is running (we got here from inside it): deliver
            // once it returns.
            *self.pending_lost.borrow_mut() = Some(exc);
            self.set_flag(PENDING, true);
        } else {
            self.deliver_lost(exc);
        }
    }

    fn deliver_lost(&self, exc: Option<io::Error>) {
        // Only if connection_made ran (asyncio's `_protocol_connected`):
        // `start` always runs before this, since both are queued in order.
        self.call_protocol("connection_lost", |p| p.connection_lost(exc));
        drop(self.protocol.take());
        // Close the socket after the protocol saw the loss, as asyncio does.
        self.sock.borrow_mut().take();
        if let Some(w) = self.started_waiter.borrow_mut().take() {
            w.complete(Err(Error::ConnectionLost));
        }
        let link = self.guard.borrow_mut().take();
        drop(link); // detaches from the server
    }

    /// For the sendfile path (D10): writes are refused while set.
    #[allow(dead_code)]
    pub(crate) fn set_sendfile_in_progress(&self, on: bool) {
        self.set_flag(SENDFILE, on);
    }
}

/// Feeds `data` to a buffered protocol through get_buffer/buffer_updated
/// (asyncio's `_feed_data_to_buffered_proto`).
pub(crate) fn feed_buffered(p: &mut dyn crate::protocol::BufferedProtocol, mut data: &[u8]) {
    while !data.is_empty() {
        let buf = p.get_buffer(data.len());
        assert!(!buf.is_empty(), "get_buffer() returned an empty buffer");
        let n = buf.len().min(data.len());
        buf[..n].copy_from_slice(&data[..n]);
        p.buffer_updated(n);
        data = &data[n..];
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl IoSource for SocketTransport {
    #[inline]
    fn ready(&self, readiness: Readiness) {
        if readiness.contains(Readiness::HUP) {
            self.set_flag(HUP, true);
        }
        if readiness.is_readable() {
            let flags = self.flags.get() | READABLE;
            self.flags.set(flags);
            // The common case in one test: reading may go on, into the
            // shared buffer, with the protocol in its slot.
            if flags & (STARTED | PAUSED | CLOSING | READ_EOF | BUFFERED | LOST_DONE) == STARTED {
                self.read_into_shared();
            } else if self.can_read() {
                self.read_ready();
            }
        }
        if readiness.is_writable() && self.has(HAS_DATA) {
            self.write_ready();
        }
    }

    fn is_closing(&self) -> bool {
        self.has(CLOSING)
    }

    fn describe(&self) -> String {
        TransportImpl::describe(self)
    }

    fn loop_closed(&self) {
        // No callback can run any more: drop the protocol (which may hold
        // this transport), close the socket, detach from the server.
        self.set_flag(LOST_DONE, true);
        self.key.take();
        self.clear_buffer();
        let protocol = self.protocol.take();
        let sock = self.sock.borrow_mut().take();
        let link = self.guard.borrow_mut().take();
        drop((protocol, sock, link));
    }
}

impl TransportImpl for SocketTransport {
    #[inline]
    fn write(&self, data: &[u8]) -> Result<(), Error> {
        // Fast path: open, nothing buffered, the kernel takes it all. Any
        // other outcome is handled out of line, so this path saves few
        // registers.
        if self.flags.get() & (EOF | SENDFILE | CLOSING | HAS_DATA | LOST_DONE) == 0
            && !data.is_empty()
        {
            let res = crate::sys::send(self.fd, data);
            if matches!(res, Ok(n) if n == data.len()) {
                return Ok(());
            }
            return self.write_after_send(data, res);
        }
        self.write_slow(data)
    }

    fn writelines(&self, bufs: &[&[u8]]) -> Result<(), Error> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.check_write(total == 0)? {
            return Ok(());
        }
        if self.has(HAS_DATA) {
            self.buffer(bufs);
            return self.write_result();
        }
        // One vectored send (empty slices skipped, clamped to IOV_MAX).
        let slices: Vec<IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .take(IOV_MAX)
            .map(|b| IoSlice::new(b))
            .collect();
        let res = match &*self.sock.borrow() {
            Some(s) => s.send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        };
        let mut sent = match res {
            Ok(n) => n,
            Err(e) if is_retry(&e) => 0,
            Err(e) => {
                self.fatal_error(e, "Fatal write error on socket transport");
                return Err(Error::ConnectionLost);
            }
        };
        if sent == total {
            return Ok(());
        }
        let sent_any = sent > 0;
        let mut rest: Vec<&[u8]> = Vec::new();
        for b in bufs {
            if sent >= b.len() {
                sent -= b.len();
            } else {
                rest.push(&b[sent..]);
                sent = 0;
            }
        }
        if sent_any {
            self.buffer_after_short_send(&rest);
        } else {
            self.buffer(&rest);
        }
        self.write_result()
    }

    fn write_eof(&self) -> Result<(), Error> {
        if self.has(CLOSING) || self.has(EOF) {
            return Ok(());
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
        self.force_close(None);
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
            if let Some(key) = self.key.get() {
                self.lp.schedule_io(key, Readiness::READABLE);
            }
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
        self.set_cap(cap);
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        self.replace_protocol(protocol.into());
    }

    fn set_bridge_protocol(&self, protocol: StreamReaderProtocol) {
        self.replace_protocol(Installed::Bridge(Box::new(protocol)));
    }

    fn empty_waiter(&self) -> Result<EmptyWaiter, Error> {
        let mut slot = self.empty_waiter.borrow_mut();
        if let Some(w) = &*slot {
            if Rc::strong_count(w) > 1 {
                return Err(Error::EmptyWaiterAlreadySet);
            }
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
        Ok(EmptyWaiter { state })
    }

    fn local_addr(&self) -> Option<Address> {
        let sock = self.sock.borrow();
        Address::from_sockaddr(&sock.as_ref()?.local_addr().ok()?)
    }

    fn peer_addr(&self) -> Option<Address> {
        let sock = self.sock.borrow();
        Address::from_sockaddr(&sock.as_ref()?.peer_addr().ok()?)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.sock.borrow().as_ref().map(|s| s.as_raw_fd())
    }

    fn with_socket(&self, f: &mut dyn FnMut(&Socket)) {
        if let Some(s) = &*self.sock.borrow() {
            f(s);
        }
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
