//! Panics in callbacks and tasks reach the exception handler and the loop
//! runs on (docs/design.md D8); the handler's own panics; debug mode's
//! slow-callback log.

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use sloop::{EventLoop, Exception, ExceptionContext, LoopHandle};
use support::logs::{capture_logs, take_logs};
use support::{connected, Echo};

/// Collects what the loop reports.
fn capture(lp: &LoopHandle) -> Rc<RefCell<Vec<String>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, ctx: &ExceptionContext| {
        let exc = match &ctx.exception {
            Some(Exception::Panic(msg)) => format!("panic={msg}"),
            Some(other) => format!("error={other}"),
            None => "none".into(),
        };
        s.borrow_mut().push(format!("{} | {exc}", ctx.message));
    }));
    seen
}

#[test]
fn a_panicking_callback_reaches_the_handler_and_the_next_callback_runs() {
    let lp = EventLoop::new().unwrap();
    let seen = capture(&lp);
    lp.call_soon(|| panic!("callback blew up")).unwrap();
    let after = Rc::new(Cell::new(false));
    let (a, h) = (after.clone(), lp.handle());
    lp.call_soon(move || {
        a.set(true);
        h.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(after.get(), "the loop kept running");
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("Exception in callback <Handle "),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains("loop_exceptions.rs"),
        "names where it was scheduled: {}",
        seen[0]
    );
    assert!(seen[0].ends_with("| panic=callback blew up"), "{}", seen[0]);
}

#[test]
fn a_panicking_timer_and_reader_are_reported_too() {
    let lp = EventLoop::new().unwrap();
    let seen = capture(&lp);
    lp.call_later(Duration::from_millis(1), || panic!("timer"))
        .unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
    let h = lp.handle();
    lp.add_writer(&a, move || {
        h.remove_writer(&fd).unwrap();
        panic!("writer")
    })
    .unwrap();
    let h = lp.handle();
    lp.call_later(Duration::from_millis(3), move || h.stop())
        .unwrap();
    lp.run_forever().unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().any(|s| s.ends_with("panic=timer")));
    assert!(seen.iter().any(|s| s.ends_with("panic=writer")));
}

/// Runs `lp` for `ms` milliseconds (a timer stops it) and returns how many
/// iterations that took: a handful when idle, thousands when spinning.
fn iterations_in(lp: &EventLoop, ms: u64) -> u64 {
    let h = lp.handle();
    lp.call_later(Duration::from_millis(ms), move || h.stop())
        .unwrap();
    let before = lp.iteration_count();
    lp.run_forever().unwrap();
    lp.iteration_count() - before
}

#[test]
fn a_panicking_reader_keeps_its_callback_and_runs_again_on_the_next_event() {
    // asyncio keeps a reader whose callback raised and calls it again on
    // the next event; the panic goes to the handler (D8).
    let lp = EventLoop::new().unwrap();
    let seen = capture(&lp);
    let (tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
    rx.set_nonblocking(true).unwrap();
    (&tx).write_all(b"a").unwrap();
    // Kept open to the end: an EOF would make the fd readable for good.
    let tx = Rc::new(tx);
    let got = Rc::new(RefCell::new(Vec::new()));
    let (g, mut r) = (got.clone(), rx.try_clone().unwrap());
    let mut first = true;
    lp.add_reader(&rx, move || {
        if std::mem::take(&mut first) {
            panic!("reader once"); // the byte stays unread
        }
        let mut buf = [0u8; 16];
        let n = r.read(&mut buf).unwrap();
        g.borrow_mut()
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    })
    .unwrap();
    let t = tx.clone();
    lp.call_later(Duration::from_millis(20), move || {
        (&*t).write_all(b"b").unwrap();
    })
    .unwrap();
    let spent = iterations_in(&lp, 50);
    {
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with("Exception in callback <Handle "),
            "{}",
            seen[0]
        );
        assert!(seen[0].ends_with("| panic=reader once"), "{}", seen[0]);
    }
    assert_eq!(
        *got.borrow(),
        ["a", "b"],
        "called again while the fd stayed readable, and at the next event"
    );
    assert!(spent < 20, "{spent} iterations: the loop spun");
    assert!(lp.remove_reader(&rx).unwrap());
}

#[test]
fn a_panicking_writer_keeps_its_callback_and_runs_again_on_the_next_event() {
    let lp = EventLoop::new().unwrap();
    let seen = capture(&lp);
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
    let calls = Rc::new(Cell::new(0));
    let (c, h) = (calls.clone(), lp.handle());
    lp.add_writer(&a, move || {
        c.set(c.get() + 1);
        if c.get() == 1 {
            panic!("writer once");
        }
        assert!(h.remove_writer(&fd).unwrap());
    })
    .unwrap();
    let spent = iterations_in(&lp, 50);
    assert_eq!(seen.borrow().len(), 1, "{:?}", seen.borrow());
    assert!(seen.borrow()[0].ends_with("| panic=writer once"));
    assert_eq!(calls.get(), 2, "called again, then removed itself");
    assert!(spent < 20, "{spent} iterations: the loop spun");
}

#[test]
fn a_panicking_handler_does_not_recurse_or_stop_the_loop() {
    let lp = EventLoop::new().unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, _: &ExceptionContext| {
        c.set(c.get() + 1);
        panic!("the handler itself");
    }));
    lp.call_soon(|| panic!("first")).unwrap();
    let h = lp.handle();
    lp.call_soon(move || h.stop()).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(
        calls.get(),
        1,
        "called once; its own panic went to the default handler"
    );
    assert!(lp.has_exception_handler());
    lp.set_exception_handler(None::<fn(&LoopHandle, &ExceptionContext)>);
    assert!(!lp.has_exception_handler());
}

#[test]
fn propagate_panics_resumes_out_of_run_forever() {
    let lp = EventLoop::builder().propagate_panics(true).build().unwrap();
    let later = Rc::new(Cell::new(false));
    lp.call_soon(|| panic!("propagated")).unwrap();
    let l = later.clone();
    lp.call_soon(move || l.set(true)).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run_forever()));
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"propagated")
    );
    assert!(!later.get(), "the rest of the iteration stays queued");
    assert!(!lp.is_running());
    lp.stop();
    lp.run_forever().unwrap();
    assert!(later.get(), "and runs on the next run");
}

#[test]
fn a_propagated_panic_keeps_the_rest_of_its_iteration_ahead_of_what_it_scheduled() {
    let lp = EventLoop::builder().propagate_panics(true).build().unwrap();
    let order = Rc::new(RefCell::new(Vec::new()));
    let (o, h) = (order.clone(), lp.handle());
    lp.call_soon(move || {
        let o2 = o.clone();
        h.call_soon(move || o2.borrow_mut().push("scheduled"))
            .unwrap();
        o.borrow_mut().push("first");
    })
    .unwrap();
    lp.call_soon(|| panic!("propagated")).unwrap();
    let o = order.clone();
    lp.call_soon(move || o.borrow_mut().push("rest")).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run_forever()));
    assert!(caught.is_err());
    assert_eq!(*order.borrow(), ["first"]);
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(*order.borrow(), ["first", "rest", "scheduled"]);
}

#[test]
fn task_panics_are_returned_to_the_awaiter_or_reported_when_detached() {
    let lp = EventLoop::new().unwrap();
    let seen = capture(&lp);
    let awaited = lp.spawn_local(async { panic!("awaited task") });
    lp.spawn_local(async { panic!("detached task") }).detach();
    let result = lp.run_until_complete(awaited).unwrap();
    let err = result.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.to_string(), "task panicked: awaited task");
    let payload = err.try_into_panic().unwrap();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"awaited task"));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0],
        "Task exception was never retrieved | panic=detached task"
    );
}

#[test]
fn a_task_dropped_with_an_unread_panic_is_reported() {
    let lp = EventLoop::new().unwrap();
    let seen = capture(&lp);
    let task = lp.spawn_local(async { panic!("never read") });
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    assert!(task.is_finished());
    assert!(
        seen.borrow().is_empty(),
        "not yet: the handle could still read it"
    );
    drop(task);
    assert_eq!(
        *seen.borrow(),
        ["Task exception was never retrieved | panic=never read"]
    );
}

#[test]
fn exception_handler_getter_follows_set_and_unset() {
    let lp = EventLoop::new().unwrap();
    assert!(
        lp.exception_handler().is_none(),
        "no custom handler at first"
    );

    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, _: &ExceptionContext| {
        c.set(c.get() + 1);
    }));
    let got = lp.exception_handler().expect("set");
    // The getter shares the installed handler: the same one, still set.
    assert!(Rc::ptr_eq(&got, &lp.exception_handler().unwrap()));
    assert!(lp.has_exception_handler());
    got(&lp, &ExceptionContext::new("called through the getter"));
    assert_eq!(calls.get(), 1);
    lp.call_exception_handler(ExceptionContext::new("called by the loop"));
    assert_eq!(calls.get(), 2, "the getter did not take it out");

    // Replacing gives the new one; the old one stays callable.
    let seen = capture(&lp);
    assert!(!Rc::ptr_eq(&got, &lp.exception_handler().unwrap()));
    lp.call_exception_handler(ExceptionContext::new("to the new one"));
    assert_eq!(calls.get(), 2);
    assert_eq!(*seen.borrow(), ["to the new one | none"]);

    // A wrapper that chains to the previous handler (asyncio's idiom).
    let previous = lp.exception_handler().unwrap();
    let c = calls.clone();
    lp.set_exception_handler(Some(move |lp: &LoopHandle, ctx: &ExceptionContext| {
        c.set(c.get() + 10);
        previous(lp, ctx);
    }));
    lp.call_exception_handler(ExceptionContext::new("chained"));
    assert_eq!(calls.get(), 12);
    assert_eq!(seen.borrow().last().unwrap(), "chained | none");

    lp.set_exception_handler(None::<fn(&LoopHandle, &ExceptionContext)>);
    assert!(lp.exception_handler().is_none(), "unset");
    assert!(!lp.has_exception_handler());
    got(&lp, &ExceptionContext::new("a kept Rc outlives unsetting"));
    assert_eq!(calls.get(), 13);
}

/// Collects the `task` field of each report.
fn capture_tasks(lp: &LoopHandle) -> Rc<RefCell<Vec<String>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, ctx: &ExceptionContext| {
        s.borrow_mut().push(format!(
            "{} | {}",
            ctx.message,
            ctx.task.as_ref().map_or("-".to_owned(), |t| t.to_string())
        ));
    }));
    seen
}

#[test]
fn reports_about_a_task_name_it() {
    let lp = EventLoop::new().unwrap();
    let seen = capture_tasks(&lp);
    // Detached before it panics: reported when it panics.
    lp.spawn_local_named("detached", async { panic!("boom") })
        .detach();
    lp.spawn_local(async { panic!("boom") }).detach();
    // Held while it panics, dropped unread: reported at the drop, under
    // the name it has then.
    let held = lp.spawn_local_named("held", async { panic!("boom") });
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    held.set_name("renamed");
    drop(held);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (line, name) in seen.iter().zip(["detached", "Task-1", "renamed"]) {
        assert!(
            line.starts_with("Task exception was never retrieved | <Task name='"),
            "{line}"
        );
        assert!(
            line.contains(&format!("name='{name}' spawned at ")),
            "{line}"
        );
        assert!(line.contains("loop_exceptions.rs"), "{line}");
    }
}

#[test]
fn debug_mode_names_a_slow_task() {
    capture_logs();
    let lp = EventLoop::builder()
        .debug(true)
        .slow_callback_duration(Duration::from_millis(5))
        .build()
        .unwrap();
    let slow = lp.spawn_local_named("sluggish", async {
        std::thread::sleep(Duration::from_millis(10));
    });
    let renamed = lp.spawn_local(async {
        sloop::sleep(Duration::from_millis(1)).await; // fast first poll
        std::thread::sleep(Duration::from_millis(10));
    });
    renamed.set_name("renamed before its slow poll");
    lp.run_until_complete(slow).unwrap().unwrap();
    lp.run_until_complete(renamed).unwrap().unwrap();
    let logs = take_logs();
    let slow: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("Executing <Task"))
        .collect();
    assert_eq!(slow.len(), 2, "{logs:?}");
    assert!(
        slow[0].contains("<Task name='sluggish' spawned at "),
        "{}",
        slow[0]
    );
    assert!(
        slow[1].contains("<Task name='renamed before its slow poll' spawned at "),
        "{}",
        slow[1]
    );
    assert!(slow.iter().all(|l| l.starts_with("WARN")), "{slow:?}");
}

#[test]
fn call_exception_handler_without_a_custom_handler_uses_the_default() {
    let lp = EventLoop::new().unwrap();
    capture_logs();
    let (t, _peer) = connected(&lp, Echo::default());
    let fd = t.as_raw_fd().unwrap();
    lp.call_exception_handler(
        ExceptionContext::new("custom report")
            .with_exception(Exception::Io(std::io::Error::other("disk on fire")))
            .with_transport(&t),
    );
    let logs = take_logs();
    let line = logs
        .iter()
        .find(|l| l.contains("custom report"))
        .expect("logged");
    assert!(line.starts_with("ERROR"), "{line}");
    assert!(line.contains("exception: disk on fire"), "{line}");
    assert!(
        line.contains(&format!("transport: <SocketTransport tcp fd={fd} ")),
        "{line}"
    );
}

#[test]
fn debug_mode_logs_slow_callbacks_with_their_location() {
    capture_logs();
    let lp = EventLoop::builder()
        .debug(true)
        .slow_callback_duration(Duration::from_millis(5))
        .build()
        .unwrap();
    assert!(lp.debug());
    lp.call_soon(|| std::thread::sleep(Duration::from_millis(10)))
        .unwrap();
    lp.call_soon(|| {}).unwrap(); // fast: not logged
    lp.stop();
    lp.run_forever().unwrap();
    let logs = take_logs();
    let slow: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("Executing <Handle"))
        .collect();
    assert_eq!(slow.len(), 1, "{logs:?}");
    assert!(slow[0].starts_with("WARN"), "{}", slow[0]);
    assert!(slow[0].contains("loop_exceptions.rs"), "{}", slow[0]);
    assert!(slow[0].contains("seconds"), "{}", slow[0]);

    // Without debug mode nothing is timed or logged.
    lp.set_debug(false);
    lp.call_soon(|| std::thread::sleep(Duration::from_millis(10)))
        .unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert!(take_logs().iter().all(|l| !l.contains("Executing")));
}
