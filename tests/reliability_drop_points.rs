//! Every public future dropped at every point of its life (issue 16,
//! docs/design.md D15): `support::drop_points` polls it k times, drops
//! it, and checks fds, the loop's tables, the waker, spin and the
//! exception handler. Also the public handles dropped or cancelled from
//! inside each kind of callback.
//!
//! fds are counted process-wide: every test here takes `serial()` first,
//! and nothing else lives in this binary.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use sloop::{DatagramSocket, LoopHandle, Protocol, Transport, TransportStream};
use socket2::{SockAddr, Socket};
use support::drop_points::*;
use support::*;

const MS: Duration = Duration::from_millis(1);

/// A connected TCP pair on loopback, both blocking std sockets.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Reads `peer` on the loop (non-blocking, a tick between tries) until
/// EOF or `limit` bytes: a slow reader that belongs to the future.
async fn drain(mut peer: TcpStream, limit: usize) -> usize {
    peer.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut buf = vec![0; 65536];
    while n < limit {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sloop::sleep(MS).await,
            Err(_) => break,
        }
    }
    n
}

/// A transport on one end of a TCP pair (the future owns the other).
async fn transport(lp: &LoopHandle, proto: impl Protocol) -> (Transport, TcpStream) {
    let (a, b) = tcp_pair();
    let t = lp
        .connect_accepted_socket(move || proto, Socket::from(a))
        .await
        .unwrap();
    (t, b)
}

#[test]
fn create_connection() {
    let _g = serial();
    let lp = lenient_loop();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = lp.handle();
    drop_at_every_point(&lp, "create_connection", || {
        let h = h.clone();
        async move {
            let t = h.create_connection(Echo::default, addr).await.unwrap();
            t.close();
        }
    });
    // Empty the backlog so the listener's queue never fills.
    l.set_nonblocking(true).unwrap();
    while l.accept().is_ok() {}
}

#[test]
fn create_connection_refused() {
    let _g = serial();
    let lp = lenient_loop();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = lp.handle();
    drop_at_every_point(&lp, "create_connection refused", || {
        let h = h.clone();
        async move {
            assert!(h.create_connection(Echo::default, addr).await.is_err());
        }
    });
}

#[test]
fn create_unix_connection() {
    let _g = serial();
    let lp = lenient_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let l = UnixListener::bind(&path).unwrap();
    let h = lp.handle();
    drop_at_every_point(&lp, "create_unix_connection", || {
        let (h, path) = (h.clone(), path.clone());
        async move {
            let t = h.create_unix_connection(Echo::default, path).await.unwrap();
            t.close();
        }
    });
    l.set_nonblocking(true).unwrap();
    while l.accept().is_ok() {}
}

#[test]
fn connect_accepted_socket() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "connect_accepted_socket", || {
        let h = h.clone();
        let (a, b) = tcp_pair();
        async move {
            let t = h
                .connect_accepted_socket(Echo::default, Socket::from(a))
                .await
                .unwrap();
            t.close();
            drop(b);
        }
    });
}

#[test]
fn create_server_builders() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "create_server", || {
        let h = h.clone();
        async move {
            let s = h.create_server(Echo::default, "127.0.0.1:0").await.unwrap();
            s.close();
            s.wait_closed().await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    drop_at_every_point(&lp, "create_unix_server", || {
        n += 1;
        let (h, path) = (h.clone(), dir.path().join(format!("s{n}")));
        async move {
            let s = h.create_unix_server(Echo::default, path).await.unwrap();
            s.close();
            s.wait_closed().await;
        }
    });
    drop_at_every_point(&lp, "create_server_from_socket", || {
        let h = h.clone();
        let sock = Socket::from(TcpListener::bind("127.0.0.1:0").unwrap());
        async move {
            let s = h
                .create_server_from_socket(Echo::default, sock)
                .await
                .unwrap();
            s.close();
            s.wait_closed().await;
        }
    });
}

/// Closes the server (and aborts its connections) when dropped.
struct CloseOnDrop(sloop::Server);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
        self.0.abort_clients();
    }
}

#[test]
fn server_wait_closed_with_a_live_connection() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "Server::wait_closed", || {
        let h = h.clone();
        async move {
            let s = h.create_server(Echo::default, "127.0.0.1:0").await.unwrap();
            // The loop owns a serving server (asyncio's rule): the future
            // closes it when dropped, as its owner would.
            let s = CloseOnDrop(s);
            let client = TcpStream::connect(s.0.local_addrs()[0]).unwrap();
            until(|| s.0.connection_count() == 1).await;
            s.0.close();
            let closer = async move {
                sloop::sleep(MS).await;
                drop(client);
            };
            futures::future::join(s.0.wait_closed(), closer).await;
        }
    });
}

#[test]
fn open_connection_and_start_server() {
    let _g = serial();
    let lp = lenient_loop();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = lp.handle();
    drop_at_every_point(&lp, "open_connection", || {
        let h = h.clone();
        async move {
            let s = h.open_connection(addr).await.unwrap();
            drop(s);
        }
    });
    l.set_nonblocking(true).unwrap();
    while l.accept().is_ok() {}
    drop_at_every_point(&lp, "start_server", || {
        let h = h.clone();
        async move {
            let s = h
                .start_server(|_s: TransportStream| async {}, "127.0.0.1:0")
                .await
                .unwrap();
            s.close();
            s.wait_closed().await;
        }
    });
}

#[test]
fn sock_recv_family() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "sock_recv", || {
        let h = h.clone();
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        async move {
            let send = async move {
                sloop::sleep(MS).await;
                b.write_all(b"hi").unwrap();
                b
            };
            let (got, _b) = futures::future::join(h.sock_recv(&a, 10), send).await;
            assert_eq!(got.unwrap(), b"hi");
        }
    });
    drop_at_every_point(&lp, "sock_recv_into", || {
        let h = h.clone();
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        async move {
            let mut buf = [0; 10];
            let send = async move {
                sloop::sleep(MS).await;
                b.write_all(b"hi").unwrap();
                b
            };
            let (got, _b) = futures::future::join(h.sock_recv_into(&a, &mut buf), send).await;
            assert_eq!(got.unwrap(), 2);
        }
    });
    drop_at_every_point(&lp, "sock_recvfrom", || {
        let h = h.clone();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = a.local_addr().unwrap();
        async move {
            let send = async move {
                sloop::sleep(MS).await;
                b.send_to(b"hi", to).unwrap();
                b
            };
            let (got, _b) = futures::future::join(h.sock_recvfrom(&a, 10), send).await;
            assert_eq!(got.unwrap().0, b"hi");
        }
    });
    drop_at_every_point(&lp, "sock_recvfrom_into", || {
        let h = h.clone();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = a.local_addr().unwrap();
        async move {
            let mut buf = [0; 10];
            let send = async move {
                sloop::sleep(MS).await;
                b.send_to(b"hi", to).unwrap();
                b
            };
            let (got, _b) = futures::future::join(h.sock_recvfrom_into(&a, &mut buf), send).await;
            assert_eq!(got.unwrap().0, 2);
        }
    });
}

#[test]
fn sock_send_family() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "sock_sendall", || {
        let h = h.clone();
        let (a, b) = tcp_pair();
        a.set_nonblocking(true).unwrap();
        let big = vec![7u8; 8 << 20];
        async move {
            let (sent, got) =
                futures::future::join(h.sock_sendall(&a, &big), drain(b, big.len())).await;
            sent.unwrap();
            assert_eq!(got, big.len());
        }
    });
    drop_at_every_point(&lp, "sock_sendto", || {
        let h = h.clone();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = SockAddr::from(b.local_addr().unwrap());
        async move {
            assert_eq!(h.sock_sendto(&a, b"hi", &to).await.unwrap(), 2);
        }
    });
}

#[test]
fn sock_connect_and_accept() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = SockAddr::from(l.local_addr().unwrap());
    drop_at_every_point(&lp, "sock_connect", || {
        let h = h.clone();
        let to = to.clone();
        let s = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        async move {
            h.sock_connect(&s, &to).await.unwrap();
        }
    });
    l.set_nonblocking(true).unwrap();
    while l.accept().is_ok() {}
    drop_at_every_point(&lp, "sock_accept", || {
        let h = h.clone();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        async move {
            let connect = async move {
                sloop::sleep(MS).await;
                TcpStream::connect(addr).unwrap()
            };
            let (got, _c) = futures::future::join(h.sock_accept(&l), connect).await;
            drop(got.unwrap());
        }
    });
}

#[test]
fn empty_waiter() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "empty_waiter", || {
        let h = h.clone();
        async move {
            let (t, peer) = transport(&h, Echo::default()).await;
            t.set_write_buffer_limits(Some(1 << 30), None).unwrap();
            t.write(&vec![1; 8 << 20]).unwrap();
            let w = t.empty_waiter().unwrap();
            let (r, n) = futures::future::join(w, drain(peer, 8 << 20)).await;
            r.unwrap();
            assert_eq!(n, 8 << 20);
            t.close();
        }
    });
}

#[test]
fn sleep_and_timeout() {
    let _g = serial();
    let lp = lenient_loop();
    drop_at_every_point(&lp, "sleep", || sloop::sleep(MS));
    drop_at_every_point(&lp, "timeout that fires", || async {
        assert!(sloop::timeout(MS, futures::future::pending::<()>())
            .await
            .is_err());
    });
    drop_at_every_point(&lp, "timeout that does not fire", || async {
        assert!(sloop::timeout(Duration::from_secs(60), sloop::sleep(MS))
            .await
            .is_ok());
    });
}

#[test]
fn transport_stream_read_write_flush_close() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "TransportStream read", || {
        let h = h.clone();
        async move {
            let (a, mut b) = tcp_pair();
            let mut s = stream_from(&h, a).await;
            let send = async move {
                sloop::sleep(MS).await;
                b.write_all(b"hello").unwrap();
                b
            };
            let mut buf = [0; 5];
            let (r, _b) = futures::future::join(s.read_exact(&mut buf), send).await;
            r.unwrap();
            assert_eq!(&buf, b"hello");
        }
    });
    drop_at_every_point(&lp, "TransportStream write_all + flush", || {
        let h = h.clone();
        async move {
            let (a, b) = tcp_pair();
            let mut s = stream_from(&h, a).await;
            let data = vec![3u8; 8 << 20];
            let write = async {
                s.write_all(&data).await.unwrap();
                s.flush().await.unwrap();
                s.close().await.unwrap();
            };
            let (_, n) = futures::future::join(write, drain(b, usize::MAX)).await;
            assert_eq!(n, 8 << 20);
        }
    });
    drop_at_every_point(&lp, "TransportStream close", || {
        let h = h.clone();
        async move {
            let (a, b) = tcp_pair();
            let mut s = stream_from(&h, a).await;
            s.write_all(&vec![3u8; 4 << 20]).await.unwrap();
            let (r, n) = futures::future::join(s.close(), drain(b, usize::MAX)).await;
            r.unwrap();
            assert_eq!(n, 4 << 20);
        }
    });
}

/// A protocol that does nothing (replaced at once by the stream's).
struct Nop;
impl Protocol for Nop {}

/// `sock` as a [`TransportStream`] on `lp`.
async fn stream_from(lp: &LoopHandle, sock: TcpStream) -> TransportStream {
    let t = lp
        .connect_accepted_socket(|| Nop, Socket::from(sock))
        .await
        .unwrap();
    TransportStream::new(&t)
}

#[test]
fn datagram_sink_and_stream() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "DatagramSocket bind + Stream::next", || {
        let h = h.clone();
        async move {
            let mut s = DatagramSocket::bind(&h, "127.0.0.1:0").await.unwrap();
            let to = s.local_addr().unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            let send = async move {
                sloop::sleep(MS).await;
                peer.send_to(b"d", to).unwrap();
                peer
            };
            let (got, _p) = futures::future::join(s.next(), send).await;
            assert_eq!(got.unwrap().unwrap().0, b"d");
        }
    });
    drop_at_every_point(&lp, "DatagramSocket Sink send + close", || {
        let h = h.clone();
        async move {
            let mut s = DatagramSocket::bind(&h, "127.0.0.1:0").await.unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to: SocketAddr = peer.local_addr().unwrap();
            s.send((b"d".to_vec(), to)).await.unwrap();
            s.close().await.unwrap();
        }
    });
}

// The helper itself: each check fails when it should.

/// A future that leaks on drop what `leak` says.
struct Leaky<F: FnMut()> {
    leak: F,
    polled: bool,
}

impl<F: FnMut() + Unpin> std::future::Future for Leaky<F> {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.polled {
            return std::task::Poll::Ready(());
        }
        self.polled = true;
        (self.leak)();
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
#[should_panic(expected = "fds leaked")]
fn the_helper_catches_a_leaked_fd() {
    let _g = serial();
    let lp = lenient_loop();
    drop_at_every_point(&lp, "leaky", || Leaky {
        leak: || std::mem::forget(UdpSocket::bind("127.0.0.1:0").unwrap()),
        polled: false,
    });
}

#[test]
#[should_panic(expected = "spinning")]
fn the_helper_catches_a_spin() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "spinner", || {
        let h = h.clone();
        Leaky {
            leak: move || {
                fn again(h: LoopHandle) {
                    let h2 = h.clone();
                    h.call_soon(move || again(h2)).unwrap();
                }
                again(h.clone())
            },
            polled: false,
        }
    });
}

#[test]
#[should_panic(expected = "still holds the future's waker")]
fn the_helper_catches_a_kept_waker() {
    let _g = serial();
    let lp = lenient_loop();
    let kept = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    drop_at_every_point(&lp, "waker keeper", || {
        let kept = kept.clone();
        futures::future::poll_fn(move |cx| {
            kept.borrow_mut().push(cx.waker().clone());
            std::task::Poll::<()>::Pending
        })
    });
}

#[test]
#[should_panic(expected = "reported")]
fn the_helper_catches_a_report() {
    let _g = serial();
    let lp = lenient_loop();
    let h = lp.handle();
    drop_at_every_point(&lp, "reporter", || {
        let h = h.clone();
        Leaky {
            leak: move || {
                h.call_soon(|| panic!("boom")).unwrap();
            },
            polled: false,
        }
    });
}
