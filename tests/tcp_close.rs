//! Closing: close versus abort with data queued, peer resets, writes to a
//! dead peer (no SIGPIPE), data that arrives with the hang-up, panics in a
//! protocol, and the misuse rules (reliability R01–R03, R06, R07, M01–M06).

mod support;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use sloop::{Error, Protocol, Transport};
use support::*;

fn small_buffers(t: &Transport) {
    t.with_socket(|s| s.set_send_buffer_size(4096).unwrap())
        .unwrap();
}

/// Connects a recorder to a plain std listener; returns the transport,
/// its record and the accepted peer.
fn connected(lp: &sloop::EventLoop) -> (Transport, Rec, TcpStream) {
    connected_keep_open(lp, false)
}

fn connected_keep_open(lp: &sloop::EventLoop, keep_open: bool) -> (Transport, Rec, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut proto, rec) = Recorder::new();
    proto.keep_open = keep_open;
    let t = run(
        lp,
        lp.create_connection(move || proto, ("127.0.0.1", addr.port())),
    )
    .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (t, rec, peer)
}

#[test]
fn close_with_4mb_buffered_delivers_everything_before_eof() {
    let lp = new_loop();
    let (t, rec, mut peer) = connected(&lp);
    small_buffers(&t);
    let body = pattern(4 * 1024 * 1024);
    t.write(&body).unwrap();
    assert!(t.write_buffer_size() > 0);
    t.close();
    assert!(t.is_closing());
    t.close(); // M06: no-op
               // M03: refused once closing, and counted.
    for _ in 0..7 {
        assert!(matches!(t.write(b"late"), Err(Error::ConnectionLost)));
    }
    assert!(t.write(b"").is_ok(), "M01: empty write is a no-op");
    let got = run(
        &lp,
        on_thread(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        }),
    );
    assert!(got == body, "all 4 MiB before EOF");
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    assert_eq!(rec.borrow().events.last(), Some(&Ev::Lost(None)));
    assert_eq!(rec.borrow().count(|e| matches!(e, Ev::Lost(_))), 1);
    t.abort(); // M06: abort after close is a no-op
    t.write_eof().unwrap(); // M05: after close, a no-op
    assert_eq!(t.write_buffer_size(), 0);
}

#[test]
fn abort_discards_buffer_and_reports_next_iteration() {
    let lp = new_loop();
    let (t, rec, mut peer) = connected(&lp);
    small_buffers(&t);
    let body = pattern(1024 * 1024);
    t.write(&body).unwrap();
    let buffered = t.write_buffer_size();
    assert!(buffered > 0);
    t.abort();
    assert_eq!(t.write_buffer_size(), 0, "discarded");
    assert!(
        !rec.borrow().lost(),
        "connection_lost comes in a later iteration"
    );
    // One iteration later it is there.
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(rec.borrow().events.last(), Some(&Ev::Lost(None)));
    t.close();
    t.abort();
    let got = run(
        &lp,
        on_thread(move || {
            let mut got = Vec::new();
            let _ = peer.read_to_end(&mut got);
            got.len()
        }),
    );
    assert!(got <= body.len() - buffered, "buffered bytes were not sent");
    assert_eq!(rec.borrow().count(|e| matches!(e, Ev::Lost(_))), 1);
}

#[test]
fn peer_reset_gives_connection_lost_with_error() {
    // R01: linger 0 then close sends RST.
    let lp = new_loop();
    for _ in 0..20 {
        let (_t, rec, peer) = connected(&lp);
        let s = socket2::Socket::from(peer);
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
        let r = rec.clone();
        run(&lp, until(move || r.borrow().lost()));
        let r = rec.borrow();
        assert_eq!(
            r.events,
            vec![
                Ev::Made,
                Ev::Lost(Some(std::io::ErrorKind::ConnectionReset))
            ]
        );
    }
}

#[test]
fn reset_with_full_buffer_fails_empty_waiter() {
    // R02: the buffer is dropped, the waiter fails, flow control resets.
    let lp = new_loop();
    let (t, rec, peer) = connected(&lp);
    small_buffers(&t);
    t.write(&pattern(1024 * 1024)).unwrap();
    assert!(rec.borrow().events.contains(&Ev::Pause));
    let waiter = t.empty_waiter().unwrap();
    assert!(matches!(
        t.empty_waiter(),
        Err(Error::EmptyWaiterAlreadySet)
    ));
    let s = socket2::Socket::from(peer);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let res = run(&lp, waiter);
    assert!(
        res.is_err(),
        "the empty waiter fails when the connection is lost"
    );
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    assert_eq!(t.write_buffer_size(), 0);
    assert!(matches!(
        rec.borrow().events.last(),
        Some(Ev::Lost(Some(_)))
    ));
    assert!(
        !rec.borrow().events.contains(&Ev::Resume),
        "no resume after loss"
    );
}

#[test]
fn empty_waiter_completes_when_drained() {
    let lp = new_loop();
    let (t, _rec, mut peer) = connected(&lp);
    small_buffers(&t);
    // Nothing buffered: at once.
    run(&lp, t.empty_waiter().unwrap()).unwrap();
    let body = pattern(512 * 1024);
    t.write(&body).unwrap();
    let w = t.empty_waiter().unwrap();
    let reader = on_thread(move || {
        let mut got = vec![0; 512 * 1024];
        peer.read_exact(&mut got).unwrap();
        got
    });
    run(&lp, w).unwrap();
    assert_eq!(t.write_buffer_size(), 0);
    assert!(run(&lp, reader) == body);
}

#[test]
fn write_to_closed_peer_never_raises_sigpipe() {
    // R03, in a child process with SIGPIPE back at its default: write and
    // writelines to a peer that closed end in connection_lost(Err), and the
    // process lives.
    let status = in_child("write_to_closed_peer_never_raises_sigpipe", &[], || {
        // SAFETY: restoring the default disposition of SIGPIPE in a
        // single-threaded child before anything else runs.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        for vectored in [false, true] {
            let lp = new_loop();
            // Keep our write side open after the peer's EOF, so that the
            // writes really go to a closed peer.
            let (t, rec, peer) = connected_keep_open(&lp, true);
            drop(peer);
            let mut n = 0;
            while !rec.borrow().lost() && n < 1000 {
                let r = if vectored {
                    t.writelines(&[b"ab", b"", b"cd"])
                } else {
                    t.write(b"abcd")
                };
                let _ = r;
                n += 1;
                lp.stop();
                lp.run_forever().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            let r = rec.borrow();
            assert!(
                matches!(r.events.last(), Some(Ev::Lost(Some(_)))),
                "{:?}",
                r.events
            );
        }
    });
    assert!(status.success(), "child died: {status:?}");
}

#[test]
fn data_that_arrives_with_hangup_is_all_delivered() {
    // R06: max_size + 1 bytes, then close at once.
    let lp = new_loop();
    for size in [256 * 1024 + 1, 3 * 1024 * 1024] {
        let (_t, rec, mut peer) = connected(&lp);
        let body = pattern(size);
        let b = body.clone();
        std::thread::spawn(move || {
            peer.write_all(&b).unwrap();
        });
        let r = rec.clone();
        run(&lp, until(move || r.borrow().lost()));
        let r = rec.borrow();
        assert!(r.data == body, "every byte before eof");
        let eof_at = r.events.iter().position(|e| *e == Ev::Eof).unwrap();
        assert_eq!(eof_at, r.events.len() - 2, "eof then lost: {:?}", &r.events);
    }
}

struct Panicky;
impl Protocol for Panicky {
    fn data_received(&mut self, _: &[u8]) {
        panic!("boom");
    }
}

#[test]
fn panic_in_data_received_closes_only_that_transport() {
    let lp = lenient_loop();
    let messages = Rc::new(RefCell::new(Vec::new()));
    let m = messages.clone();
    lp.set_exception_handler(Some(
        move |_: &sloop::LoopHandle, ctx: &sloop::ExceptionContext| {
            m.borrow_mut().push(ctx.message.clone());
        },
    ));
    let (good, good_rec, mut good_peer) = connected(&lp);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bad = run(&lp, lp.create_connection(|| Panicky, ("127.0.0.1", port))).unwrap();
    let (mut bad_peer, _) = listener.accept().unwrap();
    bad_peer.write_all(b"x").unwrap();
    let b = bad.clone();
    run(&lp, until(move || b.is_closing()));
    assert_eq!(
        messages.borrow().as_slice(),
        ["Fatal error: protocol.data_received() call failed."]
    );
    // The other connection is unaffected.
    good_peer.write_all(b"still here").unwrap();
    let r = good_rec.clone();
    run(&lp, until(move || r.borrow().data.len() == 10));
    assert!(!good.is_closing());
    let mut buf = Vec::new();
    bad_peer.read_to_end(&mut buf).unwrap(); // closed by us
}

/// Defect: `abort` from inside `resume_writing` while an empty waiter
/// waited. The drain path went on as if the buffer had been sent and
/// resolved the waiter with `Ok`, although `abort` had discarded the data.
#[test]
fn abort_inside_resume_writing_fails_the_pending_empty_waiter() {
    /// On resume: writes far more than the kernel can hold, then aborts.
    struct WriteThenAbortOnResume(Rec);
    impl Protocol for WriteThenAbortOnResume {
        fn connection_made(&mut self, t: &Transport) {
            self.0.borrow_mut().transport = Some(t.clone());
        }
        fn resume_writing(&mut self) {
            self.0.borrow_mut().events.push(Ev::Resume);
            let t = self.0.borrow().transport.clone().unwrap();
            t.write(&pattern(16 * 1024 * 1024)).unwrap();
            assert!(t.write_buffer_size() > 0);
            t.abort();
        }
        fn connection_lost(&mut self, exc: Option<std::io::Error>) {
            let mut r = self.0.borrow_mut();
            r.events.push(Ev::Lost(exc.map(|e| e.kind())));
            r.transport = None;
        }
    }
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive buffer (inherited by the accepted socket) stops the
    // kernel from growing it to hold everything the transport writes.
    socket2::SockRef::from(&listener)
        .set_recv_buffer_size(4096)
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let rec = Rec::default();
    let r = rec.clone();
    let t = run(
        &lp,
        lp.create_connection(move || WriteThenAbortOnResume(r), ("127.0.0.1", port)),
    )
    .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    small_buffers(&t);
    t.write(&pattern(1024 * 1024)).unwrap();
    assert!(t.write_buffer_size() > 64 * 1024, "paused");
    let waiter = t.empty_waiter().unwrap();
    // The peer reads, so the buffer drains and resume_writing runs; its
    // write and abort happen in one callback, whatever the peer does.
    let reader = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = peer.read_to_end(&mut sink);
    });
    let res = run(&lp, waiter);
    assert!(
        matches!(res, Err(Error::ConnectionLost)),
        "the waiter must fail: abort discarded buffered data ({res:?})"
    );
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    assert_eq!(
        rec.borrow().events,
        [Ev::Resume, Ev::Lost(None)],
        "one resume, then the loss"
    );
    reader.join().unwrap();
}

/// Defect: an `EmptyWaiter` polled again after it completed hung (its
/// result had been taken and nothing marked it done).
#[test]
fn empty_waiter_polled_again_after_completion_does_not_hang() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    let lp = new_loop();
    let (t, _rec, _peer) = connected(&lp);
    let mut w = t.empty_waiter().unwrap();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(matches!(
        Pin::new(&mut w).poll(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert!(
        matches!(Pin::new(&mut w).poll(&mut cx), Poll::Ready(Ok(()))),
        "a second poll answers again"
    );
    // And a failed one fails again.
    t.abort();
    let mut w = t.empty_waiter().unwrap();
    for _ in 0..2 {
        assert!(matches!(
            Pin::new(&mut w).poll(&mut cx),
            Poll::Ready(Err(Error::ConnectionLost))
        ));
    }
}

/// Defect: `with_socket` held the transport's socket borrowed while the
/// user's closure ran (against D2): closing the loop from inside it left
/// the socket open, the loop's close having panicked on the borrow.
#[test]
fn with_socket_closure_may_close_the_loop() {
    let lp = new_loop();
    let (t, _rec, mut peer) = connected(&lp);
    let h = lp.handle();
    let fd = t.with_socket(|s| {
        h.close().unwrap();
        std::os::fd::AsRawFd::as_raw_fd(s)
    });
    assert!(fd.is_some());
    assert_eq!(t.as_raw_fd(), None, "closing the loop closed the socket");
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    assert_eq!(peer.read(&mut [0; 1]).unwrap(), 0, "the peer sees EOF");
}
