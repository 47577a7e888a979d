//! The only module allowed `unsafe` (docs/design.md D11): system calls that the
//! safe wrappers make slower or cannot express. Each block says why it is
//! sound.
//!
//! - `recv`/`send` straight on a socket's fd, for the stream transports'
//!   hot path: socket2's safe wrappers cost about 20 instructions more per
//!   call (uninitialised-buffer casts and length clamping), which shows in
//!   the echo benchmark.
//! - `recv_from` into an initialised buffer, for `sock_recvfrom`.
//! - `recvfrom`/`sendto` for UDP with the address converted by hand, for
//!   the datagram transports' hot path.
//! - [`OpenSocket`]: a transport's socket with its fd cached, so that the
//!   read and write paths reach the fd with one load, yet no call can reach
//!   it once the socket is closed (and the number reused): the cache is -1
//!   then, which the kernel refuses.
//! - [`service_port`]: `getaddrinfo` for a service name's port ("http"
//!   is 80), which std's resolver does not look up.
//! - [`sendfile`]: `sendfile(2)` from a file at an explicit offset to a
//!   socket, which neither std nor socket2 wraps.
//! - Signals: registering a signal action (`signal-hook-registry`), and
//!   reading and setting a signal's disposition, so that removing the last
//!   handler restores what was there before.
//! - Children: `pidfd_open` (to watch a child's exit with the poller) and
//!   sending a signal to a child that has not been reaped.
//! - [`name_info`]: `getnameinfo`, which std does not offer.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

use socket2::{SockAddr, Socket};

/// A transport's socket, open until the transport closes it (after
/// `connection_lost`, or when the loop closes).
///
/// The read and write paths call [`recv`](OpenSocket::recv),
/// [`send`](OpenSocket::send) and the UDP pair on it: each makes the
/// syscall on the cached fd, which is -1 from the moment the socket is
/// closed, so none can reach an fd that was closed and reused (the kernel
/// answers -1 with `EBADF`). Everything else
/// borrows the socket for a moment ([`with`](OpenSocket::with)) or holds
/// a shared clone ([`lend`](OpenSocket::lend)), so that a user's closure
/// runs with nothing borrowed (D2).
pub(crate) struct OpenSocket<S> {
    /// The socket's fd while `sock` holds it; -1 once closed.
    fd: Cell<RawFd>,
    sock: Cell<Option<Rc<S>>>,
}

impl<S: AsRawFd> OpenSocket<S> {
    pub(crate) fn new(sock: S) -> OpenSocket<S> {
        OpenSocket {
            fd: Cell::new(sock.as_raw_fd()),
            sock: Cell::new(Some(Rc::new(sock))),
        }
    }

    /// The fd number while open, for descriptions and `as_raw_fd`.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        let fd = self.fd.get();
        (fd >= 0).then_some(fd)
    }

    /// `recv(fd, buf, 0)`; `EBADF` once closed.
    #[inline(always)]
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // The cache is the open socket's fd, or -1 once closed (set before
        // the socket is dropped, so never a number that was reused): the
        // kernel answers -1 with EBADF, and no test is needed here.
        recv_raw(self.fd.get(), buf)
    }

    /// `send(fd, buf, MSG_NOSIGNAL)`; `EBADF` once closed.
    #[inline(always)]
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // As in `recv`.
        send_raw(self.fd.get(), buf)
    }

    /// Runs `f` with the open socket; `None` once closed. `f` runs no
    /// user code and does not call `with` again (the socket is out of its
    /// cell meanwhile): it is a syscall or a loop of them.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        let sock = self.sock.take()?;
        let r = f(&sock);
        // The cell is empty (`f` cannot refill it): nothing to drop.
        let empty = self.sock.replace(Some(sock));
        debug_assert!(empty.is_none());
        mem::forget(empty);
        Some(r)
    }

    /// A shared clone of the socket, for code that runs user code while
    /// it holds it (`with_socket`). Closing the transport meanwhile closes
    /// the fd once the clone is dropped.
    pub(crate) fn lend(&self) -> Option<Rc<S>> {
        let sock = self.sock.take();
        let lent = sock.clone();
        self.sock.set(sock);
        lent
    }

    /// Closes the socket: the caller drops what this returns with nothing
    /// borrowed.
    pub(crate) fn close(&self) -> Option<Rc<S>> {
        self.fd.set(-1);
        self.sock.take()
    }
}

impl<S> OpenSocket<S> {
    /// [`sendfile`] to the open socket; `EBADF` once closed.
    pub(crate) fn sendfile(
        &self,
        file: BorrowedFd<'_>,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        // As in `recv`: the cache is the open fd or -1.
        sendfile_raw(self.fd.get(), file, offset, count)
    }
}

impl OpenSocket<UdpSocket> {
    /// [`udp_recv_from_raw`] on the open socket; `EBADF` once closed.
    #[inline(always)]
    pub(crate) fn udp_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        // As in `recv`.
        udp_recv_from_raw(self.fd.get(), buf)
    }

    /// [`udp_send_to_raw`] on the open socket; `EBADF` once closed.
    #[inline(always)]
    pub(crate) fn udp_send_to(&self, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
        // As in `recv`.
        udp_send_to_raw(self.fd.get(), buf, addr)
    }
}

/// `recv(fd, buf, 0)` on an fd that is open or -1 (which the kernel
/// answers with EBADF): never one that was closed, whose number may have
/// been reused. [`OpenSocket`] is what guarantees that.
#[inline(always)]
fn recv_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call; the kernel writes at most that many. `fd` is open or -1 (the
    // callers' guarantee), so the call touches no file it does not own.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(fd, buf, MSG_NOSIGNAL)` (never SIGPIPE) on an fd that is open or
/// -1, as [`recv_raw`].
#[inline(always)]
fn send_raw(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole
    // call. `fd` is open or -1, as in `recv_raw`.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `recvfrom(2)` into an initialised buffer.
///
/// socket2 only offers `recv_from` on `&mut [MaybeUninit<u8>]`; this is the
/// same call on a `&mut [u8]`.
pub(crate) fn recv_from(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and
    // socket2 documents that `recv_from` never writes uninitialised bytes
    // into the buffer (it hands it straight to recvfrom(2)), so `buf` stays
    // fully initialised.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

/// `recvfrom(2)` on a UDP socket (an fd that is open or -1, as
/// [`recv_raw`]), straight into `buf`, with the sender's address converted
/// to a [`SocketAddr`]: what std's `UdpSocket::recv_from` does, minus
/// zeroing a 128-byte `sockaddr_storage` per call (the kernel says how
/// much of it it wrote, and only that is read).
#[inline(always)]
fn udp_recv_from_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `storage`
    // for `len` bytes, both for the whole call; recvfrom(2) writes at most
    // that much into each and sets `len` to the address length it wrote.
    // `fd` is open or -1, as in `recv_raw`.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            storage.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = socket_addr_from_c(&storage, len)?;
    Ok((n as usize, addr))
}

/// Converts the first `len` bytes of `storage`, as written by the kernel,
/// into a [`SocketAddr`]. Anything that is not a complete IPv4 or IPv6
/// address is an `InvalidInput` error (std's message).
#[inline]
fn socket_addr_from_c(
    storage: &MaybeUninit<libc::sockaddr_storage>,
    len: libc::socklen_t,
) -> io::Result<SocketAddr> {
    let len = len as usize;
    // Every address we accept is at least a `sockaddr_in` long, so the
    // family is only read once that much is known to be written.
    if len < mem::size_of::<libc::sockaddr_in>() {
        return Err(invalid_address());
    }
    // SAFETY: the kernel wrote at least `sizeof(sockaddr_in)` bytes
    // (checked above), which include the family field at offset 0.
    let family = unsafe { (*storage.as_ptr()).ss_family };
    let family = libc::c_int::from(family);
    if family == libc::AF_INET {
        // SAFETY: the kernel wrote a whole `sockaddr_in` (family and
        // length checked); `sockaddr_storage` is aligned for it.
        let a = unsafe { &*storage.as_ptr().cast::<libc::sockaddr_in>() };
        return Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
            u16::from_be(a.sin_port),
        )));
    }
    if family == libc::AF_INET6 && len >= mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: the kernel wrote a whole `sockaddr_in6` (family and
        // length checked); `sockaddr_storage` is aligned for it.
        let a = unsafe { &*storage.as_ptr().cast::<libc::sockaddr_in6>() };
        return Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(a.sin6_addr.s6_addr),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        )));
    }
    Err(invalid_address())
}

#[cold]
#[inline(never)]
fn invalid_address() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "invalid socket address")
}

/// `sendto(2)` of one datagram on a UDP socket (an fd that is open or -1,
/// as [`recv_raw`]), with `MSG_NOSIGNAL` as std's `UdpSocket::send_to`
/// (which also goes through `ToSocketAddrs` and a generic conversion;
/// this builds the C address on the stack).
#[inline(always)]
fn udp_send_to_raw(fd: RawFd, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
    let n = match addr {
        SocketAddr::V4(a) => send_to_c_addr(
            fd,
            buf,
            &libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            },
        ),
        SocketAddr::V6(a) => send_to_c_addr(
            fd,
            buf,
            &libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            },
        ),
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `sendto(2)` with `MSG_NOSIGNAL` to the C socket address `sa` (a
/// `sockaddr_in` or a `sockaddr_in6`); returns what `sendto` returns.
#[inline]
fn send_to_c_addr<T>(fd: RawFd, buf: &[u8], sa: &T) -> isize {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes and `sa` for
    // reads of `size_of::<T>()` bytes, the length given, for the whole
    // call; the kernel only reads them (and checks the address family).
    // `fd` is open or -1, as in `recv_raw`.
    unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            MSG_NOSIGNAL,
            (sa as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

/// The port of the service `name` (`"http"`: 80) for stream or datagram
/// sockets, as `getaddrinfo(NULL, name)` finds it: in `/etc/services`, or
/// wherever the system's name service switch looks. It may block (files,
/// or network sources if configured): the caller runs it off the loop
/// thread. std's resolver takes numeric ports only.
///
/// # Errors
///
/// `InvalidInput` for a name that is not a known service of that socket
/// type (or holds a NUL byte); the system's error otherwise.
pub(crate) fn service_port(name: &str, datagram: bool) -> io::Result<u16> {
    let proto = if datagram { "udp" } else { "tcp" };
    let c_name = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a service name must not contain a NUL byte",
        )
    })?;
    // SAFETY: `addrinfo` is plain data; all zeros is "no hints" for every
    // field not set below (getaddrinfo(3)).
    let mut hints: libc::addrinfo = unsafe { mem::zeroed() };
    hints.ai_family = libc::AF_INET;
    hints.ai_socktype = if datagram {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: a NULL node is allowed with a service; `c_name` and `hints`
    // outlive the call; `list` is written only on success and freed below.
    let rc = unsafe { libc::getaddrinfo(std::ptr::null(), c_name.as_ptr(), &hints, &mut list) };
    if rc == libc::EAI_SYSTEM {
        return Err(io::Error::last_os_error());
    }
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string for
        // any code.
        let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }.to_string_lossy();
        let kind = match rc {
            libc::EAI_SERVICE | libc::EAI_NONAME => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        return Err(io::Error::new(
            kind,
            format!("unknown service '{name}' for {proto}: {why}"),
        ));
    }
    // SAFETY: on success `list` is a non-empty list that getaddrinfo
    // allocated; an AF_INET entry's `ai_addr` points to a `sockaddr_in` of
    // `ai_addrlen` bytes (checked). The list is freed once, after the read.
    let port = unsafe {
        let first = &*list;
        let port = (first.ai_family == libc::AF_INET
            && !first.ai_addr.is_null()
            && first.ai_addrlen as usize >= mem::size_of::<libc::sockaddr_in>())
        .then(|| u16::from_be((*first.ai_addr.cast::<libc::sockaddr_in>()).sin_port));
        libc::freeaddrinfo(list);
        port
    };
    port.ok_or_else(|| io::Error::other(format!("getaddrinfo gave no port for '{name}'")))
}

/// The most one `sendfile(2)` call moves on Linux (larger counts are
/// clamped by the kernel to this anyway).
pub(crate) const SENDFILE_MAX: usize = 0x7fff_f000;

/// `sendfile(2)`: up to `count` bytes of `file`, from `offset`, to the
/// socket `sock`. The file's position does not move (the offset is
/// passed explicitly). Returns the bytes sent; 0 at end of file.
///
/// # Errors
///
/// The kernel's (`EAGAIN` when the socket's buffer is full); `EINVAL`
/// for an offset past `i64::MAX`; `ENOSYS` where there is no Linux
/// `sendfile(2)`.
pub(crate) fn sendfile(
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    sendfile_raw(sock.as_raw_fd(), file, offset, count)
}

/// [`sendfile`] to an fd that is open or -1, as [`recv_raw`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn sendfile_raw(sock: RawFd, file: BorrowedFd<'_>, offset: u64, count: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `off` is a valid, writable `off_t` for the whole call (the
    // kernel reads the offset from it and writes the next one back, so the
    // file's own position is not used). `file` is a borrowed, open fd;
    // `sock` is open or -1 (the callers' guarantee, as in `recv_raw`). The
    // call writes no user memory besides `off`.
    let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, count.min(SENDFILE_MAX)) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// No Linux `sendfile(2)` here: `ENOSYS`, which sends sendfile to its
/// fallback.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn sendfile_raw(_: RawFd, _: BorrowedFd<'_>, _: u64, _: usize) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// No SIGPIPE from a send (std sets it on the platforms that have it).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MSG_NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const MSG_NOSIGNAL: libc::c_int = 0;

/// Registers `raise(&target, signal)` to run in the signal handler of
/// `signal`, next to any other registered actions.
///
/// `raise` runs in a signal handler, where only async-signal-safe work is
/// allowed: the one caller (`signals.rs`) passes `SignalTarget::raise`,
/// which sets bits in atomics and writes to the loop's eventfd, and never
/// allocates or locks.
pub(crate) fn register_signal<T: Send + Sync + 'static>(
    signal: libc::c_int,
    target: T,
    raise: fn(&T, u32),
) -> io::Result<signal_hook_registry::SigId> {
    // SAFETY: the action is async-signal-safe (see above), and `signal`
    // is checked against the registry's forbidden list by the caller (the
    // checked `register` would panic on one, not return an error).
    unsafe { signal_hook_registry::register(signal, move || raise(&target, signal as u32)) }
}

/// The current disposition (`sigaction`) of `signal`.
pub(crate) fn signal_disposition(signal: libc::c_int) -> io::Result<libc::sigaction> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the disposition into `old`,
    // which is valid for writes; zeroed is a valid `sigaction`.
    let rc = unsafe { libc::sigaction(signal, std::ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and written by the kernel on success.
    Ok(unsafe { old.assume_init() })
}

/// Sets the disposition of `signal` to `action` (one read earlier with
/// [`signal_disposition`], so its handler, if any, is one that was
/// installed in this process and is still there).
pub(crate) fn set_signal_disposition(
    signal: libc::c_int,
    action: &libc::sigaction,
) -> io::Result<()> {
    // SAFETY: `action` is a valid `sigaction` read from the kernel; a null
    // old action is allowed.
    let rc = unsafe { libc::sigaction(signal, action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_open(2)` (Linux 5.3): an fd that becomes readable when the child
/// `pid` exits. The caller holds the child unreaped, so `pid` is its own.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: the syscall takes a pid and flags (0) and returns a new fd or
    // -1; nothing is borrowed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just opened for us; owned from here.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: sends `signal` to the process of `pidfd`,
/// which names that process even after its pid is reused.
pub(crate) fn pidfd_send_signal(pidfd: &impl AsRawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid open pidfd, a signal number, a null siginfo (as
    // kill(2) would send) and flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `kill(2)` to a child the caller has not reaped (so `pid` is still
/// that child's: a zombie keeps its pid).
pub(crate) fn kill_child(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers; the pid cannot be reused while the
    // child is unreaped (see above).
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits, blocking, until the child `pid` has exited, without reaping it
/// (`waitid` with `WNOWAIT`): the watcher for kernels without pidfd, run
/// off the loop; the loop reaps it afterwards.
pub(crate) fn wait_exit_no_reap(pid: u32) -> io::Result<()> {
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `info` is valid for writes; plain integer arguments.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `getnameinfo(3)`: the host and service names of `addr` (asyncio's
/// `getnameinfo`). It may block on the name service: the caller runs it
/// off the loop thread.
pub(crate) fn name_info(addr: &SocketAddr, flags: i32) -> io::Result<(String, String)> {
    let sa = SockAddr::from(*addr);
    let mut host = [0 as libc::c_char; 1025];
    let mut serv = [0 as libc::c_char; 32];
    // SAFETY: `sa` points to a sockaddr of `sa.len()` bytes; the buffers
    // are valid for writes of the lengths given.
    let rc = unsafe {
        libc::getnameinfo(
            sa.as_ptr().cast(),
            sa.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            serv.as_mut_ptr(),
            serv.len() as libc::socklen_t,
            flags,
        )
    };
    if rc == libc::EAI_SYSTEM {
        return Err(io::Error::last_os_error());
    }
    if rc != 0 {
        // SAFETY: as in `service_port`.
        let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }.to_string_lossy();
        return Err(io::Error::other(format!("getnameinfo({addr}): {why}")));
    }
    // SAFETY: on success both buffers hold NUL-terminated strings.
    let (host, serv) = unsafe {
        (
            CStr::from_ptr(host.as_ptr()).to_string_lossy().into_owned(),
            CStr::from_ptr(serv.as_ptr()).to_string_lossy().into_owned(),
        )
    };
    Ok((host, serv))
}

/// Makes `fd` non-blocking (`fcntl(F_SETFL, O_NONBLOCK)`), for pipes that
/// std opens blocking.
pub(crate) fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on an fd the caller owns, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets SIGPIPE to ignored if it has the default disposition (which
/// kills the process on a write to a pipe with no reader); a handler or
/// an ignore set by someone else is left alone. Rust programs start with
/// it ignored already.
pub(crate) fn ignore_sigpipe() -> io::Result<()> {
    let current = signal_disposition(libc::SIGPIPE)?;
    if current.sa_sigaction == libc::SIG_DFL {
        let mut ignore = current;
        ignore.sa_sigaction = libc::SIG_IGN;
        set_signal_disposition(libc::SIGPIPE, &ignore)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_looked_up_per_socket_type() {
        // /etc/services (or the system's source) knows these everywhere.
        assert_eq!(service_port("http", false).unwrap(), 80);
        assert_eq!(service_port("domain", true).unwrap(), 53);
        let e = service_port("no-such-service-here", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .starts_with("unknown service 'no-such-service-here' for tcp: "),
            "{e}"
        );
        let e = service_port("ht\0tp", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    fn pair(ip: &str) -> (OpenSocket<UdpSocket>, OpenSocket<UdpSocket>) {
        let a = UdpSocket::bind(ip).unwrap();
        let b = UdpSocket::bind(ip).unwrap();
        (OpenSocket::new(a), OpenSocket::new(b))
    }

    fn addr(s: &OpenSocket<UdpSocket>) -> SocketAddr {
        s.with(|s| s.local_addr().unwrap()).unwrap()
    }

    fn check_round_trip(ip: &str) {
        let (a, b) = pair(ip);
        let b_addr = addr(&b);
        let n = a.udp_send_to(b"hello", &b_addr).unwrap();
        assert_eq!(n, 5);
        let mut buf = [0u8; 64];
        let (n, from) = b.udp_recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, addr(&a));
        // Empty datagrams are datagrams.
        a.udp_send_to(b"", &b_addr).unwrap();
        let (n, from) = b.udp_recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (0, addr(&a)));
        // And what std sends arrives the same way.
        let a_addr = addr(&a);
        b.with(|b| b.send_to(b"xy", a_addr).unwrap());
        let (n, from) = a.udp_recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"xy"[..], b_addr));
    }

    #[test]
    fn udp_round_trip_v4() {
        check_round_trip("127.0.0.1:0");
    }

    #[test]
    fn udp_round_trip_v6() {
        // Some sandboxes have no IPv6 loopback; nothing to test there.
        if UdpSocket::bind("[::1]:0").is_err() {
            return;
        }
        check_round_trip("[::1]:0");
    }

    #[test]
    fn udp_recv_from_truncates_and_would_block() {
        let (a, b) = pair("127.0.0.1:0");
        b.with(|b| b.set_nonblocking(true).unwrap());
        let mut buf = [0u8; 3];
        let e = b.udp_recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        a.udp_send_to(b"abcdef", &addr(&b)).unwrap();
        let (n, _) = b.udp_recv_from(&mut buf).unwrap();
        assert_eq!((n, &buf), (3, b"abc"));
    }

    #[test]
    fn udp_errors_come_from_errno() {
        let (a, _b) = pair("127.0.0.1:0");
        a.with(|a| a.set_nonblocking(true).unwrap());
        let mut buf = [0u8; 8];
        let e = a.udp_recv_from(&mut buf).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        // An IPv6 destination from an IPv4 socket.
        let to: SocketAddr = "[::1]:9".parse().unwrap();
        let e = a.udp_send_to(b"x", &to).unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e:?}");
    }

    /// Once closed, no call reaches the fd: its number may belong to a new
    /// socket by then.
    #[test]
    fn a_closed_socket_answers_ebadf_and_never_reaches_a_reused_fd() {
        let (a, b) = pair("127.0.0.1:0");
        let old_fd = a.raw_fd().unwrap();
        drop(a.close());
        assert_eq!(a.raw_fd(), None);
        assert!(a.with(|_| ()).is_none());
        // Very likely the same number, now another socket's.
        let reuser = UdpSocket::bind("127.0.0.1:0").unwrap();
        reuser.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        for e in [
            a.udp_recv_from(&mut buf).unwrap_err(),
            a.udp_send_to(b"x", &addr(&b)).map(|_| ()).unwrap_err(),
            a.recv(&mut buf).unwrap_err(),
            a.send(b"x").unwrap_err(),
        ] {
            assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        }
        // The reuser's socket saw nothing.
        assert_eq!(
            reuser.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "fd {old_fd} reused: {:?}",
            std::os::fd::AsRawFd::as_raw_fd(&reuser)
        );
    }

    #[test]
    fn socket_addr_from_c_rejects_short_and_unknown() {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        assert!(socket_addr_from_c(&storage, 0).is_err());
        // SAFETY: test-only write of the family into a zeroed storage.
        unsafe { (*storage.as_mut_ptr()).ss_family = libc::AF_INET as libc::sa_family_t };
        assert!(socket_addr_from_c(&storage, 4).is_err());
        let a = socket_addr_from_c(&storage, mem::size_of::<libc::sockaddr_in>() as _).unwrap();
        assert_eq!(a, "0.0.0.0:0".parse::<SocketAddr>().unwrap());
        // SAFETY: as above.
        unsafe { (*storage.as_mut_ptr()).ss_family = libc::AF_UNIX as libc::sa_family_t };
        assert!(socket_addr_from_c(&storage, 110).is_err());
    }
}
