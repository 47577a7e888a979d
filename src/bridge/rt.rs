//! Pieces for running runtime-agnostic crates (hyper 1.x first) on sloop
//! without tokio: a `Send + Sync` timer and a local executor.
//!
//! hyper's `rt::Timer` hands out `Pin<Box<dyn rt::Sleep>>`, and
//! `rt::Sleep` must be `Send + Sync`; [`crate::sleep`]'s [`Sleep`] holds an
//! `Rc` and is neither. [`LoopTimer`] (holding a [`Remote`], so it is
//! `Send + Sync` itself) makes [`SendSleep`]s, which keep only thread-safe
//! state; the loop-side timer handle stays on the loop's thread. hyper's
//! `rt::Executor` maps onto [`LocalExecutor`] (`spawn_local`; hyper accepts
//! `!Send` futures with a `!Send` executor).
//!
//! No hyper dependency here: a thin `impl hyper::rt::Timer for LoopTimer`
//! that calls [`LoopTimer::sleep`] / [`LoopTimer::sleep_until`] and boxes
//! the result is all an integration needs.
//!
//! [`Sleep`]: crate::Sleep

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::event_loop::{LoopHandle, Remote, TimerHandle};

thread_local! {
    /// The loop-side timer handles of armed [`SendSleep`]s, by id. A
    /// `TimerHandle` is `!Send`, so it lives here, on the loop's thread,
    /// and the sleep only keeps its id.
    static ARMED: RefCell<HashMap<u64, TimerHandle>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Cancels the armed timer `id`, if this thread holds it.
fn disarm_here(id: u64) {
    let handle = ARMED.with(|a| a.borrow_mut().remove(&id));
    if let Some(h) = handle {
        h.cancel();
    }
}

#[derive(Default)]
struct State {
    fired: bool,
    waker: Option<Waker>,
    /// The thread that holds the timer handle, once armed.
    armed_on: Option<ThreadId>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock is fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes [`SendSleep`]s on one loop; `Send + Sync + Clone`, for code that
/// wants a thread-safe timer (hyper's `rt::Timer`).
///
/// ```
/// use std::time::Duration;
/// let lp = sloop::EventLoop::new()?;
/// let timer = sloop::bridge::rt::LoopTimer::new(lp.remote());
/// lp.run_until_complete(timer.sleep(Duration::from_millis(1)))?;
/// # Ok::<(), sloop::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LoopTimer {
    remote: Remote,
}

impl LoopTimer {
    /// A timer for the loop behind `remote`. See the example on
    /// [`LoopTimer`].
    pub fn new(remote: Remote) -> LoopTimer {
        LoopTimer { remote }
    }

    /// A sleep of `duration` from now (a huge one never completes). See the
    /// example on [`LoopTimer`].
    pub fn sleep(&self, duration: Duration) -> SendSleep {
        self.sleep_until(crate::event_loop::deadline_after(Instant::now(), duration))
    }

    /// A sleep until `deadline` (loop time: the monotonic clock).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let lp = sloop::EventLoop::new()?;
    /// let timer = sloop::bridge::rt::LoopTimer::new(lp.remote());
    /// let deadline = Instant::now() + Duration::from_millis(1);
    /// lp.run_until_complete(timer.sleep_until(deadline))?;
    /// assert!(Instant::now() >= deadline);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn sleep_until(&self, deadline: Instant) -> SendSleep {
        SendSleep {
            deadline,
            remote: self.remote.clone(),
            shared: Arc::new(Shared::default()),
            id: None,
        }
    }
}

/// A timer future that is `Send + Sync`, made by [`LoopTimer`].
///
/// Its timer rides on the loop's timer heap like [`crate::sleep`]'s. It is
/// armed on its first poll: directly when polled on the loop's own thread
/// (the usual case: inside a task), else by sending a request to the loop
/// through its [`Remote`]; so it may be polled, moved and dropped on any
/// thread, and completes no earlier than its deadline. It needs the loop to
/// run; on a closed loop it never completes.
///
/// # Cancel safety
///
/// Dropping it cancels its timer (at once on the loop's thread, else in
/// the loop's next iteration); nothing else is lost.
///
/// # Caveats
///
/// An armed sleep's timer handle is kept in a thread-local of the loop's
/// thread until the timer fires or the sleep is dropped. A sleep dropped
/// on another thread after its loop closed cannot reach that thread any
/// more, so the small entry stays until the thread exits.
///
/// ```
/// use std::time::{Duration, Instant};
/// let lp = sloop::EventLoop::new()?;
/// let timer = sloop::bridge::rt::LoopTimer::new(lp.remote());
/// let mut sleep = timer.sleep(Duration::from_secs(3600));
/// // Move it to another thread and back: it is `Send`.
/// let mut sleep = std::thread::spawn(move || sleep).join().unwrap();
/// let soon = Instant::now() + Duration::from_millis(1);
/// sleep.reset(soon);
/// assert_eq!(sleep.deadline(), soon);
/// assert!(!sleep.is_elapsed());
/// let sleep = lp.run_until_complete(async move {
///     (&mut sleep).await;
///     sleep
/// })?;
/// assert!(sleep.is_elapsed());
/// # Ok::<(), sloop::Error>(())
/// ```
pub struct SendSleep {
    deadline: Instant,
    remote: Remote,
    shared: Arc<Shared>,
    /// Set once armed (the id of its timer handle on the loop's thread).
    id: Option<u64>,
}

impl SendSleep {
    /// When it completes. See the example on [`SendSleep`].
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed and the loop ran the timer. See the
    /// example on [`SendSleep`].
    pub fn is_elapsed(&self) -> bool {
        self.shared.lock().fired
    }

    /// Moves the deadline: cancels the armed timer and starts afresh (armed
    /// again on the next poll), as hyper's `Timer::reset` does. See the
    /// example on [`SendSleep`].
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = deadline;
        self.shared = Arc::new(Shared::default());
    }

    fn arm(&mut self) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.id = Some(id);
        let deadline = self.deadline;
        let shared = self.shared.clone();
        match crate::get_running_loop() {
            Some(lp) if lp.is_loop_of(&self.remote) => {
                arm_on_loop(&lp, id, deadline, shared);
            }
            // Another thread (or another loop's): let the loop arm it. If
            // the loop is closed the sleep simply never completes.
            _ => {
                let _ = self
                    .remote
                    .shared
                    .push_callback(Box::new(move |lp| arm_on_loop(lp, id, deadline, shared)));
            }
        }
    }

    fn disarm(&mut self) {
        let Some(id) = self.id.take() else { return };
        let armed_on = self.shared.lock().armed_on;
        if armed_on == Some(thread::current().id()) {
            disarm_here(id);
        } else {
            // Not armed yet (the request is still queued: it will find the
            // sleep gone), or armed on the loop's thread: cancel there. On a
            // closed loop nothing runs any more, and nothing needs to.
            let _ = self
                .remote
                .shared
                .push_callback(Box::new(move |_| disarm_here(id)));
        }
    }
}

/// Runs on the loop's thread: puts the timer on the heap, unless the sleep
/// was dropped before this request ran (its shared state is then ours only).
fn arm_on_loop(lp: &LoopHandle, id: u64, deadline: Instant, shared: Arc<Shared>) {
    if Arc::strong_count(&shared) == 1 {
        return;
    }
    let weak = Arc::downgrade(&shared);
    let Ok(handle) = lp.call_at(deadline, move || {
        ARMED.with(|a| a.borrow_mut().remove(&id));
        let Some(shared) = weak.upgrade() else { return };
        let waker = {
            let mut state = shared.lock();
            state.fired = true;
            state.waker.take()
        };
        // Woken with no lock held.
        if let Some(w) = waker {
            w.wake();
        }
    }) else {
        return;
    };
    ARMED.with(|a| a.borrow_mut().insert(id, handle));
    shared.lock().armed_on = Some(thread::current().id());
}

impl Future for SendSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut state = self.shared.lock();
            if state.fired {
                return Poll::Ready(());
            }
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
        }
        if self.id.is_none() {
            self.arm();
        }
        Poll::Pending
    }
}

impl Drop for SendSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl fmt::Debug for SendSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.id.is_some())
            .field("elapsed", &self.is_elapsed())
            .finish()
    }
}

/// Spawns futures on a loop as detached tasks: the shape of hyper's
/// `rt::Executor` (`execute(fut)`), for `!Send` futures.
///
/// ```
/// let lp = sloop::EventLoop::new()?;
/// let exec = sloop::bridge::rt::LocalExecutor::new(lp.handle());
/// let (tx, rx) = futures::channel::oneshot::channel();
/// exec.execute(async move { tx.send(7).unwrap() });
/// assert_eq!(lp.run_until_complete(rx)?.unwrap(), 7);
/// # Ok::<(), sloop::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    handle: LoopHandle,
}

impl LocalExecutor {
    /// An executor for the loop behind `handle`. See the example on
    /// [`LocalExecutor`].
    pub fn new(handle: LoopHandle) -> LocalExecutor {
        LocalExecutor { handle }
    }

    /// Spawns `fut` as a detached task ([`LoopHandle::spawn_local`]); a
    /// panic in it goes to the loop's exception handler. On a closed loop
    /// the future is dropped.
    #[track_caller]
    pub fn execute<F: Future<Output = ()> + 'static>(&self, fut: F) {
        self.handle.spawn_local(fut).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventLoop;

    fn armed_here() -> usize {
        ARMED.with(|a| a.borrow().len())
    }

    #[test]
    fn dropping_an_armed_sleep_on_the_loop_thread_cancels_its_timer() {
        let lp = EventLoop::new().unwrap();
        let timer = LoopTimer::new(lp.remote());
        let before = armed_here();
        lp.run_until_complete(async {
            let mut s = Box::pin(timer.sleep(Duration::from_secs(3600)));
            let polled = futures::future::poll_fn(|cx| Poll::Ready(s.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
            assert_eq!(armed_here(), before + 1);
            drop(s);
            assert_eq!(armed_here(), before);
        })
        .unwrap();
    }

    #[test]
    fn dropping_an_armed_sleep_on_another_thread_cancels_it_on_the_loop() {
        let lp = EventLoop::new().unwrap();
        let timer = LoopTimer::new(lp.remote());
        let before = armed_here();
        let h = lp.handle();
        lp.run_until_complete(async move {
            let mut s = Box::pin(timer.sleep(Duration::from_secs(3600)));
            let polled = futures::future::poll_fn(|cx| Poll::Ready(s.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
            assert_eq!(armed_here(), before + 1);
            std::thread::spawn(move || drop(s)).join().unwrap();
            // The cancel request runs in a coming iteration.
            while armed_here() != before {
                crate::sleep(Duration::ZERO).await;
            }
            assert_eq!(h.task_count(), 0);
        })
        .unwrap();
    }
}
