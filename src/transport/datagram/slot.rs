//! How a datagram transport holds its protocol: boxed with an `Any` view
//! (for `with_protocol`), in a slot the protocol cell takes it out of while
//! it runs.

use std::any::Any;
use std::cell::Cell;
use std::io;

use crate::protocol::DatagramProtocol;
use crate::transport::cell::{Lendable, Notified, Slot};
use crate::transport::datagram::DatagramAddr;

/// A datagram protocol as the transport stores it: the protocol, plus an
/// `Any` view of it for [`DatagramTransport::with_protocol`]. Implemented
/// for every protocol, so the public trait needs no `Any` bound (and no
/// trait upcasting, which the crate's minimum Rust lacks).
pub(crate) trait StoredProtocol<A: DatagramAddr>: DatagramProtocol<A> {
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<A: DatagramAddr, P: DatagramProtocol<A>> StoredProtocol<A> for P {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

pub(super) type BoxedProtocol<A> = Box<dyn StoredProtocol<A>>;

impl<A: DatagramAddr> Lendable for BoxedProtocol<A> {
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(StoredProtocol::as_any_mut(&mut **self))
    }
}

impl<A: DatagramAddr> Notified for dyn StoredProtocol<A> {
    fn pause_writing(&mut self) {
        DatagramProtocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        DatagramProtocol::resume_writing(self)
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        DatagramProtocol::connection_lost(self, exc)
    }
    fn error_received(&mut self, exc: io::Error) {
        DatagramProtocol::error_received(self, exc)
    }
}

/// Where a datagram transport keeps its protocol.
pub(super) struct ProtocolSlot<A: DatagramAddr>(Cell<Option<BoxedProtocol<A>>>);

impl<A: DatagramAddr> Default for ProtocolSlot<A> {
    fn default() -> Self {
        ProtocolSlot(Cell::new(None))
    }
}

impl<A: DatagramAddr> Slot for ProtocolSlot<A> {
    type Protocol = BoxedProtocol<A>;
    fn take(&self) -> Option<BoxedProtocol<A>> {
        self.0.take()
    }
    fn replace(&self, p: BoxedProtocol<A>) -> Option<BoxedProtocol<A>> {
        self.0.replace(Some(p))
    }
}
