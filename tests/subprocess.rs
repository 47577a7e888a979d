//! Child processes: the protocol form (`subprocess_exec`/`_shell`) and
//! the async form (`create_subprocess_exec`), against real programs
//! (`sh`, `cat`, `sleep`, `true`).
//!
//! The tests of this file run one at a time (`SERIAL`): some count this
//! process's fds and children, which the others would disturb.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use sloop::subprocess::{SubprocessProtocol, SubprocessTransport};
use sloop::{Error, EventLoop};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Data(i32, Vec<u8>),
    PipeLost(i32),
    Exited,
    Lost,
}

#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<Ev>>>);

impl Log {
    fn events(&self) -> Vec<Ev> {
        self.0.borrow().clone()
    }
    fn has(&self, ev: &Ev) -> bool {
        self.0.borrow().contains(ev)
    }
    fn count(&self, ev: &Ev) -> usize {
        self.0.borrow().iter().filter(|e| *e == ev).count()
    }
}

struct Recorder(Log);

impl SubprocessProtocol for Recorder {
    fn connection_made(&mut self, _: &SubprocessTransport) {
        self.0 .0.borrow_mut().push(Ev::Made);
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        self.0 .0.borrow_mut().push(Ev::Data(fd, data.to_vec()));
    }
    fn pipe_connection_lost(&mut self, fd: i32, _: Option<std::io::Error>) {
        self.0 .0.borrow_mut().push(Ev::PipeLost(fd));
    }
    fn process_exited(&mut self) {
        self.0 .0.borrow_mut().push(Ev::Exited);
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.0 .0.borrow_mut().push(Ev::Lost);
    }
}

fn run_until(lp: &EventLoop, done: impl Fn() -> bool + 'static) {
    lp.run_until_complete(async move {
        while !done() {
            sloop::sleep(Duration::from_millis(1)).await;
        }
    })
    .unwrap();
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether this process has any child left, zombie or running (no other
/// test runs meanwhile: `SERIAL`). Reaps nothing that was not a zombie
/// already left behind.
fn has_children() -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on any child; it only reaps a zombie,
    // which would be the leak this asserts against.
    let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if rc == -1 {
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
        return false;
    }
    true // 0: a child still running; > 0: a zombie (now reaped)
}

#[test]
fn exit_3_gives_returncode_and_process_exited_once() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp
        .subprocess_shell(move || Recorder(l), "echo out; echo err >&2; exit 3")
        .unwrap();
    assert!(t.pid() > 0);
    assert_eq!(t.returncode(), None);
    assert!(t.get_pipe_transport(0).is_some_and(|p| !p.is_reader()));
    assert!(t.get_pipe_transport(1).is_some_and(|p| p.is_reader()));
    assert!(t.get_pipe_transport(2).is_some());
    assert!(t.get_pipe_transport(3).is_none() && t.get_pipe_transport(-1).is_none());
    let l = log.clone();
    run_until(&lp, move || l.has(&Ev::Lost));
    assert_eq!(t.returncode(), Some(3));
    let events = log.events();
    assert_eq!(events[0], Ev::Made);
    assert_eq!(events.last(), Some(&Ev::Lost));
    assert_eq!(log.count(&Ev::Exited), 1);
    assert_eq!(log.count(&Ev::Lost), 1);
    assert!(log.has(&Ev::Data(1, b"out\n".to_vec())));
    assert!(log.has(&Ev::Data(2, b"err\n".to_vec())));
    for fd in 0..3 {
        assert_eq!(log.count(&Ev::PipeLost(fd)), 1, "{events:?}");
    }
    assert!(!has_children());
}

#[test]
fn sigterm_kills_the_child() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp
        .subprocess_exec(move || Recorder(l), "sleep", &["100"])
        .unwrap();
    lp.run_until_complete(sloop::sleep(Duration::ZERO)).unwrap();
    t.terminate().unwrap();
    let status = lp.run_until_complete(t.wait()).unwrap().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert_eq!(t.returncode(), Some(-libc::SIGTERM));
    // Reaped: signals are refused now, and invalid ones always.
    let e = t.send_signal(libc::SIGTERM).unwrap_err();
    assert!(matches!(e, Error::Io(ref io) if io.raw_os_error() == Some(libc::ESRCH)));
    assert!(matches!(t.send_signal(0), Err(Error::InvalidSignal(0))));
    t.close();
    let l = log.clone();
    run_until(&lp, move || l.has(&Ev::Lost));
    assert!(!has_children());
}

#[test]
fn child_closing_stdout_before_exiting() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp
        .subprocess_shell(move || Recorder(l), "exec 1>&-; read x; exit 5")
        .unwrap();
    let l = log.clone();
    run_until(&lp, move || l.has(&Ev::PipeLost(1)));
    // Stdout is gone, the child still waits for its line.
    assert_eq!(t.returncode(), None);
    assert!(!log.has(&Ev::Exited));
    t.get_pipe_transport(0).unwrap().write(b"go\n").unwrap();
    let l = log.clone();
    run_until(&lp, move || l.has(&Ev::Lost));
    assert_eq!(t.returncode(), Some(5));
    let events = log.events();
    let pos = |e: &Ev| events.iter().position(|x| x == e).unwrap();
    assert!(pos(&Ev::PipeLost(1)) < pos(&Ev::Exited));
}

#[test]
fn cat_echoes_ten_megabytes_with_bounded_memory() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let mut child = lp.create_subprocess_exec("cat", &[]).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    const TOTAL: usize = 10 * 1024 * 1024;
    let h = lp.handle();
    let (got, max_buffered) = lp
        .run_until_complete(async move {
            let writer = h.spawn_local(async move {
                let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
                let mut max_buffered = 0;
                for _ in 0..TOTAL / chunk.len() {
                    stdin.write_all(&chunk).await.unwrap();
                    let t = stdin.transport().unwrap();
                    max_buffered = max_buffered.max(t.write_buffer_size());
                }
                stdin.close().await.unwrap();
                max_buffered
            });
            let mut got = 0usize;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = stdout.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                for (k, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, ((got + k) % (64 * 1024) % 253) as u8);
                }
                got += n;
            }
            (got, writer.await.unwrap())
        })
        .unwrap();
    assert_eq!(got, TOTAL);
    // The writer waited at the high-water mark instead of buffering 10 MB.
    assert!(max_buffered <= 128 * 1024, "{max_buffered} bytes buffered");
    let status = lp.run_until_complete(child.wait()).unwrap().unwrap();
    assert!(status.success());
}

#[test]
fn two_hundred_children_leave_no_zombie_and_no_fd() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    // Warm up what lazily opens fds (the loop's own, the blocking pool).
    let child = lp.create_subprocess_exec("true", &[]).unwrap();
    lp.run_until_complete(child.wait()).unwrap().unwrap();
    drop(child);
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    let before = fd_count();
    for _ in 0..4 {
        let batch: Vec<_> = (0..50)
            .map(|_| lp.create_subprocess_exec("true", &[]).unwrap())
            .collect();
        let waits: Vec<_> = batch.iter().map(|c| c.wait()).collect();
        for status in lp
            .run_until_complete(futures::future::join_all(waits))
            .unwrap()
        {
            assert!(status.unwrap().success());
        }
        drop(batch); // the streams close their pipes
    }
    // Protocol children too, some closed while still running.
    for i in 0..20 {
        let log = Log::default();
        let l = log.clone();
        let t = if i % 2 == 0 {
            lp.subprocess_exec(move || Recorder(l), "true", &[])
                .unwrap()
        } else {
            lp.subprocess_exec(move || Recorder(l), "sleep", &["100"])
                .unwrap()
        };
        if i % 2 == 1 {
            t.close();
        }
        let l = log.clone();
        run_until(&lp, move || l.has(&Ev::Lost));
    }
    // The pipes' closes run in the next iterations.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fd_count() > before && Instant::now() < deadline {
        lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
            .unwrap();
    }
    assert_eq!(fd_count(), before);
    assert!(!has_children());
}

#[test]
fn dropping_the_loop_reaps_running_children() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let child = lp.create_subprocess_exec("sleep", &["100"]).unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp
        .subprocess_exec(move || Recorder(l), "sleep", &["100"])
        .unwrap();
    lp.run_until_complete(sloop::sleep(Duration::ZERO)).unwrap();
    let fds = fd_count();
    drop(lp);
    assert!(!has_children());
    assert!(fd_count() < fds);
    // The handles outlive the loop harmlessly.
    assert!(child.returncode().is_some());
    assert!(t.returncode().is_some());
    assert!(futures::executor::block_on(child.wait()).is_ok());
}

#[test]
fn spawn_errors_are_typed() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let e = lp
        .create_subprocess_exec("/no/such/program", &[])
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let e = lp
        .subprocess_exec(|| Recorder(Log::default()), "/no/such/program", &[])
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    lp.close().unwrap();
    assert!(matches!(
        lp.create_subprocess_shell("true"),
        Err(Error::Closed)
    ));
    assert!(!has_children());
}

/// D15: a child, its streams and its wait future dropped at each point:
/// at once, while the wait pends, after the exit; a protocol transport
/// whose every handle is dropped at once still gets its last calls.
#[test]
fn dropped_at_every_point() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    // At once: the child runs on and is reaped.
    drop(lp.create_subprocess_shell("exit 0").unwrap());
    // Streams dropped at once; the wait future dropped while pending.
    let mut child = lp.create_subprocess_exec("cat", &[]).unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let waited = lp
        .run_until_complete(sloop::timeout(Duration::from_millis(5), child.wait()))
        .unwrap();
    assert!(waited.is_err()); // cat waits for its stdin: timed out, dropped
    drop(child.stdin.take()); // EOF: cat exits
    let status = lp.run_until_complete(child.wait()).unwrap().unwrap();
    assert!(status.success());
    drop(child); // after the exit
                 // Every handle of a protocol transport dropped at once.
    let log = Log::default();
    let l = log.clone();
    drop(
        lp.subprocess_shell(move || Recorder(l), "echo bye")
            .unwrap(),
    );
    let l = log.clone();
    run_until(&lp, move || l.has(&Ev::Lost));
    assert!(log.has(&Ev::Data(1, b"bye\n".to_vec())));
    lp.run_until_complete(sloop::sleep(Duration::from_millis(5)))
        .unwrap();
    assert!(!has_children());
}

#[test]
fn line_by_line_from_stdout() {
    let _s = serial();
    let lp = EventLoop::new().unwrap();
    let mut child = lp.create_subprocess_shell("printf 'a\\nb\\nc\\n'").unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = lp
        .run_until_complete(async move {
            let mut lines = stdout.lines();
            let mut all = Vec::new();
            while let Some(line) = futures::StreamExt::next(&mut lines).await {
                all.push(line.unwrap());
            }
            all
        })
        .unwrap();
    assert_eq!(lines, ["a", "b", "c"]);
    lp.run_until_complete(child.wait()).unwrap().unwrap();
}

/// The figure for the closing note: spawn + wait of 1,000 `true` children,
/// one after another, with sloop and with tokio's `process::Command`, in
/// the same run. `cargo test --release --test subprocess -- --ignored
/// --nocapture spawn_rate`.
#[test]
#[ignore]
fn spawn_rate() {
    let _s = serial();
    const N: u32 = 1000;
    let lp = EventLoop::new().unwrap();
    let t0 = Instant::now();
    lp.run_until_complete({
        let h = lp.handle();
        async move {
            for _ in 0..N {
                let mut cmd = std::process::Command::new("true");
                cmd.stdin(std::process::Stdio::null());
                let child = h.spawn_child(&mut cmd).unwrap();
                assert!(child.wait().await.unwrap().success());
            }
        }
    })
    .unwrap();
    let sloop_rate = f64::from(N) / t0.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t0 = Instant::now();
    rt.block_on(async {
        for _ in 0..N {
            let status = tokio::process::Command::new("true")
                .stdin(std::process::Stdio::null())
                .status()
                .await
                .unwrap();
            assert!(status.success());
        }
    });
    let tokio_rate = f64::from(N) / t0.elapsed().as_secs_f64();
    println!("spawn+wait of {N} `true` children: sloop {sloop_rate:.0}/s, tokio {tokio_rate:.0}/s");
}
