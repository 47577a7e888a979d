//! The timer heap: handles ordered by due time.
//!
//! A binary min-heap on `(when, sequence)`. The sequence number makes timers
//! with the same deadline run in the order they were scheduled (asyncio
//! leaves that order undefined; FIFO is the least surprising choice).
//!
//! Cancelled timers stay in the heap until they reach its head, unless they
//! pile up: when more than [`MIN_SCHEDULED_TIMER_HANDLES`] timers are in the
//! heap and more than half of them are cancelled, the heap is rebuilt
//! without them (asyncio's `_run_once` step 1).

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::Instant;

use super::handle::Handle;

/// asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`.
pub(crate) const MIN_SCHEDULED_TIMER_HANDLES: usize = 100;

struct Entry {
    when: Instant,
    seq: u64,
    handle: Handle,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.when == other.when && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.when, self.seq).cmp(&(other.when, other.seq))
    }
}

pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
    /// Cancelled timers still in the heap; shared with every `TimerHandle`.
    cancelled: Rc<Cell<usize>>,
    /// Cancelled timers dropped from the heap so far (for `stats`).
    dropped_cancelled: u64,
}

impl TimerHeap {
    pub(crate) fn new() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: Rc::new(Cell::new(0)),
            dropped_cancelled: 0,
        }
    }

    pub(crate) fn cancelled_counter(&self) -> Rc<Cell<usize>> {
        self.cancelled.clone()
    }

    pub(crate) fn push(&mut self, when: Instant, handle: Handle) {
        handle.set_scheduled(true);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { when, seq, handle }));
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Timers ever pushed.
    pub(crate) fn scheduled(&self) -> u64 {
        self.next_seq
    }

    /// Timers cancelled while in the heap, dropped or not yet.
    pub(crate) fn cancelled_total(&self) -> u64 {
        self.dropped_cancelled + self.cancelled.get() as u64
    }

    /// Timers in the heap that are not cancelled.
    pub(crate) fn live(&self) -> usize {
        self.heap.len().saturating_sub(self.cancelled.get())
    }

    /// Step 1 of an iteration: drop cancelled timers, by rebuilding the heap
    /// when they are the majority, else by popping them off the head.
    pub(crate) fn remove_cancelled(&mut self) {
        let cancelled = self.cancelled.get();
        if self.heap.len() > MIN_SCHEDULED_TIMER_HANDLES && cancelled * 2 > self.heap.len() {
            let entries = std::mem::take(&mut self.heap).into_vec();
            let entries_len = entries.len();
            let live: Vec<_> = entries
                .into_iter()
                .filter(|Reverse(e)| {
                    if e.handle.cancelled() {
                        e.handle.set_scheduled(false);
                        false
                    } else {
                        true
                    }
                })
                .collect();
            self.dropped_cancelled += (entries_len - live.len()) as u64;
            self.heap = BinaryHeap::from(live);
            self.cancelled.set(0);
        } else {
            while let Some(Reverse(head)) = self.heap.peek() {
                if !head.handle.cancelled() {
                    break;
                }
                let Reverse(e) = self.heap.pop().expect("peeked");
                e.handle.set_scheduled(false);
                self.cancelled.set(self.cancelled.get().saturating_sub(1));
                self.dropped_cancelled += 1;
            }
        }
    }

    /// The deadline of the first timer, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.when)
    }

    /// Pops the head timer if it is due at `now` (never early: `when <= now`).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Handle> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.when <= now => {}
            _ => return None,
        }
        let Reverse(e) = self.heap.pop().expect("peeked");
        e.handle.set_scheduled(false);
        if e.handle.cancelled() {
            self.cancelled.set(self.cancelled.get().saturating_sub(1));
            self.dropped_cancelled += 1;
        }
        Some(e.handle)
    }

    /// Empties the heap (on close), returning the handles so they are
    /// dropped with no borrow held.
    pub(crate) fn drain(&mut self) -> Vec<Handle> {
        self.dropped_cancelled += self.cancelled.get() as u64;
        self.cancelled.set(0);
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|Reverse(e)| {
                e.handle.set_scheduled(false);
                e.handle
            })
            .collect()
    }
}
