//! The `sock_*` futures (asyncio's low-level socket methods), each against a
//! real peer on loopback or a socketpair, plus cancellation: a dropped
//! future leaves no reader or writer behind, never removes someone else's,
//! and a cancelled task waiting in one finishes at once.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use futures::future::{join, poll_fn};
use socket2::{Domain, SockAddr, Socket, Type};

use sloop::{EventLoop, LoopHandle};

/// Runs `fut` to completion on `lp`, failing the test if it takes more
/// than ten seconds (a hang is a bug, not a slow machine).
fn run<F: Future>(lp: &EventLoop, fut: F) -> F::Output {
    let h = lp.handle();
    let watchdog = lp
        .call_later(Duration::from_secs(10), move || h.stop())
        .unwrap();
    let out = lp
        .run_until_complete(fut)
        .expect("the future did not complete within 10 s");
    watchdog.cancel();
    out
}

/// Polls `fut` once; returns whether it was still pending.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn nonblocking_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn tcp_client() -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Whether `fd` has a reader (by removing it: the only query there is).
fn is_reader_set(h: &LoopHandle, fd: &impl AsRawFd) -> bool {
    h.remove_reader(&fd.as_raw_fd()).unwrap()
}

#[test]
fn connect_sendall_recv_with_thread_peer() {
    // Peer: a blocking std server on a thread; reads a request, answers,
    // closes.
    let listener = TcpListener::bind(local()).unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0; 5];
        conn.read_exact(&mut req).unwrap();
        assert_eq!(&req, b"hello");
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nhi").unwrap();
    });

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let client = tcp_client();
    let reply = run(&lp, async {
        h.sock_connect(&client, &SockAddr::from(addr)).await?;
        h.sock_sendall(&client, b"hello").await?;
        let mut reply = Vec::new();
        loop {
            let chunk = h.sock_recv(&client, 4).await?;
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 4);
            reply.extend(chunk);
        }
        io::Result::Ok(reply)
    })
    .unwrap();
    assert_eq!(reply, b"HTTP/1.0 200 OK\r\n\r\nhi");
    peer.join().unwrap();
    // Completed futures leave nothing registered.
    assert!(!is_reader_set(&h, &client));
    assert!(!h.remove_writer(&client.as_raw_fd()).unwrap());
}

#[test]
fn recv_into_with_thread_peer() {
    let listener = TcpListener::bind(local()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // Wait until the loop side is blocked in sock_recv_into (told
        // through the channel), so the EAGAIN path is the one exercised.
        go_rx.recv().unwrap();
        conn.write_all(b"0123456789").unwrap();
    });

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let client = tcp_client();
    let got = run(&lp, async {
        h.sock_connect(&client, &SockAddr::from(addr)).await?;
        let mut buf = [0u8; 32];
        let mut n = {
            let mut recv = pin!(h.sock_recv_into(&client, &mut buf));
            assert!(poll_once(&mut recv).await.is_pending());
            go_tx.send(()).unwrap();
            recv.await?
        };
        while n < 10 {
            n += h.sock_recv_into(&client, &mut buf[n..]).await?;
        }
        io::Result::Ok(buf[..n].to_vec())
    })
    .unwrap();
    assert_eq!(got, b"0123456789");
    peer.join().unwrap();
}

#[test]
fn accept_returns_nonblocking_socket_and_peer_address() {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::from(local())).unwrap();
    listener.listen(8).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"from peer").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        (s.local_addr().unwrap(), back)
    });

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (peer_addr, got) = run(&lp, async {
        let (conn, peer_addr) = h.sock_accept(&listener).await?;
        assert!(conn.nonblocking()?, "accepted socket must be non-blocking");
        let mut got = Vec::new();
        loop {
            let chunk = h.sock_recv(&conn, 1024).await?;
            if chunk.is_empty() {
                break;
            }
            got.extend(chunk);
        }
        h.sock_sendall(&conn, b"bye").await?;
        io::Result::Ok((peer_addr.as_socket().unwrap(), got))
    })
    .unwrap();
    assert_eq!(got, b"from peer");
    let (client_addr, back) = peer.join().unwrap();
    assert_eq!(peer_addr, client_addr);
    assert_eq!(back, b"bye");
    assert!(!is_reader_set(&h, &listener));
}

#[test]
fn udp_sendto_recvfrom_with_thread_echo_peer() {
    let echo = UdpSocket::bind(local()).unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let mut buf = [0; 1500];
        for _ in 0..2 {
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        }
    });

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let sock = UdpSocket::bind(local()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let to = SockAddr::from(echo_addr);
    run(&lp, async {
        let sent = h.sock_sendto(&sock, b"datagram one", &to).await?;
        assert_eq!(sent, 12);
        let (data, from) = h.sock_recvfrom(&sock, 1500).await?;
        assert_eq!(data, b"datagram one");
        assert_eq!(from.as_socket(), Some(echo_addr));

        // recvfrom_into with a short buffer: the datagram is truncated to it.
        h.sock_sendto(&sock, b"datagram two", &to).await?;
        let mut buf = [0u8; 8];
        let (n, from) = h.sock_recvfrom_into(&sock, &mut buf[..4]).await?;
        assert_eq!((n, &buf[..n]), (4, &b"data"[..]));
        assert_eq!(from.as_socket(), Some(echo_addr));
        io::Result::Ok(())
    })
    .unwrap();
    peer.join().unwrap();
}

#[test]
fn huge_sendall_and_recv_concurrently_over_unix_socketpair() {
    // Small kernel buffers force sock_sendall through many partial sends
    // and writer registrations; the receiver sees every byte in order.
    let (a, b) = nonblocking_pair();
    socket2::SockRef::from(&a)
        .set_send_buffer_size(4096)
        .unwrap();
    socket2::SockRef::from(&b)
        .set_recv_buffer_size(4096)
        .unwrap();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let (sent, received) = run(&lp, async {
        let send = async {
            h.sock_sendall(&a, &data).await?;
            a.shutdown(std::net::Shutdown::Write)?;
            io::Result::Ok(())
        };
        let recv = async {
            let mut got = Vec::new();
            let mut buf = vec![0; 65536];
            loop {
                let n = h.sock_recv_into(&b, &mut buf).await?;
                if n == 0 {
                    return io::Result::Ok(got);
                }
                got.extend_from_slice(&buf[..n]);
            }
        };
        join(send, recv).await
    });
    sent.unwrap();
    let received = received.unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == data, "stream corrupted");
}

#[test]
fn connect_to_closed_port_is_refused() {
    let port = TcpListener::bind(local()).unwrap().local_addr().unwrap();
    // The listener is dropped: nothing listens on `port` any more.
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let client = tcp_client();
    let err = run(&lp, h.sock_connect(&client, &SockAddr::from(port))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        !h.remove_writer(&client.as_raw_fd()).unwrap(),
        "writer left behind"
    );
}

#[test]
fn dropping_pending_recv_removes_its_reader() {
    let (a, b) = nonblocking_pair();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    run(&lp, async {
        let mut recv = Box::pin(h.sock_recv(&a, 16));
        assert!(poll_once(&mut recv).await.is_pending());
        drop(recv);
        assert!(
            !h.remove_reader(&a.as_raw_fd()).unwrap(),
            "a reader was left behind"
        );
        // The fd takes a new reader, and a new sock_recv works.
        h.add_reader(&a.as_raw_fd(), || {}).unwrap();
        assert!(h.remove_reader(&a.as_raw_fd()).unwrap());
        (&b).write_all(b"x").unwrap();
        assert_eq!(h.sock_recv(&a, 16).await.unwrap(), b"x");
    });
}

#[test]
fn pending_recv_registers_a_reader_and_fails_if_it_is_taken_away() {
    let (a, _b) = nonblocking_pair();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    run(&lp, async {
        let mut recv = Box::pin(h.sock_recv(&a, 16));
        assert!(poll_once(&mut recv).await.is_pending());
        assert!(
            h.remove_reader(&a.as_raw_fd()).unwrap(),
            "the pending recv had no reader"
        );
        let err = match poll_once(&mut recv).await {
            Poll::Ready(r) => r.unwrap_err(),
            Poll::Pending => panic!("a recv whose reader was removed must not wait forever"),
        };
        assert!(err.to_string().contains("removed or replaced"), "{err}");
    });
}

#[test]
fn dropping_a_replaced_recv_leaves_the_new_reader() {
    // bpo-30064: the future must only remove the reader it registered.
    let (a, b) = nonblocking_pair();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let fired = std::rc::Rc::new(std::cell::Cell::new(false));
    run(&lp, async {
        let mut first = Box::pin(h.sock_recv(&a, 16));
        assert!(poll_once(&mut first).await.is_pending());
        // A second sock_recv on the same socket replaces the first's reader.
        let mut second = Box::pin(h.sock_recv(&a, 16));
        assert!(poll_once(&mut second).await.is_pending());
        drop(first);
        (&b).write_all(b"for the second").unwrap();
        assert_eq!(second.await.unwrap(), b"for the second");

        // Same with a plain add_reader replacing a pending recv.
        let mut third = Box::pin(h.sock_recv(&a, 16));
        assert!(poll_once(&mut third).await.is_pending());
        let f = fired.clone();
        h.add_reader(&a.as_raw_fd(), move || f.set(true)).unwrap();
        drop(third);
        assert!(
            h.remove_reader(&a.as_raw_fd()).unwrap(),
            "the user's reader was removed"
        );
    });
    assert!(!fired.get());
}

#[test]
fn cancelled_task_in_sock_recv_finishes_promptly_and_leaves_no_reader() {
    let (a, _b) = nonblocking_pair();
    let a = std::rc::Rc::new(a);
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let sock = a.clone();
    let h2 = h.clone();
    let task = lp.spawn_local(async move { h2.sock_recv(&*sock, 16).await });
    let before = run(&lp, async {
        // Let the task start and block in sock_recv.
        sloop::sleep(Duration::ZERO).await;
        sloop::sleep(Duration::ZERO).await;
        assert!(!task.is_finished());
        let before = h.iteration_count();
        assert!(task.cancel());
        let out = task.await;
        assert!(out.unwrap_err().is_cancelled());
        before
    });
    // Finished within a couple of iterations, not at the 10 s watchdog.
    assert!(h.iteration_count() - before <= 3);
    assert!(
        !h.remove_reader(&a.as_raw_fd()).unwrap(),
        "a reader was left behind"
    );
}

#[test]
fn cancelled_sendall_does_not_break_a_later_sendall() {
    // test_sock_client_racing: a sock_sendall blocked on a full send buffer
    // is dropped; the next sock_sendall on the socket completes and its
    // bytes arrive after whatever prefix the first one sent.
    let (a, b) = nonblocking_pair();
    socket2::SockRef::from(&a)
        .set_send_buffer_size(4096)
        .unwrap();
    let big = vec![b'.'; 1 << 20];
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let received = run(&lp, async {
        let mut blocked = Box::pin(h.sock_sendall(&a, &big));
        assert!(poll_once(&mut blocked).await.is_pending());
        drop(blocked);
        assert!(
            !h.remove_writer(&a.as_raw_fd()).unwrap(),
            "a writer was left behind"
        );
        let send = async {
            h.sock_sendall(&a, b"world").await?;
            a.shutdown(std::net::Shutdown::Write)
        };
        let recv = async {
            let mut got = Vec::new();
            loop {
                let chunk = h.sock_recv(&b, 65536).await?;
                if chunk.is_empty() {
                    return io::Result::Ok(got);
                }
                got.extend(chunk);
            }
        };
        let (sent, got) = join(send, recv).await;
        sent.unwrap();
        got.unwrap()
    });
    assert!(received.ends_with(b"world"));
    assert!(received.len() > 5 && received.len() < big.len() + 5);
    assert!(received[..received.len() - 5].iter().all(|&c| c == b'.'));
}

#[test]
fn dropped_connect_then_reconnect_works() {
    let listener = TcpListener::bind(local()).unwrap();
    let addr = SockAddr::from(listener.local_addr().unwrap());
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let client = tcp_client();
    run(&lp, async {
        let mut first = Box::pin(h.sock_connect(&client, &addr));
        if poll_once(&mut first).await.is_pending() {
            drop(first);
            assert!(
                !h.remove_writer(&client.as_raw_fd()).unwrap(),
                "a writer was left behind"
            );
        }
        h.sock_connect(&client, &addr).await.unwrap();
        h.sock_sendall(&client, b"ok").await.unwrap();
    });
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = [0; 2];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}

#[test]
fn debug_mode_refuses_blocking_sockets() {
    let (a, _b) = UnixStream::pair().unwrap(); // blocking
    let lp = EventLoop::builder().debug(true).build().unwrap();
    let h = lp.handle();
    run(&lp, async {
        let err = h.sock_recv(&a, 1).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "the socket must be non-blocking");
        let err = h.sock_sendall(&a, b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn unix_stream_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sock");
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    let addr = SockAddr::unix(&path).unwrap();
    listener.bind(&addr).unwrap();
    listener.listen(4).unwrap();
    listener.set_nonblocking(true).unwrap();
    let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    client.set_nonblocking(true).unwrap();

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let got = run(&lp, async {
        let (accepted, connected) =
            join(h.sock_accept(&listener), h.sock_connect(&client, &addr)).await;
        connected?;
        let (conn, _) = accepted?;
        h.sock_sendall(&client, b"over unix").await?;
        h.sock_recv(&conn, 64).await
    })
    .unwrap();
    assert_eq!(got, b"over unix");
}

#[test]
fn timeout_cancels_accept_and_removes_its_reader() {
    // test_cancel_sock_accept / bpo-41317: a wait_for timeout cancels
    // sock_accept, whose reader must go; after the listener closes, a
    // connect is refused (nothing accepted it behind our back).
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::from(local())).unwrap();
    listener.listen(1).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    run(&lp, async {
        let out = sloop::timeout(Duration::from_millis(5), h.sock_accept(&listener)).await;
        assert!(out.is_err(), "nothing connected, yet accept returned");
        assert!(
            !h.remove_reader(&listener.as_raw_fd()).unwrap(),
            "reader left behind"
        );
    });
    drop(listener);
    let client = tcp_client();
    let err = run(&lp, h.sock_connect(&client, &addr)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn fired_registration_removes_itself_so_an_unpolled_future_cannot_spin_the_loop() {
    let (a, b) = nonblocking_pair();
    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    run(&lp, async {
        // The future is polled once, then held without being polled.
        let mut recv = Box::pin(h.sock_recv(&a, 16));
        assert!(poll_once(&mut recv).await.is_pending());
        (&b).write_all(b"data").unwrap();
        let before = h.iteration_count();
        while h.iteration_count() < before + 3 {
            sloop::sleep(Duration::ZERO).await;
        }
        // The reader fired once and removed itself: a level-triggered reader
        // left in place would run every iteration while the data waits.
        assert!(!h.remove_reader(&a.as_raw_fd()).unwrap());
        // The data is still there for the future when it is polled.
        match poll_once(&mut recv).await {
            Poll::Ready(got) => assert_eq!(got.unwrap(), b"data"),
            Poll::Pending => panic!("readable socket, yet still pending"),
        }
    });
}

#[test]
fn sendto_waits_for_room_when_the_socket_says_eagain() {
    // test_sendto_blocking: a connected Unix datagram socket whose peer's
    // queue is full says EAGAIN; sock_sendto waits through a writer and
    // sends once the peer has read.
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dgram");
    let receiver = UnixDatagram::bind(&path).unwrap();
    receiver.set_nonblocking(true).unwrap();
    let sender = UnixDatagram::unbound().unwrap();
    sender.connect(&path).unwrap();
    sender.set_nonblocking(true).unwrap();
    let mut queued = 0;
    loop {
        match sender.send(b"filler") {
            Ok(_) => queued += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(queued > 0);

    let lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let to = SockAddr::unix(&path).unwrap();
    let fillers = run(&lp, async {
        let mut send = Box::pin(h.sock_sendto(&sender, b"last", &to));
        assert!(
            poll_once(&mut send).await.is_pending(),
            "the queue was not full"
        );
        let drain = async {
            let mut fillers = 0;
            loop {
                let (data, _) = h.sock_recvfrom(&receiver, 64).await?;
                if data == b"last" {
                    return io::Result::Ok(fillers);
                }
                assert_eq!(data, b"filler");
                fillers += 1;
            }
        };
        let (sent, fillers) = join(send, drain).await;
        assert_eq!(sent.unwrap(), 4);
        fillers.unwrap()
    });
    assert_eq!(fillers, queued);
    assert!(!h.remove_writer(&sender.as_raw_fd()).unwrap());
}
