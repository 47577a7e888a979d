//! Wakers that arrive from another thread: an `async-io` `Timer` is driven
//! by async-io's own reactor thread, which calls our task's waker off the
//! loop thread. The wake must ring the loop's `mio::Waker` so a loop blocked
//! in poll (with nothing else to do) wakes up and polls the task.

use std::time::{Duration, Instant};

use sloop::EventLoop;

/// Fails the test instead of hanging if the wake never arrives.
fn watchdog(lp: &EventLoop) -> sloop::TimerHandle {
    let h = lp.handle();
    lp.call_later(Duration::from_secs(10), move || h.stop())
        .unwrap()
}

#[test]
fn async_io_timer_in_a_spawned_task_completes() {
    let lp = EventLoop::new().unwrap();
    let dog = watchdog(&lp);
    let task = lp.spawn_local(async {
        let start = Instant::now();
        async_io::Timer::after(Duration::from_millis(30)).await;
        start.elapsed()
    });
    let waited = lp
        .run_until_complete(task)
        .expect("the foreign wake never reached the loop")
        .unwrap();
    dog.cancel();
    // The loop slept in poll until the foreign wake rang it; it did not spin.
    assert!(
        lp.iteration_count() < 10,
        "{} iterations",
        lp.iteration_count()
    );
    assert!(waited >= Duration::from_millis(30), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn async_io_timers_in_run_until_complete_and_many_tasks() {
    let lp = EventLoop::new().unwrap();
    let dog = watchdog(&lp);
    let h = lp.handle();
    let total = lp
        .run_until_complete(async move {
            let tasks: Vec<_> = (1..=20u64)
                .map(|i| {
                    h.spawn_local(async move {
                        async_io::Timer::after(Duration::from_millis(i)).await;
                        i
                    })
                })
                .collect();
            // The main future itself also waits on a foreign waker.
            async_io::Timer::after(Duration::from_millis(5)).await;
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        })
        .expect("a foreign wake never reached the loop");
    dog.cancel();
    assert_eq!(total, (1..=20).sum::<u64>());
}
