//! [`Remote`]: the one handle to a loop that other threads may hold.
//!
//! Everything else about a loop is `!Send` (docs/design.md D1). What crosses
//! threads goes through [`Shared`]: a mutex-protected inbox of callbacks and
//! woken task keys, and the `mio::Waker` that interrupts the loop's poll
//! (asyncio's self-pipe). The loop drains the inbox once per iteration.
//!
//! Checking that the loop is open and queueing happen under one lock, so a
//! `call_soon` racing with `close` either lands before the close (and is
//! dropped with the loop's other callbacks) or gets [`Error::Closed`]; it
//! never panics (asyncio bpo-44508). Waking a closed loop does nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use futures::future::FutureObj;
use futures::task::{Spawn, SpawnError};

use super::{LoopHandle, LoopStats};
// std's types, or loom's in the model build (tests/loom_remote.rs).
use crate::error::Error;
use crate::sync::{AtomicBool, Mutex, MutexGuard, Ordering, Waker};

/// A callback sent from another thread.
pub(crate) type RemoteCallback = Box<dyn FnOnce(&LoopHandle) + Send>;

/// The slab key that stands for the future of `run_until_complete`.
pub(crate) const MAIN_TASK: usize = usize::MAX;

#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) callbacks: Vec<RemoteCallback>,
    pub(crate) woken: Vec<usize>,
}

struct Locked {
    inbox: Inbox,
    closed: bool,
    waker: Option<Arc<Waker>>,
}

/// The part of a loop that other threads reach.
pub(crate) struct Shared {
    locked: Mutex<Locked>,
    /// Set when the inbox is not empty; read by the loop without the lock to
    /// decide whether it may block in poll.
    pending: AtomicBool,
    /// Signals caught for this loop and not yet dispatched: bit `n - 1` for
    /// signal `n` (asyncio's bytes on the self-pipe). Set by
    /// [`Shared::raise_signal`], read only after a wake.
    signals: AtomicU64,
}

impl Shared {
    pub(crate) fn new(waker: impl Into<Waker>) -> Arc<Shared> {
        Arc::new(Shared {
            locked: Mutex::new(Locked {
                inbox: Inbox::default(),
                closed: false,
                waker: Some(Arc::new(waker.into())),
            }),
            pending: AtomicBool::new(false),
            signals: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while holding this lock cannot leave the inbox half-updated
        // (pushes are atomic), so a poisoned lock is still usable.
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, add: impl FnOnce(&mut Inbox)) -> Result<(), Error> {
        let waker = {
            let mut locked = self.lock();
            if locked.closed {
                return Err(Error::Closed);
            }
            add(&mut locked.inbox);
            // Wakes and calls from the loop's own thread skip the inbox
            // (`event_loop::with_loop_running_here`), so what comes here is
            // from other threads: ring once per batch.
            if !self.pending.swap(true, Ordering::AcqRel) {
                locked.waker.clone()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            // Failure means the eventfd is gone; the loop is closing anyway.
            let _ = waker.wake();
        }
        Ok(())
    }

    pub(crate) fn push_callback(&self, cb: RemoteCallback) -> Result<(), Error> {
        self.push(|inbox| inbox.callbacks.push(cb))
    }

    /// Queues a woken task; a wake after close is silently dropped.
    pub(crate) fn push_woken(&self, key: usize) {
        let _ = self.push(|inbox| inbox.woken.push(key));
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Moves the inbox's contents into `into` (whose vectors must be empty).
    pub(crate) fn drain(&self, into: &mut Inbox) {
        self.pending.store(false, Ordering::Release);
        let mut locked = self.lock();
        std::mem::swap(&mut locked.inbox.callbacks, &mut into.callbacks);
        std::mem::swap(&mut locked.inbox.woken, &mut into.woken);
    }

    /// Marks the loop closed, drops the waker and returns what was queued,
    /// for the caller to drop outside the lock.
    pub(crate) fn close(&self) -> Inbox {
        let mut locked = self.lock();
        locked.closed = true;
        locked.waker = None;
        std::mem::take(&mut locked.inbox)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The waker, for a signal action to keep (`None` once closed): the
    /// action may not take the lock.
    pub(crate) fn signal_waker(&self) -> Option<Arc<Waker>> {
        self.lock().waker.clone()
    }

    /// Called from a signal handler: only atomics and the eventfd's
    /// `write(2)`, which are async-signal-safe; nothing allocates or locks.
    /// Marking the inbox pending makes the loop drain it, and
    /// [`take_signals`](Shared::take_signals) there.
    pub(crate) fn raise_signal(&self, waker: &Waker, signal: u32) {
        self.signals.fetch_or(1 << (signal - 1), Ordering::SeqCst);
        self.pending.store(true, Ordering::SeqCst);
        let _ = waker.wake();
    }

    /// The signals raised since the last call. Called after `drain` has
    /// cleared `pending`, so a signal raised meanwhile is seen here or at
    /// the next drain.
    pub(crate) fn take_signals(&self) -> u64 {
        if self.signals.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.signals.swap(0, Ordering::SeqCst)
    }
}

/// A thread-safe handle to an [`EventLoop`](crate::EventLoop): asyncio's
/// `call_soon_threadsafe`, plus `stop` and spawning `Send` futures.
///
/// `Remote` is `Send + Sync + Clone`. Its methods return
/// [`Error::Closed`] once the loop is closed, and never panic.
///
/// ```
/// use std::sync::mpsc;
///
/// let lp = sloop::EventLoop::new()?;
/// let remote = lp.remote();
/// let (tx, rx) = mpsc::channel();
/// std::thread::spawn(move || {
///     remote.call_soon(move || tx.send("ran on the loop").unwrap()).unwrap();
///     remote.stop().unwrap();
/// });
/// lp.run_forever()?;
/// assert_eq!(rx.recv().unwrap(), "ran on the loop");
/// # Ok::<(), sloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Remote {
    pub(crate) shared: Arc<Shared>,
}

impl Remote {
    /// Schedules `f` to run on the loop's thread, in the loop's next
    /// iteration, and wakes the loop if it is waiting. Calls from one thread
    /// run in the order they were made. See the example on [`Remote`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed; `f` is dropped.
    pub fn call_soon<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<(), Error> {
        // On the loop's own thread, queue it like `call_soon`, so the two
        // keep one FIFO order (asyncio's test_call_soon_threadsafe_same_thread).
        if let Some(lp) = super::with_loop_running_here(&self.shared, LoopHandle::clone) {
            return lp.call_soon(f).map(drop);
        }
        self.shared.push_callback(Box::new(move |_| f()))
    }

    /// Stops the loop after the iteration that runs this request, as
    /// [`LoopHandle::stop`] does on the loop's thread. See the example on
    /// [`Remote`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed.
    pub fn stop(&self) -> Result<(), Error> {
        self.shared.push_callback(Box::new(|lp| lp.stop()))
    }

    /// Spawns a `Send` future on the loop; the returned [`RemoteTask`]
    /// resolves to its output, and may be awaited on any thread, or dropped
    /// to detach the future.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let remote = lp.remote();
    /// let thread = std::thread::spawn(move || {
    ///     let task = remote.spawn(async { 6 * 7 }).unwrap();
    ///     let out = futures::executor::block_on(task);
    ///     remote.stop().unwrap();
    ///     out
    /// });
    /// lp.run_forever()?;
    /// assert_eq!(thread.join().unwrap(), Ok(42));
    /// # Ok::<(), sloop::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed; the future is dropped.
    pub fn spawn<F>(&self, future: F) -> Result<RemoteTask<F::Output>, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.shared.push_callback(Box::new(move |lp| {
            lp.spawn_local(async move {
                let _ = tx.send(future.await);
            })
            .detach();
        }))?;
        Ok(RemoteTask { rx })
    }

    /// A snapshot of the loop's statistics ([`LoopHandle::stats`]), taken
    /// on the loop's thread in its next iteration and sent back. Resolves
    /// to `Err(Canceled)` if the loop closes first; dropping the future
    /// before then is harmless (the snapshot is dropped when it is sent).
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let remote = lp.remote();
    /// let thread = std::thread::spawn(move || {
    ///     let stats = futures::executor::block_on(remote.stats().unwrap());
    ///     remote.stop().unwrap();
    ///     stats.unwrap()
    /// });
    /// lp.run_forever()?;
    /// assert!(thread.join().unwrap().iterations > 0);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed.
    pub fn stats(&self) -> Result<RemoteTask<LoopStats>, Error> {
        let (tx, rx) = oneshot::channel();
        self.shared.push_callback(Box::new(move |lp| {
            let _ = tx.send(lp.stats());
        }))?;
        Ok(RemoteTask { rx })
    }

    /// Whether the loop was closed.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let remote = lp.remote();
    /// assert!(!remote.is_closed());
    /// drop(lp); // dropping the EventLoop closes it
    /// assert!(remote.is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Spawn for Remote {
    fn spawn_obj(&self, future: FutureObj<'static, ()>) -> Result<(), SpawnError> {
        self.shared
            .push_callback(Box::new(move |lp| lp.spawn_local(future).detach()))
            .map_err(|_| SpawnError::shutdown())
    }

    fn status(&self) -> Result<(), SpawnError> {
        if self.is_closed() {
            Err(SpawnError::shutdown())
        } else {
            Ok(())
        }
    }
}

/// The output of a future spawned with [`Remote::spawn`].
///
/// Resolves to `Err(Canceled)` if the future never completes because the
/// loop closed or the task was dropped. See the example on
/// [`Remote::spawn`].
#[derive(Debug)]
#[must_use = "a RemoteTask does nothing unless awaited; dropping it detaches the future"]
pub struct RemoteTask<T> {
    rx: oneshot::Receiver<T>,
}

impl<T> Future for RemoteTask<T> {
    type Output = Result<T, oneshot::Canceled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx)
    }
}

/// The inbox alone, for the loom model (tests/loom_remote.rs): the loop's
/// side (wait for the waker, drain, close) driven by the model's threads.
/// Exists only in `--cfg sloop_loom` builds.
#[cfg(sloop_loom)]
#[doc(hidden)]
#[allow(missing_docs, missing_debug_implementations)]
pub mod model {
    use super::*;

    pub struct Inbox {
        shared: Arc<Shared>,
        waker: Arc<Waker>,
    }

    impl Inbox {
        pub fn new() -> Inbox {
            let shared = Shared::new(Waker::default());
            let waker = shared.lock().waker.clone().unwrap();
            Inbox { shared, waker }
        }

        pub fn remote(&self) -> Remote {
            Remote {
                shared: self.shared.clone(),
            }
        }

        /// What a task waker on another thread does.
        pub fn wake_task(&self, key: usize) {
            self.shared.push_woken(key)
        }

        /// The loop's decision to block in poll.
        pub fn is_pending(&self) -> bool {
            self.shared.is_pending()
        }

        /// The loop's blocking poll: returns the rings it consumed.
        pub fn wait(&self) -> usize {
            self.waker.wait()
        }

        /// Rings not yet consumed, without blocking.
        pub fn take_rings(&self) -> usize {
            self.waker.take()
        }

        /// One drain: the callbacks (dropped here, not run) and woken keys.
        pub fn drain(&self) -> (usize, Vec<usize>) {
            let mut into = super::Inbox::default();
            self.shared.drain(&mut into);
            (into.callbacks.len(), into.woken)
        }

        /// The loop's close: what was queued and never drained.
        pub fn close(&self) -> (usize, Vec<usize>) {
            let inbox = self.shared.close();
            (inbox.callbacks.len(), inbox.woken)
        }
    }
}
