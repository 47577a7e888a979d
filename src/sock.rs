//! Low-level socket futures: asyncio's `loop.sock_*` methods.
//!
//! Each method of [`LoopHandle`] here takes a borrowed, **non-blocking**
//! socket (anything that is [`AsFd`]: a [`socket2::Socket`], a
//! `std::net::TcpStream`/`TcpListener`/`UdpSocket` or a Unix socket, after
//! `set_nonblocking(true)`) and returns a future that borrows the socket,
//! not the loop handle.
//!
//! # How they work
//!
//! As in asyncio, each operation is first tried directly; only when the
//! socket says `EAGAIN` (or `EINTR`) does the future register a reader or a
//! writer on the loop ([`add_reader`](LoopHandle::add_reader) /
//! [`add_writer`](LoopHandle::add_writer), so a socket that a live
//! transport owns is refused with [`Error::FdUsedByTransport`]) and wait.
//! The registration is one-shot: when the fd becomes ready, its callback
//! wakes the future and removes itself, and the future tries again. So an
//! idle future costs nothing, and a future that is not polled any more
//! cannot make the loop spin on a level-triggered fd.
//!
//! When such a future is dropped while it waits, it removes its reader or
//! writer at once (not in a later iteration), and only if it is still the
//! one it registered: if the fd's reader was replaced meanwhile (a new
//! `add_reader`, or another `sock_*` future on the same socket), the new one
//! is left alone (asyncio bpo-30064: a replaced handle is cancelled, and a
//! cancelled handle is never removed again). If its registration is removed
//! or replaced by someone else while it waits, the future fails with an
//! error instead of waiting forever.
//!
//! Data is only moved inside `poll`, in the call that returns `Ready`, so a
//! dropped receive future never loses data it read.
//!
//! # Errors
//!
//! Everything fails with [`io::Error`]: the socket's own errors as the OS
//! gives them, and the loop's refusals ([`Error::Closed`],
//! [`Error::FdUsedByTransport`]) as an `io::Error` that wraps the
//! [`Error`]; get it back with
//! `err.get_ref().and_then(|e| e.downcast_ref::<sloop::Error>())`.
//! In debug mode ([`LoopHandle::set_debug`]) a blocking socket is refused
//! with [`io::ErrorKind::InvalidInput`] ("the socket must be
//! non-blocking"), as asyncio does; outside debug mode a blocking socket
//! blocks the loop.
//!
//! ```
//! use socket2::{Domain, SockAddr, Socket, Type};
//! use std::net::SocketAddr;
//!
//! let lp = sloop::EventLoop::new()?;
//! let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
//! listener.bind(&SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().unwrap()))?;
//! listener.listen(8)?;
//! listener.set_nonblocking(true)?;
//! let addr = listener.local_addr()?;
//! let client = Socket::new(Domain::IPV4, Type::STREAM, None)?;
//! client.set_nonblocking(true)?;
//!
//! let h = lp.handle();
//! let reply = lp.run_until_complete(async {
//!     let (accepted, connected) =
//!         futures::future::join(h.sock_accept(&listener), h.sock_connect(&client, &addr)).await;
//!     let (server_side, _peer) = accepted?;
//!     connected?;
//!     h.sock_sendall(&client, b"ping").await?;
//!     h.sock_recv(&server_side, 16).await
//! })??;
//! assert_eq!(reply, b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Error`]: crate::Error
//! [`Error::Closed`]: crate::Error::Closed
//! [`Error::FdUsedByTransport`]: crate::Error::FdUsedByTransport

use std::cell::Cell;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use socket2::{SockAddr, SockRef, Socket};

use crate::event_loop::{get_running_loop, Handle, LoopHandle};

/// Shared by a one-shot registration's callback and the future waiting on it.
#[derive(Default)]
struct WaitState {
    fired: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// One reader or writer registration, waiting for its fd to be ready once.
///
/// Dropping it before it fired removes the registration, unless it was
/// removed or replaced already (then its handle is cancelled).
struct IoWait {
    lp: LoopHandle,
    fd: RawFd,
    read: bool,
    handle: Handle,
    state: Rc<WaitState>,
}

impl IoWait {
    #[track_caller]
    fn register(lp: &LoopHandle, fd: RawFd, read: bool) -> io::Result<IoWait> {
        let state = Rc::new(WaitState::default());
        let fired = state.clone();
        let callback = move || {
            fired.fired.set(true);
            if let Some(w) = fired.waker.take() {
                w.wake();
            }
            // One-shot. This callback only runs while it is the fd's
            // current reader/writer, on the loop that runs it, so this
            // removes exactly this registration (and cancels its handle).
            if let Some(lp) = get_running_loop() {
                let _ = if read {
                    lp.remove_reader(&fd)
                } else {
                    lp.remove_writer(&fd)
                };
            }
        };
        let handle = if read {
            lp.add_reader(&fd, callback)?
        } else {
            lp.add_writer(&fd, callback)?
        };
        Ok(IoWait {
            lp: lp.clone(),
            fd,
            read,
            handle,
            state,
        })
    }
}

impl Future for IoWait {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.fired.get() {
            return Poll::Ready(Ok(()));
        }
        if self.handle.cancelled() {
            let what = if self.read { "reader" } else { "writer" };
            return Poll::Ready(Err(io::Error::other(format!(
                "the {what} of file descriptor {} was removed or replaced while a sock_* future waited on it",
                self.fd
            ))));
        }
        self.state.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for IoWait {
    fn drop(&mut self) {
        // A cancelled handle was removed or replaced already: whatever is
        // registered on the fd now belongs to someone else (bpo-30064).
        if !self.handle.cancelled() {
            let _ = if self.read {
                self.lp.remove_reader(&self.fd)
            } else {
                self.lp.remove_writer(&self.fd)
            };
        }
    }
}

/// Whether an error means "not now, try again when ready".
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Runs `op` until it does not say `EAGAIN`/`EINTR`, waiting for the fd to
/// be readable (`read`) or writable between tries.
async fn retry<T>(
    lp: &LoopHandle,
    fd: RawFd,
    read: bool,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if is_retry(&e) => {}
            done => return done,
        }
        IoWait::register(lp, fd, read)?.await?;
    }
}

/// asyncio's debug-mode check (`_check_ssl_socket` aside): refuse a
/// blocking socket, which would block the whole loop.
fn check_nonblocking(lp: &LoopHandle, sock: &SockRef<'_>) -> io::Result<()> {
    if lp.debug() && !sock.nonblocking()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket must be non-blocking",
        ));
    }
    Ok(())
}

/// Waits once for `fd` to be readable (`read`) or writable, with a
/// one-shot reader or writer removed at once if the future is dropped
/// (for the sendfile module, which sends and reads on its own).
pub(crate) async fn wait_ready(lp: &LoopHandle, fd: RawFd, read: bool) -> io::Result<()> {
    IoWait::register(lp, fd, read)?.await
}

/// A borrowed socket2 view of `sock`, its fd, and the debug check.
pub(crate) fn prepare<'a, S: AsFd>(
    lp: &LoopHandle,
    sock: &'a S,
) -> io::Result<(SockRef<'a>, RawFd)> {
    let fd = sock.as_fd().as_raw_fd();
    let sock = SockRef::from(sock);
    check_nonblocking(lp, &sock)?;
    Ok((sock, fd))
}

impl LoopHandle {
    /// Receives up to `n` bytes from a connected socket (asyncio's
    /// `sock_recv`). An empty vector means the peer closed its side (or
    /// `n` was 0). See the [module example](crate::sock).
    ///
    /// # Errors
    ///
    /// The socket's errors; see the [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes are read only in the poll that returns them, so
    /// dropping the future loses no data, and its reader is removed at once.
    pub fn sock_recv<'a, S: AsFd>(
        &self,
        sock: &'a S,
        n: usize,
    ) -> impl Future<Output = io::Result<Vec<u8>>> + 'a {
        let lp = self.clone();
        async move {
            let mut buf = vec![0; n];
            let got = lp.sock_recv_into(sock, &mut buf).await?;
            buf.truncate(got);
            Ok(buf)
        }
    }

    /// Receives into `buf` from a connected socket and returns the number
    /// of bytes read (asyncio's `sock_recv_into`); 0 means the peer closed
    /// its side (or `buf` is empty). See the example on
    /// [`sock_sendto`](LoopHandle::sock_sendto).
    ///
    /// # Errors
    ///
    /// The socket's errors; see the [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `buf` is written only in the poll that returns `Ready`,
    /// and the reader is removed at once on drop.
    pub fn sock_recv_into<'a, S: AsFd>(
        &self,
        sock: &'a S,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        let lp = self.clone();
        async move {
            let (sock, fd) = prepare(&lp, sock)?;
            retry(&lp, fd, true, || (&*sock).read(buf)).await
        }
    }

    /// Receives one datagram of up to `n` bytes and the address it came
    /// from (asyncio's `sock_recvfrom`). A longer datagram is truncated. See the example on
    /// [`sock_sendto`](LoopHandle::sock_sendto).
    ///
    /// # Errors
    ///
    /// The socket's errors; see the [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`sock_recv`](LoopHandle::sock_recv).
    pub fn sock_recvfrom<'a, S: AsFd>(
        &self,
        sock: &'a S,
        n: usize,
    ) -> impl Future<Output = io::Result<(Vec<u8>, SockAddr)>> + 'a {
        let lp = self.clone();
        async move {
            let mut buf = vec![0; n];
            let (got, addr) = lp.sock_recvfrom_into(sock, &mut buf).await?;
            buf.truncate(got);
            Ok((buf, addr))
        }
    }

    /// Receives one datagram into `buf`; returns its length (at most
    /// `buf.len()`: the rest of a longer datagram is lost) and the address
    /// it came from (asyncio's `sock_recvfrom_into`; slice `buf` to limit
    /// the size, in place of asyncio's `nbytes`). See the example on
    /// [`sock_sendto`](LoopHandle::sock_sendto).
    ///
    /// # Errors
    ///
    /// The socket's errors; see the [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`sock_recv_into`](LoopHandle::sock_recv_into).
    pub fn sock_recvfrom_into<'a, S: AsFd>(
        &self,
        sock: &'a S,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SockAddr)>> + 'a {
        let lp = self.clone();
        async move {
            let (sock, fd) = prepare(&lp, sock)?;
            retry(&lp, fd, true, || crate::sys::recv_from(&sock, buf)).await
        }
    }

    /// Sends all of `data` on a connected socket (asyncio's
    /// `sock_sendall`), waiting for room in the send buffer as often as
    /// needed. Sends with `MSG_NOSIGNAL`: a closed peer is an
    /// `EPIPE` error, never a `SIGPIPE`. See the
    /// [module example](crate::sock).
    ///
    /// # Errors
    ///
    /// The socket's errors; see the [module docs](crate::sock#errors).
    /// After an error, an unknown prefix of `data` may have been sent.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped future may have sent a prefix of `data`
    /// (and nothing says how long). Its writer is removed at once, so a
    /// later `sock_sendall` on the same socket works.
    pub fn sock_sendall<'a, S: AsFd>(
        &self,
        sock: &'a S,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + 'a {
        let lp = self.clone();
        async move {
            let (sock, fd) = prepare(&lp, sock)?;
            let mut sent = 0;
            retry(&lp, fd, false, || {
                while sent < data.len() {
                    match sock.send_with_flags(&data[sent..], libc::MSG_NOSIGNAL) {
                        Ok(n) => sent += n,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await
        }
    }

    /// Sends one datagram to `addr` and returns the number of bytes sent
    /// (asyncio's `sock_sendto`), waiting for room if the socket says
    /// `EAGAIN`.
    ///
    /// Two UDP sockets on localhost, `b` connected to `a`:
    ///
    /// ```
    /// use socket2::SockAddr;
    /// use std::net::UdpSocket;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let a = UdpSocket::bind("127.0.0.1:0")?;
    /// let b = UdpSocket::bind("127.0.0.1:0")?;
    /// b.connect(a.local_addr()?)?;
    /// a.set_nonblocking(true)?;
    /// b.set_nonblocking(true)?;
    /// let b_addr = SockAddr::from(b.local_addr()?);
    ///
    /// let h = lp.handle();
    /// lp.run_until_complete(async {
    ///     h.sock_sendall(&b, b"ping").await?;
    ///     let (data, from) = h.sock_recvfrom(&a, 64).await?;
    ///     assert_eq!(data, b"ping");
    ///     assert_eq!(from.as_socket(), b_addr.as_socket());
    ///
    ///     h.sock_sendto(&a, b"pong", &b_addr).await?;
    ///     let mut buf = [0; 64];
    ///     let n = h.sock_recv_into(&b, &mut buf).await?;
    ///     assert_eq!(&buf[..n], b"pong");
    ///
    ///     h.sock_sendto(&a, b"again", &from).await?;
    ///     let (n, _) = h.sock_recvfrom_into(&b, &mut buf).await?;
    ///     assert_eq!(&buf[..n], b"again");
    ///     Ok::<_, std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The socket's errors; see the [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a datagram is sent whole in the poll that returns
    /// `Ready`, or not at all.
    pub fn sock_sendto<'a, S: AsFd>(
        &self,
        sock: &'a S,
        data: &'a [u8],
        addr: &'a SockAddr,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        let lp = self.clone();
        async move {
            let (sock, fd) = prepare(&lp, sock)?;
            retry(&lp, fd, false, || {
                sock.send_to_with_flags(data, addr, libc::MSG_NOSIGNAL)
            })
            .await
        }
    }

    /// Connects a non-blocking socket to `addr` (asyncio's
    /// `sock_connect`): starts the connection, waits until the socket is
    /// writable, then reads the outcome from `SO_ERROR`. Any address family
    /// works (`SockAddr::unix` for Unix sockets). No name resolution: pass
    /// a resolved address. See the [module example](crate::sock).
    ///
    /// # Errors
    ///
    /// The connection's error as the OS reports it (e.g.
    /// [`io::ErrorKind::ConnectionRefused`]); see the
    /// [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future removes its writer at once, but the connection
    /// attempt goes on in the kernel: close the socket, or await a new
    /// `sock_connect` on it to the same address, which then waits for that
    /// attempt (`EALREADY`) or succeeds at once if it has connected
    /// (`EISCONN`).
    pub fn sock_connect<'a, S: AsFd>(
        &self,
        sock: &'a S,
        addr: &'a SockAddr,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        let lp = self.clone();
        async move {
            let (sock, fd) = prepare(&lp, sock)?;
            match sock.connect(addr) {
                Ok(()) => return Ok(()),
                Err(e) if in_progress(&e) => {}
                // A retried connect on a socket whose earlier attempt is
                // still under way: wait for that attempt's outcome.
                Err(e) if e.raw_os_error() == Some(libc::EALREADY) => {}
                // ... or whose earlier attempt has succeeded meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::EISCONN) => return Ok(()),
                Err(e) => return Err(e),
            }
            loop {
                IoWait::register(&lp, fd, false)?.await?;
                match sock.take_error()? {
                    None => return Ok(()),
                    Some(e) if is_retry(&e) => {}
                    Some(e) => return Err(e),
                }
            }
        }
    }

    /// Accepts a connection on a listening socket (asyncio's
    /// `sock_accept`): the new socket, already non-blocking (and
    /// close-on-exec), and the peer's address. See the
    /// [module example](crate::sock).
    ///
    /// # Errors
    ///
    /// The listener's errors; see the [module docs](crate::sock#errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection is accepted only in the poll that returns
    /// it, so dropping the future never loses one (asyncio gh-153761), and
    /// its reader is removed at once (bpo-41317).
    pub fn sock_accept<'a, S: AsFd>(
        &self,
        sock: &'a S,
    ) -> impl Future<Output = io::Result<(Socket, SockAddr)>> + 'a {
        let lp = self.clone();
        async move {
            let (sock, fd) = prepare(&lp, sock)?;
            let (conn, addr) = retry(&lp, fd, true, || sock.accept()).await?;
            conn.set_nonblocking(true)?;
            Ok((conn, addr))
        }
    }
}

/// `connect` on a non-blocking socket that has started but not finished.
fn in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS) || is_retry(e)
}
