//! Opening connections: errors, several addresses, Happy Eyeballs,
//! local_addr, an existing socket, cancellation, socket options and
//! addresses (asyncio-surface 1.5 and 2.7; reliability R09).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use sloop::Address;
use support::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn refused_connection_is_an_error() {
    let lp = new_loop();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (p, rec) = Recorder::new();
    let err = run(&lp, lp.create_connection(move || p, ("127.0.0.1", port))).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        rec.borrow().events.is_empty(),
        "no callback for a failed connect"
    );
}

#[test]
fn extra_info_and_nodelay() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (p, rec) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || p, ("127.0.0.1", addr.port())),
    )
    .unwrap();
    assert_eq!(
        rec.borrow().events,
        vec![Ev::Made],
        "returned after connection_made"
    );
    let (peer, peer_side) = listener.accept().unwrap();
    assert_eq!(t.peer_addr(), Some(Address::Inet(addr)));
    assert_eq!(t.local_addr(), Some(Address::Inet(peer_side)));
    assert_eq!(t.get_extra_info("peername"), Some(addr.to_string()));
    assert_eq!(t.get_extra_info("sockname"), Some(peer_side.to_string()));
    assert!(t.get_extra_info("socket").is_some());
    assert_eq!(
        t.with_socket(|s| s.nodelay().unwrap()),
        Some(true),
        "TCP_NODELAY by default"
    );
    drop(peer);
    t.abort();
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    assert_eq!(t.peer_addr(), None, "none once closed");
}

#[test]
fn every_address_is_tried_and_happy_eyeballs() {
    // "localhost" resolves (on a thread) to ::1 and/or 127.0.0.1; only the
    // IPv4 one listens, so an IPv6 attempt (if any) fails first.
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for eyeballs in [false, true] {
        let (p, _rec) = Recorder::new();
        let mut c = lp.create_connection(move || p, ("localhost", port));
        if eyeballs {
            c = c.happy_eyeballs_delay(Duration::from_millis(5));
        }
        let t = run(&lp, c).unwrap();
        assert!(matches!(t.peer_addr(), Some(Address::Inet(a)) if a.port() == port));
        let _ = listener.accept().unwrap();
        t.abort();
    }
}

#[test]
fn local_addr_binds_first() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let local = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (p, _rec) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || p, ("127.0.0.1", port))
            .local_addr(local),
    )
    .unwrap();
    let (_s, seen) = listener.accept().unwrap();
    assert_eq!(seen, local);
    // The same local address again is in use.
    let (p, _rec) = Recorder::new();
    let err = run(
        &lp,
        lp.create_connection(move || p, ("127.0.0.1", port))
            .local_addr(local),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "error while attempting to bind on address {local}"
        )),
        "{err}"
    );
    t.abort();
}

#[test]
fn connect_accepted_socket_runs_a_protocol() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (p, rec) = Recorder::new();
    let t = run(
        &lp,
        lp.connect_accepted_socket(move || p, socket2::Socket::from(accepted)),
    )
    .unwrap();
    client.write_all(b"over an accepted socket").unwrap();
    let r = rec.clone();
    run(&lp, until(move || r.borrow().data.len() == 23));
    t.write(b"reply").unwrap();
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"reply");
    t.close();
    let udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let (p, _) = Recorder::new();
    let err = run(&lp, lp.connect_accepted_socket(move || p, udp)).unwrap_err();
    assert!(err.to_string().contains("A Stream Socket was expected"));
}

#[test]
fn cancel_while_connecting_leaks_nothing() {
    // R09: listen(0) plus one unaccepted connection leaves later connects
    // in SYN-SENT; a timeout drops the future, which closes its socket.
    // In a child process, so other tests' sockets do not disturb the count.
    let status = in_child("cancel_while_connecting_leaks_nothing", &[], cancel_child);
    assert!(status.success(), "child failed: {status:?}");
}

fn cancel_child() {
    let lp = new_loop();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let f = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        f.set_nonblocking(true).unwrap();
        let _ = f.connect(&addr.into());
        fillers.push(f);
    }
    let before = open_fds();
    for _ in 0..20 {
        let (p, rec) = Recorder::new();
        let started = std::time::Instant::now();
        let r = lp
            .run_until_complete(sloop::timeout(
                Duration::from_millis(50),
                lp.create_connection(move || p, ("127.0.0.1", addr.port())),
            ))
            .unwrap();
        match r {
            Err(_elapsed) => {
                assert!(started.elapsed() < Duration::from_millis(50 + 100));
            }
            Ok(Ok(t)) => t.abort(), // the kernel let one through after all
            Ok(Err(e)) => panic!("unexpected error {e}"),
        }
        assert!(rec.borrow().events.is_empty() || rec.borrow().events[0] == Ev::Made);
    }
    run(&lp, sloop::sleep(Duration::from_millis(5)));
    assert_eq!(open_fds(), before, "no socket left behind");
}

#[test]
fn create_connection_dropped_after_its_transport_exists_closes_it() {
    // D15: asyncio closes the transport when the waiter is cancelled.
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (p, rec) = Recorder::new();
    // Poll 1 starts the connect; poll 2, once it is done, makes the
    // transport and waits for connection_made.
    run(
        &lp,
        drop_after_polls(lp.create_connection(move || p, ("127.0.0.1", port)), 2),
    );
    let (peer, _) = listener.accept().unwrap();
    peer_sees_eof(&lp, peer);
    assert_eq!(rec.borrow().events, [], "no callback after the drop");
    assert_eq!(Rc::strong_count(&rec), 1, "the protocol was dropped");
}

#[test]
fn create_connection_dropped_while_connecting_closes_the_socket() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (p, rec) = Recorder::new();
    run(
        &lp,
        drop_after_polls(lp.create_connection(move || p, ("127.0.0.1", port)), 1),
    );
    // The kernel finished the handshake; our end is closed.
    let (peer, _) = listener.accept().unwrap();
    peer_sees_eof(&lp, peer);
    assert_eq!(rec.borrow().events, []);
    assert_eq!(Rc::strong_count(&rec), 1);
}

#[test]
fn connect_accepted_socket_dropped_after_its_transport_exists_closes_it() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (p, rec) = Recorder::new();
    // Poll 1 makes the transport at once.
    run(
        &lp,
        drop_after_polls(
            lp.connect_accepted_socket(move || p, socket2::Socket::from(accepted)),
            1,
        ),
    );
    peer_sees_eof(&lp, client);
    assert_eq!(rec.borrow().events, [], "no callback after the drop");
    assert_eq!(Rc::strong_count(&rec), 1, "the protocol was dropped");
}

#[test]
fn connect_accepted_socket_dropped_unpolled_closes_the_socket() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (p, rec) = Recorder::new();
    drop(lp.connect_accepted_socket(move || p, socket2::Socket::from(accepted)));
    peer_sees_eof(&lp, client);
    assert_eq!(rec.borrow().events, []);
    assert_eq!(Rc::strong_count(&rec), 1);
}

#[test]
fn connect_dropped_after_connection_made_ran_gives_connection_lost() {
    // The transport is made (poll 1) and connection_made runs, which wakes
    // the future; it is dropped then, before it hands the transport over.
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (p, rec) = Recorder::new();
    run(
        &lp,
        drop_at_wake_after_polls(
            lp.connect_accepted_socket(move || p, socket2::Socket::from(accepted)),
            1,
        ),
    );
    peer_sees_eof(&lp, client);
    assert_eq!(rec.borrow().events, [Ev::Made, Ev::Lost(None)]);
    assert_eq!(Rc::strong_count(&rec), 1, "the protocol was dropped");
}
