//! The rules of `sendto` (M09–M11) and the endpoint options (asyncio's
//! test_create_datagram_endpoint_* scenarios).

mod dgram_support;
#[path = "support/logs.rs"]
mod logs;

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use dgram_support::{count, create, log, run_for, Ev, Hooks};
use sloop::{DatagramTransport, Error, EventLoop, Family};

fn any_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn quiet(lp: &EventLoop) -> DatagramTransport {
    create(
        lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(any_v4()),
    )
    .unwrap()
}

/// M09: another address on a connected transport is refused with asyncio's
/// message; `None` and the peer's own address are accepted.
#[test]
fn connected_transport_refuses_other_addresses() {
    let lp = EventLoop::new().unwrap();
    let peer = UdpSocket::bind(any_v4()).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let t = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .remote_addr(peer_addr),
    )
    .unwrap();
    let err = t.sendto(b"x", Some(other)).unwrap_err();
    assert!(matches!(err, Error::InvalidAddress { .. }));
    assert_eq!(
        err.to_string(),
        format!("Invalid address: must be None or {peer_addr:?}")
    );
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::InvalidInput
    );
    t.sendto(b"none", None).unwrap();
    t.sendto(b"same", Some(peer_addr)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 16];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"none"[..], t.local_addr().unwrap()));
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"same");
    assert!(
        !t.is_closing(),
        "a refused sendto leaves the transport open"
    );
    t.close();
}

/// M10: no address on an unconnected transport is an error, and the
/// transport stays open (asyncio kills it with a fatal TypeError).
#[test]
fn unconnected_transport_requires_an_address() {
    let lp = EventLoop::new().unwrap();
    let t = quiet(&lp);
    let err = t.sendto(b"x", None).unwrap_err();
    assert!(matches!(err, Error::AddressRequired));
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert!(!t.is_closing());
    assert_eq!(t.peer_addr(), None);
    assert_eq!(t.get_extra_info("peername"), None);
    let peer = UdpSocket::bind(any_v4()).unwrap();
    t.sendto(b"ok", Some(peer.local_addr().unwrap())).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 4];
    assert_eq!(peer.recv(&mut buf).unwrap(), 2);
    t.close();
}

/// M11: sendto after close is refused with `ConnectionLost`, on connected
/// and unconnected transports alike, and counted; connection_lost comes
/// once, last.
#[test]
fn sendto_after_close_is_refused() {
    let lp = EventLoop::new().unwrap();
    let peer = UdpSocket::bind(any_v4()).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    for connected in [false, true] {
        let l = log();
        let h = lp.handle();
        let b = lp
            .create_datagram_endpoint({
                let l = l.clone();
                move || Hooks::new(&l).lost(move || h.stop())
            })
            .local_addr(any_v4());
        let t = if connected {
            create(&lp, b.remote_addr(peer_addr)).unwrap()
        } else {
            create(&lp, b).unwrap()
        };
        t.close();
        assert!(t.is_closing());
        for _ in 0..7 {
            let err = t.sendto(b"late", Some(peer_addr)).unwrap_err();
            assert!(matches!(err, Error::ConnectionLost), "{err:?}");
        }
        run_for(&lp, 5);
        assert_eq!(*l.borrow(), vec![Ev::Made, Ev::Lost(None)]);
        assert!(matches!(
            t.sendto(b"later", Some(peer_addr)),
            Err(Error::ConnectionLost)
        ));
        assert_eq!(
            t.raw_fd(),
            None,
            "the socket is closed after connection_lost"
        );
        t.close(); // closing twice does nothing
    }
}

/// Every transport method may be called from inside protocol callbacks:
/// sendto, close and abort from datagram_received, close from
/// connection_made.
#[test]
fn methods_are_callable_from_callbacks() {
    let lp = EventLoop::new().unwrap();
    let peer = UdpSocket::bind(any_v4()).unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // close inside connection_made: made, then lost.
    let l1 = log();
    let h = lp.handle();
    let t1 = create(
        &lp,
        lp.create_datagram_endpoint({
            let l1 = l1.clone();
            move || {
                Hooks::new(&l1)
                    .made(|t| {
                        t.sendto(b"bye", None).unwrap();
                        t.close();
                        assert!(t.is_closing());
                    })
                    .lost(move || h.stop())
            }
        })
        .remote_addr(peer_addr),
    )
    .unwrap();
    run_for(&lp, 5);
    assert_eq!(*l1.borrow(), vec![Ev::Made, Ev::Lost(None)]);
    let mut buf = [0; 8];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        peer.recv(&mut buf).unwrap(),
        3,
        "close sent what was queued"
    );
    drop(t1);

    // abort and set_write_buffer_limits inside datagram_received.
    let l2 = log();
    let h = lp.handle();
    let t2 = create(
        &lp,
        lp.create_datagram_endpoint({
            let l2 = l2.clone();
            move || {
                Hooks::new(&l2)
                    .data(|t, data, addr| {
                        t.sendto(data, Some(*addr)).unwrap();
                        t.set_write_buffer_limits(Some(10), None).unwrap();
                        assert_eq!(t.write_buffer_limits(), (2, 10));
                        t.pause_reading();
                        t.resume_reading();
                        t.abort();
                        t.abort();
                        t.close();
                    })
                    .lost(move || h.stop())
            }
        })
        .local_addr(any_v4()),
    )
    .unwrap();
    let t2_addr = t2.local_addr().unwrap();
    peer.send_to(b"one", t2_addr).unwrap();
    peer.send_to(b"two", t2_addr).unwrap();
    run_for(&lp, 5);
    let events = l2.borrow().clone();
    assert_eq!(events[0], Ev::Made);
    assert_eq!(events[1], Ev::Data(b"one".to_vec(), peer_addr));
    assert_eq!(
        events[2],
        Ev::Lost(None),
        "no datagram after abort, connection_lost last"
    );
    assert_eq!(events.len(), 3);
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"one",
        "sendto inside datagram_received was sent"
    );
}

/// A panic in a protocol method goes to the exception handler and is a
/// fatal error of the transport: connection_lost gets the panic's message.
#[test]
fn panic_in_datagram_received_is_fatal() {
    let lp = EventLoop::new().unwrap();
    let reported = Rc::new(RefCell::new(Vec::new()));
    let r2 = reported.clone();
    lp.set_exception_handler(Some(
        move |_: &sloop::LoopHandle, ctx: &sloop::ExceptionContext| {
            r2.borrow_mut().push(ctx.message.clone());
        },
    ));
    let l = log();
    let h = lp.handle();
    let t = create(
        &lp,
        lp.create_datagram_endpoint({
            let l = l.clone();
            move || {
                Hooks::new(&l)
                    .data(|_, _, _| panic!("boom"))
                    .lost(move || h.stop())
            }
        })
        .local_addr(any_v4()),
    )
    .unwrap();
    let peer = UdpSocket::bind(any_v4()).unwrap();
    peer.send_to(b"x", t.local_addr().unwrap()).unwrap();
    peer.send_to(b"y", t.local_addr().unwrap()).unwrap();
    run_for(&lp, 5);
    assert_eq!(
        *reported.borrow(),
        vec!["Fatal error: protocol.datagram_received() call failed.".to_owned()]
    );
    let events = l.borrow().clone();
    assert_eq!(events.len(), 3, "{events:?}");
    match &events[2] {
        Ev::Lost(Some(msg)) => assert!(msg.contains("boom"), "{msg}"),
        other => panic!("expected connection_lost with an error, got {other:?}"),
    }
    assert_eq!(count(&l, |e| matches!(e, Ev::Data(..))), 1);
}

/// Default options set no SO_REUSEADDR, SO_REUSEPORT or SO_BROADCAST
/// (M17: there is no reuse_address at all); the flags set theirs.
#[test]
fn socket_options_follow_the_builder() {
    let lp = EventLoop::new().unwrap();
    let plain = quiet(&lp);
    plain
        .with_socket(|s| {
            let s = socket2::SockRef::from(s);
            assert!(!s.reuse_address().unwrap());
            assert!(!s.reuse_port().unwrap());
            assert!(!s.broadcast().unwrap());
        })
        .unwrap();
    let flagged = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(any_v4())
            .reuse_port(true)
            .allow_broadcast(true),
    )
    .unwrap();
    flagged
        .with_socket(|s| {
            let s = socket2::SockRef::from(s);
            assert!(!s.reuse_address().unwrap());
            assert!(s.reuse_port().unwrap());
            assert!(s.broadcast().unwrap());
        })
        .unwrap();
    // reuse_port lets a second socket bind the same address.
    let addr = flagged.local_addr().unwrap();
    let twin = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(addr)
            .reuse_port(true),
    )
    .unwrap();
    assert_eq!(twin.local_addr(), Some(addr));
    // Without it, the address is taken.
    let err = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(addr),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    for t in [plain, flagged, twin] {
        t.close();
    }
}

/// A broadcast endpoint with a remote address is not connected; the remote
/// address is the default destination.
#[test]
fn broadcast_endpoint_is_not_connected() {
    let lp = EventLoop::new().unwrap();
    let peer = UdpSocket::bind(any_v4()).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let t = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .remote_addr(peer_addr)
            .allow_broadcast(true),
    )
    .unwrap();
    assert_eq!(t.peer_addr(), None);
    assert_eq!(t.remote_addr(), Some(peer_addr));
    t.send(b"hi").unwrap();
    assert!(matches!(
        t.sendto(b"x", Some("127.0.0.1:9".parse().unwrap())),
        Err(Error::InvalidAddress { .. })
    ));
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 4];
    assert_eq!(peer.recv(&mut buf).unwrap(), 2);
    t.close();
}

/// Bad combinations give asyncio's messages; an existing socket works.
#[test]
fn endpoint_option_errors_and_existing_socket() {
    let lp = EventLoop::new().unwrap();
    let msg = |e: std::io::Error| e.to_string();
    let e = create(&lp, lp.create_datagram_endpoint(|| Hooks::new(&log()))).unwrap_err();
    assert_eq!(msg(e), "unexpected address family");
    let e = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr("[::1]:0")
            .remote_addr("127.0.0.1:9"),
    )
    .unwrap_err();
    assert_eq!(msg(e), "can not get address information");
    let e = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(any_v4())
            .family(Family::V6),
    )
    .unwrap_err();
    assert_eq!(msg(e), "can not get address information");
    let e = create(
        &lp,
        lp.create_datagram_endpoint(|| Hooks::new(&log()))
            .socket(UdpSocket::bind(any_v4()).unwrap())
            .reuse_port(true),
    )
    .unwrap_err();
    assert_eq!(
        msg(e),
        "socket modifier keyword arguments can not be used when sock is specified. (reuse_port=true)"
    );

    let sock = UdpSocket::bind(any_v4()).unwrap();
    let addr = sock.local_addr().unwrap();
    let l = log();
    let h = lp.handle();
    let t = create(
        &lp,
        lp.create_datagram_endpoint({
            let l = l.clone();
            move || Hooks::new(&l).data(move |_, _, _| h.stop())
        })
        .socket(sock),
    )
    .unwrap();
    assert_eq!(t.local_addr(), Some(addr));
    let peer = UdpSocket::bind(any_v4()).unwrap();
    peer.send_to(b"hey", addr).unwrap();
    run_for(&lp, 5);
    assert_eq!(
        l.borrow()[1],
        Ev::Data(b"hey".to_vec(), peer.local_addr().unwrap())
    );
    t.close();
}

/// Defect: the datagram transport's warning for writes after a loss said
/// "socket.sendto() raised exception." and came on the sixth refused
/// write; asyncio says "socket.send() raised exception." from the fifth.
#[test]
fn refused_sendto_warns_from_the_fifth_with_asyncios_text() {
    logs::capture_logs();
    let lp = EventLoop::new().unwrap();
    let t = quiet(&lp);
    let to = t.local_addr();
    t.abort();
    logs::take_logs();
    let warnings = || {
        logs::take_logs()
            .iter()
            .filter(|l| *l == "WARN socket.send() raised exception.")
            .count()
    };
    for _ in 0..4 {
        assert!(matches!(t.sendto(b"x", to), Err(Error::ConnectionLost)));
    }
    assert_eq!(warnings(), 0, "no warning for the first four");
    assert!(matches!(t.sendto(b"x", to), Err(Error::ConnectionLost)));
    assert_eq!(warnings(), 1, "the fifth warns");
}

/// Defect: `with_socket` held the socket borrowed while the closure ran
/// (against D2): closing the loop from inside it left the socket open.
#[test]
fn with_socket_closure_may_close_the_loop() {
    let lp = EventLoop::new().unwrap();
    let t = quiet(&lp);
    let h = lp.handle();
    assert!(t.with_socket(|_| h.close().unwrap()).is_some());
    assert_eq!(t.raw_fd(), None, "closing the loop closed the socket");
}
