//! The ready queue's items: what one iteration runs, in FIFO order.
//!
//! asyncio's ready deque holds only `Handle`s; I/O events become handles
//! too. Here an I/O event stays a small value (which registration, what
//! readiness) and is looked up when its turn comes, so dispatching a
//! transport's event allocates nothing, and an event for a registration that
//! was removed meanwhile is dropped.

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
