//! Tasks: spawn_local and await, cancel, detach, wakes from other threads,
//! the LocalSpawn/Spawn traits.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::task::LocalSpawnExt;
use sloop::{EventLoop, TaskError};

fn new_loop() -> EventLoop {
    EventLoop::builder().propagate_panics(true).build().unwrap()
}

#[test]
fn spawn_local_and_await_many_tasks() {
    let lp = new_loop();
    let h = lp.handle();
    let sum = lp
        .run_until_complete(async move {
            let tasks: Vec<_> = (0..1000u64)
                .map(|i| h.spawn_local(async move { i }))
                .collect();
            let mut sum = 0;
            for t in tasks {
                sum += t.await.unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(sum, 999 * 1000 / 2);
    assert_eq!(lp.task_count(), 0);
}

#[test]
fn a_task_starts_in_the_next_iteration_not_inline() {
    let lp = new_loop();
    let started = Rc::new(Cell::new(false));
    let s = started.clone();
    let task = lp.spawn_local(async move { s.set(true) });
    assert!(!started.get());
    lp.run_until_complete(task).unwrap().unwrap();
    assert!(started.get());
}

#[test]
fn a_task_woken_from_another_thread_completes() {
    let lp = new_loop();
    let (tx, rx) = oneshot::channel::<u32>();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        tx.send(99).unwrap();
    });
    let task = lp.spawn_local(async move { rx.await.unwrap() });
    assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 99);
    t.join().unwrap();
}

#[test]
fn the_main_future_woken_from_another_thread_completes() {
    let lp = new_loop();
    let (tx, rx) = oneshot::channel::<&str>();
    let t = std::thread::spawn(move || tx.send("across threads").unwrap());
    assert_eq!(
        lp.run_until_complete(rx).unwrap().unwrap(),
        "across threads"
    );
    t.join().unwrap();
}

#[test]
fn cancel_drops_the_future_and_the_task_reports_cancelled() {
    let lp = new_loop();
    let dropped = Rc::new(Cell::new(false));
    struct OnDrop(Rc<Cell<bool>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let guard = OnDrop(dropped.clone());
    let task = lp.spawn_local(async move {
        let _guard = guard;
        sloop::sleep(Duration::from_secs(3600)).await;
    });
    let result = lp
        .run_until_complete(async {
            sloop::sleep(Duration::from_millis(1)).await;
            assert!(task.cancel());
            assert!(
                !dropped.get(),
                "dropped at the task's next turn, not inline"
            );
            task.await
        })
        .unwrap();
    assert!(matches!(result, Err(TaskError::Cancelled)));
    assert!(dropped.get());
    assert_eq!(
        lp.timer_count(),
        0,
        "the sleep's timer was cancelled with it"
    );
}

#[test]
fn cancel_after_completion_returns_false() {
    let lp = new_loop();
    let task = lp.spawn_local(async { 1 });
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    assert!(task.is_finished());
    assert!(!task.cancel());
    assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 1);
}

#[test]
fn a_task_can_cancel_itself() {
    let lp = new_loop();
    let slot: Rc<RefCell<Option<sloop::Task<()>>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let after = Rc::new(Cell::new(false));
    let a = after.clone();
    let task = lp.spawn_local(async move {
        s.borrow().as_ref().unwrap().cancel();
        sloop::sleep(Duration::ZERO).await;
        a.set(true);
    });
    *slot.borrow_mut() = Some(task);
    lp.run_until_complete(sloop::sleep(Duration::from_millis(2)))
        .unwrap();
    assert!(!after.get(), "cancelled when its poll returned");
    let task = slot.borrow_mut().take().unwrap();
    assert!(task.is_finished());
}

#[test]
fn a_detached_task_runs_to_completion() {
    let lp = new_loop();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    lp.spawn_local(async move {
        sloop::sleep(Duration::from_millis(1)).await;
        d.set(true);
    })
    .detach();
    lp.run_until_complete(sloop::sleep(Duration::from_millis(3)))
        .unwrap();
    assert!(done.get());
}

#[test]
fn closing_the_loop_cancels_pending_tasks() {
    let lp = new_loop();
    let task = lp.spawn_local(futures::future::pending::<()>());
    lp.stop();
    lp.run_forever().unwrap();
    lp.close().unwrap();
    assert!(task.is_finished());
    let out = futures::executor::block_on(task);
    assert!(matches!(out, Err(TaskError::Cancelled)));
}

#[test]
fn local_spawn_trait_works_for_crates_that_take_a_spawner() {
    let lp = new_loop();
    let (tx, rx) = mpsc::channel();
    let spawner = lp.handle();
    let handle = spawner
        .spawn_local_with_handle(async move {
            tx.send("spawned through LocalSpawn").unwrap();
            5
        })
        .unwrap();
    assert_eq!(lp.run_until_complete(handle).unwrap(), 5);
    assert_eq!(rx.recv().unwrap(), "spawned through LocalSpawn");
    lp.close().unwrap();
    assert!(
        LocalSpawnExt::spawn_local(&spawner, async {}).is_err(),
        "a closed loop refuses"
    );
}

#[test]
fn wakes_while_queued_poll_once() {
    // Waking a task many times before it runs polls it once.
    let lp = new_loop();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let task = lp.spawn_local(futures::future::poll_fn(move |cx| {
        p.set(p.get() + 1);
        if p.get() == 1 {
            for _ in 0..10 {
                cx.waker().wake_by_ref();
            }
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }));
    lp.run_until_complete(task).unwrap().unwrap();
    assert_eq!(polls.get(), 2);
}

#[test]
fn tasks_are_named_task_n_per_loop_unless_named() {
    let lp = new_loop();
    let a = lp.spawn_local(async {});
    let named = lp.spawn_local_named("worker", async {});
    let b = lp.spawn_local(async {});
    assert_eq!(a.name(), "Task-1");
    // As in asyncio, a given name does not use up a number.
    assert_eq!(named.name(), "worker");
    assert_eq!(b.name(), "Task-2");
    // The counter is the loop's: another loop starts at 1 again.
    let other = new_loop();
    assert_eq!(other.spawn_local(async {}).name(), "Task-1");
    for t in [a, named, b] {
        lp.run_until_complete(t).unwrap().unwrap();
    }
}

#[test]
fn a_task_name_shows_in_debug_and_can_be_changed_at_any_point() {
    let lp = new_loop();
    let (tx, rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let task = lp.spawn_local(async move {
        let _ = rx.await;
        let _ = done_tx.send(());
        7
    });
    let dbg = format!("{task:?}");
    assert!(dbg.contains("name: \"Task-1\""), "{dbg}");
    assert!(dbg.contains("loop_tasks.rs"), "{dbg}");
    // Before its first poll.
    task.set_name("first");
    assert_eq!(task.name(), "first");
    // While it waits.
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    assert!(!task.is_finished());
    task.set_name(String::from("second"));
    assert!(format!("{task:?}").contains("name: \"second\""));
    // After it finished (it finishes in the poll that sends `done`).
    tx.send(()).unwrap();
    lp.run_until_complete(done_rx).unwrap().unwrap();
    assert!(task.is_finished());
    task.set_name("third");
    assert_eq!(task.name(), "third");
    assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 7);
}

#[test]
fn a_cancelled_or_closed_loop_task_keeps_its_name() {
    let lp = new_loop();
    let task = lp.spawn_local_named("doomed", futures::future::pending::<()>());
    assert!(task.cancel());
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    assert!(task.is_finished());
    assert_eq!(task.name(), "doomed");
    assert!(format!("{task:?}").contains("\"doomed\""));

    lp.close().unwrap();
    let late = lp.spawn_local(async {});
    assert!(late.is_finished(), "a closed loop cancels at once");
    assert_eq!(late.name(), "Task-1");
    let late_named = lp.spawn_local_named("late", async {});
    assert_eq!(late_named.name(), "late");
}
