//! asyncio's `StreamReaderProtocol`: the protocol under every
//! [`TransportStream`](crate::TransportStream), and the state it shares with
//! the stream's two halves (received bytes, wakers, flags).
//!
//! It lives below the transport (DESIGN.md D14): the socket transport keeps
//! it as a concrete protocol kind for static dispatch, and the bridge builds
//! its stream on [`StreamState`]; nothing here knows the bridge.
//!
//! # Memory
//!
//! An idle stream holds no receive buffer. Each read borrows a block from
//! its thread's [`BufferPool`] ([`MIN_READ`] bytes; [`MAX_READ`] while
//! reads fill their block), the received bytes travel in that block from
//! the protocol to the read half without a copy, and the read half gives
//! it back the moment it has handed out the last byte. So a stream holds
//! memory for received bytes only while some are unread: a queue of
//! blocks, where a read that arrives before the reader took the previous
//! one is copied into the last block's free tail if it fits. One
//! exception, as with any `BufferedProtocol`: a `recv` that fails after
//! `get_buffer` (a full read followed by `WouldBlock`) leaves the lent
//! block with the protocol until its next read, EOF or loss.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Waker};

use super::BufferedProtocol;
use crate::transport::{EmptyWaiter, Transport};

/// The default read limit: 64 KiB, asyncio's `_DEFAULT_LIMIT`.
pub(crate) const DEFAULT_LIMIT: usize = 64 * 1024;

/// The size of a stream's reads at rest, and of the pool's small blocks.
pub(crate) const MIN_READ: usize = 4 * 1024;

/// The size of a stream's reads after one filled its block (a burst),
/// until one reads less than [`MIN_READ`].
const MAX_READ: usize = 64 * 1024;

/// Received bytes, `data[start..end]`, in a buffer that goes back to the
/// pool once they are read; `next` links blocks in the pool's free lists
/// and in a stream's queue of unread ones.
pub(crate) struct Block {
    next: Option<Box<Block>>,
    start: usize,
    end: usize,
    data: Box<[u8]>,
}

impl Block {
    /// A block of `size` zeroed bytes: the memory a socket reads into is
    /// initialized once, when it is allocated.
    #[cold]
    #[inline(never)]
    fn new(size: usize) -> Box<Block> {
        Box::new(Block {
            next: None,
            start: 0,
            end: 0,
            data: vec![0; size].into_boxed_slice(),
        })
    }

    /// A block holding a copy of `bytes`.
    fn from_bytes(bytes: &[u8]) -> Box<Block> {
        Box::new(Block {
            next: None,
            start: 0,
            end: bytes.len(),
            data: bytes.into(),
        })
    }

    /// The bytes not handed out yet.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Marks `n` more bytes handed out; returns whether none is left.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) -> bool {
        self.start += n;
        self.start >= self.end
    }
}

/// A stack of free blocks of one size, at most `max` of them.
struct FreeList {
    head: Cell<Option<Box<Block>>>,
    len: Cell<usize>,
    max: usize,
}

impl FreeList {
    const fn new(max: usize) -> FreeList {
        FreeList {
            head: Cell::new(None),
            len: Cell::new(0),
            max,
        }
    }

    #[inline(always)]
    fn pop(&self) -> Option<Box<Block>> {
        let mut block = self.head.take()?;
        fill(&self.head, block.next.take());
        self.len.set(self.len.get() - 1);
        Some(block)
    }

    /// Keeps `block`, or frees it if the list is full.
    #[inline(always)]
    fn push(&self, mut block: Box<Block>) {
        let n = self.len.get();
        if n < self.max {
            let next = self.head.take();
            fill_field(&mut block.next, next);
            fill(&self.head, Some(block));
            self.len.set(n + 1);
        }
    }
}

/// Sets `cell`, known to be empty: with nothing to drop, no drop code is
/// emitted on the hot paths that link blocks.
#[inline(always)]
fn fill(cell: &Cell<Option<Box<Block>>>, value: Option<Box<Block>>) {
    let old = cell.replace(value);
    debug_assert!(old.is_none());
    std::mem::forget(old);
}

/// [`fill`] for a field.
#[inline(always)]
fn fill_field(field: &mut Option<Box<Block>>, value: Option<Box<Block>>) {
    let old = std::mem::replace(field, value);
    debug_assert!(old.is_none());
    std::mem::forget(old);
}

impl Drop for FreeList {
    fn drop(&mut self) {
        // One at a time, not recursively.
        while self.pop().is_some() {}
    }
}

/// Free blocks of [`MIN_READ`] and [`MAX_READ`] bytes for the streams of
/// one thread, last freed first; a block given back beyond its list's
/// bound, or of another size, is freed.
///
/// The pool holds what the thread's streams had in flight at once: a loop
/// reads every ready socket before the tasks run, so each stream read in
/// one iteration holds a block until its task has taken the bytes. The
/// bounds ([`POOL_SMALL`], [`POOL_LARGE`]) let a thousand streams read in
/// every iteration without allocating (a new block is a zeroed
/// allocation), and cap what a past burst leaves allocated: at most 5 MiB
/// per thread, whatever the number of streams.
pub(crate) struct BufferPool {
    small: FreeList,
    large: FreeList,
}

/// The most free [`MIN_READ`] blocks a pool keeps (4 MiB).
const POOL_SMALL: usize = 1024;

/// The most free [`MAX_READ`] blocks a pool keeps (1 MiB).
const POOL_LARGE: usize = 16;

thread_local! {
    static POOL: Rc<BufferPool> = Rc::new(BufferPool {
        small: FreeList::new(POOL_SMALL),
        large: FreeList::new(POOL_LARGE),
    });
}

impl BufferPool {
    /// This thread's pool.
    fn current() -> Rc<BufferPool> {
        POOL.with(Rc::clone)
    }

    /// An empty block of [`MAX_READ`] bytes if `large`, else [`MIN_READ`].
    #[inline(always)]
    fn take(&self, large: bool) -> Box<Block> {
        if !large {
            if let Some(block) = self.small.pop() {
                return block;
            }
        }
        self.take_other(large)
    }

    #[cold]
    #[inline(never)]
    fn take_other(&self, large: bool) -> Box<Block> {
        let pooled = if large { self.large.pop() } else { None };
        pooled.unwrap_or_else(|| Block::new(if large { MAX_READ } else { MIN_READ }))
    }

    /// Takes back a block (its bytes are dropped; whoever takes it next
    /// sets `start` and `end`).
    #[inline(always)]
    pub(crate) fn give(&self, block: Box<Block>) {
        if block.data.len() == MIN_READ {
            self.small.push(block);
        } else {
            self.give_other(block);
        }
    }

    #[cold]
    #[inline(never)]
    fn give_other(&self, block: Box<Block>) {
        if block.data.len() == MAX_READ {
            self.large.push(block);
        }
    }
}

/// What the protocol and the two halves of a stream share. Touched only
/// for short moments, never across a call into user code.
pub(crate) struct StreamState {
    /// The transport under the stream.
    pub(crate) transport: Transport,
    /// Where received bytes' blocks come from and go back to.
    pub(crate) pool: Rc<BufferPool>,
    /// Received blocks the read half has not taken yet, oldest first,
    /// linked by `next`.
    incoming: Cell<Option<Box<Block>>>,
    /// Bytes received and not handed out yet (in `incoming` and in the
    /// block the read half holds), for the limit.
    unread: Cell<usize>,
    pub(crate) limit: Cell<usize>,
    pub(crate) reading_paused: Cell<bool>,
    pub(crate) eof: Cell<bool>,
    pub(crate) lost: Cell<bool>,
    error: Cell<Option<io::Error>>,
    pub(crate) writing_paused: Cell<bool>,
    read_waker: WakerSlot,
    write_waker: WakerSlot,
    read_armed: Cell<bool>,
    write_armed: Cell<bool>,
    /// The empty waiter a flush of the stream waits on, kept across polls.
    pub(crate) flush: Cell<Option<EmptyWaiter>>,
    /// Whether the stream's `close` sent EOF.
    pub(crate) eof_sent: Cell<bool>,
    /// The stream's halves alive; the last one dropped closes the
    /// transport (0 also after `into_parts`: nothing closes it then).
    pub(crate) halves: Cell<u8>,
}

impl StreamState {
    /// The state of a stream on `transport`, with `buffered` as the first
    /// bytes to read.
    pub(crate) fn new(transport: &Transport, buffered: &[u8]) -> Rc<StreamState> {
        Rc::new(StreamState {
            transport: transport.clone(),
            pool: BufferPool::current(),
            incoming: Cell::new((!buffered.is_empty()).then(|| Block::from_bytes(buffered))),
            unread: Cell::new(buffered.len()),
            limit: Cell::new(DEFAULT_LIMIT),
            reading_paused: Cell::new(false),
            eof: Cell::new(false),
            lost: Cell::new(transport.is_closing()),
            error: Cell::new(None),
            writing_paused: Cell::new(false),
            read_waker: WakerSlot::default(),
            write_waker: WakerSlot::default(),
            read_armed: Cell::new(false),
            write_armed: Cell::new(false),
            flush: Cell::new(None),
            eof_sent: Cell::new(false),
            halves: Cell::new(0),
        })
    }

    /// How many received bytes wait to be read.
    #[inline]
    pub(crate) fn buffered(&self) -> usize {
        self.unread.get()
    }

    /// The oldest received block not taken yet.
    #[inline(always)]
    pub(crate) fn take_received(&self) -> Option<Box<Block>> {
        let mut block = self.incoming.take()?;
        fill(&self.incoming, block.next.take());
        Some(block)
    }

    /// `n` received bytes were handed out (from a block taken with
    /// `take_received`).
    #[inline(always)]
    pub(crate) fn consumed(&self, n: usize) {
        self.unread.set(self.unread.get() - n);
        if self.reading_paused.get() {
            self.maybe_resume_reading();
        }
    }

    /// All the bytes received and not taken, oldest first; the blocks go
    /// back to the pool.
    pub(crate) fn drain_received(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(block) = self.take_received() {
            bytes.extend_from_slice(block.bytes());
            self.pool.give(block);
        }
        self.unread.set(0);
        bytes
    }

    /// Queues a received block after the others.
    #[inline(always)]
    fn push_received(&self, block: Box<Block>) {
        match self.incoming.take() {
            None => fill(&self.incoming, Some(block)),
            Some(head) => self.append_received(head, block),
        }
    }

    /// `push_received` behind unread blocks: the bytes are copied into the
    /// last one's tail if they fit, else the block is linked after it.
    #[cold]
    #[inline(never)]
    fn append_received(&self, mut head: Box<Block>, block: Box<Block>) {
        let mut last = &mut head;
        while last.next.is_some() {
            last = last.next.as_mut().expect("checked");
        }
        let n = block.len();
        if last.data.len() - last.end >= n {
            let end = last.end;
            last.data[end..end + n].copy_from_slice(block.bytes());
            last.end += n;
            self.pool.give(block);
        } else {
            last.next = Some(block);
        }
        self.incoming.set(Some(head));
    }

    /// Wakes the read half's task when data, EOF or an error arrives.
    #[inline]
    pub(crate) fn register_reader(&self, cx: &Context<'_>) {
        self.read_waker.register(&self.read_armed, cx);
    }

    /// Wakes the write half's task when writing resumes or fails.
    #[inline]
    pub(crate) fn register_writer(&self, cx: &Context<'_>) {
        self.write_waker.register(&self.write_armed, cx);
    }

    fn wake_reader(&self) {
        self.read_waker.wake(&self.read_armed);
    }

    fn wake_writer(&self) {
        self.write_waker.wake(&self.write_armed);
    }

    /// Pauses reading: the buffer went above twice the limit.
    #[cold]
    #[inline(never)]
    fn pause_reading(&self) {
        self.reading_paused.set(true);
        self.transport.pause_reading();
    }

    /// Resumes reading once the buffer is at the limit or below.
    #[cold]
    #[inline(never)]
    pub(crate) fn maybe_resume_reading(&self) {
        if self.reading_paused.get() && self.buffered() <= self.limit.get() {
            self.reading_paused.set(false);
            self.transport.resume_reading();
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

    /// A copy of the connection's error, if it was lost with one.
    pub(crate) fn sticky_error(&self) -> Option<io::Error> {
        let error = self.error.take();
        let copy = error.as_ref().map(crate::transport::clone_io_error);
        self.error.set(error);
        copy
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // One block at a time, not recursively.
        while let Some(block) = self.take_received() {
            self.pool.give(block);
        }
    }
}

/// The waker of one direction. A wake keeps the waker (disarmed) instead
/// of consuming it, so a task that waits again with the same waker, as a
/// task does, registers with no clone and its wakes drop no reference.
///
/// A `Cell`, only ever taken and put back: nothing is borrowed while the
/// waker runs, which may run anything (D2). Whether a poll is waiting
/// (`armed`: set by `register`, cleared by `wake`) is a flag the owner
/// keeps, next to its other flags.
#[derive(Default)]
pub(crate) struct WakerSlot {
    waker: Cell<Option<Waker>>,
}

impl WakerSlot {
    #[inline]
    fn register(&self, armed: &Cell<bool>, cx: &Context<'_>) {
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            old => self.replace_waker(old, cx.waker()),
        }
        armed.set(true);
    }

    /// `register` with a different waker than the last one.
    #[cold]
    #[inline(never)]
    fn replace_waker(&self, old: Option<Waker>, new: &Waker) {
        drop(old);
        self.waker.set(Some(new.clone()));
    }

    #[inline]
    fn wake(&self, armed: &Cell<bool>) {
        if !armed.replace(false) {
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

/// The protocol that feeds a [`TransportStream`](crate::TransportStream)
/// (asyncio's `StreamReaderProtocol`).
///
/// A `BufferedProtocol`: the transport reads straight into `spare`, a
/// block from the pool, which `buffer_updated` queues for the read half;
/// between reads the protocol holds no block.
pub(crate) struct StreamReaderProtocol {
    state: Rc<StreamState>,
    /// The block lent to the transport by `get_buffer`.
    spare: Option<Box<Block>>,
    /// Whether reads ask for [`MAX_READ`] bytes rather than [`MIN_READ`].
    large: bool,
}

impl StreamReaderProtocol {
    pub(crate) fn new(state: Rc<StreamState>) -> StreamReaderProtocol {
        StreamReaderProtocol {
            state,
            spare: None,
            large: false,
        }
    }

    /// A read that filled its block goes on with [`MAX_READ`] ones; one
    /// of less than [`MIN_READ`] goes back.
    #[cold]
    #[inline(never)]
    fn adapt_read_size(&mut self, nbytes: usize, cap: usize) {
        if nbytes == cap {
            self.large = true;
        } else if nbytes < MIN_READ {
            self.large = false;
        }
    }

    /// A `size_hint` larger than the block: a block of that size.
    #[cold]
    #[inline(never)]
    fn grow_spare(&mut self, size_hint: usize) -> &mut [u8] {
        if let Some(old) = self.spare.take() {
            self.state.pool.give(old);
        }
        &mut self.spare.insert(Block::new(size_hint)).data
    }

    /// Gives the spare back: nothing is read into it now.
    fn release_spare(&mut self) {
        if let Some(block) = self.spare.take() {
            self.state.pool.give(block);
        }
    }
}

impl Drop for StreamReaderProtocol {
    fn drop(&mut self) {
        self.release_spare();
    }
}

impl BufferedProtocol for StreamReaderProtocol {
    #[inline]
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        // Already set only after a `recv` that failed: lent again.
        if self.spare.is_none() {
            self.spare = Some(self.state.pool.take(self.large));
        }
        if self
            .spare
            .as_ref()
            .is_some_and(|b| b.data.len() < size_hint)
        {
            return self.grow_spare(size_hint);
        }
        match &mut self.spare {
            Some(block) => &mut block.data,
            None => &mut [],
        }
    }

    #[inline(always)]
    fn buffer_updated(&mut self, nbytes: usize) {
        let Some(mut block) = self.spare.take() else {
            return;
        };
        let cap = block.data.len();
        let nbytes = nbytes.min(cap);
        // Steady small reads (short, into a small block) change nothing.
        if nbytes == cap || self.large {
            self.adapt_read_size(nbytes, cap);
        }
        (block.start, block.end) = (0, nbytes);
        let s = &*self.state;
        s.push_received(block);
        let unread = s.unread.get() + nbytes;
        s.unread.set(unread);
        if unread > 2 * s.limit.get() && !s.reading_paused.get() {
            s.pause_reading();
        }
        s.wake_reader();
    }

    fn eof_received(&mut self) -> bool {
        self.release_spare();
        self.state.eof.set(true);
        self.state.wake_reader();
        // Keep the write side open: the task decides when to close.
        true
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.release_spare();
        let s = &self.state;
        s.lost.set(true);
        s.eof.set(true);
        if let Some(e) = exc {
            s.error.set(Some(e));
        }
        s.wake_reader();
        s.wake_writer();
    }

    fn pause_writing(&mut self) {
        self.state.writing_paused.set(true);
    }

    fn resume_writing(&mut self) {
        self.state.writing_paused.set(false);
        self.state.wake_writer();
    }
}

/// The protocol a stream's transport starts with, while it connects: in
/// `connection_made` it puts a [`StreamReaderProtocol`] on a new
/// [`StreamState`] in its place and hands the state to `on_connect`
/// (a server spawns the handler's task on a stream made from it).
pub(crate) struct Connecting<F> {
    on_connect: Option<F>,
}

impl<F: FnOnce(Rc<StreamState>) + 'static> Connecting<F> {
    pub(crate) fn new(on_connect: F) -> Connecting<F> {
        Connecting {
            on_connect: Some(on_connect),
        }
    }
}

impl<F: FnOnce(Rc<StreamState>) + 'static> BufferedProtocol for Connecting<F> {
    fn connection_made(&mut self, transport: &Transport) {
        let state = StreamState::new(transport, &[]);
        // Installed as its concrete kind, which the socket transport's read
        // path calls directly; this one is dropped when it returns.
        transport.set_bridge_protocol(StreamReaderProtocol::new(state.clone()));
        if let Some(on_connect) = self.on_connect.take() {
            on_connect(state);
        }
    }

    /// Never called: `connection_made` replaced this protocol.
    fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
        &mut []
    }

    fn buffer_updated(&mut self, _nbytes: usize) {}
}

#[cfg(test)]
mod tests {
    use super::{Block, BufferPool, MAX_READ, POOL_SMALL};

    /// A block from `pool` holding `bytes`.
    fn block_with(pool: &BufferPool, bytes: &[u8]) -> Box<Block> {
        let mut b = pool.take(false);
        b.data[..bytes.len()].copy_from_slice(bytes);
        (b.start, b.end) = (0, bytes.len());
        b
    }

    #[test]
    fn drained_blocks_go_back_to_the_pool_up_to_its_bound() {
        let pool = BufferPool::current();
        let mut b = block_with(&pool, b"0123456789");
        assert!(!b.advance(4));
        assert_eq!(b.bytes(), b"456789");
        assert!(b.advance(6));
        let addr = b.data.as_ptr();
        pool.give(b);
        let again = pool.take(false);
        assert_eq!(again.data.as_ptr(), addr, "the same block again");
        assert_eq!(pool.take(true).data.len(), MAX_READ);
        let many: Vec<_> = (0..POOL_SMALL + 10).map(|_| pool.take(false)).collect();
        for b in many {
            pool.give(b);
        }
        assert_eq!(pool.small.len.get(), POOL_SMALL, "the rest freed");
        pool.give(Block::from_bytes(b"xyz")); // another size: freed
        assert_eq!(pool.small.len.get(), POOL_SMALL);
    }
}
