//! `LoopGroup`: connections spread over the loops and pinned to one,
//! servers on every loop (callback, async, UDP, round robin), setup on
//! each loop, statistics per loop and summed, and shutdown: clean, with
//! clients that never read, with a panic in one loop.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use sloop::group::{LoopError, LoopGroup};
use sloop::{DatagramProtocol, DatagramTransport, Protocol, Transport};

/// Generous; never what a test waits for.
const SAFETY: Duration = Duration::from_secs(20);

/// An echo that checks it runs on one thread for its whole life and
/// records which.
struct Pinned {
    t: Option<Transport>,
    thread: ThreadId,
    moved: Arc<AtomicUsize>,
    threads: Arc<Mutex<HashSet<ThreadId>>>,
}

impl Pinned {
    fn check(&self) {
        if std::thread::current().id() != self.thread {
            self.moved.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Protocol for Pinned {
    fn connection_made(&mut self, t: &Transport) {
        self.thread = std::thread::current().id();
        self.threads.lock().unwrap().insert(self.thread);
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.check();
        let _ = self.t.as_ref().unwrap().write(data);
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.check();
        self.t = None;
    }
}

fn echo_once(addr: SocketAddr, byte: u8) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(SAFETY)).unwrap();
    c.write_all(&[byte, byte]).unwrap();
    let mut back = [0; 2];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, [byte, byte]);
    c
}

#[test]
fn thousand_connections_spread_and_pinned() {
    let group = LoopGroup::new(2).unwrap();
    let moved = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let (m, th) = (moved.clone(), threads.clone());
    let server = group
        .start_server(
            move || Pinned {
                t: None,
                thread: std::thread::current().id(),
                moved: m.clone(),
                threads: th.clone(),
            },
            "127.0.0.1:0",
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    // All open at once, each echoed twice.
    let mut clients: Vec<TcpStream> = (0..1000).map(|i| echo_once(addr, i as u8)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&[i as u8]).unwrap();
        let mut b = [0; 1];
        c.read_exact(&mut b).unwrap();
    }
    let stats = group.stats();
    let per_loop: Vec<usize> = stats
        .loops
        .iter()
        .map(|s| s.as_ref().unwrap().transports.tcp)
        .collect();
    assert_eq!(per_loop.iter().sum::<usize>(), 1000, "{per_loop:?}");
    assert!(
        per_loop.iter().all(|&n| n > 0),
        "every loop serves some: {per_loop:?}"
    );
    assert_eq!(stats.total.transports.tcp, 1000);
    assert_eq!(stats.total.listeners, 2);
    assert_eq!(threads.lock().unwrap().len(), 2);
    drop(clients);
    let report = group.shutdown(SAFETY);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        moved.load(Ordering::SeqCst),
        0,
        "a connection changed loops"
    );
    let closed: u64 = report
        .loops
        .iter()
        .map(|l| l.stats.as_ref().unwrap().transports_closed)
        .sum();
    assert_eq!(closed, 1000);
}

/// Writes more than a client that never reads will take.
struct Flood;
impl Protocol for Flood {
    fn connection_made(&mut self, t: &Transport) {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..8 {
            let _ = t.write(&chunk);
        }
        // close waits for the buffer to drain: it never will.
        t.close();
    }
}

#[test]
fn shutdown_with_clients_that_never_read() {
    let group = LoopGroup::new(2).unwrap();
    let server = group.start_server(|| Flood, "127.0.0.1:0").unwrap();
    let addr = server.local_addrs()[0];
    let clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Wait until every connection is accepted and flooding.
    let s = wait_for(&group, |s| s.total.paused_writing == 20);
    assert_eq!(s.total.transports.tcp, 20);
    assert!(s.total.write_buffered > 0);
    let timeout = Duration::from_millis(200);
    let report = group.shutdown(timeout);
    assert_eq!(report.aborted(), 20, "{report:?}");
    assert!(report.elapsed >= timeout, "waited for the deadline");
    assert!(report
        .loops
        .iter()
        .all(|l| l.completed && l.panic.is_none()));
    assert!(!report.is_clean());
    drop(clients);
}

/// Polls the group's stats until `done` (the group's loops run on other
/// threads; nothing here can be awaited).
fn wait_for(
    group: &LoopGroup,
    done: impl Fn(&sloop::group::GroupStats) -> bool,
) -> sloop::group::GroupStats {
    let start = std::time::Instant::now();
    loop {
        let s = group.stats();
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < SAFETY, "never reached: {s:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_panic_in_one_loops_setup_is_reported() {
    let group = LoopGroup::new(3).unwrap();
    let results = group.spawn_on_each(|lp| {
        if std::thread::current().name() == Some("sloop-group-1") {
            panic!("setup failed on purpose");
        }
        lp.debug()
    });
    assert!(matches!(results[0], Ok(false)));
    match &results[1] {
        Err(LoopError::Panicked(msg)) => assert!(msg.contains("on purpose"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(results[2], Ok(false)));
    // The loop runs on, and the group shuts down cleanly.
    assert!(group.spawn_on_each(|_| ()).iter().all(Result::is_ok));
    let report = group.shutdown(SAFETY);
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_panic_escaping_one_loop_is_reported_and_the_others_shut_down() {
    let group =
        LoopGroup::with_options(3, sloop::EventLoop::builder().propagate_panics(true)).unwrap();
    let server = group.start_server(Pinned::quiet, "127.0.0.1:0").unwrap();
    let (tx, rx) = mpsc::channel();
    group
        .remote(1)
        .unwrap()
        .call_soon(move || {
            let _ = tx.send(());
            panic!("the loop dies");
        })
        .unwrap();
    rx.recv().unwrap();
    // Loop 1's thread has ended (or is ending): calls to it fail, the
    // others answer.
    let results = group.spawn_on_each(|_| 1);
    assert!(
        matches!(results[1], Err(LoopError::Stopped)),
        "{:?}",
        results[1]
    );
    assert!(results[0].is_ok() && results[2].is_ok());
    let _ = server;
    let report = group.shutdown(SAFETY);
    assert_eq!(report.loops[1].panic.as_deref(), Some("the loop dies"));
    assert!(report.loops[1].stats.is_none());
    for i in [0, 2] {
        let l = &report.loops[i];
        assert!(l.completed && l.panic.is_none() && l.aborted == 0, "{l:?}");
        assert_eq!(l.stats.as_ref().unwrap().listeners, 0, "closed at shutdown");
    }
}

impl Pinned {
    fn quiet() -> Pinned {
        Pinned {
            t: None,
            thread: std::thread::current().id(),
            moved: Arc::default(),
            threads: Arc::default(),
        }
    }
}

struct Hello;
impl Protocol for Hello {
    fn connection_made(&mut self, t: &Transport) {
        t.write(b"hi").unwrap();
    }
}

#[test]
fn round_robin_hands_connections_in_turn() {
    let group = LoopGroup::new(3).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = group.start_server_round_robin(|| Hello, listener).unwrap();
    let addr = server.local_addrs()[0];
    let clients: Vec<TcpStream> = (0..9)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            let mut b = [0; 2];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"hi");
            c
        })
        .collect();
    let stats = group.stats();
    for s in &stats.loops {
        assert_eq!(s.as_ref().unwrap().transports.tcp, 3, "{stats:?}");
    }
    // The acceptor's listener is an fd of loop 0.
    assert_eq!(stats.loops[0].as_ref().unwrap().fds, 4);
    // Clients that stay: aborted at the deadline.
    let report = group.shutdown(Duration::from_millis(20));
    assert_eq!(report.aborted(), 9, "{report:?}");
    drop(clients);
}

#[test]
fn round_robin_clean_shutdown_when_clients_leave() {
    let group = LoopGroup::new(2).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = group
        .start_server_round_robin(Pinned::quiet, listener)
        .unwrap();
    for i in 0..10 {
        drop(echo_once(server.local_addrs()[0], i));
    }
    let report = group.shutdown(SAFETY);
    assert!(report.is_clean(), "{report:?}");
    let closed: u64 = report
        .loops
        .iter()
        .map(|l| l.stats.as_ref().unwrap().transports_closed)
        .sum();
    assert_eq!(closed, 10);
}

#[test]
fn async_handlers_on_every_loop() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let group = LoopGroup::new(2).unwrap();
    let server = group
        .start_server_async(
            |mut s: sloop::TransportStream| async move {
                let mut buf = [0; 16];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            "127.0.0.1:0",
        )
        .unwrap();
    let clients: Vec<_> = (0..50)
        .map(|i| echo_once(server.local_addrs()[0], i))
        .collect();
    let stats = group.stats();
    assert_eq!(stats.total.transports.tcp, 50);
    assert_eq!(stats.total.tasks, 50, "one handler task per connection");
    drop(clients);
    let report = group.shutdown(SAFETY);
    assert!(report.is_clean(), "{report:?}");
}

struct UdpEcho(Option<DatagramTransport>);
impl DatagramProtocol for UdpEcho {
    fn connection_made(&mut self, t: &DatagramTransport) {
        self.0 = Some(t.clone());
    }
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        let _ = self.0.as_ref().unwrap().sendto(data, Some(from));
    }
}

#[test]
fn udp_endpoints_on_every_loop() {
    let group = LoopGroup::new(2).unwrap();
    let udp = group
        .create_datagram_endpoint(|| UdpEcho(None), "127.0.0.1:0")
        .unwrap();
    for i in 0..20u8 {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(SAFETY)).unwrap();
        c.send_to(&[i], udp.local_addr()).unwrap();
        let mut b = [0; 4];
        assert_eq!(c.recv(&mut b).unwrap(), 1);
        assert_eq!(b[0], i);
    }
    let stats = group.stats();
    assert_eq!(stats.total.transports.udp, 2);
    assert_eq!(stats.total.bytes_read, 20);
    assert_eq!(stats.total.bytes_written, 20);
    udp.close();
    let stats = group.stats();
    assert_eq!(stats.total.transports.udp, 0, "{stats:?}");
    assert!(group.shutdown(SAFETY).is_clean());
}

#[test]
fn stats_per_loop_and_summed() {
    let group = LoopGroup::new(2).unwrap();
    group.spawn_on_each(|lp| {
        for _ in 0..3 {
            lp.call_later(Duration::from_secs(60), || {}).unwrap();
        }
    });
    let s = group.stats();
    assert_eq!(s.loops.len(), 2);
    for l in &s.loops {
        assert_eq!(l.as_ref().unwrap().timers_live, 3);
    }
    assert_eq!(s.total.timers_live, 6);
    // Remote::stats agrees.
    let r = futures::executor::block_on(group.remote(0).unwrap().stats().unwrap()).unwrap();
    assert_eq!(r.timers_live, 3);
}

#[test]
fn methods_refuse_on_the_groups_own_threads() {
    let group = Arc::new(LoopGroup::new(2).unwrap());
    let g = group.clone();
    let (tx, rx) = mpsc::channel();
    group
        .remote(0)
        .unwrap()
        .call_soon(move || {
            let r = g.spawn_on_each(|_| ());
            let s = g.start_server(|| Hello, "127.0.0.1:0").map(|_| ());
            drop(g); // not the last: nothing to shut down here
            let _ = tx.send((
                r.iter().all(|r| matches!(r, Err(LoopError::OnGroupThread))),
                s.is_err(),
            ));
        })
        .unwrap();
    assert_eq!(rx.recv().unwrap(), (true, true));
    let group = Arc::try_unwrap(group).expect("the loop's clone is gone");
    assert!(group.shutdown(SAFETY).is_clean());
}

#[test]
fn group_server_handles_dropped_and_closed_at_each_point() {
    let group = LoopGroup::new(2).unwrap();
    // Dropped at once: the loops still serve until shutdown.
    let server = group.start_server(|| Hello, "127.0.0.1:0").unwrap();
    let addr = server.local_addrs()[0];
    drop(server);
    let mut c = TcpStream::connect(addr).unwrap();
    let mut b = [0; 2];
    c.read_exact(&mut b).unwrap();
    drop(c);
    // Closed twice (the second finds nothing), and cloned.
    let server = group.start_server(|| Hello, "127.0.0.1:0").unwrap();
    let clone = server.clone();
    server.close();
    clone.close();
    assert!(TcpStream::connect(server.local_addrs()[0]).is_err());
    let udp = group
        .create_datagram_endpoint(|| UdpEcho(None), "127.0.0.1:0")
        .unwrap();
    let udp2 = udp.clone();
    drop(udp);
    let stats = group.stats();
    assert_eq!(stats.total.listeners, 2, "the dropped server's");
    assert_eq!(stats.total.transports.udp, 2);
    let report = group.shutdown(SAFETY);
    assert!(report.is_clean(), "{report:?}");
    // Closed after the group is gone: the loops have stopped; nothing
    // happens.
    udp2.close();
    clone.close();
}

#[test]
fn a_bind_error_is_returned() {
    let group = LoopGroup::new(2).unwrap();
    // A port held without SO_REUSEPORT cannot be shared.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = group
        .start_server(|| Hello, taken.local_addr().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(group.stats().total.listeners, 0);
    assert!(matches!(
        LoopGroup::new(0).map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    ));
    assert!(group.shutdown(SAFETY).is_clean());
}
