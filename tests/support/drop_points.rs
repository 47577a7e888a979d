//! Drop or cancel a future at every point of its life (docs/design.md D15,
//! issue 16): poll it exactly k times (k = 0, 1, 2, … until it completes),
//! drop it, run the loop a little, and check that nothing leaked.
//!
//! What "nothing leaked" means is [`Baseline`]: the process's open fds,
//! the waker the future was polled with (nobody keeps it), no spin (this
//! thread's CPU time while the loop runs for 100 ms), and no report to the
//! loop's exception handler. The loop's own tables (transports, timers,
//! tasks, registrations) are compared through [`LoopTables`], read from
//! `LoopHandle::stats()`.
//!
//! fds are counted process-wide, so a binary using this must run its tests
//! one at a time: each takes [`serial`] first, and the binary holds only
//! such tests.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use sloop::{EventLoop, LoopHandle};

/// Serialises the tests of one binary (fd counts are process-wide).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's open fds (the directory read itself is one, on both sides
/// of a comparison).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel always supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// How long the no-spin check runs the loop, and the CPU it may use.
pub const SPIN_WINDOW: Duration = Duration::from_millis(100);
pub const SPIN_BUDGET: Duration = Duration::from_millis(10);

/// Runs `lp` for [`SPIN_WINDOW`] and asserts this thread used less than
/// [`SPIN_BUDGET`] of CPU: an idle loop blocks in poll, a spinning one
/// burns the whole window.
pub fn assert_no_spin(lp: &EventLoop, what: &str) {
    let before = thread_cpu_time();
    lp.run_until_complete(sloop::sleep(SPIN_WINDOW)).unwrap();
    let used = thread_cpu_time() - before;
    assert!(
        used < SPIN_BUDGET,
        "{what}: the loop used {used:?} of CPU in {SPIN_WINDOW:?} (spinning)"
    );
}

/// Runs `n` loop iterations: each step yields once, so the callbacks that
/// a drop scheduled (deferred closes, connection_lost) run.
pub fn settle(lp: &EventLoop, n: usize) {
    lp.run_until_complete(async {
        for _ in 0..n {
            yield_now().await;
        }
    })
    .unwrap();
}

/// Yields to the loop once.
pub async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The loop's own tables, compared before and after: what
/// `LoopHandle::stats()` says the loop holds. Not its registered fds: a
/// raw reader or writer cancelled through its `Handle` keeps its
/// registration until its fd's next event (docs/design.md D3), and the
/// process's fds are checked apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoopTables {
    pub transports: [usize; 4],
    pub servers: usize,
    pub listeners: usize,
    pub timers_live: usize,
    pub tasks: usize,
    pub ready: usize,
    pub write_buffered: usize,
    pub paused: (usize, usize),
}

/// Snapshots `lp`'s tables from its statistics.
pub fn loop_tables(lp: &LoopHandle) -> LoopTables {
    let s = lp.stats();
    LoopTables {
        transports: [
            s.transports.tcp,
            s.transports.unix,
            s.transports.udp,
            s.transports.unix_datagram,
        ],
        servers: s.servers,
        listeners: s.listeners,
        timers_live: s.timers_live,
        tasks: s.tasks,
        ready: s.ready,
        write_buffered: s.write_buffered,
        paused: (s.paused_reading, s.paused_writing),
    }
}

/// What must be back after a drop.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub fds: usize,
    pub tables: LoopTables,
}

impl Baseline {
    pub fn take(lp: &EventLoop) -> Baseline {
        Baseline {
            fds: open_fds(),
            tables: loop_tables(&lp.handle()),
        }
    }

    /// Asserts `lp` and the process are back at this baseline.
    pub fn assert_back(&self, lp: &EventLoop, what: &str) {
        assert_eq!(open_fds(), self.fds, "{what}: fds leaked");
        assert_eq!(
            loop_tables(&lp.handle()),
            self.tables,
            "{what}: loop tables differ from the baseline"
        );
    }
}

/// A waker that counts its wakes; `Arc::strong_count` on it says whether
/// anything still holds it.
#[derive(Default)]
pub struct WakeRecord {
    pub wakes: AtomicUsize,
    parent: Mutex<Option<Waker>>,
}

impl Wake for WakeRecord {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = self.parent.lock().unwrap().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// How a point ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Dropped pending after this many polls.
    Dropped,
    /// Completed at this poll (1-based): the last point.
    Completed(usize),
}

/// Polls `fut` exactly `polls` times (each poll after the previous one's
/// wake), then drops it, in the same loop iteration as the last poll; with
/// `at_wake`, waits for the next wake after the last poll and drops it
/// then, unpolled. Returns when it completed first.
pub async fn poll_k_then_drop<F: Future>(
    fut: F,
    polls: usize,
    at_wake: bool,
    record: Arc<WakeRecord>,
) -> Point {
    let mut fut = Box::pin(fut);
    let waker = Waker::from(record.clone());
    let mut done = 0;
    let mut seen = usize::MAX; // wakes seen at the last poll; MAX: poll now
    let point = futures::future::poll_fn(|cx| {
        *record.parent.lock().unwrap() = Some(cx.waker().clone());
        let wakes = record.wakes.load(Ordering::SeqCst);
        if seen == usize::MAX || wakes != seen {
            if done == polls && (!at_wake || seen != usize::MAX) {
                return Poll::Ready(Point::Dropped);
            }
            seen = wakes;
            if let Poll::Ready(out) = Pin::as_mut(&mut fut).poll(&mut Context::from_waker(&waker)) {
                drop(out);
                return Poll::Ready(Point::Completed(done + 1));
            }
            done += 1;
            if done == polls && !at_wake {
                return Poll::Ready(Point::Dropped);
            }
        }
        Poll::Pending
    })
    .await;
    drop(fut);
    *record.parent.lock().unwrap() = None;
    point
}

/// The most polls tried before giving up on a future that never completes.
pub const MAX_POLLS: usize = 64;

/// Drops the future `make()` returns after k = 0, 1, 2, … polls (and, for
/// each k > 0, at the wake after poll k), until a k at which it completes;
/// after each drop checks [`Baseline`], the waker, spin and the exception
/// handler. `make` builds everything the future needs (peers included) so
/// that dropping it frees them all. Returns the number of polls the
/// future took to complete.
pub fn drop_at_every_point<F, Fut>(lp: &EventLoop, name: &str, mut make: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: IntoFuture,
{
    let reports = Arc::new(Mutex::new(Vec::<String>::new()));
    let r = reports.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, c: &sloop::ExceptionContext| {
        r.lock().unwrap().push(c.message.clone())
    }));
    // Anything the loop set up lazily (its read buffer, the DNS pool) is
    // made once before the first baseline.
    settle(lp, 2);
    for polls in 0..=MAX_POLLS {
        for at_wake in [false, true] {
            if polls == 0 && at_wake {
                continue;
            }
            let what = format!(
                "{name}: dropped after {polls} polls{}",
                if at_wake { " at the next wake" } else { "" }
            );
            let base = Baseline::take(lp);
            let record = Arc::new(WakeRecord::default());
            let fut = make().into_future();
            let point = lp
                .run_until_complete(sloop::timeout(
                    super::SAFETY,
                    poll_k_then_drop(fut, polls, at_wake, record.clone()),
                ))
                .unwrap()
                .unwrap_or_else(|_| panic!("{what}: timed out"));
            settle(lp, 4);
            assert_no_spin(lp, &what);
            base.assert_back(lp, &what);
            assert_eq!(
                Arc::strong_count(&record),
                1,
                "{what}: something still holds the future's waker"
            );
            let reported = std::mem::take(&mut *reports.lock().unwrap());
            assert!(reported.is_empty(), "{what}: reported {reported:?}");
            if let Point::Completed(n) = point {
                return n;
            }
        }
    }
    panic!("{name}: not complete after {MAX_POLLS} polls");
}
