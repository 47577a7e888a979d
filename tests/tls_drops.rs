//! D15 for the TLS futures: `create_connection(..).tls(..)` (and so
//! `open_connection(..).tls(..)`) and `start_tls`, dropped at each point
//! of their life (unpolled, while connecting, during the handshake, at the
//! wake that would complete them), leave nothing open and keep nothing
//! alive; a server dropping its handshaking connections on `close`.
#![cfg(feature = "tls")]

mod support;
#[path = "tls_support/mod.rs"]
mod tls_support;

use std::future::{Future, IntoFuture};
use std::rc::Rc;
use std::task::{Context, Poll};

use sloop::tls::TlsConfig;
use sloop::{EventLoop, Protocol, Transport};
use support::{new_loop, run, until, Echo};
use tls_support::Pki;

/// Polls `fut` (with the task's own waker, each time it is woken) up to
/// `polls` times, then drops it; returns its output if it completed first.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = Box::pin(fut);
    let mut done = 0;
    futures::future::poll_fn(move |cx: &mut Context<'_>| {
        if done == polls {
            return Poll::Ready(None);
        }
        done += 1;
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

/// A protocol that holds a marker: alive while the protocol is.
struct Held(
    #[allow(dead_code)] Rc<()>,
    Rc<std::cell::RefCell<Vec<&'static str>>>,
);

impl Protocol for Held {
    fn connection_made(&mut self, _: &Transport) {
        self.1.borrow_mut().push("made");
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.1.borrow_mut().push("lost");
    }
}

fn server(lp: &EventLoop, pki: &Pki) -> sloop::Server {
    run(
        lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap()
}

type Calls = Rc<std::cell::RefCell<Vec<&'static str>>>;

fn check_dropped(lp: &EventLoop, server: &sloop::Server, marker: &Rc<()>, calls: &Calls) {
    run(lp, until(|| Rc::strong_count(marker) == 1));
    let calls = calls.borrow().clone();
    assert!(
        calls.is_empty() || calls == ["made", "lost"],
        "no callback, or made then lost: {calls:?}"
    );
    run(lp, until(|| server.connection_count() == 0));
}

#[test]
fn tls_connect_dropped_at_each_poll_leaves_nothing() {
    let pki = Pki::new();
    let lp = new_loop();
    let server = server(&lp, &pki);
    let addr = server.local_addrs()[0];
    let mut completed = false;
    for polls in 0..50 {
        let marker = Rc::new(());
        let calls = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (m, c) = (marker.clone(), calls.clone());
        let fut = lp
            .create_connection(move || Held(m, c), addr)
            .tls(pki.client(), "localhost")
            .into_future();
        let out = run(&lp, poll_then_drop(fut, polls));
        completed = out.is_some();
        if let Some(t) = out {
            t.unwrap().close(); // a completed future's transport is the caller's
        }
        check_dropped(&lp, &server, &marker, &calls);
        if completed {
            // Completed and dropped with its transport: made, then lost.
            assert_eq!(*calls.borrow(), ["made", "lost"]);
            break;
        }
    }
    assert!(completed, "the connect completes within 50 polls");
    server.close();
}

#[test]
fn open_connection_tls_dropped_during_the_handshake() {
    let pki = Pki::new();
    let lp = new_loop();
    // A server that never answers: the handshake hangs until the drop.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fut = lp
        .open_connection(addr)
        .tls(pki.client(), "localhost")
        .into_future();
    let h = lp.handle();
    let done = run(&lp, async move {
        let mut fut = fut;
        // Poll until the ClientHello went out, then drop.
        let sent = sloop::timeout(std::time::Duration::from_millis(50), &mut fut).await;
        assert!(sent.is_err(), "no handshake without a server");
        drop(fut);
        let _ = h;
        true
    });
    assert!(done);
    // The peer got the ClientHello, then the end.
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(support::SAFETY / 4)).unwrap();
    let got = run(
        &lp,
        support::on_thread(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut peer, &mut v).map(|_| v)
        }),
    )
    .unwrap();
    assert_eq!(got.first(), Some(&22), "a handshake record, then EOF");
}

#[test]
fn start_tls_dropped_at_each_poll_leaves_nothing() {
    let pki = Pki::new();
    let lp = new_loop();
    let server = server(&lp, &pki);
    let addr = server.local_addrs()[0];
    let mut completed = false;
    for polls in 0..50 {
        let plain = run(&lp, lp.create_connection(Echo::default, addr)).unwrap();
        let marker = Rc::new(());
        let calls = Rc::new(std::cell::RefCell::new(Vec::new()));
        let fut = lp.start_tls(
            &plain,
            Held(marker.clone(), calls.clone()),
            TlsConfig::client(pki.client(), "localhost"),
            b"",
        );
        let out = run(&lp, poll_then_drop(fut, polls));
        completed = out.is_some();
        if let Some(t) = out {
            t.unwrap().close(); // a completed future's transport is the caller's
        }
        drop(plain);
        check_dropped(&lp, &server, &marker, &calls);
        if completed {
            break;
        }
    }
    assert!(completed, "start_tls completes within 50 polls");
    server.close();
}

#[test]
fn start_tls_on_a_closing_transport_fails_at_once() {
    let pki = Pki::new();
    let lp = new_loop();
    let server = server(&lp, &pki);
    let plain = run(
        &lp,
        lp.create_connection(Echo::default, server.local_addrs()[0]),
    )
    .unwrap();
    plain.close();
    let e = run(
        &lp,
        lp.start_tls(
            &plain,
            Echo::default(),
            TlsConfig::client(pki.client(), "localhost"),
            b"",
        ),
    )
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    server.close();
}

#[test]
fn closing_the_server_ends_its_handshaking_connections() {
    let pki = Pki::new();
    let lp = new_loop();
    let server = server(&lp, &pki);
    // Connected, silent: the server's side waits in its handshake.
    let peer = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
    run(&lp, until(|| server.connection_count() == 1));
    server.close();
    server.abort_clients();
    support::peer_sees_eof(&lp, peer);
    run(&lp, until(|| server.connection_count() == 0));
}

#[test]
fn dropping_the_loop_with_live_tls_connections_frees_them() {
    let pki = Pki::new();
    let marker = Rc::new(());
    {
        let lp = new_loop();
        let server = server(&lp, &pki);
        let calls = Rc::new(std::cell::RefCell::new(Vec::new()));
        let m = marker.clone();
        let _t = run(
            &lp,
            lp.create_connection(move || Held(m, calls), server.local_addrs()[0])
                .tls(pki.client(), "localhost"),
        )
        .unwrap();
    }
    assert_eq!(Rc::strong_count(&marker), 1, "the protocol was dropped");
}
