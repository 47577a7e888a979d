//! The socket transport's read paths: one `recv` per readiness, into the
//! loop's shared buffer for a `Protocol` (D5), into the protocol's own
//! memory for a `BufferedProtocol` or the stream bridge, and what follows
//! a read (EOF, errors, re-queueing).
//!
//! These are the hot paths of every stream: each moves the protocol out of
//! its slot and back once, with nothing borrowed while it runs (D2), and
//! leaves the rare cases (a protocol replaced or lost meanwhile, a panic,
//! held-back notifications) to the cell, out of line.

use std::cell::Cell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::slot::{feed_buffered, Installed};
use super::SocketTransport;
use crate::error::Error;
use crate::event_loop::Readiness;
use crate::exception::{Exception, ExceptionContext};
use crate::protocol::LendsBuffer;
use crate::transport::cell::{Host, BUFFERED, HELD, HUP, LOST_DONE, READABLE, READ_EOF, REPLACED};
use crate::transport::{clone_io_error, TransportImpl};

impl SocketTransport {
    #[inline(always)]
    pub(super) fn read_ready(&self) {
        if self.has(BUFFERED) {
            self.read_into_protocol();
        } else {
            self.read_into_shared();
        }
    }

    /// Puts back a protocol that ran, into `slot` (its own kind's): when
    /// nothing happened while it ran, one store into that empty slot.
    #[inline(always)]
    fn put_back_into<P: ?Sized>(
        &self,
        slot: &Cell<Option<Box<P>>>,
        p: Box<P>,
        installed: impl FnOnce(Box<P>) -> Installed,
    ) {
        if self.cell.undisturbed() {
            // The slot is empty here: set_protocol while busy sets
            // REPLACED, and nothing else fills it. Nothing to drop, then.
            let old = slot.replace(Some(p));
            debug_assert!(old.is_none());
            std::mem::forget(old);
        } else {
            self.cell.put_back(installed(p));
        }
    }

    /// What to do after a successful read of `n` bytes into `cap`.
    fn after_read(&self, n: usize, cap: usize) {
        if n < cap && !self.has(HUP) {
            // A short read drained the socket; the next arrival is a new edge.
            self.set_flag(READABLE, false);
        }
        if self.has(READABLE) && self.can_read() {
            self.schedule(Readiness::READABLE);
        }
    }

    /// One `recv` into the loop's shared buffer (D5), handed to
    /// `data_received`. The hot path of every callback protocol: the buffer
    /// and the protocol are each taken out and put back once.
    #[inline(always)]
    pub(super) fn read_into_shared(&self) {
        if self.has(LOST_DONE) {
            return;
        }
        let mut buf = self.lp.take_read_buffer();
        let cap = buf.len();
        let n = match self.sock.recv(&mut buf) {
            Ok(n) if n > 0 => {
                self.bytes.received(n);
                n.min(cap)
            }
            res => {
                self.lp.restore_read_buffer(buf);
                return self.read_failed(res);
            }
        };
        let Some(mut p) = self.cell.slot.stream.take() else {
            return self.deliver_to_other(buf, n, cap);
        };
        self.set_flag(crate::transport::cell::BUSY, true);
        let data = &buf[..n];
        let result = catch_unwind(AssertUnwindSafe(|| p.data_received(data)));
        self.set_flag(crate::transport::cell::BUSY, false);
        self.put_back_into(&self.cell.slot.stream, p, Installed::Stream);
        self.finish_read(buf, n, cap, result);
    }

    /// What follows a read into the shared buffer, once the protocol ran.
    #[inline(always)]
    fn finish_read(&self, buf: Box<[u8]>, n: usize, cap: usize, result: std::thread::Result<()>) {
        self.lp.restore_read_buffer(buf);
        if let Err(payload) = result {
            self.cell.panicked(self, "data_received", payload);
        }
        self.cell.after_call(self);
        self.after_read(n, cap);
    }

    /// Bytes read into the shared buffer with no `Protocol` in the slot: a
    /// `BufferedProtocol` took its place (set_protocol switched kinds since
    /// the read began) and is fed by copy, or the protocol is running (a
    /// nested read) or gone and the bytes are dropped.
    #[cold]
    #[inline(never)]
    fn deliver_to_other(&self, buf: Box<[u8]>, n: usize, cap: usize) {
        let data = &buf[..n];
        let fed = self
            .cell
            .call(self, "buffer_updated", |p| match p.buffered() {
                Some(bp) => feed_buffered(bp, data),
                None => true,
            });
        self.lp.restore_read_buffer(buf);
        if fed == Some(false) {
            return self.empty_buffer();
        }
        self.after_read(n, cap);
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
    pub(super) fn read_into_protocol(&self) {
        if self.has(LOST_DONE) {
            return;
        }
        let slot = &self.cell.slot;
        if let Some(bp) = slot.bridge.take() {
            return self.read_into_buffered(bp, &slot.bridge, Installed::Bridge);
        }
        if let Some(bp) = slot.buffered.take() {
            return self.read_into_buffered(bp, &slot.buffered, Installed::Buffered);
        }
        // A Protocol took its place (set_protocol), or the protocol is
        // running or gone.
        let stream = slot.stream.take();
        let is_stream = stream.is_some();
        slot.stream.set(stream);
        if is_stream {
            self.read_into_shared();
        }
    }

    /// One read into a buffered protocol's own buffer, taken out of `slot`
    /// (D2) and put back there. Generic so the bridge's protocol is called
    /// directly.
    #[inline(always)]
    fn read_into_buffered<P: LendsBuffer + ?Sized>(
        &self,
        mut bp: Box<P>,
        slot: &Cell<Option<Box<P>>>,
        installed: impl FnOnce(Box<P>) -> Installed,
    ) {
        use crate::transport::cell::BUSY;
        self.set_flag(BUSY, true);
        let flags = &self.cell.flags;
        let mut cap = 0;
        // Whether buffer_updated was called (in the same take).
        let mut updated = false;
        let step = catch_unwind(AssertUnwindSafe(|| {
            let buf = bp.get_buffer(0);
            cap = buf.len();
            if cap == 0 {
                return Ok(0);
            }
            let n = match self.sock.recv(buf) {
                Ok(n) => n,
                Err(e) => {
                    bp.nothing_read();
                    return Err(e);
                }
            };
            if n > 0 && flags.get() & (REPLACED | LOST_DONE | HELD) == 0 {
                updated = true;
                bp.buffer_updated(n.min(cap));
            }
            Ok(n)
        }));
        self.set_flag(BUSY, false);
        self.put_back_into(slot, bp, installed);
        if let (true, Ok(Ok(n))) = (updated, &step) {
            self.bytes.received(*n);
            self.cell.after_call(self);
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
                self.cell.panicked(self, method, payload);
                self.cell.after_call(self);
                return;
            }
            Ok(_) if cap == 0 => return self.empty_buffer(),
            Ok(Err(e)) => {
                self.cell.after_call(self);
                return self.read_error(e);
            }
            Ok(Ok(n)) => n.min(cap),
        };
        self.bytes.received(n);
        self.cell.after_call(self);
        if n == 0 {
            return self.on_eof();
        }
        self.cell.call(self, "buffer_updated", |p| {
            // A Protocol that replaced it inside get_buffer: the bytes are
            // in the old protocol's buffer and cannot be handed on.
            if let Some(p) = p.buffered() {
                p.buffer_updated(n);
            }
        });
        self.after_read(n, cap);
    }

    /// `get_buffer` returned an empty buffer: a fatal error (asyncio's
    /// "get_buffer() returned an empty buffer").
    #[cold]
    #[inline(never)]
    fn empty_buffer(&self) {
        let e = io::Error::from(Error::EmptyBuffer);
        self.lp.call_exception_handler(
            ExceptionContext::new("Fatal error: protocol.get_buffer() call failed.")
                .with_exception(Exception::Io(clone_io_error(&e)))
                .with_transport(TransportImpl::info(self)),
        );
        self.force_close(Some(e));
    }

    #[cold]
    #[inline(never)]
    fn read_error(&self, e: io::Error) {
        match e.kind() {
            io::ErrorKind::WouldBlock => self.set_flag(READABLE, false),
            io::ErrorKind::Interrupted => self.schedule(Readiness::READABLE),
            _ => self.fatal_error(e, "Fatal read error on socket transport"),
        }
    }

    #[cold]
    #[inline(never)]
    fn on_eof(&self) {
        self.set_flag(READ_EOF, true);
        self.set_flag(READABLE, false);
        log::debug!("{} received EOF", TransportImpl::describe(self));
        let keep_open = self.cell.call(self, "eof_received", |p| p.eof_received());
        match keep_open {
            Some(true) => {}
            Some(false) => self.close_impl(),
            None => {} // panicked (fatal already) or no protocol
        }
    }
}
