//! DatagramSocket: a datagram transport as `Stream` + `Sink` on real
//! sockets: a 10,000-datagram round trip, `poll_ready` waiting while the
//! transport paused writing, `poll_flush` waiting for the send queue,
//! OS errors as stream items, receive-side backpressure, dropping,
//! closing, and cancelling a receive.
//!
//! Send-side backpressure runs on Unix datagram socket pairs with a small
//! `SO_SNDBUF` and a peer that does not read: UDP over loopback never
//! returns EAGAIN (the kernel drops instead), a Unix datagram socket
//! blocks, without loss, until the peer reads.

mod support;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::poll_fn;
use futures::task::ArcWake;
use futures::{Sink, SinkExt, StreamExt};
use sloop::{DatagramSocket, UnixAddr};
use support::{new_loop, on_thread, run, until};

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Returns `Pending` once (after waking itself), so the loop runs an
/// iteration.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// Polls `fut` once, with the task's waker.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// Datagram `i` of a numbered sequence: its index and a filler whose
/// length varies with `i`; every 500th is empty (empty datagrams are
/// datagrams too).
fn datagram(i: u32) -> Vec<u8> {
    if i % 500 == 499 {
        return Vec::new();
    }
    let mut d = i.to_be_bytes().to_vec();
    d.extend((0..(i % 700)).map(|k| (k as u8) ^ (i as u8)));
    d
}

/// A connected Unix datagram pair; the first end has a small send buffer,
/// so a few datagrams the peer has not read fill it.
fn small_sndbuf_pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    socket2::SockRef::from(&a)
        .set_send_buffer_size(4096)
        .unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (a, b)
}

/// Reads `n` datagrams on a thread.
fn read_on_thread(peer: UnixDatagram, n: usize) -> impl Future<Output = Vec<Vec<u8>>> {
    on_thread(move || {
        let mut buf = vec![0u8; 4096];
        (0..n)
            .map(|_| {
                let len = peer.recv(&mut buf).expect("every datagram arrives");
                buf[..len].to_vec()
            })
            .collect()
    })
}

/// Polls `poll_ready` once.
fn poll_ready_now<S: Sink<T> + Unpin, T>(sink: &mut S) -> Poll<Result<(), S::Error>> {
    let waker = futures::task::noop_waker();
    Pin::new(sink).poll_ready(&mut Context::from_waker(&waker))
}

/// Sends numbered datagrams through the Sink until `poll_ready` is
/// `Pending`; returns how many were sent.
fn fill_until_paused(sock: &mut DatagramSocket<UnixAddr>) -> u32 {
    let mut sent = 0;
    loop {
        match poll_ready_now(sock) {
            Poll::Ready(r) => {
                r.unwrap();
                Pin::new(&mut *sock)
                    .start_send((datagram(sent), UnixAddr::Unnamed))
                    .unwrap();
                sent += 1;
                assert!(sent < 100_000, "the transport never paused writing");
            }
            Poll::Pending => return sent,
        }
    }
}

#[test]
fn ten_thousand_datagrams_round_trip_through_sink_and_stream() {
    const N: u32 = 10_000;
    // In flight at once: loopback UDP drops what does not fit in the
    // receiver's buffer, so the client keeps a window.
    const WINDOW: u32 = 64;
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        // The echo: the server's Stream forwarded into its own Sink.
        let server = DatagramSocket::bind(&h, localhost()).await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let echo = h.spawn_local(async move {
            let (rx, tx) = server.split();
            rx.forward(tx).await
        });

        let mut client = DatagramSocket::bind(&h, localhost()).await.unwrap();
        let (mut sent, mut got) = (0u32, 0u32);
        while got < N {
            while sent < N && sent - got < WINDOW {
                client.feed((datagram(sent), server_addr)).await.unwrap();
                sent += 1;
            }
            client.flush().await.unwrap();
            assert_eq!(client.transport().write_buffer_len(), 0);
            let (data, from) = client.next().await.expect("stream open").unwrap();
            assert_eq!(from, server_addr);
            assert!(
                data == datagram(got),
                "datagram {got} differs or is out of order"
            );
            got += 1;
        }
        assert_eq!(client.queued_len(), 0, "nothing extra arrived");
        client.close().await.unwrap();
        assert!(client.transport().is_closing());
        echo.cancel();
    });
}

#[test]
fn poll_ready_is_pending_while_the_transport_paused_writing_and_resumes() {
    // R38: poll_ready is Pending above the high-water mark.
    const HIGH: usize = 8 * 1024;
    let lp = new_loop();
    let h = lp.handle();
    let (mine, peer) = small_sndbuf_pair();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        sock.transport()
            .set_write_buffer_limits(Some(HIGH), None)
            .unwrap();
        let (low, _) = sock.transport().write_buffer_limits();
        yield_now().await; // connection_made

        let sent = fill_until_paused(&mut sock);
        let t = sock.transport().clone();
        assert!(t.write_buffer_len() > 0, "datagrams wait in the queue");
        assert!(
            t.write_buffer_size() + 8 * t.write_buffer_len() > HIGH,
            "paused only above the high-water mark"
        );
        // Nobody reads: it stays paused across iterations.
        for _ in 0..5 {
            yield_now().await;
            assert!(poll_ready_now(&mut sock).is_pending());
        }

        // The peer reads everything, then one more.
        let reader = read_on_thread(peer, sent as usize + 1);
        poll_fn(|cx| Pin::new(&mut sock).poll_ready(cx))
            .await
            .unwrap();
        assert!(
            t.write_buffer_size() + 8 * t.write_buffer_len() <= low,
            "resumed at the low-water mark"
        );
        sock.send((b"last".to_vec(), UnixAddr::Unnamed))
            .await
            .unwrap();
        let got = reader.await;
        for (i, d) in got[..sent as usize].iter().enumerate() {
            assert!(*d == datagram(i as u32), "datagram {i} differs");
        }
        assert_eq!(got[sent as usize], b"last");
    });
}

#[test]
fn poll_flush_completes_only_when_the_send_queue_is_empty() {
    let lp = new_loop();
    let h = lp.handle();
    let (mine, peer) = small_sndbuf_pair();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        let t = sock.transport().clone();
        // Nothing queued: done at once.
        assert!(
            poll_fn(|cx| Poll::Ready(Pin::new(&mut sock).poll_flush(cx)))
                .await
                .is_ready()
        );

        // Empty datagrams until the socket is full: the queue holds
        // datagrams but no payload bytes, and flush must still wait.
        let mut sent = 0;
        while t.write_buffer_len() == 0 {
            sock.send_to(b"", UnixAddr::Unnamed).await.unwrap();
            sent += 1;
            assert!(sent < 100_000, "the socket never filled");
        }
        for _ in 0..3 {
            sock.send_to(b"", UnixAddr::Unnamed).await.unwrap();
            sent += 1;
        }
        assert_eq!(t.write_buffer_size(), 0);

        let mut pending_polls = 0;
        let flush = poll_fn(|cx| {
            let r = Pin::new(&mut sock).poll_flush(cx);
            match &r {
                Poll::Pending => {
                    assert!(t.write_buffer_len() > 0, "pending with an empty queue");
                    pending_polls += 1;
                }
                Poll::Ready(_) => assert_eq!(t.write_buffer_len(), 0, "done early"),
            }
            r
        });
        let mut flush = pin!(flush);
        for _ in 0..3 {
            assert!(poll_once(flush.as_mut()).await.is_pending());
            yield_now().await;
        }
        let reader = read_on_thread(peer, sent);
        flush.await.unwrap();
        assert!(pending_polls >= 3);
        let got = reader.await;
        assert!(got.iter().all(|d| d.is_empty()));
    });
}

#[test]
fn flush_fails_when_the_transport_is_aborted() {
    let lp = new_loop();
    let h = lp.handle();
    let (mine, _peer) = small_sndbuf_pair();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        yield_now().await;
        fill_until_paused(&mut sock);
        let t = sock.transport().clone();
        let mut flush = pin!(poll_fn(|cx| Pin::new(&mut sock).poll_flush(cx)));
        assert!(poll_once(flush.as_mut()).await.is_pending());
        t.abort();
        let err = flush.await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    });
}

#[test]
fn connection_refused_is_an_err_item_and_the_stream_goes_on() {
    // R38: error_received shows up as an Err item; the stream goes on.
    let lp = new_loop();
    let h = lp.handle();
    // A port nobody listens on (yet).
    let port_addr = UdpSocket::bind(localhost()).unwrap().local_addr().unwrap();
    run(&lp, async move {
        let mut sock = DatagramSocket::connect(&h, localhost(), port_addr)
            .await
            .unwrap();
        assert_eq!(sock.peer_addr(), Some(port_addr));
        sock.send_to(b"anyone?", port_addr).await.unwrap();
        let err = sock.next().await.expect("stream open").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(
            !sock.transport().is_closing(),
            "an error item closes nothing"
        );

        // Someone listens now: the same socket and stream work on.
        let peer = UdpSocket::bind(port_addr).expect("the port is still free");
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.send_to(b"second", port_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second");
        peer.send_to(b"reply", from).unwrap();
        // Skip further refusals the first send may have caused.
        let item = loop {
            match sock.next().await.expect("stream open") {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                other => break other,
            }
        };
        assert_eq!(item.unwrap(), (b"reply".to_vec(), port_addr));
    });
}

#[test]
fn receive_queue_stays_bounded_while_not_polled_and_nothing_is_lost() {
    // R28: a Stream nobody polls: bounded queue, reading paused, no loss.
    const N: u32 = 2_000;
    const CAP: usize = 16;
    let lp = new_loop();
    let h = lp.handle();
    let (mine, peer) = UnixDatagram::pair().unwrap();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        sock.set_recv_queue_limits(CAP, 1 << 20);
        assert_eq!(sock.recv_queue_limits(), (CAP, 1 << 20));
        // The peer sends everything, blocking while our socket is full.
        let sender = on_thread(move || {
            for i in 0..N {
                peer.send(&datagram(i)).expect("blocking send");
            }
            peer
        });

        let t = sock.transport().clone();
        until(|| !t.is_reading()).await;
        assert_eq!(sock.queued_len(), CAP, "paused at the cap");
        // More iterations, the peer still sending: the queue stays put.
        for _ in 0..20 {
            yield_now().await;
            assert_eq!(sock.queued_len(), CAP);
        }
        // Resumes at half, not before: each take below is Ready at once,
        // with no loop iteration in between.
        for _ in 0..CAP / 2 - 1 {
            sock.next().await.unwrap().unwrap();
            assert!(!t.is_reading());
        }
        sock.next().await.unwrap().unwrap();
        assert_eq!(sock.queued_len(), CAP / 2);
        assert!(t.is_reading(), "resumed at half the cap");

        let mut max_seen = 0;
        for i in CAP as u32 / 2..N {
            let (d, from) = sock.next().await.unwrap().unwrap();
            assert_eq!(from, UnixAddr::Unnamed);
            assert!(d == datagram(i), "datagram {i} lost or out of order");
            max_seen = max_seen.max(sock.queued_len());
        }
        assert!(max_seen < CAP, "the queue never exceeded the cap");
        let _peer = sender.await;
        assert_eq!(sock.queued_len(), 0);
    });
}

#[test]
fn receive_queue_byte_bound_pauses_too() {
    let lp = new_loop();
    let h = lp.handle();
    let (mine, peer) = UnixDatagram::pair().unwrap();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        sock.set_recv_queue_limits(1000, 3000);
        let sender = on_thread(move || {
            for i in 0..20u8 {
                peer.send(&[i; 1000]).expect("blocking send");
            }
            peer
        });
        let t = sock.transport().clone();
        until(|| !t.is_reading()).await;
        assert_eq!(sock.queued_bytes(), 3000);
        assert_eq!(sock.queued_len(), 3);
        for i in 0..20u8 {
            assert_eq!(sock.recv_from().await.unwrap().0, vec![i; 1000]);
            assert!(sock.queued_bytes() <= 3000);
        }
        drop(sender.await);
    });
}

#[test]
fn dropping_the_socket_sends_what_is_queued_then_closes_the_transport() {
    let lp = new_loop();
    let h = lp.handle();
    let (mine, peer) = small_sndbuf_pair();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        yield_now().await;
        let sent = fill_until_paused(&mut sock);
        let t = sock.transport().clone();
        assert!(t.write_buffer_len() > 0);
        drop(sock);
        assert!(t.is_closing(), "drop closes");
        let got = read_on_thread(peer, sent as usize).await;
        for (i, d) in got.iter().enumerate() {
            assert!(*d == datagram(i as u32), "datagram {i} differs");
        }
        until(|| t.raw_fd().is_none()).await; // connection_lost closed it
    });
}

#[test]
fn dropping_both_halves_closes_one_does_not() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let sock = DatagramSocket::bind(&h, localhost()).await.unwrap();
        let t = sock.transport().clone();
        let (rx, tx) = sock.split();
        drop(tx);
        assert!(!t.is_closing(), "the receiving half keeps it open");
        drop(rx);
        assert!(t.is_closing());
        for _ in 0..3 {
            yield_now().await;
        }
        assert_eq!(t.raw_fd(), None, "the socket is closed");
    });
}

#[test]
fn after_close_sends_fail_and_the_stream_ends() {
    // R38: after close, sends fail and the Stream ends (None).
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let mut sock = DatagramSocket::bind(&h, localhost()).await.unwrap();
        let me = sock.local_addr().unwrap();
        // Received before the close: still handed out.
        sock.send_to(b"early", me).await.unwrap();
        until(|| sock.queued_len() == 1).await;
        SinkExt::close(&mut sock).await.unwrap();
        let err = sock.send_to(b"late", me).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        let err = sock.send((b"late".to_vec(), me)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        assert_eq!(sock.next().await.unwrap().unwrap(), (b"early".to_vec(), me));
        assert!(sock.next().await.is_none(), "the stream ends");
        let err = sock.recv_from().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    });
}

#[test]
fn a_connected_socket_refuses_other_destinations() {
    let lp = new_loop();
    let h = lp.handle();
    let peer = UdpSocket::bind(localhost()).unwrap();
    let other = UdpSocket::bind(localhost()).unwrap();
    run(&lp, async move {
        let mut sock = DatagramSocket::connect(&h, localhost(), peer.local_addr().unwrap())
            .await
            .unwrap();
        let err = sock
            .send_to(b"x", other.local_addr().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = sock
            .send((b"x".to_vec(), other.local_addr().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(!sock.transport().is_closing());
    });
}

struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn cancelling_recv_from_after_its_wake_loses_nothing() {
    let lp = new_loop();
    let h = lp.handle();
    let peer = UdpSocket::bind(localhost()).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    run(&lp, async move {
        let mut sock = DatagramSocket::bind(&h, localhost()).await.unwrap();
        let me = sock.local_addr().unwrap();
        let woken = Arc::new(Flag(AtomicBool::new(false)));
        let waker = futures::task::waker(woken.clone());
        {
            let mut recv = pin!(sock.recv_from());
            assert!(recv
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            peer.send_to(b"one", me).unwrap();
            // The datagram arrives and wakes the receive...
            until(|| woken.0.load(Ordering::SeqCst)).await;
            // ...which is dropped without being polled again.
        }
        assert_eq!(sock.queued_len(), 1);
        peer.send_to(b"two", me).unwrap();
        assert_eq!(
            sock.recv_from().await.unwrap(),
            (b"one".to_vec(), peer_addr)
        );
        assert_eq!(
            sock.recv_from().await.unwrap(),
            (b"two".to_vec(), peer_addr)
        );
    });
}

#[test]
fn with_endpoint_passes_builder_options_and_unix_paths_work() {
    let lp = new_loop();
    let h = lp.handle();
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a.sock");
    let b_path = dir.path().join("b.sock");
    run(&lp, async move {
        let udp = DatagramSocket::with_endpoint(&h, |b| b.local_addr(localhost()).reuse_port(true))
            .await
            .unwrap();
        let reuse = udp
            .transport()
            .with_socket(|s| socket2::SockRef::from(s).reuse_port().unwrap())
            .unwrap();
        assert!(reuse, "the builder's option reached the socket");

        let mut a = DatagramSocket::bind_unix(&h, &a_path).await.unwrap();
        let mut b = DatagramSocket::with_unix_endpoint(&h, |bld| {
            bld.local_addr(&b_path).remote_addr(&a_path)
        })
        .await
        .unwrap();
        assert_eq!(a.local_addr(), Some(UnixAddr::Path(a_path.clone())));
        b.send_to(b"hello", UnixAddr::Path(a_path.clone()))
            .await
            .unwrap();
        let (d, from) = a.recv_from().await.unwrap();
        assert_eq!(
            (d, &from),
            (b"hello".to_vec(), &UnixAddr::Path(b_path.clone()))
        );
        a.send_to(b"back", from).await.unwrap();
        assert_eq!(
            b.next().await.unwrap().unwrap(),
            (b"back".to_vec(), UnixAddr::Path(a_path.clone()))
        );
    });
}

#[test]
fn a_socket_outliving_its_loop_drops_quietly() {
    let lp = new_loop();
    let h = lp.handle();
    let (sock, t) = run(&lp, async move {
        let mut sock = DatagramSocket::bind(&h, localhost()).await.unwrap();
        let me = sock.local_addr().unwrap();
        sock.send_to(b"unread", me).await.unwrap();
        until(|| sock.queued_len() == 1).await;
        let t = sock.transport().clone();
        (sock, t)
    });
    lp.close().unwrap();
    assert_eq!(t.raw_fd(), None, "closing the loop closed the socket");
    drop(sock); // close() on a closed loop: no panic, nothing scheduled
    assert!(t.is_closing());
}

/// A Sink driven by `send_all` through a full Unix socket: everything
/// arrives in order, and the transport's queue never grows past the
/// high-water mark plus one datagram, because `poll_ready` waits while the
/// transport has paused writing.
#[test]
fn ten_thousand_unix_datagrams_through_send_all_on_two_tasks() {
    const N: u32 = 10_000;
    const HIGH: usize = 4096;
    let lp = new_loop();
    let h = lp.handle();
    let (a, b) = small_sndbuf_pair();
    run(&lp, async move {
        let (_a_rx, mut a_tx) = DatagramSocket::from_unix(&h, a).unwrap().split();
        let t = a_tx.transport().clone();
        t.set_write_buffer_limits(Some(HIGH), None).unwrap();
        let (mut b_rx, _b_tx) = DatagramSocket::from_unix(&h, b).unwrap().split();
        let max_queued = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let sender = {
            let max_queued = max_queued.clone();
            h.spawn_local(async move {
                // send_all calls poll_ready before taking each item.
                let mut items = futures::stream::iter(0..N).map(|i| {
                    let size = t.write_buffer_size() + 8 * t.write_buffer_len();
                    max_queued.set(max_queued.get().max(size));
                    Ok((datagram(i), UnixAddr::Unnamed))
                });
                a_tx.send_all(&mut items).await.unwrap();
                assert_eq!(t.write_buffer_len(), 0, "send_all flushes");
                a_tx
            })
        };
        for i in 0..N {
            let (d, _) = b_rx.next().await.unwrap().unwrap();
            assert!(d == datagram(i), "datagram {i} lost or out of order");
        }
        let _a_tx = sender.await.unwrap();
        let max = max_queued.get();
        assert!(max > 0, "the sender had to queue");
        assert!(max <= HIGH + 8 + 703, "queue grew past the mark: {max}");
    });
}

/// The transport's empty waiter, which `poll_flush` rides on: one at a
/// time (a flush fails while someone else holds it); a waiter made before
/// `close` completes with `Ok` once `close` has sent the queue; after
/// that, a new one fails at once.
#[test]
fn the_transport_empty_waiter_is_one_at_a_time_and_completes_through_close() {
    let lp = new_loop();
    let h = lp.handle();
    let (mine, peer) = small_sndbuf_pair();
    run(&lp, async move {
        let mut sock = DatagramSocket::from_unix(&h, mine).unwrap();
        yield_now().await;
        let sent = fill_until_paused(&mut sock);
        let t = sock.transport().clone();
        let waiter = t.empty_waiter().unwrap();
        assert!(t.empty_waiter().is_err(), "a second waiter is refused");
        let err = sock.flush().await.unwrap_err();
        assert_eq!(err.to_string(), "Empty waiter is already set");

        t.close();
        let reader = read_on_thread(peer, sent as usize);
        waiter.await.expect("close sent the queue");
        assert_eq!(t.write_buffer_len(), 0);
        assert_eq!(reader.await.len(), sent as usize);
        assert!(t.empty_waiter().unwrap().await.is_err(), "lost by now");
    });
}
