//! The socket transport's write paths: `write` and `writelines` send at
//! once when nothing is buffered (asyncio's "try to send now"), buffer what
//! the kernel did not take, and flush on writable edges; flow control
//! (`FlowControl`) raises `pause_writing`/`resume_writing` through the
//! cell.

use std::io::{self, IoSlice};

use super::{closed_error, SocketTransport};
use crate::error::Error;
use crate::event_loop::Readiness;
use crate::transport::cell::{
    Host, CAP_EXCEEDED, CLOSING, EOF, EOF_SENT, HAS_DATA, LOST_DONE, LOST_SCHEDULED, SENDFILE,
};
use crate::transport::clone_io_error;

/// The most slices one `sendmsg` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl SocketTransport {
    /// `write`. Fast path: open, nothing buffered, no sendfile, the kernel
    /// takes it all. Any other outcome is handled out of line, so this path
    /// saves few registers (the sendfile bit is one more in the same mask).
    #[inline(always)]
    pub(super) fn write_impl(&self, data: &[u8]) -> Result<(), Error> {
        if self.cell.flags.get() & (EOF | CLOSING | HAS_DATA | LOST_DONE | SENDFILE) == 0
            && !data.is_empty()
        {
            // Counted before the send, while `self` is at hand anyway:
            // after it, keeping `self` live across the call costs the
            // fast path a register. What the kernel did not take is taken
            // back out of line (`write_after_send`).
            self.bytes.sent(data.len());
            let res = self.send(data);
            if matches!(res, Ok(n) if n == data.len()) {
                return Ok(());
            }
            return self.write_after_send(data, res);
        }
        self.write_slow(data)
    }

    pub(super) fn writelines_impl(&self, bufs: &[&[u8]]) -> Result<(), Error> {
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
        let res = self
            .sock
            .with(|s| s.send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL))
            .unwrap_or_else(|| Err(closed_error()));
        let mut sent = match res {
            Ok(n) => {
                self.bytes.sent(n);
                n
            }
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

    /// asyncio's order of checks: during a sendfile, after write_eof,
    /// empty data (a no-op: `Ok(false)`), closing or lost (refused and
    /// counted).
    fn check_write(&self, empty: bool) -> Result<bool, Error> {
        if self.has(SENDFILE) {
            return Err(Error::SendfileInProgress);
        }
        if self.has(EOF) {
            return Err(Error::WriteAfterEof);
        }
        if empty {
            return Ok(false);
        }
        if self.has(CLOSING) {
            return Err(self.cell.refuse_write());
        }
        Ok(true)
    }

    /// `send` with `MSG_NOSIGNAL`; `EBADF` once the socket is closed.
    #[inline(always)]
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.sock.send(data)
    }

    /// Buffers `parts` (what the kernel did not take) and applies flow
    /// control.
    #[cold]
    #[inline(never)]
    fn buffer(&self, parts: &[&[u8]]) {
        let adding: usize = parts.iter().map(|p| p.len()).sum();
        if self.wbuf.borrow().len().saturating_add(adding) > self.cap.get() {
            // A writer that ignores pause_writing: fail the transport rather
            // than grow without bound.
            self.set_flag(CAP_EXCEEDED, true);
            self.force_close(Some(cap_exceeded()));
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
            Err(Error::Io(cap_exceeded()))
        } else {
            Ok(())
        }
    }

    #[cold]
    #[inline(never)]
    fn write_slow(&self, data: &[u8]) -> Result<(), Error> {
        if !self.check_write(data.is_empty())? {
            return Ok(());
        }
        if !self.has(HAS_DATA) {
            // Try to send now: the common case never touches the buffer.
            let res = self.send(data);
            if let Ok(n) = res {
                self.bytes.sent(n);
            }
            match res {
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
                self.bytes.unsent(data.len() - n);
                self.buffer_after_short_send(&[&data[n..]]);
                self.write_result()
            }
            Err(_) => {
                self.bytes.unsent(data.len());
                self.write_slow(data)
            }
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

    pub(super) fn clear_buffer(&self) {
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
                    self.bytes.sent(n);
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

    pub(super) fn write_ready(&self) {
        if self.has(LOST_SCHEDULED) || !self.has(HAS_DATA) {
            if self.has(SENDFILE) {
                self.sendfile_writable();
            }
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
        // resume_writing may write more, or abort: an abort that dropped
        // data failed the empty waiter, one that dropped none leaves it to
        // `drained`.
        self.maybe_resume();
        if !self.has(HAS_DATA) {
            self.drained();
        } else if more {
            // resume_writing wrote more after the kernel took everything:
            // no writable edge will come. Flush in the next iteration.
            self.schedule(Readiness::WRITABLE);
        }
    }

    pub(super) fn shutdown_write(&self) {
        if self.replace_flag(EOF_SENT, true) {
            return;
        }
        self.sock.with(|s| s.shutdown(std::net::Shutdown::Write));
    }

    pub(super) fn maybe_pause(&self) {
        let mut flow = self.flow.get();
        let pause = flow.should_pause(self.wbuf.borrow().len());
        self.flow.set(flow);
        if pause {
            self.cell.notify_flow(self, true);
        }
    }

    fn maybe_resume(&self) {
        let mut flow = self.flow.get();
        let resume = flow.should_resume(self.wbuf.borrow().len());
        self.flow.set(flow);
        if resume {
            self.cell.notify_flow(self, false);
        }
    }
}

fn cap_exceeded() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, "write buffer cap exceeded")
}
