//! `LoopHandle::stats`, `Remote::stats`, `Transport::stats`: the figures
//! are exact in small scripted scenarios, and come back to their baseline
//! after thousands of connections (the leak check other suites use).

mod support;

use std::io::{self, Read, Write};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use sloop::event_loop::LoopStats;
use sloop::{DatagramProtocol, EventLoop, Protocol, Transport};
use support::{connected, echo_server, new_loop, run, Echo};

/// Runs one iteration, then more until the ready queue is empty (what
/// closing transports scheduled has run), at most a few.
fn settle(lp: &EventLoop) -> LoopStats {
    for _ in 0..10 {
        lp.stop();
        lp.run_forever().unwrap();
        let s = lp.stats();
        if s.ready == 0 {
            return s;
        }
    }
    panic!("the ready queue does not empty: {:?}", lp.stats());
}

struct Quiet;
impl Protocol for Quiet {}

#[test]
fn three_transports_then_close_one() {
    let lp = new_loop();
    let base = lp.stats();
    assert_eq!(base.transports.total(), 0);
    assert_eq!(base.fds, 0);
    let conns: Vec<_> = (0..3).map(|_| connected(&lp, Quiet)).collect();
    let s = lp.stats();
    assert_eq!(s.transports.tcp, 3);
    assert_eq!(s.transports.total(), 3);
    assert_eq!(s.fds, 3);
    assert_eq!(s.transports_closed, 0);

    conns[0].0.close();
    // Closing schedules connection_lost; it deregisters in the next
    // iteration.
    assert_eq!(lp.stats().transports.tcp, 3);
    let s = settle(&lp);
    assert_eq!(s.transports.tcp, 2);
    assert_eq!(s.fds, 2);
    assert_eq!(s.transports_closed, 1);

    for (t, _) in &conns[1..] {
        t.abort();
    }
    let s = settle(&lp);
    assert_eq!(
        (s.transports.total(), s.fds, s.transports_closed),
        (0, 0, 3)
    );
}

#[test]
fn five_timers_cancel_two() {
    let lp = new_loop();
    let timers: Vec<_> = (0..5)
        .map(|_| lp.call_later(Duration::from_secs(3600), || {}).unwrap())
        .collect();
    let s = lp.stats();
    assert_eq!(
        (s.timers_scheduled, s.timers_live, s.timers_cancelled),
        (5, 5, 0)
    );
    timers[1].cancel();
    timers[3].cancel();
    timers[3].cancel(); // twice is once
    let s = lp.stats();
    assert_eq!(
        (s.timers_scheduled, s.timers_live, s.timers_cancelled),
        (5, 3, 2)
    );
    // The loop drops cancelled timers when they reach the heap's head (or
    // in bulk); the figures do not change when it does.
    timers[0].cancel();
    let s = settle(&lp);
    assert_eq!(
        (s.timers_scheduled, s.timers_live, s.timers_cancelled),
        (5, 2, 3)
    );
    assert!(
        lp.timer_count() < 5,
        "the head's cancelled timer was dropped"
    );
    // A timer that fires is no longer live, and was not cancelled.
    let h = lp.handle();
    lp.call_soon(move || {
        h.call_later(Duration::ZERO, || {}).unwrap();
    })
    .unwrap();
    let s = settle(&lp);
    assert_eq!(s.timers_scheduled, 6);
    run(&lp, sloop::sleep(Duration::from_millis(1)));
    let s = settle(&lp);
    // The sleep and run's safety timeout are timers too: 8 scheduled, the
    // timeout cancelled when the sleep won.
    assert_eq!(
        (s.timers_scheduled, s.timers_live, s.timers_cancelled),
        (8, 2, 4)
    );
}

#[test]
fn ready_queue_callbacks_and_tasks() {
    let lp = new_loop();
    for _ in 0..4 {
        lp.call_soon(|| {}).unwrap();
    }
    let s = lp.stats();
    assert_eq!((s.ready, s.callbacks), (4, 0));
    let tasks: Vec<_> = (0..3)
        .map(|_| lp.spawn_local(futures::future::pending::<()>()))
        .collect();
    assert_eq!(lp.stats().tasks, 3);
    assert_eq!(lp.stats().ready, 7);
    let s = settle(&lp);
    assert_eq!((s.ready, s.callbacks, s.tasks, s.task_polls), (0, 4, 3, 3));
    assert!(tasks[0].cancel());
    let s = settle(&lp);
    assert_eq!(s.tasks, 2);
    drop(tasks);
    let s = settle(&lp);
    assert_eq!(s.tasks, 2, "a dropped task handle detaches; the task lives");
    assert!(s.iterations >= s.polls && s.polls > 0);
}

#[test]
fn bytes_of_an_echo_on_one_loop() {
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    let s = lp.stats();
    assert_eq!((s.servers, s.listeners, s.fds), (1, 1, 1));
    let h = lp.handle();
    let client = run(&lp, async move {
        let mut stream = h.open_connection(addr).await?;
        stream.write_all(&[7; 100]).await?;
        let mut back = [0; 100];
        stream.read_exact(&mut back).await?;
        io::Result::Ok(stream)
    })
    .unwrap();
    let s = lp.stats();
    // Both ends are on this loop: 100 bytes each way, read and written
    // once by each.
    assert_eq!((s.bytes_read, s.bytes_written), (200, 200));
    assert_eq!(s.transports.tcp, 2);
    assert_eq!(s.write_buffered, 0);
    let t = client.transport();
    let ts = t.stats();
    assert_eq!((ts.bytes_received, ts.bytes_sent), (100, 100));
    assert!(ts.created_at <= lp.time());
    drop(client);
    server.close();
    run(&lp, server.wait_closed());
    let s = settle(&lp);
    // The totals keep what closed transports moved.
    assert_eq!((s.bytes_read, s.bytes_written), (200, 200));
    assert_eq!(
        (s.servers, s.listeners, s.fds, s.transports.total()),
        (0, 0, 0, 0)
    );
    assert_eq!(s.transports_closed, 2);
}

#[test]
fn buffered_and_paused() {
    let lp = new_loop();
    let (t, peer) = connected(&lp, Quiet);
    // The peer does not read: the kernel's buffers fill, the rest waits.
    let chunk = vec![1u8; 1 << 20];
    let (_, high) = t.write_buffer_limits();
    while t.write_buffer_size() <= high {
        t.write(&chunk).unwrap();
    }
    t.pause_reading();
    let s = lp.stats();
    assert_eq!(s.write_buffered, t.write_buffer_size());
    assert_eq!(t.stats().write_buffered, t.write_buffer_size());
    assert_eq!(s.paused_reading, 1);
    assert_eq!(s.paused_writing, 1, "over the high-water mark");
    assert_eq!(s.bytes_written, t.stats().bytes_sent);
    t.abort();
    let s = settle(&lp);
    assert_eq!(
        (s.write_buffered, s.paused_reading, s.paused_writing),
        (0, 0, 0)
    );
    drop(peer);
}

struct Dgram;
impl<A: sloop::DatagramAddr> DatagramProtocol<A> for Dgram {
    fn datagram_received(&mut self, _: &[u8], _: A) {}
}

#[test]
fn datagram_transports_are_a_kind() {
    let lp = new_loop();
    let t = run(
        &lp,
        lp.create_datagram_endpoint(|| Dgram)
            .local_addr("127.0.0.1:0"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let u = run(
        &lp,
        lp.create_unix_datagram_endpoint(|| Dgram)
            .local_addr(dir.path().join("d.sock")),
    )
    .unwrap();
    let s = lp.stats();
    assert_eq!((s.transports.udp, s.transports.unix_datagram), (1, 1));
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    t.sendto(b"hello", Some(peer.local_addr().unwrap()))
        .unwrap();
    let mut buf = [0; 16];
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(n, 5);
    assert_eq!(t.stats().bytes_sent, 5);
    assert_eq!(lp.stats().bytes_written, 5);
    t.close();
    u.close();
    let s = settle(&lp);
    assert_eq!((s.transports.total(), s.fds, s.bytes_written), (0, 0, 5));
}

#[test]
fn unix_streams_and_raw_readers() {
    let lp = new_loop();
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let t = run(&lp, lp.connect_accepted_socket(|| Quiet, a.into())).unwrap();
    let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
    c.set_nonblocking(true).unwrap();
    lp.add_reader(&c, || {}).unwrap();
    let s = lp.stats();
    assert_eq!((s.transports.unix, s.fds), (1, 2));
    t.write(b"abc").unwrap();
    let mut got = [0; 3];
    b.read_exact(&mut got).unwrap();
    b.write_all(b"xy").unwrap();
    lp.remove_reader(&c).unwrap();
    assert_eq!(lp.stats().fds, 1);
    t.close();
    let s = settle(&lp);
    assert_eq!((s.transports.total(), s.fds, s.bytes_written), (0, 0, 3));
}

#[test]
fn slow_callbacks_in_debug_mode() {
    let lp = EventLoop::builder()
        .debug(true)
        .slow_callback_duration(Duration::ZERO)
        .build()
        .unwrap();
    lp.call_soon(|| {}).unwrap();
    lp.call_soon(|| {}).unwrap();
    let s = settle(&lp);
    assert_eq!((s.callbacks, s.slow_callbacks), (2, 2));
    let slowest = s.slowest_callback.expect("one was slowest");
    assert!(slowest.what.contains("loop_stats.rs"), "{}", slowest.what);

    // Not counted outside debug mode.
    lp.set_debug(false);
    lp.call_soon(|| {}).unwrap();
    let s = settle(&lp);
    assert_eq!((s.callbacks, s.slow_callbacks), (3, 2));
}

#[test]
fn time_stats_when_asked() {
    let lp = new_loop();
    run(&lp, sloop::sleep(Duration::from_millis(5)));
    let s = lp.stats();
    assert_eq!(
        (s.time_polling, s.time_running, s.busy()),
        (Duration::ZERO, Duration::ZERO, None)
    );
    lp.set_time_stats(true);
    run(&lp, sloop::sleep(Duration::from_millis(5)));
    let s = lp.stats();
    assert!(s.time_polling > Duration::ZERO);
    let busy = s.busy().unwrap();
    assert!((0.0..=1.0).contains(&busy));
    lp.set_time_stats(false);
    assert!(!lp.time_stats());
}

#[test]
fn sums_over_loops() {
    let a = new_loop();
    let b = new_loop();
    a.call_soon(|| {}).unwrap();
    b.call_later(Duration::from_secs(60), || {}).unwrap();
    let mut sum = LoopStats::default();
    sum += a.stats();
    sum += b.stats();
    assert_eq!((sum.ready, sum.timers_live), (1, 1));
}

/// Back to the baseline after 10,000 connections through one loop, 100
/// at a time: no transport, fd, task, timer or queued item is left.
#[test]
fn baseline_after_ten_thousand_connections() {
    const CONNS: usize = 10_000;
    const AT_ONCE: usize = 100;
    let lp = new_loop();
    let base = settle(&lp);
    let (server, addr) = support::echo_server_with_backlog(&lp, 1024);
    let h = lp.handle();
    run(&lp, async move {
        for _ in 0..CONNS / AT_ONCE {
            let clients: Vec<_> = (0..AT_ONCE)
                .map(|i| {
                    let h2 = h.clone();
                    h.spawn_local(async move {
                        let mut s = h2.open_connection(addr).await?;
                        s.write_all(&[i as u8]).await?;
                        s.close().await?; // EOF: the echo server closes
                        let mut back = Vec::new();
                        s.read_to_end(&mut back).await?;
                        assert_eq!(back, [i as u8]);
                        io::Result::Ok(())
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap().unwrap();
            }
        }
    });
    server.close();
    run(&lp, server.wait_closed());
    let s = settle(&lp);
    assert_eq!(s.transports, base.transports);
    assert_eq!(s.transports_closed, 2 * CONNS as u64);
    assert_eq!(s.fds, base.fds);
    assert_eq!(s.tasks, base.tasks);
    assert_eq!(s.timers_live, base.timers_live);
    assert_eq!(s.ready, 0);
    assert_eq!((s.servers, s.listeners), (0, 0));
    assert_eq!(s.write_buffered, 0);
    assert_eq!(s.bytes_read, 2 * CONNS as u64);
    assert_eq!(s.bytes_written, 2 * CONNS as u64);
}

#[test]
fn remote_stats_from_another_thread() {
    let lp = new_loop();
    lp.call_later(Duration::from_secs(60), || {}).unwrap();
    let remote = lp.remote();
    let thread = std::thread::spawn(move || {
        let s = futures::executor::block_on(remote.stats().unwrap()).unwrap();
        remote.stop().unwrap();
        s
    });
    lp.run_forever().unwrap();
    let s = thread.join().unwrap();
    assert_eq!(s.timers_live, 1);
}

/// D15: the stats future dropped before the loop runs, after one poll,
/// and the loop closed under it.
#[test]
fn remote_stats_dropped_at_every_point() {
    use std::future::Future;
    use std::task::{Context, Poll};

    let lp = new_loop();
    let remote = lp.remote();
    // Dropped before the loop ran the request: the loop's send fails
    // quietly.
    drop(remote.stats().unwrap());
    let s = settle(&lp);
    assert_eq!(s.callbacks, 1, "the request ran and found nobody waiting");

    // Dropped after a poll that was pending.
    let mut fut = Box::pin(remote.stats().unwrap());
    let waker = futures::task::noop_waker();
    assert!(fut
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    drop(fut);
    settle(&lp);

    // Completed, then polled to the end.
    let mut fut = Box::pin(remote.stats().unwrap());
    settle(&lp);
    match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(Ok(s)) => assert!(s.callbacks >= 2),
        other => panic!("{other:?}"),
    }

    // The loop closes with the request queued: canceled, not hung.
    let fut = remote.stats().unwrap();
    drop(lp);
    assert!(futures::executor::block_on(fut).is_err());
    // And on a closed loop, refused at once.
    assert!(matches!(remote.stats(), Err(sloop::Error::Closed)));
}

#[test]
fn stats_inside_callbacks_and_protocols() {
    // stats() borrows nothing a callback or protocol may hold (D2).
    struct Peek(Option<Transport>);
    impl Protocol for Peek {
        fn connection_made(&mut self, t: &Transport) {
            let s = sloop::get_running_loop().unwrap().stats();
            assert_eq!(s.transports.tcp, 1);
            self.0 = Some(t.clone());
        }
        fn data_received(&mut self, data: &[u8]) {
            let t = self.0.as_ref().unwrap();
            assert_eq!(t.stats().bytes_received, data.len() as u64);
            let s = sloop::get_running_loop().unwrap().stats();
            assert_eq!(s.bytes_read, data.len() as u64);
            t.close();
        }
    }
    let lp = new_loop();
    let (t, mut peer) = connected(&lp, Peek(None));
    peer.write_all(b"ping").unwrap();
    let h = lp.handle();
    lp.call_soon(move || {
        // Counted as it starts.
        assert!(h.stats().callbacks >= 1);
    })
    .unwrap();
    while !t.is_closing() {
        lp.stop();
        lp.run_forever().unwrap();
    }
    settle(&lp);
    assert_eq!(lp.stats().transports.total(), 0);
    let _ = Echo::default();
}
