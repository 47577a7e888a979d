//! [`TransportStream`]: a stream transport as `AsyncRead` + `AsyncWrite` +
//! `AsyncBufRead` (DESIGN.md D10).
//!
//! The bridge is just another protocol: [`TransportStream::new`] installs a
//! small protocol on the transport (with `set_protocol`) that buffers what
//! arrives and wakes the task reading; writes go straight to the
//! transport's `write`. No socket is touched here, so a stream and a
//! callback protocol can take turns on one connection: the stream can be
//! made from a transport at any time, and [`TransportStream::into_parts`]
//! hands the transport back with the bytes nobody read yet.
//!
//! # Backpressure
//!
//! - Reading: received bytes are buffered up to the read limit (64 KiB by
//!   default, asyncio's `StreamReader` limit). Above twice the limit the
//!   transport stops reading from the socket (`pause_reading`); once the
//!   reader has drained the buffer to the limit or below, reading resumes.
//! - Writing: `poll_write` hands bytes to the transport, which sends at once
//!   or buffers. While the transport has paused writing (its buffer is above
//!   the high-water mark) `poll_write` is `Pending` until `resume_writing`.
//!   `poll_flush` waits until the transport's buffer has drained to the
//!   kernel, through the transport's empty waiter.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::io::{AsyncBufRead, AsyncRead, AsyncWrite, IoSlice};

use crate::protocol::stream_reader::{
    Chunk, StreamReaderProtocol, StreamState as Shared, MIN_READ,
};
use crate::transport::{EmptyWaiter, Transport};

/// The default read limit: 64 KiB, asyncio's `_DEFAULT_LIMIT`.
pub const DEFAULT_READ_LIMIT: usize = crate::protocol::stream_reader::DEFAULT_LIMIT;

/// The most one `poll_write` takes. A larger buffer is taken in parts
/// (`write_all` loops), so flow control sees each part: the transport's
/// buffer never holds more than its high-water mark plus one part.
pub const MAX_WRITE: usize = 256 * 1024;

/// Closes the transport when the last half of a stream is dropped.
struct CloseOnDrop {
    transport: Transport,
    armed: Cell<bool>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if self.armed.get() {
            self.transport.close();
        }
    }
}

/// A stream transport as `AsyncRead + AsyncWrite + AsyncBufRead`.
///
/// Made from a transport with [`TransportStream::new`] (inside
/// `connection_made`, in any protocol callback, or later), or by
/// [`open_connection`](crate::LoopHandle::open_connection) and
/// [`start_server`](crate::LoopHandle::start_server). Dropping it closes the transport
/// (buffered writes are still sent, as `close` does).
///
/// - EOF from the peer ends reading with `Ok(0)`; the write side stays
///   open until [`poll_close`](AsyncWrite::poll_close), which flushes and
///   sends EOF (`write_eof`).
/// - An error on the connection is returned by the next read and the next
///   write.
/// - [`split`](TransportStream::split) gives halves that two tasks can use
///   at once; each direction has its own waker.
pub struct TransportStream {
    reader: ReadHalf,
    writer: WriteHalf,
}

/// The reading half of a [`TransportStream`].
pub struct ReadHalf {
    shared: Rc<Shared>,
    _guard: Rc<CloseOnDrop>,
    /// Bytes taken from `shared.incoming`, not handed out yet.
    local: Chunk,
}

/// The writing half of a [`TransportStream`].
pub struct WriteHalf {
    shared: Rc<Shared>,
    transport: Transport,
    _guard: Rc<CloseOnDrop>,
    flush: Option<EmptyWaiter>,
    eof_sent: bool,
}

/// What [`TransportStream::into_parts`] gives back.
#[derive(Debug)]
pub struct StreamParts {
    /// The transport, still open, with the stream's protocol still set:
    /// set your own (`set_protocol`) before the loop runs again.
    pub transport: Transport,
    /// Bytes received and not read, oldest first.
    pub buffered: Vec<u8>,
    /// Whether the peer had sent EOF.
    pub eof: bool,
}

impl TransportStream {
    /// Makes `transport` a stream: sets the stream's protocol on it. Bytes
    /// the previous protocol received but did not use are lost; pass them
    /// to [`with_buffered`](TransportStream::with_buffered) instead.
    pub fn new(transport: &Transport) -> TransportStream {
        TransportStream::with_buffered(transport, &[])
    }

    /// Like [`new`](TransportStream::new), with `buffered` as the first
    /// bytes to read: what a callback protocol received past its own part
    /// of the conversation.
    pub fn with_buffered(transport: &Transport, buffered: &[u8]) -> TransportStream {
        let shared = Rc::new(Shared::new(buffered));
        shared.lost.set(transport.is_closing());
        let _ = shared.transport.set(transport.clone());
        transport.set_bridge_protocol(StreamReaderProtocol::new(shared.clone(), None).0);
        TransportStream::from_shared(shared, transport)
    }

    /// The inverse of [`into_parts`](TransportStream::into_parts): a stream
    /// again, with the unread bytes first and, if the peer had already sent
    /// EOF, reads ending after them.
    pub fn from_parts(parts: StreamParts) -> TransportStream {
        let stream = TransportStream::with_buffered(&parts.transport, &parts.buffered);
        if parts.eof {
            stream.reader.shared.eof.set(true);
        }
        stream
    }

    /// The stream on a protocol's state once its transport is known (after
    /// [`StreamReaderProtocol::pending`] or in its `on_connect`).
    pub(crate) fn from_shared(shared: Rc<Shared>, transport: &Transport) -> TransportStream {
        let _ = shared.transport.set(transport.clone());
        let guard = Rc::new(CloseOnDrop {
            transport: transport.clone(),
            armed: Cell::new(true),
        });
        TransportStream {
            reader: ReadHalf {
                shared: shared.clone(),
                _guard: guard.clone(),
                local: Chunk::default(),
            },
            writer: WriteHalf {
                shared,
                transport: transport.clone(),
                _guard: guard,
                flush: None,
                eof_sent: false,
            },
        }
    }

    /// The transport under the stream.
    pub fn transport(&self) -> &Transport {
        &self.writer.transport
    }

    /// The read limit (see the module docs).
    pub fn read_limit(&self) -> usize {
        self.reader.shared.limit.get()
    }

    /// Sets the read limit: reading pauses above twice this many buffered
    /// bytes and resumes at or below it. At least 1.
    pub fn set_read_limit(&self, limit: usize) {
        self.reader.shared.limit.set(limit.max(1));
        self.reader.shared.maybe_resume_reading();
    }

    /// How many received bytes wait to be read.
    pub fn buffered_len(&self) -> usize {
        self.reader.buffered_len()
    }

    /// Splits the stream into halves that can be used from two tasks. The
    /// transport closes when both are dropped.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.reader, self.writer)
    }

    /// Puts the halves of one stream back together.
    ///
    /// # Errors
    ///
    /// Gives the halves back if they come from different streams.
    pub fn unsplit(
        reader: ReadHalf,
        writer: WriteHalf,
    ) -> Result<TransportStream, (ReadHalf, WriteHalf)> {
        if Rc::ptr_eq(&reader.shared, &writer.shared) {
            Ok(TransportStream { reader, writer })
        } else {
            Err((reader, writer))
        }
    }

    /// Hands the connection back to callback style: returns the transport
    /// (open, reading resumed if the stream had paused it) and the bytes
    /// received but not read. Set a protocol on the transport right away,
    /// in the same callback or poll, and feed it `buffered` first.
    pub fn into_parts(self) -> StreamParts {
        let TransportStream { reader, writer } = self;
        reader._guard.armed.set(false);
        let transport = writer.transport.clone();
        let shared = reader.shared.clone();
        let mut buffered = reader.local.bytes().to_vec();
        buffered.extend_from_slice(shared.incoming.borrow().bytes());
        *shared.incoming.borrow_mut() = Chunk::default();
        shared.held.set(0);
        if shared.reading_paused.replace(false) {
            transport.resume_reading();
        }
        drop((reader, writer));
        StreamParts {
            transport,
            buffered,
            eof: shared.eof.get(),
        }
    }
}

impl ReadHalf {
    fn buffered_len(&self) -> usize {
        self.shared.buffered()
    }

    /// Makes sure `local` holds bytes if any were received; returns
    /// whether it does.
    #[inline]
    fn refill(&mut self) -> bool {
        if !self.local.is_empty() {
            return true;
        }
        let mut incoming = self.shared.incoming.borrow_mut();
        if incoming.is_empty() {
            return false;
        }
        // Swap rather than copy; the drained buffer goes to the protocol.
        std::mem::swap(&mut self.local, &mut *incoming);
        drop(incoming);
        self.shared.held.set(self.local.len());
        true
    }

    #[inline]
    fn consume_local(&mut self, n: usize) {
        self.local.start += n;
        let left = self.local.len();
        self.shared.held.set(left);
        if left == 0 && self.local.data.len() > MIN_READ {
            self.release_local();
        }
        self.shared.maybe_resume_reading();
    }

    /// Drained: releases a large buffer (a burst's); small ones are kept.
    #[cold]
    #[inline(never)]
    fn release_local(&mut self) {
        self.local = Chunk::default();
    }

    /// Bytes are ready (`Ok(true)`), EOF (`Ok(false)`), an error, or
    /// `Pending` with the waker registered.
    #[inline]
    fn poll_ready_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.refill() {
            return Poll::Ready(Ok(true));
        }
        // `connection_lost` sets `eof` too, so one check covers both.
        if self.shared.eof.get() {
            return Poll::Ready(self.shared.eof_result());
        }
        self.shared.read_waker.register(cx);
        Poll::Pending
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.poll_ready_bytes(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(false)) => Poll::Ready(Ok(0)),
            Poll::Ready(Ok(true)) => {
                let this = &mut *self;
                let n = buf.len().min(this.local.len());
                buf[..n].copy_from_slice(&this.local.bytes()[..n]);
                this.consume_local(n);
                Poll::Ready(Ok(n))
            }
        }
    }
}

impl AsyncBufRead for ReadHalf {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        match this.poll_ready_bytes(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(false)) => Poll::Ready(Ok(&[])),
            Poll::Ready(Ok(true)) => Poll::Ready(Ok(this.local.bytes())),
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let amt = amt.min(this.local.len());
        this.consume_local(amt);
    }
}

impl WriteHalf {
    fn check_open(&self) -> Result<(), io::Error> {
        if self.shared.lost.get() {
            return Err(self.shared.sticky_error().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed")
            }));
        }
        if self.transport.is_closing() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection is closed",
            ));
        }
        Ok(())
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_open()?;
        if self.shared.writing_paused.get() {
            self.shared.write_waker.register(cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// The transport under this half.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        futures::ready!(self.poll_writable(cx))?;
        let n = buf.len().min(MAX_WRITE);
        self.transport.write(&buf[..n])?;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        futures::ready!(self.poll_writable(cx))?;
        // Whole slices up to MAX_WRITE (at least one, cut to MAX_WRITE).
        let mut slices: Vec<&[u8]> = Vec::with_capacity(bufs.len().min(64));
        let mut total = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            let take = b.len().min(MAX_WRITE - total);
            slices.push(&b[..take]);
            total += take;
            if total == MAX_WRITE || slices.len() == 64 {
                break;
            }
        }
        self.transport.writelines(&slices)?;
        Poll::Ready(Ok(total))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (shared, transport) = (&this.shared, &this.transport);
        super::poll_flush_with(&mut this.flush, cx, || {
            if let Some(e) = shared.sticky_error() {
                return Err(e);
            }
            if transport.write_buffer_size() == 0 {
                return Ok(None);
            }
            Ok(Some(transport.empty_waiter()?))
        })
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.eof_sent {
            futures::ready!(self.as_mut().poll_flush(cx))?;
            self.eof_sent = true;
            let t = &self.transport;
            if t.can_write_eof() {
                t.write_eof()?;
            } else {
                t.close();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TransportStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncBufRead for TransportStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().reader).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.reader).consume(amt)
    }
}

impl AsyncWrite for TransportStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}

impl fmt::Debug for TransportStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportStream")
            .field("transport", &self.writer.transport)
            .field("buffered", &self.buffered_len())
            .finish()
    }
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("buffered", &self.buffered_len())
            .finish()
    }
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf")
            .field("transport", &self.transport)
            .finish()
    }
}
