//! Blocking work off the loop: `run_in_executor`, its per-loop bound,
//! `shutdown_default_executor`, `getaddrinfo`/`getnameinfo`, and every
//! future dropped at each point of its life (D15).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sloop::{Error, EventLoop};

/// A gate jobs wait at until it is opened.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (m, c) = &*self.0;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait(open).unwrap();
        }
    }
    fn open(&self) {
        let (m, c) = &*self.0;
        *m.lock().unwrap() = true;
        c.notify_all();
    }
}

/// Counts jobs running at once, and the most seen.
#[derive(Clone, Default)]
struct Concurrency(Arc<(AtomicUsize, AtomicUsize)>);

impl Concurrency {
    fn enter(&self) {
        let now = self.0 .0.fetch_add(1, Ordering::SeqCst) + 1;
        self.0 .1.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
    fn max(&self) -> usize {
        self.0 .1.load(Ordering::SeqCst)
    }
}

#[test]
fn thousand_jobs_complete_while_timers_run_on_time() {
    let lp = EventLoop::new().unwrap();
    lp.set_executor_limit(4);
    let gate = Gate::default();
    let running = Concurrency::default();
    let done = Rc::new(RefCell::new(Vec::new()));
    let timer_fired_with = Rc::new(RefCell::new(None));
    for i in 0..1000u32 {
        let (gate, running) = (gate.clone(), running.clone());
        let job = lp
            .run_in_executor(move || {
                running.enter();
                gate.wait();
                std::thread::sleep(Duration::from_micros(u64::from(i % 7) * 50));
                running.leave();
                i
            })
            .unwrap();
        let done = done.clone();
        lp.spawn_local(async move {
            let v = job.await.unwrap();
            done.borrow_mut().push(v);
        })
        .detach();
    }
    // Every job is blocked at the gate: the timer must still fire, and it
    // opens the gate.
    let (d, g, t) = (done.clone(), gate.clone(), timer_fired_with.clone());
    lp.call_later(Duration::from_millis(10), move || {
        *t.borrow_mut() = Some(d.borrow().len());
        g.open();
    })
    .unwrap();
    let d = done.clone();
    lp.run_until_complete(async move {
        while d.borrow().len() < 1000 {
            sloop::sleep(Duration::from_millis(1)).await;
        }
    })
    .unwrap();
    assert_eq!(*timer_fired_with.borrow(), Some(0));
    let mut got = done.borrow().clone();
    got.sort();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(running.max() <= 4, "{} jobs ran at once", running.max());
}

#[test]
fn limit_bounds_jobs_in_flight_and_raising_it_starts_queued_ones() {
    let lp = EventLoop::new().unwrap();
    lp.set_executor_limit(1);
    assert_eq!(lp.executor_limit(), 1);
    let gate = Gate::default();
    let running = Concurrency::default();
    let started = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<_> = (0..3)
        .map(|_| {
            let (gate, running, started) = (gate.clone(), running.clone(), started.clone());
            lp.run_in_executor(move || {
                running.enter();
                started.fetch_add(1, Ordering::SeqCst);
                gate.wait();
                running.leave();
            })
            .unwrap()
        })
        .collect();
    // Two slots: both waiting jobs can start; wait until both did.
    lp.set_executor_limit(2);
    let s = started.clone();
    lp.run_until_complete(async move {
        while s.load(Ordering::SeqCst) < 2 {
            sloop::sleep(Duration::from_millis(1)).await;
        }
    })
    .unwrap();
    gate.open();
    lp.run_until_complete(futures::future::join_all(jobs))
        .unwrap()
        .into_iter()
        .for_each(|r| r.unwrap());
    assert_eq!(running.max(), 2);
    lp.set_executor_limit(0);
    assert_eq!(lp.executor_limit(), 1);
}

#[test]
fn a_panicking_job_panics_where_awaited() {
    let lp = EventLoop::new().unwrap();
    let job = lp
        .run_in_executor(|| -> u32 { panic!("job failed") })
        .unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| lp.run_until_complete(job)));
    let msg = caught.unwrap_err();
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"job failed"));
    // The slot was released: the next job runs.
    let next = lp.run_in_executor(|| 1).unwrap();
    assert_eq!(lp.run_until_complete(next).unwrap().unwrap(), 1);
}

#[test]
fn shutdown_waits_for_jobs_and_refuses_new_ones() {
    let lp = EventLoop::new().unwrap();
    let gate = Gate::default();
    let g = gate.clone();
    let job = lp.run_in_executor(move || g.wait()).unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let shutdown = lp.shutdown_default_executor();
    assert!(matches!(
        lp.run_in_executor(|| ()),
        Err(Error::ExecutorShutdown)
    ));
    assert!(matches!(
        lp.getaddrinfo("localhost", "80"),
        Err(Error::ExecutorShutdown)
    ));
    let f = finished.clone();
    let g = gate.clone();
    lp.call_later(Duration::from_millis(5), move || {
        f.store(true, Ordering::SeqCst);
        g.open();
    })
    .unwrap();
    lp.run_until_complete(shutdown).unwrap();
    assert!(finished.load(Ordering::SeqCst));
    lp.run_until_complete(job).unwrap().unwrap();
    // A closed loop's shutdown completes at once.
    lp.close().unwrap();
    futures::executor::block_on(lp.shutdown_default_executor());
    assert!(matches!(lp.run_in_executor(|| ()), Err(Error::Closed)));
}

#[test]
fn getaddrinfo_localhost_http_and_getnameinfo() {
    let lp = EventLoop::new().unwrap();
    let addrs = lp
        .run_until_complete(lp.getaddrinfo("localhost", "http").unwrap())
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.port() == 80 && a.ip().is_loopback()));
    let addrs = lp
        .run_until_complete(lp.getaddrinfo("127.0.0.1", "8080").unwrap())
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(addrs, ["127.0.0.1:8080".parse().unwrap()]);
    let e = lp
        .run_until_complete(lp.getaddrinfo("localhost", "no-such-service").unwrap())
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let (host, service) = lp
        .run_until_complete(
            lp.getnameinfo(
                "127.0.0.1:443".parse().unwrap(),
                libc::NI_NUMERICHOST | libc::NI_NUMERICSERV,
            )
            .unwrap(),
        )
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((host.as_str(), service.as_str()), ("127.0.0.1", "443"));
}

/// D15: a job's future dropped while queued (the job never runs), while
/// running (it finishes, its slot is released), after completion; a
/// loop closed with jobs running and queued; a shutdown future dropped
/// while waiting.
#[test]
fn dropped_at_every_point() {
    let lp = EventLoop::new().unwrap();
    lp.set_executor_limit(1);
    let gate = Gate::default();
    let g = gate.clone();
    let running = lp.run_in_executor(move || g.wait()).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let queued = lp
        .run_in_executor(move || r.store(true, Ordering::SeqCst))
        .unwrap();
    drop(queued);
    let shutdown_waiting = lp.shutdown_default_executor();
    let mut shutdown_waiting = Box::pin(shutdown_waiting);
    assert!(futures::FutureExt::now_or_never(shutdown_waiting.as_mut()).is_none());
    drop(shutdown_waiting);
    drop(running); // running: finishes alone
    gate.open();
    lp.run_until_complete(lp.shutdown_default_executor())
        .unwrap();
    assert!(!ran.load(Ordering::SeqCst), "a dropped queued job ran");

    // Closed with one job running and one queued.
    let lp = EventLoop::new().unwrap();
    lp.set_executor_limit(1);
    let gate = Gate::default();
    let g = gate.clone();
    let running = lp.run_in_executor(move || g.wait()).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let queued = lp
        .run_in_executor(move || r.store(true, Ordering::SeqCst))
        .unwrap();
    lp.close().unwrap();
    gate.open();
    assert!(matches!(
        futures::executor::block_on(running),
        Err(Error::Closed)
    ));
    assert!(matches!(
        futures::executor::block_on(queued),
        Err(Error::Closed)
    ));
    assert!(!ran.load(Ordering::SeqCst));

    // Completed, then dropped.
    let lp = EventLoop::new().unwrap();
    let job = lp.run_in_executor(|| 5).unwrap();
    assert_eq!(lp.run_until_complete(job).unwrap().unwrap(), 5);
    // A lookup's future dropped mid-lookup, then the loop goes on.
    let lookup = lp.getaddrinfo("localhost", "http").unwrap();
    drop(lookup);
    let ok = lp.run_in_executor(|| 6).unwrap();
    assert_eq!(lp.run_until_complete(ok).unwrap().unwrap(), 6);
}
