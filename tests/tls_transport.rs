//! The TLS transport over real loopback sockets, both ends sloop unless
//! a blocking rustls peer on a thread is what the case needs (a peer that
//! sends close_notify and keeps TCP open, a pipelined ClientHello).
//! Certificates are made at test time (`tls_support`).
#![cfg(feature = "tls")]

mod support;
#[path = "tls_support/mod.rs"]
mod tls_support;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sloop::tls::{rustls, TlsConfig};
use sloop::{Buffered, BufferedProtocol, Error, EventLoop, Protocol, TlsFailure, Transport};
use support::{new_loop, on_thread, pattern, run, until, Echo, Ev, Recorder};
use tls_support::Pki;

fn tls_error_of(e: &io::Error) -> Option<&Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<Error>())
}

fn failure_of(e: &io::Error) -> Option<TlsFailure> {
    match tls_error_of(e) {
        Some(Error::Tls { failure, .. }) => Some(*failure),
        _ => None,
    }
}

/// Reads from `peer` until the connection ends (an alert may come first).
fn peer_sees_end(lp: &EventLoop, mut peer: TcpStream) {
    peer.set_read_timeout(Some(support::SAFETY / 4)).unwrap();
    let r = run(
        lp,
        on_thread(move || {
            let mut v = Vec::new();
            peer.read_to_end(&mut v).map(|_| v.len())
        }),
    );
    match r {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

fn tls_echo_server(lp: &EventLoop, config: Arc<rustls::ServerConfig>) -> (sloop::Server, u16) {
    let server = run(
        lp,
        lp.create_server(Echo::default, "127.0.0.1:0").tls(config),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    (server, port)
}

/// Writes `len` bytes at connection_made, collects the echo, closes when
/// all came back.
struct Sender {
    len: usize,
    got: Rc<RefCell<Vec<u8>>>,
    t: Option<Transport>,
    lost: Rc<RefCell<Option<Option<io::ErrorKind>>>>,
}

impl Protocol for Sender {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
        t.write(&pattern(self.len)).unwrap();
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut g = self.got.borrow_mut();
        g.extend_from_slice(data);
        if g.len() == self.len {
            self.t.as_ref().unwrap().close();
        }
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        *self.lost.borrow_mut() = Some(exc.map(|e| e.kind()));
        self.t = None;
    }
}

#[test]
fn handshake_and_10mb_echo_both_ways() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    let got = Rc::new(RefCell::new(Vec::new()));
    let lost = Rc::new(RefCell::new(None));
    let (g, l) = (got.clone(), lost.clone());
    const N: usize = 10 * 1024 * 1024;
    let t = run(
        &lp,
        lp.create_connection(
            move || Sender {
                len: N,
                got: g,
                t: None,
                lost: l,
            },
            ("127.0.0.1", port),
        )
        .tls(pki.client(), "localhost"),
    )
    .unwrap();
    assert!(t.is_tls());
    let info = t.tls_info().expect("handshake done");
    assert_eq!(info.version, "TLSv1_3");
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    assert_eq!(info.peer_certificates.len(), 1);
    assert_eq!(info.peer_certificates[0], pki.leaf_der.as_ref());
    assert!(t.get_extra_info("cipher").unwrap().starts_with("TLS13_"));
    run(&lp, until(|| lost.borrow().is_some()));
    assert_eq!(*lost.borrow(), Some(None), "a clean close");
    assert!(*got.borrow() == pattern(N), "every byte back, in order");
    server.close();
}

#[test]
fn tls12_works_and_refuses_write_eof() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            #[allow(deprecated)]
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            r.add(pki.ca_der.clone()).unwrap();
            r
        })
        .with_no_client_auth(),
    );
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, ("127.0.0.1", port))
            .tls(client, "localhost"),
    )
    .unwrap();
    assert_eq!(t.tls_info().unwrap().version, "TLSv1_2");
    assert!(!t.can_write_eof());
    assert!(matches!(t.write_eof(), Err(Error::TlsWriteEofUnsupported)));
    t.write(b"ping").unwrap();
    run(&lp, until(|| r.borrow().data.len() == 4));
    assert_eq!(r.borrow().data, b"ping");
    t.close();
    run(&lp, until(|| r.borrow().lost()));
    server.close();
}

fn refused(pki: &Pki, server_config: Arc<rustls::ServerConfig>, name: &str) -> io::Error {
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, server_config);
    let made = Rc::new(RefCell::new(false));
    let m = made.clone();
    struct Flag(Rc<RefCell<bool>>);
    impl Protocol for Flag {
        fn connection_made(&mut self, _: &Transport) {
            *self.0.borrow_mut() = true;
        }
    }
    let err = run(
        &lp,
        lp.create_connection(move || Flag(m), ("127.0.0.1", port))
            .tls(pki.client(), name),
    )
    .unwrap_err();
    assert!(!*made.borrow(), "no connection_made on a failed handshake");
    // The server goes on serving others.
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, ("127.0.0.1", port))
            .tls(pki.client(), "localhost"),
    );
    if let Ok(t) = t {
        t.write(b"still here").unwrap();
        run(&lp, until(|| r.borrow().data.len() == 10));
        t.close();
    }
    server.close();
    err
}

#[test]
fn wrong_hostname_is_refused() {
    let pki = Pki::new();
    let e = refused(&pki, pki.server(), "example.com");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(failure_of(&e), Some(TlsFailure::NotValidForName), "{e}");
    assert!(
        e.to_string().contains("certificate"),
        "rustls's reason: {e}"
    );
}

#[test]
fn untrusted_ca_is_refused() {
    let pki = Pki::new();
    let e = refused(&pki, pki.rogue_server(), "localhost");
    assert_eq!(failure_of(&e), Some(TlsFailure::UnknownIssuer), "{e}");
}

#[test]
fn expired_certificate_is_refused() {
    let pki = Pki::new();
    let e = refused(&pki, pki.expired_server(), "localhost");
    assert_eq!(failure_of(&e), Some(TlsFailure::Expired), "{e}");
}

#[test]
fn empty_or_bad_server_name_is_refused_before_connecting() {
    let pki = Pki::new();
    let lp = new_loop();
    // Nothing listens: a connect attempt would fail otherwise.
    for name in ["", "not a name!", "-"] {
        let e = run(
            &lp,
            lp.create_connection(Echo::default, ("127.0.0.1", 9))
                .tls(pki.client(), name),
        )
        .unwrap_err();
        assert!(
            matches!(tls_error_of(&e), Some(Error::InvalidServerName { .. })),
            "{name:?}: {e}"
        );
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn handshake_timeout_against_a_silent_server() {
    let pki = Pki::new();
    let lp = new_loop();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let e = run(
        &lp,
        lp.create_connection(Echo::default, ("127.0.0.1", port))
            .tls_config(
                TlsConfig::client(pki.client(), "localhost")
                    .handshake_timeout(Duration::from_millis(100)),
            ),
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(matches!(
        tls_error_of(&e),
        Some(Error::TlsHandshakeTimeout(_))
    ));
    // The silent peer sees the connection end.
    let (peer, _) = listener.accept().unwrap();
    let mut hello = [0u8; 5];
    (&peer).read_exact(&mut hello).unwrap();
    assert_eq!(hello[0], 22, "a handshake record came");
    peer_sees_end(&lp, peer);
}

#[test]
fn a_silent_client_cannot_hold_a_server_connection() {
    let pki = Pki::new();
    let lp = new_loop();
    let server = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0").tls_config(
            TlsConfig::server(pki.server()).handshake_timeout(Duration::from_millis(100)),
        ),
    )
    .unwrap();
    let peer = TcpStream::connect(server.local_addrs()[0]).unwrap();
    support::peer_sees_eof(&lp, peer);
    server.close();
}

#[test]
fn garbage_instead_of_a_client_hello() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    let mut peer = TcpStream::connect(("127.0.0.1", port)).unwrap();
    peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // An alert (or nothing), then EOF.
    peer_sees_end(&lp, peer);
    // The server serves the next one.
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, ("127.0.0.1", port))
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.write(b"ok").unwrap();
    run(&lp, until(|| r.borrow().data == b"ok"));
    t.close();
    server.close();
}

#[test]
fn close_notify_from_the_client_ends_the_server_side() {
    let pki = Pki::new();
    let lp = new_loop();
    let (srec, sr) = Recorder::new();
    let mut srec = Some(srec);
    let server = run(
        &lp,
        lp.create_server(move || srec.take().unwrap(), "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let (crec, cr) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || crec, server.local_addrs()[0])
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.write(b"bye").unwrap();
    t.close();
    assert!(t.is_closing());
    assert!(matches!(t.write(b"x"), Err(Error::ConnectionLost)));
    run(&lp, until(|| sr.borrow().lost() && cr.borrow().lost()));
    assert_eq!(
        sr.borrow().events,
        vec![Ev::Made, Ev::Data(3), Ev::Eof, Ev::Lost(None)]
    );
    assert_eq!(cr.borrow().events, vec![Ev::Made, Ev::Lost(None)]);
    server.close();
}

#[test]
fn close_notify_from_the_server_ends_the_client_side() {
    let pki = Pki::new();
    let lp = new_loop();
    struct Greeter;
    impl Protocol for Greeter {
        fn connection_made(&mut self, t: &Transport) {
            t.write(b"hello and goodbye").unwrap();
            t.close();
        }
    }
    let server = run(
        &lp,
        lp.create_server(|| Greeter, "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let (crec, cr) = Recorder::new();
    run(
        &lp,
        lp.create_connection(move || crec, server.local_addrs()[0])
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    run(&lp, until(|| cr.borrow().lost()));
    let r = cr.borrow();
    assert_eq!(r.data, b"hello and goodbye");
    assert_eq!(r.events.last(), Some(&Ev::Lost(None)));
    assert!(r.events.contains(&Ev::Eof), "close_notify is an EOF");
    drop(r);
    server.close();
}

/// A blocking rustls client on a thread.
fn blocking_client(
    pki: &Pki,
    port: u16,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn =
        rustls::ClientConnection::new(pki.client(), "localhost".try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(support::SAFETY)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn a_peer_that_sends_close_notify_and_keeps_tcp_open() {
    let pki = Pki::new();
    let lp = new_loop();
    let (srec, sr) = Recorder::new();
    let mut srec = Some(srec);
    let server = run(
        &lp,
        lp.create_server(move || srec.take().unwrap(), "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    let mut s = blocking_client(&pki, port);
    let peer = run(
        &lp,
        on_thread(move || {
            s.write_all(b"data").unwrap();
            s.conn.send_close_notify();
            s.flush().unwrap();
            // TCP stays open; the server answers close_notify and closes.
            let mut rest = Vec::new();
            let r = s.read_to_end(&mut rest);
            (r.map(|_| rest), s.conn.is_handshaking())
        }),
    );
    let (got, _) = peer;
    assert_eq!(got.unwrap(), b"", "a clean close_notify from the server");
    run(&lp, until(|| sr.borrow().lost()));
    assert_eq!(
        sr.borrow().events,
        vec![Ev::Made, Ev::Data(4), Ev::Eof, Ev::Lost(None)]
    );
    server.close();
}

#[test]
fn write_eof_on_tls13_is_a_half_close() {
    let pki = Pki::new();
    let lp = new_loop();
    // The server keeps its side open on EOF and answers after it.
    struct LateReply(Option<Transport>);
    impl Protocol for LateReply {
        fn connection_made(&mut self, t: &Transport) {
            self.0 = Some(t.clone());
        }
        fn eof_received(&mut self) -> bool {
            let t = self.0.as_ref().unwrap();
            t.write(b"after your eof").unwrap();
            t.close();
            true
        }
    }
    let server = run(
        &lp,
        lp.create_server(|| LateReply(None), "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let (mut crec, cr) = Recorder::new();
    crec.keep_open = true;
    let t = run(
        &lp,
        lp.create_connection(move || crec, server.local_addrs()[0])
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    assert!(t.can_write_eof());
    t.write_eof().unwrap();
    assert!(matches!(t.write(b"x"), Err(Error::WriteAfterEof)));
    run(&lp, until(|| cr.borrow().events.contains(&Ev::Eof)));
    assert_eq!(cr.borrow().data, b"after your eof");
    t.close();
    run(&lp, until(|| cr.borrow().lost()));
    server.close();
}

#[test]
fn alpn_is_negotiated() {
    let pki = Pki::new();
    let lp = new_loop();
    let seen = Rc::new(RefCell::new(None));
    let s2 = seen.clone();
    struct Alpn(Rc<RefCell<Option<Vec<u8>>>>);
    impl Protocol for Alpn {
        fn connection_made(&mut self, t: &Transport) {
            *self.0.borrow_mut() = t.tls_info().unwrap().alpn_protocol;
        }
    }
    let server = run(
        &lp,
        lp.create_server(move || Alpn(s2.clone()), "127.0.0.1:0")
            .tls(pki.server_with_alpn(&[b"h2", b"http/1.1"])),
    )
    .unwrap();
    let t = run(
        &lp,
        lp.create_connection(Echo::default, server.local_addrs()[0])
            .tls(pki.client_with_alpn(&[b"h2"]), "localhost"),
    )
    .unwrap();
    assert_eq!(
        t.tls_info().unwrap().alpn_protocol.as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(t.get_extra_info("alpn_protocol").as_deref(), Some("h2"));
    run(&lp, until(|| seen.borrow().is_some()));
    assert_eq!(seen.borrow().as_deref(), Some(&b"h2"[..]));
    t.close();
    // No protocol in common: a typed refusal.
    let e = run(
        &lp,
        lp.create_connection(Echo::default, server.local_addrs()[0])
            .tls(pki.client_with_alpn(&[b"spdy/1"]), "localhost"),
    )
    .unwrap_err();
    assert_eq!(failure_of(&e), Some(TlsFailure::Incompatible), "{e}");
    server.close();
}

/// The plain side of a STARTTLS server: reads a greeting line, then on
/// "STARTTLS\r\n" upgrades, handing over what followed in the same read.
struct PlainSide {
    t: Option<Transport>,
    pending: Vec<u8>,
    greeting: Rc<RefCell<Vec<u8>>>,
    tls: TlsConfig,
    upgraded: Rc<RefCell<Option<Transport>>>,
}

impl Protocol for PlainSide {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            if line == b"STARTTLS\r\n" {
                let rest = std::mem::take(&mut self.pending);
                let t = self.t.take().unwrap();
                let lp = sloop::get_running_loop().unwrap();
                let fut = lp.start_tls(&t, Echo::default(), self.tls.clone(), &rest);
                let up = self.upgraded.clone();
                lp.spawn_local(async move {
                    *up.borrow_mut() = Some(fut.await.unwrap());
                })
                .detach();
                return;
            }
            self.greeting.borrow_mut().extend_from_slice(&line);
        }
    }
}

#[test]
fn starttls_with_pipelined_bytes_loses_and_repeats_nothing() {
    let pki = Pki::new();
    let lp = new_loop();
    let greeting = Rc::new(RefCell::new(Vec::new()));
    let upgraded = Rc::new(RefCell::new(None));
    let (g, u, cfg) = (
        greeting.clone(),
        upgraded.clone(),
        TlsConfig::server(pki.server()),
    );
    let server = run(
        &lp,
        lp.create_server(
            move || PlainSide {
                t: None,
                pending: Vec::new(),
                greeting: g.clone(),
                tls: cfg.clone(),
                upgraded: u.clone(),
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    let client = pki.client();
    let echoed = run(
        &lp,
        on_thread(move || {
            let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            sock.set_read_timeout(Some(support::SAFETY)).unwrap();
            let mut conn =
                rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
            // The greeting, STARTTLS and the ClientHello in one write.
            let mut first = b"HELO plain\r\nSTARTTLS\r\n".to_vec();
            conn.write_tls(&mut first).unwrap();
            sock.write_all(&first).unwrap();
            let mut s = rustls::StreamOwned::new(conn, sock);
            let msg = pattern(100_000);
            s.write_all(&msg).unwrap();
            let mut back = vec![0; msg.len()];
            s.read_exact(&mut back).unwrap();
            back == msg
        }),
    );
    assert!(echoed, "the echo over the upgraded connection is exact");
    assert_eq!(*greeting.borrow(), b"HELO plain\r\n", "the greeting once");
    run(&lp, until(|| upgraded.borrow().is_some()));
    assert!(upgraded.borrow().as_ref().unwrap().is_tls());
    server.close();
}

#[test]
fn starttls_as_the_client() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    // A plain connection first, upgraded at once by the client.
    let t = run(
        &lp,
        lp.create_connection(Echo::default, ("127.0.0.1", port)),
    )
    .unwrap();
    let (rec, r) = Recorder::new();
    let tls = run(
        &lp,
        lp.start_tls(&t, rec, TlsConfig::client(pki.client(), "localhost"), b""),
    )
    .unwrap();
    assert!(tls.is_tls() && !t.is_tls());
    tls.write(b"over tls").unwrap();
    run(&lp, until(|| r.borrow().data == b"over tls"));
    tls.close();
    run(&lp, until(|| r.borrow().lost()));
    server.close();
}

struct BufferedCollect {
    buf: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
}

impl BufferedProtocol for BufferedCollect {
    fn get_buffer(&mut self, _: usize) -> &mut [u8] {
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.got.borrow_mut().extend_from_slice(&self.buf[..n]);
    }
}

#[test]
fn buffered_protocols_over_tls() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let t = run(
        &lp,
        lp.create_connection(
            move || {
                Buffered(BufferedCollect {
                    buf: vec![0; 1000],
                    got: g,
                })
            },
            ("127.0.0.1", port),
        )
        .tls(pki.client(), "localhost"),
    )
    .unwrap();
    let msg = pattern(300_000);
    t.write(&msg).unwrap();
    run(&lp, until(|| got.borrow().len() == msg.len()));
    assert!(*got.borrow() == msg);
    t.close();
    server.close();
}

#[test]
fn flow_control_counts_what_waits_for_the_kernel() {
    let pki = Pki::new();
    let lp = new_loop();
    // A server that never reads.
    struct Deaf;
    impl Protocol for Deaf {
        fn connection_made(&mut self, t: &Transport) {
            t.pause_reading();
        }
    }
    let server = run(
        &lp,
        lp.create_server(|| Deaf, "127.0.0.1:0").tls(pki.server()),
    )
    .unwrap();
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, server.local_addrs()[0])
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.set_write_buffer_limits(Some(64 * 1024), None).unwrap();
    assert_eq!(t.write_buffer_limits(), (16 * 1024, 64 * 1024));
    let chunk = vec![7u8; 64 * 1024];
    while !r.borrow().events.contains(&Ev::Pause) {
        t.write(&chunk).unwrap();
    }
    assert!(t.write_buffer_size() > 64 * 1024);
    let waiter = t.empty_waiter().unwrap();
    assert!(matches!(
        t.empty_waiter(),
        Err(Error::EmptyWaiterAlreadySet)
    ));
    t.abort();
    assert!(
        run(&lp, waiter).is_err(),
        "the data never reached the kernel"
    );
    run(&lp, until(|| r.borrow().lost()));
    server.close();
}

#[test]
fn pause_reading_holds_plaintext_until_resumed() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, ("127.0.0.1", port))
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.pause_reading();
    assert!(!t.is_reading());
    let msg = pattern(200_000);
    t.write(&msg).unwrap();
    // Let the echo come back and sit in the kernel and rustls.
    run(&lp, sloop::sleep(Duration::from_millis(50)));
    let before = r.borrow().data.len();
    assert_eq!(before, 0, "nothing while paused");
    t.resume_reading();
    run(&lp, until(|| r.borrow().data.len() == msg.len()));
    assert!(r.borrow().data == msg);
    t.close();
    server.close();
}

#[test]
fn unix_sockets_carry_tls_too() {
    let pki = Pki::new();
    let lp = new_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.sock");
    let server = run(
        &lp,
        lp.create_unix_server(Echo::default, &path)
            .tls(pki.server()),
    )
    .unwrap();
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_unix_connection(move || rec, &path)
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.write(b"unix and tls").unwrap();
    run(&lp, until(|| r.borrow().data == b"unix and tls"));
    t.close();
    run(&lp, until(|| r.borrow().lost()));
    server.close();
}

#[test]
fn a_panic_in_the_protocol_is_the_transports_fatal_error() {
    let pki = Pki::new();
    let lp = support::lenient_loop();
    let msgs = support::exception_messages(&lp);
    struct Bomb;
    impl Protocol for Bomb {
        fn data_received(&mut self, _: &[u8]) {
            panic!("boom");
        }
    }
    let (srec, sr) = Recorder::new();
    let mut srec = Some(srec);
    let server = run(
        &lp,
        lp.create_server(move || srec.take().unwrap(), "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let t = run(
        &lp,
        lp.create_connection(|| Bomb, server.local_addrs()[0])
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    let st = {
        run(&lp, until(|| sr.borrow().transport.is_some()));
        sr.borrow().transport.clone().unwrap()
    };
    st.write(b"trigger").unwrap();
    run(&lp, until(|| t.is_closing()));
    run(&lp, until(|| sr.borrow().lost()));
    assert!(msgs
        .borrow()
        .iter()
        .any(|m| m.contains("data_received() call failed")));
    server.close();
}

#[test]
fn the_bridge_runs_over_tls() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let lp = new_loop();
    let server = run(
        &lp,
        lp.start_server(
            |mut s: sloop::TransportStream| async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                s.close().await.unwrap();
            },
            "127.0.0.1:0",
        )
        .tls(pki.server()),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = pki.client();
    let h = lp.handle();
    let got = run(&lp, async move {
        let mut s = h.open_connection(addr).tls(client, "localhost").await?;
        let msg = pattern(1_000_000);
        s.write_all(&msg).await?;
        s.close().await?; // write_eof: close_notify, TLS 1.3 half-close
        let mut back = Vec::new();
        s.read_to_end(&mut back).await?;
        Ok::<_, io::Error>(back == msg)
    })
    .unwrap();
    assert!(got);
    server.close();
}

#[test]
fn shutdown_timeout_against_a_peer_that_never_reads() {
    let pki = Pki::new();
    let lp = new_loop();
    struct Deaf;
    impl Protocol for Deaf {
        fn connection_made(&mut self, t: &Transport) {
            t.pause_reading();
        }
    }
    let server = run(
        &lp,
        lp.create_server(|| Deaf, "127.0.0.1:0").tls(pki.server()),
    )
    .unwrap();
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, server.local_addrs()[0])
            .tls_config(
                TlsConfig::client(pki.client(), "localhost")
                    .shutdown_timeout(Duration::from_millis(100)),
            ),
    )
    .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while !r.borrow().events.contains(&Ev::Pause) {
        t.write(&chunk).unwrap();
    }
    // What is buffered can never drain: close cannot finish by itself.
    t.close();
    run(&lp, until(|| r.borrow().lost()));
    assert_eq!(
        r.borrow().events.last(),
        Some(&Ev::Lost(Some(io::ErrorKind::TimedOut)))
    );
    server.close();
}

#[test]
fn eof_without_close_notify_while_paused_comes_after_the_data() {
    let pki = Pki::new();
    let lp = new_loop();
    struct PausedRecorder(Recorder);
    impl Protocol for PausedRecorder {
        fn connection_made(&mut self, t: &Transport) {
            self.0.connection_made(t);
            t.pause_reading();
        }
        fn data_received(&mut self, d: &[u8]) {
            self.0.data_received(d);
        }
        fn eof_received(&mut self) -> bool {
            self.0.eof_received()
        }
        fn connection_lost(&mut self, e: Option<io::Error>) {
            self.0.connection_lost(e);
        }
    }
    let (srec, sr) = Recorder::new();
    let mut srec = Some(PausedRecorder(srec));
    let server = run(
        &lp,
        lp.create_server(move || srec.take().unwrap(), "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    let mut s = blocking_client(&pki, port);
    let msg = pattern(100_000);
    let m = msg.clone();
    // Kept open (its read side) until the end.
    let _peer = run(
        &lp,
        on_thread(move || {
            s.write_all(&m).unwrap();
            s.flush().unwrap();
            // A truncation: TCP FIN, no close_notify.
            s.sock.shutdown(std::net::Shutdown::Write).unwrap();
            s
        }),
    );
    run(&lp, until(|| sr.borrow().transport.is_some()));
    let t = sr.borrow().transport.clone().unwrap();
    t.resume_reading();
    run(&lp, until(|| sr.borrow().lost()));
    let r = sr.borrow();
    assert!(r.data == msg, "every byte, before the EOF");
    let n = r.events.len();
    assert_eq!(&r.events[n - 2..], &[Ev::Eof, Ev::Lost(None)]);
    drop(r);
    server.close();
}

#[test]
fn close_clients_sends_close_notify_to_tls_clients() {
    let pki = Pki::new();
    let lp = new_loop();
    let (server, port) = tls_echo_server(&lp, pki.server());
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, ("127.0.0.1", port))
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.write(b"x").unwrap();
    run(&lp, until(|| r.borrow().data == b"x"));
    server.close_clients();
    run(&lp, until(|| r.borrow().lost()));
    assert_eq!(
        r.borrow().events,
        vec![Ev::Made, Ev::Data(1), Ev::Eof, Ev::Lost(None)],
        "a close_notify, not a truncation"
    );
    server.close();
}
