//! The bridge over pipe transports: [`PipeReader`] (`AsyncRead` +
//! `AsyncBufRead`) and [`PipeWriter`] (`AsyncWrite`), what
//! [`TransportStream`](crate::TransportStream) is for socket transports.
//! Each is a [`PipeProtocol`] of its own on one pipe transport, with the
//! transport's flow control turned into readiness: a reader whose buffer
//! passes its limit pauses the pipe; a writer whose transport passes its
//! high-water mark pends until `resume_writing`.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::io::{AsyncBufRead, AsyncRead, AsyncWrite};

use super::{PipeProtocol, PipeTransport};
use crate::error::Error;
use crate::event_loop::LoopHandle;

/// How much a [`PipeReader`] buffers before it pauses its pipe (asyncio's
/// StreamReader limit is 64 KiB; pausing above twice that).
const READ_LIMIT: usize = 128 * 1024;

#[derive(Default)]
struct ReadShared {
    transport: Option<PipeTransport>,
    /// The reader was dropped before the transport was connected.
    dropped: bool,
    buf: Vec<u8>,
    eof: bool,
    error: Option<io::Error>,
    waker: Option<Waker>,
}

impl ReadShared {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The protocol behind a [`PipeReader`].
pub(crate) struct ReaderProtocol(Rc<RefCell<ReadShared>>);

impl PipeProtocol for ReaderProtocol {
    fn connection_made(&mut self, transport: &PipeTransport) {
        let mut s = self.0.borrow_mut();
        if s.dropped {
            drop(s);
            transport.close();
            return;
        }
        s.transport = Some(transport.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut s = self.0.borrow_mut();
        s.buf.extend_from_slice(data);
        if s.buf.len() > READ_LIMIT {
            if let Some(t) = &s.transport {
                t.pause_reading();
            }
        }
        s.wake();
    }
    fn eof_received(&mut self) {
        let mut s = self.0.borrow_mut();
        s.eof = true;
        s.wake();
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let mut s = self.0.borrow_mut();
        s.eof = true;
        if s.error.is_none() {
            s.error = exc;
        }
        s.wake();
    }
}

/// A read pipe as an `AsyncRead` + `AsyncBufRead` stream: a child's
/// stdout, or any pipe given to
/// [`open_read_pipe`](LoopHandle::open_read_pipe). Dropping it closes the
/// pipe.
///
/// ```
/// use futures::io::AsyncReadExt;
/// use std::io::Write;
///
/// let lp = sloop::EventLoop::new()?;
/// let (reader, mut writer) = std::io::pipe()?;
/// let mut stream = lp.open_read_pipe(reader)?;
/// writer.write_all(b"line\n")?;
/// drop(writer);
/// let mut got = String::new();
/// lp.run_until_complete(stream.read_to_string(&mut got))??;
/// assert_eq!(got, "line\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PipeReader {
    shared: Rc<RefCell<ReadShared>>,
    /// What `poll_fill_buf` hands out, swapped with the shared buffer.
    local: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    pub(crate) fn new() -> (ReaderProtocol, PipeReader) {
        let shared = Rc::new(RefCell::new(ReadShared::default()));
        (
            ReaderProtocol(shared.clone()),
            PipeReader {
                shared,
                local: Vec::new(),
                pos: 0,
            },
        )
    }

    /// The pipe transport, once it is connected (the iteration after the
    /// reader is made).
    pub fn transport(&self) -> Option<PipeTransport> {
        self.shared.borrow().transport.clone()
    }
}

impl AsyncBufRead for PipeReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.local.len() {
            this.local.clear();
            this.pos = 0;
            let mut s = this.shared.borrow_mut();
            if s.buf.is_empty() {
                if let Some(e) = s.error.take() {
                    return Poll::Ready(Err(e));
                }
                if s.eof {
                    return Poll::Ready(Ok(&[]));
                }
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut this.local, &mut s.buf);
            if let Some(t) = &s.transport {
                t.resume_reading();
            }
        }
        Poll::Ready(Ok(&this.local[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.local.len());
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                n
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.shared.borrow_mut().dropped = true;
        let transport = self.shared.borrow_mut().transport.take();
        if let Some(t) = transport {
            t.close();
        }
    }
}

impl fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeReader")
            .field("transport", &self.shared.borrow().transport)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct WriteShared {
    transport: Option<PipeTransport>,
    /// The writer was dropped before the transport was connected.
    dropped: bool,
    paused: bool,
    lost: bool,
    error: Option<io::ErrorKind>,
    waker: Option<Waker>,
}

impl WriteShared {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The protocol behind a [`PipeWriter`].
pub(crate) struct WriterProtocol(Rc<RefCell<WriteShared>>);

impl PipeProtocol for WriterProtocol {
    fn connection_made(&mut self, transport: &PipeTransport) {
        let mut s = self.0.borrow_mut();
        if s.dropped {
            drop(s);
            transport.close();
            return;
        }
        s.transport = Some(transport.clone());
        s.wake();
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().paused = true;
    }
    fn resume_writing(&mut self) {
        let mut s = self.0.borrow_mut();
        s.paused = false;
        s.wake();
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let mut s = self.0.borrow_mut();
        s.lost = true;
        s.error = exc.map(|e| e.kind());
        s.wake();
    }
}

/// A write pipe as an `AsyncWrite` stream: a child's stdin, or any pipe
/// given to [`open_write_pipe`](LoopHandle::open_write_pipe). Writes pend
/// while the transport's buffer is above its high-water mark; `flush`
/// waits for the buffer to drain; `close` flushes and closes the pipe (the
/// reader sees EOF). Dropping it closes the pipe after the buffer drains.
/// A reader that went away gives `BrokenPipe`.
///
/// ```
/// use futures::io::AsyncWriteExt;
/// use std::io::Read;
///
/// let lp = sloop::EventLoop::new()?;
/// let (mut reader, writer) = std::io::pipe()?;
/// let mut stream = lp.open_write_pipe(writer)?;
/// lp.run_until_complete(async {
///     stream.write_all(b"hello").await?;
///     stream.close().await
/// })??;
/// let mut got = String::new();
/// reader.read_to_string(&mut got)?;
/// assert_eq!(got, "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PipeWriter {
    shared: Rc<RefCell<WriteShared>>,
}

impl PipeWriter {
    pub(crate) fn new() -> (WriterProtocol, PipeWriter) {
        let shared = Rc::new(RefCell::new(WriteShared::default()));
        (WriterProtocol(shared.clone()), PipeWriter { shared })
    }

    /// The pipe transport, once it is connected.
    pub fn transport(&self) -> Option<PipeTransport> {
        self.shared.borrow().transport.clone()
    }

    fn lost_error(s: &WriteShared) -> io::Error {
        io::Error::new(
            s.error.unwrap_or(io::ErrorKind::BrokenPipe),
            Error::ConnectionLost,
        )
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.shared.borrow_mut();
        if s.lost {
            return Poll::Ready(Err(PipeWriter::lost_error(&s)));
        }
        let transport = match &s.transport {
            Some(t) if !s.paused => t.clone(),
            _ => {
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        };
        drop(s);
        match transport.write(buf) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.shared.borrow_mut();
        let Some(transport) = s.transport.clone() else {
            if s.lost {
                return Poll::Ready(Err(PipeWriter::lost_error(&s)));
            }
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        drop(s);
        if !transport.poll_drained(cx.waker()) {
            return Poll::Pending;
        }
        let s = self.shared.borrow();
        if s.lost && s.error.is_some() {
            return Poll::Ready(Err(PipeWriter::lost_error(&s)));
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes, closes the pipe and completes once it is closed (its fd
    /// too: the reader sees EOF).
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let s = self.shared.borrow();
            if s.lost {
                return Poll::Ready(match s.error {
                    Some(_) => Err(PipeWriter::lost_error(&s)),
                    None => Ok(()),
                });
            }
        }
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let transport = self.shared.borrow().transport.clone();
        if let Some(t) = transport {
            t.close();
        }
        let mut s = self.shared.borrow_mut();
        if s.lost {
            return Poll::Ready(Ok(()));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.shared.borrow_mut().dropped = true;
        let transport = self.shared.borrow_mut().transport.take();
        if let Some(t) = transport {
            t.close();
        }
    }
}

impl fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeWriter")
            .field("transport", &self.shared.borrow().transport)
            .finish_non_exhaustive()
    }
}

impl LoopHandle {
    /// A [`PipeReader`] over a read pipe transport of `pipe` (see
    /// [`connect_read_pipe`](LoopHandle::connect_read_pipe)); the example
    /// is on [`PipeReader`].
    ///
    /// # Errors
    ///
    /// As [`connect_read_pipe`](LoopHandle::connect_read_pipe).
    pub fn open_read_pipe(&self, pipe: impl Into<OwnedFd>) -> Result<PipeReader, Error> {
        let (protocol, reader) = PipeReader::new();
        self.connect_read_pipe(move || protocol, pipe)?;
        Ok(reader)
    }

    /// A [`PipeWriter`] over a write pipe transport of `pipe` (see
    /// [`connect_write_pipe`](LoopHandle::connect_write_pipe)); the
    /// example is on [`PipeWriter`].
    ///
    /// # Errors
    ///
    /// As [`connect_write_pipe`](LoopHandle::connect_write_pipe).
    pub fn open_write_pipe(&self, pipe: impl Into<OwnedFd>) -> Result<PipeWriter, Error> {
        let (protocol, writer) = PipeWriter::new();
        self.connect_write_pipe(move || protocol, pipe)?;
        Ok(writer)
    }
}
