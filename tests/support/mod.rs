//! Helpers shared by the stream, server and interop tests: run a future on
//! a loop with a safety-net timeout, a recording protocol, peers on
//! threads, child processes and Python peers.

#![allow(dead_code)]

use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::io;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use sloop::{EventLoop, LoopHandle, Protocol, Transport};

pub mod drop_points;
pub mod logs;

/// The safety net for every test run: generous, never the thing waited on.
pub const SAFETY: Duration = Duration::from_secs(20);

/// Runs `fut` (a future or a builder) to completion on `lp`, failing the
/// test if it takes longer than [`SAFETY`].
pub fn run<F: IntoFuture>(lp: &EventLoop, fut: F) -> F::Output {
    lp.run_until_complete(sloop::timeout(SAFETY, fut))
        .expect("loop error")
        .expect("test timed out")
}

/// A loop that resumes panics from protocols (so a failed assertion inside
/// a callback fails the test).
pub fn new_loop() -> EventLoop {
    EventLoop::builder().propagate_panics(true).build().unwrap()
}

/// A loop that reports panics to the exception handler (for tests that
/// panic on purpose).
pub fn lenient_loop() -> EventLoop {
    EventLoop::new().unwrap()
}

/// What a [`Recorder`] saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Made,
    Data(usize),
    Eof,
    Lost(Option<io::ErrorKind>),
    Pause,
    Resume,
}

/// Shared record of a connection's events and bytes.
#[derive(Default)]
pub struct Record {
    pub events: Vec<Ev>,
    pub data: Vec<u8>,
    pub transport: Option<Transport>,
}

impl Record {
    pub fn lost(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Ev::Lost(_)))
    }
    pub fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

pub type Rec = Rc<RefCell<Record>>;

/// A protocol that records everything; `keep_open` is what `eof_received`
/// returns.
pub struct Recorder {
    pub rec: Rec,
    pub keep_open: bool,
}

impl Recorder {
    pub fn new() -> (Recorder, Rec) {
        let rec = Rec::default();
        (
            Recorder {
                rec: rec.clone(),
                keep_open: false,
            },
            rec,
        )
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, t: &Transport) {
        let mut r = self.rec.borrow_mut();
        assert!(r.events.is_empty(), "connection_made first: {:?}", r.events);
        r.events.push(Ev::Made);
        r.transport = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut r = self.rec.borrow_mut();
        assert_eq!(r.events.first(), Some(&Ev::Made));
        assert!(!r.lost() && !r.events.contains(&Ev::Eof));
        r.events.push(Ev::Data(data.len()));
        r.data.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        let mut r = self.rec.borrow_mut();
        assert!(!r.lost());
        r.events.push(Ev::Eof);
        self.keep_open
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let mut r = self.rec.borrow_mut();
        assert!(!r.lost(), "connection_lost twice");
        r.events.push(Ev::Lost(exc.map(|e| e.kind())));
        r.transport = None;
    }
    fn pause_writing(&mut self) {
        self.rec.borrow_mut().events.push(Ev::Pause);
    }
    fn resume_writing(&mut self) {
        self.rec.borrow_mut().events.push(Ev::Resume);
    }
}

/// Waits (on the loop) until `cond` holds, checking every millisecond.
/// For states that no future reports (a peer thread's progress).
pub async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        sloop::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `f` on a thread and returns a future of its result (woken from
/// that thread, so the loop sleeps meanwhile).
pub fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = T> {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    async move { rx.await.expect("peer thread panicked") }
}

/// A deterministic byte pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// If this process is the child for `name`, runs `child` and exits;
/// otherwise re-runs the current test binary as that child (with `env`)
/// and returns its exit status.
pub fn in_child(
    name: &str,
    env: &[(&str, &str)],
    child: impl FnOnce(),
) -> std::process::ExitStatus {
    if std::env::var("SLOOP_TEST_CHILD").as_deref() == Ok(name) {
        child();
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SLOOP_TEST_CHILD", name)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.status().unwrap()
}

/// Whether `python3` is available (interop tests skip without it).
pub fn have_python() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("import asyncio")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Echo protocol used by several tests: pauses reading while writing is
/// paused, closes on EOF after flushing.
#[derive(Default)]
pub struct Echo {
    pub t: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: &Transport) {
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        // Refused only once the peer is gone; connection_lost follows.
        let _ = self.t.as_ref().unwrap().write(data);
    }
    fn pause_writing(&mut self) {
        self.t.as_ref().unwrap().pause_reading();
    }
    fn resume_writing(&mut self) {
        self.t.as_ref().unwrap().resume_reading();
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.t = None;
    }
}

/// Starts a TCP echo server on 127.0.0.1:0; returns it and its address.
pub fn echo_server(lp: &EventLoop) -> (sloop::Server, std::net::SocketAddr) {
    echo_server_with_backlog(lp, sloop::server::DEFAULT_BACKLOG)
}

/// [`echo_server`] with a `listen` backlog of `backlog` (asyncio's default
/// is 100), for bursts of connections.
pub fn echo_server_with_backlog(
    lp: &EventLoop,
    backlog: u32,
) -> (sloop::Server, std::net::SocketAddr) {
    let server = run(
        lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .backlog(backlog),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

pub fn handle(lp: &EventLoop) -> LoopHandle {
    lp.handle()
}

/// A client transport running `proto`, connected to a plain listener, and
/// the accepted peer socket.
pub fn connected(
    lp: &sloop::EventLoop,
    proto: impl sloop::Protocol,
) -> (sloop::Transport, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = run(lp, lp.create_connection(move || proto, ("127.0.0.1", port))).unwrap();
    let (peer, _) = listener.accept().unwrap();
    (t, peer)
}

/// Collects the message of every call to `lp`'s exception handler, in
/// order (the handler is replaced).
pub fn exception_messages(lp: &EventLoop) -> Rc<RefCell<Vec<String>>> {
    let msgs = Rc::new(RefCell::new(Vec::new()));
    let m = msgs.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, c: &sloop::ExceptionContext| {
        m.borrow_mut().push(c.message.clone())
    }));
    msgs
}

/// Polls `fut` until it has returned `Pending` `polls` times (each poll
/// after the previous one's waker was woken), then drops it, all in one
/// poll of the returned future, so no loop iteration runs between the last
/// poll and the drop. Panics if `fut` completes first.
pub async fn drop_after_polls<F: IntoFuture>(fut: F, polls: usize) {
    drop_after(fut.into_future(), polls, false).await
}

/// [`drop_after_polls`], except that after the last poll it waits for
/// `fut`'s next wake and drops it then, unpolled (its result is ready but
/// never taken).
pub async fn drop_at_wake_after_polls<F: IntoFuture>(fut: F, polls: usize) {
    drop_after(fut.into_future(), polls, true).await
}

async fn drop_after<F: Future>(fut: F, polls: usize, at_wake: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};

    struct Flag {
        woken: AtomicBool,
        task: Mutex<Option<Waker>>,
    }
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::SeqCst);
            if let Some(w) = self.task.lock().unwrap().as_ref() {
                w.wake_by_ref();
            }
        }
    }

    let mut fut = Box::pin(fut);
    let flag = Arc::new(Flag {
        woken: AtomicBool::new(true),
        task: Mutex::new(None),
    });
    let waker = Waker::from(flag.clone());
    let mut done = 0;
    futures::future::poll_fn(|cx| {
        *flag.task.lock().unwrap() = Some(cx.waker().clone());
        if flag.woken.swap(false, Ordering::SeqCst) {
            if at_wake && done == polls {
                return Poll::Ready(());
            }
            if fut
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                panic!("the future completed before poll {} of {polls}", done + 1);
            }
            done += 1;
            if done == polls && !at_wake {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
    drop(fut);
}

/// Kills and reaps a child process when dropped, however the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A peer socket the tests read from: a TCP or Unix stream.
pub trait PeerSocket: io::Read + Send + 'static {
    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl PeerSocket for std::net::TcpStream {
    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

impl PeerSocket for std::os::unix::net::UnixStream {
    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

/// Reads from `peer` on a thread until EOF and asserts nothing came; the
/// read timeout is only a safety net, so a leaked connection fails the
/// test instead of hanging it.
pub fn peer_sees_eof(lp: &EventLoop, mut peer: impl PeerSocket) {
    peer.set_timeout(Some(SAFETY / 4)).unwrap();
    let got = run(
        lp,
        on_thread(move || {
            let mut v = Vec::new();
            peer.read_to_end(&mut v).map(|_| v.len())
        }),
    );
    assert_eq!(got.expect("the peer sees EOF"), 0);
}
