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
use sloop::{DatagramSocket, EventLoop, LoopHandle, Protocol, Transport, TransportStream};
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

// Public handles dropped or cancelled from inside each kind of callback.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

type Action = Box<dyn FnOnce()>;

/// The kinds of callback an action runs in.
#[derive(Debug, Clone, Copy)]
enum Kind {
    CallSoon,
    Timer,
    Reader,
    Writer,
    ConnectionMade,
    DataReceived,
    EofReceived,
    ConnectionLost,
    TaskPoll,
    WakeFromThread,
}

const KINDS: [Kind; 10] = [
    Kind::CallSoon,
    Kind::Timer,
    Kind::Reader,
    Kind::Writer,
    Kind::ConnectionMade,
    Kind::DataReceived,
    Kind::EofReceived,
    Kind::ConnectionLost,
    Kind::TaskPoll,
    Kind::WakeFromThread,
];

/// A protocol that runs its action in one method.
struct RunIn {
    kind: Kind,
    action: Rc<RefCell<Option<Action>>>,
}

impl RunIn {
    fn run(&self, here: Kind) {
        if std::mem::discriminant(&self.kind) == std::mem::discriminant(&here) {
            if let Some(a) = self.action.borrow_mut().take() {
                a();
            }
        }
    }
}

impl Protocol for RunIn {
    fn connection_made(&mut self, _: &Transport) {
        self.run(Kind::ConnectionMade)
    }
    fn data_received(&mut self, _: &[u8]) {
        self.run(Kind::DataReceived)
    }
    fn eof_received(&mut self) -> bool {
        self.run(Kind::EofReceived);
        false
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.run(Kind::ConnectionLost)
    }
}

/// Runs `action` inside a callback of `kind` on `lp`, returns once it ran,
/// with the trigger's own resources (sockets, transports) released.
fn run_in(lp: &EventLoop, kind: Kind, action: Action) {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let action: Action = Box::new(move || {
        action();
        r.set(true);
    });
    let h = lp.handle();
    match kind {
        Kind::CallSoon => drop(lp.call_soon(action).unwrap()),
        Kind::Timer => drop(lp.call_later(MS, action).unwrap()),
        Kind::Reader | Kind::Writer => {
            let (a, mut b) = UnixStream::pair().unwrap();
            b.write_all(b"x").unwrap();
            let a = Rc::new(a);
            let slot = RefCell::new(Some(action));
            let (a2, h2) = (a.clone(), h.clone());
            let cb = move || {
                if let Some(f) = slot.borrow_mut().take() {
                    if matches!(kind, Kind::Reader) {
                        h2.remove_reader(&*a2).unwrap();
                    } else {
                        h2.remove_writer(&*a2).unwrap();
                    }
                    f();
                }
            };
            if matches!(kind, Kind::Reader) {
                drop(lp.add_reader(&*a, cb).unwrap());
            } else {
                drop(lp.add_writer(&*a, cb).unwrap());
            }
            run(lp, until(|| ran.get()));
            drop(b);
            return;
        }
        Kind::ConnectionMade | Kind::DataReceived | Kind::EofReceived | Kind::ConnectionLost => {
            let (a, mut b) = tcp_pair();
            b.write_all(b"x").unwrap();
            b.shutdown(std::net::Shutdown::Write).unwrap();
            let slot = Rc::new(RefCell::new(Some(action)));
            let t = run(
                lp,
                lp.connect_accepted_socket(move || RunIn { kind, action: slot }, Socket::from(a)),
            )
            .unwrap();
            run(lp, until(|| ran.get()));
            t.close();
            drop(b);
            return;
        }
        Kind::TaskPoll => lp
            .spawn_local(async move {
                yield_now().await;
                action();
            })
            .detach(),
        Kind::WakeFromThread => lp
            .spawn_local(async move {
                on_thread(|| ()).await;
                action();
            })
            .detach(),
    }
    run(lp, until(|| ran.get()));
}

/// A handle to act on: made before the callback runs, dropped or
/// cancelled in it; `check` runs after the loop settled.
struct Target {
    act: Action,
    check: Box<dyn FnOnce()>,
}

fn cancel_reader_of_a_readable_fd(lp: &EventLoop) -> Target {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"unread").unwrap();
    let runs = Rc::new(Cell::new(0u32));
    let r = runs.clone();
    let handle = lp.add_reader(&a, move || r.set(r.get() + 1)).unwrap();
    let before = runs.clone();
    let at_cancel = Rc::new(Cell::new(0u32));
    let at = at_cancel.clone();
    Target {
        act: Box::new(move || {
            handle.cancel();
            at.set(before.get());
            drop((a, b));
        }),
        check: Box::new(move || assert_eq!(runs.get(), at_cancel.get(), "ran after cancel")),
    }
}

fn cancel_writer(lp: &EventLoop) -> Target {
    let (a, b) = UnixStream::pair().unwrap();
    let runs = Rc::new(Cell::new(0u32));
    let r = runs.clone();
    let handle = lp.add_writer(&a, move || r.set(r.get() + 1)).unwrap();
    let at_cancel = Rc::new(Cell::new(0u32));
    let (at, before) = (at_cancel.clone(), runs.clone());
    let h = lp.handle();
    Target {
        act: Box::new(move || {
            handle.cancel();
            at.set(before.get());
            // The handle is cancelled, not removed: remove it before the
            // fd goes, as an owner would.
            h.remove_writer(&a).unwrap();
            drop((a, b));
        }),
        check: Box::new(move || assert_eq!(runs.get(), at_cancel.get(), "ran after cancel")),
    }
}

fn cancel_timer(lp: &EventLoop) -> Target {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let timer = lp
        .call_later(Duration::from_millis(20), move || r.set(true))
        .unwrap();
    Target {
        act: Box::new(move || timer.cancel()),
        check: Box::new(move || assert!(!ran.get(), "a cancelled timer ran")),
    }
}

fn cancel_task(lp: &EventLoop) -> Target {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let task = lp.spawn_local(async move {
        let _held = sock;
        futures::future::pending::<()>().await
    });
    Target {
        act: Box::new(move || {
            task.cancel();
        }),
        check: Box::new(|| {}),
    }
}

fn close_server(lp: &EventLoop) -> Target {
    let s = run(lp, lp.create_server(Echo::default, "127.0.0.1:0")).unwrap();
    let client = TcpStream::connect(s.local_addrs()[0]).unwrap();
    run(lp, until(|| s.connection_count() == 1));
    Target {
        act: Box::new(move || {
            s.close();
            s.abort_clients();
            drop((s, client));
        }),
        check: Box::new(|| {}),
    }
}

fn transport_target(lp: &EventLoop, abort: bool) -> Target {
    let (t, peer) = run(lp, transport(&lp.handle(), Echo::default()));
    t.write(&vec![1; 1 << 20]).unwrap();
    Target {
        act: Box::new(move || {
            if abort {
                t.abort();
            } else {
                t.close();
            }
            drop((t, peer));
        }),
        check: Box::new(|| {}),
    }
}

fn drop_transport_stream(lp: &EventLoop) -> Target {
    let (a, b) = tcp_pair();
    let s = run(lp, stream_from(&lp.handle(), a));
    Target {
        act: Box::new(move || drop((s, b))),
        check: Box::new(|| {}),
    }
}

fn drop_remote(lp: &EventLoop) -> Target {
    let remote = lp.remote();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    Target {
        act: Box::new(move || {
            remote
                .call_soon(move || r.store(true, std::sync::atomic::Ordering::SeqCst))
                .unwrap();
            drop(remote);
        }),
        check: Box::new(move || assert!(ran.load(std::sync::atomic::Ordering::SeqCst))),
    }
}

use std::sync::Arc;

/// Makes a [`Target`] on a loop.
type MakeTarget = fn(&EventLoop) -> Target;

#[test]
fn handles_dropped_or_cancelled_inside_each_callback_kind() {
    let _g = serial();
    let targets: [(&str, MakeTarget); 9] = [
        (
            "cancel a reader Handle of a readable fd",
            cancel_reader_of_a_readable_fd,
        ),
        ("cancel a writer Handle", cancel_writer),
        ("cancel a TimerHandle", cancel_timer),
        ("cancel a Task", cancel_task),
        ("close and drop a Server", close_server),
        ("close a Transport", |lp| transport_target(lp, false)),
        ("abort a Transport", |lp| transport_target(lp, true)),
        ("drop a TransportStream", drop_transport_stream),
        ("drop a Remote", drop_remote),
    ];
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    settle(&lp, 2);
    for kind in KINDS {
        for (name, make) in targets {
            let what = format!("{name} inside {kind:?}");
            let base = Baseline::take(&lp);
            let target = make(&lp);
            run_in(&lp, kind, target.act);
            settle(&lp, 4);
            assert_no_spin(&lp, &what);
            (target.check)();
            base.assert_back(&lp, &what);
            assert!(
                reports.borrow().is_empty(),
                "{what}: {:?}",
                reports.borrow()
            );
        }
    }
}

/// Found by the matrix above: a reader cancelled through its `Handle`
/// stays registered until its next event; if its owner closes the fd
/// first, that event never comes, and the next socket given the same fd
/// number could not get a reader or writer (the loop modified a
/// registration the kernel had already dropped: ENOENT).
#[test]
fn a_cancelled_reader_whose_fd_was_closed_leaves_the_fd_number_usable() {
    use std::os::fd::AsRawFd;
    let _g = serial();
    let lp = lenient_loop();
    for (first_read, then_read) in [(true, true), (true, false), (false, true), (false, false)] {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let handle = if first_read {
            lp.add_reader(&a, || {}).unwrap()
        } else {
            lp.add_writer(&a, || {}).unwrap()
        };
        handle.cancel();
        drop((a, b));
        // This binary runs one test at a time: the next socket gets `fd`.
        let (c, mut d) = UnixStream::pair().unwrap();
        assert_eq!(c.as_raw_fd(), fd, "fd numbers were reused");
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        if then_read {
            d.write_all(b"x").unwrap();
            lp.add_reader(&c, move || r.set(true)).unwrap();
        } else {
            lp.add_writer(&c, move || r.set(true)).unwrap();
        }
        run(&lp, until(|| ran.get()));
        if then_read {
            assert!(lp.remove_reader(&c).unwrap());
        } else {
            assert!(lp.remove_writer(&c).unwrap());
        }
    }
}
