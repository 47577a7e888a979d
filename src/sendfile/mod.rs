//! sendfile: a file sent on a transport or a socket, with no copy through
//! user space where the kernel can do it (asyncio's `loop.sendfile` and
//! `loop.sock_sendfile`).
//!
//! [`LoopHandle::sendfile`] takes a stream [`Transport`] over for the
//! transfer, as asyncio's selector loop does:
//!
//! 1. it remembers whether the transport was reading and pauses reading;
//! 2. from then on `write`, `writelines`, `write_eof`, `empty_waiter` and
//!    another sendfile on that transport are refused with
//!    [`Error::SendfileInProgress`], and the sendfile waits for the
//!    transport's buffer to drain, so what was written before the call
//!    reaches the peer before the file;
//! 3. it calls `sendfile(2)` with the rest of the range until the kernel
//!    says `EAGAIN`, waits for the socket's next writable event, and goes
//!    on, until the count is sent or the file ends (the `native` module);
//! 4. it gives the transport back and resumes reading if it was reading.
//!
//! Where the zero-copy path does not apply (a transport that is not a
//! plain socket, such as a TLS one; a file that is not a regular file,
//! such as a pipe; a kernel that refuses with `EINVAL`, `ENOSYS` or
//! `ENOTSOCK` before sending anything) the fallback (the `fallback`
//! module) reads the file into one bounded buffer and writes it through
//! the transport's public API: it stops producing while the transport's
//! buffer is above its high-water mark, and ends with the empty waiter.
//! `.fallback(false)` makes those cases an [`Error::SendfileNotAvailable`]
//! instead. [`LoopHandle::sock_sendfile`] does the same on a raw
//! non-blocking socket, waiting with a one-shot writer as the other
//! `sock_*` methods do (the `sock` module).
//!
//! The file is read at explicit offsets: its position is not used while
//! the transfer runs, and is left at `offset + sent` when it ends, however
//! it ends (done, failed, or the future dropped), as asyncio leaves it.
//! The file is read on the loop's thread, by the kernel (`sendfile(2)`)
//! or by the fallback: a file whose pages are not in memory stalls the
//! loop while the disk answers, as in asyncio's native path. A pipe is
//! read only once it is readable, so a slow writer does not block the
//! loop.
//!
//! `sendfile(2)` has no `MSG_NOSIGNAL`: a peer that closes mid-transfer
//! raises `SIGPIPE`, which Rust programs ignore from start-up (a program
//! that restores it must ignore it to use the zero-copy path).

mod fallback;
mod native;
mod sock;

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::future::{Future, IntoFuture};
use std::io::{self, Seek, SeekFrom};
use std::task::{Context, Poll};

use futures::future::LocalBoxFuture;

use crate::error::Error;
use crate::event_loop::{get_running_loop, LoopHandle};
use crate::transport::Transport;

pub use sock::SockSendfile;

/// How many successful `sendfile(2)` calls run in one poll before the
/// future lets the loop's other work run (it never waits when the kernel
/// keeps taking bytes, so it must not starve the loop either).
const CALLS_PER_POLL: u32 = 16;

/// A sendfile on a transport, to chain options on and then `.await`
/// ([`LoopHandle::sendfile`]). Its output is the number of bytes sent.
///
/// # Cancel safety
///
/// Dropping the future stops the transfer between two system calls: the
/// transport gets its writes, empty waiter and reading back (the peer has
/// received a prefix of the range, then whatever is written next), and
/// the file's position says how far it got (`offset + sent`).
#[must_use = "a sendfile does nothing until awaited"]
pub struct Sendfile<'a> {
    lp: Option<LoopHandle>,
    transport: Transport,
    file: &'a File,
    offset: u64,
    count: Option<u64>,
    native: bool,
    fallback: bool,
    /// What must finish first (the stream bridge's flush).
    before: Option<LocalBoxFuture<'a, io::Result<()>>>,
}

impl<'a> Sendfile<'a> {
    pub(crate) fn new(
        lp: Option<LoopHandle>,
        transport: &Transport,
        file: &'a File,
        offset: u64,
        count: Option<u64>,
    ) -> Sendfile<'a> {
        Sendfile {
            lp,
            transport: transport.clone(),
            file,
            offset,
            count,
            native: true,
            fallback: true,
            before: None,
        }
    }

    /// Runs `before` first; its error ends the sendfile with nothing sent.
    pub(crate) fn after(mut self, before: LocalBoxFuture<'a, io::Result<()>>) -> Sendfile<'a> {
        self.before = Some(before);
        self
    }

    /// Whether to read and write through the transport where the
    /// zero-copy path does not apply (asyncio's `fallback` keyword;
    /// `true` by default). With `false` those cases fail with
    /// [`Error::SendfileNotAvailable`] and nothing is sent. See the
    /// example on [`LoopHandle::sendfile`].
    pub fn fallback(mut self, on: bool) -> Sendfile<'a> {
        self.fallback = on;
        self
    }

    /// Whether to try the zero-copy path (`true` by default). `false`
    /// goes straight to the fallback, as for a TLS transport: for
    /// comparisons, such as `examples/file_server.rs --fallback`.
    pub fn native(mut self, on: bool) -> Sendfile<'a> {
        self.native = on;
        self
    }

    async fn run(self) -> Result<u64, SendfileError> {
        let Sendfile {
            lp,
            transport,
            file,
            offset,
            count,
            native,
            fallback,
            before,
        } = self;
        if let Some(before) = before {
            before.await.map_err(|e| SendfileError::new(0, e.into()))?;
        }
        let range = Range::check(offset, count).map_err(|e| SendfileError::new(0, e))?;
        if transport.is_closing() {
            return Err(SendfileError::new(0, Error::ConnectionLost));
        }
        let progress = Progress::new(file, offset);
        let at = |e| SendfileError::new(progress.sent(), e);
        if native {
            match native::send(&transport, file, range, &progress).await {
                Ok(()) => return Ok(progress.sent()),
                Err(Native::Failed(e)) => return Err(at(e)),
                Err(Native::NotAvailable(reason)) if !fallback => {
                    return Err(at(Error::SendfileNotAvailable { reason }))
                }
                Err(Native::NotAvailable(_)) => {}
            }
        } else if !fallback {
            return Err(at(Error::SendfileNotAvailable {
                reason: "native sendfile and the fallback are both disabled".to_owned(),
            }));
        }
        let lp = lp.or_else(get_running_loop);
        fallback::send(lp.as_ref(), &transport, file, range, &progress)
            .await
            .map_err(at)?;
        Ok(progress.sent())
    }
}

impl fmt::Debug for Sendfile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sendfile")
            .field("transport", &self.transport)
            .field("offset", &self.offset)
            .field("count", &self.count)
            .field("native", &self.native)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<'a> IntoFuture for Sendfile<'a> {
    type Output = Result<u64, SendfileError>;
    type IntoFuture = LocalBoxFuture<'a, Result<u64, SendfileError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl LoopHandle {
    /// Sends `count` bytes of `file` from `offset` (to the end of the file
    /// with `None`) on `transport`, with no copy through user space where
    /// the kernel can do it, and resolves to the number of bytes sent
    /// (asyncio's `loop.sendfile`). See the [module docs](crate::sendfile)
    /// for how it takes the transport over and when it falls back to
    /// reading and writing.
    ///
    /// Returns a [`Sendfile`]: set `.fallback(false)` (or
    /// `.native(false)`) on it, then `.await` it. Bytes written before the
    /// call reach the peer first; bytes written after it completes come
    /// after the file's. An offset past the end sends nothing (`Ok(0)`).
    /// When it ends, the file's position is `offset + sent`.
    ///
    /// ```
    /// use std::io::{Read, Seek, Write};
    /// use sloop::{EventLoop, Protocol};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"0123456789")?;
    /// let lp = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let t = lp.run_until_complete(lp.create_connection(|| Quiet, listener.local_addr()?))??;
    /// let (mut peer, _) = listener.accept()?;
    /// t.write(b"head:")?;
    /// let sent = lp.run_until_complete(lp.sendfile(&t, &file, 2, Some(5)))??;
    /// assert_eq!(sent, 5);
    /// assert_eq!(file.stream_position()?, 7);
    /// t.write(b":tail")?;
    /// // A pipe or a TLS transport takes the fallback, unless told not to.
    /// let no_fallback = lp.sendfile(&t, &file, 0, None).native(false).fallback(false);
    /// assert!(lp.run_until_complete(no_fallback)?.is_err());
    /// t.write_eof()?;
    /// let mut got = String::new();
    /// peer.read_to_string(&mut got)?;
    /// assert_eq!(got, "head:23456:tail");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`SendfileError`]: its [`error`](SendfileError::error) is
    /// [`Error::InvalidSendfileArgument`] for a count of 0 or a range past
    /// `i64::MAX`; [`Error::ConnectionLost`] if the transport is closing
    /// or closes meanwhile (by either side: the protocol gets
    /// `connection_lost` once, as for a failed write);
    /// [`Error::SendfileInProgress`] if a zero-copy sendfile runs on it
    /// already; [`Error::EmptyWaiterAlreadySet`] if someone waits for its
    /// buffer to drain; [`Error::SendfileNotAvailable`] with the fallback
    /// off; [`Error::Io`] for the socket's or the file's errors. Its
    /// [`sent`](SendfileError::sent) says how many bytes went before.
    pub fn sendfile<'a>(
        &self,
        transport: &Transport,
        file: &'a File,
        offset: u64,
        count: Option<u64>,
    ) -> Sendfile<'a> {
        Sendfile::new(Some(self.clone()), transport, file, offset, count)
    }
}

/// Why a sendfile failed, and how many bytes it sent before: handed to
/// the kernel on the zero-copy path, to the transport on the fallback
/// (asyncio puts the count in the exception). Converts into an
/// [`io::Error`] of the error's [kind](Error::kind) (which carries it) or
/// into the [`Error`] alone.
///
/// ```
/// use sloop::{Error, EventLoop, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let file = tempfile::tempfile()?;
/// let lp = EventLoop::new()?;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let t = lp.run_until_complete(lp.create_connection(|| Quiet, listener.local_addr()?))??;
/// let e = lp.run_until_complete(lp.sendfile(&t, &file, 0, Some(0)))?.unwrap_err();
/// assert_eq!(e.sent(), 0);
/// assert!(matches!(e.error(), Error::InvalidSendfileArgument { .. }));
/// assert_eq!(e.to_string(), "count must be a positive integer (got 0)");
/// // What `?` makes of it in a function returning `io::Result`:
/// let io_err = std::io::Error::from(e);
/// assert_eq!(io_err.kind(), std::io::ErrorKind::InvalidInput);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SendfileError {
    sent: u64,
    error: Error,
}

impl SendfileError {
    pub(crate) fn new(sent: u64, error: Error) -> SendfileError {
        SendfileError { sent, error }
    }

    /// How many bytes were sent before the error.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// What went wrong.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// What went wrong, without the count.
    pub fn into_error(self) -> Error {
        self.error
    }

    /// The error's [`io::ErrorKind`] ([`Error::kind`]).
    pub fn kind(&self) -> io::ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for SendfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sent == 0 {
            self.error.fmt(f)
        } else {
            write!(f, "{} ({} bytes sent)", self.error, self.sent)
        }
    }
}

impl std::error::Error for SendfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendfileError> for Error {
    fn from(e: SendfileError) -> Error {
        e.error
    }
}

impl From<SendfileError> for io::Error {
    /// An `io::Error` of the error's kind carrying the [`SendfileError`]
    /// (get it back with `get_ref` and `downcast_ref`).
    fn from(e: SendfileError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// A checked range of the file: where it starts and, with a count, where
/// it ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Range {
    offset: u64,
    end: Option<u64>,
}

impl Range {
    /// asyncio's `_check_sendfile_params`, for what the types allow: a
    /// count of 0 and a range the kernel's `off_t` cannot hold.
    fn check(offset: u64, count: Option<u64>) -> Result<Range, Error> {
        let max = i64::MAX as u64;
        let bad = |message: String| Error::InvalidSendfileArgument { message };
        if count == Some(0) {
            return Err(bad("count must be a positive integer (got 0)".to_owned()));
        }
        if offset > max {
            return Err(bad(format!(
                "offset must be a non-negative integer below 2**63 (got {offset})"
            )));
        }
        let end = match count {
            None => None,
            Some(c) => match offset.checked_add(c) {
                Some(end) if end <= max => Some(end),
                _ => {
                    return Err(bad(format!(
                        "offset ({offset}) + count ({c}) is past the largest file offset"
                    )))
                }
            },
        };
        Ok(Range { offset, end })
    }

    /// How many bytes are left to send from `pos` (`u64::MAX`: to the end
    /// of the file).
    fn left(&self, pos: u64) -> u64 {
        match self.end {
            Some(end) => end.saturating_sub(pos),
            None => u64::MAX,
        }
    }
}

/// How far a transfer got; when dropped (however the transfer ends) it
/// sets the file's position to `offset + sent`, as asyncio does when
/// anything was sent.
pub(crate) struct Progress<'a> {
    file: &'a File,
    offset: u64,
    sent: Cell<u64>,
}

impl<'a> Progress<'a> {
    fn new(file: &'a File, offset: u64) -> Progress<'a> {
        Progress {
            file,
            offset,
            sent: Cell::new(0),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.get()
    }

    /// The file offset of the next byte to send.
    fn pos(&self) -> u64 {
        self.offset + self.sent.get()
    }

    fn add(&self, n: usize) {
        self.sent.set(self.sent.get() + n as u64);
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if self.sent.get() > 0 {
            // A pipe has no position: nothing to set.
            let _ = (&*self.file).seek(SeekFrom::Start(self.pos()));
        }
    }
}

/// How the zero-copy path ended when it did not succeed.
pub(crate) enum Native {
    /// It does not apply here (nothing was sent): the fallback may.
    NotAvailable(String),
    /// It failed.
    Failed(Error),
}

/// Whether a `sendfile(2)` error, before anything was sent, means "not
/// for this pair of fds" rather than a failure of the connection.
fn kernel_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

/// Whether `file` is a regular file (what `sendfile(2)` reads from).
fn is_regular(file: &File) -> bool {
    file.metadata().map(|m| m.is_file()).unwrap_or(false)
}

/// Lets the loop run its other work once: `Pending` once, woken at once.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    futures::future::poll_fn(move |cx: &mut Context<'_>| {
        if std::mem::replace(&mut yielded, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}
