//! Timers as futures: [`sleep`], [`timeout`] and [`interval`], on the loop's
//! timer heap.
//!
//! Each is a thin wrapper over [`LoopHandle::call_at`](crate::LoopHandle::call_at): the timer callback
//! only marks the future done and wakes it. Dropping the future cancels the
//! timer. They find the loop with [`get_running_loop`](crate::get_running_loop())
//! on first poll, so they work in any task or `run_until_complete` future.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::event_loop::{get_running_loop, TimerHandle};

/// Waits until `duration` has passed. `sleep(Duration::ZERO)` yields to the
/// loop for one iteration, as asyncio's `sleep(0)`.
///
/// # Panics
///
/// The returned future panics if polled outside a running sloop loop.
///
/// ```
/// use std::time::{Duration, Instant};
/// let lp = sloop::EventLoop::new()?;
/// let start = Instant::now();
/// lp.run_until_complete(sloop::sleep(Duration::from_millis(5)))?;
/// assert!(start.elapsed() >= Duration::from_millis(5));
/// # Ok::<(), sloop::Error>(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(crate::event_loop::deadline_after(Instant::now(), duration))
}

/// Waits until `deadline` (loop time).
///
/// # Panics
///
/// The returned future panics if polled outside a running sloop loop.
///
/// ```
/// use std::time::{Duration, Instant};
/// let lp = sloop::EventLoop::new()?;
/// let deadline = Instant::now() + Duration::from_millis(5);
/// lp.run_until_complete(sloop::sleep_until(deadline))?;
/// assert!(Instant::now() >= deadline);
/// # Ok::<(), sloop::Error>(())
/// ```
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        armed: None,
    }
}

#[derive(Default)]
struct Fired {
    done: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The future of [`sleep`] and [`sleep_until`].
///
/// # Cancel safety
///
/// Dropping it cancels its timer; nothing else is lost.
///
/// ```
/// use std::time::{Duration, Instant};
/// let lp = sloop::EventLoop::new()?;
/// let mut sleep = sloop::sleep(Duration::from_secs(3600));
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
pub struct Sleep {
    deadline: Instant,
    armed: Option<(TimerHandle, Rc<Fired>)>,
}

impl Sleep {
    /// When it completes. See the example on [`Sleep`].
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (re-arming the timer on the next poll). See the
    /// example on [`Sleep`].
    pub fn reset(&mut self, deadline: Instant) {
        if let Some((timer, _)) = self.armed.take() {
            timer.cancel();
        }
        self.deadline = deadline;
    }

    /// Whether the deadline has passed and the timer fired. See the example
    /// on [`Sleep`].
    pub fn is_elapsed(&self) -> bool {
        self.armed.as_ref().is_some_and(|(_, f)| f.done.get())
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((_, fired)) = &self.armed {
            if fired.done.get() {
                return Poll::Ready(());
            }
            let mut slot = fired.waker.borrow_mut();
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let lp = get_running_loop().expect("sloop::sleep polled outside a running sloop loop");
        let fired = Rc::new(Fired::default());
        *fired.waker.borrow_mut() = Some(cx.waker().clone());
        let on_fire = fired.clone();
        match lp.call_at(self.deadline, move || {
            on_fire.done.set(true);
            let waker = on_fire.waker.borrow_mut().take();
            if let Some(w) = waker {
                w.wake();
            }
        }) {
            Ok(timer) => {
                self.armed = Some((timer, fired));
                Poll::Pending
            }
            // Only when the loop is closing: nothing will ever fire.
            Err(_) => Poll::Pending,
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((timer, _)) = self.armed.take() {
            timer.cancel();
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` for at most `duration`: `Ok(output)`, or `Err(Elapsed)`
/// (and `future` is dropped) if the time runs out first. asyncio's
/// `wait_for`. Anything awaitable will do ([`IntoFuture`]), a connection's
/// builder for instance.
///
/// ```
/// use std::time::Duration;
/// let lp = sloop::EventLoop::new()?;
/// let slow = sloop::sleep(Duration::from_secs(60));
/// let res = lp.run_until_complete(sloop::timeout(Duration::from_millis(1), slow))?;
/// assert!(res.is_err());
/// # Ok::<(), sloop::Error>(())
/// ```
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    Timeout {
        future: future.into_future(),
        sleep: sleep(duration),
    }
}

pin_project! {
    /// The future of [`timeout`].
    ///
    /// # Cancel safety
    ///
    /// As cancel-safe as the future it wraps.
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Ticks every `period`: the first tick completes at once, then one per
/// period. Ticks missed because the loop was busy are skipped, not
/// bunched: the next tick is the next multiple of `period` after now.
///
/// # Panics
///
/// If `period` is zero. Polling it outside a running sloop loop panics too.
///
/// ```
/// use futures::StreamExt;
/// use std::time::Duration;
/// let lp = sloop::EventLoop::new()?;
/// let ticks = lp.run_until_complete(async {
///     let mut every = sloop::interval(Duration::from_millis(1));
///     let mut n = 0;
///     while n < 3 {
///         every.tick().await;
///         n += 1;
///     }
///     n
/// })?;
/// assert_eq!(ticks, 3);
/// # Ok::<(), sloop::Error>(())
/// ```
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval {
        period,
        sleep: sleep_until(Instant::now()),
    }
}

/// The stream of [`interval`].
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled time. See the
    /// example on [`interval`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a tick is consumed only when this returns.
    pub async fn tick(&mut self) -> Instant {
        futures::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick: for a hand-written `Future` or `Stream`.
    ///
    /// ```
    /// use futures::future::poll_fn;
    /// use std::time::Duration;
    /// let lp = sloop::EventLoop::new()?;
    /// let mut every = sloop::interval(Duration::from_millis(1));
    /// assert_eq!(every.period(), Duration::from_millis(1));
    /// let (a, b) = lp.run_until_complete(async move {
    ///     let a = poll_fn(|cx| every.poll_tick(cx)).await;
    ///     let b = poll_fn(|cx| every.poll_tick(cx)).await;
    ///     (a, b)
    /// })?;
    /// // Scheduled times: at least a period apart.
    /// assert!(b >= a + Duration::from_millis(1));
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let tick = self.sleep.deadline();
                let now = Instant::now();
                let mut next = tick + self.period;
                if next <= now {
                    let behind = (now - tick).as_nanos() / self.period.as_nanos();
                    let skip = u32::try_from(behind).unwrap_or(u32::MAX);
                    next = tick + self.period.saturating_mul(skip.saturating_add(1));
                }
                self.sleep.reset(next);
                Poll::Ready(tick)
            }
        }
    }

    /// The time between ticks. See the example on
    /// [`poll_tick`](Interval::poll_tick).
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl Stream for Interval {
    type Item = Instant;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        self.poll_tick(cx).map(Some)
    }
}
