//! call_later / call_at: order, cancellation, deadlines in the past, never
//! early, huge delays, heap compaction, and no busy loop on tiny timeouts.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sloop::EventLoop;

fn new_loop() -> EventLoop {
    EventLoop::builder().propagate_panics(true).build().unwrap()
}

type Log = Rc<RefCell<Vec<u32>>>;

fn record(log: &Log, n: u32) -> impl FnOnce() + 'static {
    let log = log.clone();
    move || log.borrow_mut().push(n)
}

#[test]
fn timers_run_in_deadline_order_then_scheduling_order() {
    let lp = new_loop();
    let seen: Log = Rc::default();
    let base = lp.time() + Duration::from_millis(5);
    lp.call_at(base + Duration::from_millis(2), record(&seen, 3))
        .unwrap();
    lp.call_at(base, record(&seen, 1)).unwrap();
    lp.call_at(base, record(&seen, 2)).unwrap(); // same deadline: FIFO
    lp.call_later(Duration::ZERO, record(&seen, 0)).unwrap();
    let h = lp.handle();
    lp.call_at(base + Duration::from_millis(3), move || h.stop())
        .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), [0, 1, 2, 3]);
}

#[test]
fn call_soon_runs_before_a_zero_delay_timer_scheduled_after_it_is_due() {
    // A due timer joins the ready queue after the callbacks already in it.
    let lp = new_loop();
    let seen: Log = Rc::default();
    lp.call_later(Duration::ZERO, record(&seen, 2)).unwrap();
    lp.call_soon(record(&seen, 1)).unwrap();
    let h = lp.handle();
    lp.call_later(Duration::from_millis(1), move || h.stop())
        .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), [1, 2]);
}

#[test]
fn a_deadline_in_the_past_runs_in_the_next_iteration_earliest_first() {
    // asyncio's test_call_later_negative_delays: -1 'a', -2 'b' run b then a.
    let lp = new_loop();
    let seen: Log = Rc::default();
    let now = lp.time();
    lp.call_at(now - Duration::from_secs(1), record(&seen, 1))
        .unwrap();
    lp.call_at(now - Duration::from_secs(2), record(&seen, 2))
        .unwrap();
    lp.stop();
    lp.run_forever().unwrap(); // exactly one iteration
    assert_eq!(*seen.borrow(), [2, 1]);
}

#[test]
fn cancel_before_due_and_after_it_ran() {
    let lp = new_loop();
    let seen: Log = Rc::default();
    let cancelled = lp
        .call_later(Duration::from_millis(1), record(&seen, 1))
        .unwrap();
    let ran = lp.call_later(Duration::ZERO, record(&seen, 2)).unwrap();
    cancelled.cancel();
    assert!(cancelled.cancelled());
    let h = lp.handle();
    lp.call_later(Duration::from_millis(3), move || h.stop())
        .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), [2]);
    let when = ran.when();
    ran.cancel(); // after it ran: harmless
    assert!(ran.cancelled());
    assert_eq!(
        ran.when(),
        when,
        "when() is unchanged after the timer fired"
    );
}

#[test]
fn cancelling_frees_the_callback_at_once() {
    let lp = new_loop();
    let token = Rc::new(());
    let t = token.clone();
    let timer = lp
        .call_later(Duration::from_secs(3600), move || drop(t))
        .unwrap();
    assert_eq!(Rc::strong_count(&token), 2);
    timer.cancel();
    assert_eq!(Rc::strong_count(&token), 1);
}

#[test]
fn a_timer_never_fires_early() {
    let lp = new_loop();
    let fired_at = Rc::new(RefCell::new(Vec::new()));
    let mut deadlines = Vec::new();
    for us in [1u64, 10, 100, 500, 1000, 1500, 2500] {
        let when = lp.time() + Duration::from_micros(us);
        deadlines.push(when);
        let f = fired_at.clone();
        lp.call_at(when, move || f.borrow_mut().push(Instant::now()))
            .unwrap();
    }
    let h = lp.handle();
    lp.call_later(Duration::from_millis(4), move || h.stop())
        .unwrap();
    lp.run_forever().unwrap();
    let fired = fired_at.borrow();
    assert_eq!(fired.len(), deadlines.len());
    for (at, when) in fired.iter().zip(&deadlines) {
        assert!(at >= when, "fired {:?} early", *when - *at);
    }
}

#[test]
fn huge_delays_are_accepted_and_cancellable() {
    let lp = new_loop();
    let seen: Log = Rc::default();
    let huge = [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(1 << 55),
    ];
    let timers: Vec<_> = huge
        .iter()
        .map(|d| lp.call_later(*d, record(&seen, 9)).unwrap())
        .collect();
    lp.stop();
    lp.run_forever().unwrap();
    for t in &timers {
        t.cancel();
    }
    assert!(seen.borrow().is_empty());
}

#[test]
fn tiny_timeouts_do_not_busy_loop() {
    // asyncio's test_timeout_rounding: a few short sleeps take few iterations.
    let lp = new_loop();
    let before = lp.iteration_count();
    lp.run_until_complete(async {
        for _ in 0..3 {
            sloop::sleep(Duration::from_micros(100)).await;
            sloop::sleep(Duration::from_millis(1)).await;
        }
    })
    .unwrap();
    let iterations = lp.iteration_count() - before;
    assert!(iterations <= 20, "{iterations} iterations for 6 sleeps");
}

#[test]
fn the_heap_is_compacted_when_most_timers_are_cancelled() {
    // asyncio's rule (test__run_once_cancelled_event_cleanup): rebuilt only
    // past 100 timers with more than half cancelled; else only the head.
    let lp = new_loop();
    let live: Vec<_> = (0..50)
        .map(|i| lp.call_later(Duration::from_secs(3600 + i), || {}).unwrap())
        .collect();
    let doomed: Vec<_> = (0..60)
        .map(|i| lp.call_later(Duration::from_secs(7200 + i), || {}).unwrap())
        .collect();
    for t in &doomed {
        t.cancel();
    }
    assert_eq!(lp.timer_count(), 110);
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.timer_count(), 50, "110 timers, 60 cancelled: rebuilt");

    // Below the threshold only cancelled timers at the head go.
    let head = lp.call_later(Duration::from_secs(1), || {}).unwrap();
    head.cancel();
    live[49].cancel(); // in the middle of the heap, stays
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.timer_count(), 50);
}

#[test]
fn a_million_cancelled_timers_leave_the_heap_small() {
    // R33: timer churn compacts.
    let lp = new_loop();
    for i in 0..1_000_000u64 {
        let t = lp
            .call_later(Duration::from_secs(3600 + i % 1000), || {})
            .unwrap();
        t.cancel();
    }
    let keep: Vec<_> = (0..10)
        .map(|_| lp.call_later(Duration::from_secs(60), || {}).unwrap())
        .collect();
    lp.stop();
    lp.run_forever().unwrap();
    assert!(
        lp.timer_count() <= 100.max(2 * keep.len()),
        "{} timers left",
        lp.timer_count()
    );
}

#[test]
fn sleep_timeout_and_interval() {
    let lp = new_loop();
    lp.run_until_complete(async {
        let start = Instant::now();
        sloop::sleep(Duration::from_millis(3)).await;
        assert!(start.elapsed() >= Duration::from_millis(3));

        let fast = sloop::timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(fast, Ok(7));
        let slow = sloop::timeout(
            Duration::from_millis(2),
            sloop::sleep(Duration::from_secs(60)),
        )
        .await;
        assert!(slow.is_err());
        assert_eq!(slow.unwrap_err().to_string(), "deadline has elapsed");

        let mut every = sloop::interval(Duration::from_millis(2));
        let first = every.tick().await;
        let second = every.tick().await;
        let third = every.tick().await;
        // Ticks are scheduled times: whole periods apart (a tick missed
        // because the machine was busy is skipped, not bunched).
        for gap in [second - first, third - second] {
            assert!(gap >= Duration::from_millis(2));
            assert_eq!(
                gap.as_nanos() % Duration::from_millis(2).as_nanos(),
                0,
                "{gap:?}"
            );
        }
        assert!(Instant::now() >= third);
    })
    .unwrap();
    assert_eq!(lp.timer_count(), 0, "every timer cancelled or fired");
}

#[test]
fn dropping_a_sleep_cancels_its_timer() {
    let lp = new_loop();
    lp.run_until_complete(async {
        let h = sloop::get_running_loop().unwrap();
        let long = sloop::sleep(Duration::from_secs(3600));
        // Poll it once so it registers its timer, then drop it.
        let _ = sloop::timeout(Duration::from_millis(1), long).await;
        h.call_soon(|| {}).unwrap();
    })
    .unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.timer_count(), 0);
}
