//! call_soon ordering, stop/close/run rules, run_until_complete, and the
//! D2 rule: every public method works from inside a callback.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use sloop::{Error, EventLoop};

/// A loop whose callbacks' panics (failed asserts) fail the test.
fn new_loop() -> EventLoop {
    EventLoop::builder().propagate_panics(true).build().unwrap()
}

type Log = Rc<RefCell<Vec<&'static str>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, what: &'static str) -> impl FnOnce() + 'static {
    let log = log.clone();
    move || log.borrow_mut().push(what)
}

#[test]
fn call_soon_runs_in_fifo_order() {
    let lp = new_loop();
    let seen = log();
    for name in ["a", "b", "c", "d"] {
        lp.call_soon(push(&seen, name)).unwrap();
    }
    let h = lp.handle();
    lp.call_soon(move || h.stop()).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), ["a", "b", "c", "d"]);
}

#[test]
fn callbacks_scheduled_by_a_callback_run_in_the_next_iteration() {
    let lp = new_loop();
    let seen = log();
    let (h, s) = (lp.handle(), seen.clone());
    lp.call_soon(move || {
        s.borrow_mut().push("first");
        let s2 = s.clone();
        h.call_soon(move || s2.borrow_mut().push("scheduled by first"))
            .unwrap();
    })
    .unwrap();
    lp.call_soon(push(&seen, "second")).unwrap();
    let h = lp.handle();
    let s = seen.clone();
    let iteration = lp.iteration_count();
    lp.call_soon(move || {
        // still the same iteration: "scheduled by first" has not run yet
        assert_eq!(*s.borrow(), ["first", "second"]);
        assert_eq!(h.iteration_count(), iteration + 1);
        let h2 = h.clone();
        h.call_soon(move || h2.stop()).unwrap();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), ["first", "second", "scheduled by first"]);
}

#[test]
fn stop_from_a_callback_finishes_the_iteration() {
    let lp = new_loop();
    let seen = log();
    let h = lp.handle();
    lp.call_soon(move || h.stop()).unwrap();
    lp.call_soon(push(&seen, "same iteration")).unwrap();
    let (h, s) = (lp.handle(), seen.clone());
    lp.call_soon(move || {
        h.call_soon(push(&s, "next iteration")).unwrap();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), ["same iteration"]);
    assert!(!lp.is_running());
    // The loop is reusable; what was queued runs on the next run.
    let h = lp.handle();
    lp.call_soon(move || h.stop()).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), ["same iteration", "next iteration"]);
}

#[test]
fn stop_before_run_forever_runs_one_iteration() {
    let lp = new_loop();
    let seen = log();
    lp.call_soon(push(&seen, "queued")).unwrap();
    lp.call_later(Duration::from_secs(3600), push(&seen, "timer"))
        .unwrap();
    lp.stop();
    let before = lp.iteration_count();
    lp.run_forever().unwrap();
    assert_eq!(lp.iteration_count(), before + 1);
    assert_eq!(*seen.borrow(), ["queued"]);
}

#[test]
fn close_rules() {
    let lp = new_loop();
    let h = lp.handle();
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    lp.call_soon(move || {
        *r.borrow_mut() = Some(h.close());
        h.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    let refused = result.borrow_mut().take().unwrap();
    assert!(matches!(refused, Err(Error::CloseWhileRunning)));
    assert_eq!(
        refused.unwrap_err().to_string(),
        "Cannot close a running event loop"
    );

    lp.close().unwrap();
    lp.close().unwrap(); // idempotent
    assert!(lp.is_closed());
    let err = lp.call_soon(|| {}).unwrap_err();
    assert!(matches!(err, Error::Closed));
    assert_eq!(err.to_string(), "Event loop is closed");
    assert!(matches!(
        lp.call_later(Duration::ZERO, || {}),
        Err(Error::Closed)
    ));
    assert!(matches!(lp.call_at(lp.time(), || {}), Err(Error::Closed)));
    assert!(matches!(lp.run_forever(), Err(Error::Closed)));
    assert!(matches!(
        lp.run_until_complete(async {}),
        Err(Error::Closed)
    ));
    assert!(matches!(lp.remote().call_soon(|| {}), Err(Error::Closed)));
    let task = lp.spawn_local(async { 1 });
    assert!(task.is_finished());
}

#[test]
fn close_drops_what_was_queued() {
    let lp = new_loop();
    let token = Rc::new(());
    let (t1, t2, t3) = (token.clone(), token.clone(), token.clone());
    lp.call_soon(move || drop(t1)).unwrap();
    lp.call_later(Duration::from_secs(60), move || drop(t2))
        .unwrap();
    lp.spawn_local(async move {
        sloop::sleep(Duration::from_secs(60)).await;
        drop(t3);
    })
    .detach();
    assert_eq!(Rc::strong_count(&token), 4);
    lp.close().unwrap();
    assert_eq!(
        Rc::strong_count(&token),
        1,
        "close freed every callback and task"
    );
}

#[test]
fn run_until_complete_returns_the_output() {
    let lp = new_loop();
    let local = String::from("borrowed");
    let out = lp
        .run_until_complete(async {
            sloop::sleep(Duration::from_millis(1)).await;
            local.len()
        })
        .unwrap();
    assert_eq!(out, 8);
    // An error output comes back as the future's own value.
    let out: Result<(), std::io::Error> = lp
        .run_until_complete(async { Err(std::io::Error::other("boom")) })
        .unwrap();
    assert_eq!(out.unwrap_err().to_string(), "boom");
}

#[test]
fn run_until_complete_propagates_a_panic_and_the_loop_stays_usable() {
    let lp = new_loop();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lp.run_until_complete(async {
            sloop::sleep(Duration::from_millis(1)).await;
            panic!("inside the future");
        })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside the future"));
    assert!(!lp.is_running());
    assert_eq!(lp.run_until_complete(async { 3 }).unwrap(), 3);
}

#[test]
fn run_until_complete_stopped_before_the_future_completes() {
    let lp = new_loop();
    let h = lp.handle();
    let err = lp
        .run_until_complete(async move {
            h.stop();
            futures::future::pending::<()>().await
        })
        .unwrap_err();
    assert!(matches!(err, Error::StoppedBeforeComplete));
    assert_eq!(
        err.to_string(),
        "Event loop stopped before Future completed."
    );
}

#[test]
fn nested_runs_are_refused() {
    let lp = new_loop();
    let other = EventLoop::new().unwrap();
    let other_h = other.handle();
    let h = lp.handle();
    let errors = lp
        .run_until_complete(async move {
            (
                h.run_forever().unwrap_err(),
                h.run_until_complete(async {}).unwrap_err(),
                other_h.run_forever().unwrap_err(),
            )
        })
        .unwrap();
    assert!(matches!(errors.0, Error::AlreadyRunning));
    assert_eq!(errors.0.to_string(), "This event loop is already running");
    assert!(matches!(errors.1, Error::AlreadyRunning));
    assert!(matches!(errors.2, Error::AnotherLoopRunning));
    assert_eq!(
        errors.2.to_string(),
        "Cannot run the event loop while another loop is running"
    );
    // Both loops still work afterwards.
    assert_eq!(other.run_until_complete(async { 1 }).unwrap(), 1);
}

#[test]
fn get_running_loop_inside_and_outside() {
    assert!(sloop::get_running_loop().is_none());
    let lp = new_loop();
    let same = lp
        .run_until_complete(async {
            let running = sloop::get_running_loop().expect("a loop runs this");
            running.is_running()
        })
        .unwrap();
    assert!(same);
    assert!(sloop::get_running_loop().is_none());
}

/// D2: every public method of the loop is callable from inside a callback,
/// with no RefCell panic.
#[test]
fn every_method_is_callable_from_inside_a_callback() {
    let lp = new_loop();
    let h = lp.handle();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let done = Rc::new(RefCell::new(false));
    let d = done.clone();
    lp.call_soon(move || {
        let handle = h.call_soon(|| {}).unwrap();
        handle.cancel();
        let timer = h.call_later(Duration::from_secs(1), || {}).unwrap();
        timer.cancel();
        h.call_at(h.time(), || {}).unwrap();
        let reader = h.add_reader(&a, || {}).unwrap();
        assert!(!reader.cancelled());
        assert!(h.remove_reader(&a).unwrap());
        h.add_writer(&a, || {}).unwrap();
        assert!(h.remove_writer(&a).unwrap());
        h.spawn_local(async {}).detach();
        h.remote().call_soon(|| {}).unwrap();
        h.set_exception_handler(Some(
            |_: &sloop::LoopHandle, _: &sloop::ExceptionContext| {},
        ));
        h.set_exception_handler(None::<fn(&sloop::LoopHandle, &sloop::ExceptionContext)>);
        h.call_exception_handler(sloop::ExceptionContext::new("from a callback"));
        h.set_debug(h.debug());
        h.set_slow_callback_duration(h.slow_callback_duration());
        assert!(h.is_running() && !h.is_closed());
        assert!(h.close().is_err());
        assert!(h.run_forever().is_err());
        let _ = (
            h.time(),
            h.iteration_count(),
            h.timer_count(),
            h.task_count(),
            format!("{h:?}"),
        );
        *d.borrow_mut() = true;
        h.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(*done.borrow());
}

#[test]
fn a_handle_cancelling_itself_and_dropping_the_loop_inside_callbacks() {
    let lp = new_loop();
    let slot: Rc<RefCell<Option<sloop::Handle>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let h = lp.handle();
    let handle = lp
        .call_soon(move || {
            // cancelling the running handle, and dropping a LoopHandle clone
            s.borrow().as_ref().unwrap().cancel();
            h.stop();
            drop(h);
        })
        .unwrap();
    *slot.borrow_mut() = Some(handle.clone());
    lp.run_forever().unwrap();
    assert!(handle.cancelled());
}

/// D15: dropping a handle is never a cancel, whatever kind it is and
/// whenever it is dropped (before it runs, or from inside its callback).
#[test]
fn dropping_a_handle_does_not_cancel_its_callback() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let lp = new_loop();
    let seen = log();
    drop(lp.call_soon(push(&seen, "soon")).unwrap());
    drop(
        lp.call_later(Duration::from_millis(1), push(&seen, "timer"))
            .unwrap(),
    );
    let (mut tx, rx) = UnixStream::pair().unwrap();
    rx.set_nonblocking(true).unwrap();
    tx.write_all(b"x").unwrap();
    let own: Rc<RefCell<Option<sloop::Handle>>> = Rc::new(RefCell::new(None));
    let (s, o, h, mut r) = (
        seen.clone(),
        own.clone(),
        lp.handle(),
        rx.try_clone().unwrap(),
    );
    let reader = lp
        .add_reader(&rx, move || {
            // The last clone of its own handle, dropped while it runs.
            drop(o.borrow_mut().take());
            let mut buf = [0u8; 4];
            let _ = r.read(&mut buf);
            s.borrow_mut().push("reader");
            let h2 = h.clone();
            h.call_later(Duration::from_millis(5), move || h2.stop())
                .unwrap();
        })
        .unwrap();
    *own.borrow_mut() = Some(reader);
    lp.run_forever().unwrap();
    let mut got = seen.borrow().clone();
    got.sort();
    assert_eq!(got, ["reader", "soon", "timer"]);
    assert!(lp.remove_reader(&rx).unwrap(), "the reader is still set");
}

/// D15: a timer cancelling its own handle while it runs is harmless, and
/// is not counted as a cancelled timer still in the heap (the count decides
/// when the heap is rebuilt).
#[test]
fn a_timer_cancelling_itself_while_it_runs() {
    let lp = new_loop();
    let own: Rc<RefCell<Option<sloop::TimerHandle>>> = Rc::new(RefCell::new(None));
    let seen = log();
    let (o, s) = (own.clone(), seen.clone());
    let timer = lp
        .call_later(Duration::ZERO, move || {
            o.borrow().as_ref().unwrap().cancel();
            s.borrow_mut().push("ran");
        })
        .unwrap();
    *own.borrow_mut() = Some(timer.clone());
    let h = lp.handle();
    lp.call_later(Duration::from_millis(2), move || h.stop())
        .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*seen.borrow(), ["ran"]);
    assert!(timer.cancelled());
    assert_eq!(lp.timer_count(), 0);

    // 102 timers, 51 cancelled (none at the head): exactly half, so the
    // heap is not rebuilt. One more counted cancel would rebuild it.
    let live: Vec<_> = (0..51)
        .map(|_| lp.call_later(Duration::from_secs(3600), || {}).unwrap())
        .collect();
    for _ in 0..51 {
        lp.call_later(Duration::from_secs(7200), || {})
            .unwrap()
            .cancel();
    }
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.timer_count(), 102);
    drop(live);
    own.borrow_mut().take();
}
