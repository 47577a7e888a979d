//! [`TransportStream`]: a stream transport as `AsyncRead` + `AsyncWrite` +
//! `AsyncBufRead` (docs/design.md D10).
//!
//! The bridge is just another protocol: [`TransportStream::new`] installs
//! asyncio's `StreamReaderProtocol` on the transport (a crate-private
//! protocol kind below the transport, `protocol::stream_reader`), which
//! queues what arrives and wakes the task reading; writes go straight to
//! the transport's `write`. No socket is touched here, so a stream and a
//! callback protocol can take turns on one connection: the stream can be
//! made from a transport at any time, and [`TransportStream::into_parts`]
//! hands the transport back with the bytes nobody read yet.
//!
//! # Memory
//!
//! A stream with nothing unread holds no receive buffer. The transport
//! reads into a block lent from a per-thread pool (4 KiB, 64 KiB during a
//! burst); the block travels to the read half with the bytes and goes back
//! to the pool as soon as the last of them is read. An idle stream costs
//! its small shared state and its halves (a few words each).
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
//!
//! # Errors
//!
//! An error of the connection (a reset, a failed send) is the OS error,
//! returned by the next read and the next write. A write or flush on a
//! connection that is gone with no error (closed by either side) is
//! `BrokenPipe`, as on a std socket: [`Error::ConnectionLost`](crate::Error::ConnectionLost)
//! converted with [`Error::kind`](crate::Error::kind)'s mapping, as every
//! other error of the transport (`write` after [`poll_close`](AsyncWrite::poll_close)
//! is [`WriteAfterEof`](crate::Error::WriteAfterEof), `BrokenPipe` too).
//! Reads end with `Ok(0)` instead.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::io::{AsyncBufRead, AsyncRead, AsyncWrite, IoSlice};

use crate::protocol::stream_reader::{
    Block, StreamReaderProtocol, StreamState as Shared, EOF, EOF_SENT, LOST, READING_PAUSED,
    WRITING_PAUSED,
};
use crate::transport::Transport;

/// The default read limit: 64 KiB, asyncio's `_DEFAULT_LIMIT`. See the
/// example on [`TransportStream`].
pub const DEFAULT_READ_LIMIT: usize = crate::protocol::stream_reader::DEFAULT_LIMIT;

/// The most one `poll_write` takes. A larger buffer is taken in parts
/// (`write_all` loops), so flow control sees each part: the transport's
/// buffer never holds more than its high-water mark plus one part.
///
/// ```
/// use futures::io::AsyncWriteExt;
/// use sloop::bridge::stream::MAX_WRITE;
///
/// let lp = sloop::EventLoop::new()?;
/// let h = lp.handle();
/// lp.run_until_complete(async move {
///     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
///     let mut stream = h.open_connection(listener.local_addr()?).await?;
///     let n = stream.write(&vec![0u8; MAX_WRITE + 1]).await?;
///     assert_eq!(n, MAX_WRITE);
///     Ok::<(), std::io::Error>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const MAX_WRITE: usize = 256 * 1024;

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
/// - A stream with no unread bytes holds no receive buffer (see the module
///   docs).
///
/// ```
/// use futures::io::{AsyncReadExt, AsyncWriteExt};
/// use std::io::{Read, Write};
///
/// let lp = sloop::EventLoop::new()?;
/// let h = lp.handle();
/// lp.run_until_complete(async move {
///     // A plain std socket as the peer.
///     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
///     let mut stream = h.open_connection(listener.local_addr()?).await?;
///     let (mut peer, _) = listener.accept()?;
///     // AsyncWrite: write, then flush to the kernel.
///     stream.write_all(b"ping").await?;
///     stream.flush().await?;
///     let mut buf = [0u8; 4];
///     peer.read_exact(&mut buf)?;
///     assert_eq!(&buf, b"ping");
///     // AsyncRead: wait for bytes and take some; the rest stays buffered.
///     peer.write_all(b"pong!")?;
///     stream.read_exact(&mut buf).await?;
///     assert_eq!(&buf, b"pong");
///     assert_eq!(stream.buffered_len(), 1);
///     // The read limit, and the transport under the stream.
///     assert_eq!(stream.read_limit(), sloop::bridge::stream::DEFAULT_READ_LIMIT);
///     stream.set_read_limit(1024);
///     assert_eq!(stream.read_limit(), 1024);
///     assert!(!stream.transport().is_closing());
///     Ok::<(), std::io::Error>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Cancel safety
///
/// Every future on a stream or its halves may be dropped at any poll
/// (docs/design.md D15):
///
/// - reading (`read`, `fill_buf`, `read_exact` between its reads): bytes
///   leave the stream only in the poll that returns them, so a dropped
///   read loses nothing;
/// - writing: bytes go to the transport only in the poll that returns
///   `Ready(n)`;
/// - `flush` and `close`: a dropped one leaves the transport's empty
///   waiter with the stream, and the next flush or close waits on it,
///   checking the buffer again if it completed meanwhile (bytes written
///   since are waited for too); the stream lets go of it once a flush
///   completes, or when dropped.
pub struct TransportStream {
    reader: ReadHalf,
    writer: WriteHalf,
}

/// The reading half of a [`TransportStream`].
pub struct ReadHalf {
    shared: Rc<Shared>,
    /// The received block being read (never empty), taken from the
    /// protocol's queue; it goes back to the pool once read.
    local: Option<Box<Block>>,
}

/// The writing half of a [`TransportStream`].
pub struct WriteHalf {
    shared: Rc<Shared>,
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
        let shared = Shared::new(transport, buffered);
        transport.set_bridge_protocol(StreamReaderProtocol::new(shared.clone()));
        TransportStream::from_shared(shared)
    }

    /// The inverse of [`into_parts`](TransportStream::into_parts): a stream
    /// again, with the unread bytes first and, if the peer had already sent
    /// EOF, reads ending after them.
    pub fn from_parts(parts: StreamParts) -> TransportStream {
        let stream = TransportStream::with_buffered(&parts.transport, &parts.buffered);
        if parts.eof {
            stream.reader.shared.flags.set(EOF, true);
        }
        stream
    }

    /// The stream on a protocol's state (made by
    /// [`Connecting`](crate::protocol::stream_reader::Connecting) or
    /// `with_buffered`).
    pub(crate) fn from_shared(shared: Rc<Shared>) -> TransportStream {
        shared.halves.set(2);
        TransportStream {
            reader: ReadHalf {
                shared: shared.clone(),
                local: None,
            },
            writer: WriteHalf { shared },
        }
    }

    /// The transport under the stream. See the example on
    /// [`TransportStream`].
    pub fn transport(&self) -> &Transport {
        &self.writer.shared.transport
    }

    /// The read limit (see the module docs). See the example on
    /// [`TransportStream`].
    pub fn read_limit(&self) -> usize {
        self.reader.shared.limit.get()
    }

    /// Sets the read limit: reading pauses above twice this many buffered
    /// bytes and resumes at or below it. At least 1. See the example on
    /// [`TransportStream`].
    pub fn set_read_limit(&self, limit: usize) {
        self.reader.shared.limit.set(limit.max(1));
        self.reader.shared.maybe_resume_reading();
    }

    /// How many received bytes wait to be read. See the example on
    /// [`TransportStream`].
    pub fn buffered_len(&self) -> usize {
        self.reader.buffered_len()
    }

    /// Splits the stream into halves that can be used from two tasks. The
    /// transport closes when both are dropped.
    ///
    /// ```
    /// use futures::io::{AsyncReadExt, AsyncWriteExt};
    /// use sloop::TransportStream;
    /// use std::io::{Read, Write};
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// lp.run_until_complete(async move {
    ///     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    ///     let stream = h.open_connection(listener.local_addr()?).await?;
    ///     let (mut peer, _) = listener.accept()?;
    ///     let (mut reader, mut writer) = stream.split();
    ///     assert!(!writer.transport().is_closing());
    ///     // The writing half in its own task.
    ///     let task = h.spawn_local(async move {
    ///         writer.write_all(b"hi").await?;
    ///         writer.flush().await?;
    ///         Ok::<_, std::io::Error>(writer)
    ///     });
    ///     peer.write_all(b"yo")?;
    ///     let mut buf = [0u8; 2];
    ///     reader.read_exact(&mut buf).await?;
    ///     assert_eq!(&buf, b"yo");
    ///     let writer = task.await.expect("the task ran")?;
    ///     peer.read_exact(&mut buf)?;
    ///     assert_eq!(&buf, b"hi");
    ///     // And back together.
    ///     let stream = TransportStream::unsplit(reader, writer).expect("one stream's halves");
    ///     assert_eq!(stream.buffered_len(), 0);
    ///     Ok::<(), std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.reader, self.writer)
    }

    /// Puts the halves of one stream back together. See the example on
    /// [`split`](TransportStream::split).
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
    ///
    /// ```
    /// use futures::io::AsyncReadExt;
    /// use sloop::TransportStream;
    /// use std::io::Write;
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// lp.run_until_complete(async move {
    ///     let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    ///     let mut stream = h.open_connection(listener.local_addr()?).await?;
    ///     let (mut peer, _) = listener.accept()?;
    ///     peer.write_all(b"head,tail")?;
    ///     let mut head = [0u8; 5];
    ///     stream.read_exact(&mut head).await?;
    ///     // Wait for the rest, without reading it.
    ///     while stream.buffered_len() < 4 {
    ///         sloop::sleep(Duration::from_millis(1)).await;
    ///     }
    ///     let parts = stream.into_parts();
    ///     assert_eq!((&parts.buffered[..], parts.eof), (&b"tail"[..], false));
    ///     // Back to a stream (or set a callback protocol on the transport).
    ///     let mut stream = TransportStream::from_parts(parts);
    ///     let mut rest = [0u8; 4];
    ///     stream.read_exact(&mut rest).await?;
    ///     assert_eq!(&rest, b"tail");
    ///     Ok::<(), std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_parts(self) -> StreamParts {
        let TransportStream { mut reader, writer } = self;
        let shared = reader.shared.clone();
        // The halves go without closing the transport.
        shared.halves.set(0);
        let mut buffered = Vec::new();
        if let Some(block) = reader.local.take() {
            buffered.extend_from_slice(block.bytes());
            shared.pool.give(block);
        }
        buffered.extend_from_slice(&shared.drain_received());
        if shared.flags.replace(READING_PAUSED, false) {
            shared.transport.resume_reading();
        }
        drop((reader, writer));
        StreamParts {
            transport: shared.transport.clone(),
            buffered,
            eof: shared.flags.has(EOF),
        }
    }
}

/// Closes the transport when the last half of a stream is dropped.
fn drop_half(shared: &Shared) {
    match shared.halves.get() {
        0 => {} // into_parts
        1 => {
            shared.halves.set(0);
            shared.transport.close();
        }
        n => shared.halves.set(n - 1),
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        if let Some(block) = self.local.take() {
            self.shared.pool.give(block);
        }
        drop_half(&self.shared);
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        drop_half(&self.shared);
    }
}

impl ReadHalf {
    fn buffered_len(&self) -> usize {
        self.shared.buffered()
    }

    /// The block being read, taking the next received one if needed.
    #[inline]
    fn block(&mut self) -> Option<&mut Block> {
        if self.local.is_none() {
            self.local = self.shared.take_received();
        }
        self.local.as_deref_mut()
    }

    /// `n` bytes of the block handed out; a drained block goes back at
    /// once.
    #[inline]
    fn consume_local(&mut self, n: usize) {
        let Some(block) = &mut self.local else {
            return;
        };
        let n = n.min(block.len());
        if block.advance(n) {
            let block = self.local.take().expect("set");
            self.shared.pool.give(block);
        }
        self.shared.consumed(n);
    }

    /// Bytes are ready (`Ok(true)`), EOF (`Ok(false)`), an error, or
    /// `Pending` with the waker registered.
    #[inline]
    fn poll_ready_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.block().is_some() {
            return Poll::Ready(Ok(true));
        }
        // `connection_lost` sets `eof` too, so one check covers both.
        if self.shared.flags.has(EOF) {
            return Poll::Ready(self.shared.eof_result());
        }
        self.shared.register_reader(cx);
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
                let bytes = this.local.as_ref().map_or(&[][..], |b| b.bytes());
                let n = buf.len().min(bytes.len());
                buf[..n].copy_from_slice(&bytes[..n]);
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
            Poll::Ready(Ok(true)) => {
                Poll::Ready(Ok(this.local.as_ref().map_or(&[][..], |b| b.bytes())))
            }
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().consume_local(amt);
    }
}

impl WriteHalf {
    /// The connection's error, or [`Error::ConnectionLost`](crate::Error::ConnectionLost)
    /// (`BrokenPipe`).
    #[cold]
    #[inline(never)]
    fn closed_error(&self) -> io::Error {
        self.shared
            .sticky_error()
            .unwrap_or_else(|| crate::Error::ConnectionLost.into())
    }

    /// What a write refused by the transport returns: "closed" if the
    /// transport is closing (the stream or its user closed it), else the
    /// transport's error.
    #[cold]
    #[inline(never)]
    fn write_error(&self, e: crate::Error) -> io::Error {
        if self.shared.flags.has(LOST) || self.shared.transport.is_closing() {
            return self.closed_error();
        }
        e.into()
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flags = &self.shared.flags;
        if flags.has(LOST | WRITING_PAUSED) {
            if flags.has(LOST) {
                return Poll::Ready(Err(self.closed_error()));
            }
            self.shared.register_writer(cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// The transport under this half. See the example on
    /// [`TransportStream::split`].
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
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
        if let Err(e) = self.shared.transport.write(&buf[..n]) {
            return Poll::Ready(Err(self.write_error(e)));
        }
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
        if let Err(e) = self.shared.transport.writelines(&slices) {
            return Poll::Ready(Err(self.write_error(e)));
        }
        Poll::Ready(Ok(total))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &*self.shared;
        let transport = &shared.transport;
        let mut flush = shared.flush.take();
        let result = super::poll_flush_with(&mut flush, cx, || {
            if let Some(e) = shared.sticky_error() {
                return Err(e);
            }
            if transport.write_buffer_size() == 0 {
                return Ok(None);
            }
            Ok(Some(transport.empty_waiter()?))
        });
        // Kept across polls (and when the flush is dropped: the next flush
        // or close goes on waiting on it).
        shared.flush.set(flush);
        result
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shared.flags.has(EOF_SENT) {
            futures::ready!(self.as_mut().poll_flush(cx))?;
            self.shared.flags.set(EOF_SENT, true);
            let t = &self.shared.transport;
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
            .field("transport", self.transport())
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
            .field("transport", self.transport())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use futures::io::AsyncReadExt;

    use crate::protocol::stream_reader::MIN_READ;
    use crate::EventLoop;

    /// A deterministic byte pattern.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn bytes_that_arrive_while_nobody_reads_queue_up_in_order_and_leave_no_block() {
        // Many writes of odd sizes, received while the stream is not read:
        // each read is copied into the last block's tail or linked after
        // it. Read back in one go, in order; then the stream holds nothing.
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        lp.run_until_complete(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut stream = h.open_connection(("127.0.0.1", port)).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            let data = pattern(40_000);
            let sent = data.clone();
            // From another thread, so the loop receives while this task
            // waits for the thread, not for the stream.
            let (tx, rx) = futures::channel::oneshot::channel();
            std::thread::spawn(move || {
                for part in sent.chunks(997) {
                    peer.write_all(part).unwrap();
                    peer.flush().unwrap();
                }
                let _ = tx.send(peer);
            });
            let _peer = rx.await.unwrap();
            assert!(stream.buffered_len() <= data.len());
            let mut got = vec![0u8; data.len()];
            stream.read_exact(&mut got).await.unwrap();
            assert!(got == data);
            assert_eq!(stream.buffered_len(), 0);
            assert!(stream.reader.local.is_none(), "the last block went back");
            assert!(stream.reader.shared.take_received().is_none());
        })
        .unwrap();
    }

    #[test]
    fn a_block_lent_to_a_failed_recv_goes_back_to_the_pool() {
        // A message of exactly one block: the read fills it, the transport
        // reads again at once into a second block and gets WouldBlock; it
        // says so, and that block goes back to the pool, as does the first
        // once the read half has taken its bytes.
        let lp = EventLoop::new().unwrap();
        let h = lp.handle();
        lp.run_until_complete(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut stream = h.open_connection(("127.0.0.1", port)).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            let pool = &stream.reader.shared.pool;
            // Warm the pool: the first take allocates.
            pool.give(pool.take(false));
            pool.give(pool.take(false));
            let free = pool.free_small();
            peer.write_all(&[7u8; MIN_READ]).unwrap();
            let mut got = vec![0u8; MIN_READ];
            stream.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|&b| b == 7));
            let mut more = [0u8; 1];
            let cut = crate::timeout(Duration::from_millis(20), stream.read(&mut more)).await;
            assert!(cut.is_err(), "nothing more was sent");
            assert_eq!(
                stream.reader.shared.pool.free_small(),
                free,
                "both blocks are back in the pool"
            );
        })
        .unwrap();
    }
}
