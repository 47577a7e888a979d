//! The ready queue's items: what one iteration runs, in FIFO order.
//!
//! asyncio's ready deque holds only `Handle`s; I/O events become handles
//! too. Here most events never enter the queue: an iteration runs them
//! straight from the poll's list, where the queue would have put them. An
//! event that does wait here (a transport re-queueing its own read, or the
//! rest of an iteration cut short by a propagated panic) stays a small value
//! (which registration, what readiness) and is looked up when its turn
//! comes, so it allocates nothing, and one for a registration removed
//! meanwhile is dropped.

use super::handle::Handle;
use super::selector::{IoKey, Readiness};

pub(crate) enum Ready {
    /// A `call_soon` callback, a due timer, a thread-safe callback.
    Callback(Handle),
    /// A raw `add_reader` callback whose fd is readable.
    Reader(IoKey),
    /// A raw `add_writer` callback whose fd is writable.
    Writer(IoKey),
    /// A source (transport) whose fd is ready.
    Io(IoKey, Readiness),
    /// A task that was woken, by slab key.
    Task(usize),
    /// A callback sent by another thread through `Remote`.
    Remote(super::remote::RemoteCallback),
    /// The future given to `run_until_complete` was woken.
    Main,
}
