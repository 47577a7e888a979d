//! `sock_sendfile` on a raw non-blocking socket (asyncio's
//! `loop.sock_sendfile`): the same zero-copy loop as on a transport, with
//! the other `sock_*` methods' one-shot writer to wait for room, and the
//! same fallback, through `sock_sendall`.

use std::fmt;
use std::fs::File;
use std::future::IntoFuture;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use futures::future::LocalBoxFuture;
use socket2::Type;

use super::fallback::{chunk_for, FileReader};
use super::{
    is_regular, kernel_refused, yield_now, Native, Progress, Range, SendfileError, CALLS_PER_POLL,
};
use crate::error::Error;
use crate::event_loop::LoopHandle;

/// A sendfile on a raw socket, to chain options on and then `.await`
/// ([`LoopHandle::sock_sendfile`]). Its output is the number of bytes
/// sent.
///
/// # Cancel safety
///
/// Dropping the future stops between two system calls and removes its
/// writer at once; the file's position says how far it got
/// (`offset + sent`).
#[must_use = "a sendfile does nothing until awaited"]
pub struct SockSendfile<'a> {
    lp: LoopHandle,
    sock: BorrowedFd<'a>,
    file: &'a File,
    offset: u64,
    count: Option<u64>,
    fallback: bool,
}

impl<'a> SockSendfile<'a> {
    /// Whether to read the file and `sock_sendall` it where the zero-copy
    /// path does not apply (`true` by default); with `false` those cases
    /// fail with [`Error::SendfileNotAvailable`]. See the example on
    /// [`LoopHandle::sock_sendfile`].
    pub fn fallback(mut self, on: bool) -> SockSendfile<'a> {
        self.fallback = on;
        self
    }

    async fn run(self) -> Result<u64, SendfileError> {
        let SockSendfile {
            lp,
            sock,
            file,
            offset,
            count,
            fallback,
        } = self;
        let fail = |e: Error| SendfileError::new(0, e);
        let (sref, _) = crate::sock::prepare(&lp, &sock).map_err(|e| fail(e.into()))?;
        if sref.r#type().map_err(|e| fail(e.into()))? != Type::STREAM {
            return Err(fail(Error::InvalidSendfileArgument {
                message: "only SOCK_STREAM type sockets are supported".to_owned(),
            }));
        }
        let range = Range::check(offset, count).map_err(fail)?;
        let progress = Progress::new(file, offset);
        let at = |e| SendfileError::new(progress.sent(), e);
        match native(&lp, sock, file, range, &progress).await {
            Ok(()) => return Ok(progress.sent()),
            Err(Native::Failed(e)) => return Err(at(e)),
            Err(Native::NotAvailable(reason)) if !fallback => {
                return Err(at(Error::SendfileNotAvailable { reason }))
            }
            Err(Native::NotAvailable(_)) => {}
        }
        send_fallback(&lp, sock, file, range, &progress)
            .await
            .map_err(|e| at(e.into()))?;
        Ok(progress.sent())
    }
}

impl fmt::Debug for SockSendfile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockSendfile")
            .field("sock", &self.sock)
            .field("offset", &self.offset)
            .field("count", &self.count)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<'a> IntoFuture for SockSendfile<'a> {
    type Output = Result<u64, SendfileError>;
    type IntoFuture = LocalBoxFuture<'a, Result<u64, SendfileError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// `sendfile(2)` until done, waiting for room with a one-shot writer.
async fn native(
    lp: &LoopHandle,
    sock: BorrowedFd<'_>,
    file: &File,
    range: Range,
    progress: &Progress<'_>,
) -> Result<(), Native> {
    if !is_regular(file) {
        return Err(Native::NotAvailable("not a regular file".to_owned()));
    }
    let fd = file.as_fd();
    let mut calls = 0;
    loop {
        let left = range.left(progress.pos());
        if left == 0 {
            return Ok(());
        }
        let want = usize::try_from(left).unwrap_or(usize::MAX);
        match crate::sys::sendfile(sock, fd, progress.pos(), want) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                progress.add(n);
                calls += 1;
                if calls % CALLS_PER_POLL == 0 {
                    yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                crate::sock::wait_ready(lp, sock.as_raw_fd(), false)
                    .await
                    .map_err(|e| Native::Failed(e.into()))?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if progress.sent() == 0 && kernel_refused(&e) => {
                return Err(Native::NotAvailable(format!(
                    "sendfile(2) call failed: {e}"
                )));
            }
            Err(e) => return Err(Native::Failed(Error::Io(e))),
        }
    }
}

/// asyncio's `_sock_sendfile_fallback`: read a block, `sock_sendall` it.
async fn send_fallback(
    lp: &LoopHandle,
    sock: BorrowedFd<'_>,
    file: &File,
    range: Range,
    progress: &Progress<'_>,
) -> io::Result<()> {
    let mut reader = FileReader::new(Some(lp), file, range.offset)?;
    let mut buf = vec![0u8; chunk_for(range)];
    loop {
        let want = range.left(progress.pos()).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(());
        }
        let n = reader.read(&mut buf[..want], progress.pos()).await?;
        if n == 0 {
            return Ok(());
        }
        lp.sock_sendall(&sock, &buf[..n]).await?;
        progress.add(n);
    }
}

impl LoopHandle {
    /// Sends `count` bytes of `file` from `offset` (to the end with
    /// `None`) on a connected, non-blocking stream socket, with
    /// `sendfile(2)` where it applies, and resolves to the number of bytes
    /// sent (asyncio's `loop.sock_sendfile`). Where it does not (a pipe,
    /// or a kernel refusal before anything was sent) the file is read in
    /// 256 KiB blocks and sent with [`sock_sendall`](LoopHandle::sock_sendall),
    /// unless `.fallback(false)`. The socket is waited on as by the other
    /// [`sock_*`](crate::sock) methods (so a socket a live transport owns
    /// is refused); the file's position is left at `offset + sent`.
    ///
    /// ```
    /// use std::io::{Read, Write};
    ///
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"0123456789")?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let sock = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// sock.set_nonblocking(true)?;
    /// let (mut peer, _) = listener.accept()?;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let sent = lp.run_until_complete(lp.sock_sendfile(&sock, &file, 3, Some(4)).fallback(false))??;
    /// assert_eq!(sent, 4);
    /// drop(sock);
    /// let mut got = String::new();
    /// peer.read_to_string(&mut got)?;
    /// assert_eq!(got, "3456");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`SendfileError`] (with the count sent before): the socket's and
    /// the file's errors as [`Error::Io`];
    /// [`Error::InvalidSendfileArgument`] for a socket that is not a
    /// stream, a count of 0, or a range past `i64::MAX`;
    /// [`Error::SendfileNotAvailable`] with the fallback off; the loop's
    /// refusals as for the other `sock_*` methods.
    pub fn sock_sendfile<'a, S: AsFd>(
        &self,
        sock: &'a S,
        file: &'a File,
        offset: u64,
        count: Option<u64>,
    ) -> SockSendfile<'a> {
        SockSendfile {
            lp: self.clone(),
            sock: sock.as_fd(),
            file,
            offset,
            count,
            fallback: true,
        }
    }
}
