//! The only module allowed `unsafe` (DESIGN.md D11): system calls that the
//! safe wrappers make slower or cannot express. Each block says why it is
//! sound.
//!
//! - `recv`/`send` straight on a socket's fd, for the stream transports'
//!   hot path: socket2's safe wrappers cost about 20 instructions more per
//!   call (uninitialised-buffer casts and length clamping), which shows in
//!   the echo benchmark.
//! - `recv_from` into an initialised buffer, for `sock_recvfrom`.

#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use socket2::{SockAddr, Socket};

/// `recv(fd, buf, 0)`.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call; the kernel writes at most that many. An invalid fd only makes
    // the call fail with EBADF.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(fd, buf, MSG_NOSIGNAL)`: never raises SIGPIPE.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole
    // call. An invalid fd only makes the call fail with EBADF.
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
