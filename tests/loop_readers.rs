//! add_reader / add_writer on raw fds: level-triggered meaning on mio's
//! edge-triggered poll (docs/design.md D3), replace, remove, and after close.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use sloop::{Error, EventLoop};

fn new_loop() -> EventLoop {
    EventLoop::builder().propagate_panics(true).build().unwrap()
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

#[test]
fn a_reader_reading_one_byte_per_call_sees_every_byte() {
    // R12 (second half): a callback that never drains is called again.
    let lp = new_loop();
    let (mut tx, rx) = pair();
    let burst: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    tx.write_all(&burst).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let (g, h) = (got.clone(), lp.handle());
    let mut rx_read = rx.try_clone().unwrap();
    lp.add_reader(&rx, move || {
        let mut byte = [0u8; 1];
        match rx_read.read(&mut byte) {
            Ok(1) => g.borrow_mut().push(byte[0]),
            other => panic!("unexpected read result {other:?}"),
        }
        if g.borrow().len() == 1000 {
            h.stop();
        }
    })
    .unwrap();
    // A timer keeps running while the reader drains (fairness).
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    lp.call_soon(move || t.set(t.get() + 1)).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*got.borrow(), burst);
    assert_eq!(ticks.get(), 1);
    assert!(lp.remove_reader(&rx).unwrap());
}

#[test]
fn add_reader_replaces_and_remove_reader_reports() {
    let lp = new_loop();
    let (mut tx, rx) = pair();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let c = calls.clone();
    let first = lp
        .add_reader(&rx, move || c.borrow_mut().push("first"))
        .unwrap();
    let (c, h) = (calls.clone(), lp.handle());
    let mut r = rx.try_clone().unwrap();
    let second = lp
        .add_reader(&rx, move || {
            let mut buf = [0u8; 16];
            let _ = r.read(&mut buf);
            c.borrow_mut().push("second");
            h.stop();
        })
        .unwrap();
    assert!(first.cancelled(), "the replaced reader is cancelled");
    assert!(!second.cancelled());
    tx.write_all(b"x").unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*calls.borrow(), ["second"]);
    assert!(lp.remove_reader(&rx).unwrap());
    assert!(second.cancelled());
    assert!(!lp.remove_reader(&rx).unwrap(), "nothing left to remove");

    // After removal no callback runs, even with data waiting.
    tx.write_all(b"more").unwrap();
    let before = calls.borrow().len();
    lp.call_later(Duration::from_millis(5), {
        let h = lp.handle();
        move || h.stop()
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.borrow().len(), before);
}

#[test]
fn reader_and_writer_on_one_fd() {
    let lp = new_loop();
    let (mut tx, rx) = pair();
    let writes = Rc::new(Cell::new(0));
    let w = writes.clone();
    lp.add_writer(&rx, move || w.set(w.get() + 1)).unwrap();
    let (h, mut r) = (lp.handle(), rx.try_clone().unwrap());
    let read = Rc::new(Cell::new(false));
    let rd = read.clone();
    lp.add_reader(&rx, move || {
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        rd.set(true);
        h.stop();
    })
    .unwrap();
    tx.write_all(b"hi").unwrap();
    lp.run_forever().unwrap();
    assert!(read.get());
    assert!(writes.get() >= 1, "a socket with room is writable");
    // Removing the writer keeps the reader, and the other way round.
    assert!(lp.remove_writer(&rx).unwrap());
    assert!(!lp.remove_writer(&rx).unwrap());
    assert!(lp.remove_reader(&rx).unwrap());
}

#[test]
fn a_writer_is_level_triggered_too() {
    // An always-writable fd calls its writer once per iteration, not once.
    let lp = new_loop();
    let (a, _b) = pair();
    let calls = Rc::new(Cell::new(0));
    let (c, h) = (calls.clone(), lp.handle());
    lp.add_writer(&a, move || {
        c.set(c.get() + 1);
        if c.get() == 5 {
            h.stop();
        }
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 5);
}

#[test]
fn a_reader_can_remove_itself() {
    let lp = new_loop();
    let (mut tx, rx) = pair();
    tx.write_all(b"data").unwrap();
    let calls = Rc::new(Cell::new(0));
    let (c, h) = (calls.clone(), lp.handle());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&rx);
    lp.add_reader(&rx, move || {
        c.set(c.get() + 1);
        assert!(h.remove_reader(&fd).unwrap());
        let h2 = h.clone();
        h.call_later(Duration::from_millis(2), move || h2.stop())
            .unwrap();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(
        calls.get(),
        1,
        "removed itself: not called again though data remains"
    );
}

#[test]
fn after_close_add_is_refused_and_remove_reports_false() {
    let lp = new_loop();
    let (_a, b) = pair();
    lp.add_reader(&b, || {}).unwrap();
    lp.close().unwrap();
    assert!(matches!(lp.add_reader(&b, || {}), Err(Error::Closed)));
    assert!(matches!(lp.add_writer(&b, || {}), Err(Error::Closed)));
    assert!(!lp.remove_reader(&b).unwrap());
    assert!(!lp.remove_writer(&b).unwrap());
}

#[test]
fn an_fd_that_cannot_be_polled_is_an_io_error() {
    let lp = new_loop();
    let file = tempfile::tempfile().unwrap();
    match lp.add_reader(&file, || {}) {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc_eperm())),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

fn libc_eperm() -> i32 {
    1 // EPERM: epoll refuses regular files
}

#[test]
fn a_propagated_panic_in_one_reader_loses_no_other_readers_event() {
    // Both fds become readable in one poll. mio is edge-triggered: an event
    // fetched but not run when the first callback's panic stops the loop
    // must still run on the next run, or that reader would never fire.
    let lp = new_loop();
    let (mut tx_a, rx_a) = pair();
    let (mut tx_b, rx_b) = pair();
    let calls = Rc::new(RefCell::new(Vec::new()));
    for (name, rx) in [("a", &rx_a), ("b", &rx_b)] {
        let (c, mut r) = (calls.clone(), rx.try_clone().unwrap());
        lp.add_reader(rx, move || {
            let mut byte = [0u8; 1];
            let _ = r.read(&mut byte);
            c.borrow_mut().push(name);
            panic!("reader {name}");
        })
        .unwrap();
    }
    tx_a.write_all(b"x").unwrap();
    tx_b.write_all(b"x").unwrap();
    // Only a bug would leave the second run waiting; end it then.
    let h = lp.handle();
    lp.call_later(Duration::from_secs(10), move || h.stop())
        .unwrap();
    for _ in 0..2 {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run_forever()));
        assert!(run.is_err(), "each reader's panic propagates");
    }
    let mut seen = calls.borrow().clone();
    seen.sort();
    assert_eq!(seen, ["a", "b"], "both readers ran, once each");
}

#[test]
fn a_propagated_panic_in_a_callback_loses_no_event_fetched_with_it() {
    // The poll of an iteration fetches the reader's event, then a callback
    // queued before it panics: the event must wait for the next run.
    let lp = new_loop();
    let (mut tx, rx) = pair();
    tx.write_all(b"x").unwrap();
    let read = Rc::new(Cell::new(false));
    let (r, h, mut rx_read) = (read.clone(), lp.handle(), rx.try_clone().unwrap());
    lp.add_reader(&rx, move || {
        let mut byte = [0u8; 1];
        let _ = rx_read.read(&mut byte);
        r.set(true);
        h.stop();
    })
    .unwrap();
    lp.call_soon(|| panic!("queued first")).unwrap();
    let h = lp.handle();
    lp.call_later(Duration::from_secs(10), move || h.stop())
        .unwrap();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run_forever()));
    assert!(run.is_err());
    assert!(
        !read.get(),
        "the reader waits behind the panicking callback"
    );
    lp.run_forever().unwrap();
    assert!(read.get(), "and runs on the next run");
}

#[test]
fn a_callback_chain_holds_io_back_at_most_one_iteration() {
    // "Skipped polls" (event_loop docs): while callbacks keep the ready
    // queue busy, a zero-timeout poll right after a poll is skipped, but
    // never two in a row. A chain that writes a byte in one iteration sees
    // the reader called within the next two, and sometimes only in the
    // second.
    let lp = new_loop();
    let (tx, rx) = pair();
    let h = lp.handle();
    let written_at = Rc::new(Cell::new(0u64));
    let worst = Rc::new(Cell::new(0u64));
    let reads = Rc::new(Cell::new(0u32));
    let mut rx_read = rx.try_clone().unwrap();
    let (w, wr, r) = (written_at.clone(), worst.clone(), reads.clone());
    lp.add_reader(&rx, move || {
        let mut byte = [0u8; 1];
        assert_eq!(rx_read.read(&mut byte).unwrap(), 1);
        wr.set(wr.get().max(h.iteration_count() - w.get()));
        r.set(r.get() + 1);
    })
    .unwrap();

    fn chain(
        lp: sloop::LoopHandle,
        tx: Rc<UnixStream>,
        written_at: Rc<Cell<u64>>,
        reads: Rc<Cell<u32>>,
        round: u32,
    ) {
        // Write the next byte once the last one was read; stop after 100.
        if reads.get() == 100 {
            lp.stop();
            return;
        }
        let next = if reads.get() == round {
            written_at.set(lp.iteration_count());
            (&*tx).write_all(b"x").unwrap();
            round + 1
        } else {
            round
        };
        let lp2 = lp.clone();
        lp.call_soon(move || chain(lp2, tx, written_at, reads, next))
            .unwrap();
    }
    let (lp2, tx) = (lp.handle(), Rc::new(tx));
    let (w, r) = (written_at.clone(), reads.clone());
    lp.call_soon(move || chain(lp2, tx, w, r, 0)).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(reads.get(), 100);
    // 1 would mean every zero-timeout poll ran; more than 2, that two
    // were skipped in a row.
    assert_eq!(worst.get(), 2, "iterations from a write to its read");
}

/// Runs `lp` for `ms` milliseconds (a timer stops it) and returns how many
/// iterations that took. An idle loop blocks in the poll: a handful. A loop
/// that re-arms a registration nobody will serve: thousands.
fn iterations_in(lp: &EventLoop, ms: u64) -> u64 {
    let h = lp.handle();
    lp.call_later(Duration::from_millis(ms), move || h.stop())
        .unwrap();
    let before = lp.iteration_count();
    lp.run_forever().unwrap();
    lp.iteration_count() - before
}

/// More than an idle 50 ms run can take (poll, the event, the timer).
const FEW: u64 = 20;

#[test]
fn a_cancelled_reader_is_removed_when_its_event_arrives_and_does_not_spin() {
    // asyncio's _process_events: a cancelled reader handle removes the
    // reader (D15). The fd stays readable; nothing may keep polling it.
    let lp = new_loop();
    let (mut tx, rx) = pair();
    tx.write_all(b"unread").unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let handle = lp.add_reader(&rx, move || c.set(c.get() + 1)).unwrap();
    handle.cancel();
    let spent = iterations_in(&lp, 50);
    assert_eq!(calls.get(), 0, "a cancelled reader never runs");
    assert!(spent < FEW, "{spent} iterations: the loop spun");
    assert!(!lp.remove_reader(&rx).unwrap(), "the reader was removed");

    // The fd is free again: a new reader gets the data.
    let (h, mut r) = (lp.handle(), rx.try_clone().unwrap());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    lp.add_reader(&rx, move || {
        let mut buf = [0u8; 16];
        let n = r.read(&mut buf).unwrap();
        g.borrow_mut().extend_from_slice(&buf[..n]);
        h.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*got.borrow(), b"unread");
    assert!(lp.remove_reader(&rx).unwrap());
}

#[test]
fn a_cancelled_writer_is_removed_when_its_event_arrives_and_does_not_spin() {
    let lp = new_loop();
    let (a, _b) = pair();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let handle = lp.add_writer(&a, move || c.set(c.get() + 1)).unwrap();
    handle.cancel();
    let spent = iterations_in(&lp, 50);
    assert_eq!(calls.get(), 0, "a cancelled writer never runs");
    assert!(spent < FEW, "{spent} iterations: the loop spun");
    assert!(!lp.remove_writer(&a).unwrap(), "the writer was removed");

    let (c, h) = (calls.clone(), lp.handle());
    lp.add_writer(&a, move || {
        c.set(c.get() + 1);
        h.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 1, "a new writer on the fd runs");
    assert!(lp.remove_writer(&a).unwrap());
}

#[test]
fn a_cancelled_writer_leaves_the_reader_of_its_fd_armed() {
    // Removing one direction keeps the other registered (and only it).
    let lp = new_loop();
    let (mut tx, rx) = pair();
    let reads = Rc::new(Cell::new(0));
    let (rd, mut r) = (reads.clone(), rx.try_clone().unwrap());
    lp.add_reader(&rx, move || {
        let mut buf = [0u8; 16];
        let _ = r.read(&mut buf);
        rd.set(rd.get() + 1);
    })
    .unwrap();
    let writes = Rc::new(Cell::new(0));
    let w = writes.clone();
    let writer = lp.add_writer(&rx, move || w.set(w.get() + 1)).unwrap();
    writer.cancel();
    let spent = iterations_in(&lp, 50);
    assert!(spent < FEW, "{spent} iterations: the loop spun");
    assert_eq!((writes.get(), reads.get()), (0, 0));
    assert!(!lp.remove_writer(&rx).unwrap(), "the writer was removed");

    tx.write_all(b"x").unwrap();
    iterations_in(&lp, 20);
    assert_eq!(reads.get(), 1, "the reader still runs");
    assert!(lp.remove_reader(&rx).unwrap());
}

#[test]
fn a_reader_cancelling_its_own_handle_runs_once_and_is_removed() {
    // D15: cancelled from inside its own callback, with data left unread.
    let lp = new_loop();
    let (mut tx, rx) = pair();
    tx.write_all(b"unread").unwrap();
    let own: Rc<RefCell<Option<sloop::Handle>>> = Rc::new(RefCell::new(None));
    let calls = Rc::new(Cell::new(0));
    let (o, c) = (own.clone(), calls.clone());
    let handle = lp
        .add_reader(&rx, move || {
            c.set(c.get() + 1);
            o.borrow().as_ref().unwrap().cancel();
        })
        .unwrap();
    *own.borrow_mut() = Some(handle.clone());
    let spent = iterations_in(&lp, 50);
    assert_eq!(calls.get(), 1);
    assert!(handle.cancelled());
    assert!(spent < FEW, "{spent} iterations: the loop spun");
    assert!(!lp.remove_reader(&rx).unwrap(), "the reader was removed");
    own.borrow_mut().take();
}

#[test]
fn a_reader_cancelled_after_it_ran_is_removed_at_its_next_event() {
    // D15: the handle is cancelled between two events.
    let lp = new_loop();
    let (mut tx, rx) = pair();
    tx.write_all(b"first").unwrap();
    let calls = Rc::new(Cell::new(0));
    let (c, mut r) = (calls.clone(), rx.try_clone().unwrap());
    let handle = lp
        .add_reader(&rx, move || {
            let mut buf = [0u8; 16];
            let _ = r.read(&mut buf);
            c.set(c.get() + 1);
        })
        .unwrap();
    iterations_in(&lp, 10);
    assert_eq!(calls.get(), 1, "it ran and drained the fd");
    handle.cancel();
    tx.write_all(b"second").unwrap();
    let spent = iterations_in(&lp, 50);
    assert_eq!(calls.get(), 1, "not called after cancel");
    assert!(spent < FEW, "{spent} iterations: the loop spun");
    assert!(!lp.remove_reader(&rx).unwrap(), "the reader was removed");
}
