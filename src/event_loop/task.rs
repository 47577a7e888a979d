//! Tasks: futures driven by the loop (DESIGN.md D9). They are the
//! scheduler's own data (D14), so they live in the loop's module and reach
//! its state directly.
//!
//! [`LoopHandle::spawn_local`] boxes the future into the loop's task slab
//! and queues its first poll, as asyncio's `create_task` schedules the first
//! step of a coroutine. A task is polled only from the ready queue, never
//! inline from a wake: its waker just queues the task's key in the loop's
//! inbox (ringing the loop's `mio::Waker` only when the wake comes from
//! another thread). A task queued twice is polled once: each waker carries a
//! `scheduled` flag that the loop clears right before it polls.
//!
//! The [`Task`] handle is the task's output: await it to get
//! `Ok(output)`, or `Err(TaskError)` if the task was cancelled or panicked.
//! Dropping the handle detaches the task; it runs to completion anyway.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::future::LocalFutureObj;
use futures::task::{LocalSpawn, SpawnError};
use pin_project_lite::pin_project;

use super::ready::Ready;
use super::remote::Shared;
use super::{LoopHandle, LoopInner};
use crate::exception::{panic_message, Exception, ExceptionContext};

/// The waker of one task: queues the task's key in the loop's inbox.
pub(crate) struct TaskWaker {
    key: usize,
    /// True from the wake until the loop starts polling the task, and
    /// forever once it finished, so that late wakes do nothing.
    scheduled: AtomicBool,
    /// Set by [`Task::cancel`]; read by the loop around each poll.
    cancel: AtomicBool,
    shared: Arc<Shared>,
}

impl TaskWaker {
    /// A wake from another thread (or with the loop not running here):
    /// through the inbox, which rings the loop's waker.
    #[cold]
    #[inline(never)]
    fn wake_from_elsewhere(&self) {
        self.shared.push_woken(self.key);
    }

    pub(crate) fn new(key: usize, scheduled: bool, shared: Arc<Shared>) -> Arc<TaskWaker> {
        Arc::new(TaskWaker {
            key,
            scheduled: AtomicBool::new(scheduled),
            cancel: AtomicBool::new(false),
            shared,
        })
    }

    /// Called by the loop right before polling.
    pub(crate) fn clear_scheduled(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn finish(&self) {
        self.scheduled.store(true, Ordering::Release);
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel)
            && !super::wake_on_loop_thread(&self.shared, self.key)
        {
            self.wake_from_elsewhere();
        }
    }
}

/// Why a task has no output.
pub enum TaskError {
    /// [`Task::cancel`] was called, or the loop closed first.
    Cancelled,
    /// The task panicked; the payload, as `catch_unwind` caught it.
    Panicked(Box<dyn Any + Send>),
}

impl TaskError {
    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// The panic payload, to resume the panic with
    /// [`std::panic::resume_unwind`].
    ///
    /// # Errors
    ///
    /// Gives `self` back if the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, TaskError> {
        match self {
            TaskError::Panicked(p) => Ok(p),
            other => Err(other),
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::Panicked(p) => write!(f, "task panicked: {}", panic_message(&**p)),
        }
    }
}

impl std::error::Error for TaskError {}

/// The loop's side of a task's output, type-erased.
pub(crate) trait TaskControl {
    fn finish_cancelled(&self);
    /// Stores the panic for the `Task` handle; gives it back if nobody holds
    /// the handle, so the loop reports it.
    fn finish_panicked(&self, payload: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>>;
}

struct JoinState<T> {
    output: RefCell<Option<Result<T, TaskError>>>,
    finished: Cell<bool>,
    detached: Cell<bool>,
    join_waker: RefCell<Option<Waker>>,
    task_waker: Option<Arc<TaskWaker>>,
}

impl<T> JoinState<T> {
    fn complete(&self, result: Result<T, TaskError>) {
        self.finished.set(true);
        if let Some(w) = &self.task_waker {
            w.finish();
        }
        if !self.detached.get() {
            *self.output.borrow_mut() = Some(result);
        }
        let waker = self.join_waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> TaskControl for JoinState<T> {
    fn finish_cancelled(&self) {
        if !self.finished.get() {
            self.complete(Err(TaskError::Cancelled));
        }
    }

    fn finish_panicked(&self, payload: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>> {
        if self.detached.get() {
            self.complete(Err(TaskError::Cancelled));
            Some(payload)
        } else {
            self.complete(Err(TaskError::Panicked(payload)));
            None
        }
    }
}

pin_project! {
    /// A spawned future with what polling it needs: the task's waker (so
    /// a poll builds its `Context` from here, with nothing moved out of the
    /// slab or back) and the slot of its output.
    struct TaskCell<F: Future> {
        waker: Waker,
        join: Rc<JoinState<F::Output>>,
        // `None` once it completed: dropped before its output is published.
        #[pin]
        future: Option<F>,
    }
}

/// A [`TaskCell`], type-erased.
pub(crate) trait TaskFuture {
    /// Polls the future once with the task's own waker; `Ready` once it
    /// completed and its output was delivered.
    fn poll_task(self: Pin<&mut Self>) -> Poll<()>;
}

impl<F: Future> TaskFuture for TaskCell<F> {
    fn poll_task(self: Pin<&mut Self>) -> Poll<()> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let mut cx = Context::from_waker(this.waker);
        let out = futures::ready!(future.poll(&mut cx));
        this.future.set(None);
        this.join.complete(Ok(out));
        Poll::Ready(())
    }
}

/// How a task is named in reports: where it was spawned.
fn task_label(location: &Location<'_>) -> String {
    format!("<Task spawned at {location}>")
}

/// One entry of the loop's task slab.
pub(crate) struct TaskSlot {
    /// `None` while the task is being polled.
    future: Option<Pin<Box<dyn TaskFuture>>>,
    header: Arc<TaskWaker>,
    control: Rc<dyn TaskControl>,
    location: &'static Location<'static>,
}

impl TaskSlot {
    /// Marks the task cancelled (on loop close) and gives its future, to be
    /// dropped with no borrow held.
    pub(crate) fn close(self) -> Option<Pin<Box<dyn TaskFuture>>> {
        self.control.finish_cancelled();
        self.future
    }
}

/// A future running on the loop, and the handle to its output.
///
/// Await it for `Ok(output)`; `Err(TaskError::Cancelled)` if it was
/// cancelled (or the loop closed first); `Err(TaskError::Panicked(_))` if it
/// panicked. Dropping a `Task` detaches it: the future keeps running, and a
/// panic in it goes to the loop's exception handler.
///
/// ```
/// let lp = sloop::EventLoop::new()?;
/// let task = lp.spawn_local(async { 6 * 7 });
/// assert_eq!(lp.run_until_complete(task)?.unwrap(), 42);
/// # Ok::<(), sloop::Error>(())
/// ```
#[must_use = "dropping a Task detaches it; call .detach() to say so"]
pub struct Task<T> {
    state: Rc<JoinState<T>>,
    lp: Weak<LoopInner>,
    location: &'static Location<'static>,
}

impl<T> Task<T> {
    /// Asks the task to stop: its future is dropped before its next poll,
    /// and the task completes with `Err(TaskError::Cancelled)`. Returns
    /// `false` if the task had already finished (asyncio's `cancel()`).
    ///
    /// Cancelling a task from inside itself takes effect when its current
    /// poll returns.
    pub fn cancel(&self) -> bool {
        if self.state.finished.get() {
            return false;
        }
        if let Some(w) = &self.state.task_waker {
            w.request_cancel();
            w.wake_by_ref();
        }
        true
    }

    /// Whether the task has finished (completed, panicked or cancelled).
    pub fn is_finished(&self) -> bool {
        self.state.finished.get()
    }

    /// Lets the task run on without a handle; the same as dropping it.
    pub fn detach(self) {}
}

impl<T> Future for Task<T> {
    type Output = Result<T, TaskError>;

    /// # Panics
    ///
    /// If polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(out) = self.state.output.borrow_mut().take() {
            return Poll::Ready(out);
        }
        assert!(
            !self.state.finished.get(),
            "Task polled after it returned its output"
        );
        let mut slot = self.state.join_waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.state.detached.set(true);
        // A panic that nobody will read now: report it (asyncio logs "Task
        // exception was never retrieved" when such a task is collected).
        let out = self.state.output.borrow_mut().take();
        if let Some(Err(TaskError::Panicked(p))) = out {
            if let Some(inner) = self.lp.upgrade() {
                let lp = LoopHandle { inner };
                lp.call_exception_handler(
                    ExceptionContext::new("Task exception was never retrieved")
                        .with_exception(Exception::from_panic(&*p))
                        .with_task(self.location),
                );
            }
        }
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("spawned_at", &self.location.to_string())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl LoopHandle {
    /// Spawns a future on this loop; its first poll runs in the loop's next
    /// iteration. Works before the loop runs, and from inside any callback.
    ///
    /// On a closed loop the future is dropped and the task is already
    /// cancelled.
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let location = Location::caller();
        let inner = &self.inner;
        if inner.closed.get() {
            let state = Rc::new(JoinState {
                output: RefCell::new(Some(Err(TaskError::Cancelled))),
                finished: Cell::new(true),
                detached: Cell::new(false),
                join_waker: RefCell::new(None),
                task_waker: None,
            });
            return Task {
                state,
                lp: Rc::downgrade(inner),
                location,
            };
        }
        let mut tasks = inner.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let key = entry.key();
        let header = TaskWaker::new(key, true, inner.shared.clone());
        let state = Rc::new(JoinState {
            output: RefCell::new(None),
            finished: Cell::new(false),
            detached: Cell::new(false),
            join_waker: RefCell::new(None),
            task_waker: Some(header.clone()),
        });
        let cell = TaskCell {
            waker: Waker::from(header.clone()),
            join: state.clone(),
            future: Some(future),
        };
        entry.insert(TaskSlot {
            future: Some(Box::pin(cell)),
            header,
            control: state.clone(),
            location,
        });
        drop(tasks);
        inner.push_ready(Ready::Task(key));
        Task {
            state,
            lp: Rc::downgrade(inner),
            location,
        }
    }

    /// Polls the task `key` once (a `Ready::Task` item).
    ///
    /// Per poll the future is moved out of the slot and back (two words,
    /// no reference count touched; its waker lives in it); the slot's
    /// `control` is needed only when the task ends, so it is read from the
    /// removed slot then.
    #[inline]
    pub(crate) fn run_task(&self, key: usize) {
        let inner = &self.inner;
        let (mut future, location) = {
            let mut tasks = inner.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(key) else {
                return;
            };
            let Some(future) = slot.future.take() else {
                return;
            };
            slot.header.clear_scheduled();
            if slot.header.cancel_requested() {
                let slot = tasks.remove(key);
                drop(tasks);
                drop(future);
                slot.control.finish_cancelled();
                return;
            }
            (future, slot.location)
        };
        let started = inner.debug.get().then(std::time::Instant::now);
        let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll_task()));
        if let Some(t0) = started {
            self.task_polled_in_debug(t0, location);
        }
        match polled {
            Ok(Poll::Pending) => {
                let mut tasks = inner.tasks.borrow_mut();
                if let Some(slot) = tasks.get_mut(key) {
                    if slot.future.is_none() && !slot.header.cancel_requested() {
                        // Known empty here: filled with no drop glue.
                        slot.future = Some(future);
                        return;
                    }
                }
                drop(tasks);
                self.task_gone_or_cancelled(key, future);
            }
            Ok(Poll::Ready(())) => self.task_finished(key, future),
            Err(payload) => self.task_panicked(key, future, payload, location),
        }
    }

    #[cold]
    #[inline(never)]
    fn task_polled_in_debug(&self, t0: std::time::Instant, location: &'static Location<'static>) {
        self.check_slow(t0, || task_label(location));
    }

    #[inline(never)]
    fn task_finished(&self, key: usize, future: Pin<Box<dyn TaskFuture>>) {
        let slot = self.inner.tasks.borrow_mut().try_remove(key);
        drop(future);
        drop(slot);
    }

    #[cold]
    #[inline(never)]
    fn task_panicked(
        &self,
        key: usize,
        future: Pin<Box<dyn TaskFuture>>,
        payload: Box<dyn Any + Send>,
        location: &'static Location<'static>,
    ) {
        let slot = self.inner.tasks.borrow_mut().try_remove(key);
        // Dropping a future that panicked may panic again.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
        let Some(slot) = slot else {
            return;
        };
        if let Some(payload) = slot.control.finish_panicked(payload) {
            self.handle_panic(
                payload,
                ExceptionContext::new("Task exception was never retrieved")
                    .with_task(task_label(location)),
            );
        }
    }

    /// The task's slot is gone (it finished, was cancelled, or the loop
    /// closed meanwhile) or was cancelled from inside its own poll.
    #[cold]
    #[inline(never)]
    fn task_gone_or_cancelled(&self, key: usize, future: Pin<Box<dyn TaskFuture>>) {
        let mut tasks = self.inner.tasks.borrow_mut();
        let cancelled = tasks
            .get(key)
            .is_some_and(|slot| slot.future.is_none() && slot.header.cancel_requested());
        if !cancelled {
            drop(tasks);
            return drop(future);
        }
        let slot = tasks.remove(key);
        drop(tasks);
        drop(future);
        slot.control.finish_cancelled();
    }

    /// How many tasks are alive on this loop.
    pub fn task_count(&self) -> usize {
        self.inner.tasks.borrow().len()
    }
}

impl LocalSpawn for LoopHandle {
    fn spawn_local_obj(&self, future: LocalFutureObj<'static, ()>) -> Result<(), SpawnError> {
        if self.is_closed() {
            return Err(SpawnError::shutdown());
        }
        self.spawn_local(future).detach();
        Ok(())
    }

    fn status_local(&self) -> Result<(), SpawnError> {
        if self.is_closed() {
            Err(SpawnError::shutdown())
        } else {
            Ok(())
        }
    }
}
