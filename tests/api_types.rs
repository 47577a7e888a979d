//! The public types that replaced internal ones in signatures (issue 11):
//! `AnyProtocol` made only through `IntoProtocol`/`From`, the borrowed
//! listening sockets of `Server::with_sockets`, and `DatagramSocket`'s
//! endpoint options; all on real loopback sockets.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use sloop::bridge::datagram::DatagramSocketProtocol;
use sloop::{
    AnyProtocol, Buffered, BufferedProtocol, DatagramSocket, IntoProtocol, Protocol, Transport,
};
use support::*;

/// Echoes through `data_received`.
#[derive(Default)]
struct PlainEcho(Option<Transport>);

impl Protocol for PlainEcho {
    fn connection_made(&mut self, transport: &Transport) {
        self.0 = Some(transport.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.as_ref().unwrap().write(data).unwrap();
    }
}

/// Echoes through its own buffer, upper-cased so the two kinds differ.
struct BufferedUpper {
    transport: Option<Transport>,
    buf: Vec<u8>,
}

impl BufferedProtocol for BufferedUpper {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }
    fn get_buffer(&mut self, _: usize) -> &mut [u8] {
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        let upper = self.buf[..n].to_ascii_uppercase();
        self.transport.as_ref().unwrap().write(&upper).unwrap();
    }
}

/// Sends `msg` to `addr` on a blocking client and reads the reply.
fn round_trip(addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(SAFETY)).unwrap();
    c.write_all(msg).unwrap();
    let mut reply = vec![0; msg.len()];
    c.read_exact(&mut reply).unwrap();
    reply
}

#[test]
fn any_protocol_factory_serves_both_kinds() {
    let lp = new_loop();
    let mut n = 0;
    // The factory picks the kind per connection: plain, buffered, plain...
    let factory = move || -> AnyProtocol {
        n += 1;
        if n % 2 == 0 {
            Buffered(BufferedUpper {
                transport: None,
                buf: vec![0; 1024],
            })
            .into_protocol()
        } else {
            PlainEcho::default().into()
        }
    };
    let server = run(&lp, lp.create_server(factory, "127.0.0.1:0")).unwrap();
    let addr = server.local_addrs()[0];
    let replies = run(
        &lp,
        on_thread(move || {
            (
                round_trip(addr, b"first"),
                round_trip(addr, b"second"),
                round_trip(addr, b"third"),
            )
        }),
    );
    assert_eq!(
        replies,
        (b"first".to_vec(), b"SECOND".to_vec(), b"third".to_vec())
    );
    assert!(!PlainEcho::default().into_protocol().is_buffered());
    server.close();
}

#[test]
fn server_with_sockets_lends_the_listening_sockets() {
    let lp = new_loop();
    let server = run(&lp, lp.create_server(PlainEcho::default, "127.0.0.1:0")).unwrap();
    let addr = server.local_addrs()[0];
    // The sockets are the listeners: same address, listening, and an
    // option set through them sticks.
    let fd = server.with_sockets(|socks| {
        assert_eq!(socks.len(), 1);
        let s = &socks[0];
        assert_eq!(s.local_addr().unwrap().as_socket(), Some(addr));
        assert_eq!(s.r#type().unwrap(), socket2::Type::STREAM);
        s.set_recv_buffer_size(64 * 1024).unwrap();
        s.as_raw_fd()
    });
    let again = server.with_sockets(|socks| socks[0].recv_buffer_size().unwrap());
    assert!(again >= 64 * 1024, "SO_RCVBUF {again}");
    assert_eq!(
        run(&lp, on_thread(move || round_trip(addr, b"ping"))),
        b"ping"
    );

    // Closing the server inside the call: the fd stays open (and is the
    // same socket) until the call returns, then closes.
    server.with_sockets(|socks| {
        server.close();
        assert_eq!(socks[0].as_raw_fd(), fd);
        assert_eq!(socks[0].local_addr().unwrap().as_socket(), Some(addr));
    });
    assert_eq!(server.with_sockets(|socks| socks.len()), 0);
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// The builder `with_endpoint` hands out, named with public types only,
/// so configuration can live in a function of its own.
type SocketEndpoint = sloop::DatagramEndpointBuilder<fn() -> DatagramSocketProtocol>;

fn loopback_to(peer: std::net::SocketAddr) -> impl FnOnce(SocketEndpoint) -> SocketEndpoint {
    move |b| b.local_addr("127.0.0.1:0").remote_addr(peer)
}

#[test]
fn datagram_socket_with_endpoint_takes_a_public_builder() {
    use futures::StreamExt;

    let lp = new_loop();
    let h = lp.handle();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut sock = run(
        &lp,
        DatagramSocket::with_endpoint(&h, loopback_to(peer_addr)),
    )
    .unwrap();
    assert_eq!(
        sock.peer_addr(),
        Some(peer_addr),
        "remote_addr connected it"
    );
    let me = sock.local_addr().unwrap();
    run(&lp, async {
        sock.send_to(b"hello", peer_addr).await.unwrap();
    });
    let mut buf = [0; 16];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"hello"[..], me));
    peer.send_to(b"back", me).unwrap();
    let got = run(&lp, sock.next()).unwrap().unwrap();
    assert_eq!(got, (b"back".to_vec(), peer_addr));
}
