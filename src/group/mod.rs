//! A group of loops, one per thread: [`LoopGroup`].
//!
//! A loop is single-threaded by design (docs/design.md D1). To use every
//! core, run one loop per core and pin each connection to one loop for its
//! life, as Netty's `EventLoopGroup` does: no lock on the hot path, no
//! task moving between threads. The group starts the threads, runs an
//! [`EventLoop`] on each, and talks to them only through their
//! [`Remote`]s.
//!
//! - Servers ([`LoopGroup::start_server`], the `serve` module) bind the
//!   same address on every loop with `SO_REUSEPORT`, so the kernel spreads
//!   the connections; or one loop accepts and hands the sockets to the
//!   loops in turn ([`LoopGroup::start_server_round_robin`]).
//! - [`LoopGroup::spawn_on_each`] runs setup code on every loop and
//!   returns each loop's result; a panic is that loop's result, not the
//!   caller's.
//! - [`LoopGroup::stats`] gathers every loop's [`LoopStats`].
//! - [`LoopGroup::shutdown`] closes what the group started, waits for the
//!   connections to end (up to a timeout), aborts the rest, stops and
//!   joins the threads, and reports per loop. Dropping the group does the
//!   same with no wait.
//!
//! The group's methods block the calling thread until the loops answer:
//! call them from the thread that owns the group, never from one of its
//! loops (they refuse with [`LoopError::OnGroupThread`]).

mod serve;

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::event_loop::{get_running_loop, Builder, EventLoop, LoopHandle, LoopStats, Remote};
use crate::exception::Exception;
use serve::Held;
pub use serve::{GroupEndpoint, GroupServer};

thread_local! {
    /// What the group started on the loop of this thread (servers,
    /// endpoints, acceptors, handed-over connections), for shutdown.
    static HELD: RefCell<Option<Rc<Held>>> = const { RefCell::new(None) };
}

/// What the group holds on the loop running on this thread.
fn held() -> Option<Rc<Held>> {
    HELD.with(|h| h.borrow().clone())
}

/// Why an operation did not complete on one loop of a group.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoopError {
    /// The code run on the loop panicked (the panic's message). The loop
    /// runs on.
    Panicked(String),
    /// The loop has stopped, or its thread ended (a panic that escaped the
    /// loop, see [`LoopReport::panic`]).
    Stopped,
    /// The operation failed on that loop.
    Failed(io::Error),
    /// Called from one of the group's own loops, which would wait for
    /// itself.
    OnGroupThread,
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopError::Panicked(msg) => write!(f, "panicked: {msg}"),
            LoopError::Stopped => f.write_str("the loop has stopped"),
            LoopError::Failed(e) => write!(f, "{e}"),
            LoopError::OnGroupThread => {
                f.write_str("a LoopGroup method was called from one of its own loops")
            }
        }
    }
}

impl std::error::Error for LoopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoopError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LoopError> for io::Error {
    fn from(e: LoopError) -> io::Error {
        match e {
            LoopError::Failed(e) => e,
            other => io::Error::other(other),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match Exception::from_panic(payload) {
        Exception::Panic(msg) => msg,
        other => other.to_string(),
    }
}

/// What one loop's thread hands back when it ends.
#[derive(Default)]
struct LoopExit {
    stats: LoopStats,
    /// Connections still open at the shutdown's deadline, aborted.
    aborted: usize,
    /// Whether the loop ran its shutdown (else it was stopped otherwise).
    shut_down: bool,
    error: Option<String>,
}

/// One loop of a group: its `Remote` and its thread.
struct Member {
    remote: Remote,
    thread: Option<JoinHandle<LoopExit>>,
}

/// A group of event loops, one per thread: see the [module docs](self).
///
/// ```
/// use std::io::{Read, Write};
/// use sloop::group::LoopGroup;
/// use sloop::{Protocol, Transport};
///
/// struct Echo(Option<Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: &Transport) {
///         self.0 = Some(t.clone());
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         let _ = self.0.as_ref().unwrap().write(data);
///     }
/// }
///
/// let group = LoopGroup::new(2)?;
/// let server = group.start_server(|| Echo(None), "127.0.0.1:0")?;
/// let mut client = std::net::TcpStream::connect(server.local_addrs()[0])?;
/// client.write_all(b"hello")?;
/// let mut back = [0; 5];
/// client.read_exact(&mut back)?;
/// assert_eq!(&back, b"hello");
/// drop(client);
/// let report = group.shutdown(std::time::Duration::from_secs(5));
/// assert!(report.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LoopGroup {
    members: Vec<Member>,
}

impl LoopGroup {
    /// Starts `n` threads, each running a new [`EventLoop`] with the
    /// default options.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `n` is 0; the error of a thread or loop that
    /// could not be created (the others are stopped again).
    pub fn new(n: usize) -> io::Result<LoopGroup> {
        LoopGroup::with_options(n, EventLoop::builder())
    }

    /// One loop per core ([`std::thread::available_parallelism`]; one if
    /// that is unknown). See [`new`](LoopGroup::new).
    ///
    /// # Errors
    ///
    /// As [`new`](LoopGroup::new).
    pub fn per_core() -> io::Result<LoopGroup> {
        let n = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        LoopGroup::new(n)
    }

    /// Starts `n` loops built with `options` (debug mode, panics, read
    /// buffer size).
    ///
    /// ```
    /// let group = sloop::group::LoopGroup::with_options(
    ///     2,
    ///     sloop::EventLoop::builder().debug(true),
    /// )?;
    /// let debug = group.spawn_on_each(|lp| lp.debug());
    /// assert!(debug.iter().all(|d| matches!(d, Ok(true))));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](LoopGroup::new).
    pub fn with_options(n: usize, options: Builder) -> io::Result<LoopGroup> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a LoopGroup needs at least one loop",
            ));
        }
        let mut group = LoopGroup {
            members: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (tx, rx) = mpsc::sync_channel(1);
            let options = options.clone();
            let thread = thread::Builder::new()
                .name(format!("sloop-group-{i}"))
                .spawn(move || run_member(options, tx))?;
            match rx.recv() {
                Ok(Ok(remote)) => group.members.push(Member {
                    remote,
                    thread: Some(thread),
                }),
                Ok(Err(e)) => {
                    let _ = thread.join();
                    return Err(e); // `group` drops: the others stop
                }
                Err(_) => {
                    let _ = thread.join();
                    return Err(io::Error::other("a loop thread ended at start"));
                }
            }
        }
        Ok(group)
    }

    /// How many loops the group has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no loop (never: a group has at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The [`Remote`] of loop `i`, if there is such a loop.
    ///
    /// ```
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// let remote = group.remote(1).unwrap().clone();
    /// let task = remote.spawn(async { 6 * 7 }).unwrap();
    /// assert_eq!(futures::executor::block_on(task), Ok(42));
    /// assert!(group.remote(2).is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn remote(&self, i: usize) -> Option<&Remote> {
        self.members.get(i).map(|m| &m.remote)
    }

    /// Every loop's [`Remote`], in order.
    pub fn remotes(&self) -> Vec<Remote> {
        self.members.iter().map(|m| m.remote.clone()).collect()
    }

    /// Runs `f` on every loop (in its next iteration) and returns each
    /// loop's result, in order. A panic in `f` is that loop's
    /// [`LoopError::Panicked`]; the loop runs on.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// // A timer on each loop; the callback runs on that loop's thread.
    /// let set = group.spawn_on_each(|lp| lp.call_later(Duration::from_secs(60), || {}).is_ok());
    /// assert!(set.iter().all(|r| matches!(r, Ok(true))));
    /// assert_eq!(group.stats().total.timers_live, 2);
    ///
    /// let results = group.spawn_on_each(|lp| {
    ///     if lp.remote().is_closed() { unreachable!() }
    ///     std::thread::current().name().map(str::to_owned)
    /// });
    /// assert_eq!(results.len(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on_each<F, R>(&self, f: F) -> Vec<Result<R, LoopError>>
    where
        F: Fn(&LoopHandle) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        if self.on_own_thread() {
            return self
                .members
                .iter()
                .map(|_| Err(LoopError::OnGroupThread))
                .collect();
        }
        let f = std::sync::Arc::new(f);
        let pending: Vec<_> = self
            .members
            .iter()
            .map(|m| {
                let f = f.clone();
                send_call(&m.remote, move |lp| f(lp))
            })
            .collect();
        pending.into_iter().map(wait_call).collect()
    }

    /// Every loop's statistics and their sum. A loop that does not answer
    /// (stopped) has `None` and adds nothing.
    ///
    /// ```
    /// let group = sloop::group::LoopGroup::new(3)?;
    /// let stats = group.stats();
    /// assert_eq!(stats.loops.len(), 3);
    /// assert!(stats.loops.iter().all(Option::is_some));
    /// assert_eq!(stats.total.transports.total(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stats(&self) -> GroupStats {
        let each = self.spawn_on_each(|lp| lp.stats());
        let mut total = LoopStats::default();
        let loops = each
            .into_iter()
            .map(|s| {
                let s = s.ok()?;
                total += s.clone();
                Some(s)
            })
            .collect();
        GroupStats { loops, total }
    }

    /// Stops the group: on every loop, closes the servers, endpoints and
    /// acceptors the group started; waits until their connections have
    /// ended or `timeout` has passed, then aborts what is left; stops the
    /// loop, closes it (which releases whatever else it still holds) and
    /// joins its thread. Returns what happened on each loop.
    ///
    /// A loop whose thread already ended (a panic escaped it) is reported
    /// with its panic; the others shut down all the same.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::time::Duration;
    /// use sloop::{Protocol, Transport};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: &Transport) {
    ///         t.write(b"hi").unwrap();
    ///     }
    /// }
    ///
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// let server = group.start_server(|| Hello, "127.0.0.1:0")?;
    /// // A client that never closes: aborted at the deadline. (It reads the
    /// // greeting first: a connection not yet accepted would go with the
    /// // listener, not be aborted.)
    /// let mut client = std::net::TcpStream::connect(server.local_addrs()[0])?;
    /// client.read_exact(&mut [0; 2])?;
    /// let report = group.shutdown(Duration::from_millis(50));
    /// assert_eq!(report.aborted(), 1);
    /// assert!(report.loops.iter().all(|l| l.panic.is_none()));
    /// # drop(client);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.shutdown_now(timeout)
    }

    fn shutdown_now(&mut self, timeout: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + timeout;
        for m in &self.members {
            // A stopped loop refuses; its thread is joined below all the same.
            let _ = m.remote.call_soon(move || {
                if let (Some(lp), Some(held)) = (get_running_loop(), held()) {
                    serve::begin_shutdown(&lp, held, deadline);
                }
            });
        }
        let loops = self
            .members
            .iter_mut()
            .enumerate()
            .map(|(index, m)| {
                let joined = match m.thread.take() {
                    Some(t) => t.join(),
                    None => Ok(LoopExit::default()),
                };
                match joined {
                    Ok(exit) => LoopReport {
                        index,
                        aborted: exit.aborted,
                        completed: exit.shut_down,
                        error: exit.error,
                        panic: None,
                        stats: Some(exit.stats),
                    },
                    Err(payload) => LoopReport {
                        index,
                        aborted: 0,
                        completed: false,
                        error: None,
                        panic: Some(panic_message(&*payload)),
                        stats: None,
                    },
                }
            })
            .collect();
        self.members.clear();
        ShutdownReport {
            loops,
            elapsed: started.elapsed(),
        }
    }

    fn on_own_thread(&self) -> bool {
        get_running_loop().is_some_and(|lp| self.members.iter().any(|m| lp.is_loop_of(&m.remote)))
    }
}

impl Drop for LoopGroup {
    /// Shuts the group down with no wait ([`LoopGroup::shutdown`] with a
    /// zero timeout): connections still open are aborted.
    fn drop(&mut self) {
        if !self.members.is_empty() && !self.on_own_thread() {
            let _ = self.shutdown_now(Duration::ZERO);
        }
    }
}

impl fmt::Debug for LoopGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopGroup")
            .field("loops", &self.members.len())
            .finish()
    }
}

/// The statistics of a group: see [`LoopGroup::stats`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GroupStats {
    /// Each loop's, in order; `None` for a loop that did not answer.
    pub loops: Vec<Option<LoopStats>>,
    /// Their sum.
    pub total: LoopStats,
}

/// What [`LoopGroup::shutdown`] did, loop by loop.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One report per loop, in order.
    pub loops: Vec<LoopReport>,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether every loop shut down in order: no panic, no error, nothing
    /// aborted. See the example on [`LoopGroup`].
    pub fn is_clean(&self) -> bool {
        self.loops
            .iter()
            .all(|l| l.completed && l.panic.is_none() && l.error.is_none() && l.aborted == 0)
    }

    /// Connections aborted at the deadline, over all loops. See the
    /// example on [`LoopGroup::shutdown`].
    pub fn aborted(&self) -> usize {
        self.loops.iter().map(|l| l.aborted).sum()
    }
}

/// What [`LoopGroup::shutdown`] did on one loop.
#[derive(Debug)]
#[non_exhaustive]
pub struct LoopReport {
    /// The loop's index in the group.
    pub index: usize,
    /// Connections of the group's servers still open at the deadline, and
    /// aborted.
    pub aborted: usize,
    /// Whether the loop ran its shutdown steps (false if it had stopped
    /// before, or its thread ended).
    pub completed: bool,
    /// An error that ended the loop's run (from its poller).
    pub error: Option<String>,
    /// The message of a panic that escaped the loop and ended its thread
    /// (a loop built with `propagate_panics`, or a panic in a drop).
    pub panic: Option<String>,
    /// The loop's statistics just before it closed; `None` if its thread
    /// panicked.
    pub stats: Option<LoopStats>,
}

/// The body of each loop thread: build the loop, hand back its `Remote`,
/// run until stopped, then close.
fn run_member(options: Builder, tx: mpsc::SyncSender<io::Result<Remote>>) -> LoopExit {
    let lp = match options.build() {
        Ok(lp) => lp,
        Err(e) => {
            let _ = tx.send(Err(e));
            return LoopExit::default();
        }
    };
    let held = Rc::new(Held::default());
    HELD.with(|h| *h.borrow_mut() = Some(held.clone()));
    let _ = tx.send(Ok(lp.remote()));
    let result = lp.run_forever();
    let stats = lp.stats();
    HELD.with(|h| h.borrow_mut().take());
    let exit = LoopExit {
        stats,
        aborted: held.aborted.get(),
        shut_down: held.shut_down.get(),
        error: result.err().map(|e| e.to_string()),
    };
    drop(held);
    // Closing releases what is left: connections (their protocols), the
    // poller and its waker.
    drop(lp);
    exit
}

/// A call sent to a loop, waiting for its answer.
type Pending<R> = Result<mpsc::Receiver<Result<R, LoopError>>, LoopError>;

/// Sends `f` to run on the loop of `remote`; wait with [`wait_call`].
fn send_call<R, F>(remote: &Remote, f: F) -> Pending<R>
where
    F: FnOnce(&LoopHandle) -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    remote
        .call_soon(move || {
            let Some(lp) = get_running_loop() else {
                return;
            };
            let r = catch_unwind(AssertUnwindSafe(|| f(&lp)))
                .map_err(|p| LoopError::Panicked(panic_message(&*p)));
            let _ = tx.send(r);
        })
        .map_err(|_| LoopError::Stopped)?;
    Ok(rx)
}

/// Sends `f` to the loop of `remote`, which runs the future it returns as
/// a task; wait with [`wait_call`].
fn send_async<R, F, Fut>(remote: &Remote, f: F) -> Pending<R>
where
    F: FnOnce(LoopHandle) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<R>> + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    remote
        .call_soon(move || {
            let Some(lp) = get_running_loop() else {
                return;
            };
            let fut = match catch_unwind(AssertUnwindSafe(|| f(lp.clone()))) {
                Ok(fut) => fut,
                Err(p) => {
                    let _ = tx.send(Err(LoopError::Panicked(panic_message(&*p))));
                    return;
                }
            };
            lp.spawn_local(async move {
                let _ = tx.send(fut.await.map_err(LoopError::Failed));
            })
            .detach();
        })
        .map_err(|_| LoopError::Stopped)?;
    Ok(rx)
}

/// The answer of a call; `Stopped` if the loop dropped it unrun.
fn wait_call<R>(pending: Pending<R>) -> Result<R, LoopError> {
    pending?.recv().unwrap_or(Err(LoopError::Stopped))
}
