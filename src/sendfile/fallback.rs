//! The fallback on a transport (asyncio's `_sendfile_fallback`): read the
//! file into one bounded buffer and write it through the transport's
//! public API, so it works on any transport (a TLS one too) and with any
//! readable file (a pipe too).
//!
//! Flow control is the transport's: before each read, if the transport's
//! buffer is above its high-water mark (the protocol has had
//! `pause_writing`), the fallback waits for the buffer to drain (the empty
//! waiter; the protocol gets `resume_writing` on the way). Memory is
//! bounded by one read buffer plus the transport's high-water mark and one
//! chunk. Reading from the peer is paused meanwhile and resumed after,
//! as in asyncio; writes are not refused (asyncio's fallback does not
//! refuse them either): the caller should not write meanwhile.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use super::{is_regular, Progress, Range};
use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::transport::Transport;

/// The most one read takes (the stream bridge's largest write, and
/// asyncio's `sock_sendfile` fallback block).
pub(super) const CHUNK: usize = 256 * 1024;

/// Resumes reading when dropped, if it was reading before.
struct Restore<'a> {
    transport: &'a Transport,
    was_reading: bool,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.was_reading {
            self.transport.resume_reading();
        }
    }
}

pub(super) async fn send(
    lp: Option<&LoopHandle>,
    transport: &Transport,
    file: &File,
    range: Range,
    progress: &Progress<'_>,
) -> Result<(), Error> {
    let _restore = Restore {
        transport,
        was_reading: transport.is_reading(),
    };
    transport.pause_reading();
    let mut reader = FileReader::new(lp, file, range.offset)?;
    let mut buf = vec![0u8; chunk_for(range)];
    loop {
        let want = range.left(progress.pos()).min(buf.len() as u64) as usize;
        if want == 0 {
            break;
        }
        if transport.is_closing() {
            return Err(Error::ConnectionLost);
        }
        let (_, high) = transport.write_buffer_limits();
        if transport.write_buffer_size() > high {
            transport.empty_waiter()?.await?;
        }
        let n = reader.read(&mut buf[..want], progress.pos()).await?;
        if n == 0 {
            break;
        }
        transport.write(&buf[..n])?;
        progress.add(n);
    }
    transport.empty_waiter()?.await
}

/// The read buffer's size: one chunk, or less for a shorter range.
pub(super) fn chunk_for(range: Range) -> usize {
    range.left(range.offset).min(CHUNK as u64) as usize
}

/// Reads the file: at explicit offsets when it is a regular file (its
/// position stays alone); else from its position, once it is readable.
pub(super) struct FileReader<'a> {
    lp: Option<&'a LoopHandle>,
    file: &'a File,
    regular: bool,
}

impl<'a> FileReader<'a> {
    /// A reader of `file` from `offset`. A pipe (no offsets) can only
    /// start at 0: another offset is its seek error (`ESPIPE`), as in
    /// asyncio.
    pub(super) fn new(
        lp: Option<&'a LoopHandle>,
        file: &'a File,
        offset: u64,
    ) -> io::Result<FileReader<'a>> {
        let regular = is_regular(file);
        if !regular && offset != 0 {
            (&*file).seek(SeekFrom::Start(offset))?;
        }
        Ok(FileReader { lp, file, regular })
    }

    /// Reads into `buf` the bytes at `pos` (a regular file) or the next
    /// ones; 0 at the end.
    pub(super) async fn read(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if self.regular {
            return retry_interrupted(|| self.file.read_at(buf, pos));
        }
        loop {
            if let Some(lp) = self.lp {
                wait_readable(lp, self.file.as_raw_fd()).await?;
            }
            // A non-blocking pipe may still say "not yet": wait again.
            match retry_interrupted(|| (&*self.file).read(buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.lp.is_some() => {}
                other => return other,
            }
        }
    }
}

/// Waits until `fd` is readable, if the loop can watch it (a pipe, a
/// socket, a terminal; not a device that epoll refuses, which reads
/// without waiting).
async fn wait_readable(lp: &LoopHandle, fd: RawFd) -> io::Result<()> {
    match crate::sock::wait_ready(lp, fd, true).await {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        other => other,
    }
}

fn retry_interrupted(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
