//! `Transport::with_protocol` (asyncio's `get_protocol`): the transport
//! lends its protocol by type, never while the protocol runs, never after
//! `connection_lost`.

mod support;

use std::cell::Cell;
use std::rc::Rc;

use sloop::{Buffered, BufferedProtocol, Protocol, Transport};
use support::*;

#[derive(Default)]
struct Counter {
    bytes: usize,
    transport: Option<Transport>,
    /// What `with_protocol` gave from inside `data_received`.
    nested: Rc<Cell<Option<bool>>>,
}

impl Protocol for Counter {
    fn connection_made(&mut self, t: &Transport) {
        self.transport = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.bytes += data.len();
        let t = self.transport.as_ref().unwrap();
        self.nested
            .set(Some(t.with_protocol(|_: &mut Counter| ()).is_some()));
    }
}

#[test]
fn lends_the_protocol_by_type_but_not_while_it_runs_nor_after_the_loss() {
    let lp = new_loop();
    let nested = Rc::new(Cell::new(None));
    let n = nested.clone();
    let (t, mut peer) = connected(
        &lp,
        Counter {
            nested: n,
            ..Counter::default()
        },
    );
    std::io::Write::write_all(&mut peer, b"12345").unwrap();
    let probe = t.clone();
    run(&lp, async move {
        while probe.with_protocol(|c: &mut Counter| c.bytes) != Some(5) {
            sloop::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
    assert_eq!(
        nested.get(),
        Some(false),
        "inside its own callback the protocol is not lent"
    );
    assert_eq!(t.with_protocol(|_: &mut String| ()), None, "another type");
    t.abort();
    let probe = t.clone();
    run(&lp, until(move || probe.as_raw_fd().is_none()));
    assert_eq!(
        t.with_protocol(|c: &mut Counter| c.bytes),
        None,
        "gone after connection_lost"
    );
}

struct Bulk(Vec<u8>);

impl BufferedProtocol for Bulk {
    fn get_buffer(&mut self, _: usize) -> &mut [u8] {
        &mut self.0
    }
    fn buffer_updated(&mut self, _: usize) {}
}

#[test]
fn a_buffered_protocol_is_lent_by_its_own_type() {
    let lp = new_loop();
    let (t, _peer) = connected(&lp, Recorder::new().0);
    t.set_protocol(Buffered(Bulk(vec![0; 16])));
    assert_eq!(t.with_protocol(|b: &mut Bulk| b.0.len()), Some(16));
    assert_eq!(t.with_protocol(|_: &mut Buffered<Bulk>| ()), None);
    t.close();
}

#[test]
fn a_panic_in_the_closure_reaches_the_caller_and_the_protocol_stays() {
    let lp = new_loop();
    let (t, _peer) = connected(&lp, Counter::default());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.with_protocol(|_: &mut Counter| panic!("in the closure"))
    }));
    assert!(r.is_err(), "the panic reaches the caller");
    assert_eq!(
        t.with_protocol(|c: &mut Counter| c.bytes),
        Some(0),
        "the protocol is back in the transport"
    );
    assert!(!t.is_closing(), "not a fatal error of the transport");
    t.close();
}

#[test]
fn pause_writing_caused_inside_the_closure_arrives_after_it() {
    let lp = new_loop();
    let (proto, rec) = Recorder::new();
    let (t, _peer) = connected(&lp, proto);
    t.set_write_buffer_limits(Some(0), None).unwrap();
    let during = t.with_protocol(|r: &mut Recorder| {
        // The peer reads nothing: with a high-water mark of 0, any write
        // that buffers crosses it.
        let big = vec![7u8; 8 * 1024 * 1024];
        r.rec
            .borrow()
            .transport
            .as_ref()
            .unwrap()
            .write(&big)
            .unwrap();
        r.rec.borrow().events.contains(&Ev::Pause)
    });
    assert_eq!(during, Some(false), "not while the closure runs");
    assert!(rec.borrow().events.contains(&Ev::Pause), "right after it");
    t.abort();
}
