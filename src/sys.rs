//! The only module allowed `unsafe` (DESIGN.md D11). Each block says why
//! it is sound.

#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;

use socket2::{SockAddr, Socket};

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
