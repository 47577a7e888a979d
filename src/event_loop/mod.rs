//! The event loop: asyncio's `BaseSelectorEventLoop` on mio.
//!
//! [`EventLoop`] owns the loop and closes it when dropped; [`LoopHandle`] is
//! the cheap, clonable, `!Send` handle that callbacks, transports and tasks
//! hold (docs/design.md D1). Every method of `LoopHandle` may be called from
//! inside any callback (D2): no borrow of the loop's state is held while
//! user code runs.
//!
//! # One iteration
//!
//! [`run_forever`](LoopHandle::run_forever) repeats one iteration until
//! [`stop`](LoopHandle::stop) is called; an iteration is asyncio's
//! `_run_once`:
//!
//! 1. Drop cancelled timers: pop them off the heap's head, or rebuild the
//!    heap when more than half of more than 100 timers are cancelled.
//! 2. Compute the poll timeout: zero if callbacks are ready, the loop is
//!    stopping, or another thread queued something; else until the first
//!    timer (at most 24 hours); else forever.
//! 3. Poll, unless the poll may be skipped (see below).
//! 4. Run the items queued before the poll, in FIFO order.
//! 5. Run each I/O event as it is read from the poll's list: the order a
//!    queue would give, without the queue's push, pop and match per event.
//! 6. Run what other threads sent ([`Remote`]), the tasks they woke, and
//!    the callbacks of due timers (due means `when <= now`: a timer never
//!    fires early).
//!
//! What steps 4 to 6 schedule runs in the next iteration, after another
//! poll: the ready deque of asyncio's `_run_once`, run only as far as it
//! reached when the iteration began.
//!
//! # Skipped polls
//!
//! The one liberty sloop takes with `_run_once`: when the poll timeout is
//! zero only because callbacks are ready, and the previous iteration did
//! poll, the poll is skipped and the iteration sees no events. A zero
//! timeout poll made a moment earlier could have found nothing too, so
//! this is a schedule asyncio can also produce; the events wait for the
//! next iteration, which always polls. I/O is thus polled at least every
//! second iteration, and a poll that may wait is never skipped.
//!
//! It matters for tasks: an event wakes a task, and the task runs in the
//! next iteration. Without the skip, each such round trip costs a second,
//! mostly empty `epoll_wait`; with it, the tasks run straight away and the
//! next poll collects everything that arrived meanwhile.

pub(crate) mod ext;
pub(crate) mod handle;
pub(crate) mod ready;
pub(crate) mod remote;
mod run;
pub(crate) mod selector;
pub(crate) mod stats;
mod task;
pub(crate) mod timers;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::error::Error;
use crate::exception::{Exception, ExceptionContext};
pub use handle::{Handle, TimerHandle};
use ready::Ready;
#[cfg(sloop_loom)]
#[doc(hidden)]
pub use remote::model as loom_model;
use remote::{Inbox, Shared, MAIN_TASK};
pub use remote::{Remote, RemoteTask};
use selector::Selector;
pub(crate) use selector::{IoKey, IoSource, Readiness};
use stats::Counters;
pub(crate) use stats::{ByteCounters, SourceTally};
pub use stats::{LoopStats, SlowCallback, TransportCounts, TransportStats};
use task::TaskSlot;
pub use task::{Task, TaskError};
use timers::TimerHeap;

/// asyncio's `MAXIMUM_SELECT_TIMEOUT`: the longest single poll.
const MAXIMUM_SELECT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The default size of the loop's shared read buffer (asyncio's
/// `max_size`, 256 KiB). See the example on [`EventLoop::builder`].
pub const DEFAULT_READ_BUFFER_SIZE: usize = 256 * 1024;

/// asyncio's default `slow_callback_duration`. See the example on
/// [`EventLoop::builder`].
pub const DEFAULT_SLOW_CALLBACK_DURATION: Duration = Duration::from_millis(100);

/// An exception handler as the loop stores it: what
/// [`LoopHandle::exception_handler`] returns.
pub type ExceptionHandler = Rc<dyn Fn(&LoopHandle, &ExceptionContext)>;

thread_local! {
    /// The loop running on this thread, for `get_running_loop`.
    static RUNNING: RefCell<Option<LoopHandle>> = const { RefCell::new(None) };
}

/// The loop running on this thread, if any (asyncio's `get_running_loop`).
///
/// Inside a task, a callback or a protocol method this is the loop that
/// runs it.
///
/// ```
/// use std::time::Duration;
///
/// assert!(sloop::get_running_loop().is_none());
/// let lp = sloop::EventLoop::new()?;
/// lp.call_later(Duration::from_millis(1), || {
///     // No handle was moved in: the callback finds its loop.
///     sloop::get_running_loop().unwrap().stop();
/// })?;
/// lp.run_forever()?;
/// # Ok::<(), sloop::Error>(())
/// ```
pub fn get_running_loop() -> Option<LoopHandle> {
    RUNNING.with(|r| r.borrow().clone())
}

/// Runs `f` with the loop of `shared` if that loop is running on this
/// thread. Wakes and `Remote` calls made on the loop's own thread use it to
/// queue directly, without the inbox's lock.
fn with_loop_running_here<R>(shared: &Arc<Shared>, f: impl FnOnce(&LoopHandle) -> R) -> Option<R> {
    RUNNING.with(|running| {
        let running = running.try_borrow().ok()?;
        let lp = running
            .as_ref()
            .filter(|lp| Arc::ptr_eq(&lp.inner.shared, shared))?;
        Some(f(lp))
    })
}

/// Queues the woken task `key` straight onto the ready queue when the loop
/// of `shared` runs on this thread (the common case: a protocol waking the
/// task that reads its stream). Returns `false` when the caller must use
/// the inbox.
fn wake_on_loop_thread(shared: &Arc<Shared>, key: usize) -> bool {
    with_loop_running_here(shared, |lp| {
        let Ok(mut ready) = lp.inner.ready.try_borrow_mut() else {
            return false;
        };
        ready.push(if key == MAIN_TASK {
            Ready::Main
        } else {
            Ready::Task(key)
        });
        true
    })
    .unwrap_or(false)
}

/// The loop's state, behind every [`LoopHandle`]. Its fields are private to
/// this module and its children (the run loop, tasks); other modules go
/// through `LoopHandle`'s methods.
struct LoopInner {
    /// What the next iteration runs, in FIFO order. A `Vec`, not a deque:
    /// an iteration swaps it out whole (with `spare_ready`) and runs it.
    ready: RefCell<Vec<Ready>>,
    /// The emptied vector of the previous iteration, kept for its capacity.
    spare_ready: RefCell<Vec<Ready>>,
    timers: RefCell<TimerHeap>,
    /// `None` once closed: the poller and the waker's fd are released.
    selector: RefCell<Option<Selector>>,
    /// The events of the last poll, borrowed while they are dispatched.
    events: RefCell<mio::Events>,
    tasks: RefCell<Slab<TaskSlot>>,
    /// The number of the last task spawned, for the default names
    /// (asyncio's `Task-N`).
    task_counter: Cell<u64>,
    shared: Arc<Shared>,
    /// Spare vectors for draining the inbox without allocating.
    inbox: RefCell<Inbox>,
    running: Cell<bool>,
    stopping: Cell<bool>,
    closed: Cell<bool>,
    debug: Cell<bool>,
    slow_callback_duration: Cell<Duration>,
    propagate_panics: bool,
    /// A panic caught while `propagate_panics` is on, to resume after the
    /// loop has cleaned up.
    pending_panic: RefCell<Option<Box<dyn Any + Send>>>,
    exception_handler: RefCell<Option<ExceptionHandler>>,
    /// `None` while a transport has it out (or before the first read).
    read_buffer: Cell<Option<Box<[u8]>>>,
    read_buffer_size: usize,
    iterations: Cell<u64>,
    /// Whether the last iteration asked the kernel for events; a
    /// zero-timeout poll right after one is skipped (module docs).
    polled_last: Cell<bool>,
    /// What `stats` reports that no other structure keeps (`stats` module).
    counters: Counters,
    /// The callback of each signal with a handler, by number (`ext.rs`).
    signal_handles: RefCell<Vec<Option<Handle>>>,
    /// Per-loop state of the modules above the loop (`ext.rs`).
    extensions: RefCell<Vec<Rc<dyn Any>>>,
}

impl LoopInner {
    fn push_ready(&self, item: Ready) {
        self.ready.borrow_mut().push(item);
    }
}

/// Options for an [`EventLoop`]; see [`EventLoop::builder`] for an example.
#[derive(Debug, Clone)]
pub struct Builder {
    debug: Option<bool>,
    slow_callback_duration: Duration,
    read_buffer_size: usize,
    propagate_panics: bool,
}

impl Builder {
    /// Debug mode: log callbacks that take longer than
    /// [`slow_callback_duration`](Builder::slow_callback_duration). Defaults
    /// to on when the `SLOOP_DEBUG` environment variable is set and not
    /// empty (asyncio's `PYTHONASYNCIODEBUG`). See the example on
    /// [`EventLoop::builder`].
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = Some(debug);
        self
    }

    /// How long a callback may run before debug mode logs it (100 ms). See
    /// the example on [`EventLoop::builder`].
    pub fn slow_callback_duration(mut self, duration: Duration) -> Self {
        self.slow_callback_duration = duration;
        self
    }

    /// The size of the loop's shared read buffer, which is the most one
    /// `recv` of a transport reads (256 KiB; at least 1). See the example on
    /// [`EventLoop::builder`].
    pub fn read_buffer_size(mut self, size: usize) -> Self {
        self.read_buffer_size = size.max(1);
        self
    }

    /// Resume a panic from a callback, protocol or task out of
    /// `run_forever`/`run_until_complete` instead of reporting it to the
    /// exception handler (off). Meant for tests.
    ///
    /// ```
    /// use std::panic::{catch_unwind, AssertUnwindSafe};
    ///
    /// let lp = sloop::EventLoop::builder().propagate_panics(true).build()?;
    /// lp.call_soon(|| panic!("boom"))?;
    /// let run = catch_unwind(AssertUnwindSafe(|| lp.run_forever()));
    /// assert!(run.is_err());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn propagate_panics(mut self, propagate: bool) -> Self {
        self.propagate_panics = propagate;
        self
    }

    /// Creates the loop. See the example on [`EventLoop::builder`].
    ///
    /// # Errors
    ///
    /// If the poller or its waker cannot be created (out of fds).
    pub fn build(self) -> io::Result<EventLoop> {
        let (selector, waker) = Selector::new()?;
        let debug = self
            .debug
            .unwrap_or_else(|| std::env::var_os("SLOOP_DEBUG").is_some_and(|v| !v.is_empty()));
        let inner = Rc::new(LoopInner {
            ready: RefCell::new(Vec::new()),
            spare_ready: RefCell::new(Vec::new()),
            timers: RefCell::new(TimerHeap::new()),
            selector: RefCell::new(Some(selector)),
            events: RefCell::new(mio::Events::with_capacity(selector::EVENTS_CAPACITY)),
            tasks: RefCell::new(Slab::new()),
            task_counter: Cell::new(0),
            shared: Shared::new(waker),
            inbox: RefCell::new(Inbox::default()),
            running: Cell::new(false),
            stopping: Cell::new(false),
            closed: Cell::new(false),
            debug: Cell::new(debug),
            slow_callback_duration: Cell::new(self.slow_callback_duration),
            propagate_panics: self.propagate_panics,
            pending_panic: RefCell::new(None),
            exception_handler: RefCell::new(None),
            read_buffer: Cell::new(None),
            read_buffer_size: self.read_buffer_size,
            iterations: Cell::new(0),
            polled_last: Cell::new(false),
            counters: Counters::default(),
            signal_handles: RefCell::new(Vec::new()),
            extensions: RefCell::new(Vec::new()),
        });
        Ok(EventLoop {
            handle: LoopHandle { inner },
        })
    }
}

/// An event loop: owns the poller, runs callbacks, timers, I/O and tasks on
/// the thread that created it, and closes when dropped.
///
/// `EventLoop` dereferences to [`LoopHandle`], which has all the methods;
/// clone a `LoopHandle` out of it ([`EventLoop::handle`]) to give to
/// callbacks.
///
/// Why `Deref`, which the API guidelines keep for smart pointers: an
/// `EventLoop` is a `LoopHandle` plus ownership, the one handle that
/// closes the loop when dropped, as a `MutexGuard` is access to the data
/// plus the unlock. It adds no method a `LoopHandle` has (only `new`,
/// `builder` and `handle`), so nothing is shadowed, and the loop's API is
/// written once, on `LoopHandle`, instead of twice.
///
/// # Guarantees
///
/// - Callbacks run on this thread only, one at a time, in the order they
///   were scheduled; what a callback schedules runs in the next iteration.
/// - Every method may be called from inside any callback.
/// - A panic in a callback is caught and reported to the exception handler;
///   the loop runs on (unless [`Builder::propagate_panics`] is set).
/// - Only [`Remote`] may be used from other threads.
///
/// ```
/// use std::time::Duration;
///
/// let lp = sloop::EventLoop::new()?;
/// let handle = lp.handle();
/// lp.call_later(Duration::from_millis(10), move || {
///     println!("ten milliseconds later");
///     handle.stop();
/// })?;
/// lp.call_soon(|| println!("first"))?;
/// lp.run_forever()?;
/// # Ok::<(), sloop::Error>(())
/// ```
pub struct EventLoop {
    handle: LoopHandle,
}

impl EventLoop {
    /// A loop with the default options. See the example on [`EventLoop`].
    ///
    /// # Errors
    ///
    /// If the poller or its waker cannot be created (out of fds).
    pub fn new() -> io::Result<EventLoop> {
        EventLoop::builder().build()
    }

    /// Options for a new loop.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sloop::event_loop::{DEFAULT_READ_BUFFER_SIZE, DEFAULT_SLOW_CALLBACK_DURATION};
    ///
    /// let lp = sloop::EventLoop::builder()
    ///     .debug(true)
    ///     .slow_callback_duration(Duration::from_millis(20))
    ///     .read_buffer_size(DEFAULT_READ_BUFFER_SIZE / 4)
    ///     .build()?;
    /// assert!(lp.debug());
    /// assert_eq!(lp.slow_callback_duration(), Duration::from_millis(20));
    ///
    /// let lp = sloop::EventLoop::builder().build()?;
    /// assert_eq!(lp.slow_callback_duration(), DEFAULT_SLOW_CALLBACK_DURATION);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder {
            debug: None,
            slow_callback_duration: DEFAULT_SLOW_CALLBACK_DURATION,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            propagate_panics: false,
        }
    }

    /// A handle to this loop, for callbacks and tasks to hold. See the
    /// example on [`EventLoop`].
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }
}

impl Deref for EventLoop {
    type Target = LoopHandle;
    fn deref(&self) -> &LoopHandle {
        &self.handle
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let _ = self.handle.close();
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
}

/// A handle to an [`EventLoop`], for use on the loop's thread only: it is
/// `!Send` and `!Sync`. From another thread, use a [`Remote`]
/// ([`LoopHandle::remote`]), which is `Send + Sync` and can
/// [`call_soon`](Remote::call_soon), [`stop`](Remote::stop) and
/// [`spawn`](Remote::spawn) a `Send` future.
///
/// (So if rustc says that `Rc<..>` "cannot be sent between threads
/// safely" in a `LoopHandle`, the fix is to move a `Remote` into the
/// thread or `Send` future instead.)
///
/// Cheap to clone (`Rc`); every clone is the same loop. Callbacks,
/// protocols and tasks hold one to schedule work from inside the loop,
/// and every method may be called from any of them. See [`EventLoop`] for
/// the guarantees.
///
/// ```
/// let lp = sloop::EventLoop::new()?;
/// let remote = lp.remote();
/// std::thread::spawn(move || {
///     // A LoopHandle could not move here; the Remote can.
///     remote.call_soon(|| sloop::get_running_loop().unwrap().stop()).unwrap();
/// });
/// lp.run_forever()?;
/// # Ok::<(), sloop::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    inner: Rc<LoopInner>,
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<EventLoop running={} closed={} debug={}>",
            self.is_running(),
            self.is_closed(),
            self.debug()
        )
    }
}

impl LoopHandle {
    // ----- scheduling callbacks -----

    /// Schedules `callback` to run in the next iteration. Callbacks run in
    /// the order they were scheduled. See the example on [`EventLoop`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed.
    #[track_caller]
    pub fn call_soon<F: FnOnce() + 'static>(&self, callback: F) -> Result<Handle, Error> {
        self.check_closed()?;
        let handle = Handle::once(callback, Location::caller());
        self.inner.push_ready(Ready::Callback(handle.clone()));
        Ok(handle)
    }

    /// Schedules `callback` to run `delay` from now. A zero delay runs in the
    /// next iteration; a huge one saturates (it never fires, and can still
    /// be cancelled). See the example on [`EventLoop`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed.
    #[track_caller]
    pub fn call_later<F: FnOnce() + 'static>(
        &self,
        delay: Duration,
        callback: F,
    ) -> Result<TimerHandle, Error> {
        let now = Instant::now();
        let when = deadline_after(now, delay);
        self.call_at(when, callback)
    }

    /// Schedules `callback` to run at `when` (loop time, see
    /// [`time`](LoopHandle::time)). A deadline in the past runs in the next
    /// iteration. Timers run no earlier than their deadline, in deadline
    /// order; timers with the same deadline run in the order scheduled.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let start = lp.time();
    /// let h = lp.handle();
    /// lp.call_at(start + Duration::from_millis(5), move || {
    ///     assert!(h.time() >= start + Duration::from_millis(5));
    ///     h.stop();
    /// })?;
    /// lp.run_forever()?;
    /// # Ok::<(), sloop::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed.
    #[track_caller]
    pub fn call_at<F: FnOnce() + 'static>(
        &self,
        when: Instant,
        callback: F,
    ) -> Result<TimerHandle, Error> {
        self.check_closed()?;
        let handle = Handle::once(callback, Location::caller());
        let mut timers = self.inner.timers.borrow_mut();
        timers.push(when, handle.clone());
        Ok(TimerHandle::new(handle, when, timers.cancelled_counter()))
    }

    fn check_closed(&self) -> Result<(), Error> {
        if self.inner.closed.get() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    // ----- readers and writers -----

    /// Calls `callback` each time `fd` is readable, until
    /// [`remove_reader`](LoopHandle::remove_reader). Replaces (and cancels)
    /// a reader already set on `fd`.
    ///
    /// Level-triggered, as in asyncio: a callback that does not drain the fd
    /// is called again in the next iteration. A callback that panics stays
    /// registered and is called again at the next event; the panic goes to
    /// the exception handler.
    ///
    /// Cancelling the returned [`Handle`] (even from inside the callback)
    /// stops the calls at once; the registration itself goes when the fd's
    /// next event arrives, as in asyncio (until then `remove_reader` still
    /// reports it). Dropping the handle does not cancel.
    ///
    /// A reader and a writer on the two ends of a socket pair:
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use std::rc::Rc;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let (mut a, mut b) = UnixStream::pair()?;
    /// a.set_nonblocking(true)?;
    /// b.set_nonblocking(true)?;
    /// let (a_fd, b_fd) = (a.as_raw_fd(), b.as_raw_fd());
    ///
    /// let h = lp.handle();
    /// lp.add_writer(&a_fd, move || {
    ///     a.write_all(b"hello").unwrap();
    ///     assert!(h.remove_writer(&a_fd).unwrap()); // once is enough
    /// })?;
    ///
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// let (g, h) = (got.clone(), lp.handle());
    /// lp.add_reader(&b_fd, move || {
    ///     let mut buf = [0; 16];
    ///     let n = b.read(&mut buf).unwrap();
    ///     g.borrow_mut().extend_from_slice(&buf[..n]);
    ///     if g.borrow().len() == 5 {
    ///         h.remove_reader(&b_fd).unwrap();
    ///         h.stop();
    ///     }
    /// })?;
    /// lp.run_forever()?;
    /// assert_eq!(*got.borrow(), b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`]; [`Error::FdUsedByTransport`] if a transport owns
    /// `fd`; an I/O error if the fd cannot be polled (e.g. a regular file).
    #[track_caller]
    pub fn add_reader<F: FnMut() + 'static>(
        &self,
        fd: &(impl AsRawFd + ?Sized),
        callback: F,
    ) -> Result<Handle, Error> {
        self.add_callback(
            fd.as_raw_fd(),
            Handle::repeating(callback, Location::caller()),
            true,
        )
    }

    /// Like [`add_reader`](LoopHandle::add_reader), for writability; see
    /// the example there.
    ///
    /// # Errors
    ///
    /// As [`add_reader`](LoopHandle::add_reader).
    #[track_caller]
    pub fn add_writer<F: FnMut() + 'static>(
        &self,
        fd: &(impl AsRawFd + ?Sized),
        callback: F,
    ) -> Result<Handle, Error> {
        self.add_callback(
            fd.as_raw_fd(),
            Handle::repeating(callback, Location::caller()),
            false,
        )
    }

    fn add_callback(&self, fd: RawFd, handle: Handle, read: bool) -> Result<Handle, Error> {
        self.check_closed()?;
        let (old, stale) = {
            let mut selector = self.inner.selector.borrow_mut();
            let selector = selector.as_mut().ok_or(Error::Closed)?;
            selector.ensure_fd_no_source(fd)?;
            selector.add_callback(fd, handle.clone(), read)?
        };
        // Cancelled (and so dropped) outside the selector's borrow.
        for old in [old, stale].into_iter().flatten() {
            old.cancel();
        }
        Ok(handle)
    }

    /// Stops watching `fd` for reading. Returns whether a reader was set.
    /// On a closed loop returns `false`. See the example on
    /// [`add_reader`](LoopHandle::add_reader).
    ///
    /// # Errors
    ///
    /// [`Error::FdUsedByTransport`] if a transport owns `fd`.
    pub fn remove_reader(&self, fd: &(impl AsRawFd + ?Sized)) -> Result<bool, Error> {
        self.remove_callback(fd.as_raw_fd(), true)
    }

    /// Stops watching `fd` for writing. Returns whether a writer was set.
    /// See the example on [`add_reader`](LoopHandle::add_reader).
    ///
    /// # Errors
    ///
    /// As [`remove_reader`](LoopHandle::remove_reader).
    pub fn remove_writer(&self, fd: &(impl AsRawFd + ?Sized)) -> Result<bool, Error> {
        self.remove_callback(fd.as_raw_fd(), false)
    }

    fn remove_callback(&self, fd: RawFd, read: bool) -> Result<bool, Error> {
        let old = {
            let mut selector = self.inner.selector.borrow_mut();
            let Some(selector) = selector.as_mut() else {
                return Ok(false);
            };
            selector.ensure_fd_no_source(fd)?;
            selector.remove_callback(fd, read)
        };
        Ok(match old {
            Some(old) => {
                old.cancel();
                true
            }
            None => false,
        })
    }

    // ----- exceptions and debug -----

    /// Sets the function that receives what goes wrong in callbacks,
    /// protocols and tasks; `None` restores the
    /// [default](LoopHandle::default_exception_handler).
    ///
    /// A panic in the handler is caught and reported through the default
    /// handler ("Unhandled error in exception handler").
    ///
    /// See the examples on [`ExceptionContext`] and
    /// [`exception_handler`](LoopHandle::exception_handler).
    pub fn set_exception_handler<F>(&self, handler: Option<F>)
    where
        F: Fn(&LoopHandle, &ExceptionContext) + 'static,
    {
        *self.inner.exception_handler.borrow_mut() =
            handler.map(|h| Rc::new(h) as ExceptionHandler);
    }

    /// Whether a custom exception handler is set.
    ///
    /// ```
    /// use sloop::{ExceptionContext, LoopHandle};
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// assert!(!lp.has_exception_handler());
    /// lp.set_exception_handler(Some(|_: &LoopHandle, _: &ExceptionContext| {}));
    /// assert!(lp.has_exception_handler());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn has_exception_handler(&self) -> bool {
        self.inner.exception_handler.borrow().is_some()
    }

    /// The custom exception handler, or `None` when the
    /// [default](LoopHandle::default_exception_handler) is in use
    /// (asyncio's `get_exception_handler`).
    ///
    /// The handler is shared, not moved out: it stays installed. Calling the
    /// returned handler is how a wrapping handler passes reports on:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use sloop::{EventLoop, ExceptionContext, LoopHandle};
    ///
    /// let lp = EventLoop::new()?;
    /// let seen = Rc::new(Cell::new(0));
    /// let s = seen.clone();
    /// lp.set_exception_handler(Some(move |_: &LoopHandle, _: &ExceptionContext| {
    ///     s.set(s.get() + 1)
    /// }));
    ///
    /// // Wrap it: count here, then hand the report to the previous handler.
    /// let previous = lp.exception_handler().expect("set above");
    /// lp.set_exception_handler(Some(move |lp: &LoopHandle, ctx: &ExceptionContext| {
    ///     previous(lp, ctx)
    /// }));
    /// lp.call_exception_handler(ExceptionContext::new("reported"));
    /// assert_eq!(seen.get(), 1);
    ///
    /// lp.set_exception_handler(None::<fn(&LoopHandle, &ExceptionContext)>);
    /// assert!(lp.exception_handler().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn exception_handler(&self) -> Option<ExceptionHandler> {
        self.inner.exception_handler.borrow().clone()
    }

    /// Reports `context` in asyncio's layout: at error level through the
    /// `log` facade when a logger takes it, else on standard error.
    ///
    /// asyncio's default handler reaches stderr with no setup (Python's
    /// `logging` falls back to stderr while no handler is configured); so
    /// does this one. A program that installs a logger gets the report
    /// there instead, never in both places. To silence reports, set an
    /// [exception handler](LoopHandle::set_exception_handler) that drops
    /// them. The handler in [`ExceptionContext`]'s example passes what it
    /// does not handle on to this one.
    pub fn default_exception_handler(&self, context: &ExceptionContext) {
        // `log_enabled!` asks the facade the question that matters: would
        // `log::error!` here reach a logger that keeps the record? It
        // checks the global max level and then the logger's own `enabled`.
        // With no logger installed the answer is always no (the max level
        // starts at `Off` and the stand-in logger's `enabled` is false);
        // it is also no for a logger installed without raising the max
        // level, or one that filters out this target. In all those cases
        // `log::error!` would drop the report silently, so it goes to
        // stderr. (`log` has no "is a logger set" query, and comparing
        // `log::logger()` with its private no-op logger is not possible.)
        if log::log_enabled!(log::Level::Error) {
            log::error!("{context}");
        } else {
            // One write per report, so reports from several loops do not
            // interleave; a failed write is ignored (there is nowhere left
            // to report it, and `eprintln!` would panic inside the loop).
            use std::io::Write;
            let text = format!("{context}\n");
            let _ = io::stderr().lock().write_all(text.as_bytes());
        }
    }

    /// Reports `context` to the exception handler (the custom one if set,
    /// else the default). See the example on
    /// [`exception_handler`](LoopHandle::exception_handler).
    pub fn call_exception_handler(&self, context: ExceptionContext) {
        let handler = self.inner.exception_handler.borrow().clone();
        let Some(handler) = handler else {
            self.default_exception_handler(&context);
            return;
        };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| handler(self, &context))) {
            let nested = ExceptionContext::new(format!(
                "Unhandled error in exception handler; context: {context}"
            ))
            .with_exception(Exception::from_panic(&*p));
            self.default_exception_handler(&nested);
        }
    }

    /// Reports a caught panic: to the exception handler, or, with
    /// `propagate_panics`, keeps it to resume once the iteration ends.
    pub(crate) fn handle_panic(&self, payload: Box<dyn Any + Send>, context: ExceptionContext) {
        if self.inner.propagate_panics {
            let mut pending = self.inner.pending_panic.borrow_mut();
            if pending.is_none() {
                *pending = Some(payload);
            }
            self.inner.stopping.set(true);
            return;
        }
        self.call_exception_handler(context.with_exception(Exception::from_panic(&*payload)));
    }

    /// Whether debug mode is on. See the example on
    /// [`set_debug`](LoopHandle::set_debug).
    pub fn debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// Turns debug mode on or off. In debug mode, a callback that runs
    /// longer than [`slow_callback_duration`](LoopHandle::slow_callback_duration)
    /// is logged at warning level.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::builder().debug(false).build()?;
    /// assert!(!lp.debug());
    /// lp.set_debug(true);
    /// lp.set_slow_callback_duration(Duration::from_millis(5));
    /// assert!(lp.debug());
    /// assert_eq!(lp.slow_callback_duration(), Duration::from_millis(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_debug(&self, debug: bool) {
        self.inner.debug.set(debug);
    }

    /// How long a callback may run before debug mode logs it. See the
    /// example on [`set_debug`](LoopHandle::set_debug).
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.slow_callback_duration.get()
    }

    /// Sets [`slow_callback_duration`](LoopHandle::slow_callback_duration).
    /// See the example on [`set_debug`](LoopHandle::set_debug).
    pub fn set_slow_callback_duration(&self, duration: Duration) {
        self.inner.slow_callback_duration.set(duration);
    }

    pub(crate) fn check_slow(&self, started: Instant, what: impl FnOnce() -> String) {
        let took = started.elapsed();
        if took >= self.inner.slow_callback_duration.get() {
            let what = what();
            log::warn!("Executing {} took {:.3} seconds", what, took.as_secs_f64());
            self.slow_callback(took, || what);
        }
    }

    // ----- for the rest of the crate -----

    /// Whether `remote` is a handle to this loop.
    pub(crate) fn is_loop_of(&self, remote: &Remote) -> bool {
        Arc::ptr_eq(&self.inner.shared, &remote.shared)
    }

    // ----- for transports -----

    /// Registers a source (transport) for its fd's readiness.
    pub(crate) fn register_source(
        &self,
        fd: RawFd,
        source: Rc<dyn IoSource>,
    ) -> Result<IoKey, Error> {
        let mut selector = self.inner.selector.borrow_mut();
        selector
            .as_mut()
            .ok_or(Error::Closed)?
            .register_source(fd, source)
    }

    /// Unregisters a source; call before closing its fd.
    pub(crate) fn deregister_source(&self, key: IoKey) {
        if let Some(selector) = self.inner.selector.borrow_mut().as_mut() {
            selector.deregister_source(key);
        }
    }

    /// Changes what a source is polled for.
    pub(crate) fn reregister_source(&self, key: IoKey, interest: mio::Interest) -> io::Result<()> {
        match self.inner.selector.borrow_mut().as_mut() {
            Some(selector) => selector.reregister_source(key, interest),
            None => Ok(()),
        }
    }

    /// Queues a readiness call for a source without an event: a read budget
    /// ran out, or reading resumed.
    pub(crate) fn schedule_io(&self, key: IoKey, readiness: Readiness) {
        if !self.inner.closed.get() {
            self.inner.push_ready(Ready::Io(key, readiness));
        }
    }

    /// Schedules an internal callback; a no-op on a closed loop.
    #[track_caller]
    pub(crate) fn call_soon_internal<F: FnOnce() + 'static>(&self, callback: F) {
        let _ = self.call_soon(callback);
    }

    /// Takes the loop's shared read buffer (docs/design.md D5); give it back
    /// with [`restore_read_buffer`](LoopHandle::restore_read_buffer). Taken
    /// out rather than borrowed, so nothing is borrowed while a protocol
    /// runs.
    #[inline]
    pub(crate) fn take_read_buffer(&self) -> Box<[u8]> {
        match self.inner.read_buffer.take() {
            Some(buf) => buf,
            None => self.new_read_buffer(),
        }
    }

    /// The first read (or one nested inside another, which cannot happen
    /// today) allocates the buffer, zeroed (`calloc`: no `memset`).
    #[cold]
    #[inline(never)]
    fn new_read_buffer(&self) -> Box<[u8]> {
        vec![0; self.inner.read_buffer_size].into_boxed_slice()
    }

    #[inline]
    pub(crate) fn restore_read_buffer(&self, buf: Box<[u8]>) {
        self.inner.read_buffer.set(Some(buf));
    }

    /// Runs user code (a protocol method) under `catch_unwind`; the caller
    /// reports a panic with its own context.
    pub(crate) fn catch_user<R>(&self, f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
        catch_unwind(AssertUnwindSafe(f))
    }
}

/// `now + delay`, saturated: a delay too large for `Instant` gives a
/// deadline that never comes (far enough that no process lives to see it,
/// near enough that `Instant` can hold it). Every timer of the crate
/// (`call_later`, `sleep`, hyper's timer) computes its deadline here.
pub(crate) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(delay).unwrap_or_else(|| now + NEVER)
}
