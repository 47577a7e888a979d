//! `bridge::rt`: the `Send + Sync` timer (for hyper's `rt::Timer`) and the
//! local executor (for hyper's `rt::Executor`).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sloop::bridge::rt::{LocalExecutor, LoopTimer, SendSleep};
use sloop::EventLoop;

fn watchdog(lp: &EventLoop) -> sloop::TimerHandle {
    let h = lp.handle();
    lp.call_later(Duration::from_secs(10), move || h.stop())
        .unwrap()
}

#[test]
fn send_sleep_and_timer_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SendSleep>();
    assert_send_sync::<LoopTimer>();
}

#[test]
fn sleep_in_a_task_completes_no_earlier_than_its_deadline() {
    let lp = EventLoop::new().unwrap();
    let dog = watchdog(&lp);
    let timer = LoopTimer::new(lp.remote());
    let start = Instant::now();
    let sleep = timer.sleep(Duration::from_millis(20));
    let deadline = sleep.deadline();
    let task = lp.spawn_local(async move {
        sleep.await;
        Instant::now()
    });
    let done = lp.run_until_complete(task).unwrap().unwrap();
    dog.cancel();
    assert!(done >= deadline);
    assert!(start.elapsed() >= Duration::from_millis(20));
}

#[test]
fn sleep_polled_on_another_thread_is_armed_through_the_remote() {
    let lp = EventLoop::new().unwrap();
    let dog = watchdog(&lp);
    let timer = LoopTimer::new(lp.remote());
    let remote = lp.remote();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let sleep = timer.sleep(Duration::from_millis(20));
        let deadline = sleep.deadline();
        futures::executor::block_on(sleep);
        tx.send(Instant::now() >= deadline).unwrap();
        remote.stop().unwrap();
    });
    lp.run_forever().unwrap();
    dog.cancel();
    worker.join().unwrap();
    assert!(rx.try_recv().expect("the sleep never completed"));
}

#[test]
fn sleeps_complete_in_deadline_order() {
    let lp = EventLoop::new().unwrap();
    let dog = watchdog(&lp);
    let timer = LoopTimer::new(lp.remote());
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let tasks: Vec<_> = [15u64, 5, 10]
        .into_iter()
        .map(|ms| {
            let sleep = timer.sleep(Duration::from_millis(ms));
            let order = order.clone();
            lp.spawn_local(async move {
                sleep.await;
                order.borrow_mut().push(ms);
            })
        })
        .collect();
    lp.run_until_complete(futures::future::join_all(tasks))
        .unwrap();
    dog.cancel();
    assert_eq!(*order.borrow(), [5, 10, 15]);
}

#[test]
fn reset_moves_an_armed_sleep() {
    let lp = EventLoop::new().unwrap();
    let dog = watchdog(&lp);
    let timer = LoopTimer::new(lp.remote());
    lp.run_until_complete(async {
        let mut sleep = Box::pin(timer.sleep(Duration::from_secs(3600)));
        // Armed for an hour...
        let first =
            futures::future::poll_fn(|cx| std::task::Poll::Ready(sleep.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // ...then moved to 10 ms from now: completes then, not in an hour.
        let new_deadline = Instant::now() + Duration::from_millis(10);
        sleep.as_mut().reset(new_deadline);
        assert_eq!(sleep.deadline(), new_deadline);
        sleep.as_mut().await;
        assert!(Instant::now() >= new_deadline);
        assert!(sleep.is_elapsed());
    })
    .expect("the reset sleep did not complete");
    dog.cancel();
}

#[test]
fn local_executor_runs_non_send_futures() {
    let lp = EventLoop::new().unwrap();
    let exec = LocalExecutor::new(lp.handle());
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let h = lp.handle();
    exec.execute(async move {
        flag.set(true);
        h.stop();
    });
    lp.run_forever().unwrap();
    assert!(ran.get());
}
