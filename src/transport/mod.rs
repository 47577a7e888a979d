//! Transports: the objects that own a socket and move bytes between it and a
//! protocol.

#[allow(dead_code)] // until the transports land
pub(crate) mod flow;

pub use flow::DEFAULT_HIGH_WATER;

pub mod datagram;
pub use datagram::{DatagramAddr, DatagramProtocol, DatagramTransport, UnixAddr};
