//! `sendfile` on the stream bridge: an `async fn` server sends a file on
//! its [`TransportStream`] with no copy through user space. The stream is
//! flushed first (what was written before is delivered first, and a
//! dropped flush's empty waiter is let go), then the transport is handed
//! to [`LoopHandle::sendfile`](crate::LoopHandle::sendfile) for the file.
//! The `&mut` borrow keeps the stream from writing meanwhile.

use std::fs::File;

use futures::io::{AsyncWrite, AsyncWriteExt};

use super::stream::{TransportStream, WriteHalf};
use crate::event_loop::get_running_loop;
use crate::sendfile::Sendfile;
use crate::transport::Transport;

/// The flush, then the sendfile, as one [`Sendfile`].
fn flushed_sendfile<'a, W: AsyncWrite + Unpin>(
    writer: &'a mut W,
    transport: &Transport,
    file: &'a File,
    offset: u64,
    count: Option<u64>,
) -> Sendfile<'a> {
    Sendfile::new(get_running_loop(), transport, file, offset, count)
        .after(Box::pin(writer.flush()))
}

impl TransportStream {
    /// Flushes the stream, then sends `count` bytes of `file` from
    /// `offset` (to the end with `None`) with
    /// [`LoopHandle::sendfile`](crate::LoopHandle::sendfile): zero-copy on
    /// a plain socket, read and written otherwise; it resolves to the
    /// bytes sent. Bytes written before it reach the peer first. Set
    /// `.fallback(false)` or `.native(false)` on what it returns as there.
    ///
    /// ```
    /// use futures::io::AsyncWriteExt;
    /// use std::io::{Read, Write};
    ///
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"body")?;
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// lp.run_until_complete(async move {
    ///     let mut stream = h.open_connection(addr).await?;
    ///     stream.write_all(b"head:").await?;
    ///     let sent = stream.sendfile(&file, 0, None).await?;
    ///     assert_eq!(sent, 4);
    ///     stream.close().await
    /// })??;
    /// let (mut peer, _) = listener.accept()?;
    /// let mut got = String::new();
    /// peer.read_to_string(&mut got)?;
    /// assert_eq!(got, "head:body");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`LoopHandle::sendfile`](crate::LoopHandle::sendfile); a failed
    /// flush is the error, with nothing of the file sent.
    ///
    /// # Cancel safety
    ///
    /// As [`Sendfile`]: dropped, it stops between two system calls and
    /// the stream can go on (the file's position says how far it got).
    pub fn sendfile<'a>(
        &'a mut self,
        file: &'a File,
        offset: u64,
        count: Option<u64>,
    ) -> Sendfile<'a> {
        let transport = self.transport().clone();
        flushed_sendfile(self, &transport, file, offset, count)
    }
}

impl WriteHalf {
    /// [`TransportStream::sendfile`] on the writing half.
    ///
    /// ```
    /// use std::io::{Read, Write};
    ///
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"body")?;
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// lp.run_until_complete(async move {
    ///     let (_reader, mut writer) = h.open_connection(addr).await?.split();
    ///     let sent = writer.sendfile(&file, 1, Some(2)).await?;
    ///     futures::io::AsyncWriteExt::close(&mut writer).await?;
    ///     Ok::<_, std::io::Error>(sent)
    /// })??;
    /// let (mut peer, _) = listener.accept()?;
    /// let mut got = String::new();
    /// peer.read_to_string(&mut got)?;
    /// assert_eq!(got, "od");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`TransportStream::sendfile`].
    pub fn sendfile<'a>(
        &'a mut self,
        file: &'a File,
        offset: u64,
        count: Option<u64>,
    ) -> Sendfile<'a> {
        let transport = self.transport().clone();
        flushed_sendfile(self, &transport, file, offset, count)
    }
}
