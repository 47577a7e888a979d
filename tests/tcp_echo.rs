//! Echo over real loopback TCP: large transfers in odd-sized chunks with
//! nothing lost or reordered, through `Protocol` and `BufferedProtocol`,
//! and many concurrent clients.

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;

use sloop::{Buffered, BufferedProtocol, Protocol, Transport};
use support::*;

/// Sends `data` in odd-sized chunks from one thread while another reads
/// the echo; returns what came back (until EOF).
fn blocking_echo_client(addr: std::net::SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let s = TcpStream::connect(addr).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let sizes = [1usize, 7, 1013, 65537, 3, 250_001, 4099];
        let mut off = 0;
        let mut i = 0;
        while off < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - off);
            w.write_all(&data[off..off + n]).unwrap();
            off += n;
            i += 1;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

#[test]
fn echo_10mb_protocol() {
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    let data = pattern(10 * 1024 * 1024 + 13);
    let expect = data.clone();
    let got = run(&lp, on_thread(move || blocking_echo_client(addr, data)));
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "bytes lost or reordered");
    server.close();
    run(&lp, server.wait_closed());
}

struct BufEcho {
    t: Option<Transport>,
    buf: Vec<u8>,
    gets: Rc<Cell<usize>>,
}

impl BufferedProtocol for BufEcho {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
    }
    fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
        self.gets.set(self.gets.get() + 1);
        // An odd size, so reads split at odd places.
        self.buf.resize(7919, 0);
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.t.as_ref().unwrap().write(&self.buf[..n]).unwrap();
    }
    fn pause_writing(&mut self) {
        self.t.as_ref().unwrap().pause_reading();
    }
    fn resume_writing(&mut self) {
        self.t.as_ref().unwrap().resume_reading();
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.t = None;
    }
}

#[test]
fn echo_10mb_buffered_protocol() {
    let lp = new_loop();
    let gets = Rc::new(Cell::new(0));
    let g = gets.clone();
    let server = run(
        &lp,
        lp.create_server(
            move || {
                Buffered(BufEcho {
                    t: None,
                    buf: Vec::new(),
                    gets: g.clone(),
                })
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let data = pattern(10 * 1024 * 1024 + 1);
    let expect = data.clone();
    let got = run(&lp, on_thread(move || blocking_echo_client(addr, data)));
    assert!(got == expect, "bytes lost or reordered");
    assert!(
        gets.get() >= expect.len() / 7919,
        "read straight into the protocol's buffer"
    );
    server.close();
}

/// A client that sends one message, checks the echo, and closes.
struct Client {
    msg: Vec<u8>,
    got: Vec<u8>,
    t: Option<Transport>,
    done: Rc<Cell<usize>>,
    ok: Rc<Cell<usize>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: &Transport) {
        t.write(&self.msg).unwrap();
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.msg.len() {
            self.t.as_ref().unwrap().close();
        }
    }
    fn connection_lost(&mut self, exc: Option<std::io::Error>) {
        assert!(exc.is_none());
        if self.got == self.msg {
            self.ok.set(self.ok.get() + 1);
        }
        self.done.set(self.done.get() + 1);
        self.t = None;
    }
}

#[test]
fn thousand_concurrent_clients() {
    let lp = new_loop();
    let (server, addr) = echo_server_with_backlog(&lp, 1024);
    let done = Rc::new(Cell::new(0));
    let ok = Rc::new(Cell::new(0));
    let transports = Rc::new(RefCell::new(Vec::new()));
    let n = 1000;
    for i in 0..n {
        let (d, o, h, ts) = (done.clone(), ok.clone(), lp.handle(), transports.clone());
        lp.spawn_local(async move {
            let t = h
                .create_connection(
                    move || Client {
                        msg: format!("hello from client {i}").into_bytes(),
                        got: Vec::new(),
                        t: None,
                        done: d,
                        ok: o,
                    },
                    addr,
                )
                .await
                .unwrap();
            ts.borrow_mut().push(t);
        })
        .detach();
    }
    // R22: a 10 ms ticker keeps running while the burst is accepted (at
    // most `backlog` accepts per wakeup).
    let worst = Rc::new(Cell::new(std::time::Duration::ZERO));
    let ticks = Rc::new(Cell::new(0u32));
    let (w, k, d) = (worst.clone(), ticks.clone(), done.clone());
    let began = std::time::Instant::now();
    run(&lp, async move {
        while d.get() < n {
            let t0 = std::time::Instant::now();
            sloop::sleep(std::time::Duration::from_millis(10)).await;
            let late = t0
                .elapsed()
                .saturating_sub(std::time::Duration::from_millis(10));
            w.set(w.get().max(late));
            k.set(k.get() + 1);
        }
    });
    let took = began.elapsed();
    assert_eq!(ok.get(), n, "every client got its own message back");
    assert!(
        ticks.get() <= 1 || worst.get() < took / 2,
        "the loop stayed responsive: worst lateness {:?} of {:?}",
        worst.get(),
        took
    );
    let s = server.clone();
    run(&lp, until(move || s.connection_count() == 0));
    server.close();
    run(&lp, server.wait_closed());
}
