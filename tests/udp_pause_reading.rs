//! pause_reading / resume_reading on a datagram transport.

mod dgram_support;

use std::net::UdpSocket;

use dgram_support::{count, create, log, run_for, Ev, Hooks};
use sloop::EventLoop;

/// Paused inside datagram_received, the transport delivers nothing more
/// (the datagrams already queued in the socket wait there) until
/// resume_reading, which delivers them without a new readiness edge.
#[test]
fn paused_transport_delivers_nothing_until_resumed() {
    let lp = EventLoop::new().unwrap();
    let l = log();
    let t = create(
        &lp,
        lp.create_datagram_endpoint({
            let l = l.clone();
            move || {
                Hooks::new(&l).data(|t, data, _| {
                    if data == b"0" {
                        t.pause_reading();
                        assert!(!t.is_reading());
                    }
                })
            }
        })
        .local_addr("127.0.0.1:0"),
    )
    .unwrap();
    let addr = t.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3 {
        peer.send_to(i.to_string().as_bytes(), addr).unwrap();
    }
    // Let several iterations pass (each polls), then look.
    let h = lp.handle();
    let t2 = t.clone();
    let l2 = l.clone();
    lp.call_soon(move || {
        let h2 = h.clone();
        h.call_soon(move || {
            let h3 = h2.clone();
            h2.call_soon(move || {
                assert_eq!(
                    count(&l2, |e| matches!(e, Ev::Data(..))),
                    1,
                    "nothing is delivered while paused"
                );
                t2.resume_reading();
                assert!(t2.is_reading());
                let l3 = l2.clone();
                let h4 = h3.clone();
                // Stop once the two waiting datagrams are in.
                fn wait(l: sloop::LoopHandle, log: dgram_support::Log<std::net::SocketAddr>) {
                    if count(&log, |e| matches!(e, Ev::Data(..))) == 3 {
                        l.stop();
                    } else {
                        let l2 = l.clone();
                        l.call_soon(move || wait(l2, log)).unwrap();
                    }
                }
                wait(h4, l3);
            })
            .unwrap();
        })
        .unwrap();
    })
    .unwrap();
    run_for(&lp, 5);
    let data: Vec<Vec<u8>> = l
        .borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::Data(d, _) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    t.close();
}
