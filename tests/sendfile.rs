//! `LoopHandle::sendfile` and `sock_sendfile` against real peers: a plain
//! std socket on a thread reads what arrives. Files are made in a temp
//! dir at test time; a pipe is a child `cat`'s stdout.

mod support;

use std::cell::RefCell;
use std::fs::File;
use std::future::{Future, IntoFuture};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::task::{Context, Poll};

use sloop::{Error, EventLoop, Protocol, SendfileError, Transport};
use support::{new_loop, on_thread, run, KillOnDrop, SAFETY};

const MIB: usize = 1024 * 1024;

/// A file of `len` pseudo-random bytes in `dir`, and its bytes.
fn make_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// FNV-1a over 8-byte words: a cheap hash to compare large transfers.
fn hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = data.chunks_exact(8);
    for w in words.by_ref() {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// What a protocol saw: bytes received and how the connection ended.
#[derive(Default)]
struct Seen {
    data: Vec<u8>,
    lost: Vec<Option<io::ErrorKind>>,
}

struct Client(Rc<RefCell<Seen>>);

impl Protocol for Client {
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.0.borrow_mut().lost.push(exc.map(|e| e.kind()));
    }
}

/// A client transport with a recording protocol, and the accepted peer.
fn connect(lp: &EventLoop) -> (Transport, TcpStream, Rc<RefCell<Seen>>) {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let (t, peer) = support::connected(lp, Client(seen.clone()));
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    (t, peer, seen)
}

/// Reads everything the peer gets until EOF, on a thread.
fn read_all(mut peer: TcpStream) -> impl Future<Output = Vec<u8>> {
    on_thread(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("peer read");
        got
    })
}

/// A pipe whose other end a child `cat` fills with `path`'s bytes.
fn pipe_of(path: &Path) -> (File, KillOnDrop) {
    let mut child = Command::new("cat")
        .arg(path)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("run cat");
    let out = child.stdout.take().unwrap();
    (File::from(OwnedFd::from(out)), KillOnDrop(child))
}

/// A sendfile of all of `file` in its own task, which gives the file back.
fn spawn_sendfile(
    lp: &EventLoop,
    t: &Transport,
    file: File,
) -> sloop::Task<(Result<u64, SendfileError>, File)> {
    let (h, t) = (lp.handle(), t.clone());
    lp.spawn_local(async move {
        let r = h.sendfile(&t, &file, 0, None).await;
        (r, file)
    })
}

fn err_of(r: Result<u64, SendfileError>) -> SendfileError {
    r.expect_err("the sendfile should fail")
}

#[test]
fn a_64_mib_file_arrives_whole_through_the_zero_copy_path() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "big", 64 * MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, peer, _) = connect(&lp);
    let task = spawn_sendfile(&lp, &t, file);
    // While it runs (it cannot finish: nobody reads yet), the transport is
    // the sendfile's: only the zero-copy path takes it over so.
    let probe = t.clone();
    let refused = run(&lp, async move {
        sloop::sleep(std::time::Duration::from_millis(0)).await;
        probe.write(b"x").map_err(|e| e.to_string())
    });
    let reader = lp.spawn_local(read_all(peer));
    let (sent, file) = run(&lp, task).unwrap();
    assert_eq!(sent.unwrap(), data.len() as u64);
    assert_eq!(
        refused.unwrap_err(),
        "unable to write; sendfile is in progress"
    );
    assert_eq!((&file).stream_position().unwrap(), data.len() as u64);
    t.write_eof().unwrap();
    let got = run(&lp, reader).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(hash(&got), hash(&data));
    assert!(got == data);
}

#[test]
fn offset_and_count_are_honoured_and_the_position_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 10_000);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, peer, _) = connect(&lp);
    let reader = lp.spawn_local(read_all(peer));
    assert_eq!(
        run(&lp, lp.sendfile(&t, &file, 1000, Some(2000))).unwrap(),
        2000
    );
    assert_eq!((&file).stream_position().unwrap(), 3000);
    assert_eq!(run(&lp, lp.sendfile(&t, &file, 9000, None)).unwrap(), 1000);
    assert_eq!((&file).stream_position().unwrap(), 10_000);
    // A count past the end sends what there is.
    assert_eq!(
        run(&lp, lp.sendfile(&t, &file, 9500, Some(5000))).unwrap(),
        500
    );
    t.write_eof().unwrap();
    let got = run(&lp, reader).unwrap();
    let mut want = data[1000..3000].to_vec();
    want.extend_from_slice(&data[9000..]);
    want.extend_from_slice(&data[9500..]);
    assert!(got == want);
}

#[test]
fn bytes_written_before_arrive_first_and_bytes_written_after_last() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 3 * MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, peer, _) = connect(&lp);
    // A small send buffer, so the write before is still buffered when the
    // sendfile starts: it must wait for it to drain.
    t.with_socket(|s| s.set_send_buffer_size(16 * 1024))
        .unwrap()
        .unwrap();
    let before = vec![b'<'; 2 * MIB];
    t.write(&before).unwrap();
    assert!(t.write_buffer_size() > 0, "the write before is buffered");
    let reader = lp.spawn_local(read_all(peer));
    for native in [true, false] {
        let sent = run(&lp, lp.sendfile(&t, &file, 0, None).native(native)).unwrap();
        assert_eq!(sent, data.len() as u64);
        t.write(b">>").unwrap();
    }
    t.write_eof().unwrap();
    let got = run(&lp, reader).unwrap();
    let mut want = before;
    for _ in 0..2 {
        want.extend_from_slice(&data);
        want.extend_from_slice(b">>");
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}

#[test]
fn an_offset_past_the_end_or_an_empty_file_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "f", 100);
    let (empty, _) = make_file(dir.path(), "empty", 0);
    let file = File::open(&path).unwrap();
    let empty = File::open(&empty).unwrap();
    let lp = new_loop();
    let (t, _peer, _) = connect(&lp);
    for native in [true, false] {
        let s = |f, off, count| lp.sendfile(&t, f, off, count).native(native);
        assert_eq!(run(&lp, s(&file, 100, None)).unwrap(), 0);
        assert_eq!(run(&lp, s(&file, 5000, Some(10))).unwrap(), 0);
        assert_eq!(run(&lp, s(&empty, 0, None)).unwrap(), 0);
    }
    assert_eq!(
        (&file).stream_position().unwrap(),
        0,
        "nothing sent: not moved"
    );
    assert!(t.write(b"still fine").is_ok());
}

#[test]
fn a_zero_or_overflowing_count_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "f", 100);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, _peer, _) = connect(&lp);
    let cases = [
        (0, Some(0), "count must be a positive integer (got 0)"),
        (u64::MAX, None, "offset must be a non-negative integer"),
        (10, Some(i64::MAX as u64), "offset (10) + count"),
        (1, Some(u64::MAX), "is past the largest file offset"),
    ];
    for (offset, count, msg) in cases {
        let e = err_of(run(&lp, lp.sendfile(&t, &file, offset, count)));
        assert!(
            matches!(e.error(), Error::InvalidSendfileArgument { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(msg), "{e} vs {msg}");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.sent(), 0);
        let io_err = io::Error::from(e);
        assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput);
    }
    assert!(t.write(b"still fine").is_ok());
}

#[test]
fn while_a_zero_copy_sendfile_runs_writes_eof_waiters_and_sendfiles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 8 * MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, peer, _) = connect(&lp);
    t.with_socket(|s| s.set_send_buffer_size(64 * 1024))
        .unwrap()
        .unwrap();
    // The peer does not read yet: the sendfile waits for room.
    let task = spawn_sendfile(&lp, &t, file);
    let file2 = File::open(&path).unwrap();
    let probe = t.clone();
    let h = lp.handle();
    let refusals = run(&lp, async move {
        sloop::sleep(std::time::Duration::from_millis(0)).await;
        let second = h.sendfile(&probe, &file2, 0, None).await.map(|_| ());
        vec![
            probe.write(b"x"),
            probe.writelines(&[b"x"]),
            probe.write_eof(),
            probe.empty_waiter().map(|_| ()),
            second.map_err(Error::from),
        ]
    });
    for r in refusals {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::SendfileInProgress), "{e:?}");
        assert_eq!(e.to_string(), "unable to write; sendfile is in progress");
    }
    let reader = lp.spawn_local(read_all(peer));
    assert_eq!(run(&lp, task).unwrap().0.unwrap(), data.len() as u64);
    // Given back: all of it works again.
    run(&lp, t.empty_waiter().unwrap()).unwrap();
    t.write(b"after").unwrap();
    t.write_eof().unwrap();
    let got = run(&lp, reader).unwrap();
    assert!(got[..data.len()] == data[..]);
    assert_eq!(&got[data.len()..], b"after");
}

#[test]
fn the_transport_reads_and_writes_after_a_sendfile() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, mut peer, seen) = connect(&lp);
    assert!(t.is_reading());
    for native in [true, false] {
        let sent = run(&lp, lp.sendfile(&t, &file, 0, None).native(native)).unwrap();
        assert_eq!(sent, data.len() as u64);
        assert!(t.is_reading(), "reading resumed");
        let mut got = vec![0u8; data.len()];
        peer.read_exact(&mut got).unwrap();
        assert!(got == data);
        // Writing and reading go on.
        t.write(b"ping").unwrap();
        let mut ping = [0u8; 4];
        peer.read_exact(&mut ping).unwrap();
        assert_eq!(&ping, b"ping");
        seen.borrow_mut().data.clear();
        peer.write_all(b"pong").unwrap();
        let s = seen.clone();
        run(&lp, support::until(move || s.borrow().data.len() == 4));
        assert_eq!(seen.borrow().data, b"pong");
    }
    // A transport paused before stays paused.
    t.pause_reading();
    run(&lp, lp.sendfile(&t, &file, 0, Some(10))).unwrap();
    assert!(!t.is_reading());
}

/// The peer reads `keep` bytes, then closes with unread data (a reset).
fn peer_closes_after(mut peer: TcpStream, keep: usize) -> impl Future<Output = ()> {
    on_thread(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < keep {
            match peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        drop(peer);
    })
}

#[test]
fn the_peer_closing_mid_way_fails_the_sendfile_once_with_no_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 32 * MIB);
    let lp = new_loop();
    for native in [true, false] {
        let file = File::open(&path).unwrap();
        let (t, peer, seen) = connect(&lp);
        let closer = lp.spawn_local(peer_closes_after(peer, 2 * MIB));
        let e = err_of(run(&lp, lp.sendfile(&t, &file, 0, None).native(native)));
        run(&lp, closer).unwrap();
        assert!(e.sent() > 0 && e.sent() < data.len() as u64, "{e}");
        assert_eq!((&file).stream_position().unwrap(), e.sent());
        assert!(
            matches!(e.error(), Error::Io(_) | Error::ConnectionLost),
            "{e:?}"
        );
        assert!(t.is_closing());
        let s = seen.clone();
        run(&lp, support::until(move || !s.borrow().lost.is_empty()));
        // One more turn of the loop: still one loss.
        run(&lp, sloop::sleep(std::time::Duration::from_millis(5)));
        assert_eq!(seen.borrow().lost.len(), 1, "native {native}");
        assert!(t.write(b"x").is_err());
    }
}

#[test]
fn closing_the_transport_during_a_sendfile_fails_it_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "f", 16 * MIB);
    let lp = new_loop();
    for abort in [false, true] {
        let file = File::open(&path).unwrap();
        let (t, _peer, seen) = connect(&lp);
        t.with_socket(|s| s.set_send_buffer_size(64 * 1024))
            .unwrap()
            .unwrap();
        // Nobody reads: the sendfile fills the socket and waits.
        let task = spawn_sendfile(&lp, &t, file);
        run(&lp, sloop::sleep(std::time::Duration::from_millis(5)));
        assert!(!task.is_finished(), "waiting for room");
        if abort {
            t.abort();
        } else {
            t.close();
        }
        let e = err_of(run(&lp, task).unwrap().0);
        assert!(matches!(e.error(), Error::ConnectionLost), "{e:?}");
        assert!(e.sent() > 0);
        let s = seen.clone();
        run(&lp, support::until(move || !s.borrow().lost.is_empty()));
        assert_eq!(seen.borrow().lost, vec![None]);
    }
}

#[test]
fn a_closing_transport_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "f", 100);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, _peer, _) = connect(&lp);
    t.close();
    let e = err_of(run(&lp, lp.sendfile(&t, &file, 0, None)));
    assert!(matches!(e.error(), Error::ConnectionLost), "{e:?}");
    assert_eq!((&file).stream_position().unwrap(), 0);
}

#[test]
fn a_pipe_takes_the_fallback_and_fallback_false_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 5 * MIB + 123);
    let lp = new_loop();
    let (t, peer, _) = connect(&lp);
    let reader = lp.spawn_local(read_all(peer));

    let (pipe, _cat) = pipe_of(&path);
    let e = err_of(run(&lp, lp.sendfile(&t, &pipe, 0, None).fallback(false)));
    assert!(
        matches!(e.error(), Error::SendfileNotAvailable { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "not a regular file");
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    assert_eq!(e.sent(), 0);

    // The same pipe, untouched, then goes through the fallback.
    let sent = run(&lp, lp.sendfile(&t, &pipe, 0, None)).unwrap();
    assert_eq!(sent, data.len() as u64);
    // A count stops early, and a pipe cannot start elsewhere than 0.
    let (pipe, _cat) = pipe_of(&path);
    assert_eq!(
        run(&lp, lp.sendfile(&t, &pipe, 0, Some(1000))).unwrap(),
        1000
    );
    let e = err_of(run(&lp, lp.sendfile(&t, &pipe, 7, None)));
    assert!(
        matches!(e.error(), Error::Io(io) if io.raw_os_error() == Some(libc::ESPIPE)),
        "{e:?}"
    );
    t.write_eof().unwrap();
    let got = run(&lp, reader).unwrap();
    assert_eq!(got.len(), data.len() + 1000);
    assert!(got[..data.len()] == data[..]);
    assert!(got[data.len()..] == data[..1000]);
}

#[test]
fn native_false_and_fallback_false_is_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "f", 100);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, _peer, _) = connect(&lp);
    let e = err_of(run(
        &lp,
        lp.sendfile(&t, &file, 0, None)
            .native(false)
            .fallback(false),
    ));
    assert!(
        matches!(e.error(), Error::SendfileNotAvailable { .. }),
        "{e:?}"
    );
    assert!(t.write(b"x").is_ok());
}

/// A protocol that records flow-control calls.
struct Flow(Rc<RefCell<Vec<bool>>>);

impl Protocol for Flow {
    fn pause_writing(&mut self) {
        self.0.borrow_mut().push(true);
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().push(false);
    }
}

#[test]
fn the_fallback_honours_flow_control_with_a_bounded_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 16 * MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let (t, mut peer) = support::connected(&lp, Flow(calls.clone()));
    t.with_socket(|s| s.set_send_buffer_size(16 * 1024))
        .unwrap()
        .unwrap();
    // A slow reader: the transport's buffer fills and drains many times.
    let reader = lp.spawn_local(on_thread(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{e}"),
            }
        }
    }));
    // Sample the buffer's size while the fallback runs.
    let peak = Rc::new(std::cell::Cell::new(0));
    let (p, probe) = (peak.clone(), t.clone());
    let sampler = lp.spawn_local(async move {
        loop {
            p.set(p.get().max(probe.write_buffer_size()));
            sloop::sleep(std::time::Duration::from_micros(200)).await;
        }
    });
    let sent = run(&lp, lp.sendfile(&t, &file, 0, None).native(false)).unwrap();
    sampler.cancel();
    assert_eq!(sent, data.len() as u64);
    t.write_eof().unwrap();
    let got = run(&lp, reader).unwrap();
    assert!(got == data);
    let (_, high) = t.write_buffer_limits();
    assert!(
        peak.get() <= high + 256 * 1024,
        "buffer peaked at {} (high {high})",
        peak.get()
    );
    let calls = calls.borrow();
    assert!(
        !calls.is_empty(),
        "the fallback went past the high-water mark"
    );
    for (i, pause) in calls.iter().enumerate() {
        assert_eq!(*pause, i % 2 == 0, "pause and resume alternate: {calls:?}");
    }
}

/// Polls a future at most `polls` times: `Some(output)` if it completed,
/// `None` if it was dropped after its last `Pending`.
struct DropAfter<F> {
    fut: Option<Pin<Box<F>>>,
    left: usize,
}

impl<F: Future> Future for DropAfter<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        self.left -= 1;
        if self.left == 0 {
            self.fut = None;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

fn drop_after<F: IntoFuture>(fut: F, polls: usize) -> DropAfter<F::IntoFuture> {
    DropAfter {
        fut: Some(Box::pin(fut.into_future())),
        left: polls,
    }
}

/// Drops a sendfile after 1, 2, ... polls until one completes: each time
/// the transport is given back whole (writes, waiter, reading), the peer
/// got exactly the prefix the file's position says, then what is written
/// next.
fn drop_at_every_poll(native: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let mut polls = 1;
    loop {
        (&file).seek(SeekFrom::Start(0)).unwrap();
        let (t, peer, _) = connect(&lp);
        t.with_socket(|s| s.set_send_buffer_size(32 * 1024))
            .unwrap()
            .unwrap();
        let before = vec![b'<'; 256 * 1024];
        t.write(&before).unwrap();
        let reader = lp.spawn_local(read_all(peer));
        let out = run(
            &lp,
            drop_after(lp.sendfile(&t, &file, 0, None).native(native), polls),
        );
        let sent = (&file).stream_position().unwrap() as usize;
        assert!(t.is_reading(), "reading restored after {polls} polls");
        run(&lp, t.empty_waiter().unwrap()).unwrap();
        t.write(b"AFTER").unwrap();
        t.write_eof().unwrap();
        let got = run(&lp, reader).unwrap();
        let mut want = before.clone();
        want.extend_from_slice(&data[..sent]);
        want.extend_from_slice(b"AFTER");
        assert_eq!(got.len(), want.len(), "after {polls} polls");
        assert!(got == want, "after {polls} polls");
        t.close();
        if let Some(result) = out {
            assert_eq!(result.unwrap(), data.len() as u64);
            assert!(polls > 2, "the transfer had points to drop it at");
            eprintln!("completed at poll {polls}");
            return;
        }
        polls += 1;
        assert!(polls < 10_000, "never completes");
    }
}

#[test]
fn dropping_a_zero_copy_sendfile_at_every_poll_gives_the_transport_back() {
    drop_at_every_poll(true);
}

#[test]
fn dropping_a_fallback_sendfile_at_every_poll_gives_the_transport_back() {
    drop_at_every_poll(false);
}

#[test]
fn dropping_a_sendfile_from_a_pipe_at_every_poll_leaves_no_reader_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", MIB);
    let lp = new_loop();
    let mut polls = 1;
    loop {
        let (pipe, _cat) = pipe_of(&path);
        let (t, peer, _) = connect(&lp);
        let reader = lp.spawn_local(read_all(peer));
        let out = run(&lp, drop_after(lp.sendfile(&t, &pipe, 0, None), polls));
        // The pipe's reader was removed with the future: closing the
        // pipe now leaves nothing registered on its fd number.
        drop(pipe);
        assert!(t.is_reading());
        run(&lp, t.empty_waiter().unwrap()).unwrap();
        t.write(b"AFTER").unwrap();
        t.write_eof().unwrap();
        let got = run(&lp, reader).unwrap();
        let n = got.len() - 5;
        assert_eq!(&got[n..], b"AFTER", "after {polls} polls");
        assert!(got[..n] == data[..n], "after {polls} polls");
        t.close();
        if let Some(result) = out {
            assert_eq!(result.unwrap(), data.len() as u64);
            assert!(polls > 2);
            return;
        }
        polls += 1;
        assert!(polls < 10_000, "never completes");
    }
}

// ----- sock_sendfile -----

/// A connected non-blocking client socket and its accepted peer.
fn sock_pair() -> (TcpStream, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    (sock, peer)
}

#[test]
fn sock_sendfile_sends_whole_files_ranges_and_keeps_order_with_sendall() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 20 * MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (sock, peer) = sock_pair();
    let reader = lp.spawn_local(read_all(peer));
    let h = lp.handle();
    let s = &sock;
    let f = &file;
    let size = data.len() as u64;
    run(&lp, async move {
        h.sock_sendall(s, b"head").await.unwrap();
        assert_eq!(h.sock_sendfile(s, f, 0, None).await.unwrap(), size);
        assert_eq!((&*f).stream_position().unwrap(), size);
        h.sock_sendall(s, b"mid").await.unwrap();
        assert_eq!(h.sock_sendfile(s, f, 1000, Some(2000)).await.unwrap(), 2000);
        assert_eq!(h.sock_sendfile(s, f, 1 << 40, None).await.unwrap(), 0);
        h.sock_sendall(s, b"tail").await.unwrap();
    });
    assert_eq!((&file).stream_position().unwrap(), 3000);
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = run(&lp, reader).unwrap();
    let mut want = b"head".to_vec();
    want.extend_from_slice(&data);
    want.extend_from_slice(b"mid");
    want.extend_from_slice(&data[1000..3000]);
    want.extend_from_slice(b"tail");
    assert!(got == want);
}

#[test]
fn sock_sendfile_falls_back_on_a_pipe_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", 3 * MIB);
    let lp = new_loop();
    let (sock, peer) = sock_pair();
    let reader = lp.spawn_local(read_all(peer));
    let (pipe, _cat) = pipe_of(&path);
    let e = err_of(run(
        &lp,
        lp.sock_sendfile(&sock, &pipe, 0, None).fallback(false),
    ));
    assert!(
        matches!(e.error(), Error::SendfileNotAvailable { .. }),
        "{e:?}"
    );
    assert_eq!(
        run(&lp, lp.sock_sendfile(&sock, &pipe, 0, None)).unwrap(),
        data.len() as u64
    );

    let file = File::open(&path).unwrap();
    let e = err_of(run(&lp, lp.sock_sendfile(&sock, &file, 0, Some(0))));
    assert!(
        matches!(e.error(), Error::InvalidSendfileArgument { .. }),
        "{e:?}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let e = err_of(run(&lp, lp.sock_sendfile(&udp, &file, 0, None)));
    assert_eq!(e.to_string(), "only SOCK_STREAM type sockets are supported");
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = run(&lp, reader).unwrap();
    assert!(got == data);
}

#[test]
fn dropping_sock_sendfile_at_every_poll_removes_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), "f", MIB);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let mut polls = 1;
    loop {
        (&file).seek(SeekFrom::Start(0)).unwrap();
        let (sock, peer) = sock_pair();
        socket2::SockRef::from(&sock)
            .set_send_buffer_size(32 * 1024)
            .unwrap();
        let reader = lp.spawn_local(read_all(peer));
        let out = run(
            &lp,
            drop_after(lp.sock_sendfile(&sock, &file, 0, None), polls),
        );
        let sent = (&file).stream_position().unwrap() as usize;
        // The writer is gone at once: the fd takes a new one.
        let h = lp.handle();
        let s = &sock;
        run(
            &lp,
            async move { h.sock_sendall(s, b"AFTER").await.unwrap() },
        );
        sock.shutdown(std::net::Shutdown::Write).unwrap();
        let got = run(&lp, reader).unwrap();
        let mut want = data[..sent].to_vec();
        want.extend_from_slice(b"AFTER");
        assert!(got == want, "after {polls} polls");
        if let Some(result) = out {
            assert_eq!(result.unwrap(), data.len() as u64);
            assert!(polls > 2);
            return;
        }
        polls += 1;
        assert!(polls < 10_000, "never completes");
    }
}

#[test]
fn a_sendfile_error_converts_to_io_error_and_keeps_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "f", 100);
    let file = File::open(&path).unwrap();
    let lp = new_loop();
    let (t, _peer, _) = connect(&lp);
    let e = err_of(run(&lp, lp.sendfile(&t, &file, 0, Some(0))));
    let io_err = io::Error::from(e);
    assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput);
    let inner = io_err
        .get_ref()
        .and_then(|e| e.downcast_ref::<SendfileError>());
    assert_eq!(inner.map(|e| e.sent()), Some(0));
    let e = err_of(run(&lp, lp.sendfile(&t, &file, 0, Some(0))));
    assert!(matches!(
        Error::from(e),
        Error::InvalidSendfileArgument { .. }
    ));
}
