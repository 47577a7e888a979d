//! UDP endpoints talking to each other on loopback: many datagrams, empty
//! datagrams, oversized datagrams, IPv6.

mod dgram_support;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use dgram_support::{count, create, log, run_for, Ev, Hooks};
use sloop::{DatagramTransport, EventLoop};

fn any_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn echo_server(lp: &EventLoop, local: SocketAddr) -> DatagramTransport {
    let slog = log();
    create(
        lp,
        lp.create_datagram_endpoint(move || {
            Hooks::new(&slog).data(|t, data, addr| t.sendto(data, Some(*addr)).unwrap())
        })
        .local_addr(local),
    )
    .unwrap()
}

/// 10,000 numbered datagrams go out and come back, in order, with a window
/// of 32 in flight so that loopback never drops one.
#[test]
fn ten_thousand_datagrams_round_trip() {
    const N: u32 = 10_000;
    const WINDOW: u32 = 32;
    let lp = EventLoop::new().unwrap();
    let server = echo_server(&lp, any_v4());
    let server_addr = server.local_addr().unwrap();

    let clog = log();
    let next = Rc::new(Cell::new(0u32));
    let expected = Rc::new(Cell::new(0u32));
    let (n1, n2, e2) = (next.clone(), next.clone(), expected.clone());
    let h = lp.handle();
    let client = create(
        &lp,
        lp.create_datagram_endpoint(move || {
            Hooks::new(&clog)
                .made(move |t| {
                    while n1.get() < WINDOW {
                        t.send(&n1.get().to_be_bytes()).unwrap();
                        n1.set(n1.get() + 1);
                    }
                })
                .data(move |t, data, addr| {
                    assert_eq!(*addr, server_addr);
                    let got = u32::from_be_bytes(data.try_into().unwrap());
                    assert_eq!(got, e2.get(), "datagrams come back in order");
                    e2.set(got + 1);
                    if n2.get() < N {
                        t.send(&n2.get().to_be_bytes()).unwrap();
                        n2.set(n2.get() + 1);
                    }
                    if e2.get() == N {
                        h.stop();
                    }
                })
        })
        .remote_addr(server_addr)
        .local_addr(any_v4()),
    )
    .unwrap();
    run_for(&lp, 20);
    assert_eq!(expected.get(), N);
    assert_eq!(client.peer_addr(), Some(server_addr));
    assert_eq!(client.write_buffer_size(), 0);
    client.close();
    server.close();
}

/// R26: a zero-length datagram is sent and received as an empty datagram
/// (CPython 3.13), in both directions; 70,000 bytes give EMSGSIZE to
/// `error_received` and the transport stays open.
#[test]
fn empty_and_oversized_datagrams() {
    let lp = EventLoop::new().unwrap();
    let server = echo_server(&lp, any_v4());
    let server_addr = server.local_addr().unwrap();
    let clog = log();
    let h = lp.handle();
    let client = create(
        &lp,
        lp.create_datagram_endpoint({
            let clog = clog.clone();
            move || {
                let inner = clog.clone();
                Hooks::new(&clog)
                    .made(move |t| {
                        t.sendto(&vec![7u8; 70_000], None).unwrap();
                        assert_eq!(
                            *inner.borrow(),
                            vec![Ev::Made],
                            "error_received waits until connection_made returns (D6)"
                        );
                        t.sendto(b"", None).unwrap();
                    })
                    .data(move |t, data, _| {
                        if data.is_empty() {
                            t.send(b"after").unwrap();
                        } else {
                            assert_eq!(data, b"after");
                            h.stop();
                        }
                    })
            }
        })
        .remote_addr(server_addr),
    )
    .unwrap();
    run_for(&lp, 5);
    let events = clog.borrow().clone();
    assert_eq!(
        events,
        vec![
            Ev::Made,
            Ev::Error(Some(libc::EMSGSIZE), std::io::ErrorKind::Other).normalise(&events[1]),
            Ev::Data(vec![], server_addr),
            Ev::Data(b"after".to_vec(), server_addr),
        ]
    );
    assert!(!client.is_closing());
    assert_eq!(
        client.get_extra_info("peername"),
        Some(format!("{server_addr:?}"))
    );
    assert_eq!(
        client.get_extra_info("sockname"),
        Some(format!("{:?}", client.local_addr().unwrap()))
    );
    assert!(client.get_extra_info("socket").is_some());
    assert_eq!(client.get_extra_info("nonsense"), None);
    client.close();
    server.close();
}

trait Normalise {
    /// Keeps the raw errno but takes the kind from `actual` (the kind of
    /// EMSGSIZE is not stable across Rust versions).
    fn normalise(self, actual: &Self) -> Self;
}

impl Normalise for Ev<SocketAddr> {
    fn normalise(self, actual: &Self) -> Self {
        match (self, actual) {
            (Ev::Error(code, _), Ev::Error(_, kind)) => Ev::Error(code, *kind),
            (me, _) => me,
        }
    }
}

/// IPv6 endpoints round trip, and the sender's address is reported.
#[test]
fn ipv6_round_trip() {
    let lp = EventLoop::new().unwrap();
    let Ok(server) = create(
        &lp,
        lp.create_datagram_endpoint(|| {
            Hooks::new(&log()).data(|t, data, addr| t.sendto(data, Some(*addr)).unwrap())
        })
        .local_addr("[::1]:0"),
    ) else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let server_addr = server.local_addr().unwrap();
    let clog = log();
    let h = lp.handle();
    let c2 = clog.clone();
    let client = create(
        &lp,
        lp.create_datagram_endpoint(move || {
            Hooks::new(&c2)
                .made(move |t| t.sendto(b"v6", Some(server_addr)).unwrap())
                .data(move |_, _, _| h.stop())
        })
        .family(sloop::Family::V6),
    )
    .unwrap();
    run_for(&lp, 5);
    assert_eq!(
        clog.borrow()[1],
        Ev::Data(b"v6".to_vec(), server_addr),
        "the reply comes from the server's address"
    );
    assert_eq!(count(&clog, |e| matches!(e, Ev::Data(..))), 1);
    client.close();
    server.close();
}
