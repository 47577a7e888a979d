//! Every transport method from inside the transport's own callbacks
//! (docs/design.md D2, reliability R19), and switching protocols mid-stream,
//! also between `Protocol` and `BufferedProtocol`.

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;

use sloop::{Buffered, BufferedProtocol, Protocol, Transport};
use support::*;

/// What to do from inside data_received.
#[derive(Clone, Copy, Debug)]
enum Action {
    Close,
    Abort,
    PauseReading,
    WriteMany,
    SetLimitsZero,
    WriteEof,
    EmptyWaiter,
    SetProtocol,
}

struct Actor {
    t: Option<Transport>,
    action: Action,
    rec: Rec,
    lost: Rc<Cell<usize>>,
}

impl Protocol for Actor {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
        // Write from inside connection_made.
        t.write(b"hello").unwrap();
    }
    fn data_received(&mut self, data: &[u8]) {
        self.rec.borrow_mut().data.extend_from_slice(data);
        let t = self.t.clone().unwrap();
        match self.action {
            Action::Close => {
                t.write(b"bye").unwrap();
                t.close();
                t.close();
                assert!(t.write(b"x").is_err());
            }
            Action::Abort => {
                t.abort();
                t.abort();
            }
            Action::PauseReading => {
                t.pause_reading();
                assert!(!t.is_reading());
                t.resume_reading();
                t.close();
            }
            Action::WriteMany => {
                t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
                for _ in 0..100 {
                    t.write(&[1u8; 10_000]).unwrap();
                }
                // The pause for our own writes comes after we return (D6).
                assert!(self.rec.borrow().events.iter().all(|e| *e != Ev::Pause));
                t.close();
            }
            Action::SetLimitsZero => {
                t.set_write_buffer_limits(Some(0), None).unwrap();
                t.write(&[2u8; 1 << 20]).unwrap();
                t.close();
            }
            Action::WriteEof => {
                t.write_eof().unwrap();
                t.write_eof().unwrap();
                t.close();
            }
            Action::EmptyWaiter => {
                let w = t.empty_waiter().unwrap();
                drop(w);
                let _w2 = t.empty_waiter().unwrap(); // the slot is free again
                t.close();
            }
            Action::SetProtocol => {
                let (mut p, rec) = Recorder::new();
                p.rec = self.rec.clone();
                drop(rec);
                t.set_protocol(p);
                t.close();
            }
        }
    }
    fn pause_writing(&mut self) {
        self.rec.borrow_mut().events.push(Ev::Pause);
        // Re-entrant from inside pause_writing too.
        let t = self.t.as_ref().unwrap();
        assert!(t.write_buffer_size() > 0);
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.lost.set(self.lost.get() + 1);
        self.t = None;
    }
}

#[test]
fn transport_methods_from_inside_callbacks() {
    for action in [
        Action::Close,
        Action::Abort,
        Action::PauseReading,
        Action::WriteMany,
        Action::SetLimitsZero,
        Action::WriteEof,
        Action::EmptyWaiter,
        Action::SetProtocol,
    ] {
        let lp = new_loop();
        let rec = Rec::default();
        let lost = Rc::new(Cell::new(0));
        let (t, mut peer) = connected(
            &lp,
            Actor {
                t: None,
                action,
                rec: rec.clone(),
                lost: lost.clone(),
            },
        );
        peer.write_all(b"go").unwrap();
        let got = run(
            &lp,
            on_thread(move || {
                let mut got = Vec::new();
                let _ = peer.read_to_end(&mut got);
                got
            }),
        );
        assert!(
            got.starts_with(b"hello") || matches!(action, Action::Abort),
            "{action:?}"
        );
        let l = lost.clone();
        let r = rec.clone();
        run(
            &lp,
            until(move || {
                l.get() == 1 || r.borrow().events.iter().any(|e| matches!(e, Ev::Lost(_)))
            }),
        );
        assert!(t.is_closing(), "{action:?}");
        let total_lost = lost.get() + rec.borrow().count(|e| matches!(e, Ev::Lost(_)));
        assert_eq!(total_lost, 1, "{action:?}: connection_lost exactly once");
        match action {
            Action::Close => assert!(got.ends_with(b"bye")),
            Action::WriteMany => {
                assert_eq!(got.len(), 5 + 100 * 10_000);
                assert_eq!(
                    rec.borrow().count(|e| *e == Ev::Pause),
                    1,
                    "delivered after return"
                );
            }
            Action::SetLimitsZero => assert_eq!(got.len(), 5 + (1 << 20)),
            Action::SetProtocol => {
                assert_eq!(rec.borrow().events.last(), Some(&Ev::Lost(None)));
                assert_eq!(lost.get(), 0, "the old protocol is gone");
            }
            _ => {}
        }
    }
}

/// Reads a header with a Protocol, then switches to a BufferedProtocol for
/// the body, then back.
struct Header {
    t: Option<Transport>,
    body: Rc<RefCell<Vec<u8>>>,
    switches: Rc<Cell<usize>>,
}

impl Protocol for Header {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.clone().unwrap();
        let (head, rest) = data.split_at(data.iter().position(|&b| b == b'\n').unwrap() + 1);
        assert_eq!(head, b"HEAD\n");
        self.switches.set(self.switches.get() + 1);
        self.body.borrow_mut().extend_from_slice(rest);
        t.set_protocol(Buffered(Body {
            t: t.clone(),
            buf: vec![0; 1000],
            body: self.body.clone(),
            switches: self.switches.clone(),
        }));
        // Tell the peer to send the body, so it arrives after the switch.
        t.write(b"ok").unwrap();
    }
}

struct Body {
    t: Transport,
    buf: Vec<u8>,
    body: Rc<RefCell<Vec<u8>>>,
    switches: Rc<Cell<usize>>,
}

impl BufferedProtocol for Body {
    fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.body.borrow_mut().extend_from_slice(&self.buf[..n]);
        if self.body.borrow().len() >= 100_000 {
            self.switches.set(self.switches.get() + 1);
            // Back to a plain Protocol, from inside buffer_updated.
            let (p, _rec) = Recorder::new();
            self.t.set_protocol(p);
            self.t.close();
        }
    }
}

#[test]
fn set_protocol_mid_stream_switches_kinds() {
    let lp = new_loop();
    let body = Rc::new(RefCell::new(Vec::new()));
    let switches = Rc::new(Cell::new(0));
    let (t, mut peer) = connected(
        &lp,
        Header {
            t: None,
            body: body.clone(),
            switches: switches.clone(),
        },
    );
    let data = pattern(100_000);
    peer.write_all(b"HEAD\n").unwrap();
    let d = data.clone();
    let _peer = on_thread(move || {
        let mut ok = [0u8; 2];
        peer.read_exact(&mut ok).unwrap();
        peer.write_all(&d).unwrap();
        peer
    });
    let tt = t.clone();
    run(&lp, until(move || tt.is_closing()));
    assert_eq!(switches.get(), 2);
    assert!(
        *body.borrow() == data,
        "every byte once, in order, across switches"
    );
}
