//! `create_connection`'s `all_errors` and `family` options (asyncio 3.12's
//! `all_errors=True`, and `family=`), on real loopback sockets.

mod support;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use sloop::{Address, ConnectErrors, Family};
use support::*;

/// A loopback port nobody listens on.
fn closed_port(host: &str) -> u16 {
    let l = TcpListener::bind((host, 0)).unwrap();
    l.local_addr().unwrap().port()
}

fn ipv6_here() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn all_errors_gives_the_attempts_errors_in_a_group() {
    let lp = new_loop();
    let port = closed_port("127.0.0.1");
    for eyeballs in [false, true] {
        let (p, rec) = Recorder::new();
        let mut c = lp
            .create_connection(move || p, ("127.0.0.1", port))
            .all_errors(true);
        if eyeballs {
            c = c.happy_eyeballs_delay(Duration::from_millis(5));
        }
        let err = run(&lp, c).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "the common kind");
        let all = ConnectErrors::of(&err).expect("all_errors: a group");
        assert_eq!(all.errors().len(), 1);
        assert_eq!(all.errors()[0].kind(), ErrorKind::ConnectionRefused);
        assert!(
            err.to_string()
                .starts_with("create_connection failed (1 error): "),
            "{err}"
        );
        assert!(rec.borrow().events.is_empty(), "no callback");
    }
}

#[test]
fn without_all_errors_the_error_is_the_attempts_own() {
    let lp = new_loop();
    let port = closed_port("127.0.0.1");
    let (p, _rec) = Recorder::new();
    let err = run(&lp, lp.create_connection(move || p, ("127.0.0.1", port))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert!(ConnectErrors::of(&err).is_none());
    assert!(err.raw_os_error().is_some(), "the OS error itself: {err:?}");
}

#[test]
fn all_errors_groups_bind_failures_too_but_not_resolution_errors() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A local address already in use: the attempt fails at bind.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = busy.local_addr().unwrap().to_string();
    let (p, _rec) = Recorder::new();
    let err = run(
        &lp,
        lp.create_connection(move || p, ("127.0.0.1", port))
            .local_addr(&local)
            .all_errors(true),
    )
    .unwrap_err();
    let all = ConnectErrors::of(&err).expect("a group");
    assert!(
        all.errors()[0]
            .to_string()
            .starts_with("error while attempting to bind on address"),
        "{err}"
    );
    // A name that does not resolve fails before any attempt: as it is.
    let (p, _rec) = Recorder::new();
    let err = run(
        &lp,
        lp.create_connection(move || p, ("name.invalid", port))
            .all_errors(true),
    )
    .unwrap_err();
    assert!(ConnectErrors::of(&err).is_none(), "{err}");
}

#[test]
fn family_filters_the_host_addresses() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A name, IPv4 only: connects over IPv4.
    let (p, _rec) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || p, ("localhost", port))
            .family(Family::V4),
    )
    .unwrap();
    assert!(matches!(t.peer_addr(), Some(Address::Inet(a)) if a.is_ipv4() && a.port() == port));
    let _ = listener.accept().unwrap();
    t.abort();
    // A numeric host of the other family: no address left, no attempt.
    let (p, rec) = Recorder::new();
    let err = run(
        &lp,
        lp.create_connection(move || p, ("127.0.0.1", port))
            .family(Family::V6),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("no IPv6 address for '127.0.0.1:{port}'")),
        "{err}"
    );
    assert!(rec.borrow().events.is_empty());
}

#[test]
fn family_applies_to_local_addr_too() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (p, _rec) = Recorder::new();
    let err = run(
        &lp,
        lp.create_connection(move || p, ("127.0.0.1", port))
            .family(Family::V4)
            .local_addr("[::1]:0"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
    assert!(
        err.to_string().contains("no IPv4 address for '[::1]:0'"),
        "{err}"
    );
}

#[test]
fn family_v6_connects_over_ipv6() {
    if !ipv6_here() {
        eprintln!("no IPv6 here; skipping");
        return;
    }
    let lp = new_loop();
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (p, _rec) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || p, ("::1", port))
            .family(Family::V6)
            .local_addr("[::1]:0"),
    )
    .unwrap();
    assert!(matches!(t.peer_addr(), Some(Address::Inet(a)) if a.is_ipv6()));
    let _ = listener.accept().unwrap();
    t.abort();
    let (p, _rec) = Recorder::new();
    let err = run(
        &lp,
        lp.create_connection(move || p, ("::1", port))
            .family(Family::V4),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrNotAvailable, "{err}");
}
