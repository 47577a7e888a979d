//! Addresses and sockets before they become transports: `"host:port"`
//! parsing, name resolution off the loop thread, binding listeners (TCP
//! and Unix) and client sockets to local addresses, and Unix socket paths.
//!
//! Shared by [`server`](crate::server) and `connect`, which import this
//! module and never each other. Nothing here touches the loop: it deals in
//! `socket2` sockets and addresses only.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::datagram_endpoint::Family;

/// Splits `"host:port"` (`"[v6]:port"` too; an empty host is allowed).
pub(crate) fn split_host_port(addr: &str) -> io::Result<(String, u16)> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "expected host:port"))?;
    let port = port
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port))
}

/// Resolves `host:port` for a stream socket, off the loop thread unless
/// `host` is a numeric address (the system resolver blocks).
///
/// # Errors
///
/// The resolver's error, or "getaddrinfo() returned empty list".
pub(crate) async fn resolve(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("sloop-resolver".into())
        .spawn(move || {
            let r = (host.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<_>>());
            let _ = tx.send(r);
        })?;
    let addrs = rx
        .await
        .map_err(|_| io::Error::other("the resolver thread died"))??;
    if addrs.is_empty() {
        return Err(io::Error::other("getaddrinfo() returned empty list"));
    }
    Ok(addrs)
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

/// [`resolve`], then [`keep_family`].
///
/// # Errors
///
/// As both.
pub(crate) async fn resolve_family(
    host: String,
    port: u16,
    family: Option<Family>,
) -> io::Result<Vec<SocketAddr>> {
    let addrs = resolve(host.clone(), port).await?;
    keep_family(addrs, family, &host)
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

/// Resolves each of `addrs` (`"host:port"`; an empty host or `*` is every
/// interface, IPv4 and IPv6) and binds and listens a non-blocking TCP
/// socket on each distinct address: asyncio's `create_server` binding.
///
/// An IPv6 socket is IPv6-only, so dual stack takes two sockets. An
/// address that is not available (IPv6 disabled) is skipped when there
/// are others (asyncio 3.13). With a family, only its addresses are bound.
///
/// # Errors
///
/// A resolution error, "getaddrinfo('host') returned empty list", no
/// address of the family ([`keep_family`]), the first bind error as
/// [`bind_error`], or the last skipped one if nothing was bound.
pub(crate) async fn bind_tcp(addrs: &[String], opts: ListenOptions) -> io::Result<Vec<Socket>> {
    let mut all: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        let (host, port) = split_host_port(a)?;
        let resolved = if host.is_empty() || host == "*" {
            // All interfaces, both families (two sockets, v6 only on v6).
            let any = vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            ];
            keep_family(any, opts.family, &host)?
        } else {
            resolve_family(host.clone(), port, opts.family).await?
        };
        if resolved.is_empty() {
            return Err(io::Error::other(format!(
                "getaddrinfo('{host}') returned empty list"
            )));
        }
        for r in resolved {
            if !all.contains(&r) {
                all.push(r);
            }
        }
    }
    let mut out = Vec::new();
    let mut last_err = None;
    for sa in &all {
        let s = match Socket::new(Domain::for_address(*sa), Type::STREAM, None) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("create_server() failed to create socket for {sa}: {e}");
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
