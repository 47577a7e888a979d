//! A datagram transport's write path: `sendto` sends at once when nothing
//! is queued, else (or when the socket is full) copies the datagram into
//! the queue, which `flush` sends in order on writable edges; flow control
//! counts each queued datagram's payload plus [`DATAGRAM_OVERHEAD`].

use std::collections::VecDeque;
use std::io;

use super::{DatagramAddr, Inner, DATAGRAM_OVERHEAD};
use crate::error::Error;
use crate::transport::cell::{CLOSING, HAS_DATA, LOST_SCHEDULED, WRITE_BLOCKED};
use crate::transport::flow::FlowControl;

pub(super) struct WriteState<A> {
    /// Queued datagrams and their destinations (`None`: the connected peer).
    pub(super) queue: VecDeque<(Vec<u8>, Option<A>)>,
    /// Payload bytes in `queue`.
    pub(super) payload: usize,
    pub(super) flow: FlowControl,
}

impl<A> WriteState<A> {
    /// What flow control compares with the marks.
    pub(super) fn flow_size(&self) -> usize {
        self.payload + DATAGRAM_OVERHEAD * self.queue.len()
    }
}

impl<A: DatagramAddr> Inner<A> {
    #[inline]
    pub(super) fn sendto(&self, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        // `addr` stays where it is (no moves of the address on the fast
        // path); with a remote address it is only compared, then dropped.
        let a = match (&self.address, &addr) {
            (None, Some(a)) => a,
            (Some(expected), Some(a)) if expected != a => return Err(self.invalid_address()),
            (Some(_), _) => return self.sendto_remote(data),
            (None, None) => return Err(Error::AddressRequired),
        };
        self.debug_check_queued();
        if self.has(CLOSING | HAS_DATA) {
            return self.sendto_closing_or_queued(data, addr);
        }
        // Nothing queued: send now.
        match A::send_to(&self.sock, data, a) {
            Ok(n) => {
                self.bytes.sent(n);
                Ok(())
            }
            Err(e) => self.sendto_failed(e, data, addr),
        }
    }

    /// The immediate send failed: queue the datagram if the socket was
    /// full, else report the error (see [`sent`](Self::sent)).
    #[cold]
    #[inline(never)]
    pub(super) fn sendto_failed(
        &self,
        e: io::Error,
        data: &[u8],
        addr: Option<A>,
    ) -> Result<(), Error> {
        if self.send_failed(e) {
            self.enqueue(data, addr);
        }
        Ok(())
    }

    /// `sendto` when closing (refused) or when datagrams are queued (this
    /// one goes behind them).
    #[cold]
    #[inline(never)]
    fn sendto_closing_or_queued(&self, data: &[u8], addr: Option<A>) -> Result<(), Error> {
        if self.has(CLOSING) {
            return Err(self.cell.refuse_write());
        }
        self.enqueue(data, addr);
        Ok(())
    }

    /// Debug builds check that `HAS_DATA` says what the queue says.
    #[inline]
    fn debug_check_queued(&self) {
        if cfg!(debug_assertions) {
            if let Ok(w) = self.write.try_borrow() {
                assert_eq!(self.has(HAS_DATA), !w.queue.is_empty());
            }
        }
    }

    /// `sendto` to the remote address (connected, or a broadcast
    /// endpoint's default destination).
    fn sendto_remote(&self, data: &[u8]) -> Result<(), Error> {
        if self.has(CLOSING) {
            return Err(self.cell.refuse_write());
        }
        if !self.has(HAS_DATA) {
            let r = self.send_one(data, None);
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
            self.set_flag(WRITE_BLOCKED, true);
            true
        } else {
            self.cell.notify_error(self, e);
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

    /// Copies a datagram into the queue and runs flow control.
    #[cold]
    #[inline(never)]
    fn enqueue(&self, data: &[u8], addr: Option<A>) {
        let pause = {
            let mut w = self.write.borrow_mut();
            w.queue.push_back((data.to_vec(), addr));
            self.set_flag(HAS_DATA, true);
            w.payload += data.len();
            let size = w.flow_size();
            w.flow.should_pause(size)
        };
        if pause {
            self.cell.notify_flow(self, true);
        }
    }

    #[inline]
    fn send_one(&self, data: &[u8], addr: Option<&A>) -> io::Result<usize> {
        let sock = &self.sock;
        let res = match addr {
            Some(a) => A::send_to(sock, data, a),
            None if self.connected => A::send(sock, data),
            None => match &self.address {
                Some(a) => A::send_to(sock, data, a),
                None => Err(io::Error::from(io::ErrorKind::NotConnected)),
            },
        };
        if let Ok(n) = res {
            self.bytes.sent(n);
        }
        res
    }

    /// asyncio's `_sendto_ready`: sends the queue in order until the socket
    /// is full. A datagram whose send fails with an OS error is dropped and
    /// reported, and the rest is still sent (edge-triggered: returning
    /// early would wait for a writable edge that may not come).
    pub(super) fn flush(&self) {
        let mut errors = Vec::new();
        if self.sock.raw_fd().is_none() {
            return;
        }
        let resume = {
            let mut w = self.write.borrow_mut();
            while let Some((data, addr)) = w.queue.front() {
                match self.send_one(data, addr.as_ref()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.set_flag(WRITE_BLOCKED, true);
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
            self.set_flag(HAS_DATA, !w.queue.is_empty());
            let size = w.flow_size();
            w.flow.should_resume(size)
        };
        for e in errors {
            self.cell.notify_error(self, e);
        }
        if resume {
            self.cell.notify_flow(self, false);
        }
        if self.has(HAS_DATA) {
            return;
        }
        self.complete_empty_waiter(Ok(()));
        if self.has(CLOSING) && !self.has(LOST_SCHEDULED) {
            self.cell.loss_scheduled();
            self.schedule_connection_lost(None);
        }
    }
}
