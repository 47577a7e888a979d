//! The protocol cell: how every transport holds, calls and notifies its
//! protocol. Socket and datagram transports use it today; TLS, pipe and
//! subprocess transports are to use it too (docs/design.md D14), so the rules
//! below exist once:
//!
//! - **Taken out while it runs** (D2). A protocol method runs with the
//!   protocol moved out of its slot and `BUSY` set; nothing of the
//!   transport is borrowed, so the method may call any transport method.
//!   `set_protocol` during the call puts the new protocol in the slot and
//!   sets `REPLACED`: the running one is dropped when it returns.
//! - **Held back, then delivered** (D6). A notification that the running
//!   protocol's own call triggers (`pause_writing` from a `write` inside
//!   `data_received`, an `error_received` from a `sendto`), or that comes
//!   before `connection_made`, waits in the cell and is delivered right
//!   after the call returns. A pause and a resume that both came during one
//!   call cancel out, so the protocol sees them strictly alternate.
//! - **A panic is the transport's fatal error** (D8): reported to the
//!   exception handler with asyncio's message ("Fatal error:
//!   protocol.data_received() call failed."), then the transport is
//!   force-closed with the panic as the error. A panic in `pause_writing`,
//!   `resume_writing` or `connection_lost` is reported only, as asyncio
//!   does.
//! - **`connection_lost` exactly once, and last.** After the loss is
//!   scheduled (`LOST_SCHEDULED`) no other notification is delivered; the
//!   loss itself waits if the protocol is running and is delivered when it
//!   returns; the protocol is dropped right after it (which breaks the
//!   protocol → transport → protocol cycle).
//!
//! The cell also owns the transport's state word ([`Flags`]): the cell's
//! bits and the transport's share one `Cell<u32>`, so that a read path
//! tests everything that concerns it in one load. Each bit has one meaning,
//! listed once, below.

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::exception::{panic_message, ExceptionContext, TransportInfo};

// ----- the state bits, one meaning each -----
//
// The low byte holds what the datagram paths test together (`HAS_DATA`
// with `CLOSING` on every `sendto`; `HELD`, `CLOSING`, `PAUSED`,
// `REPLACED` after every datagram read), so each test is one instruction
// on one byte.

/// The protocol is out of its slot, running.
pub(crate) const BUSY: u32 = 1 << 8;
/// `set_protocol` put a new protocol in while the old one ran.
pub(crate) const REPLACED: u32 = 1 << 1;
/// Work waits in the cell for the running call to return: a flow
/// notification, errors for `error_received`, or the loss.
pub(crate) const HELD: u32 = 1 << 2;
/// `connection_lost` is scheduled (asyncio's `_conn_lost` being non-zero):
/// nothing but the loss is delivered any more.
pub(crate) const LOST_SCHEDULED: u32 = 1 << 3;
/// `connection_lost` ran or is being delivered (one-shot, gh-156512).
pub(crate) const LOST_DONE: u32 = 1 << 4;
/// `connection_made` ran: reading may start, notifications go straight to
/// the protocol.
pub(crate) const STARTED: u32 = 1 << 5;
/// `close`, `abort` or a fatal error happened: no more reading, writes are
/// refused.
pub(crate) const CLOSING: u32 = 1 << 6;
/// `pause_reading`.
pub(crate) const PAUSED: u32 = 1 << 7;
/// The fd may have data: an edge came and no read has seen `WouldBlock`.
pub(crate) const READABLE: u32 = 1 << 9;
/// The write buffer (or datagram queue) holds data.
pub(crate) const HAS_DATA: u32 = 1;
/// Stream: the peer sent EOF.
pub(crate) const READ_EOF: u32 = 1 << 10;
/// Stream: the peer hung up or the fd is in error, so a short read proves
/// nothing about the socket being drained.
pub(crate) const HUP: u32 = 1 << 11;
/// Stream: `write_eof` was called.
pub(crate) const EOF: u32 = 1 << 12;
/// Stream: `shutdown(SHUT_WR)` was done.
pub(crate) const EOF_SENT: u32 = 1 << 13;
/// Stream: the installed protocol reads into its own buffer (a
/// `BufferedProtocol` or the stream bridge's protocol).
pub(crate) const BUFFERED: u32 = 1 << 14;
/// Stream: a write went past the hard cap on the buffer (R16).
pub(crate) const CAP_EXCEEDED: u32 = 1 << 15;
/// Datagram: the socket refused a send (`WouldBlock`); the queue waits for
/// a writable edge.
pub(crate) const WRITE_BLOCKED: u32 = 1 << 16;
/// Datagram: a re-queued read is already on the ready list.
pub(crate) const READ_SCHEDULED: u32 = 1 << 17;
/// Stream: a zero-copy sendfile has the socket; writes are refused and a
/// writable edge is the sendfile's.
pub(crate) const SENDFILE: u32 = 1 << 18;

/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`: writes refused after the
/// loss are counted, and from this one on each is logged.
pub(crate) const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

/// A transport's state bits (the constants above) in one `Cell`.
#[derive(Default)]
pub(crate) struct Flags(Cell<u32>);

impl Flags {
    /// All the bits, for a test of several in one load.
    #[inline(always)]
    pub(crate) fn get(&self) -> u32 {
        self.0.get()
    }

    /// Sets all the bits at once (a value from [`get`](Flags::get)).
    #[inline(always)]
    pub(crate) fn store(&self, bits: u32) {
        self.0.set(bits);
    }

    /// Whether any of `bits` is set.
    #[inline(always)]
    pub(crate) fn has(&self, bits: u32) -> bool {
        self.0.get() & bits != 0
    }

    #[inline(always)]
    pub(crate) fn set(&self, bits: u32, on: bool) {
        let v = self.0.get();
        self.0.set(if on { v | bits } else { v & !bits });
    }

    /// Sets `bit` to `on` and returns whether it was set.
    #[inline(always)]
    pub(crate) fn replace(&self, bit: u32, on: bool) -> bool {
        let was = self.has(bit);
        self.set(bit, on);
        was
    }
}

/// The calls a cell makes on its own (all but the read path's).
pub(crate) trait Notified {
    fn pause_writing(&mut self);
    fn resume_writing(&mut self);
    fn connection_lost(&mut self, exc: Option<io::Error>);
    /// Datagram protocols only; a stream protocol never gets one.
    fn error_received(&mut self, exc: io::Error) {
        let _ = exc;
    }
}

impl<P: Notified + ?Sized> Notified for Box<P> {
    fn pause_writing(&mut self) {
        (**self).pause_writing()
    }
    fn resume_writing(&mut self) {
        (**self).resume_writing()
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        (**self).connection_lost(exc)
    }
    fn error_received(&mut self, exc: io::Error) {
        (**self).error_received(exc)
    }
}

/// Where a transport keeps its protocol. A socket transport keeps one
/// `Option<Box<…>>` per protocol kind so that its read path moves a plain
/// box; a datagram transport keeps one box.
pub(crate) trait Slot: Default {
    type Protocol: Notified;
    fn take(&self) -> Option<Self::Protocol>;
    /// Puts `p` in and returns what was there.
    fn replace(&self, p: Self::Protocol) -> Option<Self::Protocol>;
}

/// A protocol the cell can lend by its concrete type (`with_protocol`):
/// its `Any` view, or `None` for one no user can name (the bridge's own).
pub(crate) trait Lendable {
    fn as_any_mut(&mut self) -> Option<&mut dyn Any>;
}

/// What the cell needs from the transport that owns it.
pub(crate) trait Host {
    fn loop_handle(&self) -> &LoopHandle;
    /// The transport as reports describe it (its `Display` is asyncio's
    /// `repr(transport)`).
    fn info(&self) -> TransportInfo;
    /// asyncio's `_force_close`: drop the buffer, schedule the loss.
    fn force_close(&self, exc: Option<io::Error>);
    /// The protocol has seen `connection_lost` (and is dropped): close the
    /// socket, release what the transport holds.
    fn after_lost(&self);
}

/// What a cell holds back besides a flow notification.
#[derive(Default)]
struct Held {
    /// OS errors for `error_received`, in order.
    errors: Vec<io::Error>,
    /// `connection_lost`'s argument, held while the protocol ran.
    lost: Option<Option<io::Error>>,
}

/// A transport's protocol and state: see the [module docs](self).
#[derive(Default)]
pub(crate) struct ProtocolCell<S> {
    pub(crate) flags: Flags,
    /// The protocol; empty while it runs and after `connection_lost`.
    pub(crate) slot: S,
    /// A pause (`true`) or resume (`false`) held back.
    held_flow: Cell<Option<bool>>,
    /// Errors and the loss held back: rare, so boxed (an idle transport
    /// keeps one empty word).
    held: Cell<Option<Box<Held>>>,
    /// Writes refused since the loss, for the warning threshold.
    refused_writes: Cell<u32>,
}

impl<S: Slot> ProtocolCell<S> {
    /// The transports' `with_protocol`: lends the protocol to `f` if it is
    /// a `P`, taken out of the slot as for one of its own callbacks (what
    /// `f` causes is delivered after it returns); a panic in `f` goes back
    /// to the caller once the protocol is back.
    pub(crate) fn with_protocol<P: Any, R>(
        &self,
        host: &impl Host,
        f: impl FnOnce(&mut P) -> R,
    ) -> Option<R>
    where
        S::Protocol: Lendable,
    {
        let mut p = self.slot.take()?;
        self.flags.set(BUSY, true);
        let r = p
            .as_any_mut()
            .and_then(|p| p.downcast_mut::<P>())
            .map(|p| catch_unwind(AssertUnwindSafe(|| f(p))));
        self.flags.set(BUSY, false);
        self.put_back(p);
        self.after_call(host);
        match r? {
            Ok(r) => Some(r),
            Err(payload) => resume_unwind(payload),
        }
    }

    /// Runs `f` on the protocol, taken out of its slot, under
    /// `catch_unwind`; then delivers what was held back. Returns `None` if
    /// the protocol is not there (running further up the stack, or gone)
    /// or panicked.
    #[inline]
    pub(crate) fn call<R>(
        &self,
        host: &impl Host,
        method: &'static str,
        f: impl FnOnce(&mut S::Protocol) -> R,
    ) -> Option<R> {
        let mut p = self.slot.take()?;
        self.flags.set(BUSY, true);
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut p)));
        self.flags.set(BUSY, false);
        self.put_back(p);
        let out = match result {
            Ok(r) => Some(r),
            Err(payload) => {
                self.panicked(host, method, payload);
                None
            }
        };
        self.after_call(host);
        out
    }

    /// Whether a protocol that ran can go back into its slot as it is:
    /// nothing replaced it and the loss was not delivered meanwhile.
    #[inline(always)]
    pub(crate) fn undisturbed(&self) -> bool {
        self.flags.get() & (REPLACED | LOST_DONE) == 0
    }

    /// Puts back a protocol that ran: into its slot, unless it was
    /// replaced (it is dropped) or lost (kept only if the loss waits for
    /// it).
    #[inline(always)]
    pub(crate) fn put_back(&self, p: S::Protocol) {
        if self.undisturbed() {
            // The slot is empty: set_protocol while busy sets REPLACED.
            drop(self.slot.replace(p));
            return;
        }
        self.put_back_disturbed(p);
    }

    #[cold]
    #[inline(never)]
    fn put_back_disturbed(&self, p: S::Protocol) {
        if self.flags.replace(REPLACED, false) {
            return; // the new protocol is in the slot; the old one goes
        }
        if self.lost_held() {
            // Lost while it ran: it still gets connection_lost.
            drop(self.slot.replace(p));
        }
    }

    /// `set_protocol`: the new protocol gets every later call; one that is
    /// running finishes its call first. Ignored once the loss was
    /// delivered.
    pub(crate) fn replace(&self, p: S::Protocol) {
        if self.flags.has(LOST_DONE) && !self.lost_held() {
            return;
        }
        if self.flags.has(BUSY) {
            self.flags.set(REPLACED, true);
        }
        drop(self.slot.replace(p));
    }

    /// Runs `f` on the held-back state, made when first needed (`fill`)
    /// and released when empty again. With nothing held and `fill` false,
    /// `f` sees an empty state that is not kept (no allocation).
    fn with_held<R>(&self, fill: bool, f: impl FnOnce(&mut Held) -> R) -> R {
        let Some(mut held) = self.held.take() else {
            if !fill {
                return f(&mut Held::default());
            }
            let mut held = Box::<Held>::default();
            let r = f(&mut held);
            self.held.set(Some(held));
            return r;
        };
        let r = f(&mut held);
        if !held.errors.is_empty() || held.lost.is_some() {
            self.held.set(Some(held));
        }
        r
    }

    /// Whether `connection_lost` waits for the running protocol.
    fn lost_held(&self) -> bool {
        self.with_held(false, |h| h.lost.is_some())
    }

    /// Whether a notification must wait: the protocol is running, or
    /// `connection_made` has not run yet.
    #[inline]
    fn must_hold(&self) -> bool {
        self.flags.get() & (BUSY | STARTED) != STARTED
    }

    /// `pause_writing` (`true`) or `resume_writing` (`false`): now, or held
    /// back (see the module docs). Dropped once the loss is scheduled.
    pub(crate) fn notify_flow(&self, host: &impl Host, pause: bool) {
        if self.flags.has(LOST_SCHEDULED | LOST_DONE) {
            return;
        }
        if self.must_hold() {
            // Opposite notifications cancel out: the protocol never saw
            // the first, so alternation holds.
            match self.held_flow.get() {
                Some(p) if p != pause => self.held_flow.set(None),
                _ => {
                    self.held_flow.set(Some(pause));
                    self.flags.set(HELD, true);
                }
            }
            return;
        }
        self.deliver_flow(host, pause);
    }

    fn deliver_flow(&self, host: &impl Host, pause: bool) {
        if pause {
            self.call(host, "pause_writing", |p| p.pause_writing());
        } else {
            self.call(host, "resume_writing", |p| p.resume_writing());
        }
    }

    /// An OS error for `error_received` (datagram transports): now, or
    /// held back. Dropped once the loss is scheduled.
    pub(crate) fn notify_error(&self, host: &impl Host, exc: io::Error) {
        if self.flags.has(LOST_SCHEDULED | LOST_DONE) {
            return;
        }
        if self.must_hold() {
            self.with_held(true, |h| h.errors.push(exc));
            self.flags.set(HELD, true);
            return;
        }
        self.call(host, "error_received", |p| p.error_received(exc));
    }

    /// Delivers what was held back, if anything was. Called after every
    /// protocol call, with the protocol back in its slot.
    #[inline(always)]
    pub(crate) fn after_call(&self, host: &impl Host) {
        if self.flags.has(HELD) {
            self.deliver_held(host);
        }
    }

    #[cold]
    #[inline(never)]
    fn deliver_held(&self, host: &impl Host) {
        if self.flags.get() & (BUSY | STARTED) != STARTED {
            return; // still not deliverable: a later call will
        }
        self.flags.set(HELD, false);
        let lost = self.with_held(false, |h| h.lost.take());
        if let Some(exc) = lost {
            return self.deliver_lost(host, exc);
        }
        if self.flags.has(LOST_SCHEDULED | LOST_DONE) {
            self.drop_held();
            return;
        }
        let errors = self.with_held(false, |h| std::mem::take(&mut h.errors));
        for exc in errors {
            self.call(host, "error_received", |p| p.error_received(exc));
        }
        if let Some(pause) = self.held_flow.take() {
            if !self.flags.has(LOST_SCHEDULED | LOST_DONE) {
                self.deliver_flow(host, pause);
            }
        }
    }

    fn drop_held(&self) {
        self.held_flow.set(None);
        let errors = self.with_held(false, |h| std::mem::take(&mut h.errors));
        drop(errors);
    }

    /// The transport's part of `_force_close` that concerns the protocol:
    /// nothing held back is delivered any more.
    pub(crate) fn loss_scheduled(&self) {
        self.flags.set(LOST_SCHEDULED, true);
        self.drop_held();
    }

    /// asyncio's `_call_connection_lost`, the protocol's part: delivers
    /// `connection_lost(exc)` (once; held back while the protocol runs),
    /// drops the protocol, then calls [`Host::after_lost`]. Returns
    /// `false` if the loss was delivered already.
    pub(crate) fn lost(&self, host: &impl Host, exc: Option<io::Error>) -> bool {
        if self.flags.replace(LOST_DONE, true) {
            return false;
        }
        self.flags.set(LOST_SCHEDULED, true);
        self.drop_held();
        if self.flags.has(BUSY) {
            // We got here from inside the protocol: deliver once it returns.
            self.with_held(true, |h| h.lost = Some(exc));
            self.flags.set(HELD, true);
        } else {
            self.deliver_lost(host, exc);
        }
        true
    }

    fn deliver_lost(&self, host: &impl Host, exc: Option<io::Error>) {
        // Delivered even before connection_made ran? No: asyncio's
        // `_protocol_connected`; both are queued in order, so made comes
        // first unless the transport never started.
        if self.flags.has(STARTED) {
            self.call(host, "connection_lost", |p| p.connection_lost(exc));
        }
        drop(self.slot.take());
        host.after_lost();
    }

    /// The loop closed: no callback can run any more. Returns the protocol
    /// for the caller to drop with no borrow held.
    pub(crate) fn loop_closed(&self) -> Option<S::Protocol> {
        self.flags.set(LOST_SCHEDULED | LOST_DONE | CLOSING, true);
        self.drop_held();
        drop(self.held.take());
        self.slot.take()
    }

    /// Reports a panic in `method`; a fatal error of the transport except
    /// in the notifications asyncio only reports.
    #[cold]
    #[inline(never)]
    pub(crate) fn panicked(
        &self,
        host: &impl Host,
        method: &'static str,
        payload: Box<dyn Any + Send>,
    ) {
        let fatal = !matches!(
            method,
            "pause_writing" | "resume_writing" | "connection_lost"
        );
        let message = if fatal {
            format!("Fatal error: protocol.{method}() call failed.")
        } else {
            format!("protocol.{method}() failed")
        };
        let msg = panic_message(&*payload);
        host.loop_handle().handle_panic(
            payload,
            ExceptionContext::new(message)
                .with_transport(host.info())
                .with_protocol("protocol"),
        );
        if fatal {
            host.force_close(Some(io::Error::other(format!(
                "protocol.{method}() panicked: {msg}"
            ))));
        }
    }

    /// A write refused because the transport is closing or lost: counted,
    /// and from the [`LOG_THRESHOLD_FOR_CONNLOST_WRITES`]th on logged, as
    /// asyncio does (it counts the loss itself as the first).
    #[cold]
    #[inline(never)]
    pub(crate) fn refuse_write(&self) -> Error {
        let n = self.refused_writes.get().saturating_add(1);
        self.refused_writes.set(n);
        if n >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            log::warn!("socket.send() raised exception.");
        }
        Error::ConnectionLost
    }
}
