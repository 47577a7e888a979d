//! A loom model of the `Remote` inbox and the cross-thread wake path
//! (src/event_loop/remote.rs; reliability R31): every interleaving of
//! senders on other threads, the loop's "block only if nothing is pending,
//! then drain" and `close`.
//!
//! Checks: no lost wakeup (a lost one is a deadlock, which loom reports),
//! no doubled delivery, at most one ring per batch, and `close` racing
//! with sends leaves each callback either delivered, returned by `close`,
//! or refused with `Error::Closed`, and dropped exactly once.
//!
//! Only built with loom's types swapped in (src/sync.rs):
//!
//! ```text
//! RUSTFLAGS="--cfg sloop_loom" cargo test --release --test loom_remote
//! ```

#![cfg(sloop_loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use loom::thread;
use sloop::event_loop::loom_model::Inbox;

/// The loop's side: until `expect` keys came, block in "poll" unless the
/// inbox is pending, then drain. Returns the keys in arrival order and the
/// rings consumed.
fn run_loop(inbox: &Inbox, expect: usize) -> (Vec<usize>, usize) {
    let mut got = Vec::new();
    let mut rings = 0;
    while got.len() < expect {
        if !inbox.is_pending() {
            rings += inbox.wait();
        }
        let (callbacks, woken) = inbox.drain();
        assert_eq!(callbacks, 0);
        got.extend(woken);
    }
    (got, rings + inbox.take_rings())
}

#[test]
fn a_wake_from_another_thread_is_never_lost() {
    loom::model(|| {
        let inbox = Arc::new(Inbox::new());
        let i = inbox.clone();
        let sender = thread::spawn(move || i.wake_task(7));
        let (got, rings) = run_loop(&inbox, 1);
        sender.join().unwrap();
        assert_eq!(got, vec![7]);
        assert!(rings <= 1, "one wake, {rings} rings");
    });
}

#[test]
fn two_senders_are_each_delivered_once_with_a_ring_per_batch_at_most() {
    loom::model(|| {
        let inbox = Arc::new(Inbox::new());
        let senders: Vec<_> = [1, 2]
            .into_iter()
            .map(|key| {
                let i = inbox.clone();
                thread::spawn(move || i.wake_task(key))
            })
            .collect();
        let (mut got, rings) = run_loop(&inbox, 2);
        for s in senders {
            s.join().unwrap();
        }
        got.sort();
        assert_eq!(got, vec![1, 2], "each wake delivered exactly once");
        assert!(rings <= 2, "{rings} rings for two wakes");
    });
}

#[test]
fn one_sender_twice_keeps_its_order() {
    loom::model(|| {
        let inbox = Arc::new(Inbox::new());
        let i = inbox.clone();
        let sender = thread::spawn(move || {
            i.wake_task(1);
            i.wake_task(2);
        });
        let (got, _) = run_loop(&inbox, 2);
        sender.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// Counts drops of the callbacks' captures.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn close_racing_with_call_soon_accounts_for_every_callback() {
    loom::model(|| {
        let inbox = Arc::new(Inbox::new());
        let dropped = Arc::new(AtomicUsize::new(0));
        let remote = inbox.remote();
        let d = dropped.clone();
        let sender = thread::spawn(move || {
            let mut ok = 0;
            for _ in 0..2 {
                let g = Guard(d.clone());
                match remote.call_soon(move || drop(g)) {
                    Ok(()) => ok += 1,
                    Err(sloop::Error::Closed) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            ok
        });
        // The loop drains once, then closes while the sender may still run.
        let (drained, _) = inbox.drain();
        let (left, _) = inbox.close();
        let ok = sender.join().unwrap();
        assert_eq!(
            drained + left,
            ok,
            "accepted = delivered + returned by close"
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 2, "each dropped once");
        assert!(inbox.remote().is_closed());
        // After close nothing is queued and nothing more is accepted.
        assert_eq!(inbox.drain(), (0, vec![]));
        assert!(matches!(
            inbox.remote().call_soon(|| {}),
            Err(sloop::Error::Closed)
        ));
    });
}

#[test]
fn a_wake_racing_with_close_is_dropped_or_returned_never_lost_in_between() {
    loom::model(|| {
        let inbox = Arc::new(Inbox::new());
        let i = inbox.clone();
        let sender = thread::spawn(move || i.wake_task(3));
        let (_, left) = inbox.close();
        sender.join().unwrap();
        let (_, after) = inbox.drain();
        assert!(after.is_empty(), "nothing queued after close");
        assert!(left.len() <= 1);
    });
}
