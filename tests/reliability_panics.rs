//! A panic in every kind of callback is reported once, the loop does not
//! spin afterwards, and its owner is left in the documented state
//! (docs/design.md D8, "What a panic leaves"). What tests/loop_exceptions.rs
//! already shows (call_soon, timers, raw readers and writers keep running,
//! a panicking handler, task panics) is not repeated; this file adds each
//! protocol method, buffered and datagram protocols, callbacks and task
//! wakes from other threads, and a foreign waker that panics.

mod support;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::rc::Rc;
use std::task::{Context, Wake, Waker};

use futures::AsyncRead;
use sloop::{
    Buffered, BufferedProtocol, DatagramProtocol, DatagramTransport, EventLoop, Protocol,
    Transport, TransportStream,
};
use support::drop_points::{assert_no_spin, settle};
use support::*;

/// The write that pauses: far more than the kernel takes while the peer
/// does not read (the transport's send buffer is 4 KiB).
const BIG: usize = 1 << 20;

/// Which method panics.
#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    Made,
    Data,
    Eof,
    Lost,
    Pause,
    Resume,
}

#[derive(Default)]
struct Seen {
    made: u32,
    lost: Vec<Option<String>>,
    data: Vec<u8>,
    transport: Option<Transport>,
}

struct Panicky {
    at: M,
    seen: Rc<RefCell<Seen>>,
}

impl Panicky {
    fn maybe(&self, here: M) {
        if self.at == here {
            panic!("boom in {here:?}");
        }
    }
}

impl Protocol for Panicky {
    fn connection_made(&mut self, t: &Transport) {
        let mut s = self.seen.borrow_mut();
        s.made += 1;
        s.transport = Some(t.clone());
        drop(s);
        // Small kernel buffers, so a large write is mostly buffered here.
        t.with_socket(|s| s.set_send_buffer_size(4096))
            .unwrap()
            .unwrap();
        self.maybe(M::Made);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.seen.borrow_mut().data.extend_from_slice(data);
        self.maybe(M::Data);
        if data.starts_with(b"big") {
            let t = self.seen.borrow().transport.clone().unwrap();
            // A tiny high-water mark so the write pauses, then resumes.
            t.set_write_buffer_limits(Some(1), Some(0)).unwrap();
            t.write(&vec![0; BIG]).unwrap();
        }
    }
    fn eof_received(&mut self) -> bool {
        self.maybe(M::Eof);
        false
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.seen.borrow_mut().lost.push(exc.map(|e| e.to_string()));
        self.maybe(M::Lost);
    }
    fn pause_writing(&mut self) {
        self.maybe(M::Pause);
    }
    fn resume_writing(&mut self) {
        self.maybe(M::Resume);
    }
}

/// A connection whose protocol panics in `at`, driven until that method
/// ran: returns what the protocol saw, the reports and the peer.
fn drive(at: M) -> (Rc<RefCell<Seen>>, Vec<String>, TcpStream, EventLoop) {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let (t, mut peer) = connected(&lp, Panicky { at, seen: s });
    drop(t);
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    match at {
        M::Made => {}
        M::Data => peer.write_all(b"x").unwrap(),
        M::Eof | M::Lost => peer.shutdown(std::net::Shutdown::Write).unwrap(),
        M::Pause | M::Resume => {
            peer.write_all(b"big").unwrap();
            // The write happened while the peer does not read: most of it
            // waits in the transport's buffer, past the high-water mark.
            let sn = seen.clone();
            run(&lp, until(move || sn.borrow().data.starts_with(b"big")));
            assert!(
                seen.borrow()
                    .transport
                    .as_ref()
                    .unwrap()
                    .write_buffer_size()
                    > 1
            );
            // Read it all so the buffer drains and resume_writing comes.
            let mut p = peer.try_clone().unwrap();
            let got = run(
                &lp,
                on_thread(move || {
                    let mut buf = vec![0; 1 << 16];
                    let mut n = 0;
                    while n < BIG {
                        match p.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                    }
                    n
                }),
            );
            assert_eq!(got, BIG, "every byte written arrives");
        }
    }
    let r = reports.clone();
    run(&lp, until(move || !r.borrow().is_empty()));
    settle(&lp, 4);
    assert_no_spin(&lp, &format!("after a panic in {at:?}"));
    let reports = reports.borrow().clone();
    (seen, reports, peer, lp)
}

/// Reads `peer` until EOF or an error (a reset); true if it ended.
fn peer_closed(peer: &mut TcpStream) -> bool {
    let mut buf = [0; 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_panic_in_connection_made_data_received_or_eof_received_is_the_transports_fatal_error() {
    for at in [M::Made, M::Data, M::Eof] {
        let (seen, reports, mut peer, _lp) = drive(at);
        let name = match at {
            M::Made => "connection_made",
            M::Data => "data_received",
            _ => "eof_received",
        };
        assert_eq!(
            reports,
            vec![format!("Fatal error: protocol.{name}() call failed.")],
            "{at:?}: reported once"
        );
        let s = seen.borrow();
        assert_eq!(s.made, 1);
        assert_eq!(s.lost.len(), 1, "{at:?}: connection_lost exactly once");
        let err = s.lost[0]
            .as_deref()
            .expect("connection_lost carries the panic");
        assert!(
            err.contains(&format!("protocol.{name}() panicked")),
            "{err}"
        );
        assert!(s.transport.as_ref().unwrap().is_closing());
        assert!(peer_closed(&mut peer), "{at:?}: the peer sees the close");
    }
}

#[test]
fn a_panic_in_connection_lost_is_reported_only_and_nothing_follows() {
    let (seen, reports, mut peer, _lp) = drive(M::Lost);
    assert_eq!(
        reports,
        vec!["protocol.connection_lost() failed".to_owned()]
    );
    assert_eq!(seen.borrow().lost, vec![None], "connection_lost ran once");
    assert!(peer_closed(&mut peer));
}

#[test]
fn a_panic_in_pause_or_resume_writing_is_reported_only_and_the_transport_stays_open() {
    for at in [M::Resume, M::Pause] {
        let (seen, reports, mut peer, lp) = drive(at);
        let name = if at == M::Pause {
            "pause_writing"
        } else {
            "resume_writing"
        };
        assert_eq!(reports, vec![format!("protocol.{name}() failed")], "{at:?}");
        // Still open: data flows both ways.
        let t = seen.borrow().transport.clone().unwrap();
        assert!(!t.is_closing(), "{at:?}: the transport stays open");
        t.write(b"after").unwrap();
        let mut buf = [0; 5];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"after");
        peer.write_all(b"more").unwrap();
        let s = seen.clone();
        run(&lp, until(move || s.borrow().data.ends_with(b"more")));
        assert!(seen.borrow().lost.is_empty());
        t.close();
    }
}

struct PanickyBuffered {
    in_get_buffer: bool,
    buf: Vec<u8>,
    lost: Rc<Cell<u32>>,
}

impl BufferedProtocol for PanickyBuffered {
    fn get_buffer(&mut self, _: usize) -> &mut [u8] {
        if self.in_get_buffer {
            panic!("boom in get_buffer");
        }
        &mut self.buf
    }
    fn buffer_updated(&mut self, _: usize) {
        panic!("boom in buffer_updated");
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        assert!(exc.is_some());
        self.lost.set(self.lost.get() + 1);
    }
}

#[test]
fn a_panic_in_get_buffer_or_buffer_updated_is_fatal_and_reported_once() {
    for in_get_buffer in [true, false] {
        let lp = lenient_loop();
        let reports = exception_messages(&lp);
        let lost = Rc::new(Cell::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proto = Buffered(PanickyBuffered {
            in_get_buffer,
            buf: vec![0; 64],
            lost: lost.clone(),
        });
        let _t = run(
            &lp,
            lp.create_connection(move || proto, listener.local_addr().unwrap()),
        )
        .unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"x").unwrap();
        let l = lost.clone();
        run(&lp, until(move || l.get() == 1));
        settle(&lp, 4);
        assert_no_spin(&lp, "after a buffered protocol panic");
        let name = if in_get_buffer {
            "get_buffer"
        } else {
            "buffer_updated"
        };
        assert_eq!(
            *reports.borrow(),
            vec![format!("Fatal error: protocol.{name}() call failed.")]
        );
        assert_eq!(lost.get(), 1);
        peer.set_read_timeout(Some(SAFETY)).unwrap();
        assert!(peer_closed(&mut peer));
    }
}

struct PanickyDatagram {
    lost: Rc<Cell<u32>>,
}

impl DatagramProtocol<SocketAddr> for PanickyDatagram {
    fn connection_made(&mut self, t: &DatagramTransport<SocketAddr>) {
        // A send to a closed port gives an ICMP error: error_received.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let _ = t.sendto(b"x", Some(closed));
    }
    fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    fn error_received(&mut self, _: io::Error) {
        panic!("boom in error_received");
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.lost.set(self.lost.get() + 1);
    }
}

#[test]
fn a_panic_in_error_received_is_reported_once() {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let lost = Rc::new(Cell::new(0));
    let l = lost.clone();
    // Connected, so the ICMP error reaches this socket.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = run(
        &lp,
        lp.create_datagram_endpoint(move || PanickyDatagram { lost: l })
            .remote_addr(closed),
    )
    .unwrap();
    let _ = t.sendto(b"y", None);
    let r = reports.clone();
    run(&lp, until(move || !r.borrow().is_empty()));
    settle(&lp, 4);
    assert_no_spin(&lp, "after a panic in error_received");
    assert_eq!(reports.borrow().len(), 1, "{:?}", reports.borrow());
    assert!(
        reports.borrow()[0].contains("error_received"),
        "{:?}",
        reports.borrow()
    );
    // Fatal for a datagram transport: closed, connection_lost once.
    assert!(t.is_closing());
    let l = lost.clone();
    run(&lp, until(move || l.get() == 1));
    settle(&lp, 2);
    assert_eq!(lost.get(), 1);
}

#[test]
fn a_panicking_callback_from_another_thread_is_reported_once_and_the_remote_still_works() {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let remote = lp.remote();
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        remote.call_soon(|| panic!("boom from a thread")).unwrap();
        remote
            .call_soon(move || {
                let _ = tx.send(());
            })
            .unwrap();
    });
    run(&lp, rx).unwrap();
    settle(&lp, 2);
    assert_no_spin(&lp, "after a remote callback panic");
    assert_eq!(reports.borrow().len(), 1, "{:?}", reports.borrow());
}

#[test]
fn a_detached_task_woken_from_another_thread_that_panics_is_reported_once() {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    lp.spawn_local(async move {
        on_thread(|| ()).await;
        d.set(true);
        panic!("boom after a wake from a thread");
    })
    .detach();
    let (d, r) = (done.clone(), reports.clone());
    run(&lp, until(move || d.get() && !r.borrow().is_empty()));
    settle(&lp, 2);
    assert_no_spin(&lp, "after a task panic");
    assert_eq!(reports.borrow().len(), 1, "{:?}", reports.borrow());
    assert_eq!(lp.task_count(), 0, "the task is gone");
}

/// A waker (an outside executor's) that panics when woken.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("boom in a foreign waker");
    }
}

#[test]
fn a_foreign_waker_that_panics_when_the_loop_wakes_it_is_reported_once() {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let (t, mut peer) = connected(&lp, Echo::default());
    let mut stream = TransportStream::new(&t);
    // Polled with a foreign waker: pending, the waker stored.
    let waker = Waker::from(std::sync::Arc::new(PanickingWaker));
    let mut buf = [0; 8];
    let polled =
        std::pin::Pin::new(&mut stream).poll_read(&mut Context::from_waker(&waker), &mut buf);
    assert!(polled.is_pending());
    peer.write_all(b"data").unwrap();
    let r = reports.clone();
    run(&lp, until(move || !r.borrow().is_empty()));
    settle(&lp, 4);
    assert_no_spin(&lp, "after a foreign waker panic");
    assert_eq!(reports.borrow().len(), 1, "{:?}", reports.borrow());
    let report = reports.borrow()[0].clone();
    // The state afterwards: the wake was the stream protocol's
    // data_received, so (as any protocol panic) the transport is closed
    // with the panic as its error; the bytes it had buffered stay readable.
    assert!(t.is_closing(), "{report}");
    let n = run(&lp, futures::AsyncReadExt::read(&mut stream, &mut buf));
    assert!(matches!(n, Ok(4)) || n.is_err(), "{n:?}");
}
