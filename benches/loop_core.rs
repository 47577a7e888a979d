//! Micro-benchmarks of the loop core, each next to the closest tokio
//! `current_thread` equivalent so the figures sit side by side.
//!
//! Run with `cargo bench --bench loop_core`. Every group measures one piece
//! of work (the same on both sides) per iteration; criterion reports time
//! per iteration and the throughput in elements.
//!
//! - `call_soon`: schedule N callbacks and run them all.
//! - `timers_cancel`: arm 1M timers with varied delays, cancel them all,
//!   and let the timer structure drop them.
//! - `spawn_await`: spawn 100k tiny tasks from a future and await them all.
//! - `remote_call_soon`: 4 threads × 25k thread-safe calls into a running
//!   loop, until all are delivered.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CALLS: usize = 100_000;
const TIMERS: usize = 1_000_000;
const TASKS: usize = 100_000;
const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 25_000;

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// A varied delay: timers spread over the heap/wheel instead of all
/// landing on one deadline.
fn delay(i: usize) -> Duration {
    Duration::from_micros(1_000 + (i as u64 * 7919) % 10_000_000)
}

fn call_soon(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_soon");
    g.throughput(Throughput::Elements(CALLS as u64));

    let lp = sloop::EventLoop::new().expect("loop");
    g.bench_function(BenchmarkId::new("sloop", CALLS), |b| {
        b.iter(|| {
            let count = Rc::new(Cell::new(0usize));
            for _ in 0..CALLS - 1 {
                let count = count.clone();
                lp.call_soon(move || count.set(count.get() + 1))
                    .expect("open");
            }
            let h = lp.handle();
            let last = count.clone();
            lp.call_soon(move || {
                last.set(last.get() + 1);
                h.stop();
            })
            .expect("open");
            lp.run_forever().expect("run");
            assert_eq!(count.get(), CALLS);
        })
    });

    // tokio has no bare "run this closure soon" on its runtime: the
    // closest analogue of a non-Send `call_soon` callback is a trivial
    // `spawn_local` task on a LocalSet (one allocation, one FIFO queue
    // push, one poll). `spawn` on the current_thread runtime would need
    // Send closures and goes through the same kind of task allocation, so
    // spawn_local is the fair pick. The tasks are spawned from inside the
    // LocalSet (its fast, unsynchronised local queue; spawning from outside
    // goes through a mutex-protected queue), and their JoinHandles are dropped, as a call_soon Handle is dropped here;
    // the last task signals the end.
    let rt = tokio_rt();
    g.bench_function(BenchmarkId::new("tokio", CALLS), |b| {
        b.iter(|| {
            let local = tokio::task::LocalSet::new();
            let count = Rc::new(Cell::new(0usize));
            local.block_on(&rt, async {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                for _ in 0..CALLS - 1 {
                    let count = count.clone();
                    drop(tokio::task::spawn_local(async move {
                        count.set(count.get() + 1)
                    }));
                }
                let last = count.clone();
                drop(tokio::task::spawn_local(async move {
                    last.set(last.get() + 1);
                    let _ = tx.send(());
                }));
                rx.await.expect("sent");
            });
            assert_eq!(count.get(), CALLS);
        })
    });

    // For reference, the same with `tokio::spawn` on the current_thread
    // runtime (Send tasks, an atomic counter).
    g.bench_function(BenchmarkId::new("tokio_spawn", CALLS), |b| {
        b.iter(|| {
            let count = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                for _ in 0..CALLS - 1 {
                    let count = count.clone();
                    drop(tokio::spawn(async move {
                        count.fetch_add(1, Ordering::Relaxed);
                    }));
                }
                let last = count.clone();
                drop(tokio::spawn(async move {
                    last.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(());
                }));
                rx.await.expect("sent");
            });
            assert_eq!(count.load(Ordering::Relaxed), CALLS);
        })
    });
    g.finish();
}

/// Polls a future once with a waker that does nothing.
struct PollOnce<'a, F>(&'a mut Pin<Box<F>>);

impl<F: Future> Future for PollOnce<'_, F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _ = self.0.as_mut().poll(&mut cx);
        Poll::Ready(())
    }
}

fn timers_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers_cancel");
    g.throughput(Throughput::Elements(TIMERS as u64));

    // call_later ×1M, cancel each, then one iteration: step 1 of the
    // iteration sees more than half cancelled and rebuilds the heap empty.
    let lp = sloop::EventLoop::new().expect("loop");
    g.bench_function(BenchmarkId::new("sloop", TIMERS), |b| {
        b.iter(|| {
            let handles: Vec<_> = (0..TIMERS)
                .map(|i| lp.call_later(delay(i), || {}).expect("open"))
                .collect();
            for h in &handles {
                h.cancel();
            }
            drop(handles);
            lp.stop();
            lp.run_forever().expect("run");
        })
    });

    // tokio: a `sleep` is registered in the timer wheel on its first poll,
    // and dropping it deregisters it (tokio's cancel). So: create 1M sleeps
    // with the same delays, poll each once inside the runtime (registers),
    // drop them all (cancels), and yield once so the driver turns. The
    // sleeps are boxed because `Sleep` is !Unpin and must stay put after
    // its first poll; sloop's call_later allocates its handle too.
    let rt = tokio_rt();
    g.bench_function(BenchmarkId::new("tokio", TIMERS), |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut sleeps: Vec<_> = (0..TIMERS)
                    .map(|i| Box::pin(tokio::time::sleep(delay(i))))
                    .collect();
                for s in &mut sleeps {
                    PollOnce(s).await;
                }
                drop(sleeps);
                tokio::task::yield_now().await;
            })
        })
    });
    g.finish();
}

fn spawn_await(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_await");
    g.throughput(Throughput::Elements(TASKS as u64));

    let lp = sloop::EventLoop::new().expect("loop");
    g.bench_function(BenchmarkId::new("sloop", TASKS), |b| {
        b.iter(|| {
            let h = lp.handle();
            let sum = lp
                .run_until_complete(async move {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|i| h.spawn_local(async move { i }))
                        .collect();
                    let mut sum = 0usize;
                    for t in tasks {
                        sum += t.await.expect("ran");
                    }
                    sum
                })
                .expect("run");
            assert_eq!(sum, TASKS * (TASKS - 1) / 2);
        })
    });

    let rt = tokio_rt();
    g.bench_function(BenchmarkId::new("tokio", TASKS), |b| {
        b.iter(|| {
            let local = tokio::task::LocalSet::new();
            let sum = local.block_on(&rt, async {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|i| tokio::task::spawn_local(async move { i }))
                    .collect();
                let mut sum = 0usize;
                for t in tasks {
                    sum += t.await.expect("ran");
                }
                sum
            });
            assert_eq!(sum, TASKS * (TASKS - 1) / 2);
        })
    });
    g.finish();
}

fn remote_call_soon(c: &mut Criterion) {
    let total = THREADS * CALLS_PER_THREAD;
    let mut g = c.benchmark_group("remote_call_soon");
    g.throughput(Throughput::Elements(total as u64));

    // Senders are scoped threads started inside the measured iteration, on
    // both sides alike; the loop runs until the last call has arrived.
    let lp = sloop::EventLoop::new().expect("loop");
    g.bench_function(BenchmarkId::new("sloop", total), |b| {
        b.iter(|| {
            let count = Arc::new(AtomicUsize::new(0));
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let remote = lp.remote();
                    let count = count.clone();
                    s.spawn(move || {
                        for _ in 0..CALLS_PER_THREAD {
                            let count = count.clone();
                            remote
                                .call_soon(move || {
                                    if count.fetch_add(1, Ordering::Relaxed) + 1 == total {
                                        sloop::get_running_loop().expect("on loop").stop();
                                    }
                                })
                                .expect("open");
                        }
                    });
                }
                lp.run_forever().expect("run");
            });
            assert_eq!(count.load(Ordering::Relaxed), total);
        })
    });

    // tokio, two ways. `Handle::spawn` from other threads is what a tokio
    // user writes to run something on a current_thread runtime (a task per
    // call: allocation + the runtime's inject queue + unpark). An unbounded
    // mpsc of boxed closures drained by one task is what sloop's Remote
    // does internally (a locked queue of boxed callbacks + one wakeup), so
    // it is the like-for-like mechanism; both are shown.
    let rt = tokio_rt();
    g.bench_function(BenchmarkId::new("tokio_handle_spawn", total), |b| {
        b.iter(|| {
            let count = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(tokio::sync::Notify::new());
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let handle = rt.handle().clone();
                    let count = count.clone();
                    let done = done.clone();
                    s.spawn(move || {
                        for _ in 0..CALLS_PER_THREAD {
                            let count = count.clone();
                            let done = done.clone();
                            drop(handle.spawn(async move {
                                if count.fetch_add(1, Ordering::Relaxed) + 1 == total {
                                    done.notify_one();
                                }
                            }));
                        }
                    });
                }
                rt.block_on(done.notified());
            });
            assert_eq!(count.load(Ordering::Relaxed), total);
        })
    });

    type Job = Box<dyn FnOnce() -> bool + Send>;
    g.bench_function(BenchmarkId::new("tokio_mpsc", total), |b| {
        b.iter(|| {
            let count = Arc::new(AtomicUsize::new(0));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let tx = tx.clone();
                    let count = count.clone();
                    s.spawn(move || {
                        for _ in 0..CALLS_PER_THREAD {
                            let count = count.clone();
                            let job: Job = Box::new(move || {
                                count.fetch_add(1, Ordering::Relaxed) + 1 == total
                            });
                            tx.send(job).expect("open");
                        }
                    });
                }
                rt.block_on(async {
                    while let Some(job) = rx.recv().await {
                        if job() {
                            break;
                        }
                    }
                });
            });
            assert_eq!(count.load(Ordering::Relaxed), total);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = call_soon, timers_cancel, spawn_await, remote_call_soon
}
criterion_main!(benches);
