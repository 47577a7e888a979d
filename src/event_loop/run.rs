//! Running the loop: [`run_forever`](LoopHandle::run_forever),
//! [`run_until_complete`](LoopHandle::run_until_complete), `stop`, `close`,
//! and one iteration (asyncio's `_run_once`; the phases are listed in the
//! [`event_loop`](super) module docs).

use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::ready::Ready;
use super::remote::MAIN_TASK;
use super::selector::EventTarget;
use super::stats::Counters;
use super::task::TaskWaker;
use super::{
    Handle, IoKey, IoSource, LoopHandle, LoopInner, Readiness, Remote, MAXIMUM_SELECT_TIMEOUT,
    RUNNING,
};
use crate::error::Error;
use crate::exception::ExceptionContext;

/// Marks the loop running on this thread for the duration of a run, and
/// undoes it however the run ends (a propagated panic included).
struct RunGuard<'a> {
    lp: &'a LoopHandle,
}

impl<'a> RunGuard<'a> {
    fn enter(lp: &'a LoopHandle) -> Result<RunGuard<'a>, Error> {
        if lp.inner.closed.get() {
            return Err(Error::Closed);
        }
        if lp.inner.running.get() {
            return Err(Error::AlreadyRunning);
        }
        if RUNNING.with(|r| r.borrow().is_some()) {
            return Err(Error::AnotherLoopRunning);
        }
        lp.inner.running.set(true);
        // A run's first iteration always asks the kernel.
        lp.inner.polled_last.set(false);
        RUNNING.with(|r| *r.borrow_mut() = Some(lp.clone()));
        Ok(RunGuard { lp })
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.lp.inner.stopping.set(false);
        self.lp.inner.running.set(false);
        let previous = RUNNING.with(|r| r.borrow_mut().take());
        drop(previous);
    }
}

impl LoopHandle {
    // ----- running and stopping -----

    /// Runs the loop until [`stop`](LoopHandle::stop) is called.
    ///
    /// If `stop` was called before, runs one iteration (with a zero poll
    /// timeout) and returns, as asyncio does. See the examples on
    /// [`EventLoop`](super::EventLoop) and [`stop`](LoopHandle::stop).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::AlreadyRunning`] (called from inside the
    /// loop), [`Error::AnotherLoopRunning`], or an I/O error from the poller.
    ///
    /// # Panics
    ///
    /// Resumes a callback's panic only if the loop was built with
    /// [`Builder::propagate_panics`](super::Builder::propagate_panics).
    pub fn run_forever(&self) -> Result<(), Error> {
        let guard = RunGuard::enter(self)?;
        loop {
            self.run_once(None)?;
            if self.panic_pending() {
                if let Some(p) = self.inner.pending_panic.borrow_mut().take() {
                    drop(guard);
                    resume_unwind(p);
                }
            }
            if self.inner.stopping.get() {
                return Ok(());
            }
        }
    }

    /// Runs the loop until `future` completes, and returns its output.
    /// Anything awaitable will do ([`IntoFuture`]): a future, or a builder
    /// such as [`create_server`](LoopHandle::create_server)'s.
    ///
    /// The future need not be `'static`: it lives on this stack frame. It is
    /// polled as a task would be: first in the next iteration, then each
    /// time it is woken. Other tasks and callbacks run meanwhile.
    ///
    /// Two results nest when the future itself returns a `Result`: the
    /// outer one is the loop's (could it run the future to the end?), the
    /// inner one the future's own. Hence the `??` in examples: the first
    /// `?` for the loop's [`Error`], the second for the future's error.
    /// Both convert into `io::Error` and `Box<dyn Error>`.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let n: u16 = lp.run_until_complete(async { "8080".parse::<u16>() })??;
    /// assert_eq!(n, 8080);
    ///
    /// // The loop's error and the future's are told apart:
    /// match lp.run_until_complete(async { "x".parse::<u16>() }) {
    ///     Err(loop_error) => panic!("the loop failed: {loop_error}"),
    ///     Ok(Err(parse_error)) => assert!(parse_error.to_string().contains("invalid")),
    ///     Ok(Ok(_)) => unreachable!(),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::AlreadyRunning`],
    /// [`Error::AnotherLoopRunning`], an I/O error from the poller, or
    /// [`Error::StoppedBeforeComplete`] if [`stop`](LoopHandle::stop) was
    /// called before the future completed.
    ///
    /// # Panics
    ///
    /// Resumes the future's panic, as asyncio re-raises the future's
    /// exception.
    pub fn run_until_complete<F: IntoFuture>(&self, future: F) -> Result<F::Output, Error> {
        let guard = RunGuard::enter(self)?;
        let mut future = pin!(future.into_future());
        let header = TaskWaker::new(MAIN_TASK, true, self.inner.shared.clone());
        let waker = Waker::from(header.clone());
        let mut output = None;
        let mut panic = None;
        let mut poll_main = || {
            if output.is_some() || panic.is_some() {
                return;
            }
            header.clear_scheduled();
            let mut cx = Context::from_waker(&waker);
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Ready(v)) => {
                    output = Some(v);
                    self.stop();
                }
                Ok(Poll::Pending) => {}
                Err(p) => {
                    panic = Some(p);
                    self.stop();
                }
            }
        };
        self.inner.push_ready(Ready::Main);
        loop {
            self.run_once(Some(&mut poll_main))?;
            if let Some(p) = self.inner.pending_panic.borrow_mut().take() {
                drop(guard);
                resume_unwind(p);
            }
            if self.inner.stopping.get() {
                break;
            }
        }
        drop(guard);
        if let Some(p) = panic {
            resume_unwind(p);
        }
        output.ok_or(Error::StoppedBeforeComplete)
    }

    /// Stops the loop once the current iteration is done. Called while the
    /// loop is not running, it makes the next run do one iteration.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let handle = lp.handle();
    /// lp.call_soon(move || handle.stop())?;
    /// lp.run_forever()?; // returns after the callback's iteration
    ///
    /// lp.stop(); // before the run: one iteration
    /// let before = lp.iteration_count();
    /// lp.run_forever()?;
    /// assert_eq!(lp.iteration_count(), before + 1);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    /// Closes the loop: drops every queued callback, timer and task, and
    /// releases the poller and its waker. Transports are not closed (as in
    /// asyncio). Closing twice does nothing. See the example on
    /// [`is_closed`](LoopHandle::is_closed).
    ///
    /// # Errors
    ///
    /// [`Error::CloseWhileRunning`] while the loop runs.
    pub fn close(&self) -> Result<(), Error> {
        let inner = &self.inner;
        if inner.running.get() {
            return Err(Error::CloseWhileRunning);
        }
        if inner.closed.replace(true) {
            return Ok(());
        }
        log::debug!("closing event loop");
        // Take everything out first; drop it with no borrow held, since
        // dropping user callbacks and futures runs user code.
        let inbox = inner.shared.close();
        let ready = std::mem::take(&mut *inner.ready.borrow_mut());
        let timers = inner.timers.borrow_mut().drain();
        let tasks = std::mem::take(&mut *inner.tasks.borrow_mut());
        let selector = inner.selector.borrow_mut().take();
        let handler = inner.exception_handler.borrow_mut().take();
        // The modules' per-loop state first: it unregisters signal actions
        // and reaps children while the rest still exists.
        let extensions = std::mem::take(&mut *inner.extensions.borrow_mut());
        drop(extensions);
        let signal_handles = std::mem::take(&mut *inner.signal_handles.borrow_mut());
        drop((inbox, ready, timers, signal_handles));
        let futures: Vec<_> = tasks
            .into_iter()
            .filter_map(|(_, slot)| slot.close())
            .collect();
        drop(futures);
        if let Some(mut selector) = selector {
            let (handles, sources) = selector.drain();
            drop(selector);
            drop(handles);
            for source in sources {
                // User code may run here (protocol drops): no borrow is held.
                let _ = catch_unwind(AssertUnwindSafe(|| source.loop_closed()));
            }
        }
        drop(handler);
        Ok(())
    }

    /// Whether the loop is running.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// assert!(!lp.is_running());
    /// let handle = lp.handle();
    /// lp.run_until_complete(async move { assert!(handle.is_running()) })?;
    /// assert!(!lp.is_running());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// Whether the loop was closed.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// assert!(!lp.is_closed());
    /// lp.close()?;
    /// assert!(lp.is_closed());
    /// assert!(matches!(lp.call_soon(|| {}), Err(sloop::Error::Closed)));
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// The loop's clock: the monotonic clock. Deadlines for
    /// [`call_at`](LoopHandle::call_at) are in this time; see the example
    /// there.
    pub fn time(&self) -> Instant {
        Instant::now()
    }

    /// How many iterations the loop has run; for tests and diagnostics
    /// (e.g. to show that an idle loop does not spin).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let before = lp.iteration_count();
    /// // Nothing else to do: the loop sleeps in the poll until the timer.
    /// lp.run_until_complete(sloop::sleep(Duration::from_millis(20)))?;
    /// assert!(lp.iteration_count() - before < 10); // a few, not thousands
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn iteration_count(&self) -> u64 {
        self.inner.iterations.get()
    }

    /// How many timers are in the heap, cancelled ones not yet dropped
    /// included; for tests and diagnostics.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let timer = lp.call_later(Duration::from_secs(60), || {})?;
    /// assert_eq!(lp.timer_count(), 1);
    /// timer.cancel(); // stays in the heap until the loop drops it
    /// assert_eq!(lp.timer_count(), 1);
    /// lp.stop();
    /// lp.run_forever()?;
    /// assert_eq!(lp.timer_count(), 0);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn timer_count(&self) -> usize {
        self.inner.timers.borrow().len()
    }

    /// A thread-safe handle to this loop. See the example on [`LoopHandle`].
    pub fn remote(&self) -> Remote {
        Remote {
            shared: self.inner.shared.clone(),
        }
    }

    // ----- one iteration -----

    fn run_once(&self, mut main: Option<&mut dyn FnMut()>) -> Result<(), Error> {
        let inner = &*self.inner;
        inner.iterations.set(inner.iterations.get() + 1);

        if inner.timers.borrow().len() > 0 {
            inner.timers.borrow_mut().remove_cancelled();
        }

        let queued = !inner.ready.borrow().is_empty();
        let timeout = if queued || inner.stopping.get() || inner.shared.is_pending() {
            Some(Duration::ZERO)
        } else {
            inner.timers.borrow().next_deadline().map(|when| {
                when.saturating_duration_since(Instant::now())
                    .min(MAXIMUM_SELECT_TIMEOUT)
            })
        };

        let events = &mut *inner.events.borrow_mut();
        // Tasks woken by the last poll's events would otherwise cost a
        // second, mostly empty poll before they run ("Skipped polls" in
        // the module docs).
        let skip_poll = queued && inner.polled_last.get() && !inner.stopping.get();
        inner.polled_last.set(!skip_poll);
        if skip_poll {
            events.clear();
        } else {
            match inner.selector.borrow_mut().as_mut() {
                Some(selector) => {
                    Counters::bump(&inner.counters.polls);
                    if inner.counters.timing.get() {
                        inner
                            .counters
                            .timed_poll(|| selector.poll(events, timeout))?
                    } else {
                        selector.poll(events, timeout)?
                    }
                }
                None => return Err(Error::Closed),
            }
        }

        // This iteration runs what was queued before the poll, then the
        // events, then what the inbox brought and the due timers: the order
        // asyncio's ready deque gives them. What they schedule lands in the
        // (emptied) queue and waits for the next iteration.
        // `todo` is the loop's own scratch vector: no callback can reach it.
        let mut todo = inner.spare_ready.borrow_mut();
        let mut left = 0;
        if queued {
            std::mem::swap(&mut *todo, &mut *inner.ready.borrow_mut());
            left = self.run_items(&mut todo, &mut main);
        }
        if self.panic_pending() {
            // The items not run went back to the queue's head; the events
            // go right after them, so no edge of the poller is lost.
            let mut rest = Vec::new();
            self.queue_events(events.iter(), &mut rest);
            inner.ready.borrow_mut().splice(left..left, rest);
            return Ok(());
        }
        if self.dispatch_events(events) {
            self.collect_due(&mut todo);
            self.run_items(&mut todo, &mut main);
        }
        Ok(())
    }

    /// Runs `todo`'s items in order, leaving it empty. If a panic is to
    /// propagate, stops there: the items not run go back to the head of the
    /// ready queue (as they would in a deque popped one at a time), and
    /// their number is returned.
    #[inline]
    fn run_items(&self, todo: &mut Vec<Ready>, main: &mut Option<&mut dyn FnMut()>) -> usize {
        if todo.is_empty() {
            return 0;
        }
        self.drain_and_run(todo, main)
    }

    #[inline(never)]
    fn drain_and_run(&self, todo: &mut Vec<Ready>, main: &mut Option<&mut dyn FnMut()>) -> usize {
        let mut run = Requeue {
            inner: &self.inner,
            rest: todo.drain(..),
        };
        for item in run.rest.by_ref() {
            // Woken tasks are most of what is queued: polled without the
            // general dispatch's frame.
            match item {
                Ready::Task(key) => self.run_task(key),
                item => self.run_ready(item, main),
            }
            if self.panic_pending() {
                break;
            }
        }
        run.rest.len()
    }

    /// Only `handle_panic` with `propagate_panics` on sets a pending panic:
    /// the constant is tested first, not the `RefCell`.
    #[inline]
    fn panic_pending(&self) -> bool {
        self.inner.propagate_panics && self.inner.pending_panic.borrow().is_some()
    }

    /// Adds what other threads sent and the timers that are due to `out`.
    #[inline]
    fn collect_due(&self, out: &mut Vec<Ready>) {
        let inner = &*self.inner;
        if inner.shared.is_pending() {
            self.drain_inbox(out);
        }
        if inner.timers.borrow().len() > 0 {
            let now = Instant::now();
            let mut timers = inner.timers.borrow_mut();
            while let Some(handle) = timers.pop_due(now) {
                if !handle.cancelled() {
                    out.push(Ready::Callback(handle));
                }
            }
        }
    }

    /// Queues what the events make ready, in their order.
    fn queue_events<'a>(
        &self,
        events: impl Iterator<Item = &'a mio::event::Event>,
        ready: &mut Vec<Ready>,
    ) {
        let selector = self.inner.selector.borrow();
        let Some(selector) = selector.as_ref() else {
            return;
        };
        for event in events {
            match EventTarget::of(event) {
                EventTarget::Waker => {}
                EventTarget::Source(key, readiness) => ready.push(Ready::Io(key, readiness)),
                EventTarget::Callbacks(key, readiness) => {
                    let (reader, writer) = selector.callbacks_ready(key, readiness);
                    if reader {
                        ready.push(Ready::Reader(key));
                    }
                    if writer {
                        ready.push(Ready::Writer(key));
                    }
                }
            }
        }
    }

    /// Runs what the events make ready, in their order, as they are read:
    /// the order queueing them after what ran before would give.
    /// Returns `false` if a panic is to propagate: the events not run yet
    /// are then queued ahead of what the others scheduled, so no edge of
    /// the edge-triggered poller is lost.
    fn dispatch_events(&self, events: &mio::Events) -> bool {
        let mut iter = events.iter();
        // Counted in a register, stored once.
        let mut count = 0u64;
        while let Some(event) = iter.next() {
            count += 1;
            // A writer whose reader just panicked (to propagate) waits.
            let mut writer_left = None;
            match EventTarget::of(event) {
                EventTarget::Waker => continue,
                EventTarget::Source(key, readiness) => self.run_source(key, readiness),
                EventTarget::Callbacks(key, readiness) => {
                    let (reader, writer) = match self.inner.selector.borrow().as_ref() {
                        Some(selector) => selector.callbacks_ready(key, readiness),
                        None => (false, false),
                    };
                    if reader {
                        self.run_ready(Ready::Reader(key), &mut None);
                    }
                    if writer {
                        if self.panic_pending() {
                            writer_left = Some(Ready::Writer(key));
                        } else {
                            self.run_ready(Ready::Writer(key), &mut None);
                        }
                    }
                }
            }
            if self.panic_pending() {
                let mut rest: Vec<Ready> = writer_left.into_iter().collect();
                self.queue_events(iter, &mut rest);
                self.inner.ready.borrow_mut().splice(0..0, rest);
                self.count_events(count);
                return false;
            }
        }
        self.count_events(count);
        true
    }

    #[inline(always)]
    fn count_events(&self, n: u64) {
        let events = &self.inner.counters.events;
        events.set(events.get().wrapping_add(n));
    }

    fn drain_inbox(&self, ready: &mut Vec<Ready>) {
        let inner = &*self.inner;
        let mut inbox = inner.inbox.borrow_mut();
        inner.shared.drain(&mut inbox);
        let signals = inner.shared.take_signals();
        if signals != 0 {
            self.queue_signals(signals, ready);
        }
        for cb in inbox.callbacks.drain(..) {
            ready.push(Ready::Remote(cb));
        }
        for key in inbox.woken.drain(..) {
            ready.push(if key == MAIN_TASK {
                Ready::Main
            } else {
                Ready::Task(key)
            });
        }
    }

    /// Tells a source its fd is ready, if the event is not stale.
    #[inline(always)]
    fn run_source(&self, key: IoKey, readiness: Readiness) {
        let source = match self.inner.selector.borrow().as_ref() {
            Some(selector) => selector.source(key),
            None => None,
        };
        if let Some(source) = source {
            // Transports catch their protocols' panics themselves; this
            // only keeps a bug of ours from killing the loop.
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| source.ready(readiness))) {
                self.source_panicked(p, &*source);
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn source_panicked(&self, payload: Box<dyn std::any::Any + Send>, source: &dyn IoSource) {
        let context = ExceptionContext::new("Exception in I/O callback");
        let context = match source.transport_info() {
            Some(info) => context.with_transport(info),
            None => context.with_socket(source.describe()),
        };
        self.handle_panic(payload, context);
    }

    fn run_ready(&self, item: Ready, main: &mut Option<&mut dyn FnMut()>) {
        match item {
            Ready::Callback(handle) => self.run_handle(&handle),
            Ready::Remote(callback) => {
                Counters::bump(&self.inner.counters.callbacks);
                let started = self.inner.debug.get().then(Instant::now);
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| callback(self))) {
                    self.handle_panic(
                        p,
                        ExceptionContext::new("Exception in thread-safe callback"),
                    );
                }
                if let Some(t0) = started {
                    self.check_slow(t0, || "<thread-safe callback>".to_owned());
                }
            }
            Ready::Reader(key) => self.run_callback(key, true),
            Ready::Writer(key) => self.run_callback(key, false),
            Ready::Io(key, readiness) => self.run_source(key, readiness),
            Ready::Task(key) => self.run_task(key),
            Ready::Main => {
                Counters::bump(&self.inner.counters.task_polls);
                if let Some(main) = main {
                    main();
                }
            }
        }
    }

    /// Runs the raw reader (`read`) or writer callback of `key`, then
    /// re-arms the registration; a callback cancelled before or while it
    /// ran is removed instead (`Selector::rearm`). Transports (`IoSource`)
    /// never come here.
    fn run_callback(&self, key: IoKey, read: bool) {
        let handle = match self.inner.selector.borrow().as_ref() {
            Some(selector) => selector.callback(key, read),
            None => None,
        };
        let Some(handle) = handle else { return };
        self.run_handle(&handle);
        if let Some(selector) = self.inner.selector.borrow_mut().as_mut() {
            selector.rearm(key);
        }
    }

    fn run_handle(&self, handle: &Handle) {
        if handle.cancelled() {
            return;
        }
        Counters::bump(&self.inner.counters.callbacks);
        let started = self.inner.debug.get().then(Instant::now);
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| handle.run())) {
            self.handle_panic(
                p,
                ExceptionContext::new(format!("Exception in callback {handle}"))
                    .with_handle(handle),
            );
        }
        if let Some(t0) = started {
            self.check_slow(t0, || handle.to_string());
        }
    }
}

/// The items of an iteration not run yet. If the iteration stops early (a
/// panic to propagate, or one unwinding out of the loop), they go back to
/// the head of the queue, ahead of what the items that ran scheduled, as
/// they would be in a deque popped one at a time.
struct Requeue<'a> {
    inner: &'a LoopInner,
    rest: std::vec::Drain<'a, Ready>,
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        if self.rest.as_slice().is_empty() {
            return;
        }
        let rest: Vec<Ready> = self.rest.by_ref().collect();
        let mut ready = self.inner.ready.borrow_mut();
        ready.splice(0..0, rest);
    }
}
