//! D15 for the builders' futures (`create_server`, `create_connection`,
//! `open_connection`, datagram endpoints, `DatagramSocket::bind`): dropped
//! unpolled, while a name is being resolved, or once the transport exists,
//! each leaves nothing open and keeps nothing alive. (`create_connection`'s
//! drops while connecting and after its transport exists are in
//! `tcp_connect.rs`.)

mod support;

use std::future::IntoFuture;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;

use sloop::{DatagramProtocol, DatagramSocket, Protocol};
use support::*;

struct Quiet;
impl Protocol for Quiet {}

struct QuietDatagrams;
impl DatagramProtocol for QuietDatagrams {
    fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn create_server_dropped_while_resolving_binds_nothing_and_drops_the_factory() {
    let lp = new_loop();
    let port = free_port();
    let held = Rc::new(());
    let h2 = held.clone();
    // Poll 1 hands "localhost" to the resolver thread and returns.
    run(
        &lp,
        drop_after_polls(
            lp.create_server(
                move || {
                    let _ = &h2;
                    Quiet
                },
                ("localhost", port),
            ),
            1,
        ),
    );
    assert_eq!(
        Rc::strong_count(&held),
        1,
        "the factory went with the future"
    );
    TcpListener::bind(("127.0.0.1", port)).expect("nothing bound the port");
}

#[test]
fn create_server_from_socket_dropped_unpolled_closes_the_socket() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = lp.create_server_from_socket(|| Quiet, socket2::Socket::from(listener));
    drop(builder.into_future());
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        ErrorKind::ConnectionRefused,
        "the listening socket is closed"
    );
}

#[test]
fn create_connection_dropped_while_resolving_drops_the_protocol_uncalled() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (p, rec) = Recorder::new();
    run(
        &lp,
        drop_after_polls(lp.create_connection(move || p, ("localhost", port)), 1),
    );
    assert_eq!(rec.borrow().events, [], "no callback");
    assert_eq!(Rc::strong_count(&rec), 1, "the protocol was dropped");
}

#[test]
fn open_connection_dropped_after_its_transport_exists_closes_it() {
    // As create_connection's: poll 1 starts the connect; poll 2, once it
    // is done, makes the transport and waits for connection_made.
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    run(&lp, drop_after_polls(lp.open_connection(addr), 2));
    let (peer, _) = listener.accept().unwrap();
    peer_sees_eof(&lp, peer);
}

#[test]
fn open_connection_dropped_while_resolving_leaves_nothing() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    run(
        &lp,
        drop_after_polls(lp.open_connection(("localhost", port)), 1),
    );
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "no connection was started"
    );
}

#[test]
fn datagram_endpoint_dropped_while_resolving_never_calls_the_factory() {
    let lp = new_loop();
    let port = free_udp_port();
    let called = Rc::new(std::cell::Cell::new(false));
    let c = called.clone();
    run(
        &lp,
        drop_after_polls(
            lp.create_datagram_endpoint(move || {
                c.set(true);
                QuietDatagrams
            })
            .local_addr(("localhost", port)),
            1,
        ),
    );
    assert!(!called.get(), "no protocol for an endpoint never made");
    assert_eq!(Rc::strong_count(&called), 1, "the factory was dropped");
    UdpSocket::bind(("127.0.0.1", port)).expect("nothing bound the port");
}

#[test]
fn datagram_endpoint_dropped_unpolled_closes_the_given_socket() {
    let lp = new_loop();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let builder = lp.create_datagram_endpoint(|| QuietDatagrams).socket(sock);
    drop(builder.into_future());
    UdpSocket::bind(addr).expect("the given socket was closed");
}

#[test]
fn datagram_socket_bind_dropped_while_resolving_opens_nothing() {
    let lp = new_loop();
    let h = lp.handle();
    let port = free_udp_port();
    run(
        &lp,
        drop_after_polls(
            async move { DatagramSocket::bind(&h, ("localhost", port)).await },
            1,
        ),
    );
    UdpSocket::bind(("127.0.0.1", port)).expect("nothing bound the port");
}

#[test]
fn a_numeric_datagram_endpoint_is_made_in_one_poll_leaving_no_window() {
    // Nothing to drop mid-way: the first poll completes the future.
    let lp = new_loop();
    let t = futures::FutureExt::now_or_never(
        lp.create_datagram_endpoint(|| QuietDatagrams)
            .local_addr("127.0.0.1:0")
            .into_future(),
    )
    .expect("one poll")
    .unwrap();
    t.close();
}
