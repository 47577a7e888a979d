//! Write buffering and flow control on a socket whose send buffer is full
//! (R27), and the delivery rule for notifications a protocol's own call
//! causes (D6).
//!
//! These run on Unix datagram sockets: on Linux, UDP over loopback never
//! returns EAGAIN (the kernel hands the datagram to the receiver at once and
//! drops what does not fit its receive buffer), whereas a Unix datagram
//! socket with a small `SO_SNDBUF` blocks until the peer reads, without
//! loss. The queue, the flow control and the drain are the same code for
//! both address types (the transport is generic over the address).

mod dgram_support;

use std::cell::Cell;
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::time::Duration;

use dgram_support::{count, create, log, run_for, Ev, Hooks};
use sloop::transport::datagram::DATAGRAM_OVERHEAD;
use sloop::UnixAddr;
use sloop::{DatagramTransport, EventLoop};

/// A connected pair; the first end has the smallest send buffer the kernel
/// allows, so a few datagrams the peer has not read fill it.
fn small_sndbuf_pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    socket2::SockRef::from(&a)
        .set_send_buffer_size(4096)
        .unwrap();
    (a, b)
}

const N: u32 = 10_000;
const SIZE: usize = 100;

fn datagram(i: u32) -> Vec<u8> {
    if i % 100 == 99 {
        Vec::new() // empty datagrams are queued and sent too
    } else {
        let mut d = vec![0xa5; SIZE];
        d[..4].copy_from_slice(&i.to_be_bytes());
        d
    }
}

/// R27: 10,000 datagrams through a full send buffer arrive complete and in
/// order; the producer pauses at the high-water mark (never more than one
/// datagram above it) and resumes as the queue drains; close sends the
/// rest before connection_lost.
#[test]
fn queue_drains_in_order_with_flow_control() {
    const HIGH: usize = 8 * 1024;
    let (mine, receiver) = small_sndbuf_pair();
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(N as usize);
        let mut buf = [0u8; 2048];
        for _ in 0..N {
            let n = receiver.recv(&mut buf).expect("every datagram arrives");
            got.push(buf[..n].to_vec());
        }
        got
    });

    let lp = EventLoop::new().unwrap();
    let l = log::<UnixAddr>();
    let next = Rc::new(Cell::new(0u32));
    let paused = Rc::new(Cell::new(false));
    let max_over = Rc::new(Cell::new(0usize));
    let queued_seen = Rc::new(Cell::new(false));

    fn pump(
        t: &DatagramTransport<UnixAddr>,
        next: &Cell<u32>,
        paused: &Cell<bool>,
        queued_seen: &Cell<bool>,
    ) {
        while !paused.get() && next.get() < N {
            t.send(&datagram(next.get())).unwrap();
            next.set(next.get() + 1);
            if t.write_buffer_len() > 0 {
                queued_seen.set(true);
            }
        }
        if next.get() == N {
            t.close(); // sends what is queued first
        }
    }

    let h = lp.handle();
    let t = create(
        &lp,
        lp.create_unix_datagram_endpoint({
            let (l, paused, max_over) = (l.clone(), paused.clone(), max_over.clone());
            let (next, p2, q2) = (next.clone(), paused.clone(), queued_seen.clone());
            move || {
                Hooks::new(&l)
                    .made(|t| t.set_write_buffer_limits(Some(HIGH), None).unwrap())
                    .pause(move |t| {
                        paused.set(true);
                        let size = t.write_buffer_size() + DATAGRAM_OVERHEAD * t.write_buffer_len();
                        max_over.set(max_over.get().max(size - HIGH));
                    })
                    .resume(move |t| {
                        p2.set(false);
                        // Produce again from a plain callback, as a
                        // producer task would.
                        let (t, next, p2, q2) = (t.clone(), next.clone(), p2.clone(), q2.clone());
                        t.loop_handle()
                            .clone()
                            .call_soon(move || pump(&t, &next, &p2, &q2))
                            .unwrap();
                    })
                    .lost(move || h.stop())
            }
        })
        .socket(mine),
    )
    .unwrap();
    assert_eq!(t.peer_addr(), Some(UnixAddr::Unnamed));
    {
        let (t, next, paused, q) = (t.clone(), next.clone(), paused.clone(), queued_seen.clone());
        lp.call_soon(move || pump(&t, &next, &paused, &q)).unwrap();
    }
    run_for(&lp, 20);
    let got = reader.join().unwrap();
    for (i, d) in got.iter().enumerate() {
        assert_eq!(*d, datagram(i as u32), "datagram {i} in order");
    }
    assert!(queued_seen.get(), "the send buffer was full at least once");
    let pauses = count(&l, |e| *e == Ev::Pause);
    let resumes = count(&l, |e| *e == Ev::Resume);
    assert!(pauses >= 1, "pause_writing was called");
    assert_eq!(pauses, resumes, "pause and resume alternate");
    assert!(
        max_over.get() <= SIZE + DATAGRAM_OVERHEAD,
        "the queue never went more than one datagram above the mark ({} over)",
        max_over.get()
    );
    assert_eq!(l.borrow().last(), Some(&Ev::Lost(None)));
    assert_eq!(t.write_buffer_size(), 0);
}

/// D6: `pause_writing` caused by a `sendto` inside `datagram_received` is
/// not nested in that call: it comes right after it returns.
#[test]
fn pause_from_own_sendto_comes_after_the_callback() {
    let (mine, peer) = small_sndbuf_pair();
    let lp = EventLoop::new().unwrap();
    let l = log::<UnixAddr>();
    let h = lp.handle();
    let t = create(
        &lp,
        lp.create_unix_datagram_endpoint({
            let l = l.clone();
            move || {
                let l2 = l.clone();
                Hooks::new(&l)
                    .made(|t| t.set_write_buffer_limits(Some(2000), None).unwrap())
                    .data(move |t, _, _| {
                        for _ in 0..50 {
                            t.send(&[1; 1000]).unwrap();
                        }
                        assert!(t.write_buffer_size() > 2000, "the queue is above the mark");
                        assert!(
                            matches!(l2.borrow().last(), Some(Ev::Data(..))),
                            "pause_writing is not called inside datagram_received"
                        );
                    })
                    .pause(move |_| h.stop())
            }
        })
        .socket(mine),
    )
    .unwrap();
    peer.send(b"go").unwrap();
    run_for(&lp, 5);
    assert_eq!(
        *l.borrow(),
        vec![
            Ev::Made,
            Ev::Data(b"go".to_vec(), UnixAddr::Unnamed),
            Ev::Pause
        ]
    );
    t.abort();
}

/// Empty datagrams count toward the high-water mark (gh-113812), though
/// `write_buffer_size` counts payload bytes only; a pause caused before
/// `connection_made` is delivered right after it.
#[test]
fn empty_datagrams_reach_the_high_water_mark() {
    let (mine, _peer) = small_sndbuf_pair();
    let lp = EventLoop::new().unwrap();
    let l = log::<UnixAddr>();
    let h = lp.handle();
    let t = create(
        &lp,
        lp.create_unix_datagram_endpoint({
            let l = l.clone();
            move || Hooks::new(&l).pause(move |_| h.stop())
        })
        .socket(mine),
    )
    .unwrap();
    let mut sent = 0;
    while t.write_buffer_len() == 0 {
        t.send(&[2; 1000]).unwrap();
        sent += 1;
        assert!(sent < 1000, "the send buffer never filled");
    }
    let payload = t.write_buffer_size();
    assert_eq!(payload, 1000);
    let size = payload + DATAGRAM_OVERHEAD;
    t.set_write_buffer_limits(Some(size + 8 * DATAGRAM_OVERHEAD), Some(0))
        .unwrap();
    for _ in 0..8 {
        t.send(b"").unwrap();
    }
    assert_eq!(t.write_buffer_len(), 9);
    assert_eq!(
        t.write_buffer_size(),
        1000,
        "empty datagrams add no payload"
    );
    t.send(b"").unwrap(); // now 8 bytes above the mark
    assert!(l.borrow().is_empty(), "nothing before connection_made");
    run_for(&lp, 5);
    assert_eq!(*l.borrow(), vec![Ev::Made, Ev::Pause]);
    // M11: after close nothing more is accepted, even while the queue
    // still drains.
    let queued = t.write_buffer_len();
    t.close();
    assert!(matches!(t.send(b"late"), Err(sloop::Error::ConnectionLost)));
    assert_eq!(t.write_buffer_len(), queued);
    t.abort();
}
