//! The only unsafe code of the stream transports (DESIGN.md D11): `recv`
//! and `send` straight on the socket's fd, for the hot path. socket2's
//! safe wrappers cost about 20 instructions more per call (uninitialised
//! buffer casts and length clamping), which shows in the echo benchmark.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

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
