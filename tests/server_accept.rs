//! The accept loop: out of file descriptors (EMFILE) backs off instead of
//! spinning, the connection cap, and stale events after slot reuse
//! (reliability R21, R23, R34).

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sloop::{Protocol, Transport};
use support::*;

#[test]
fn emfile_on_accept_backs_off_and_recovers() {
    let status = in_child("emfile_on_accept_backs_off_and_recovers", &[], || {
        let lp = lenient_loop();
        let msgs = exception_messages(&lp);
        let (server, addr) = echo_server(&lp);
        let clients: Vec<socket2::Socket> = (0..3)
            .map(|_| {
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap()
            })
            .collect();
        // Lower the limit near what is open, then use up the rest.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain libc calls on a valid struct, in a child process.
        #[allow(unsafe_code)]
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = 64;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        let mut hog = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
        }
        for c in &clients {
            c.connect(&addr.into()).unwrap(); // completes in the backlog
        }
        let start = lp.iteration_count();
        run(&lp, sloop::sleep(Duration::from_millis(500)));
        let spent = lp.iteration_count() - start;
        assert_eq!(
            msgs.borrow().as_slice(),
            ["socket.accept() out of system resource"],
            "reported once"
        );
        assert!(
            spent <= 20,
            "no busy loop while out of fds: {spent} iterations"
        );
        assert_eq!(server.connection_count(), 0);
        drop(hog);
        let freed = Instant::now();
        let s = server.clone();
        run(&lp, until(move || s.connection_count() == 3));
        assert!(
            freed.elapsed() < Duration::from_millis(1500),
            "retried after ~1 s"
        );
        server.close();
    });
    assert!(status.success(), "child failed: {status:?}");
}

struct Counted {
    t: Option<Transport>,
    alive: Rc<Cell<usize>>,
    peak: Rc<Cell<usize>>,
}

impl Protocol for Counted {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
        self.alive.set(self.alive.get() + 1);
        self.peak.set(self.peak.get().max(self.alive.get()));
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data).unwrap();
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.alive.set(self.alive.get() - 1);
        self.t = None;
    }
}

#[test]
fn max_connections_caps_and_resumes() {
    let lp = new_loop();
    let alive = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let (a, p) = (alive.clone(), peak.clone());
    let server = run(
        &lp,
        lp.create_server(
            move || Counted {
                t: None,
                alive: a.clone(),
                peak: p.clone(),
            },
            "127.0.0.1:0",
        )
        .max_connections(5),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let n = 40;
    let served = run(
        &lp,
        on_thread(move || {
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    std::thread::spawn(move || {
                        let mut c = std::net::TcpStream::connect(addr).unwrap();
                        let msg = format!("client {i}");
                        c.write_all(msg.as_bytes()).unwrap();
                        let mut got = vec![0; msg.len()];
                        c.read_exact(&mut got).unwrap();
                        got == msg.as_bytes()
                    })
                })
                .collect();
            threads
                .into_iter()
                .filter(|_| true)
                .map(|t| t.join().unwrap())
                .filter(|ok| *ok)
                .count()
        }),
    );
    assert_eq!(served, n, "everyone is served in turn");
    assert!(peak.get() <= 5, "at most 5 at once: {}", peak.get());
    assert_eq!(peak.get(), 5, "the cap is reached");
    let al = alive.clone();
    run(&lp, until(move || al.get() == 0));
    server.close();
}

/// Each connection checks that it only ever sees its own id; on "kill"
/// it aborts another connection, so slots are freed and reused while
/// events for them may be in the same batch (D4).
struct Tagged {
    t: Option<Transport>,
    id: Option<u8>,
    all: Rc<RefCell<Vec<Transport>>>,
    errors: Rc<Cell<usize>>,
}

impl Protocol for Tagged {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
        self.all.borrow_mut().push(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        for &b in data {
            match self.id {
                None => self.id = Some(b),
                Some(id) if id == b => {}
                Some(_) => self.errors.set(self.errors.get() + 1),
            }
        }
        // Abort some other live connection.
        let other = self
            .all
            .borrow()
            .iter()
            .find(|o| !o.is_closing() && o.as_raw_fd() != self.t.as_ref().unwrap().as_raw_fd())
            .cloned();
        if let Some(o) = other {
            o.abort();
        }
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.t = None;
    }
}

#[test]
fn stale_events_never_reach_a_reused_slot() {
    let lp = new_loop();
    let all = Rc::new(RefCell::new(Vec::new()));
    let errors = Rc::new(Cell::new(0));
    let (a, e) = (all.clone(), errors.clone());
    let server = run(
        &lp,
        lp.create_server(
            move || Tagged {
                t: None,
                id: None,
                all: a.clone(),
                errors: e.clone(),
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    for round in 0..20u8 {
        let done = run(
            &lp,
            on_thread(move || {
                let mut cs: Vec<_> = (0..8)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect();
                for (i, c) in cs.iter_mut().enumerate() {
                    let _ = c.write_all(&[round.wrapping_mul(8).wrapping_add(i as u8); 16]);
                }
                cs.len()
            }),
        );
        assert_eq!(done, 8);
        run(&lp, sloop::sleep(Duration::from_millis(2)));
    }
    assert_eq!(errors.get(), 0, "no connection saw another's bytes");
    for t in all.borrow().iter() {
        t.abort();
    }
    server.close();
}

#[test]
fn a_burst_in_one_edge_is_all_accepted() {
    // Five clients are queued before the loop runs again: one edge for the
    // lot, more than one readiness's budget (the backlog, 4). The accept
    // loop must come back for the rest on its own.
    let lp = new_loop();
    let (server, addr) = echo_server_with_backlog(&lp, 4);
    let _clients: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let s = server.clone();
    run(&lp, until(move || s.connection_count() == 5));
    server.close();
}
