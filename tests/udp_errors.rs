//! OS errors on datagram sockets go to `error_received` and the transport
//! stays open (R25).

mod dgram_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use dgram_support::{create, log, run_for, Ev, Hooks};
use sloop::EventLoop;

/// R25: a connected socket sending to a closed port gets ECONNREFUSED (the
/// ICMP port unreachable) in `error_received`, twice, and keeps working:
/// once something listens there again, datagrams flow both ways.
#[test]
fn connection_refused_goes_to_error_received() {
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port_addr: SocketAddr = closed.local_addr().unwrap();
    drop(closed);

    let lp = EventLoop::new().unwrap();
    let l = log();
    let h = lp.handle();
    let h2 = lp.handle();
    let errors = std::rc::Rc::new(std::cell::Cell::new(0));
    let e2 = errors.clone();
    let t = create(
        &lp,
        lp.create_datagram_endpoint({
            let l = l.clone();
            move || {
                Hooks::new(&l)
                    .made(|t| t.send(b"first").unwrap())
                    .data(move |_, _, _| h2.stop())
                    .error(move |t| {
                        e2.set(e2.get() + 1);
                        if e2.get() == 1 {
                            t.send(b"second").unwrap();
                        } else {
                            h.stop();
                        }
                    })
            }
        })
        .local_addr("127.0.0.1:0")
        .remote_addr(port_addr),
    )
    .unwrap();
    run_for(&lp, 5);
    let refused = Ev::Error(
        Some(libc::ECONNREFUSED),
        std::io::ErrorKind::ConnectionRefused,
    );
    assert_eq!(*l.borrow(), vec![Ev::Made, refused.clone(), refused]);
    assert!(
        !t.is_closing(),
        "error_received does not close the transport"
    );

    // Still usable: someone listens on the port now.
    let peer = UdpSocket::bind(port_addr).expect("the port is still free");
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t.send(b"third").unwrap();
    let mut buf = [0; 16];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"third");
    peer.send_to(b"reply", from).unwrap();
    run_for(&lp, 5); // the data hook stops the loop
    assert_eq!(l.borrow()[3], Ev::Data(b"reply".to_vec(), port_addr));
    assert_eq!(l.borrow().len(), 4);
    t.close();
}
