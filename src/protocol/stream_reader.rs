//! asyncio's `StreamReaderProtocol`: the protocol under every
//! [`TransportStream`](crate::TransportStream), and the state it shares with
//! the stream's two halves (received bytes, wakers, flags).
//!
//! It lives below the transport (DESIGN.md D14): the socket transport keeps
//! it as a concrete protocol kind for static dispatch, and the bridge builds
//! its stream on [`StreamState`]; nothing here knows the bridge.

use std::cell::{Cell, OnceCell, RefCell};
use std::io;
use std::rc::Rc;
use std::task::{Context, Waker};

use super::{Buffered, BufferedProtocol};
use crate::transport::Transport;

/// The default read limit: 64 KiB, asyncio's `_DEFAULT_LIMIT`.
pub(crate) const DEFAULT_LIMIT: usize = 64 * 1024;

/// The size of the first read into a stream's buffer. Reads that fill the
/// buffer double the next one (up to [`MAX_READ`]); short ones halve it
/// again. Buffers larger than this are released once drained (by the read
/// half) or after a short read (by the protocol, when the reader is
/// behind), so an idle stream whose reader took everything holds three
/// buffers of this size at most (12 KiB); only a burst that ended exactly
/// on a full read leaves the protocol's spare at that read's size.
pub(crate) const MIN_READ: usize = 4 * 1024;

/// The largest buffer a stream reads into at once.
const MAX_READ: usize = 64 * 1024;

/// Received bytes, `data[start..end]`. `data` is kept at its full, zeroed
/// once length, so the transport can read into its tail with no copy
/// (`BufferedProtocol`); an empty `data` means no buffer at all.
#[derive(Default)]
pub(crate) struct Chunk {
    pub(crate) data: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Chunk {
    pub(crate) fn from_bytes(bytes: &[u8]) -> Chunk {
        Chunk {
            data: bytes.to_vec(),
            start: 0,
            end: bytes.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Appends `bytes` after the ones held.
    pub(crate) fn append(&mut self, bytes: &[u8]) {
        if self.data.len() - self.end >= bytes.len() {
            self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
            self.end += bytes.len();
        } else {
            self.data.truncate(self.end);
            self.data.drain(..self.start);
            self.data.extend_from_slice(bytes);
            self.start = 0;
            self.end = self.data.len();
        }
    }
}

/// What the protocol and the two halves share. Touched only for short
/// moments, never across a call into user code.
///
/// Received bytes move by swapping buffers, not by copying: the transport
/// reads into the protocol's own buffer, which the protocol swaps into
/// `incoming` when that is empty (else it appends a copy); the read half
/// swaps `incoming` with its drained buffer, which the protocol gets back
/// on its next swap. Three buffers go round, none copied or zeroed again.
pub(crate) struct StreamState {
    /// Received bytes the read half has not taken yet.
    pub(crate) incoming: RefCell<Chunk>,
    /// Bytes the read half holds and has not handed out (for the limit).
    pub(crate) held: Cell<usize>,
    pub(crate) limit: Cell<usize>,
    pub(crate) reading_paused: Cell<bool>,
    pub(crate) eof: Cell<bool>,
    pub(crate) lost: Cell<bool>,
    pub(crate) error: RefCell<Option<io::Error>>,
    pub(crate) writing_paused: Cell<bool>,
    pub(crate) read_waker: WakerSlot,
    pub(crate) write_waker: WakerSlot,
    /// Set by `connection_made`, or at once when made from a transport.
    pub(crate) transport: OnceCell<Transport>,
}

impl StreamState {
    pub(crate) fn new(buffered: &[u8]) -> StreamState {
        StreamState {
            incoming: RefCell::new(Chunk::from_bytes(buffered)),
            held: Cell::new(0),
            limit: Cell::new(DEFAULT_LIMIT),
            reading_paused: Cell::new(false),
            eof: Cell::new(false),
            lost: Cell::new(false),
            error: RefCell::new(None),
            writing_paused: Cell::new(false),
            read_waker: WakerSlot::default(),
            write_waker: WakerSlot::default(),
            transport: OnceCell::new(),
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.incoming.borrow().len() + self.held.get()
    }

    pub(crate) fn wake_reader(&self) {
        self.read_waker.wake();
    }

    pub(crate) fn wake_writer(&self) {
        self.write_waker.wake();
    }

    /// Pauses reading: the buffer went above twice the limit.
    #[cold]
    #[inline(never)]
    pub(crate) fn pause_reading(&self) {
        self.reading_paused.set(true);
        if let Some(t) = self.transport.get() {
            t.pause_reading();
        }
    }

    /// Resumes reading once the buffer is at the limit or below.
    pub(crate) fn maybe_resume_reading(&self) {
        if self.reading_paused.get() && self.buffered() <= self.limit.get() {
            self.reading_paused.set(false);
            if let Some(t) = self.transport.get() {
                t.resume_reading();
            }
        }
    }

    /// What a read returns at EOF: `Ok(false)`, or the connection's error.
    #[cold]
    #[inline(never)]
    pub(crate) fn eof_result(&self) -> io::Result<bool> {
        match self.sticky_error() {
            Some(e) => Err(e),
            None => Ok(false),
        }
    }

    pub(crate) fn sticky_error(&self) -> Option<io::Error> {
        self.error
            .borrow()
            .as_ref()
            .map(crate::transport::clone_io_error)
    }
}

/// The waker of one direction. A wake keeps the waker (disarmed) instead
/// of consuming it, so a task that waits again with the same waker, as a
/// task does, registers with no clone and its wakes drop no reference.
///
/// A `Cell`, only ever taken and put back: nothing is borrowed while the
/// waker runs, which may run anything (D2).
#[derive(Default)]
pub(crate) struct WakerSlot {
    waker: Cell<Option<Waker>>,
    /// Whether a poll is waiting: set by `register`, cleared by `wake`.
    armed: Cell<bool>,
}

impl WakerSlot {
    #[inline]
    pub(crate) fn register(&self, cx: &Context<'_>) {
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            old => self.replace_waker(old, cx.waker()),
        }
        self.armed.set(true);
    }

    /// `register` with a different waker than the last one.
    #[cold]
    #[inline(never)]
    fn replace_waker(&self, old: Option<Waker>, new: &Waker) {
        drop(old);
        self.waker.set(Some(new.clone()));
    }

    #[inline]
    pub(crate) fn wake(&self) {
        if !self.armed.replace(false) {
            return;
        }
        let Some(waker) = self.waker.take() else {
            return;
        };
        waker.wake_by_ref();
        // Kept unless the wake registered another one meanwhile.
        if let Some(newer) = self.waker.replace(Some(waker)) {
            self.keep_newer(newer);
        }
    }

    #[cold]
    #[inline(never)]
    fn keep_newer(&self, newer: Waker) {
        drop(self.waker.replace(Some(newer)));
    }
}

/// The protocol that feeds a [`TransportStream`](crate::TransportStream) (asyncio's
/// `StreamReaderProtocol`).
///
/// A `BufferedProtocol`: the transport reads straight into `spare`, which
/// is empty between calls.
pub(crate) struct StreamReaderProtocol {
    shared: Rc<StreamState>,
    /// What to do with the stream once connected (servers spawn a task).
    on_connect: Option<OnConnect>,
    /// The buffer lent to the transport by `get_buffer`.
    spare: Chunk,
    /// How much the next read asks room for.
    read_size: usize,
}

/// What a connected protocol does with its state (a server spawns the
/// handler's task on a stream made from it).
pub(crate) type OnConnect = Box<dyn FnOnce(Rc<StreamState>, &Transport)>;

impl StreamReaderProtocol {
    pub(crate) fn new(
        shared: Rc<StreamState>,
        on_connect: Option<OnConnect>,
    ) -> Buffered<StreamReaderProtocol> {
        Buffered(StreamReaderProtocol {
            shared,
            on_connect,
            spare: Chunk::default(),
            read_size: MIN_READ,
        })
    }

    /// A protocol whose stream is made in `connection_made` and handed to
    /// `on_connect`.
    pub(crate) fn with_handler(on_connect: OnConnect) -> Buffered<StreamReaderProtocol> {
        StreamReaderProtocol::new(Rc::new(StreamState::new(&[])), Some(on_connect))
    }

    /// A protocol whose stream is made after the connection completes,
    /// on the state returned with it.
    pub(crate) fn pending() -> (Buffered<StreamReaderProtocol>, Rc<StreamState>) {
        let shared = Rc::new(StreamState::new(&[]));
        (StreamReaderProtocol::new(shared.clone(), None), shared)
    }
}

impl StreamReaderProtocol {
    /// Reads that fill the buffer double the next one (up to
    /// [`MAX_READ`]); short ones under half of it halve it (down to
    /// [`MIN_READ`]).
    fn adapt_read_size(&mut self, nbytes: usize, cap: usize) {
        if nbytes == cap {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if nbytes < self.read_size / 2 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
    }
}

/// A zeroed buffer of `len` bytes (only when a buffer grows: the memory
/// the transport reads into is initialized once).
#[cold]
#[inline(never)]
fn zeroed(len: usize) -> Vec<u8> {
    vec![0; len]
}

impl BufferedProtocol for StreamReaderProtocol {
    fn connection_made(&mut self, transport: &Transport) {
        let _ = self.shared.transport.set(transport.clone());
        // A server's or a connection's factory can only give the transport
        // an `AnyProtocol`: swap this for the same protocol as its concrete
        // kind, which the socket transport's read path calls directly.
        transport.set_bridge_protocol(StreamReaderProtocol {
            shared: self.shared.clone(),
            on_connect: None,
            spare: std::mem::take(&mut self.spare),
            read_size: self.read_size,
        });
        if let Some(on_connect) = self.on_connect.take() {
            on_connect(self.shared.clone(), transport);
        }
    }

    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        let want = self.read_size.max(size_hint);
        if self.spare.data.len() < want {
            self.spare.data = zeroed(want);
        }
        // `start`/`end` of the spare mean nothing until buffer_updated.
        &mut self.spare.data
    }

    fn buffer_updated(&mut self, nbytes: usize) {
        let cap = self.spare.data.len();
        // Steady small reads (short, at the smallest size) change nothing.
        if nbytes == cap || self.read_size != MIN_READ {
            self.adapt_read_size(nbytes, cap);
        }
        let s = &*self.shared;
        let buffered = {
            let mut incoming = s.incoming.borrow_mut();
            if incoming.is_empty() {
                // The common case: the reader took everything before.
                self.spare.start = 0;
                self.spare.end = nbytes;
                std::mem::swap(&mut self.spare, &mut *incoming);
                nbytes
            } else {
                append_spare(&mut incoming, &mut self.spare, nbytes);
                incoming.len()
            }
        } + s.held.get();
        if buffered > 2 * s.limit.get() && !s.reading_paused.get() {
            s.pause_reading();
        }
        s.wake_reader();
    }

    fn eof_received(&mut self) -> bool {
        self.shared.eof.set(true);
        self.shared.wake_reader();
        // Keep the write side open: the task decides when to close.
        true
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let s = &self.shared;
        s.lost.set(true);
        s.eof.set(true);
        if let Some(e) = exc {
            *s.error.borrow_mut() = Some(e);
        }
        s.wake_reader();
        s.wake_writer();
    }

    fn pause_writing(&mut self) {
        self.shared.writing_paused.set(true);
    }

    fn resume_writing(&mut self) {
        self.shared.writing_paused.set(false);
        self.shared.wake_writer();
    }
}

/// `buffer_updated` when the reader has not taken the previous bytes yet:
/// appends a copy of the `nbytes` read into `spare`.
#[cold]
#[inline(never)]
fn append_spare(incoming: &mut Chunk, spare: &mut Chunk, nbytes: usize) {
    incoming.append(&spare.data[..nbytes]);
    let cap = spare.data.len();
    if nbytes < cap && cap > MIN_READ {
        // A short read: the burst is over, release its buffer (an idle
        // stream keeps none larger than MIN_READ).
        spare.data = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::Chunk;

    #[test]
    fn chunk_append_uses_the_tail_then_compacts_and_grows() {
        let mut c = Chunk {
            data: vec![0; 8],
            start: 0,
            end: 0,
        };
        c.append(b"abcde");
        assert_eq!(c.bytes(), b"abcde");
        assert_eq!(c.data.len(), 8, "fits in the tail: no growth");
        c.start = 3; // "ab" handed out
        c.append(b"fghij");
        assert_eq!(c.bytes(), b"defghij");
        assert_eq!((c.start, c.end), (0, 7));
        c.start = c.end;
        assert!(c.is_empty());
        assert_eq!(c.len(), 0);
        let c = Chunk::from_bytes(b"xy");
        assert_eq!((c.bytes(), c.len()), (&b"xy"[..], 2));
    }
}
