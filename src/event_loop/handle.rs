//! [`Handle`] and [`TimerHandle`]: a callback scheduled on the loop, and the
//! means to cancel it.
//!
//! A handle is one reference-counted allocation holding the cancel flag, the
//! place the callback was scheduled from (for slow-callback and panic
//! reports) and the callback itself. The loop's ready queue and timer heap
//! hold clones; cancelling drops the callback at once, so whatever it
//! captured is freed even while the handle waits in the heap (asyncio's
//! `Handle.cancel` does the same).
//!
//! Callbacks are taken out of the handle before they run (docs/design.md D2), so a
//! callback may cancel its own handle, or schedule anything, while it runs.
//! A reader's or writer's callback goes back into its handle after the call,
//! also when it panicked (asyncio keeps a reader whose callback raised), and
//! is dropped instead if the handle was cancelled meanwhile.

use std::cell::Cell;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::time::Instant;

/// The callback part of a handle: run once (`call_soon`, timers) or many
/// times (readers and writers).
pub(crate) trait CallbackSlot {
    /// Runs the callback. `cancelled` is the handle's flag, read after a
    /// repeating callback returns to decide whether to keep it.
    fn run(&self, cancelled: &Cell<bool>);
    /// Drops the callback (on cancel).
    fn clear(&self);
    /// The callback's type name, for reports.
    fn name(&self) -> &'static str;
}

/// A callback that runs at most once.
pub(crate) struct Once<F>(Cell<Option<F>>);

impl<F: FnOnce()> CallbackSlot for Once<F> {
    fn run(&self, _cancelled: &Cell<bool>) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
    fn clear(&self) {
        drop(self.0.take());
    }
    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A callback that runs each time its fd is ready, until cancelled.
pub(crate) struct Repeating<F>(Cell<Option<F>>);

impl<F: FnMut()> CallbackSlot for Repeating<F> {
    fn run(&self, cancelled: &Cell<bool>) {
        // Taken out while it runs, so the callback may remove or replace
        // itself; put back when it returns or panics (asyncio keeps a reader
        // whose callback raised), unless it was cancelled meanwhile.
        if let Some(f) = self.0.take() {
            let mut running = PutBack {
                slot: &self.0,
                cancelled,
                f: Some(f),
            };
            if let Some(f) = running.f.as_mut() {
                f();
            }
        }
    }
    fn clear(&self) {
        drop(self.0.take());
    }
    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// Puts a running [`Repeating`] callback back into its slot when dropped,
/// which a panic unwinding out of the callback does too; a callback
/// cancelled while it ran is dropped instead.
struct PutBack<'a, F> {
    slot: &'a Cell<Option<F>>,
    cancelled: &'a Cell<bool>,
    f: Option<F>,
}

impl<F> Drop for PutBack<'_, F> {
    fn drop(&mut self) {
        if !self.cancelled.get() {
            self.slot.set(self.f.take());
        }
    }
}

pub(crate) struct HandleInner<S: ?Sized> {
    cancelled: Cell<bool>,
    /// True while a timer sits in the heap (asyncio's `_scheduled`).
    scheduled: Cell<bool>,
    location: &'static Location<'static>,
    slot: S,
}

/// A callback scheduled with [`call_soon`](crate::LoopHandle::call_soon), or
/// registered with [`add_reader`](crate::LoopHandle::add_reader) /
/// [`add_writer`](crate::LoopHandle::add_writer).
///
/// Cloning a handle is cheap; all clones refer to the same callback.
/// Dropping a handle does not cancel the callback. See
/// [`Handle::cancel`] for an example.
#[derive(Clone)]
pub struct Handle {
    inner: Rc<HandleInner<dyn CallbackSlot>>,
}

impl Handle {
    pub(crate) fn once<F: FnOnce() + 'static>(
        f: F,
        location: &'static Location<'static>,
    ) -> Handle {
        Handle::from_slot(Once(Cell::new(Some(f))), location)
    }

    pub(crate) fn repeating<F: FnMut() + 'static>(
        f: F,
        location: &'static Location<'static>,
    ) -> Handle {
        Handle::from_slot(Repeating(Cell::new(Some(f))), location)
    }

    fn from_slot<S: CallbackSlot + 'static>(
        slot: S,
        location: &'static Location<'static>,
    ) -> Handle {
        let inner: Rc<HandleInner<dyn CallbackSlot>> = Rc::new(HandleInner {
            cancelled: Cell::new(false),
            scheduled: Cell::new(false),
            location,
            slot,
        });
        Handle { inner }
    }

    /// Cancels the callback: it will not run (again), and what it captured is
    /// dropped now. Cancelling twice, or after it ran, does nothing.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let ran = Rc::new(Cell::new(false));
    /// let r = ran.clone();
    /// let handle = lp.call_soon(move || r.set(true))?;
    /// handle.cancel();
    /// assert!(handle.cancelled());
    /// lp.stop(); // run one iteration
    /// lp.run_forever()?;
    /// assert!(!ran.get());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn cancel(&self) {
        if !self.inner.cancelled.replace(true) {
            self.inner.slot.clear();
        }
    }

    /// Whether [`cancel`](Handle::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.inner.cancelled.get()
    }

    /// Runs the callback unless it was cancelled. Called by the loop only.
    pub(crate) fn run(&self) {
        if !self.inner.cancelled.get() {
            self.inner.slot.run(&self.inner.cancelled);
        }
    }

    /// The callback's type name (closures name the function they are in).
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let handle = lp.call_soon(|| {})?;
    /// assert!(handle.name().ends_with("{{closure}}"));
    /// assert_eq!(handle.location().file(), file!());
    /// assert_eq!(handle.location().line(), line!() - 3);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn name(&self) -> &'static str {
        self.inner.slot.name()
    }

    /// Where the callback was scheduled from. See the example on
    /// [`Handle::name`].
    pub fn location(&self) -> &'static Location<'static> {
        self.inner.location
    }

    pub(crate) fn set_scheduled(&self, scheduled: bool) {
        self.inner.scheduled.set(scheduled);
    }

    pub(crate) fn is_scheduled(&self) -> bool {
        self.inner.scheduled.get()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Handle {} at {}", self.name(), self.location())?;
        if self.cancelled() {
            f.write_str(" cancelled")?;
        }
        f.write_str(">")
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A callback scheduled for a point in time with
/// [`call_later`](crate::LoopHandle::call_later) or
/// [`call_at`](crate::LoopHandle::call_at).
///
/// Like [`Handle`], plus [`when`](TimerHandle::when). Cancelling tells the
/// loop, so that a heap full of cancelled timers is compacted (asyncio's rule:
/// rebuilt when more than half of more than 100 timers are cancelled).
/// See [`TimerHandle::when`] for an example.
#[derive(Clone)]
pub struct TimerHandle {
    handle: Handle,
    when: Instant,
    /// The loop's count of cancelled timers still in the heap.
    cancelled_count: Rc<Cell<usize>>,
}

impl TimerHandle {
    pub(crate) fn new(handle: Handle, when: Instant, cancelled_count: Rc<Cell<usize>>) -> Self {
        TimerHandle {
            handle,
            when,
            cancelled_count,
        }
    }

    /// Cancels the timer; see [`Handle::cancel`], and the example on
    /// [`TimerHandle::when`].
    pub fn cancel(&self) {
        if !self.handle.cancelled() && self.handle.is_scheduled() {
            self.cancelled_count.set(self.cancelled_count.get() + 1);
        }
        self.handle.cancel();
    }

    /// Whether [`cancel`](TimerHandle::cancel) was called. See the example
    /// on [`TimerHandle::when`].
    pub fn cancelled(&self) -> bool {
        self.handle.cancelled()
    }

    /// The loop time the callback is due at; unchanged after it ran.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let before = lp.time();
    /// let timer = lp.call_later(Duration::from_secs(60), || {})?;
    /// assert!(timer.when() >= before + Duration::from_secs(60));
    /// timer.cancel();
    /// assert!(timer.cancelled() && timer.handle().cancelled());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn when(&self) -> Instant {
        self.when
    }

    /// The plain handle of this timer. See the example on
    /// [`TimerHandle::when`].
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<TimerHandle when={:?} {:?}>", self.when, self.handle)
    }
}
