//! asyncio's `StreamReaderProtocol`: the protocol under every
//! [`TransportStream`](crate::TransportStream), and the state it shares with
//! the stream's two halves (received bytes, wakers, flags).
//!
//! It lives below the transport (docs/design.md D14): the socket transport keeps
//! it as a concrete protocol kind for static dispatch, and the bridge builds
//! its stream on [`StreamState`]; nothing here knows the bridge.
//!
//! # Memory
//!
//! An idle stream holds no receive buffer. Each read borrows a block from
//! its thread's [`BufferPool`] ([`MIN_READ`] bytes; [`MAX_READ`] while
//! reads fill their blocks), the received bytes travel in that block from
//! the protocol to the read half without a copy, and the read half gives
//! it back the moment it has handed out the last byte. So a stream holds
//! memory for received bytes only while some are unread: a queue of
//! blocks, where a read that arrives before the reader took the previous
//! one is copied into the last block's free tail if it fits.
//!
//! A `recv` that fails after `get_buffer` (`WouldBlock` after a read that
//! filled its block: a 4 KiB message does it) would leave the lent block
//! with the protocol; the transport says so (`LendsBuffer::nothing_read`,
//! which public `BufferedProtocol`s do not see), and the block goes back
//! to the pool at once.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Waker};

use super::{BufferedProtocol, LendsBuffer};
use crate::transport::{EmptyWaiter, Transport};

/// The default read limit: 64 KiB, asyncio's `_DEFAULT_LIMIT`.
pub(crate) const DEFAULT_LIMIT: usize = 64 * 1024;

/// The size of a stream's reads at rest, and of the pool's small blocks.
pub(crate) const MIN_READ: usize = 4 * 1024;

/// The size of a stream's reads after two in a row filled their blocks (a
/// burst), until one reads less than [`MIN_READ`]. (After one full read
/// the transport reads again at once, and often gets `WouldBlock`: a
/// message of exactly one block. That read still asks for [`MIN_READ`],
/// so what it borrows for nothing is a small block.)
const MAX_READ: usize = 64 * 1024;

/// How much a stream's next read asks room for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReadSize {
    /// [`MIN_READ`]: at rest.
    Small,
    /// [`MIN_READ`], after a read that filled its block.
    SmallAfterFull,
    /// [`MAX_READ`]: two reads in a row filled their blocks.
    Large,
}

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
    pub(crate) fn take(&self, large: bool) -> Box<Block> {
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
    /// How many small blocks are free, for tests.
    #[cfg(test)]
    pub(crate) fn free_small(&self) -> usize {
        self.small.len.get()
    }

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

/// Reading is paused: the unread bytes went above twice the limit.
pub(crate) const READING_PAUSED: u8 = 1;
/// The peer sent EOF, or the connection was lost.
pub(crate) const EOF: u8 = 1 << 1;
/// The connection was lost (`connection_lost` ran).
pub(crate) const LOST: u8 = 1 << 2;
/// The transport paused writing (`pause_writing`).
pub(crate) const WRITING_PAUSED: u8 = 1 << 3;
/// The stream's `close` sent EOF.
pub(crate) const EOF_SENT: u8 = 1 << 4;
/// The read half's task waits to be woken.
const READ_ARMED: u8 = 1 << 5;
/// The write half's task waits to be woken.
const WRITE_ARMED: u8 = 1 << 6;

/// A stream's flags, one bit each.
pub(crate) struct Flags(Cell<u8>);

impl Flags {
    #[inline(always)]
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.0.get() & flag != 0
    }

    #[inline(always)]
    pub(crate) fn set(&self, flag: u8, on: bool) {
        let f = self.0.get();
        self.0.set(if on { f | flag } else { f & !flag });
    }

    /// Sets `flag` to `on` and returns whether it was set.
    #[inline(always)]
    pub(crate) fn replace(&self, flag: u8, on: bool) -> bool {
        let was = self.has(flag);
        self.set(flag, on);
        was
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
    /// [`READING_PAUSED`], [`EOF`], [`LOST`], [`WRITING_PAUSED`],
    /// [`EOF_SENT`] and the wakers' armed flags.
    pub(crate) flags: Flags,
    error: Cell<Option<io::Error>>,
    read_waker: WakerSlot,
    write_waker: WakerSlot,
    /// The empty waiter a flush of the stream waits on, kept across polls.
    pub(crate) flush: Cell<Option<EmptyWaiter>>,
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
            flags: Flags(Cell::new(if transport.is_closing() { LOST } else { 0 })),
            error: Cell::new(None),
            read_waker: WakerSlot::default(),
            write_waker: WakerSlot::default(),
            flush: Cell::new(None),
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
        if self.flags.has(READING_PAUSED) {
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

    /// `push_received` behind unread blocks.
    #[cold]
    #[inline(never)]
    fn append_received(&self, mut head: Box<Block>, block: Box<Block>) {
        append_block(&mut head, block, &self.pool);
        self.incoming.set(Some(head));
    }

    /// Wakes the read half's task when data, EOF or an error arrives.
    /// Called when it found nothing to read.
    #[inline]
    pub(crate) fn register_reader(&self, cx: &Context<'_>) {
        self.read_waker.register(&self.flags, READ_ARMED, cx);
    }

    /// Wakes the write half's task when writing resumes or fails.
    #[inline]
    pub(crate) fn register_writer(&self, cx: &Context<'_>) {
        self.write_waker.register(&self.flags, WRITE_ARMED, cx);
    }

    fn wake_reader(&self) {
        self.read_waker.wake(&self.flags, READ_ARMED);
    }

    fn wake_writer(&self) {
        self.write_waker.wake(&self.flags, WRITE_ARMED);
    }

    /// Pauses reading: the buffer went above twice the limit.
    #[cold]
    #[inline(never)]
    fn pause_reading(&self) {
        self.flags.set(READING_PAUSED, true);
        self.transport.pause_reading();
    }

    /// Resumes reading once the buffer is at the limit or below.
    #[cold]
    #[inline(never)]
    pub(crate) fn maybe_resume_reading(&self) {
        if self.flags.has(READING_PAUSED) && self.buffered() <= self.limit.get() {
            self.flags.set(READING_PAUSED, false);
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
/// (armed: set by `register`, cleared by `wake`) is a bit of the owner's
/// flags.
#[derive(Default)]
pub(crate) struct WakerSlot {
    waker: Cell<Option<Waker>>,
}

impl WakerSlot {
    #[inline]
    fn register(&self, flags: &Flags, armed: u8, cx: &Context<'_>) {
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            old => self.replace_waker(old, cx.waker()),
        }
        flags.set(armed, true);
    }

    /// `register` with a different waker than the last one.
    #[cold]
    #[inline(never)]
    fn replace_waker(&self, old: Option<Waker>, new: &Waker) {
        drop(old);
        self.waker.set(Some(new.clone()));
    }

    #[inline]
    fn wake(&self, flags: &Flags, armed: u8) {
        if !flags.replace(armed, false) {
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
    /// How much the next read asks room for.
    read_size: ReadSize,
}

impl StreamReaderProtocol {
    pub(crate) fn new(state: Rc<StreamState>) -> StreamReaderProtocol {
        StreamReaderProtocol {
            state,
            spare: None,
            read_size: ReadSize::Small,
        }
    }

    /// Two reads in a row that filled their blocks go on with
    /// [`MAX_READ`]; one of less than [`MIN_READ`] goes back.
    #[cold]
    #[inline(never)]
    fn adapt_read_size(&mut self, nbytes: usize, cap: usize) {
        self.read_size = if nbytes == cap {
            match self.read_size {
                ReadSize::Small => ReadSize::SmallAfterFull,
                ReadSize::SmallAfterFull | ReadSize::Large => ReadSize::Large,
            }
        } else if nbytes < MIN_READ {
            ReadSize::Small
        } else {
            self.read_size
        };
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

impl LendsBuffer for StreamReaderProtocol {
    /// The `recv` into the lent block read nothing: the block goes back.
    #[inline]
    fn nothing_read(&mut self) {
        self.release_spare();
    }
}

impl BufferedProtocol for StreamReaderProtocol {
    #[inline(always)]
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        let StreamReaderProtocol {
            state,
            spare,
            read_size,
        } = self;
        let block = spare.get_or_insert_with(|| state.pool.take(*read_size == ReadSize::Large));
        if block.data.len() < size_hint {
            grow_block(block, size_hint, &state.pool);
        }
        &mut block.data
    }

    #[inline(always)]
    fn buffer_updated(&mut self, nbytes: usize) {
        let Some(mut block) = self.spare.take() else {
            return;
        };
        let cap = block.data.len();
        let nbytes = nbytes.min(cap);
        // Steady small reads (short, into a small block) change nothing.
        if nbytes == cap || self.read_size != ReadSize::Small {
            self.adapt_read_size(nbytes, cap);
        }
        (block.start, block.end) = (0, nbytes);
        let s = &*self.state;
        s.push_received(block);
        let unread = s.unread.get() + nbytes;
        s.unread.set(unread);
        if unread > 2 * s.limit.get() && !s.flags.has(READING_PAUSED) {
            s.pause_reading();
        }
        s.wake_reader();
    }

    fn eof_received(&mut self) -> bool {
        self.release_spare();
        self.state.flags.set(EOF, true);
        self.state.wake_reader();
        // Keep the write side open: the task decides when to close.
        true
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.release_spare();
        let s = &self.state;
        s.flags.set(LOST | EOF, true);
        if let Some(e) = exc {
            s.error.set(Some(e));
        }
        s.wake_reader();
        s.wake_writer();
    }

    fn pause_writing(&mut self) {
        self.state.flags.set(WRITING_PAUSED, true);
    }

    fn resume_writing(&mut self) {
        self.state.flags.set(WRITING_PAUSED, false);
        self.state.wake_writer();
    }
}

/// Appends `block`'s bytes to the queue that starts at `head`: copied into
/// the last block's tail if they fit (and `block` goes back to `pool`),
/// else `block` is linked after it.
fn append_block(head: &mut Box<Block>, block: Box<Block>, pool: &BufferPool) {
    let mut last = head;
    while last.next.is_some() {
        last = last.next.as_mut().expect("checked");
    }
    let n = block.len();
    if last.data.len() - last.end >= n {
        let end = last.end;
        last.data[end..end + n].copy_from_slice(block.bytes());
        last.end += n;
        pool.give(block);
    } else {
        last.next = Some(block);
    }
}

/// A `size_hint` larger than the block: a block of that size instead.
#[cold]
#[inline(never)]
fn grow_block(block: &mut Box<Block>, size_hint: usize, pool: &BufferPool) {
    pool.give(std::mem::replace(block, Block::new(size_hint)));
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
    use super::{append_block, Block, BufferPool, MAX_READ, MIN_READ, POOL_SMALL};

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

    #[test]
    fn appended_bytes_fill_the_last_blocks_tail_then_link_a_block() {
        let pool = BufferPool::current();
        let mut head = block_with(&pool, b"abc");
        head.advance(1); // "a" handed out
        append_block(&mut head, block_with(&pool, &[b'd'; 997]), &pool);
        assert!(head.next.is_none(), "copied into the tail");
        assert_eq!(head.len(), 2 + 997);
        append_block(&mut head, block_with(&pool, &[b'e'; MIN_READ - 100]), &pool);
        assert!(head.next.is_some(), "too big for the tail: linked");
        append_block(&mut head, block_with(&pool, b"fg"), &pool);
        let second = head.next.as_ref().unwrap();
        assert!(second.next.is_none(), "into the second block's tail");
        let mut all = head.bytes().to_vec();
        all.extend_from_slice(second.bytes());
        let mut expected = b"bc".to_vec();
        expected.extend_from_slice(&[b'd'; 997]);
        expected.extend_from_slice(&[b'e'; MIN_READ - 100]);
        expected.extend_from_slice(b"fg");
        assert_eq!(all, expected);
    }
}
