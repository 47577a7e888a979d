//! One address convention for every constructor (`sloop::ToAddrs`): each
//! form reaches the same socket, names and service names are resolved off
//! the loop thread, numeric addresses at once, and a malformed address is
//! an `InvalidInput` error of the future, never a panic (asyncio-surface
//! 1.4 to 1.6: host/port, service names, getaddrinfo in the executor).

mod support;

use std::future::IntoFuture;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};

use futures::{FutureExt, StreamExt};
use sloop::{Address, DatagramProtocol, DatagramSocket, LoopHandle, Protocol, ToAddrs};
use support::*;

struct Quiet;
impl Protocol for Quiet {}

struct QuietDatagrams;
impl DatagramProtocol for QuietDatagrams {
    fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
}

/// Connects with `addr` and returns the peer address the transport got.
fn connect_with(lp: &sloop::EventLoop, listener: &TcpListener, addr: impl ToAddrs) -> SocketAddr {
    let t = run(lp, lp.create_connection(|| Quiet, addr)).expect("connects");
    let _ = listener.accept().unwrap();
    let Some(Address::Inet(peer)) = t.peer_addr() else {
        panic!("an inet peer");
    };
    t.abort();
    peer
}

#[test]
fn every_address_form_reaches_the_same_listener() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sa = listener.local_addr().unwrap();
    let port = sa.port();
    let text = sa.to_string();
    let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let peers = [
        connect_with(&lp, &listener, text.as_str()),
        connect_with(&lp, &listener, &text),
        connect_with(&lp, &listener, text.clone()),
        connect_with(&lp, &listener, ("127.0.0.1", port)),
        connect_with(&lp, &listener, (String::from("127.0.0.1"), port)),
        connect_with(&lp, &listener, ("127.0.0.1", port.to_string().as_str())),
        connect_with(&lp, &listener, (IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        connect_with(&lp, &listener, (Ipv4Addr::LOCALHOST, port)),
        connect_with(&lp, &listener, sa),
        connect_with(&lp, &listener, v4),
        connect_with(&lp, &listener, [sa]),
        connect_with(&lp, &listener, &[sa][..]),
        connect_with(&lp, &listener, vec![sa]),
        connect_with(&lp, &listener, sa.to_addrs().unwrap()),
        // Names: on the resolver thread; an IPv6 loopback, if "localhost"
        // has one first, is refused and the next address tried.
        connect_with(&lp, &listener, format!("localhost:{port}")),
        connect_with(&lp, &listener, ("localhost", port)),
    ];
    assert!(peers.iter().all(|p| *p == sa), "{peers:?}");
}

#[test]
fn a_list_of_addresses_is_tried_in_order() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let live = listener.local_addr().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The first is refused, the second connects.
    assert_eq!(connect_with(&lp, &listener, [dead, live]), live);
}

#[test]
fn numeric_addresses_need_no_resolver_thread() {
    let lp = new_loop();
    // The whole server, or endpoint, is made in the first poll, with no
    // loop running: a thread's answer would need a wake and a second poll.
    let server = lp
        .create_server(|| Quiet, "127.0.0.1:0")
        .also_bind((Ipv4Addr::new(127, 0, 0, 2), 0))
        .into_future()
        .now_or_never()
        .expect("numeric: ready at the first poll")
        .unwrap();
    assert_eq!(server.local_addrs().len(), 2);
    let endpoint = lp
        .create_datagram_endpoint(|| QuietDatagrams)
        .local_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .remote_addr(server.local_addrs()[0])
        .into_future()
        .now_or_never()
        .expect("numeric: ready at the first poll")
        .unwrap();
    // A name goes to the resolver thread; the future completes once its
    // answer wakes it.
    let named = run(&lp, lp.create_server(|| Quiet, "localhost:0")).unwrap();
    assert!(named.local_addrs().iter().all(|a| a.ip().is_loopback()));
    for s in [server, named] {
        s.close();
    }
    endpoint.close();
}

#[test]
fn service_names_give_the_port_for_the_socket_kind() {
    let lp = new_loop();
    // UDP: a socket connected to the "domain" service, no traffic needed.
    let t = run(
        &lp,
        lp.create_datagram_endpoint(|| QuietDatagrams)
            .remote_addr("127.0.0.1:domain"),
    )
    .unwrap();
    assert_eq!(t.peer_addr(), Some("127.0.0.1:53".parse().unwrap()));
    t.close();
    let t = run(
        &lp,
        lp.create_datagram_endpoint(|| QuietDatagrams)
            .remote_addr(("127.0.0.1", "domain")),
    )
    .unwrap();
    assert_eq!(t.peer_addr(), Some("127.0.0.1:53".parse().unwrap()));
    t.close();
    // TCP: the lookup succeeds and a connect is attempted on its port
    // (tcpmux is port 1, where nothing listens here).
    let err = run(&lp, lp.create_connection(|| Quiet, "127.0.0.1:tcpmux")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // An unknown service is the caller's error.
    let err = run(&lp, lp.create_connection(|| Quiet, "127.0.0.1:no-such-svc")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string()
            .starts_with("unknown service 'no-such-svc' for tcp"),
        "{err}"
    );
}

#[test]
fn malformed_addresses_fail_every_constructor_with_invalid_input() {
    let lp = new_loop();
    let h = lp.handle();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = listener.local_addr().unwrap();
    let check = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
        assert!(e.to_string().contains("'::1:80'"), "{what}: {e}");
    };
    let bad = "::1:80";
    check(
        "create_server",
        run(&lp, lp.create_server(|| Quiet, bad)).map(drop),
    );
    check(
        "start_server",
        run(&lp, lp.start_server(|_| async {}, bad)).map(drop),
    );
    check(
        "also_bind",
        run(
            &lp,
            lp.create_server(|| Quiet, "127.0.0.1:0").also_bind(bad),
        )
        .map(drop),
    );
    check(
        "create_connection",
        run(&lp, lp.create_connection(|| Quiet, bad)).map(drop),
    );
    check(
        "local_addr",
        run(&lp, lp.create_connection(|| Quiet, good).local_addr(bad)).map(drop),
    );
    check(
        "open_connection",
        run(&lp, lp.open_connection(bad)).map(drop),
    );
    check(
        "datagram local_addr",
        run(
            &lp,
            lp.create_datagram_endpoint(|| QuietDatagrams)
                .local_addr(bad),
        )
        .map(drop),
    );
    check(
        "datagram remote_addr",
        run(
            &lp,
            lp.create_datagram_endpoint(|| QuietDatagrams)
                .remote_addr(bad),
        )
        .map(drop),
    );
    check(
        "DatagramSocket::bind",
        run(&lp, DatagramSocket::bind(&h, bad)).map(drop),
    );
    check(
        "DatagramSocket::connect",
        run(&lp, DatagramSocket::connect(&h, "127.0.0.1:0", bad)).map(drop),
    );
    // Nothing connected to the listener on the way.
    listener.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn also_bind_on_a_unix_server_is_an_error_not_ignored() {
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &lp,
        lp.create_unix_server(|| Quiet, dir.path().join("s.sock"))
            .also_bind("127.0.0.1:0"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("needs a TCP server"), "{err}");
    assert!(!dir.path().join("s.sock").exists(), "nothing was bound");
}

#[test]
fn also_bind_takes_any_form_and_binds_each_address_once() {
    let lp = new_loop();
    let a = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = run(
        &lp,
        lp.create_server(|| Quiet, a)
            .also_bind([a])
            .also_bind(("127.0.0.1", 0)),
    )
    .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert_eq!(addrs[0], a);
    assert!(TcpStream::connect(addrs[1]).is_ok());
    server.close();
}

#[test]
fn an_empty_host_binds_every_interface() {
    let lp = new_loop();
    // A datagram endpoint: IPv4 first, as the wildcard lists it.
    let t = run(
        &lp,
        lp.create_datagram_endpoint(|| QuietDatagrams)
            .local_addr(":0"),
    )
    .unwrap();
    let local = t.local_addr().unwrap();
    assert!(local.ip().is_unspecified() && local.is_ipv4(), "{local}");
    t.close();
    // A connection's local address.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = run(
        &lp,
        lp.create_connection(|| Quiet, listener.local_addr().unwrap())
            .local_addr(("", 0)),
    )
    .unwrap();
    let (_s, from) = listener.accept().unwrap();
    assert!(from.ip().is_loopback());
    c.abort();
}

#[test]
fn a_datagram_endpoint_pairs_resolved_addresses_by_family() {
    // "localhost" may give ::1 and 127.0.0.1; the remote is IPv4 only, so
    // only the IPv4 local address can go with it.
    let lp = new_loop();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let h = lp.handle();
    let got = run(&lp, async move {
        let mut sock = DatagramSocket::connect(&h, "localhost:0", peer.local_addr().unwrap())
            .await
            .unwrap();
        let me = sock.local_addr().unwrap();
        peer.send_to(b"hi", me).unwrap();
        let got = sock.next().await.unwrap().unwrap();
        (me, got)
    });
    let (me, (data, _from)) = got;
    assert!(me.is_ipv4() && me.ip().is_loopback(), "{me}");
    assert_eq!(data, b"hi");
}

#[test]
fn datagram_socket_constructors_take_names() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let mut a = DatagramSocket::bind(&h, ("127.0.0.1", 0)).await.unwrap();
        let a_addr = a.local_addr().unwrap();
        let mut b = DatagramSocket::connect(&h, "127.0.0.1:0", ("localhost", a_addr.port()))
            .await
            .unwrap();
        // "localhost" may come as ::1 first; the local IPv4 address keeps
        // the IPv4 pair only.
        assert_eq!(b.peer_addr(), Some(a_addr));
        b.send_to(b"x", a_addr).await.unwrap();
        let (data, from) = a.recv_from().await.unwrap();
        assert_eq!(
            (data.as_slice(), from),
            (&b"x"[..], b.local_addr().unwrap())
        );
    });
}

/// The loop handle is what the constructors take; a closed loop's handle
/// gives an error, not a panic.
#[test]
fn a_closed_loop_fails_the_builders() {
    let lp = lenient_loop();
    let h: LoopHandle = lp.handle();
    drop(lp);
    let r = h
        .create_datagram_endpoint(|| QuietDatagrams)
        .local_addr("127.0.0.1:0")
        .into_future()
        .now_or_never()
        .expect("numeric: ready at the first poll");
    let e = r.unwrap_err();
    assert!(e.to_string().contains("Event loop is closed"), "{e}");
}

/// Found by the `addr_parse` fuzz target (fuzz/; the input is kept in
/// tests/fuzz_regressions/): a host with a stray bracket was accepted, and
/// the address then printed as text that no longer parsed. A bracket is
/// never part of a host name: such text is an `InvalidInput` error, and
/// every accepted address prints as text that parses back to it.
#[test]
fn a_bracket_inside_a_host_is_refused_and_accepted_addresses_round_trip() {
    let found = std::fs::read("tests/fuzz_regressions/addr_parse-brackets-in-host").unwrap();
    let found = String::from_utf8(found).unwrap();
    for bad in [found.as_str(), "[[x]:80", "a[b:80", "a]b:80", "[a]b]:80"] {
        let e = bad.to_addrs().expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let e = ("a[b", "80").to_addrs().expect_err("pair form");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = ("a]b", 80).to_addrs().expect_err("pair form");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    for good in [
        "127.0.0.1:80",
        "[::1]:http",
        "localhost:8080",
        "[fe80::1%2]:1",
        ":80",
        "[]:80",
    ] {
        let Ok(a) = good.to_addrs() else { continue };
        let shown = a.to_string();
        assert_eq!(
            shown.as_str().to_addrs().unwrap(),
            a,
            "{good:?} -> {shown:?}"
        );
    }
}
