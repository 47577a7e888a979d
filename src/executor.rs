//! Blocking work off the loop: asyncio's `run_in_executor`,
//! `getaddrinfo`, `getnameinfo` and `shutdown_default_executor`.
//!
//! The threads are the `blocking` crate's pool, shared by the process and
//! grown and shrunk by it. Each loop bounds how many of its jobs are in
//! flight at once ([`set_executor_limit`](LoopHandle::set_executor_limit),
//! asyncio's `max_workers`); the rest wait in the loop's queue, in order.
//! A finished job hands its result back through the loop's thread-safe
//! inbox ([`Remote`](crate::Remote)'s path, which wakes the loop), where
//! its slot is released and the next queued job starts.
//!
//! The name lookups of `create_connection`, `create_server` and the
//! datagram endpoints run here too (`net.rs`), so they count against the
//! same bound.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::thread;

use futures::channel::oneshot;

use crate::error::Error;
use crate::event_loop::LoopHandle;

/// A job's answer: its value, or the panic it raised.
type Outcome<T> = thread::Result<T>;

/// A job waiting for a slot: starts it on the pool when called.
type Start = Box<dyn FnOnce(&LoopHandle)>;

/// A loop's executor state (a loop extension, dropped when it closes).
struct LoopExecutor {
    limit: Cell<usize>,
    in_flight: Cell<usize>,
    queue: RefCell<VecDeque<Start>>,
    shutdown: Cell<bool>,
    /// `shutdown_default_executor` futures waiting for the jobs to end.
    idle_waiters: RefCell<Vec<Waker>>,
}

impl Default for LoopExecutor {
    fn default() -> Self {
        LoopExecutor {
            limit: Cell::new(default_limit()),
            in_flight: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            shutdown: Cell::new(false),
            idle_waiters: RefCell::new(Vec::new()),
        }
    }
}

/// asyncio's default `max_workers`: `min(32, cpus + 4)`.
fn default_limit() -> usize {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

impl LoopExecutor {
    fn is_idle(&self) -> bool {
        self.in_flight.get() == 0 && self.queue.borrow().is_empty()
    }

    /// Starts queued jobs while there are free slots.
    fn start_queued(&self, lp: &LoopHandle) {
        while self.in_flight.get() < self.limit.get() {
            let Some(start) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            start(lp);
        }
        if self.is_idle() {
            for w in self.idle_waiters.take() {
                w.wake();
            }
        }
    }
}

/// Queues `f` on `lp`'s executor; its outcome goes to `tx`.
fn submit<T, F>(lp: &LoopHandle, f: F, tx: oneshot::Sender<Outcome<T>>) -> Result<(), Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let exec = lp.extension::<LoopExecutor>().ok_or(Error::Closed)?;
    if exec.shutdown.get() {
        return Err(Error::ExecutorShutdown);
    }
    let start: Start = Box::new(move |lp: &LoopHandle| {
        if tx.is_canceled() {
            return; // dropped while queued: never runs
        }
        let Some(exec) = lp.extension::<LoopExecutor>() else {
            return;
        };
        exec.in_flight.set(exec.in_flight.get() + 1);
        let remote = lp.remote();
        blocking::unblock(move || {
            let outcome = catch_unwind(AssertUnwindSafe(f));
            // Back on the loop: free the slot, start the next job, then
            // complete the future (a wake on the loop's own thread). If the
            // loop closed meanwhile, the callback and `tx` are dropped and
            // the future sees `Closed`.
            let _ = remote.shared.push_callback(Box::new(move |lp| {
                if let Some(exec) = lp.extension::<LoopExecutor>() {
                    exec.in_flight.set(exec.in_flight.get().saturating_sub(1));
                    exec.start_queued(lp);
                }
                let _ = tx.send(outcome);
            }));
        })
        .detach();
    });
    exec.queue.borrow_mut().push_back(start);
    exec.start_queued(lp);
    Ok(())
}

impl LoopHandle {
    /// Runs `f` on a thread of the blocking pool and returns a future of
    /// its result (asyncio's `run_in_executor` with the default executor).
    /// At most [`executor_limit`](LoopHandle::executor_limit) of this
    /// loop's jobs run at once; the others wait their turn, in order.
    ///
    /// The job starts at once (not when the future is first polled). A
    /// panic in `f` is resumed where the future is polled. Dropping the
    /// future before the job starts means it never runs; after, the job
    /// finishes and its result is dropped.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let sum = lp.run_in_executor(|| (1..=10u32).sum::<u32>())?;
    /// assert_eq!(lp.run_until_complete(sum)??, 55);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the loop is closed, [`Error::ExecutorShutdown`]
    /// after [`shutdown_default_executor`](LoopHandle::shutdown_default_executor).
    /// The future gives [`Error::Closed`] if the loop closes before the
    /// job's result came back.
    pub fn run_in_executor<T, F>(&self, f: F) -> Result<RunInExecutor<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        submit(self, f, tx)?;
        Ok(RunInExecutor { rx })
    }

    /// How many of this loop's executor jobs may run at once (default
    /// `min(32, cpus + 4)`, asyncio's).
    pub fn executor_limit(&self) -> usize {
        self.extension::<LoopExecutor>()
            .map_or(0, |e| e.limit.get())
    }

    /// Sets how many of this loop's executor jobs may run at once (at
    /// least 1). Raising it starts queued jobs.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// lp.set_executor_limit(2);
    /// assert_eq!(lp.executor_limit(), 2);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn set_executor_limit(&self, limit: usize) {
        if let Some(exec) = self.extension::<LoopExecutor>() {
            exec.limit.set(limit.max(1));
            exec.start_queued(self);
        }
    }

    /// Refuses new executor jobs and returns a future that completes once
    /// the jobs already submitted (queued ones included) have finished
    /// (asyncio's `shutdown_default_executor`). Dropping the future does
    /// not undo the shutdown.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let job = lp.run_in_executor(|| 7)?;
    /// lp.run_until_complete(lp.shutdown_default_executor())?;
    /// assert!(matches!(lp.run_in_executor(|| 8), Err(sloop::Error::ExecutorShutdown)));
    /// assert_eq!(lp.run_until_complete(job)??, 7);
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn shutdown_default_executor(&self) -> ShutdownExecutor {
        if let Some(exec) = self.extension::<LoopExecutor>() {
            exec.shutdown.set(true);
        }
        ShutdownExecutor { lp: self.clone() }
    }

    /// Resolves `host` and `port` on the executor (asyncio's
    /// `getaddrinfo` for stream sockets): the addresses, in the resolver's
    /// order. `port` is a number or a service name (`"http"` is 80).
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// // The loop's result, the executor's (`Closed`), the lookup's.
    /// let addrs = lp.run_until_complete(lp.getaddrinfo("localhost", "http")?)???;
    /// assert!(addrs.iter().all(|a| a.port() == 80 && a.ip().is_loopback()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`run_in_executor`](LoopHandle::run_in_executor); the future
    /// gives the resolver's error, `InvalidInput` for an unknown service,
    /// or "getaddrinfo() returned empty list".
    pub fn getaddrinfo(
        &self,
        host: &str,
        port: &str,
    ) -> Result<RunInExecutor<io::Result<Vec<SocketAddr>>>, Error> {
        let (host, port) = (host.to_owned(), port.to_owned());
        self.run_in_executor(move || lookup(&host, &port, false))
    }

    /// The host and service names of `addr`, looked up on the executor
    /// (asyncio's `getnameinfo`); `flags` are `getnameinfo`'s `NI_*`
    /// flags (`libc::NI_NUMERICHOST`...).
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let addr = "127.0.0.1:80".parse().unwrap();
    /// let (host, service) = lp.run_until_complete(lp.getnameinfo(addr, libc::NI_NUMERICHOST)?)???;
    /// assert_eq!((host.as_str(), service.as_str()), ("127.0.0.1", "http"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`run_in_executor`](LoopHandle::run_in_executor); the future
    /// gives the resolver's error.
    pub fn getnameinfo(
        &self,
        addr: SocketAddr,
        flags: i32,
    ) -> Result<RunInExecutor<io::Result<(String, String)>>, Error> {
        self.run_in_executor(move || crate::sys::name_info(&addr, flags))
    }
}

/// `getaddrinfo` for `host` and a port number or service name.
pub(crate) fn lookup(host: &str, port: &str, datagram: bool) -> io::Result<Vec<SocketAddr>> {
    let port = match port.parse::<u16>() {
        Ok(n) => n,
        Err(_) => crate::sys::service_port(port, datagram)?,
    };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::other("getaddrinfo() returned empty list"));
    }
    Ok(addrs)
}

/// Runs `f` off the loop thread: on the running loop's executor, or (no
/// loop running here) straight on the blocking pool. For `net.rs`.
pub(crate) async fn off_loop<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let outcome = match crate::event_loop::get_running_loop() {
        Some(lp) => {
            let (tx, rx) = oneshot::channel();
            submit(&lp, f, tx)?;
            rx.await.map_err(|_| io::Error::from(Error::Closed))?
        }
        None => blocking::unblock(move || catch_unwind(AssertUnwindSafe(f))).await,
    };
    match outcome {
        Ok(v) => v,
        Err(p) => resume_unwind(p),
    }
}

/// The result of [`LoopHandle::run_in_executor`] (and of `getaddrinfo`,
/// `getnameinfo`): `Ok` with the job's value, or [`Error::Closed`] if the
/// loop closed first. See the example there.
///
/// # Cancel safety
///
/// Dropping it before the job starts cancels the job; after, the job runs
/// to its end and its value is dropped.
#[must_use = "the job's result is lost unless the future is awaited"]
pub struct RunInExecutor<T> {
    rx: oneshot::Receiver<Outcome<T>>,
}

impl<T> Future for RunInExecutor<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::Closed)),
            Poll::Ready(Ok(Ok(v))) => Poll::Ready(Ok(v)),
            Poll::Ready(Ok(Err(panic))) => resume_unwind(panic),
        }
    }
}

impl<T> fmt::Debug for RunInExecutor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunInExecutor").finish_non_exhaustive()
    }
}

/// The future of [`LoopHandle::shutdown_default_executor`]: completes
/// once the loop's executor jobs have all finished (at once on a closed
/// loop). See the example there.
///
/// # Cancel safety
///
/// Cancel safe: the shutdown stays in force.
#[must_use = "the shutdown happens at once; the future waits for the jobs"]
pub struct ShutdownExecutor {
    lp: LoopHandle,
}

impl Future for ShutdownExecutor {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(exec) = self.lp.extension::<LoopExecutor>() else {
            return Poll::Ready(());
        };
        if exec.is_idle() {
            return Poll::Ready(());
        }
        let mut waiters = exec.idle_waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl fmt::Debug for ShutdownExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownExecutor").finish_non_exhaustive()
    }
}
