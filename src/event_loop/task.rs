//! Tasks: futures driven by the loop (docs/design.md D9). They are the
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
//!
//! Every task has a name, asyncio's `Task-N` (N counts the tasks spawned on
//! the loop, from 1) unless it was spawned with
//! [`spawn_local_named`](LoopHandle::spawn_local_named) or renamed with
//! [`Task::set_name`]. Reports about a task (a panic nobody read, a slow
//! poll in debug mode) name it, with where it was spawned.

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
use crate::exception::{panic_message, Exception, ExceptionContext, TaskInfo};

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
///
/// ```
/// use sloop::TaskError;
///
/// let lp = sloop::EventLoop::new()?;
/// let task = lp.spawn_local(std::future::pending::<()>());
/// task.cancel();
/// let err = lp.run_until_complete(task)?.unwrap_err();
/// assert!(err.is_cancelled() && !err.is_panic());
///
/// let task = lp.spawn_local(async { panic!("boom") });
/// let err = lp.run_until_complete(task)?.unwrap_err();
/// assert!(matches!(err, TaskError::Panicked(_)));
/// let payload = err.try_into_panic().unwrap();
/// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
/// # Ok::<(), sloop::Error>(())
/// ```
pub enum TaskError {
    /// [`Task::cancel`] was called, or the loop closed first.
    Cancelled,
    /// The task panicked; the payload, as `catch_unwind` caught it.
    Panicked(Box<dyn Any + Send>),
}

impl TaskError {
    /// Whether the task was cancelled. See the example on [`TaskError`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// Whether the task panicked. See the example on [`TaskError`].
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// The panic payload, to resume the panic with
    /// [`std::panic::resume_unwind`].
    ///
    /// # Errors
    ///
    /// Gives `self` back if the task was cancelled.
    ///
    /// See the example on [`TaskError`].
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

/// A task's name: asyncio's `Task-N` until one is given, formatted only
/// when asked for (spawning allocates nothing for it).
enum TaskName {
    Numbered(u64),
    Given(String),
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskName::Numbered(n) => write!(f, "Task-{n}"),
            TaskName::Given(name) => f.write_str(name),
        }
    }
}

/// The loop's side of a task's output, type-erased.
pub(crate) trait TaskControl {
    /// The task's current name.
    fn name(&self) -> String;
    fn finish_cancelled(&self);
    /// Stores the panic for the `Task` handle; gives it back if nobody holds
    /// the handle, so the loop reports it.
    fn finish_panicked(&self, payload: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>>;
}

struct JoinState<T> {
    name: RefCell<TaskName>,
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
    fn name(&self) -> String {
        self.name.borrow().to_string()
    }

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

/// How a task is named in reports (the exception handler's `task`, the
/// slow-callback warning): its name and where it was spawned.
fn task_label(name: Option<String>, location: &'static Location<'static>) -> String {
    match name {
        Some(name) => TaskInfo::new(name, location).to_string(),
        None => format!("<Task spawned at {location}>"),
    }
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
/// A task has a [name](Task::name) (asyncio's `Task-N` by default), shown
/// by its `Debug` and in the loop's reports about it.
///
/// ```
/// let lp = sloop::EventLoop::new()?;
/// let task = lp.spawn_local(async { 6 * 7 });
/// assert_eq!(task.name(), "Task-1");
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
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let task = lp.spawn_local(sloop::sleep(Duration::from_secs(60)));
    /// assert!(task.cancel());
    /// assert!(lp.run_until_complete(task)?.unwrap_err().is_cancelled());
    ///
    /// let done = lp.spawn_local(async {});
    /// lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))?;
    /// assert!(!done.cancel()); // already finished
    /// # Ok::<(), sloop::Error>(())
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let task = lp.spawn_local(async { 1 });
    /// assert!(!task.is_finished());
    /// lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))?;
    /// assert!(task.is_finished());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.state.finished.get()
    }

    /// Lets the task run on without a handle; the same as dropping it.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let done = Rc::new(Cell::new(false));
    /// let d = done.clone();
    /// lp.spawn_local(async move { d.set(true) }).detach();
    /// lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))?;
    /// assert!(done.get());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn detach(self) {}

    /// The task's name: the one it was spawned with
    /// ([`spawn_local_named`](LoopHandle::spawn_local_named)) or last
    /// [set](Task::set_name), else `Task-N` (asyncio's `get_name`).
    pub fn name(&self) -> String {
        self.state.name.borrow().to_string()
    }

    /// Renames the task (asyncio's `set_name`). Reports made from now on,
    /// including after the task finished, use the new name.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let task = lp.spawn_local(async {});
    /// assert_eq!(task.name(), "Task-1");
    /// task.set_name("worker");
    /// assert_eq!(task.name(), "worker");
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn set_name(&self, name: impl Into<String>) {
        *self.state.name.borrow_mut() = TaskName::Given(name.into());
    }
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
                        .with_task(TaskInfo::new(self.name(), self.location)),
                );
            }
        }
    }
}

impl<T> From<&Task<T>> for TaskInfo {
    /// The task's name now and where it was spawned.
    fn from(task: &Task<T>) -> TaskInfo {
        TaskInfo::new(task.name(), task.location)
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name())
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
    ///
    /// The task is named `Task-N` (see [`Task::name`]); to give it a name
    /// of your own, use [`spawn_local_named`](LoopHandle::spawn_local_named).
    /// See the example on [`Task`].
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_task(future, None, Location::caller())
    }

    /// [`spawn_local`](LoopHandle::spawn_local) with a name for the task
    /// (asyncio's `create_task(coro, name=...)`): its `Debug`, and the
    /// loop's reports about it (a panic nobody read, a slow poll in debug
    /// mode), show it.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let task = lp.spawn_local_named("fetch", async { 1 });
    /// assert_eq!(task.name(), "fetch");
    /// assert!(format!("{task:?}").contains("\"fetch\""));
    /// assert_eq!(lp.run_until_complete(task)?.unwrap(), 1);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    #[track_caller]
    pub fn spawn_local_named<F>(&self, name: impl Into<String>, future: F) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_task(future, Some(name.into()), Location::caller())
    }

    fn spawn_task<F>(
        &self,
        future: F,
        name: Option<String>,
        location: &'static Location<'static>,
    ) -> Task<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let inner = &self.inner;
        let name = match name {
            Some(name) => TaskName::Given(name),
            None => {
                let n = inner.task_counter.get() + 1;
                inner.task_counter.set(n);
                TaskName::Numbered(n)
            }
        };
        if inner.closed.get() {
            let state = Rc::new(JoinState {
                name: RefCell::new(name),
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
            name: RefCell::new(name),
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
        super::stats::Counters::bump(&inner.counters.task_polls);
        let started = inner.debug.get().then(std::time::Instant::now);
        let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll_task()));
        if let Some(t0) = started {
            self.task_polled_in_debug(t0, key, location);
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
    fn task_polled_in_debug(
        &self,
        t0: std::time::Instant,
        key: usize,
        location: &'static Location<'static>,
    ) {
        self.check_slow(t0, || {
            // The slot is still there unless the poll closed the loop.
            let name = self
                .inner
                .tasks
                .try_borrow()
                .ok()
                .and_then(|tasks| tasks.get(key).map(|slot| slot.control.name()));
            task_label(name, location)
        });
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
                    .with_task(TaskInfo::new(slot.control.name(), location)),
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
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let task = lp.spawn_local(async {});
    /// assert_eq!(lp.task_count(), 1);
    /// lp.run_until_complete(task)?.unwrap();
    /// assert_eq!(lp.task_count(), 0);
    /// # Ok::<(), sloop::Error>(())
    /// ```
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
