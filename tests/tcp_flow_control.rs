//! Write flow control and read pausing against real peers (reliability
//! R10, R11, R15, R17, M08).

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use sloop::{Error, Protocol, Transport};
use support::*;

fn connected(lp: &sloop::EventLoop, proto: impl Protocol) -> (Transport, TcpStream) {
    // A small receive buffer, set before listen so the accepted socket
    // inherits it (shrinking it later stalls TCP in zero-window probes).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(8).unwrap();
    let listener: TcpListener = sock.into();
    let port = listener.local_addr().unwrap().port();
    let t = run(lp, lp.create_connection(move || proto, ("127.0.0.1", port))).unwrap();
    let (peer, _) = listener.accept().unwrap();
    (t, peer)
}

/// The producer's state, shared between its protocol (which only flips
/// `paused`) and the pump, which runs from a loop callback: a pause that
/// the pump's own write triggers then reaches the protocol at once.
#[derive(Default)]
struct Prod {
    paused: Cell<bool>,
    left: Cell<usize>,
    chunk: usize,
    vectored: bool,
    max_buffer: Cell<usize>,
    events: RefCell<Vec<(bool, usize)>>,
}

fn pump(t: &Transport, p: &Rc<Prod>) {
    let block = pattern(p.chunk);
    while !p.paused.get() && p.left.get() > 0 {
        if p.vectored {
            let (a, b) = block.split_at(p.chunk / 3);
            t.writelines(&[a, &[], b]).unwrap();
        } else {
            t.write(&block).unwrap();
        }
        p.left.set(p.left.get() - 1);
        p.max_buffer
            .set(p.max_buffer.get().max(t.write_buffer_size()));
    }
    if p.left.get() == 0 {
        t.close();
    }
}

struct Producer {
    t: Option<Transport>,
    p: Rc<Prod>,
}

impl Protocol for Producer {
    fn connection_made(&mut self, t: &Transport) {
        t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
        self.t = Some(t.clone());
    }
    fn pause_writing(&mut self) {
        let t = self.t.as_ref().unwrap();
        assert!(!self.p.paused.get(), "pause and resume alternate");
        self.p
            .events
            .borrow_mut()
            .push((true, t.write_buffer_size()));
        self.p.paused.set(true);
    }
    fn resume_writing(&mut self) {
        let t = self.t.clone().unwrap();
        assert!(self.p.paused.get(), "pause and resume alternate");
        self.p
            .events
            .borrow_mut()
            .push((false, t.write_buffer_size()));
        self.p.paused.set(false);
        let p = self.p.clone();
        sloop::get_running_loop()
            .unwrap()
            .call_soon(move || pump(&t, &p))
            .unwrap();
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.t = None;
    }
}

fn producer_run(vectored: bool) {
    let lp = new_loop();
    let chunk = 10_000;
    let count = 2_000; // 20 MB
    let p = Rc::new(Prod {
        left: Cell::new(count),
        chunk,
        vectored,
        ..Default::default()
    });
    let (t, peer) = connected(
        &lp,
        Producer {
            t: None,
            p: p.clone(),
        },
    );
    assert_eq!(t.write_buffer_limits(), (16 * 1024, 64 * 1024));
    let mut peer = peer;
    // The peer does not read at first (a stalled reader), then reads.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = on_thread(move || {
        go_rx.recv().unwrap();
        let mut total = 0usize;
        let mut buf = vec![0; 8192];
        loop {
            let n = peer.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    pump(&t, &p);
    assert!(p.paused.get(), "a peer that does not read makes us pause");
    assert!(t.write_buffer_size() <= 64 * 1024 + chunk);
    // Stay stalled for a few iterations: still paused, no growth.
    for _ in 0..5 {
        lp.stop();
        lp.run_forever().unwrap();
    }
    assert!(p.paused.get());
    assert!(t.write_buffer_size() <= 64 * 1024 + chunk);
    go_tx.send(()).unwrap();
    let total = run(&lp, reader);
    assert_eq!(total, count * chunk);
    let ev = p.events.borrow();
    assert!(ev.len() >= 2);
    for (i, (pause, size)) in ev.iter().enumerate() {
        assert_eq!(*pause, i % 2 == 0, "alternate, starting with pause");
        if *pause {
            assert!(*size > 64 * 1024, "paused only above high: {size}");
        } else {
            assert!(*size <= 16 * 1024, "resumed only at or below low: {size}");
        }
    }
    assert!(
        p.max_buffer.get() <= 64 * 1024 + chunk,
        "buffer never exceeds high + one write: {}",
        p.max_buffer.get()
    );
}

#[test]
fn pause_resume_at_the_marks_with_write() {
    producer_run(false);
}

#[test]
fn pause_resume_at_the_marks_with_writelines() {
    // R17: every write path applies flow control (CVE-2024-12254).
    producer_run(true);
}

#[test]
fn write_buffer_limits_follow_asyncio_and_pause_at_once() {
    let lp = new_loop();
    let (proto, rec) = Recorder::new();
    let (t, _peer) = connected(&lp, proto);
    t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
    let err = t.set_write_buffer_limits(Some(1), Some(2)).unwrap_err();
    assert!(matches!(err, Error::InvalidWriteLimits { .. }));
    assert_eq!(err.to_string(), "high (1) must be >= low (2) must be >= 0");
    t.set_write_buffer_limits(None, Some(100)).unwrap();
    assert_eq!(t.write_buffer_limits(), (100, 400));
    t.set_write_buffer_limits(Some(1000), None).unwrap();
    assert_eq!(t.write_buffer_limits(), (250, 1000));
    t.set_write_buffer_limits(None, None).unwrap();
    // Fill to 40 KiB buffered, then lower high to 16 KiB: exactly one pause.
    while t.write_buffer_size() < 40 * 1024 {
        t.write(&[7u8; 4096]).unwrap();
    }
    assert!(rec.borrow().events.iter().all(|e| *e != Ev::Pause));
    t.set_write_buffer_limits(Some(16 * 1024), None).unwrap();
    assert_eq!(rec.borrow().count(|e| *e == Ev::Pause), 1);
    // Raising the limits does not resume (asyncio#329).
    t.set_write_buffer_limits(Some(1 << 20), None).unwrap();
    assert_eq!(rec.borrow().count(|e| *e == Ev::Resume), 0);
    t.abort();
}

/// Pauses reading in connection_made; counts deliveries.
struct Pauser {
    t: Option<Transport>,
    got: Rc<Cell<usize>>,
}

impl Protocol for Pauser {
    fn connection_made(&mut self, t: &Transport) {
        t.pause_reading();
        t.pause_reading(); // idempotent
        assert!(!t.is_reading());
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.set(self.got.get() + data.len());
    }
}

#[test]
fn pause_reading_stops_delivery_without_spinning_and_resume_delivers() {
    // gh-103607 (pause inside connection_made), R10, R11.
    let lp = new_loop();
    let got = Rc::new(Cell::new(0));
    let (t, mut peer) = connected(
        &lp,
        Pauser {
            t: None,
            got: got.clone(),
        },
    );
    peer.write_all(&pattern(64 * 1024)).unwrap();
    let start = lp.iteration_count();
    run(&lp, sloop::sleep(Duration::from_millis(300)));
    let spent = lp.iteration_count() - start;
    assert_eq!(got.get(), 0, "nothing delivered while paused");
    assert!(spent <= 20, "no busy loop while paused: {spent} iterations");
    t.resume_reading();
    t.resume_reading();
    assert!(t.is_reading());
    // The peer is silent now: the data must come anyway (re-arm).
    let g = got.clone();
    run(&lp, until(move || g.get() == 64 * 1024));
    t.pause_reading();
    peer.write_all(b"more").unwrap();
    run(&lp, sloop::sleep(Duration::from_millis(50)));
    assert_eq!(got.get(), 64 * 1024);
    t.close();
    assert!(!t.is_reading(), "not reading once closing");
    t.resume_reading(); // no-op on a closing transport
    assert!(!t.is_reading());
}

#[test]
fn hard_cap_fails_a_writer_that_ignores_pause() {
    // R16: asyncio has no cap; with one set, the transport fails with a
    // typed error and the buffer stays bounded.
    let lp = new_loop();
    let (proto, rec) = Recorder::new();
    let (t, _peer) = connected(&lp, proto);
    t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
    let cap = 1 << 20;
    t.set_write_buffer_cap(Some(cap));
    let chunk = pattern(100_000);
    let mut result = Ok(());
    for _ in 0..1000 {
        result = t.write(&chunk);
        assert!(t.write_buffer_size() <= cap);
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "write buffer cap exceeded");
    assert_eq!(t.write_buffer_size(), 0, "dropped");
    assert!(t.is_closing());
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    assert_eq!(
        rec.borrow().events.last(),
        Some(&Ev::Lost(Some(std::io::ErrorKind::OutOfMemory)))
    );
    // M04: writes after the loss are refused.
    assert!(matches!(t.write(b"x"), Err(Error::ConnectionLost)));
}

#[test]
fn write_order_under_backpressure_mixed_paths() {
    // R08: 10,000 x 1 KiB through write and writelines, small buffers, a
    // slow peer: the peer sees exactly the call-order concatenation.
    let lp = new_loop();
    let (proto, _rec) = Recorder::new();
    let (t, mut peer) = connected(&lp, proto);
    t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
    let mut expect = Vec::with_capacity(10_000 * 1024);
    for i in 0..10_000u32 {
        let block: Vec<u8> = (0..1024u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        if i % 3 == 0 {
            let (a, b) = block.split_at(100);
            t.writelines(&[a, b"", b]).unwrap();
        } else {
            t.write(&block).unwrap();
        }
        expect.extend_from_slice(&block);
    }
    t.close();
    let got = run(
        &lp,
        on_thread(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 3000];
            loop {
                let n = peer.read(&mut buf).unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }),
    );
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "no gaps, no duplicates, call order");
}

#[test]
fn writelines_clamps_to_iov_max() {
    // socket2 fails with EMSGSIZE past IOV_MAX slices; we clamp.
    let lp = new_loop();
    let (proto, _rec) = Recorder::new();
    let (t, mut peer) = connected(&lp, proto);
    let bytes: Vec<[u8; 1]> = (0..2000u32).map(|i| [i as u8]).collect();
    let slices: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
    t.writelines(&slices).unwrap();
    t.close();
    let got = run(
        &lp,
        on_thread(move || {
            let mut v = Vec::new();
            peer.read_to_end(&mut v).unwrap();
            v
        }),
    );
    let expect: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    assert_eq!(got, expect);
}
