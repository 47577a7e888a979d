//! Server lifecycle: start_serving, close, wait_closed, clients, bind
//! options and errors (asyncio-surface 1.4 and 2.7; reliability R24).

mod support;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;

use sloop::{Protocol, Transport};
use support::*;

#[test]
fn start_serving_false_then_start() {
    let lp = new_loop();
    let made = Rc::new(Cell::new(0));
    let m = made.clone();
    struct Count(Rc<Cell<usize>>);
    impl Protocol for Count {
        fn connection_made(&mut self, _: &Transport) {
            self.0.set(self.0.get() + 1);
        }
    }
    let server = run(
        &lp,
        lp.create_server(move || Count(m.clone()), "127.0.0.1:0")
            .start_serving(false),
    )
    .unwrap();
    assert!(!server.is_serving());
    let addr = server.local_addrs()[0];
    let _c = TcpStream::connect(addr).unwrap(); // waits in the backlog
    run(&lp, sloop::sleep(std::time::Duration::from_millis(20)));
    assert_eq!(made.get(), 0, "not accepted before start_serving");
    server.start_serving().unwrap();
    server.start_serving().unwrap(); // idempotent
    assert!(server.is_serving());
    let m = made.clone();
    run(&lp, until(move || m.get() == 1));
    server.close();
    assert!(
        server.start_serving().is_err(),
        "closed servers do not restart"
    );
}

#[test]
fn close_keeps_connections_and_wait_closed_waits_for_them() {
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    // Echo works (run the loop while the blocking read waits on a thread).
    let mut c2 = c.try_clone().unwrap();
    let got = run(
        &lp,
        on_thread(move || {
            c2.read_exact(&mut buf).unwrap();
            buf
        }),
    );
    assert_eq!(&got, b"ping");
    let closed = Rc::new(Cell::new(false));
    let cl = closed.clone();
    let w = server.wait_closed();
    lp.spawn_local(async move {
        w.await;
        cl.set(true);
    })
    .detach();
    run(&lp, sloop::sleep(std::time::Duration::from_millis(10)));
    assert!(!closed.get(), "wait_closed blocks while the server is open");
    server.close();
    server.close();
    assert!(server.with_sockets(|s| s.is_empty()));
    assert!(!server.is_serving());
    assert!(
        TcpStream::connect(addr).is_err(),
        "listening socket closed at once"
    );
    run(&lp, sloop::sleep(std::time::Duration::from_millis(10)));
    assert!(!closed.get(), "and while a connection is open");
    assert_eq!(server.connection_count(), 1);
    // The existing connection still works.
    c.write_all(b"pong").unwrap();
    let got = run(
        &lp,
        on_thread(move || {
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            buf
        }),
    );
    assert_eq!(&got, b"pong");
    let cl = closed.clone();
    run(&lp, until(move || cl.get()));
    run(&lp, server.wait_closed()); // later calls return at once
}

#[test]
fn close_and_abort_clients() {
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let s = server.clone();
    run(&lp, until(move || s.connection_count() == 3));
    server.close_clients();
    server.close();
    run(&lp, server.wait_closed());
    for mut c in clients {
        let mut v = Vec::new();
        c.read_to_end(&mut v).unwrap();
    }
    let (server, addr) = echo_server(&lp);
    let _clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let s = server.clone();
    run(&lp, until(move || s.connection_count() == 3));
    server.abort_clients();
    server.close();
    run(&lp, server.wait_closed());
}

#[test]
fn bind_errors_and_options() {
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    let err = run(
        &lp,
        lp.create_server(Echo::default, addr).reuse_address(false),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string()
            .starts_with(&format!("error while attempting to bind on address {addr}")),
        "{err}"
    );
    server.close();
    // reuse_port: two servers on one port.
    let a = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .reuse_port(true),
    )
    .unwrap();
    let port = a.local_addrs()[0].port();
    let b = run(
        &lp,
        lp.create_server(Echo::default, ("127.0.0.1", port))
            .reuse_port(true),
    )
    .unwrap();
    assert_eq!(b.local_addrs()[0].port(), port);
    a.close();
    b.close();
    // Every interface, both families when IPv6 is there (two sockets).
    let all = run(&lp, lp.create_server(Echo::default, ":0")).unwrap();
    assert!(!all.local_addrs().is_empty());
    for a in all.local_addrs() {
        assert!(a.ip().is_unspecified());
    }
    all.close();
    // Several addresses.
    let multi = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .also_bind("127.0.0.2:0"),
    )
    .unwrap();
    assert_eq!(multi.local_addrs().len(), 2);
    multi.close();
}

#[test]
fn server_from_existing_socket() {
    let lp = new_loop();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let server = run(
        &lp,
        lp.create_server_from_socket(Echo::default, socket2::Socket::from(std_listener)),
    )
    .unwrap();
    assert_eq!(server.local_addrs(), vec![addr]);
    let got = run(
        &lp,
        on_thread(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"abc").unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut v = Vec::new();
            c.read_to_end(&mut v).unwrap();
            v
        }),
    );
    assert_eq!(got, b"abc");
    server.close();
    let udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let err = run(&lp, lp.create_server_from_socket(Echo::default, udp)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("A Stream Socket was expected"));
}

#[test]
fn factory_panic_is_reported_and_socket_closed() {
    let lp = lenient_loop();
    let msgs = exception_messages(&lp);
    let server = run(
        &lp,
        lp.create_server(|| -> Echo { panic!("factory failed") }, "127.0.0.1:0"),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let got = run(
        &lp,
        on_thread(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let mut v = Vec::new();
            c.read_to_end(&mut v).map(|_| v.len())
        }),
    );
    assert_eq!(got.unwrap_or(0), 0, "the accepted socket is closed");
    assert_eq!(
        msgs.borrow().as_slice(),
        ["Error on transport creation for incoming connection"]
    );
    assert!(server.is_serving(), "the server goes on");
    server.close();
}

#[test]
fn ipv6_and_dual_stack() {
    let lp = new_loop();
    // ::1 alone (skipped where IPv6 is off).
    let v6 = match lp.run_until_complete(lp.create_server(Echo::default, "[::1]:0")) {
        Ok(Ok(s)) => s,
        _ => {
            eprintln!("no IPv6 here; skipping");
            return;
        }
    };
    let a6 = v6.local_addrs()[0];
    assert!(a6.is_ipv6());
    v6.close();
    // Every interface: one socket per family, v6 only on the v6 one, and
    // both families reach the server.
    let all = run(&lp, lp.create_server(Echo::default, ":0")).unwrap();
    let addrs = all.local_addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    let port4 = addrs.iter().find(|a| a.is_ipv4()).unwrap().port();
    let port6 = addrs.iter().find(|a| a.is_ipv6()).unwrap().port();
    let got = run(
        &lp,
        on_thread(move || {
            let mut out = Vec::new();
            for target in [format!("127.0.0.1:{port4}"), format!("[::1]:{port6}")] {
                let mut c = TcpStream::connect(target).unwrap();
                c.write_all(b"x").unwrap();
                let mut b = [0u8; 1];
                c.read_exact(&mut b).unwrap();
                out.push(b[0]);
            }
            out
        }),
    );
    assert_eq!(got, b"xx");
    all.close();
}

/// A blocking client on a thread: sends `msg`, reads as many bytes back.
/// The read timeout is only a safety net so a broken server fails fast.
fn echo_once(addr: std::net::SocketAddr, msg: &'static [u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(SAFETY / 4))?;
    c.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got)?;
    Ok(got)
}

#[test]
fn dropped_server_keeps_serving() {
    // D15: dropping every Server handle leaves a serving server serving
    // (asyncio: the loop owns the listener), never a listening fd that is
    // registered but no longer accepts.
    let lp = new_loop();
    let made = Rc::new(Cell::new(0));
    let m = made.clone();
    struct CountedEcho(Rc<Cell<usize>>, Echo);
    impl Protocol for CountedEcho {
        fn connection_made(&mut self, t: &Transport) {
            self.0.set(self.0.get() + 1);
            self.1.connection_made(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.1.data_received(data);
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.1.connection_lost(e);
        }
    }
    let server = run(
        &lp,
        lp.create_server(
            move || CountedEcho(m.clone(), Echo::default()),
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    drop(server);
    let got = run(&lp, on_thread(move || echo_once(addr, b"still here")));
    assert_eq!(got.expect("echo from a dropped server"), b"still here");
    assert_eq!(made.get(), 1, "connection_made ran");
    // The loop's close stops it.
    lp.close().unwrap();
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the loop's close closed the listener"
    );
}

#[test]
fn loop_close_closes_a_held_server() {
    // A handle that outlives the loop does not keep the listener open.
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    lp.close().unwrap();
    assert!(!server.is_serving());
    assert!(server.with_sockets(|s| s.is_empty()));
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the listening socket closed with the loop"
    );
    assert!(server.start_serving().is_err());
}

#[test]
fn close_and_last_drop_from_inside_a_protocol_callback() {
    // D2: the protocol closes its server and drops the last handle in
    // data_received; its own connection goes on, new ones are refused.
    let lp = new_loop();
    let slot: Rc<std::cell::RefCell<Option<sloop::Server>>> = Rc::default();
    struct Closer {
        slot: Rc<std::cell::RefCell<Option<sloop::Server>>>,
        t: Option<Transport>,
    }
    impl Protocol for Closer {
        fn connection_made(&mut self, t: &Transport) {
            self.t = Some(t.clone());
        }
        fn data_received(&mut self, data: &[u8]) {
            if let Some(server) = self.slot.borrow_mut().take() {
                server.close();
                drop(server); // the last handle
            }
            self.t.as_ref().unwrap().write(data).unwrap();
        }
        fn connection_lost(&mut self, _: Option<std::io::Error>) {
            self.t = None;
        }
    }
    let s = slot.clone();
    let server = run(
        &lp,
        lp.create_server(
            move || Closer {
                slot: s.clone(),
                t: None,
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let waiter = server.wait_closed();
    *slot.borrow_mut() = Some(server);
    let got = run(
        &lp,
        on_thread(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"close").unwrap();
            let mut got = [0u8; 5];
            c.read_exact(&mut got).unwrap();
            let refused = TcpStream::connect(addr).is_err();
            c.write_all(b"again").unwrap();
            c.read_exact(&mut got).unwrap();
            (refused, got)
        }),
    );
    assert_eq!(got, (true, *b"again"), "closed, and the connection goes on");
    assert!(slot.borrow().is_none());
    run(&lp, waiter);
}

#[test]
fn close_from_inside_the_factory_keeps_no_cycle() {
    // The factory holds a handle of its own server and closes it while
    // running: the closed server must not keep the factory (and with it
    // the handle: an Rc cycle that never goes).
    let lp = new_loop();
    let slot: Rc<std::cell::RefCell<Option<sloop::Server>>> = Rc::default();
    let marker = Rc::new(());
    let (s, mk) = (slot.clone(), marker.clone());
    let server = run(
        &lp,
        lp.create_server(
            move || {
                let _keep = &mk;
                if let Some(server) = s.borrow().as_ref() {
                    server.close();
                }
                Echo::default()
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let waiter = server.wait_closed();
    *slot.borrow_mut() = Some(server);
    let got = run(&lp, on_thread(move || echo_once(addr, b"once")));
    assert_eq!(got.unwrap(), b"once", "the connection being made is served");
    // The client dropped its socket: the connection ends, then the server.
    run(&lp, waiter);
    // The slot still holds the server, which the factory holds: only the
    // closed server's letting go of its factory breaks that cycle.
    assert!(slot.borrow().is_some());
    assert_eq!(
        Rc::strong_count(&marker),
        1,
        "the closed server let go of its factory"
    );
}
