//! Flow-control invariants under random operations (reliability R18, a
//! seeded random walk rather than proptest): pause only above high, resume
//! only at or below low, strict alternation, nothing after
//! connection_lost, which comes exactly once.

mod support;

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::net::TcpListener;
use std::rc::Rc;

use sloop::{Protocol, Transport};
use support::*;

#[derive(Default)]
struct State {
    paused: Cell<bool>,
    lost: Cell<u32>,
    violations: RefCell<Vec<String>>,
    t: RefCell<Option<Transport>>,
}

struct Checker(Rc<State>);

impl Checker {
    fn check(&self, what: &str, ok: bool) {
        if !ok {
            self.0.violations.borrow_mut().push(what.to_owned());
        }
    }
}

impl Protocol for Checker {
    fn connection_made(&mut self, t: &Transport) {
        *self.0.t.borrow_mut() = Some(t.clone());
    }
    fn pause_writing(&mut self) {
        let t = self.0.t.borrow().clone().unwrap();
        let (_, high) = t.write_buffer_limits();
        self.check("pause after lost", self.0.lost.get() == 0);
        self.check("pause twice", !self.0.paused.get());
        self.check("pause at or below high", t.write_buffer_size() > high);
        self.0.paused.set(true);
    }
    fn resume_writing(&mut self) {
        let t = self.0.t.borrow().clone().unwrap();
        let (low, _) = t.write_buffer_limits();
        self.check("resume after lost", self.0.lost.get() == 0);
        self.check("resume without pause", self.0.paused.get());
        self.check("resume above low", t.write_buffer_size() <= low);
        self.0.paused.set(false);
    }
    fn data_received(&mut self, _: &[u8]) {
        self.check("data after lost", self.0.lost.get() == 0);
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.0.lost.set(self.0.lost.get() + 1);
        self.0.t.borrow_mut().take();
    }
}

#[test]
fn flow_control_invariants_random_walk() {
    let lp = new_loop();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let block = pattern(70_000);
    for case in 0..60 {
        let st = Rc::new(State::default());
        let s = st.clone();
        let t = run(
            &lp,
            lp.create_connection(move || Checker(s), ("127.0.0.1", port)),
        )
        .unwrap();
        t.with_socket(|s| s.set_send_buffer_size(4096).unwrap());
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..150 {
            match rnd(10) {
                0..=3 => {
                    let n = rnd(block.len() as u64) as usize;
                    let _ = t.write(&block[..n]);
                }
                4 => {
                    let n = rnd(block.len() as u64) as usize;
                    let (a, b) = block[..n].split_at(n / 2);
                    let _ = t.writelines(&[a, b"", b]);
                }
                5 => {
                    let high = rnd(100_000) as usize;
                    let low = rnd(100_000) as usize;
                    let r = t.set_write_buffer_limits(Some(high), Some(low));
                    assert_eq!(r.is_ok(), high >= low);
                }
                6 | 7 => {
                    let want = rnd(buf.len() as u64) as usize + 1;
                    let _ = peer.read(&mut buf[..want]);
                }
                _ => {
                    lp.stop();
                    lp.run_forever().unwrap();
                }
            }
        }
        if case % 2 == 0 {
            t.close();
        } else {
            t.abort();
        }
        drop(peer);
        let s = st.clone();
        run(&lp, until(move || s.lost.get() > 0));
        run(&lp, sloop::sleep(std::time::Duration::from_millis(2)));
        assert_eq!(st.lost.get(), 1, "case {case}: connection_lost once");
        assert!(
            st.violations.borrow().is_empty(),
            "case {case}: {:?}",
            st.violations.borrow()
        );
    }
}
