//! Half-close both ways: the peer's EOF with `eof_received` returning true
//! (keep writing) or false (flush, then close), and our own `write_eof`.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use sloop::{Protocol, Transport};
use support::*;

/// Replies with everything it got, but only after the peer's EOF.
struct ReplyAfterEof {
    t: Option<Transport>,
    got: Vec<u8>,
    rec: Rec,
}

impl Protocol for ReplyAfterEof {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
        self.rec.borrow_mut().events.push(Ev::Made);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.rec.borrow_mut().events.push(Ev::Eof);
        let t = self.t.as_ref().unwrap();
        assert!(!t.is_closing(), "half-closed, not closing");
        t.write(b"reply:").unwrap();
        t.write(&self.got).unwrap();
        t.close();
        true
    }
    fn connection_lost(&mut self, exc: Option<std::io::Error>) {
        self.rec
            .borrow_mut()
            .events
            .push(Ev::Lost(exc.map(|e| e.kind())));
        self.t = None;
    }
}

/// A server whose connections run [`ReplyAfterEof`], recording into `rec`.
fn reply_after_eof_server(lp: &sloop::EventLoop, rec: &Rec) -> sloop::Server {
    let r = rec.clone();
    run(
        lp,
        lp.create_server(
            move || ReplyAfterEof {
                t: None,
                got: Vec::new(),
                rec: r.clone(),
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap()
}

#[test]
fn eof_received_true_keeps_write_side_open() {
    let lp = new_loop();
    let rec = Rec::default();
    let server = reply_after_eof_server(&lp, &rec);
    let addr = server.local_addrs()[0];
    let body = pattern(300_000);
    let b = body.clone();
    let got = run(
        &lp,
        on_thread(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&b).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        }),
    );
    let mut expect = b"reply:".to_vec();
    expect.extend_from_slice(&body);
    assert!(got == expect, "the reply after our EOF arrived whole");
    let rr = rec.clone();
    run(&lp, until(move || rr.borrow().lost()));
    assert_eq!(rec.borrow().events, vec![Ev::Made, Ev::Eof, Ev::Lost(None)]);
    server.close();
}

#[test]
fn eof_received_false_flushes_then_closes() {
    let lp = new_loop();
    // Echo returns false from eof_received (the default): what it still
    // buffers goes out, then the connection closes.
    let (server, addr) = echo_server(&lp);
    let body = pattern(2_000_000);
    let b = body.clone();
    let got = run(
        &lp,
        on_thread(move || {
            let s = TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            let t = std::thread::spawn(move || {
                w.write_all(&b).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            (&s).read_to_end(&mut got).unwrap();
            t.join().unwrap();
            got
        }),
    );
    assert!(got == body);
    let s = server.clone();
    run(&lp, until(move || s.connection_count() == 0));
    server.close();
}

#[test]
fn write_eof_after_buffered_data_and_read_replies() {
    // Our side half-closes (R05): with data buffered, SHUT_WR waits for the
    // drain; the peer sees everything then EOF, and can still answer.
    let lp = new_loop();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = pattern(8 * 1024 * 1024);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let peer = on_thread(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Start reading only once our side has buffered.
        go_rx.recv().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(b"thanks").unwrap();
        got
    });
    let (proto, rec) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || proto, ("127.0.0.1", addr.port())),
    )
    .unwrap();
    t.write(&body).unwrap();
    assert!(
        t.write_buffer_size() > 0,
        "8 MiB does not fit in the kernel at once"
    );
    assert!(t.can_write_eof());
    t.write_eof().unwrap();
    t.write_eof().unwrap(); // idempotent (M05)
    go_tx.send(()).unwrap();
    // M02: asyncio's error, with its text.
    assert_eq!(
        t.write(b"x").unwrap_err().to_string(),
        "Cannot call write() after write_eof()"
    );
    let got = run(&lp, peer);
    assert!(got == body, "everything, then EOF");
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    let r = rec.borrow();
    assert_eq!(r.data, b"thanks");
    assert_eq!(r.events.last(), Some(&Ev::Lost(None)));
    assert_eq!(r.count(|e| *e == Ev::Eof), 1);
}

#[test]
fn a_thousand_half_closes_each_deliver_every_byte_both_ways() {
    // R04, repeated: per connection the peer sends N bytes (N varies) then
    // shuts down its write side; data_received totals N, eof_received
    // comes once, and the reply sent after it reaches the peer whole.
    let lp = new_loop();
    let rec = Rec::default();
    let server = reply_after_eof_server(&lp, &rec);
    let addr = server.local_addrs()[0];
    const RUNS: usize = 1000;
    let ok = run(
        &lp,
        on_thread(move || {
            (0..RUNS)
                .filter(|&i| {
                    let body = pattern(1 + i * 37 % 5000);
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.write_all(&body).unwrap();
                    s.shutdown(Shutdown::Write).unwrap();
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).unwrap();
                    got.len() == body.len() + 6 && got[6..] == body[..]
                })
                .count()
        }),
    );
    assert_eq!(ok, RUNS, "every reply came back whole");
    let rr = rec.clone();
    run(
        &lp,
        until(move || {
            rr.borrow()
                .events
                .iter()
                .filter(|e| matches!(e, Ev::Lost(_)))
                .count()
                == RUNS
        }),
    );
    let events = rec.borrow();
    let count = |want: &Ev| events.events.iter().filter(|e| *e == want).count();
    assert_eq!(count(&Ev::Made), RUNS);
    assert_eq!(count(&Ev::Eof), RUNS, "eof_received once per connection");
    assert_eq!(count(&Ev::Lost(None)), RUNS);
    drop(events);
    server.close();
}
