//! The zero-copy path on a transport (asyncio's `_sendfile_native` and
//! the Unix loop's `_sock_sendfile_native`): take the transport over, let
//! its buffer drain, then `sendfile(2)` until the kernel says `EAGAIN`,
//! wait for the socket's writable event, and go on.
//!
//! Setup and teardown are one guard ([`Takeover`]): however the future
//! ends, dropped at any await included, the transport gets its writes and
//! its reading back (asyncio gh-157025 left it paused and refusing writes
//! when cancelled during the drain).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use super::{is_regular, kernel_refused, yield_now, Native, Progress, Range, CALLS_PER_POLL};
use crate::error::Error;
use crate::transport::{clone_io_error, SocketSendfile, Transport};

/// A transport taken over by a sendfile; dropping it gives it back.
struct Takeover<'a> {
    transport: &'a Transport,
    socket: &'a dyn SocketSendfile,
    was_reading: bool,
    /// Whether `sendfile_start` succeeded (so `sendfile_end` is ours to
    /// call).
    started: bool,
    /// A failure to report as the transport's fatal error.
    error: Option<io::Error>,
}

impl Drop for Takeover<'_> {
    fn drop(&mut self) {
        if self.started {
            self.socket.sendfile_end(self.error.take());
        }
        if self.was_reading {
            self.transport.resume_reading();
        }
    }
}

/// Sends the range of `file` on `transport`'s socket. `NotAvailable` if
/// the transport is not a plain socket, the file not a regular file, or
/// the kernel refuses the pair before anything is sent.
pub(super) async fn send(
    transport: &Transport,
    file: &File,
    range: Range,
    progress: &Progress<'_>,
) -> Result<(), Native> {
    let Some(socket) = transport.native_sendfile() else {
        return Err(Native::NotAvailable(format!(
            "fallback is disabled and native sendfile is not supported for transport {transport:?}"
        )));
    };
    if !is_regular(file) {
        return Err(Native::NotAvailable("not a regular file".to_owned()));
    }
    let mut takeover = Takeover {
        transport,
        socket,
        was_reading: transport.is_reading(),
        started: false,
        error: None,
    };
    transport.pause_reading();
    let drained = socket.sendfile_start().map_err(Native::Failed)?;
    takeover.started = true;
    drained.await.map_err(Native::Failed)?;

    let fd = file.as_fd();
    let mut calls = 0;
    loop {
        let left = range.left(progress.pos());
        if left == 0 {
            return Ok(());
        }
        if transport.is_closing() {
            return Err(Native::Failed(Error::ConnectionLost));
        }
        let want = usize::try_from(left).unwrap_or(usize::MAX);
        match socket.sendfile_send(fd, progress.pos(), want) {
            Ok(0) => return Ok(()), // end of file
            Ok(n) => {
                progress.add(n);
                calls += 1;
                if calls % CALLS_PER_POLL == 0 {
                    yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                socket
                    .sendfile_wait_writable()
                    .await
                    .map_err(Native::Failed)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if progress.sent() == 0 && kernel_refused(&e) => {
                return Err(Native::NotAvailable(format!(
                    "sendfile(2) call failed: {e}"
                )));
            }
            Err(e) => {
                takeover.error = Some(clone_io_error(&e));
                return Err(Native::Failed(Error::Io(e)));
            }
        }
    }
}
