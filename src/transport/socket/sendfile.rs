//! The socket transport's part in a zero-copy sendfile (the crate's
//! `sendfile` module drives it; asyncio's `_sendfile_native` on the
//! selector loop).
//!
//! While a sendfile has the transport, the `SENDFILE` bit is set: the
//! write paths refuse (it is one more bit in the mask the fast path tests
//! anyway), and a writable edge goes to the sendfile instead of the empty
//! buffer. The sendfile waits in the transport's empty-waiter slot, which
//! nobody else can use meanwhile (`empty_waiter` is refused too): first
//! for the buffer to drain, then, each time the kernel says `EAGAIN`, for
//! the next writable edge. A lost connection fails the waiter there, as it
//! fails any empty waiter, so a sendfile never outlives its connection
//! (asyncio's transport left it hanging when closed mid-transfer).

use std::io;
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use super::SocketTransport;
use crate::error::Error;
use crate::transport::cell::{CLOSING, EOF, LOST_SCHEDULED, SENDFILE};
use crate::transport::{EmptyWaiter, SocketSendfile, WaiterState};

impl SocketTransport {
    /// A writable edge while a sendfile has the transport (its buffer is
    /// empty: writes are refused): the sendfile may send again.
    #[cold]
    #[inline(never)]
    pub(super) fn sendfile_writable(&self) {
        let waiter = self.empty_waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.complete(Ok(()));
        }
    }
}

impl SocketSendfile for SocketTransport {
    fn sendfile_start(&self) -> Result<EmptyWaiter, Error> {
        if self.has(SENDFILE) {
            return Err(Error::SendfileInProgress);
        }
        if self.has(CLOSING) {
            return Err(Error::ConnectionLost);
        }
        if self.has(EOF) {
            return Err(Error::WriteAfterEof);
        }
        let waiter = self.make_empty_waiter()?;
        self.set_flag(SENDFILE, true);
        Ok(waiter)
    }

    fn sendfile_send(&self, file: BorrowedFd<'_>, offset: u64, count: usize) -> io::Result<usize> {
        let sent = self.sock.sendfile(file, offset, count);
        if let Ok(n) = sent {
            self.bytes.sent(n);
        }
        sent
    }

    fn sendfile_wait_writable(&self) -> EmptyWaiter {
        let state = Rc::new(WaiterState::default());
        if self.has(LOST_SCHEDULED) {
            state.complete(Err(Error::ConnectionLost));
        } else {
            // Nobody else waits here while SENDFILE is set.
            *self.empty_waiter.borrow_mut() = Some(state.clone());
        }
        EmptyWaiter::new(state)
    }

    fn sendfile_end(&self, error: Option<io::Error>) {
        if !self.replace_flag(SENDFILE, false) {
            return;
        }
        // The slot holds only the sendfile's own waiter, if any.
        let waiter = self.empty_waiter.borrow_mut().take();
        drop(waiter);
        if let Some(e) = error {
            self.fatal_error(e, "Fatal error on socket transport during sendfile");
        }
    }
}
