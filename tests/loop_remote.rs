//! Remote: call_soon from other threads (asyncio's call_soon_threadsafe),
//! stop, spawn, and behaviour once the loop is closed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use sloop::{Error, EventLoop};

fn new_loop() -> EventLoop {
    EventLoop::builder().propagate_panics(true).build().unwrap()
}

#[test]
fn eight_threads_times_ten_thousand_calls_are_each_delivered_once_in_order() {
    const THREADS: usize = 8;
    const CALLS: usize = 10_000;
    let lp = new_loop();
    // Per thread, the sequence numbers seen on the loop, in arrival order.
    let (tx, rx) = mpsc::channel::<(usize, usize)>();
    let seen = Rc::new(RefCell::new(vec![Vec::new(); THREADS]));
    let remaining = Arc::new(AtomicUsize::new(THREADS * CALLS));
    let barrier = Arc::new(Barrier::new(THREADS));
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let remote = lp.remote();
        let (tx, remaining, barrier) = (tx.clone(), remaining.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            for i in 0..CALLS {
                let (tx, remaining, stopper) = (tx.clone(), remaining.clone(), remote.clone());
                remote
                    .call_soon(move || {
                        tx.send((t, i)).unwrap();
                        if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                            stopper.stop().unwrap();
                        }
                    })
                    .unwrap();
            }
        }));
    }
    drop(tx);
    lp.run_forever().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    for (t, i) in rx.try_iter() {
        seen.borrow_mut()[t].push(i);
    }
    for (t, calls) in seen.borrow().iter().enumerate() {
        assert_eq!(calls.len(), CALLS, "thread {t}: every call exactly once");
        assert!(
            calls.windows(2).all(|w| w[0] + 1 == w[1]),
            "thread {t}: in order"
        );
    }
}

#[test]
fn a_remote_call_wakes_a_sleeping_loop() {
    let lp = new_loop();
    let remote = lp.remote();
    // Nothing else is scheduled: without the wake the loop would block forever.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        remote.call_soon(|| {}).unwrap();
        remote.stop().unwrap();
    });
    lp.run_forever().unwrap();
    t.join().unwrap();
}

#[test]
fn same_thread_remote_calls_keep_fifo_order_with_call_soon() {
    let lp = new_loop();
    let (tx, rx) = mpsc::channel();
    let (h, remote) = (lp.handle(), lp.remote());
    lp.call_soon(move || {
        let t = tx.clone();
        h.call_soon(move || t.send(1).unwrap()).unwrap();
        let t = tx.clone();
        remote.call_soon(move || t.send(2).unwrap()).unwrap();
        let t = tx.clone();
        h.call_soon(move || t.send(3).unwrap()).unwrap();
        let h2 = h.clone();
        h.call_soon(move || h2.stop()).unwrap();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn remote_spawn_runs_a_send_future_and_returns_its_output() {
    let lp = new_loop();
    let remote = lp.remote();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let task = remote
            .spawn(async {
                yield_now().await;
                21 * 2
            })
            .unwrap();
        tx.send(futures::executor::block_on(task).unwrap()).unwrap();
        remote.stop().unwrap();
    });
    lp.run_forever().unwrap();
    t.join().unwrap();
    assert_eq!(rx.recv().unwrap(), 42);
}

#[test]
fn spawn_trait_from_another_thread() {
    use futures::task::SpawnExt;
    let lp = new_loop();
    let remote = lp.remote();
    let stopper = lp.remote();
    std::thread::spawn(move || {
        SpawnExt::spawn(&remote, async move {
            stopper.stop().unwrap();
        })
        .unwrap();
    })
    .join()
    .unwrap();
    lp.run_forever().unwrap();
}

#[test]
fn a_remote_after_close_returns_closed_and_never_panics() {
    // R32, M14.
    let lp = new_loop();
    let remote = lp.remote();
    drop(lp);
    assert!(remote.is_closed());
    assert!(matches!(remote.call_soon(|| {}), Err(Error::Closed)));
    assert!(matches!(remote.stop(), Err(Error::Closed)));
    assert!(matches!(remote.spawn(async {}), Err(Error::Closed)));
    use futures::task::SpawnExt;
    assert!(SpawnExt::spawn(&remote, async {}).is_err());
    // From other threads, racing with nothing: same answer.
    let r = remote.clone();
    let errs = std::thread::spawn(move || (0..100).filter(|_| r.call_soon(|| {}).is_err()).count())
        .join()
        .unwrap();
    assert_eq!(errs, 100);
}

#[test]
fn remote_calls_racing_with_close_either_run_or_are_refused() {
    // bpo-44508: the check and the enqueue are atomic.
    for _ in 0..20 {
        let lp = new_loop();
        let remote = lp.remote();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let t = std::thread::spawn(move || {
            let mut accepted = 0;
            for _ in 0..1000 {
                let r = r.clone();
                if remote
                    .call_soon(move || {
                        r.fetch_add(1, Ordering::SeqCst);
                    })
                    .is_ok()
                {
                    accepted += 1;
                }
            }
            accepted
        });
        lp.stop();
        lp.run_forever().unwrap();
        lp.close().unwrap();
        let accepted = t.join().unwrap();
        assert!(ran.load(Ordering::SeqCst) <= accepted);
    }
}

/// Returns Pending once, waking itself: a Send way to go round the loop.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}
