//! Datagram protocols: the callbacks a datagram transport calls (asyncio's
//! `asyncio.DatagramProtocol`), next to the stream protocols of the parent
//! module. The transport and the address types are in
//! [`transport::datagram`](crate::transport::datagram).

use std::io;
use std::net::SocketAddr;

use crate::transport::datagram::{DatagramAddr, DatagramTransport};

/// The callbacks of a datagram endpoint: asyncio's `DatagramProtocol`.
///
/// `A` is the address type: [`SocketAddr`] (UDP, the default) or
/// [`UnixAddr`](crate::UnixAddr). Every method but `datagram_received` has an empty default.
/// See the [datagram transport's docs](crate::transport::datagram) for the
/// order of the calls.
///
/// ```
/// use std::net::SocketAddr;
/// use sloop::transport::datagram::{DatagramProtocol, DatagramTransport};
///
/// /// Sends every datagram back where it came from.
/// struct Echo(Option<DatagramTransport>);
///
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, transport: &DatagramTransport) {
///         self.0 = Some(transport.clone());
///     }
///     fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
///         if let Some(t) = &self.0 {
///             let _ = t.sendto(data, Some(addr));
///         }
///     }
/// }
/// ```
pub trait DatagramProtocol<A: DatagramAddr = SocketAddr>: 'static {
    /// The endpoint is ready; called once, before anything else. Keep a
    /// clone of `transport` to send. See the example on
    /// [`DatagramProtocol`].
    fn connection_made(&mut self, transport: &DatagramTransport<A>) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`. `data` borrows the loop's shared
    /// read buffer; copy what must outlive the call. It may be empty. See
    /// the example on [`DatagramProtocol`].
    fn datagram_received(&mut self, data: &[u8], addr: A);

    /// A send or receive failed with an OS error (e.g. `ConnectionRefused`
    /// after an ICMP port unreachable). The transport stays open. See the
    /// example on [`DatagramProtocol`].
    fn error_received(&mut self, exc: io::Error) {
        let _ = exc;
    }

    /// The transport is closed: `None` after `close`/`abort`, the error
    /// after a fatal one. The last call. See the example on
    /// [`DatagramProtocol`].
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// The write queue went above the high-water mark. See the example on
    /// [`DatagramProtocol`].
    fn pause_writing(&mut self) {}

    /// The write queue drained to the low-water mark or below. See the
    /// example on [`DatagramProtocol`].
    fn resume_writing(&mut self) {}
}
