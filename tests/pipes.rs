//! Pipe transports (asyncio's read and write pipe transports) and the
//! bridge streams over them, on real OS pipes.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use sloop::pipe::{PipeProtocol, PipeTransport};
use sloop::{Error, EventLoop};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Data(Vec<u8>),
    Eof,
    Pause,
    Resume,
    Lost(Option<std::io::ErrorKind>),
}

#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<Ev>>>);

impl Log {
    fn events(&self) -> Vec<Ev> {
        self.0.borrow().clone()
    }
    fn lost(&self) -> bool {
        self.0.borrow().iter().any(|e| matches!(e, Ev::Lost(_)))
    }
    fn data(&self) -> Vec<u8> {
        self.0
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Ev::Data(d) => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

struct Recorder(Log);

impl PipeProtocol for Recorder {
    fn connection_made(&mut self, _: &PipeTransport) {
        self.0 .0.borrow_mut().push(Ev::Made);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0 .0.borrow_mut().push(Ev::Data(data.to_vec()));
    }
    fn eof_received(&mut self) {
        self.0 .0.borrow_mut().push(Ev::Eof);
    }
    fn pause_writing(&mut self) {
        self.0 .0.borrow_mut().push(Ev::Pause);
    }
    fn resume_writing(&mut self) {
        self.0 .0.borrow_mut().push(Ev::Resume);
    }
    fn connection_lost(&mut self, exc: Option<std::io::Error>) {
        self.0 .0.borrow_mut().push(Ev::Lost(exc.map(|e| e.kind())));
    }
}

/// Runs `lp` until `done` holds.
fn run_until(lp: &EventLoop, done: impl Fn() -> bool + 'static) {
    lp.run_until_complete(async move {
        while !done() {
            sloop::sleep(Duration::from_millis(1)).await;
        }
    })
    .unwrap();
}

#[test]
fn read_pipe_gives_data_then_eof_then_lost() {
    let lp = EventLoop::new().unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp.connect_read_pipe(move || Recorder(l), reader).unwrap();
    assert!(t.is_reader() && t.is_reading() && !t.can_write_eof());
    writer.write_all(b"abc").unwrap();
    let l = log.clone();
    run_until(&lp, move || l.data() == b"abc");
    drop(writer);
    let l = log.clone();
    run_until(&lp, move || l.lost());
    assert_eq!(
        log.events(),
        [Ev::Made, Ev::Data(b"abc".to_vec()), Ev::Eof, Ev::Lost(None)]
    );
    assert!(t.is_closing());
    assert!(matches!(t.write(b"x"), Err(Error::ConnectionLost)));
}

#[test]
fn read_pipe_pause_and_resume_reading() {
    let lp = EventLoop::new().unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp.connect_read_pipe(move || Recorder(l), reader).unwrap();
    lp.run_until_complete(sloop::sleep(Duration::ZERO)).unwrap();
    t.pause_reading();
    t.pause_reading();
    assert!(!t.is_reading());
    writer.write_all(b"held").unwrap();
    // A few iterations with data waiting: none is delivered while paused.
    for _ in 0..5 {
        lp.run_until_complete(sloop::sleep(Duration::ZERO)).unwrap();
    }
    assert_eq!(log.data(), b"");
    t.resume_reading();
    let l = log.clone();
    run_until(&lp, move || l.data() == b"held");
    t.close();
    let l = log.clone();
    run_until(&lp, move || l.lost());
}

#[test]
fn write_pipe_flow_control_and_close_after_drain() {
    let lp = EventLoop::new().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let log = Log::default();
    let l = log.clone();
    let t = lp.connect_write_pipe(move || Recorder(l), writer).unwrap();
    assert!(!t.is_reader() && t.can_write_eof());
    lp.run_until_complete(sloop::sleep(Duration::ZERO)).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..16 {
        t.write(&chunk).unwrap();
    }
    // 1 MiB into a 64 KiB pipe: most of it is buffered, above the mark.
    assert!(t.write_buffer_size() > 64 * 1024);
    assert_eq!(log.events(), [Ev::Made, Ev::Pause]);
    t.close();
    assert!(matches!(t.write(b"late"), Err(Error::ConnectionLost)));
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all.len()
    });
    let l = log.clone();
    run_until(&lp, move || l.lost());
    assert_eq!(drain.join().unwrap(), 16 * 64 * 1024);
    assert_eq!(
        log.events(),
        [Ev::Made, Ev::Pause, Ev::Resume, Ev::Lost(None)]
    );
}

#[test]
fn write_pipe_limits() {
    let lp = EventLoop::new().unwrap();
    let (_reader, writer) = std::io::pipe().unwrap();
    let t = lp
        .connect_write_pipe(|| Recorder(Log::default()), writer)
        .unwrap();
    assert_eq!(t.write_buffer_limits(), (64 * 1024, 16 * 1024));
    t.set_write_buffer_limits(Some(100), None).unwrap();
    assert_eq!(t.write_buffer_limits(), (100, 25));
    assert!(matches!(
        t.set_write_buffer_limits(Some(1), Some(2)),
        Err(Error::InvalidWriteLimits { high: 1, low: 2 })
    ));
    t.abort();
}

/// A reader that went away: with nothing buffered the transport notices
/// at once (`BrokenPipe`), and a write after gives `EPIPE` as
/// `connection_lost`, never a SIGPIPE.
#[test]
fn reader_gone_is_broken_pipe_connection_lost() {
    let lp = EventLoop::new().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let log = Log::default();
    let l = log.clone();
    lp.connect_write_pipe(move || Recorder(l), writer).unwrap();
    lp.run_until_complete(sloop::sleep(Duration::ZERO)).unwrap();
    drop(reader);
    let l = log.clone();
    run_until(&lp, move || l.lost());
    assert_eq!(
        log.events(),
        [Ev::Made, Ev::Lost(Some(std::io::ErrorKind::BrokenPipe))]
    );

    // Writing when the reader is already gone.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let log = Log::default();
    let l = log.clone();
    let t = lp.connect_write_pipe(move || Recorder(l), writer).unwrap();
    t.write(b"nobody reads this").unwrap();
    let l = log.clone();
    run_until(&lp, move || l.lost());
    assert!(log
        .events()
        .contains(&Ev::Lost(Some(std::io::ErrorKind::BrokenPipe))));
}

/// The same with SIGPIPE at its default disposition (which kills), in a
/// child process: connect_write_pipe makes it ignored.
#[test]
fn epipe_never_raises_sigpipe() {
    if std::env::var_os("SLOOP_SIGPIPE_CHILD").is_some() {
        // SAFETY: this child process sets SIGPIPE back to the default.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let lp = EventLoop::new().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let log = Log::default();
        let l = log.clone();
        let t = lp.connect_write_pipe(move || Recorder(l), writer).unwrap();
        t.write(b"x").unwrap();
        let l = log.clone();
        run_until(&lp, move || l.lost());
        println!("survived");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "epipe_never_raises_sigpipe", "--nocapture"])
        .env("SLOOP_SIGPIPE_CHILD", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived"));
}

#[test]
fn not_a_pipe_and_closed_loop_are_refused() {
    let lp = EventLoop::new().unwrap();
    let file = tempfile::tempfile().unwrap();
    assert!(matches!(
        lp.connect_read_pipe(|| Recorder(Log::default()), file),
        Err(Error::NotAPipe)
    ));
    lp.close().unwrap();
    let (reader, _writer) = std::io::pipe().unwrap();
    assert!(matches!(lp.open_read_pipe(reader), Err(Error::Closed)));
}

#[test]
fn bridge_streams_carry_a_megabyte_with_flow_control() {
    let lp = EventLoop::new().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut input = lp.open_read_pipe(reader).unwrap();
    let mut output = lp.open_write_pipe(writer).unwrap();
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let h = lp.handle();
    let got = lp
        .run_until_complete(async move {
            let writer = h.spawn_local(async move {
                output.write_all(&data).await.unwrap();
                output.close().await.unwrap();
            });
            let mut got = Vec::new();
            input.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            got
        })
        .unwrap();
    assert!(got == expected);
}

/// D15: readers and writers dropped before their transport is connected,
/// while a read waits, after EOF; a writer dropped with data buffered
/// still delivers it, then closes.
#[test]
fn bridge_streams_dropped_at_every_point() {
    let lp = EventLoop::new().unwrap();
    // Before connected: the pipes get closed (the other end sees it).
    let (reader, mut w) = std::io::pipe().unwrap();
    drop(lp.open_read_pipe(reader).unwrap());
    let (mut r, writer) = std::io::pipe().unwrap();
    drop(lp.open_write_pipe(writer).unwrap());
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    assert_eq!(
        w.write(b"x").unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );

    // While a read waits: the future and then the reader dropped.
    let (reader, mut w) = std::io::pipe().unwrap();
    let mut input = lp.open_read_pipe(reader).unwrap();
    let read = lp
        .run_until_complete(sloop::timeout(Duration::from_millis(5), async {
            let mut b = [0u8; 1];
            input.read(&mut b).await
        }))
        .unwrap();
    assert!(read.is_err()); // timed out: dropped mid-read
    drop(input);
    lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(
        w.write(b"x").unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );

    // After EOF.
    let (reader, w) = std::io::pipe().unwrap();
    let mut input = lp.open_read_pipe(reader).unwrap();
    drop(w);
    let mut all = Vec::new();
    lp.run_until_complete(input.read_to_end(&mut all))
        .unwrap()
        .unwrap();
    drop(input);

    // A writer dropped with data still buffered: it is delivered.
    let (mut r, writer) = std::io::pipe().unwrap();
    let mut output = lp.open_write_pipe(writer).unwrap();
    let big = vec![1u8; 300 * 1024];
    let h = lp.handle();
    lp.run_until_complete(async move {
        // Connected, then one write that the pipe cannot take whole.
        sloop::sleep(Duration::ZERO).await;
        let n = futures::future::poll_fn(|cx| std::pin::Pin::new(&mut output).poll_write(cx, &big))
            .await
            .unwrap();
        assert_eq!(n, big.len());
        drop(output);
        let _ = h;
    })
    .unwrap();
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        all.len()
    });
    // Run until the reader thread finishes (EOF after all the data).
    while !reading.is_finished() {
        lp.run_until_complete(sloop::sleep(Duration::from_millis(1)))
            .unwrap();
    }
    assert_eq!(reading.join().unwrap(), 300 * 1024);
}
