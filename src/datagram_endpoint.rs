//! Creating datagram endpoints: asyncio's `loop.create_datagram_endpoint`.
//!
//! [`LoopHandle::create_datagram_endpoint`] returns a
//! [`DatagramEndpointBuilder`] for UDP; its options are asyncio's keyword
//! arguments (`local_addr`, `remote_addr`, `family`, `reuse_port`,
//! `allow_broadcast`, `sock`), and awaiting it creates the socket and the
//! [`DatagramTransport`], as awaiting a [`ServerBuilder`](crate::ServerBuilder)
//! creates a server. [`LoopHandle::create_unix_datagram_endpoint`] does the
//! same for Unix datagram sockets ([`UnixDatagramEndpointBuilder`]).
//!
//! As in asyncio, the addresses are resolved (off the loop thread for a
//! name, see [`ToAddrs`]) for datagram sockets, and grouped by family: for
//! each family that every given address has, in the order the addresses
//! name them, a socket is made with the first local and the first remote
//! address of that family. The first socket that binds and connects wins;
//! if none does, the first error is the future's.
//!
//! One difference from asyncio, on purpose: there is no `reuse_address`.
//! `SO_REUSEADDR` on UDP lets another process steal the datagrams
//! (bpo-37228; asyncio removed it in 3.11). Use
//! [`reuse_port`](DatagramEndpointBuilder::reuse_port) for load sharing.
//!
//! Like asyncio, a `remote_addr` connects the socket, except with
//! `allow_broadcast`: a broadcast endpoint is never connected, and the remote
//! address is only the default destination of `sendto(data, None)`.

use std::future::IntoFuture;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use futures::future::LocalBoxFuture;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::event_loop::LoopHandle;
pub use crate::net::Family;
use crate::net::{Addrs, SockKind, ToAddrs, Use};
use crate::transport::datagram::{DatagramProtocol, DatagramTransport, UnixAddr};

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Options for a UDP endpoint, then `.await` to create it; see
/// [`LoopHandle::create_datagram_endpoint`].
///
/// # Cancel safety
///
/// Dropping the future before it completes leaves nothing open and never
/// calls the factory: the socket and the transport are made in the poll
/// that completes it, once the addresses are resolved. A socket given to
/// [`socket`](Self::socket) is closed with the builder or its future.
#[must_use = "an endpoint is created by awaiting its builder"]
pub struct DatagramEndpointBuilder<F> {
    lp: LoopHandle,
    factory: F,
    local: Option<io::Result<Addrs>>,
    remote: Option<io::Result<Addrs>>,
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

/// An address as the "socket modifier" message shows it.
fn shown(a: &io::Result<Addrs>) -> String {
    match a {
        Ok(a) => a.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

impl<F, P> DatagramEndpointBuilder<F>
where
    F: FnOnce() -> P,
    P: DatagramProtocol<SocketAddr>,
{
    /// Binds the socket to `addr`, any [`ToAddrs`] (port 0: any free port;
    /// an empty host, `":0"`, every interface).
    ///
    /// The future fails with `InvalidInput` if `addr` is malformed.
    pub fn local_addr(mut self, addr: impl ToAddrs) -> Self {
        self.local = Some(addr.to_addrs());
        self
    }

    /// Connects the socket to `addr`, any [`ToAddrs`] (unless
    /// [`allow_broadcast`](Self::allow_broadcast)): the kernel then drops
    /// datagrams from other senders, ICMP errors come back as
    /// `error_received`, and `sendto` accepts no other address.
    ///
    /// The future fails with `InvalidInput` if `addr` is malformed.
    pub fn remote_addr(mut self, addr: impl ToAddrs) -> Self {
        self.remote = Some(addr.to_addrs());
        self
    }

    /// The address family when neither address is given; when one is, only
    /// its addresses of this family are used.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// use sloop::Family;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr(":0").family(Family::V4),
    /// )??;
    /// assert!(t.local_addr().unwrap().is_ipv4());
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// Sets `SO_REUSEPORT`, so several sockets (e.g. one loop per thread)
    /// can bind the same address and share its datagrams.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let a = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0").reuse_port(true),
    /// )??;
    /// let here = a.local_addr().unwrap();
    /// let b = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr(here).reuse_port(true),
    /// )??;
    /// assert_eq!(b.local_addr(), Some(here));
    /// a.close();
    /// b.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Sets `SO_BROADCAST`; the socket is then never connected.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet)
    ///         .local_addr("127.0.0.1:0")
    ///         .remote_addr("127.0.0.1:9")
    ///         .allow_broadcast(true),
    /// )??;
    /// assert_eq!(t.with_socket(|s| s.broadcast().unwrap()), Some(true));
    /// assert_eq!(t.peer_addr(), None, "not connected");
    /// assert_eq!(t.remote_addr(), Some("127.0.0.1:9".parse()?));
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_broadcast(mut self, on: bool) -> Self {
        self.allow_broadcast = on;
        self
    }

    /// Uses an existing socket (bound or not, connected or not) instead of
    /// creating one; it is made non-blocking. No other option may be set.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let here = sock.local_addr()?;
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(lp.create_datagram_endpoint(|| Quiet).socket(sock))??;
    /// assert_eq!(t.local_addr(), Some(here));
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn socket(mut self, sock: UdpSocket) -> Self {
        self.sock = Some(sock);
        self
    }

    /// The options set alongside a given socket, as asyncio lists them.
    fn modifiers(&self) -> Vec<String> {
        let mut set = Vec::new();
        if let Some(a) = &self.local {
            set.push(format!("local_addr={}", shown(a)));
        }
        if let Some(a) = &self.remote {
            set.push(format!("remote_addr={}", shown(a)));
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
        set
    }

    /// The transport on the given socket, made at once: nothing to
    /// resolve or wait for. Used by the future and by
    /// [`DatagramSocket::from_std`](crate::DatagramSocket::from_std).
    pub(crate) fn create_on_socket(
        self,
        sock: UdpSocket,
    ) -> io::Result<DatagramTransport<SocketAddr>> {
        let set = self.modifiers();
        if !set.is_empty() {
            return Err(invalid(format!(
                "socket modifier keyword arguments can not be used when sock is specified. ({})",
                set.join(", ")
            )));
        }
        sock.set_nonblocking(true)?;
        Ok(DatagramTransport::new(
            &self.lp,
            sock,
            Box::new((self.factory)()),
            None,
        )?)
    }
}

impl<F, P> DatagramEndpointBuilder<F>
where
    F: FnOnce() -> P + 'static,
    P: DatagramProtocol<SocketAddr> + 'static,
{
    /// What awaiting the builder runs.
    async fn create(mut self) -> io::Result<DatagramTransport<SocketAddr>> {
        if let Some(sock) = self.sock.take() {
            return self.create_on_socket(sock);
        }
        let local = match self.local.take() {
            Some(a) => Some(a?.resolve(SockKind::Datagram, Use::Bind).await?),
            None => None,
        };
        let remote = match self.remote.take() {
            Some(a) => Some(a?.resolve(SockKind::Datagram, Use::Connect).await?),
            None => None,
        };
        let mut first_error = None;
        for (family, local, remote) in pairs(local.as_deref(), remote.as_deref(), self.family)? {
            match self.open(family, local, remote) {
                Ok(sock) => {
                    return Ok(DatagramTransport::new(
                        &self.lp,
                        sock,
                        Box::new((self.factory)()),
                        remote,
                    )?)
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("pairs gives at least one"))
    }

    /// A socket of `family` with the options, bound to `local` and
    /// connected to `remote` (unless broadcasting).
    fn open(
        &self,
        family: Family,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> io::Result<UdpSocket> {
        let sock = Socket::new(family.domain(), Type::DGRAM.nonblocking().cloexec(), None)?;
        if self.reuse_port {
            sock.set_reuse_port(true)?;
        }
        if self.allow_broadcast {
            sock.set_broadcast(true)?;
        }
        if let Some(local) = local {
            sock.bind(&local.into())?;
        }
        if let Some(remote) = remote {
            if !self.allow_broadcast {
                sock.connect(&remote.into())?;
            }
        }
        Ok(UdpSocket::from(sock))
    }
}

/// asyncio's grouping of resolved addresses: for each family, in the order
/// the local then the remote addresses name them, the first address of
/// each given side; a family that a given side lacks is left out. With
/// neither side, one socket of `family`.
///
/// # Errors
///
/// `InvalidInput`: "unexpected address family" with neither address nor
/// family; "can not get address information" if no family has every
/// given side (an IPv4 remote with an IPv6 local, say) or none is of
/// `family`.
#[allow(clippy::type_complexity)]
fn pairs(
    local: Option<&[SocketAddr]>,
    remote: Option<&[SocketAddr]>,
    family: Option<Family>,
) -> io::Result<Vec<(Family, Option<SocketAddr>, Option<SocketAddr>)>> {
    if local.is_none() && remote.is_none() {
        let family = family.ok_or_else(|| invalid("unexpected address family"))?;
        return Ok(vec![(family, None, None)]);
    }
    let mut families = Vec::new();
    for a in local.unwrap_or(&[]).iter().chain(remote.unwrap_or(&[])) {
        let f = Family::of(a);
        if !families.contains(&f) && family.map_or(true, |want| want == f) {
            families.push(f);
        }
    }
    let first_of = |side: Option<&[SocketAddr]>, f: Family| -> Option<Option<SocketAddr>> {
        match side {
            None => Some(None),
            Some(v) => v.iter().find(|a| Family::of(a) == f).map(|a| Some(*a)),
        }
    };
    let out: Vec<_> = families
        .into_iter()
        .filter_map(|f| Some((f, first_of(local, f)?, first_of(remote, f)?)))
        .collect();
    if out.is_empty() {
        return Err(invalid("can not get address information"));
    }
    Ok(out)
}

/// Awaiting the builder resolves the addresses, then creates the socket and
/// the transport; `connection_made` follows in the next iteration.
///
/// # Errors
///
/// - An `InvalidInput` I/O error: a malformed address; options with
///   [`socket`](DatagramEndpointBuilder::socket) ("socket modifier keyword
///   arguments can not be used when sock is specified."); no address and no
///   family ("unexpected address family"); addresses with no family in
///   common, or none of [`family`](DatagramEndpointBuilder::family) ("can
///   not get address information").
/// - A resolution error.
/// - The OS error of `socket`, `setsockopt`, `bind` or `connect` (the first
///   one, when several families were tried); the sockets are closed.
/// - [`Error::Closed`](crate::Error::Closed) (inside the `io::Error`) if
///   the loop is closed.
impl<F, P> IntoFuture for DatagramEndpointBuilder<F>
where
    F: FnOnce() -> P + 'static,
    P: DatagramProtocol<SocketAddr> + 'static,
{
    type Output = io::Result<DatagramTransport<SocketAddr>>;
    type IntoFuture = LocalBoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.create())
    }
}

/// Options for a Unix datagram endpoint, then `.await` to create it; see
/// [`LoopHandle::create_unix_datagram_endpoint`].
///
/// # Cancel safety
///
/// As [`DatagramEndpointBuilder`]'s: the socket is made in the poll that
/// completes the future.
#[must_use = "an endpoint is created by awaiting its builder"]
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
    /// first (as asyncio); any other kind of file makes the future fail.
    ///
    /// ```
    /// use sloop::{DatagramProtocol, UnixAddr};
    ///
    /// struct Stop;
    /// impl DatagramProtocol<UnixAddr> for Stop {
    ///     fn datagram_received(&mut self, data: &[u8], _: UnixAddr) {
    ///         assert_eq!(data, b"hi");
    ///         sloop::get_running_loop().unwrap().stop();
    ///     }
    /// }
    ///
    /// let path = std::env::temp_dir().join(format!("sloop-doc-{}.sock", std::process::id()));
    /// let lp = sloop::EventLoop::new()?;
    /// let server = lp.run_until_complete(lp.create_unix_datagram_endpoint(|| Stop).local_addr(&path))??;
    /// let here = server.local_addr().unwrap();
    /// assert_eq!(here.as_pathname(), Some(path.as_path()));
    /// let client = lp.run_until_complete(lp.create_unix_datagram_endpoint(|| Stop).remote_addr(&path))??;
    /// assert_eq!(client.peer_addr(), Some(here));
    /// client.send(b"hi")?;
    /// lp.run_forever()?;
    /// client.close();
    /// server.close();
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(mut self, path: impl AsRef<Path>) -> Self {
        self.local = Some(path.as_ref().to_path_buf());
        self
    }

    /// Connects the socket to `path`. See the example on
    /// [`local_addr`](UnixDatagramEndpointBuilder::local_addr).
    pub fn remote_addr(mut self, path: impl AsRef<Path>) -> Self {
        self.remote = Some(path.as_ref().to_path_buf());
        self
    }

    /// Uses an existing socket (e.g. one end of
    /// [`UnixDatagram::pair`]); it is made non-blocking. No other option
    /// may be set.
    pub fn socket(mut self, sock: UnixDatagram) -> Self {
        self.sock = Some(sock);
        self
    }

    /// Creates the socket and the transport, at once: a path needs no
    /// resolving. What the future runs, and
    /// [`DatagramSocket::from_unix`](crate::DatagramSocket::from_unix).
    pub(crate) fn create_now(self) -> io::Result<DatagramTransport<UnixAddr>> {
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
        Ok(DatagramTransport::new(
            &self.lp,
            sock,
            Box::new((self.factory)()),
            remote,
        )?)
    }
}

/// Awaiting the builder creates the socket and the transport.
///
/// # Errors
///
/// Options with [`socket`](UnixDatagramEndpointBuilder::socket)
/// (`InvalidInput`, asyncio's message); the OS error of `socket`, `bind` or
/// `connect`; [`Error::Closed`](crate::Error::Closed) inside the
/// `io::Error`.
impl<F, P> IntoFuture for UnixDatagramEndpointBuilder<F>
where
    F: FnOnce() -> P + 'static,
    P: DatagramProtocol<UnixAddr> + 'static,
{
    type Output = io::Result<DatagramTransport<UnixAddr>>;
    type IntoFuture = LocalBoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.create_now() })
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
    /// (asyncio's `create_datagram_endpoint`): chain the options, then
    /// `.await` it, as [`create_server`](LoopHandle::create_server)'s
    /// builder. The addresses are any [`ToAddrs`]; a name is resolved off
    /// the loop thread. `factory` is called once the socket exists.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
    /// )??;
    /// assert!(t.local_addr().unwrap().port() != 0);
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
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
    /// `create_datagram_endpoint(family=AF_UNIX)`): chain the options, then
    /// `.await` it.
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
    /// let t = lp.run_until_complete(lp.create_unix_datagram_endpoint(|| Stop).socket(mine))??;
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
