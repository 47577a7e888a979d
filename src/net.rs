//! Addresses and sockets before they become transports: the one address
//! convention of every constructor ([`ToAddrs`]), name resolution off the
//! loop thread, binding listeners (TCP and Unix) and client sockets to
//! local addresses, and Unix socket paths.
//!
//! Shared by [`server`](crate::server) and `connect`, which import this
//! module and never each other. Nothing here touches the loop: it deals in
//! `socket2` sockets and addresses only.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::executor::off_loop;

/// An address family: the one to keep of the addresses a name resolves to
/// (asyncio's `family=`), or of a UDP endpoint created without addresses.
/// See the examples on [`ServerBuilder`](crate::ServerBuilder) and
/// [`DatagramEndpointBuilder::family`](crate::DatagramEndpointBuilder::family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of `addr`.
    pub(crate) fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The socket domain of the family.
    pub(crate) fn domain(self) -> Domain {
        match self {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        }
    }
}

/// Internet socket addresses as every constructor of the crate takes them:
/// [`create_server`](crate::LoopHandle::create_server),
/// [`create_connection`](crate::LoopHandle::create_connection),
/// [`open_connection`](crate::LoopHandle::open_connection),
/// [`start_server`](crate::LoopHandle::start_server), the datagram
/// endpoint's [`local_addr`](crate::DatagramEndpointBuilder::local_addr)
/// and [`remote_addr`](crate::DatagramEndpointBuilder::remote_addr),
/// [`DatagramSocket::bind`](crate::DatagramSocket::bind) and the options
/// that take an address. std's [`ToSocketAddrs`](std::net::ToSocketAddrs) with one difference: a
/// host name is resolved **off the loop thread** when the future that
/// needs it runs (the system resolver blocks), while numeric addresses
/// are used at once, with no thread.
///
/// | value | means |
/// | --- | --- |
/// | `"127.0.0.1:8080"`, `"[::1]:8080"`, `"localhost:8080"` | host (a numeric address or a name) and port |
/// | `"localhost:http"`, `("localhost", "http")` | a service name for the port, looked up as asyncio's `getaddrinfo` does (TCP or UDP as the socket is) |
/// | `("localhost", 8080)`, `(String, u16)` | host and port apart |
/// | `(IpAddr, u16)`, `(Ipv4Addr, u16)`, `(Ipv6Addr, u16)` | numeric, nothing to resolve |
/// | `SocketAddr`, `SocketAddrV4`, `SocketAddrV6` | the same |
/// | `&[SocketAddr]`, `[SocketAddr; N]`, `Vec<SocketAddr>` | several numeric addresses, in order |
/// | `":8080"`, `"*:8080"`, `("", 8080)` | where a socket is **bound** (a server, a local address): every interface, IPv4 and IPv6 (asyncio's `host=None`/`''`) |
/// | [`Addrs`] | what any of these gave |
///
/// An IPv6 address in a string needs brackets (`"[::1]:80"`), as in a URL;
/// in a tuple it goes bare (`("::1", 80)`). Unix socket paths are not
/// addresses here: each constructor has a `_unix` twin taking a path.
///
/// # Errors
///
/// Parsing happens when the value is given, and a malformed one (no
/// port, a port above 65535, an IPv6 address without brackets, an empty
/// list) is an [`InvalidInput`](io::ErrorKind::InvalidInput) error with a
/// message that quotes it. Builders keep that error and their future
/// fails with it; nothing panics. An unknown service name fails with
/// `InvalidInput` too, when the future resolves it; an unknown host with
/// the resolver's error.
///
/// ```
/// use std::net::{Ipv4Addr, SocketAddr};
/// use sloop::{EventLoop, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let lp = EventLoop::new()?;
/// let h = lp.handle();
/// lp.run_until_complete(async move {
///     // A string, as std's `TcpListener::bind` takes it.
///     let server = h.create_server(|| Quiet, "127.0.0.1:0").await?;
///     let port = server.local_addrs()[0].port();
///     // A name: resolved on another thread while the loop runs on.
///     let a = h.create_connection(|| Quiet, ("localhost", port));
///     // A numeric address: used at once.
///     let b = h.create_connection(|| Quiet, (Ipv4Addr::LOCALHOST, port));
///     let c = h.create_connection(|| Quiet, SocketAddr::from(([127, 0, 0, 1], port)));
///     for t in [a.await?, b.await?, c.await?] {
///         t.close();
///     }
///     // A malformed address is an error of the future, not a panic.
///     let err = h.create_connection(|| Quiet, "::1:80").await.unwrap_err();
///     assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
///     Ok::<(), std::io::Error>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Implement it for a type of your own by delegating:
///
/// ```
/// struct Upstream {
///     host: String,
///     port: u16,
/// }
///
/// impl sloop::ToAddrs for Upstream {
///     fn to_addrs(&self) -> std::io::Result<sloop::Addrs> {
///         (self.host.as_str(), self.port).to_addrs()
///     }
/// }
/// ```
pub trait ToAddrs {
    /// Parses `self` into the [`Addrs`] to use; names are resolved later,
    /// off the loop thread.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `self` is malformed (see the [trait
    /// docs](ToAddrs)).
    fn to_addrs(&self) -> io::Result<Addrs>;
}

/// Parsed internet socket addresses, not yet resolved: what a
/// [`ToAddrs`] value gives. Either numeric addresses, ready to use, or a
/// host name (or every interface) with a port number or service name, to
/// resolve off the loop thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addrs(Repr);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// Numeric addresses, in order: nothing to resolve.
    Ready(Vec<SocketAddr>),
    /// A name to resolve; an empty host or `*` is every interface where a
    /// socket is bound.
    Name { host: String, port: Port },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Port {
    Number(u16),
    /// A service name (`"http"`), looked up with `getaddrinfo`.
    Service(String),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Service(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for Addrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Ready(v) if v.len() == 1 => write!(f, "{}", v[0]),
            Repr::Ready(v) => {
                f.write_str("[")?;
                for (i, a) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Repr::Name { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Repr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The kind of socket an address is resolved for: a service name's port
/// may differ between TCP and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SockKind {
    Stream,
    Datagram,
}

/// What the socket does with the address: an empty host or `*` means
/// every interface only for [`Use::Bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    Bind,
    Connect,
}

fn invalid(what: impl fmt::Display, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid socket address {what}: {why}"),
    )
}

/// A port: digits, or a service name (a letter first, as RFC 6335 names
/// and `/etc/services` have them).
fn parse_port(port: &str) -> Result<Port, &'static str> {
    if port.is_empty() {
        return Err("missing port");
    }
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return port
            .parse()
            .map(Port::Number)
            .map_err(|_| "port out of range (0 to 65535)");
    }
    let first_is_letter = port.as_bytes()[0].is_ascii_alphabetic();
    if first_is_letter && port.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        Ok(Port::Service(port.to_owned()))
    } else {
        Err("the port must be a number or a service name")
    }
}

/// `host` and `port` (a number or a service name), numeric host and port
/// made ready at once.
fn host_port(host: &str, port: Port) -> Addrs {
    match (host.parse::<IpAddr>(), &port) {
        (Ok(ip), Port::Number(n)) => Addrs(Repr::Ready(vec![SocketAddr::new(ip, *n)])),
        _ => Addrs(Repr::Name {
            host: host.to_owned(),
            port,
        }),
    }
}

/// Parses `"host:port"`: `"[v6]:port"` for IPv6, an empty host allowed.
fn parse(s: &str) -> io::Result<Addrs> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(Addrs(Repr::Ready(vec![sa])));
    }
    let quoted = format!("'{s}'");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(&quoted, "'[' without ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| invalid(&quoted, "expected \"[host]:port\""))?;
        (host, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| invalid(&quoted, "expected \"host:port\""))?;
        if host.contains(':') {
            return Err(invalid(
                &quoted,
                "an IPv6 address needs brackets, as in \"[::1]:80\"",
            ));
        }
        (host, port)
    };
    let port = parse_port(port).map_err(|why| invalid(&quoted, why))?;
    check_host(host).map_err(|why| invalid(&quoted, why))?;
    Ok(host_port(host, port))
}

/// A bracket is never part of a host (an IPv6 literal's were stripped):
/// such text would print as an address that no longer parses.
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.contains(['[', ']']) {
        Err("a bracket inside the host")
    } else {
        Ok(())
    }
}

impl ToAddrs for Addrs {
    fn to_addrs(&self) -> io::Result<Addrs> {
        Ok(self.clone())
    }
}

impl ToAddrs for str {
    fn to_addrs(&self) -> io::Result<Addrs> {
        parse(self)
    }
}

impl ToAddrs for String {
    fn to_addrs(&self) -> io::Result<Addrs> {
        parse(self)
    }
}

impl ToAddrs for SocketAddr {
    fn to_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs(Repr::Ready(vec![*self])))
    }
}

impl ToAddrs for SocketAddrV4 {
    fn to_addrs(&self) -> io::Result<Addrs> {
        SocketAddr::V4(*self).to_addrs()
    }
}

impl ToAddrs for SocketAddrV6 {
    fn to_addrs(&self) -> io::Result<Addrs> {
        SocketAddr::V6(*self).to_addrs()
    }
}

impl ToAddrs for (IpAddr, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        SocketAddr::from(*self).to_addrs()
    }
}

impl ToAddrs for (Ipv4Addr, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        SocketAddr::from(*self).to_addrs()
    }
}

impl ToAddrs for (Ipv6Addr, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        SocketAddr::from(*self).to_addrs()
    }
}

impl ToAddrs for (&str, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        check_host(self.0).map_err(|why| invalid(format_args!("{self:?}"), why))?;
        Ok(host_port(self.0, Port::Number(self.1)))
    }
}

impl ToAddrs for (String, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        (self.0.as_str(), self.1).to_addrs()
    }
}

/// A host and a port given as text: digits or a service name (`"http"`).
impl ToAddrs for (&str, &str) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        let port = parse_port(self.1).map_err(|why| invalid(format_args!("{self:?}"), why))?;
        check_host(self.0).map_err(|why| invalid(format_args!("{self:?}"), why))?;
        Ok(host_port(self.0, port))
    }
}

impl ToAddrs for [SocketAddr] {
    fn to_addrs(&self) -> io::Result<Addrs> {
        if self.is_empty() {
            return Err(invalid("[]", "no address in the list"));
        }
        Ok(Addrs(Repr::Ready(self.to_vec())))
    }
}

impl<const N: usize> ToAddrs for [SocketAddr; N] {
    fn to_addrs(&self) -> io::Result<Addrs> {
        self[..].to_addrs()
    }
}

impl ToAddrs for Vec<SocketAddr> {
    fn to_addrs(&self) -> io::Result<Addrs> {
        self[..].to_addrs()
    }
}

impl<T: ToAddrs + ?Sized> ToAddrs for &T {
    fn to_addrs(&self) -> io::Result<Addrs> {
        (**self).to_addrs()
    }
}

impl Addrs {
    /// Resolves the addresses for a socket of `kind` that will `usage`
    /// them: at once for numeric ones and for every interface with a port
    /// number; on the loop's executor for a name or a service name (the
    /// system resolver blocks). The job starts at the first poll, so an
    /// unpolled future costs nothing, and a dropped one leaves the job to
    /// finish alone (or, still queued, never to run) and its answer
    /// unread. Its answer comes back through the loop's inbox, so the
    /// first poll is always `Pending`: there is a point where the future
    /// can be dropped mid-resolution (the tests of D15 drop it there).
    ///
    /// # Errors
    ///
    /// The resolver's error; `InvalidInput` for an unknown service name;
    /// "getaddrinfo() returned empty list".
    pub(crate) async fn resolve(self, kind: SockKind, usage: Use) -> io::Result<Vec<SocketAddr>> {
        let (host, port) = match self.0 {
            Repr::Ready(v) => return Ok(v),
            Repr::Name { host, port } => (host, port),
        };
        let datagram = kind == SockKind::Datagram;
        if usage == Use::Bind && (host.is_empty() || host == "*") {
            // Every interface, both families (two sockets, v6 only on v6).
            let port = match port {
                Port::Number(n) => n,
                Port::Service(name) => {
                    off_loop(move || crate::sys::service_port(&name, datagram)).await?
                }
            };
            return Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            ]);
        }
        off_loop(move || {
            let port = match port {
                Port::Number(n) => n.to_string(),
                Port::Service(name) => name,
            };
            crate::executor::lookup(&host, &port, datagram)
        })
        .await
    }

    /// [`resolve`](Addrs::resolve), then [`keep_family`].
    ///
    /// # Errors
    ///
    /// As both.
    pub(crate) async fn resolve_family(
        self,
        kind: SockKind,
        usage: Use,
        family: Option<Family>,
    ) -> io::Result<Vec<SocketAddr>> {
        let shown = self.to_string();
        let addrs = self.resolve(kind, usage).await?;
        keep_family(addrs, family, &shown)
    }
}

/// Whether `addr` is of `family`.
pub(crate) fn is_of(family: Family, addr: &SocketAddr) -> bool {
    match family {
        Family::V4 => addr.is_ipv4(),
        Family::V6 => addr.is_ipv6(),
    }
}

/// Keeps the addresses of `family` (all of them with `None`): asyncio
/// passes the family to `getaddrinfo`; the std resolver takes none, so
/// the filter comes after.
///
/// # Errors
///
/// `AddrNotAvailable` if none is left ("Address family for hostname not
/// supported", `getaddrinfo`'s words).
pub(crate) fn keep_family(
    mut addrs: Vec<SocketAddr>,
    family: Option<Family>,
    host: &str,
) -> io::Result<Vec<SocketAddr>> {
    let Some(family) = family else {
        return Ok(addrs);
    };
    addrs.retain(|a| is_of(family, a));
    if addrs.is_empty() {
        let name = match family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("Address family for hostname not supported: no {name} address for '{host}'"),
        ));
    }
    Ok(addrs)
}

/// asyncio's bind error: "error while attempting to bind on address
/// `addr`: `reason`" (the reason in lower case), keeping the error's kind.
pub(crate) fn bind_error(addr: impl fmt::Display, e: &io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "error while attempting to bind on address {addr}: {}",
            e.to_string().to_lowercase()
        ),
    )
}

/// How [`bind_tcp`] makes its listening sockets: `create_server`'s
/// options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenOptions {
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: u32,
    /// Only addresses of this family (asyncio's `family=`).
    pub(crate) family: Option<Family>,
    /// `SO_KEEPALIVE` on the listening socket, which accepted sockets
    /// inherit (asyncio 3.13's `keep_alive=`).
    pub(crate) keep_alive: bool,
}

/// Resolves each of `addrs` (at once, concurrently; an empty host or `*`
/// is every interface, IPv4 and IPv6) and binds and listens a non-blocking
/// TCP socket on each distinct address: asyncio's `create_server` binding.
///
/// An IPv6 socket is IPv6-only, so dual stack takes two sockets. An
/// address that is not available (IPv6 disabled) is skipped when there
/// are others (asyncio 3.13). With a family, only its addresses are bound.
///
/// # Errors
///
/// A resolution error, no address of the family ([`keep_family`]), the
/// first bind error as [`bind_error`], or the last skipped one if nothing
/// was bound.
pub(crate) async fn bind_tcp(addrs: Vec<Addrs>, opts: ListenOptions) -> io::Result<Vec<Socket>> {
    let resolved = futures::future::try_join_all(
        addrs
            .into_iter()
            .map(|a| a.resolve_family(SockKind::Stream, Use::Bind, opts.family)),
    )
    .await?;
    let mut all: Vec<SocketAddr> = Vec::new();
    for r in resolved.into_iter().flatten() {
        if !all.contains(&r) {
            all.push(r);
        }
    }
    let mut out = Vec::new();
    let mut last_err = None;
    for sa in &all {
        let s = match Socket::new(Domain::for_address(*sa), Type::STREAM, None) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("create_server() failed to create socket for {sa}: {e}");
                // Kept: if no address works, this is the error (EMFILE,
                // say), not a generic one.
                last_err = Some(e);
                continue;
            }
        };
        if opts.reuse_address {
            s.set_reuse_address(true)?;
        }
        if opts.reuse_port {
            s.set_reuse_port(true)?;
        }
        if opts.keep_alive {
            s.set_keepalive(true)?;
        }
        if sa.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        match s.bind(&SockAddr::from(*sa)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && all.len() > 1 => {
                // IPv6 disabled, say: skip it (asyncio 3.13).
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(bind_error(sa, &e)),
        }
        s.listen(opts.backlog as i32)?;
        out.push(s);
    }
    if out.is_empty() {
        return Err(last_err.unwrap_or_else(|| {
            io::Error::other(format!("could not bind on any address out of {all:?}"))
        }));
    }
    Ok(out)
}

/// Binds `sock` to the first of `local` of its own family (asyncio's
/// `create_connection(local_addr=)`), trying the next on a bind error.
///
/// # Errors
///
/// The last bind error as [`bind_error`], or "no matching local address
/// with family=... found".
pub(crate) fn bind_local(sock: &Socket, local: &[SocketAddr]) -> io::Result<()> {
    let domain = sock.domain()?;
    let mut last = None;
    for l in local {
        if Domain::for_address(*l) != domain {
            continue;
        }
        match sock.bind(&SockAddr::from(*l)) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(bind_error(l, &e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::other(format!(
            "no matching local address with family={domain:?} found"
        ))
    }))
}

/// A Unix socket address for `path`, refusing a NUL inside it (the kernel
/// would silently cut the path there; R30). A leading NUL is an abstract
/// name. Too long a path is refused by socket2 (`InvalidInput`).
pub(crate) fn unix_addr(path: &Path) -> io::Result<SockAddr> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.iter().skip(1).any(|&b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a Unix socket path must not contain a NUL byte",
        ));
    }
    SockAddr::unix(path)
}

/// The socket file a Unix listener bound: its path with the device and
/// inode it had, so that closing removes it only if it is still ours.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the file if the path still names the file that was bound
    /// (not one another server put there since).
    pub(crate) fn remove_if_ours(&self) {
        if let Ok(md) = std::fs::symlink_metadata(&self.path) {
            if md.dev() == self.dev && md.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds and listens a non-blocking Unix stream socket at `path`, with the
/// file's permission bits set to `mode` before `listen`. A leftover socket
/// file is removed only if a connect to it is refused (R29). Returns the
/// socket file to remove on close (none for an abstract name).
///
/// # Errors
///
/// `AddrInUse` ("Address '...' is already in use") if a live server or a
/// non-socket file holds the path; `InvalidInput` for a bad path.
pub(crate) fn bind_unix(
    path: &Path,
    backlog: u32,
    mode: Option<u32>,
) -> io::Result<(Socket, Option<SocketFile>)> {
    let addr = unix_addr(path)?;
    let is_abstract = path.as_os_str().as_encoded_bytes().first() == Some(&0);
    if !is_abstract {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if md.file_type().is_socket() {
                let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                match probe.connect(&addr) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        let _ = std::fs::remove_file(path);
                    }
                    _ => {} // live (or unknown): leave it; bind reports AddrInUse
                }
            }
        }
    }
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    if let Err(e) = s.bind(&addr) {
        if e.kind() == io::ErrorKind::AddrInUse {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("Address '{}' is already in use", path.display()),
            ));
        }
        return Err(e);
    }
    if is_abstract {
        s.listen(backlog as i32)?;
        return Ok((s, None)); // no file to clean up
    }
    let md = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: md.dev(),
        ino: md.ino(),
    };
    if let Some(mode) = mode {
        // Not listening yet: a connect now is refused, so nobody gets in
        // under the mode bind gave the file.
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    }
    if let Err(e) = s.listen(backlog as i32) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok((s, Some(file)))
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    use futures::FutureExt;

    use super::{Addrs, Port, Repr, SockKind, ToAddrs, Use};

    fn ready(addrs: &[&str]) -> Addrs {
        Addrs(Repr::Ready(
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        ))
    }

    fn name(host: &str, port: Port) -> Addrs {
        Addrs(Repr::Name {
            host: host.to_owned(),
            port,
        })
    }

    /// The error's message, checking it is `InvalidInput`.
    fn invalid(r: std::io::Result<Addrs>) -> String {
        let e = r.expect_err("malformed");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        e.to_string()
    }

    #[test]
    fn numeric_forms_are_ready_at_once() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let one = ready(&["127.0.0.1:80"]);
        assert_eq!("127.0.0.1:80".to_addrs().unwrap(), one);
        assert_eq!(String::from("127.0.0.1:80").to_addrs().unwrap(), one);
        assert_eq!(("127.0.0.1", 80).to_addrs().unwrap(), one);
        assert_eq!((String::from("127.0.0.1"), 80).to_addrs().unwrap(), one);
        assert_eq!(("127.0.0.1", "80").to_addrs().unwrap(), one);
        assert_eq!(
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 80).to_addrs().unwrap(),
            one
        );
        assert_eq!((Ipv4Addr::LOCALHOST, 80).to_addrs().unwrap(), one);
        assert_eq!(v4.to_addrs().unwrap(), one);
        assert_eq!(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80)
                .to_addrs()
                .unwrap(),
            one
        );
        assert_eq!((&&v4).to_addrs().unwrap(), one, "through references");
        let six = ready(&["[::1]:80"]);
        assert_eq!("[::1]:80".to_addrs().unwrap(), six);
        assert_eq!(("::1", 80).to_addrs().unwrap(), six);
        assert_eq!((Ipv6Addr::LOCALHOST, 80).to_addrs().unwrap(), six);
        assert_eq!(
            SocketAddrV6::new(Ipv6Addr::LOCALHOST, 80, 0, 0)
                .to_addrs()
                .unwrap(),
            six
        );
        let both = ready(&["127.0.0.1:80", "[::1]:80"]);
        assert_eq!([v4, v6].to_addrs().unwrap(), both);
        assert_eq!(vec![v4, v6].to_addrs().unwrap(), both);
        assert_eq!([v4, v6][..].to_addrs().unwrap(), both);
        assert_eq!(both.to_string(), "[127.0.0.1:80, [::1]:80]");
    }

    #[test]
    fn names_services_and_every_interface_wait_for_resolution() {
        let http = || Port::Service("http".into());
        assert_eq!(
            "localhost:8080".to_addrs().unwrap(),
            name("localhost", Port::Number(8080))
        );
        assert_eq!(
            "localhost:http".to_addrs().unwrap(),
            name("localhost", http())
        );
        assert_eq!(
            ("localhost", "http").to_addrs().unwrap(),
            name("localhost", http())
        );
        // A numeric host with a service name still needs the lookup.
        assert_eq!("[::1]:http".to_addrs().unwrap(), name("::1", http()));
        assert_eq!("[::1]:http".to_addrs().unwrap().to_string(), "[::1]:http");
        // Every interface (where bound): an empty host or `*`.
        assert_eq!(":8080".to_addrs().unwrap(), name("", Port::Number(8080)));
        assert_eq!("*:8080".to_addrs().unwrap(), name("*", Port::Number(8080)));
        assert_eq!(("", 8080).to_addrs().unwrap(), name("", Port::Number(8080)));
        // An IPv6 zone by interface name is for the resolver.
        assert_eq!(
            "[fe80::1%lo]:80".to_addrs().unwrap(),
            name("fe80::1%lo", Port::Number(80))
        );
    }

    #[test]
    fn malformed_addresses_are_invalid_input_quoting_them() {
        let m = invalid("localhost".to_addrs());
        assert_eq!(
            m,
            "invalid socket address 'localhost': expected \"host:port\""
        );
        let m = invalid("localhost:".to_addrs());
        assert_eq!(m, "invalid socket address 'localhost:': missing port");
        let m = invalid("localhost:65536".to_addrs());
        assert!(m.ends_with("port out of range (0 to 65535)"), "{m}");
        let m = invalid("::1:80".to_addrs());
        assert!(m.contains("needs brackets"), "{m}");
        let m = invalid("[::1:80".to_addrs());
        assert!(m.contains("'[' without ']'"), "{m}");
        let m = invalid("[::1]80".to_addrs());
        assert!(m.contains("expected \"[host]:port\""), "{m}");
        let m = invalid("localhost:-1".to_addrs());
        assert!(
            m.ends_with("the port must be a number or a service name"),
            "{m}"
        );
        let m = invalid("localhost:ht tp".to_addrs());
        assert!(
            m.ends_with("the port must be a number or a service name"),
            "{m}"
        );
        let m = invalid(("localhost", "").to_addrs());
        assert_eq!(
            m,
            "invalid socket address (\"localhost\", \"\"): missing port"
        );
        let m = invalid(Vec::<SocketAddr>::new().to_addrs());
        assert_eq!(m, "invalid socket address []: no address in the list");
    }

    /// Polls `fut` once, with no loop and no waker to speak of.
    fn now<F: std::future::Future>(fut: F) -> Option<F::Output> {
        fut.now_or_never()
    }

    #[test]
    fn the_resolver_runs_on_another_thread() {
        let here = std::thread::current().id();
        let there =
            futures::executor::block_on(super::off_loop(|| Ok(std::thread::current().id())));
        assert_ne!(there.unwrap(), here);
    }

    #[test]
    fn numeric_addresses_resolve_in_the_first_poll() {
        let got = now("127.0.0.1:80"
            .to_addrs()
            .unwrap()
            .resolve(SockKind::Stream, Use::Connect));
        assert_eq!(got.unwrap().unwrap(), ["127.0.0.1:80".parse().unwrap()]);
        // Every interface with a port number: both unspecified addresses.
        let got = now(":80"
            .to_addrs()
            .unwrap()
            .resolve(SockKind::Stream, Use::Bind));
        let want: Vec<SocketAddr> = vec!["0.0.0.0:80".parse().unwrap(), "[::]:80".parse().unwrap()];
        assert_eq!(got.unwrap().unwrap(), want);
        // A name goes to the resolver thread: never ready at the first poll.
        let fut = "localhost:80"
            .to_addrs()
            .unwrap()
            .resolve(SockKind::Stream, Use::Connect);
        let mut fut = Box::pin(fut);
        assert!(now(fut.as_mut()).is_none(), "a name waits for the thread");
        let addrs = futures::executor::block_on(fut).unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{addrs:?}"
        );
        // So does a service name, looked up for the socket's kind.
        let udp = "127.0.0.1:domain".to_addrs().unwrap();
        let addrs = futures::executor::block_on(udp.resolve(SockKind::Datagram, Use::Connect));
        assert_eq!(addrs.unwrap(), ["127.0.0.1:53".parse().unwrap()]);
        let bad = "127.0.0.1:no-such-service".to_addrs().unwrap();
        let e =
            futures::executor::block_on(bad.resolve(SockKind::Stream, Use::Connect)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}
