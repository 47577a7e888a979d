//! Resource limits (issue 16): out of fds every constructor fails with an
//! error instead of panicking, and works again once fds are freed (EMFILE
//! on accept is tests/server_accept.rs); 50,000 idle connections with the
//! echo still answering a new client (with `SLOOP_IDLE_CONNECTIONS` only:
//! heavy for CI).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use sloop::Protocol;
use support::*;

struct Quiet;
impl Protocol for Quiet {}

/// Lowers this process's soft fd limit to `n` (in a child process only).
fn limit_fds(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid struct, in a child process.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[test]
fn out_of_fds_every_constructor_returns_an_error_and_recovers() {
    let status = in_child(
        "out_of_fds_every_constructor_returns_an_error_and_recovers",
        &[],
        || {
            let lp = lenient_loop();
            let reports = exception_messages(&lp);
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            limit_fds(64);
            let mut hog = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                hog.push(f);
            }
            let emfile = |e: &std::io::Error| e.raw_os_error() == Some(libc::EMFILE);
            let e = run(&lp, lp.create_connection(|| Quiet, addr)).unwrap_err();
            assert!(emfile(&e), "create_connection: {e:?}");
            let e = run(&lp, lp.open_connection(addr)).unwrap_err();
            assert!(emfile(&e), "open_connection: {e:?}");
            let e = run(&lp, lp.create_server(|| Quiet, "127.0.0.1:0")).unwrap_err();
            assert!(emfile(&e), "create_server: {e:?}");
            let e = run(
                &lp,
                sloop::DatagramSocket::bind(&lp.handle(), "127.0.0.1:0"),
            )
            .unwrap_err();
            assert!(emfile(&e), "DatagramSocket::bind: {e:?}");
            let e = sloop::EventLoop::new().unwrap_err();
            assert!(emfile(&e), "EventLoop::new: {e:?}");
            assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
            drop(hog);
            // Everything works again.
            let t = run(&lp, lp.create_connection(|| Quiet, addr)).unwrap();
            t.close();
            let s = run(&lp, lp.create_server(|| Quiet, "127.0.0.1:0")).unwrap();
            s.close();
            drop(sloop::EventLoop::new().unwrap());
            drop(listener);
        },
    );
    assert!(status.success(), "child failed: {status:?}");
}

/// Raises the soft fd limit as far as the hard one allows.
fn raise_fds(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid struct.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        // Root may raise the hard limit too; others get what it allows.
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    lim.rlim_cur
}

/// Idle connections (both ends live here: two fds each), then a new
/// client's echo. Prints the new client's round trip; asserts it answers.
/// Heavy, so it runs only with `SLOOP_IDLE_CONNECTIONS` set (50,000 for
/// the figure in the README):
///
/// ```text
/// SLOOP_IDLE_CONNECTIONS=50000 cargo test --release --test reliability_limits -- idle --nocapture
/// ```
#[test]
fn idle_connections_and_the_echo_still_answers() {
    let Some(n) = std::env::var("SLOOP_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        eprintln!("skipped: set SLOOP_IDLE_CONNECTIONS=50000 to run");
        return;
    };
    let status = in_child(
        "idle_connections_and_the_echo_still_answers",
        &[],
        move || {
            let got = raise_fds(2 * n as u64 + 1000);
            assert!(got >= 2 * n as u64 + 100, "fd limit {got} too low");
            let lp = lenient_loop();
            let (server, addr) = echo_server_with_backlog(&lp, 4096);
            let start = Instant::now();
            let idle = run(
                &lp,
                on_thread(move || {
                    (0..n)
                        .map(|_| TcpStream::connect(addr).unwrap())
                        .collect::<Vec<_>>()
                }),
            );
            let s = server.clone();
            run(&lp, until(move || s.connection_count() == n));
            let accepted = start.elapsed();
            let rss = std::fs::read_to_string("/proc/self/status").unwrap();
            let rss = rss
                .lines()
                .find(|l| l.starts_with("VmRSS"))
                .unwrap()
                .to_owned();
            let t0 = Instant::now();
            let rtt = run(
                &lp,
                on_thread(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(SAFETY)).unwrap();
                    let t = Instant::now();
                    c.write_all(b"still here").unwrap();
                    let mut b = [0; 10];
                    c.read_exact(&mut b).unwrap();
                    assert_eq!(&b, b"still here");
                    t.elapsed()
                }),
            );
            println!(
                "idle={n} accepted_in={accepted:?} new_client_echo_rtt={rtt:?} connect_and_echo={:?} {rss}",
                t0.elapsed()
            );
            drop(idle);
            server.close();
        },
    );
    assert!(status.success(), "child failed: {status:?}");
}
