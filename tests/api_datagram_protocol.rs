//! `DatagramTransport::set_protocol` and `with_protocol` (asyncio's
//! `set_protocol`/`get_protocol`), on real loopback sockets: from outside
//! and from inside callbacks, before `connection_made`, while the loss is
//! pending and after it, and in the middle of a read batch.

mod support;

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use sloop::{DatagramProtocol, DatagramTransport, EventLoop, UnixAddr};
use support::{new_loop, run, until};

type Log = Rc<RefCell<Vec<String>>>;

type Hook = Box<dyn FnOnce(&DatagramTransport)>;

/// Records its calls (and its drop) as `"<tag> <event>"`; runs `hook` once,
/// on its first datagram.
struct Rec {
    tag: &'static str,
    log: Log,
    hook: Option<Hook>,
    t: Option<DatagramTransport>,
    datagrams: usize,
    errors: usize,
}

impl Rec {
    fn new(tag: &'static str, log: &Log) -> Rec {
        Rec {
            tag,
            log: log.clone(),
            hook: None,
            t: None,
            datagrams: 0,
            errors: 0,
        }
    }

    fn on_first_datagram(mut self, hook: impl FnOnce(&DatagramTransport) + 'static) -> Rec {
        self.hook = Some(Box::new(hook));
        self
    }

    fn push(&self, event: &str) {
        self.log.borrow_mut().push(format!("{} {event}", self.tag));
    }
}

impl DatagramProtocol for Rec {
    fn connection_made(&mut self, t: &DatagramTransport) {
        self.push("made");
        self.t = Some(t.clone());
    }
    fn datagram_received(&mut self, data: &[u8], _: SocketAddr) {
        self.datagrams += 1;
        self.push(&format!("data {}", String::from_utf8_lossy(data)));
        if let Some(hook) = self.hook.take() {
            let t = self.t.clone().expect("made first");
            hook(&t);
        }
    }
    fn error_received(&mut self, _: std::io::Error) {
        self.errors += 1;
        self.push("error");
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.push("lost");
        self.t = None;
    }
}

impl Drop for Rec {
    fn drop(&mut self) {
        self.push("dropped");
    }
}

/// Another protocol type, to be told apart from `Rec`.
struct Quiet;

impl DatagramProtocol for Quiet {
    fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
}

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn endpoint(lp: &EventLoop, p: Rec) -> DatagramTransport {
    run(
        lp,
        lp.create_datagram_endpoint(move || p)
            .local_addr("127.0.0.1:0"),
    )
    .unwrap()
}

fn has(log: &Log, line: &str) -> bool {
    log.borrow().iter().any(|l| l == line)
}

/// Waits until `log` holds `line`.
fn wait_for(lp: &EventLoop, log: &Log, line: &str) {
    let (l, line) = (log.clone(), line.to_owned());
    run(lp, until(move || has(&l, &line)));
}

#[test]
fn set_protocol_from_outside_sends_later_calls_to_the_new_protocol() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("old", &log));
    let me = t.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"1", me).unwrap();
    wait_for(&lp, &log, "old data 1");

    t.set_protocol(Rec::new("new", &log));
    assert!(has(&log, "old dropped"), "the old one goes at once");
    peer.send_to(b"2", me).unwrap();
    wait_for(&lp, &log, "new data 2");
    t.close();
    wait_for(&lp, &log, "new dropped");
    assert_eq!(
        *log.borrow(),
        [
            "old made",
            "old data 1",
            "old dropped",
            "new data 2",
            "new lost",
            "new dropped"
        ],
        "no connection_made for the new one; the loss goes to it only"
    );
}

#[test]
fn set_protocol_inside_datagram_received_hands_the_rest_of_the_batch_over() {
    let lp = new_loop();
    let log = log();
    let l = log.clone();
    let first = Rec::new("old", &log).on_first_datagram(move |t| {
        t.set_protocol(Rec::new("new", &l));
    });
    let t = endpoint(&lp, first);
    let me = t.local_addr().unwrap();
    // All three wait in the socket before the first read: one batch.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in [b"1", b"2", b"3"] {
        peer.send_to(d, me).unwrap();
    }
    wait_for(&lp, &log, "new data 3");
    assert_eq!(
        *log.borrow(),
        [
            "old made",
            "old data 1",
            "old dropped",
            "new data 2",
            "new data 3"
        ],
        "the old protocol finished its call, then the new one got the rest"
    );
    t.abort();
    wait_for(&lp, &log, "new dropped");
}

#[test]
fn set_protocol_before_connection_made_gives_it_to_the_new_protocol() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("old", &log));
    t.set_protocol(Rec::new("new", &log));
    wait_for(&lp, &log, "new made");
    assert_eq!(*log.borrow(), ["old dropped", "new made"]);
    t.close();
    wait_for(&lp, &log, "new lost");
}

#[test]
fn set_protocol_while_the_loss_is_pending_or_after_it() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("old", &log));
    wait_for(&lp, &log, "old made");
    t.close(); // connection_lost is scheduled, not run
    t.set_protocol(Rec::new("pending", &log));
    wait_for(&lp, &log, "pending dropped");
    assert_eq!(
        *log.borrow(),
        ["old made", "old dropped", "pending lost", "pending dropped"],
        "set while the loss was pending: it gets the loss"
    );
    // After connection_lost: dropped at once, never called.
    t.set_protocol(Rec::new("late", &log));
    assert_eq!(log.borrow().last().unwrap(), "late dropped");
    assert_eq!(t.with_protocol(|_: &mut Rec| ()), None);
}

#[test]
fn with_protocol_lends_the_protocol_of_the_right_type_when_it_is_idle() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("p", &log));
    // Before connection_made too: it is there.
    assert_eq!(t.with_protocol(|p: &mut Rec| p.tag), Some("p"));
    assert_eq!(t.with_protocol(|_: &mut Quiet| ()), None, "another type");
    let me = t.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"x", me).unwrap();
    wait_for(&lp, &log, "p data x");
    assert_eq!(t.with_protocol(|p: &mut Rec| p.datagrams), Some(1));
    // Changes stick: it is the protocol itself, not a copy.
    t.with_protocol(|p: &mut Rec| p.datagrams = 10).unwrap();
    assert_eq!(t.with_protocol(|p: &mut Rec| p.datagrams), Some(10));

    // From a task: fine, the protocol is idle.
    let t2 = t.clone();
    let got = run(&lp, async move { t2.with_protocol(|p: &mut Rec| p.tag) });
    assert_eq!(got, Some("p"));

    // After set_protocol: the new type only.
    t.set_protocol(Quiet);
    assert_eq!(t.with_protocol(|_: &mut Rec| ()), None);
    assert_eq!(t.with_protocol(|_: &mut Quiet| 5), Some(5));
    t.close();
    let t2 = t.clone();
    run(
        &lp,
        until(move || t2.with_protocol(|_: &mut Quiet| ()).is_none()),
    );
}

#[test]
fn with_protocol_inside_its_own_callback_is_none_inside_anothers_is_some() {
    let lp = new_loop();
    let log = log();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let other = endpoint(&lp, Rec::new("other", &log));
    let (s, o) = (seen.clone(), other.clone());
    let me = Rec::new("me", &log).on_first_datagram(move |t| {
        // Its own protocol is running: not lendable.
        s.borrow_mut().push(t.with_protocol(|p: &mut Rec| p.tag));
        // Another transport's idle protocol: lendable.
        s.borrow_mut().push(o.with_protocol(|p: &mut Rec| p.tag));
    });
    let t = endpoint(&lp, me);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"go", t.local_addr().unwrap()).unwrap();
    wait_for(&lp, &log, "me data go");
    assert_eq!(*seen.borrow(), [None, Some("other")]);
    t.abort();
    other.abort();
    wait_for(&lp, &log, "me dropped");
}

#[test]
fn notifications_caused_inside_with_protocol_arrive_after_it_returns() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("p", &log));
    wait_for(&lp, &log, "p made");
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let errors_inside = t.with_protocol(|p: &mut Rec| {
        // Too big for UDP: EMSGSIZE at once, for error_received.
        t.sendto(&vec![0u8; 70_000], Some(dest)).unwrap();
        p.errors
    });
    assert_eq!(errors_inside, Some(0), "held while the protocol is lent");
    assert_eq!(t.with_protocol(|p: &mut Rec| p.errors), Some(1));
    assert!(has(&log, "p error"));
    t.close();
}

#[test]
fn with_protocol_may_replace_or_close_and_a_panic_in_it_goes_to_the_caller() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("old", &log));
    wait_for(&lp, &log, "old made");

    let r = catch_unwind(AssertUnwindSafe(|| {
        t.with_protocol(|_: &mut Rec| panic!("the caller's bug"))
    }));
    assert!(r.is_err(), "the panic went on up");
    assert_eq!(
        t.with_protocol(|p: &mut Rec| p.tag),
        Some("old"),
        "put back"
    );
    assert!(!t.is_closing(), "not the protocol's fault: no fatal error");

    // Replaced from inside: the lent one is dropped once `f` returns.
    let l = log.clone();
    t.with_protocol(|old: &mut Rec| {
        t.set_protocol(Rec::new("new", &l));
        assert!(!has(&l, "old dropped"), "still lent");
        old.tag
    })
    .unwrap();
    assert!(has(&log, "old dropped"));
    assert_eq!(t.with_protocol(|p: &mut Rec| p.tag), Some("new"));

    // Closed from inside: the loss follows, to the protocol.
    t.with_protocol(|_: &mut Rec| t.abort()).unwrap();
    wait_for(&lp, &log, "new dropped");
    assert!(has(&log, "new lost"));
}

#[test]
fn with_protocol_after_the_loop_closed_is_none() {
    let lp = new_loop();
    let log = log();
    let t = endpoint(&lp, Rec::new("p", &log));
    wait_for(&lp, &log, "p made");
    lp.close().unwrap();
    assert!(has(&log, "p dropped"));
    assert_eq!(t.with_protocol(|_: &mut Rec| ()), None);
    t.set_protocol(Rec::new("late", &log));
    assert_eq!(log.borrow().last().unwrap(), "late dropped");
}

/// The same on a Unix datagram transport (the address type is generic).
#[test]
fn unix_datagram_set_and_with_protocol() {
    struct Count(usize);
    impl DatagramProtocol<UnixAddr> for Count {
        fn datagram_received(&mut self, _: &[u8], _: UnixAddr) {
            self.0 += 1;
        }
    }
    struct Other;
    impl DatagramProtocol<UnixAddr> for Other {
        fn datagram_received(&mut self, _: &[u8], _: UnixAddr) {}
    }
    let lp = new_loop();
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let t = run(&lp, lp.create_unix_datagram_endpoint(|| Count(0)).socket(a)).unwrap();
    b.send(b"1").unwrap();
    let t2 = t.clone();
    run(
        &lp,
        until(move || t2.with_protocol(|c: &mut Count| c.0) == Some(1)),
    );
    t.set_protocol(Other);
    assert_eq!(t.with_protocol(|c: &mut Count| c.0), None);
    assert_eq!(t.with_protocol(|_: &mut Other| "other"), Some("other"));
    t.close();
}
