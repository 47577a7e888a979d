//! proptest state machines against real loopback sockets (issue 16): any
//! sequence of write, writelines, pause/resume reading, set_protocol,
//! write_eof, close and abort on a socket transport, and any chunking of
//! reads and writes through the stream bridge, keep asyncio's invariants:
//! bytes in order, none lost or doubled before close, `connection_lost`
//! exactly once and last, pause/resume_writing strictly alternating at the
//! watermarks. tests/tcp_flow_model.rs walks flow control alone.
//!
//! Cases: `SLOOP_PROPTEST_CASES` (default 24, for CI); the bounded long run:
//!
//! ```text
//! SLOOP_PROPTEST_CASES=100000 cargo test --release --test reliability_model
//! ```

mod support;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;

use futures::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sloop::{EventLoop, Protocol, Transport, TransportStream};
use support::drop_points::settle;
use support::*;

fn cases() -> u32 {
    std::env::var("SLOOP_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Writelines(Vec<usize>),
    PauseReading,
    ResumeReading,
    SetProtocol,
    WriteEof,
    Close,
    Abort,
    PeerRead(usize),
    PeerWrite(usize),
    Run(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..100_000).prop_map(Op::Write),
        2 => prop::collection::vec(0usize..20_000, 0..5).prop_map(Op::Writelines),
        1 => Just(Op::PauseReading),
        1 => Just(Op::ResumeReading),
        1 => Just(Op::SetProtocol),
        1 => Just(Op::WriteEof),
        1 => Just(Op::Close),
        1 => Just(Op::Abort),
        4 => (1usize..200_000).prop_map(Op::PeerRead),
        2 => (1usize..10_000).prop_map(Op::PeerWrite),
        3 => (1usize..4).prop_map(Op::Run),
    ]
}

#[derive(Default)]
struct State {
    made: Cell<u32>,
    lost: Cell<u32>,
    paused: Cell<bool>,
    received: RefCell<Vec<u8>>,
    violations: RefCell<Vec<String>>,
    t: RefCell<Option<Transport>>,
}

impl State {
    fn check(&self, what: &str, ok: bool) {
        if !ok {
            self.violations.borrow_mut().push(what.to_owned());
        }
    }
}

/// A protocol checking the invariants as notifications come; several
/// instances (after `set_protocol`) share one `State`.
struct Checker(Rc<State>);

impl Protocol for Checker {
    fn connection_made(&mut self, t: &Transport) {
        self.0.made.set(self.0.made.get() + 1);
        *self.0.t.borrow_mut() = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.check("data after lost", self.0.lost.get() == 0);
        self.0.received.borrow_mut().extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.0.check("eof after lost", self.0.lost.get() == 0);
        true
    }
    fn pause_writing(&mut self) {
        let t = self.0.t.borrow().clone().unwrap();
        self.0.check("pause after lost", self.0.lost.get() == 0);
        self.0.check("pause twice", !self.0.paused.get());
        self.0.check(
            "pause at or below high",
            t.write_buffer_size() > t.write_buffer_limits().1,
        );
        self.0.paused.set(true);
    }
    fn resume_writing(&mut self) {
        let t = self.0.t.borrow().clone().unwrap();
        self.0.check("resume after lost", self.0.lost.get() == 0);
        self.0.check("resume without pause", self.0.paused.get());
        self.0.check(
            "resume above low",
            t.write_buffer_size() <= t.write_buffer_limits().0,
        );
        self.0.paused.set(false);
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.0.lost.set(self.0.lost.get() + 1);
    }
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Reads what is there without blocking.
fn read_some(peer: &mut TcpStream, max: usize, into: &mut Vec<u8>) -> bool {
    let mut buf = vec![0; max.min(1 << 16)];
    let mut left = max;
    while left > 0 {
        let want = left.min(buf.len());
        match peer.read(&mut buf[..want]) {
            Ok(0) => return true,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                left -= n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

fn transport_case(lp: &EventLoop, ops: &[Op]) -> Result<(), TestCaseError> {
    let data = pattern(1 << 20);
    let st = Rc::new(State::default());
    let (a, mut peer) = tcp_pair();
    let s = st.clone();
    let t = run(
        lp,
        lp.connect_accepted_socket(move || Checker(s), socket2::Socket::from(a)),
    )
    .unwrap();
    t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
    t.set_write_buffer_limits(Some(16 << 10), Some(4 << 10))
        .unwrap();
    peer.set_nonblocking(true).unwrap();
    let mut sent = Vec::new(); // accepted by the transport, in order
    let mut peer_got = Vec::new();
    let mut peer_sent = Vec::new();
    let mut off = 0;
    let mut next = |n: usize| {
        let s = off % (data.len() - n.min(data.len() - 1));
        off += n;
        &data[s..s + n]
    };
    let (mut eof_sent, mut closed, mut aborted) = (false, false, false);
    for op in ops {
        match op {
            Op::Write(n) => {
                let chunk = next(*n).to_vec();
                let r = t.write(&chunk);
                // asyncio's order: after write_eof refused; empty data a
                // no-op; after close refused.
                let ok = !eof_sent && (chunk.is_empty() || !closed);
                prop_assert_eq!(r.is_ok(), ok, "write accepted iff open");
                if r.is_ok() {
                    sent.extend_from_slice(&chunk);
                }
            }
            Op::Writelines(ns) => {
                let chunks: Vec<Vec<u8>> = ns.iter().map(|&n| next(n).to_vec()).collect();
                let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
                let r = t.writelines(&refs);
                let empty = chunks.iter().all(|c| c.is_empty());
                prop_assert_eq!(r.is_ok(), !eof_sent && (empty || !closed));
                if r.is_ok() {
                    sent.extend(chunks.concat());
                }
            }
            Op::PauseReading => t.pause_reading(),
            Op::ResumeReading => t.resume_reading(),
            Op::SetProtocol => {
                if !closed {
                    t.set_protocol(Checker(st.clone()));
                }
            }
            Op::WriteEof => {
                t.write_eof().unwrap();
                // After close it does nothing (the transport is closing).
                eof_sent |= !closed;
            }
            Op::Close => {
                t.close();
                closed = true;
            }
            Op::Abort => {
                t.abort();
                closed = true;
                aborted = true;
            }
            Op::PeerRead(n) => {
                read_some(&mut peer, *n, &mut peer_got);
            }
            Op::PeerWrite(n) => {
                let chunk = next(*n).to_vec();
                if let Ok(k) = peer.write(&chunk) {
                    peer_sent.extend_from_slice(&chunk[..k]);
                }
            }
            Op::Run(n) => settle(lp, *n),
        }
        prop_assert!(peer_got.len() <= sent.len());
        prop_assert!(peer_got[..] == sent[..peer_got.len()], "bytes in order");
    }
    // The end: let the transport take what the peer sent (Linux resets a
    // connection closed with unread data, which may cut the tail of what
    // the peer receives), close, read to EOF, connection_lost comes.
    let mut may_reset = aborted;
    if !closed {
        t.resume_reading();
        let (s, want) = (st.clone(), peer_sent.len());
        run(lp, until(move || s.received.borrow().len() == want));
    } else if st.received.borrow().len() < peer_sent.len() {
        may_reset = true;
    }
    t.close();
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    let got = run(
        lp,
        on_thread(move || {
            let mut rest = Vec::new();
            let r = peer.read_to_end(&mut rest);
            (rest, r.is_ok())
        }),
    );
    peer_got.extend(got.0);
    let s = st.clone();
    run(lp, until(move || s.lost.get() > 0));
    settle(lp, 3);
    prop_assert_eq!(st.made.get(), 1, "connection_made once");
    prop_assert_eq!(st.lost.get(), 1, "connection_lost once and last");
    prop_assert!(
        st.violations.borrow().is_empty(),
        "{:?}",
        st.violations.borrow()
    );
    if may_reset {
        prop_assert!(peer_got.len() <= sent.len());
        prop_assert!(
            peer_got[..] == sent[..peer_got.len()],
            "a prefix after a reset"
        );
    } else {
        prop_assert_eq!(peer_got.len(), sent.len(), "nothing lost or doubled");
        prop_assert!(peer_got == sent);
        prop_assert!(got.1, "a clean EOF");
    }
    let received = st.received.borrow();
    prop_assert!(received.len() <= peer_sent.len());
    prop_assert!(
        received[..] == peer_sent[..received.len()],
        "received in order"
    );
    Ok(())
}

#[test]
fn socket_transport_state_machine() {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            transport_case(&lp, &ops)
        })
        .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

/// The bridge: one side writes random chunks (and the peer echoes in
/// random chunks), the stream reads with random buffer sizes; what comes
/// back is what went out.
#[test]
fn stream_bridge_chunkings() {
    let lp = lenient_loop();
    let reports = exception_messages(&lp);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(1usize..70_000, 1..12),
        prop::collection::vec(1usize..70_000, 1..12),
        prop::collection::vec(1usize..70_000, 1..12),
        0usize..3,
    );
    runner
        .run(&strategy, |(writes, echoes, reads, limit)| {
            let total: usize = writes.iter().sum();
            let data = pattern(total);
            let (a, mut peer) = tcp_pair();
            let h = lp.handle();
            let out = run(&lp, async {
                let t = h
                    .connect_accepted_socket(|| Nop, socket2::Socket::from(a))
                    .await
                    .unwrap();
                let s = TransportStream::new(&t);
                s.set_read_limit([1, 4096, 1 << 20][limit]);
                // The peer echoes on a thread in its own chunking.
                let echo = on_thread(move || {
                    let mut buf = vec![0; 70_000];
                    let mut i = 0;
                    loop {
                        let want = echoes[i % echoes.len()];
                        i += 1;
                        match peer.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => peer.write_all(&buf[..n]).unwrap(),
                        }
                    }
                });
                let (r, mut w) = s.split();
                let writer = async {
                    let mut off = 0;
                    for n in &writes {
                        w.write_all(&data[off..off + n]).await.unwrap();
                        off += n;
                    }
                    w.close().await.unwrap();
                };
                let reader = async {
                    let mut r = r;
                    let mut got = Vec::new();
                    let mut buf = vec![0; 70_000];
                    let mut i = 0;
                    loop {
                        let want = reads[i % reads.len()];
                        i += 1;
                        let n = r.read(&mut buf[..want]).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    got
                };
                let ((), got) = futures::future::join(writer, reader).await;
                echo.await;
                got
            });
            prop_assert_eq!(out.len(), data.len());
            prop_assert!(out == data, "bytes in order, none lost or doubled");
            Ok(())
        })
        .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

struct Nop;
impl Protocol for Nop {}
