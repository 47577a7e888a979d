//! Signal handlers on the loop (asyncio's test_add_signal_handler and
//! friends): real signals raised to this process. Each test uses its own
//! signal, which no other test in the suite uses, so parallel tests do not
//! see each other's; the one about SIGINT runs in a child process.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sloop::{Error, EventLoop};

fn raise(signal: i32) {
    // SAFETY: sends a signal to this process; the test installed a handler.
    let rc = unsafe { libc::kill(libc::getpid(), signal) };
    assert_eq!(rc, 0);
}

/// Whether the process catches `signal` (its `SigCgt` bit in /proc).
fn caught(signal: i32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("SigCgt:")).unwrap();
    let mask = u64::from_str_radix(line["SigCgt:".len()..].trim(), 16).unwrap();
    mask & (1 << (signal - 1)) != 0
}

#[test]
fn signal_runs_callback_on_loop_thread_and_wakes_blocked_poll() {
    let lp = EventLoop::new().unwrap();
    let ran_on = Rc::new(Cell::new(None));
    let (r, handle) = (ran_on.clone(), lp.handle());
    lp.add_signal_handler(libc::SIGUSR1, move || {
        r.set(Some(std::thread::current().id()));
        handle.stop();
    })
    .unwrap();
    // Raised from another thread while the loop blocks in its poll with
    // nothing else to wake it (no timers).
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        raise(libc::SIGUSR1);
    });
    lp.run_forever().unwrap();
    t.join().unwrap();
    assert_eq!(ran_on.get(), Some(std::thread::current().id()));
    assert!(lp.remove_signal_handler(libc::SIGUSR1).unwrap());
    assert!(!lp.remove_signal_handler(libc::SIGUSR1).unwrap());
}

#[test]
fn two_loops_each_run_their_handler() {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                let lp = EventLoop::new().unwrap();
                let handle = lp.handle();
                lp.add_signal_handler(libc::SIGUSR2, move || {
                    tx.send(i).unwrap();
                    handle.stop();
                })
                .unwrap();
                ready_tx.send(()).unwrap();
                lp.run_forever().unwrap();
            })
        })
        .collect();
    ready_rx.recv().unwrap();
    ready_rx.recv().unwrap();
    raise(libc::SIGUSR2);
    for t in threads {
        t.join().unwrap();
    }
    let mut got: Vec<i32> = rx.try_iter().collect();
    got.sort();
    assert_eq!(got, [0, 1]);
    // Both loops are gone: nothing catches the signal any more.
    assert!(!caught(libc::SIGUSR2));
}

#[test]
fn second_handler_replaces_first_and_removal_restores_default() {
    let lp = EventLoop::new().unwrap();
    let first = Rc::new(Cell::new(0));
    let second = Rc::new(Cell::new(0));
    let f = first.clone();
    lp.add_signal_handler(libc::SIGWINCH, move || f.set(f.get() + 1))
        .unwrap();
    let (s, handle) = (second.clone(), lp.handle());
    lp.add_signal_handler(libc::SIGWINCH, move || {
        s.set(s.get() + 1);
        handle.stop();
    })
    .unwrap();
    assert!(caught(libc::SIGWINCH));
    raise(libc::SIGWINCH);
    lp.run_forever().unwrap();
    assert_eq!((first.get(), second.get()), (0, 1));
    assert!(lp.remove_signal_handler(libc::SIGWINCH).unwrap());
    assert!(!caught(libc::SIGWINCH));
    // Handled again after the restore: the handler is installed again.
    let handle = lp.handle();
    lp.add_signal_handler(libc::SIGWINCH, move || handle.stop())
        .unwrap();
    assert!(caught(libc::SIGWINCH));
    raise(libc::SIGWINCH);
    lp.run_forever().unwrap();
    assert!(lp.remove_signal_handler(libc::SIGWINCH).unwrap());
    assert!(!caught(libc::SIGWINCH));
}

#[test]
fn bad_signals_are_refused_with_typed_errors() {
    let lp = EventLoop::new().unwrap();
    for (signal, invalid) in [
        (0, true),
        (-1, true),
        (65, true),
        (libc::SIGKILL, false),
        (libc::SIGSTOP, false),
        (libc::SIGSEGV, false),
        // The C library keeps the first real-time signals for itself.
        (32, false),
    ] {
        let e = lp.add_signal_handler(signal, || {}).unwrap_err();
        match e {
            Error::InvalidSignal(n) if invalid => assert_eq!(n, signal),
            Error::SignalCannotBeCaught(n) if !invalid => assert_eq!(n, signal),
            e => panic!("signal {signal}: {e:?}"),
        }
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
    assert!(matches!(
        lp.remove_signal_handler(libc::SIGKILL),
        Err(Error::SignalCannotBeCaught(_))
    ));
    assert!(matches!(
        lp.remove_signal_handler(0),
        Err(Error::InvalidSignal(0))
    ));
    lp.close().unwrap();
    assert!(matches!(
        lp.add_signal_handler(libc::SIGCHLD, || {}),
        Err(Error::Closed)
    ));
    assert!(!lp.remove_signal_handler(libc::SIGCHLD).unwrap());
}

/// D15: a loop dropped with a handler still set unregisters it, drops the
/// callback and restores the disposition; a handler removing itself from
/// inside its callback is fine.
#[test]
fn dropped_loop_and_self_removing_handler() {
    let token = Rc::new(());
    let lp = EventLoop::new().unwrap();
    let t = token.clone();
    lp.add_signal_handler(libc::SIGPWR, move || {
        let _ = &t;
    })
    .unwrap();
    assert!(caught(libc::SIGPWR));
    assert_eq!(Rc::strong_count(&token), 2);
    drop(lp);
    assert_eq!(Rc::strong_count(&token), 1);
    assert!(!caught(libc::SIGPWR));

    let lp = EventLoop::new().unwrap();
    let handle = lp.handle();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    lp.add_signal_handler(libc::SIGPWR, move || {
        r.set(r.get() + 1);
        assert!(handle.remove_signal_handler(libc::SIGPWR).unwrap());
        handle.stop();
    })
    .unwrap();
    raise(libc::SIGPWR);
    lp.run_forever().unwrap();
    assert_eq!(runs.get(), 1);
    assert!(!caught(libc::SIGPWR));
}

#[test]
fn run_until_signal_returns_the_signal_and_removes_handlers() {
    let lp = EventLoop::new().unwrap();
    lp.call_soon(|| raise(libc::SIGURG)).unwrap();
    let got = lp.run_until_signal(&[libc::SIGURG, libc::SIGXCPU]).unwrap();
    assert_eq!(got, Some(libc::SIGURG));
    assert!(!caught(libc::SIGURG) && !caught(libc::SIGXCPU));
    // Stopped otherwise: None.
    lp.call_soon({
        let h = lp.handle();
        move || h.stop()
    })
    .unwrap();
    assert_eq!(lp.run_until_signal(&[libc::SIGURG]).unwrap(), None);
    assert!(matches!(
        lp.run_until_signal(&[libc::SIGURG, libc::SIGKILL]),
        Err(Error::SignalCannotBeCaught(_))
    ));
    assert!(!caught(libc::SIGURG));
}

/// Removing the last SIGINT handler gives SIGINT its default back: the
/// process dies of it. Run in a child (this test binary, filtered to this
/// test), so the test process is not the one killed.
#[test]
fn removing_last_sigint_handler_restores_default() {
    if std::env::var_os("SLOOP_SIGINT_CHILD").is_some() {
        let lp = EventLoop::new().unwrap();
        let handle = lp.handle();
        lp.add_signal_handler(libc::SIGINT, move || handle.stop())
            .unwrap();
        raise(libc::SIGINT);
        lp.run_forever().unwrap(); // the handler caught it
        assert!(lp.remove_signal_handler(libc::SIGINT).unwrap());
        raise(libc::SIGINT);
        std::thread::sleep(Duration::from_secs(5));
        std::process::exit(0); // not reached: SIGINT kills
    }
    use std::os::unix::process::ExitStatusExt;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "removing_last_sigint_handler_restores_default",
            "--nocapture",
        ])
        .env("SLOOP_SIGINT_CHILD", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

/// The figure for the closing note: median latency from `kill` to the
/// callback, the loop idle in its poll. `cargo test --release --test
/// signals -- --ignored --nocapture signal_latency`.
#[test]
#[ignore]
fn signal_latency() {
    let lp = EventLoop::new().unwrap();
    let got = Rc::new(Cell::new(None));
    let (g, handle) = (got.clone(), lp.handle());
    lp.add_signal_handler(libc::SIGVTALRM, move || {
        g.set(Some(Instant::now()));
        handle.stop();
    })
    .unwrap();
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(200));
            let at = Instant::now();
            raise(libc::SIGVTALRM);
            tx.send(at).unwrap();
        });
        lp.run_forever().unwrap();
        t.join().unwrap();
        samples.push(got.get().unwrap() - rx.recv().unwrap());
    }
    samples.sort();
    println!(
        "signal delivery latency (kill -> callback), 1000 signals: median {:?}, p90 {:?}",
        samples[500], samples[900]
    );
}
