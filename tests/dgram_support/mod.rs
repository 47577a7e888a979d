//! Helpers for the datagram tests: a protocol built from closures that
//! records every call, and a bounded `run_forever`.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use std::future::IntoFuture;

use sloop::{DatagramAddr, DatagramProtocol, DatagramTransport, LoopHandle};

/// One protocol call.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev<A> {
    Made,
    Data(Vec<u8>, A),
    Error(Option<i32>, io::ErrorKind),
    Lost(Option<String>),
    Pause,
    Resume,
}

pub type Log<A> = Rc<RefCell<Vec<Ev<A>>>>;

type DataHook<A> = Box<dyn FnMut(&DatagramTransport<A>, &[u8], &A)>;
type TransportHook<A> = Box<dyn FnMut(&DatagramTransport<A>)>;

/// A protocol that records its calls in `log` and runs the hooks.
pub struct Hooks<A: DatagramAddr> {
    pub log: Log<A>,
    pub on_made: TransportHook<A>,
    pub on_data: DataHook<A>,
    pub on_error: TransportHook<A>,
    pub on_lost: Box<dyn FnMut()>,
    pub on_pause: TransportHook<A>,
    pub on_resume: TransportHook<A>,
    transport: Option<DatagramTransport<A>>,
}

impl<A: DatagramAddr> Hooks<A> {
    pub fn new(log: &Log<A>) -> Self {
        Hooks {
            log: log.clone(),
            on_made: Box::new(|_| {}),
            on_data: Box::new(|_, _, _| {}),
            on_error: Box::new(|_| {}),
            on_lost: Box::new(|| {}),
            on_pause: Box::new(|_| {}),
            on_resume: Box::new(|_| {}),
            transport: None,
        }
    }

    pub fn made(mut self, f: impl FnMut(&DatagramTransport<A>) + 'static) -> Self {
        self.on_made = Box::new(f);
        self
    }

    pub fn data(mut self, f: impl FnMut(&DatagramTransport<A>, &[u8], &A) + 'static) -> Self {
        self.on_data = Box::new(f);
        self
    }

    pub fn error(mut self, f: impl FnMut(&DatagramTransport<A>) + 'static) -> Self {
        self.on_error = Box::new(f);
        self
    }

    pub fn lost(mut self, f: impl FnMut() + 'static) -> Self {
        self.on_lost = Box::new(f);
        self
    }

    pub fn pause(mut self, f: impl FnMut(&DatagramTransport<A>) + 'static) -> Self {
        self.on_pause = Box::new(f);
        self
    }

    pub fn resume(mut self, f: impl FnMut(&DatagramTransport<A>) + 'static) -> Self {
        self.on_resume = Box::new(f);
        self
    }
}

impl<A: DatagramAddr> DatagramProtocol<A> for Hooks<A> {
    fn connection_made(&mut self, transport: &DatagramTransport<A>) {
        self.log.borrow_mut().push(Ev::Made);
        self.transport = Some(transport.clone());
        (self.on_made)(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: A) {
        self.log
            .borrow_mut()
            .push(Ev::Data(data.to_vec(), addr.clone()));
        let t = self.transport.clone().expect("connection_made came first");
        (self.on_data)(&t, data, &addr);
    }

    fn error_received(&mut self, exc: io::Error) {
        self.log
            .borrow_mut()
            .push(Ev::Error(exc.raw_os_error(), exc.kind()));
        let t = self.transport.clone().expect("connection_made came first");
        (self.on_error)(&t);
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.log
            .borrow_mut()
            .push(Ev::Lost(exc.map(|e| e.to_string())));
        self.transport = None;
        (self.on_lost)();
    }

    fn pause_writing(&mut self) {
        self.log.borrow_mut().push(Ev::Pause);
        let t = self.transport.clone().expect("connection_made came first");
        (self.on_pause)(&t);
    }

    fn resume_writing(&mut self) {
        self.log.borrow_mut().push(Ev::Resume);
        let t = self.transport.clone().expect("connection_made came first");
        (self.on_resume)(&t);
    }
}

pub fn log<A>() -> Log<A> {
    Rc::new(RefCell::new(Vec::new()))
}

/// Runs the loop until something calls `stop`; panics if that takes longer
/// than `secs` seconds.
pub fn run_for(lp: &LoopHandle, secs: u64) {
    let timed_out = Rc::new(Cell::new(false));
    let flag = timed_out.clone();
    let h = lp.clone();
    let timer = lp
        .call_later(Duration::from_secs(secs), move || {
            flag.set(true);
            h.stop();
        })
        .unwrap();
    lp.run_forever().unwrap();
    timer.cancel();
    assert!(!timed_out.get(), "the loop did not stop within {secs} s");
}

/// Counts the events of one kind.
pub fn count<A>(log: &Log<A>, f: impl Fn(&Ev<A>) -> bool) -> usize {
    log.borrow().iter().filter(|e| f(e)).count()
}

/// Awaits an endpoint builder (or any future) on `lp`, as `.await` does
/// in a task.
pub fn create<B: IntoFuture>(lp: &LoopHandle, builder: B) -> B::Output {
    lp.run_until_complete(builder).expect("loop error")
}
