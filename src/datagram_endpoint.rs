//! Creating datagram endpoints: asyncio's `loop.create_datagram_endpoint`.
//!
//! [`LoopHandle::create_datagram_endpoint`] returns a
//! [`DatagramEndpointBuilder`] for UDP; its options are asyncio's keyword
//! arguments (`local_addr`, `remote_addr`, `family`, `reuse_port`,
//! `allow_broadcast`, `sock`), and [`start`](DatagramEndpointBuilder::start)
//! creates the socket and the [`DatagramTransport`].
//! [`LoopHandle::create_unix_datagram_endpoint`] does the same for Unix
//! datagram sockets ([`UnixDatagramEndpointBuilder`]).
//!
//! Differences from asyncio, all on purpose:
//!
//! - Addresses are [`SocketAddr`]s: no name resolution happens here (it
//!   would block the loop). Resolve first, off the loop.
//! - There is no `reuse_address`: `SO_REUSEADDR` on UDP lets another process
//!   steal the datagrams (bpo-37228; asyncio removed it in 3.11). Use
//!   [`reuse_port`](DatagramEndpointBuilder::reuse_port) for load sharing.
//! - The endpoint is created synchronously: nothing in it can block.
//!
//! Like asyncio, a `remote_addr` connects the socket, except with
//! `allow_broadcast`: a broadcast endpoint is never connected, and the remote
//! address is only the default destination of `sendto(data, None)`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::transport::datagram::{DatagramProtocol, DatagramTransport, UnixAddr};

/// The address family of a UDP endpoint created without addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn domain(self) -> Domain {
        match self {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg.into()))
}

/// Options for a UDP endpoint; see [`LoopHandle::create_datagram_endpoint`].
#[must_use = "an endpoint is created by `start`"]
pub struct DatagramEndpointBuilder<F> {
    lp: LoopHandle,
    factory: F,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    family: Option<Family>,
    reuse_port: bool,
    allow_broadcast: bool,
    sock: Option<UdpSocket>,
}

impl<F> std::fmt::Debug for DatagramEndpointBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramEndpointBuilder")
            .field("local_addr", &self.local)
            .field("remote_addr", &self.remote)
            .field("family", &self.family)
            .field("reuse_port", &self.reuse_port)
            .field("allow_broadcast", &self.allow_broadcast)
            .field("sock", &self.sock)
            .finish()
    }
}

impl<F, P> DatagramEndpointBuilder<F>
where
    F: FnOnce() -> P,
    P: DatagramProtocol<SocketAddr>,
{
    /// Binds the socket to `addr` (port 0: any free port).
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.local = Some(addr);
        self
    }

    /// Connects the socket to `addr` (unless
    /// [`allow_broadcast`](Self::allow_broadcast)): the kernel then drops
    /// datagrams from other senders, ICMP errors come back as
    /// `error_received`, and `sendto` accepts no other address.
    pub fn remote_addr(mut self, addr: SocketAddr) -> Self {
        self.remote = Some(addr);
        self
    }

    /// The address family when neither address is given; when one is, it
    /// must be of this family.
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// Sets `SO_REUSEPORT`, so several sockets (e.g. one loop per thread)
    /// can bind the same address and share its datagrams.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Sets `SO_BROADCAST`; the socket is then never connected.
    pub fn allow_broadcast(mut self, on: bool) -> Self {
        self.allow_broadcast = on;
        self
    }

    /// Uses an existing socket (bound or not, connected or not) instead of
    /// creating one; it is made non-blocking. No other option may be set.
    pub fn socket(mut self, sock: UdpSocket) -> Self {
        self.sock = Some(sock);
        self
    }

    /// Creates the socket and the transport; `connection_made` follows in
    /// the next iteration.
    ///
    /// # Errors
    ///
    /// - An `InvalidInput` I/O error with asyncio's message: options with
    ///   [`socket`](Self::socket) ("socket modifier keyword arguments can
    ///   not be used when sock is specified."), no address and no family
    ///   ("unexpected address family"), addresses of different families or
    ///   not of [`family`](Self::family) ("can not get address
    ///   information").
    /// - The OS error of `socket`, `setsockopt`, `bind` or `connect`; the
    ///   socket is closed.
    /// - [`Error::Closed`] if the loop is closed.
    pub fn start(self) -> Result<DatagramTransport<SocketAddr>, Error> {
        let sock = if let Some(sock) = self.sock {
            let mut set = Vec::new();
            if let Some(a) = self.local {
                set.push(format!("local_addr={a}"));
            }
            if let Some(a) = self.remote {
                set.push(format!("remote_addr={a}"));
            }
            if let Some(f) = self.family {
                set.push(format!("family={f:?}"));
            }
            if self.reuse_port {
                set.push("reuse_port=true".to_owned());
            }
            if self.allow_broadcast {
                set.push("allow_broadcast=true".to_owned());
            }
            if !set.is_empty() {
                return Err(invalid(format!(
                    "socket modifier keyword arguments can not be used when sock is specified. ({})",
                    set.join(", ")
                )));
            }
            sock.set_nonblocking(true)?;
            return DatagramTransport::new(&self.lp, sock, Box::new((self.factory)()), None);
        } else {
            let family = match (self.local, self.remote) {
                (None, None) => self
                    .family
                    .ok_or_else(|| invalid("unexpected address family"))?,
                (Some(a), None) | (None, Some(a)) => Family::of(&a),
                (Some(l), Some(r)) => {
                    if Family::of(&l) != Family::of(&r) {
                        return Err(invalid("can not get address information"));
                    }
                    Family::of(&l)
                }
            };
            if self.family.is_some_and(|f| f != family) {
                return Err(invalid("can not get address information"));
            }
            let sock = Socket::new(family.domain(), Type::DGRAM.nonblocking().cloexec(), None)?;
            if self.reuse_port {
                sock.set_reuse_port(true)?;
            }
            if self.allow_broadcast {
                sock.set_broadcast(true)?;
            }
            if let Some(local) = self.local {
                sock.bind(&local.into())?;
            }
            if let Some(remote) = self.remote {
                if !self.allow_broadcast {
                    sock.connect(&remote.into())?;
                }
            }
            UdpSocket::from(sock)
        };
        DatagramTransport::new(&self.lp, sock, Box::new((self.factory)()), self.remote)
    }
}

/// Options for a Unix datagram endpoint; see
/// [`LoopHandle::create_unix_datagram_endpoint`].
#[must_use = "an endpoint is created by `start`"]
pub struct UnixDatagramEndpointBuilder<F> {
    lp: LoopHandle,
    factory: F,
    local: Option<PathBuf>,
    remote: Option<PathBuf>,
    sock: Option<UnixDatagram>,
}

impl<F> std::fmt::Debug for UnixDatagramEndpointBuilder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixDatagramEndpointBuilder")
            .field("local_addr", &self.local)
            .field("remote_addr", &self.remote)
            .field("sock", &self.sock)
            .finish()
    }
}

impl<F, P> UnixDatagramEndpointBuilder<F>
where
    F: FnOnce() -> P,
    P: DatagramProtocol<UnixAddr>,
{
    /// Binds the socket to `path`. A stale socket file there is removed
    /// first (as asyncio); any other kind of file makes `start` fail.
    pub fn local_addr(mut self, path: impl Into<PathBuf>) -> Self {
        self.local = Some(path.into());
        self
    }

    /// Connects the socket to `path`.
    pub fn remote_addr(mut self, path: impl Into<PathBuf>) -> Self {
        self.remote = Some(path.into());
        self
    }

    /// Uses an existing socket (e.g. one end of
    /// [`UnixDatagram::pair`]); it is made non-blocking. No other option
    /// may be set.
    pub fn socket(mut self, sock: UnixDatagram) -> Self {
        self.sock = Some(sock);
        self
    }

    /// Creates the socket and the transport.
    ///
    /// # Errors
    ///
    /// Options with [`socket`](Self::socket) (`InvalidInput`, asyncio's
    /// message); the OS error of `socket`, `bind` or `connect`;
    /// [`Error::Closed`].
    pub fn start(self) -> Result<DatagramTransport<UnixAddr>, Error> {
        let sock = if let Some(sock) = self.sock {
            if self.local.is_some() || self.remote.is_some() {
                return Err(invalid(
                    "socket modifier keyword arguments can not be used when sock is specified.",
                ));
            }
            sock.set_nonblocking(true)?;
            sock
        } else {
            let sock = Socket::new(Domain::UNIX, Type::DGRAM.nonblocking().cloexec(), None)?;
            if let Some(local) = &self.local {
                remove_stale_socket(local);
                sock.bind(&SockAddr::unix(local)?)?;
            }
            if let Some(remote) = &self.remote {
                sock.connect(&SockAddr::unix(remote)?)?;
            }
            UnixDatagram::from(sock)
        };
        let remote = self.remote.map(UnixAddr::Path);
        DatagramTransport::new(&self.lp, sock, Box::new((self.factory)()), remote)
    }
}

/// asyncio removes a socket file left at the path by an earlier run.
fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if let Err(e) = std::fs::remove_file(path) {
                log::error!("Unable to check or remove stale UNIX socket {path:?}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::error!("Unable to check or remove stale UNIX socket {path:?}: {e}"),
    }
}

impl LoopHandle {
    /// Starts building a UDP endpoint whose protocol `factory` makes
    /// (asyncio's `create_datagram_endpoint`); finish with
    /// [`start`](DatagramEndpointBuilder::start).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::transport::datagram::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp
    ///     .create_datagram_endpoint(|| Quiet)
    ///     .local_addr("127.0.0.1:0".parse().unwrap())
    ///     .start()?;
    /// assert!(t.local_addr().unwrap().port() != 0);
    /// t.close();
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn create_datagram_endpoint<F, P>(&self, factory: F) -> DatagramEndpointBuilder<F>
    where
        F: FnOnce() -> P,
        P: DatagramProtocol<SocketAddr>,
    {
        DatagramEndpointBuilder {
            lp: self.clone(),
            factory,
            local: None,
            remote: None,
            family: None,
            reuse_port: false,
            allow_broadcast: false,
            sock: None,
        }
    }

    /// Starts building a Unix datagram endpoint (asyncio's
    /// `create_datagram_endpoint(family=AF_UNIX)`); finish with
    /// [`start`](UnixDatagramEndpointBuilder::start).
    ///
    /// ```
    /// use sloop::{DatagramProtocol, UnixAddr};
    /// use std::os::unix::net::UnixDatagram;
    ///
    /// struct Stop;
    /// impl DatagramProtocol<UnixAddr> for Stop {
    ///     fn datagram_received(&mut self, data: &[u8], addr: UnixAddr) {
    ///         assert_eq!((data, addr), (&b"hi"[..], UnixAddr::Unnamed));
    ///         sloop::get_running_loop().unwrap().stop();
    ///     }
    /// }
    ///
    /// let (mine, theirs) = UnixDatagram::pair()?;
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.create_unix_datagram_endpoint(|| Stop).socket(mine).start()?;
    /// theirs.send(b"hi")?;
    /// lp.run_forever()?;
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_unix_datagram_endpoint<F, P>(&self, factory: F) -> UnixDatagramEndpointBuilder<F>
    where
        F: FnOnce() -> P,
        P: DatagramProtocol<UnixAddr>,
    {
        UnixDatagramEndpointBuilder {
            lp: self.clone(),
            factory,
            local: None,
            remote: None,
            sock: None,
        }
    }
}
