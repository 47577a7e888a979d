//! Addresses of datagram transports: [`DatagramAddr`], implemented by
//! [`SocketAddr`] (UDP) and [`UnixAddr`] (Unix datagram sockets).
//!
//! The trait is sealed: its supertrait carries the socket type and the
//! receive/send calls for that family, so the transport code is written
//! once and monomorphised per address type.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::address::Address;
use crate::exception::TransportKind;
use crate::sys::OpenSocket;

pub(crate) mod sealed {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd};

    use crate::address::Address;
    use crate::exception::TransportKind;
    use crate::sys::OpenSocket;

    /// The socket operations behind an address type, on a transport's
    /// open socket (`EBADF` once it is closed).
    #[allow(unreachable_pub, private_interfaces)]
    pub trait Sealed: Sized {
        type Socket: AsRawFd + AsFd;
        /// The kind of transport over this address type, for reports.
        const KIND: TransportKind;
        /// The address as reports give it.
        fn to_address(&self) -> Address;
        fn recv_from(sock: &OpenSocket<Self::Socket>, buf: &mut [u8]) -> io::Result<(usize, Self)>;
        fn send_to(sock: &OpenSocket<Self::Socket>, buf: &[u8], addr: &Self) -> io::Result<usize>;
        fn send(sock: &OpenSocket<Self::Socket>, buf: &[u8]) -> io::Result<usize>;
        fn local_addr(sock: &Self::Socket) -> Option<Self>;
        fn peer_addr(sock: &Self::Socket) -> Option<Self>;
    }
}

/// The error of I/O on a closed socket.
fn closed() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// An address type of a datagram transport: [`SocketAddr`] (UDP) or
/// [`UnixAddr`] (Unix datagram sockets). Sealed.
pub trait DatagramAddr: sealed::Sealed + Clone + PartialEq + fmt::Debug + 'static {}

// The trait is sealed: its methods are reachable only inside the crate.
#[allow(private_interfaces)]
impl sealed::Sealed for SocketAddr {
    type Socket = UdpSocket;
    const KIND: TransportKind = TransportKind::Udp;
    fn to_address(&self) -> Address {
        Address::Inet(*self)
    }
    #[inline]
    fn recv_from(sock: &OpenSocket<UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, Self)> {
        // std's `recv_from` zeroes a sockaddr_storage and converts the
        // address generically on every call; this is the same syscall.
        sock.udp_recv_from(buf)
    }
    #[inline]
    fn send_to(sock: &OpenSocket<UdpSocket>, buf: &[u8], addr: &Self) -> io::Result<usize> {
        // std's `send_to` goes through `ToSocketAddrs`; this is the same
        // syscall with the C address built on the stack.
        sock.udp_send_to(buf, addr)
    }
    #[inline]
    fn send(sock: &OpenSocket<UdpSocket>, buf: &[u8]) -> io::Result<usize> {
        sock.send(buf)
    }
    fn local_addr(sock: &UdpSocket) -> Option<Self> {
        sock.local_addr().ok()
    }
    fn peer_addr(sock: &UdpSocket) -> Option<Self> {
        sock.peer_addr().ok()
    }
}

impl DatagramAddr for SocketAddr {}

/// The address of a Unix datagram socket. See the example on
/// [`UnixDatagramEndpointBuilder::local_addr`](crate::UnixDatagramEndpointBuilder::local_addr).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket that is not bound to a name.
    Unnamed,
    /// A path in the file system.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (without the leading NUL).
    Abstract(Vec<u8>),
}

impl UnixAddr {
    /// The path, if this is a path address. See the example on
    /// [`UnixDatagramEndpointBuilder::local_addr`](crate::UnixDatagramEndpointBuilder::local_addr).
    pub fn as_pathname(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            _ => None,
        }
    }

    fn from_std(addr: &std::os::unix::net::SocketAddr) -> UnixAddr {
        if let Some(p) = addr.as_pathname() {
            return UnixAddr::Path(p.to_owned());
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            if let Some(name) = addr.as_abstract_name() {
                return UnixAddr::Abstract(name.to_owned());
            }
        }
        UnixAddr::Unnamed
    }

    pub(crate) fn to_std(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        match self {
            UnixAddr::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            UnixAddr::Abstract(name) => {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            UnixAddr::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract Unix addresses are Linux-only",
            )),
            UnixAddr::Unnamed => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot send to an unnamed Unix address",
            )),
        }
    }
}

impl From<PathBuf> for UnixAddr {
    fn from(p: PathBuf) -> Self {
        UnixAddr::Path(p)
    }
}

impl From<&Path> for UnixAddr {
    fn from(p: &Path) -> Self {
        UnixAddr::Path(p.to_owned())
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Unnamed => f.write_str("(unnamed)"),
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

#[allow(private_interfaces)]
impl sealed::Sealed for UnixAddr {
    type Socket = UnixDatagram;
    const KIND: TransportKind = TransportKind::UnixDatagram;
    fn to_address(&self) -> Address {
        match self {
            UnixAddr::Path(p) => Address::Unix(Some(p.clone())),
            UnixAddr::Abstract(_) | UnixAddr::Unnamed => Address::Unix(None),
        }
    }
    fn recv_from(sock: &OpenSocket<UnixDatagram>, buf: &mut [u8]) -> io::Result<(usize, Self)> {
        let (n, addr) = sock
            .with(|s| s.recv_from(buf))
            .unwrap_or_else(|| Err(closed()))?;
        Ok((n, UnixAddr::from_std(&addr)))
    }
    fn send_to(sock: &OpenSocket<UnixDatagram>, buf: &[u8], addr: &Self) -> io::Result<usize> {
        sock.with(|s| match addr {
            UnixAddr::Path(p) => s.send_to(buf, p),
            other => s.send_to_addr(buf, &other.to_std()?),
        })
        .unwrap_or_else(|| Err(closed()))
    }
    fn send(sock: &OpenSocket<UnixDatagram>, buf: &[u8]) -> io::Result<usize> {
        sock.send(buf)
    }
    fn local_addr(sock: &UnixDatagram) -> Option<Self> {
        sock.local_addr().ok().map(|a| UnixAddr::from_std(&a))
    }
    fn peer_addr(sock: &UnixDatagram) -> Option<Self> {
        sock.peer_addr().ok().map(|a| UnixAddr::from_std(&a))
    }
}

impl DatagramAddr for UnixAddr {}
