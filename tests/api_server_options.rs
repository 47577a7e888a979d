//! `create_server`'s `family` and `keep_alive` options (asyncio's
//! `family=` and 3.13's `keep_alive=True`), on real loopback sockets.

mod support;

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;

use sloop::{EventLoop, Family, Protocol, Server, ServerBuilder, Transport};
use support::*;

/// Records `SO_KEEPALIVE` of each accepted socket.
struct KeepAliveProbe(Rc<RefCell<Vec<bool>>>);

impl Protocol for KeepAliveProbe {
    fn connection_made(&mut self, t: &Transport) {
        let on = t.with_socket(|s| s.keepalive().unwrap()).unwrap();
        self.0.borrow_mut().push(on);
        t.close();
    }
}

/// Connects once to `server` and returns the accepted socket's
/// `SO_KEEPALIVE`.
fn accepted_keepalive(
    lp: &EventLoop,
    make: impl FnOnce(&EventLoop, Rc<RefCell<Vec<bool>>>) -> ServerBuilder,
) -> bool {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let server: Server = run(lp, make(lp, seen.clone())).unwrap();
    let addr = server.local_addrs()[0];
    let _client = TcpStream::connect(addr).unwrap();
    let s = seen.clone();
    run(lp, until(move || !s.borrow().is_empty()));
    server.close();
    let on = seen.borrow()[0];
    on
}

#[test]
fn keep_alive_sets_so_keepalive_on_accepted_sockets() {
    let lp = new_loop();
    let off = accepted_keepalive(&lp, |lp, seen| {
        lp.create_server(move || KeepAliveProbe(seen.clone()), "127.0.0.1:0")
    });
    assert!(!off, "off by default");
    let on = accepted_keepalive(&lp, |lp, seen| {
        lp.create_server(move || KeepAliveProbe(seen.clone()), "127.0.0.1:0")
            .keep_alive(true)
    });
    assert!(on, "keep_alive(true)");
}

#[test]
fn keep_alive_applies_to_a_given_listening_socket() {
    let lp = new_loop();
    let on = accepted_keepalive(&lp, |lp, seen| {
        let sock = socket2::Socket::from(TcpListener::bind("127.0.0.1:0").unwrap());
        lp.create_server_from_socket(move || KeepAliveProbe(seen.clone()), sock)
            .keep_alive(true)
    });
    assert!(on);
}

#[test]
fn family_v4_on_every_interface_listens_on_ipv4_only() {
    let lp = new_loop();
    let server = run(
        &lp,
        lp.create_server(Echo::default, ":0").family(Family::V4),
    )
    .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert!(addrs[0].is_ipv4() && addrs[0].ip().is_unspecified());
    assert_eq!(server.with_sockets(|s| s.len()), 1);
    server.close();
}

#[test]
fn family_v6_on_every_interface_listens_on_ipv6_only() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 here; skipping");
        return;
    }
    let lp = new_loop();
    let server = run(
        &lp,
        lp.create_server(Echo::default, "*:0").family(Family::V6),
    )
    .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert!(addrs[0].is_ipv6());
    // IPv6-only: the IPv4 loopback does not reach it.
    assert!(TcpStream::connect(("127.0.0.1", addrs[0].port())).is_err());
    assert!(TcpStream::connect(("::1", addrs[0].port())).is_ok());
    server.close();
}

#[test]
fn family_filters_hosts_and_refuses_a_host_without_such_an_address() {
    let lp = new_loop();
    // A name: only its IPv4 addresses.
    let server = run(
        &lp,
        lp.create_server(Echo::default, "localhost:0")
            .family(Family::V4),
    )
    .unwrap();
    assert!(server.local_addrs().iter().all(|a| a.is_ipv4()));
    server.close();
    // A numeric host of the other family: nothing to bind.
    let err = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .family(Family::V6),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
    assert!(
        err.to_string()
            .contains("no IPv6 address for '127.0.0.1:0'"),
        "{err}"
    );
    // also_bind addresses are filtered alike.
    let err = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .also_bind("[::1]:0")
            .family(Family::V4),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
}
