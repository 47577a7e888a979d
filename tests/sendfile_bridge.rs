//! `TransportStream::sendfile` and `WriteHalf::sendfile`: an `async fn`
//! sends a file on its stream, after what it wrote, before what it writes
//! next; dropped mid-transfer, the stream goes on.

mod support;

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncReadExt, AsyncWriteExt};
use sloop::{Error, EventLoop, TransportStream};
use support::{new_loop, on_thread, run, SAFETY};

const MIB: usize = 1024 * 1024;

fn make_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data = support::pattern(len);
    let path = dir.join("f");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// A stream connected to a plain listener, and the accepted peer.
fn stream_pair(lp: &EventLoop) -> (TransportStream, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = run(lp, lp.open_connection(addr)).unwrap();
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(SAFETY)).unwrap();
    (stream, peer)
}

fn read_all(mut peer: TcpStream) -> impl Future<Output = Vec<u8>> {
    on_thread(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("peer read");
        got
    })
}

#[test]
fn a_stream_sends_a_file_between_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), 12 * MIB + 7);
    let lp = new_loop();
    let (mut stream, peer) = stream_pair(&lp);
    stream
        .transport()
        .with_socket(|s| s.set_send_buffer_size(16 * 1024))
        .unwrap()
        .unwrap();
    let reader = lp.spawn_local(read_all(peer));
    let size = data.len() as u64;
    run(&lp, async move {
        let file = File::open(&path).unwrap();
        // Large enough to be still buffered when the sendfile starts.
        stream.write_all(&vec![b'<'; MIB]).await.unwrap();
        assert_eq!(stream.sendfile(&file, 0, None).await.unwrap(), size);
        stream.write_all(b"|").await.unwrap();
        let sent = stream
            .sendfile(&file, 10, Some(20))
            .native(false)
            .await
            .unwrap();
        assert_eq!(sent, 20);
        assert_eq!((&file).stream_position().unwrap(), 30);
        stream.write_all(b">").await.unwrap();
        stream.close().await.unwrap();
    });
    let got = run(&lp, reader).unwrap();
    let mut want = vec![b'<'; MIB];
    want.extend_from_slice(&data);
    want.push(b'|');
    want.extend_from_slice(&data[10..30]);
    want.push(b'>');
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}

#[test]
fn the_halves_send_files_and_keep_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), 3 * MIB);
    let lp = new_loop();
    let (stream, mut peer) = stream_pair(&lp);
    let (mut reader, mut writer) = stream.split();
    peer.write_all(b"request").unwrap();
    let got = run(&lp, async move {
        let mut req = [0u8; 7];
        reader.read_exact(&mut req).await.unwrap();
        assert_eq!(&req, b"request");
        let file = File::open(&path).unwrap();
        writer.sendfile(&file, 0, None).await.unwrap();
        // Reading was given back: the next request arrives.
        let next = on_thread(move || {
            let mut got = vec![0u8; 3 * MIB];
            peer.read_exact(&mut got).unwrap();
            peer.write_all(b"again").unwrap();
            (got, peer)
        });
        let mut again = [0u8; 5];
        let ((got, _peer), read) = futures::future::join(next, reader.read_exact(&mut again)).await;
        read.unwrap();
        assert_eq!(&again, b"again");
        got
    });
    assert!(got == data);
}

#[test]
fn a_dropped_flush_does_not_stop_a_later_sendfile() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), MIB);
    let lp = new_loop();
    let (mut stream, peer) = stream_pair(&lp);
    stream
        .transport()
        .with_socket(|s| s.set_send_buffer_size(16 * 1024))
        .unwrap()
        .unwrap();
    run(&lp, async {
        // Buffered by the transport (the peer does not read yet).
        stream.transport().write(&vec![b'<'; MIB]).unwrap();
        // A flush polled once and dropped leaves its empty waiter with
        // the stream.
        let mut flush = stream.flush();
        let polled =
            futures::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut flush).poll(cx))).await;
        assert!(polled.is_pending());
    });
    let reader = lp.spawn_local(read_all(peer));
    run(&lp, async {
        let file = File::open(&path).unwrap();
        assert_eq!(stream.sendfile(&file, 0, None).await.unwrap(), MIB as u64);
        stream.close().await.unwrap();
    });
    let got = run(&lp, reader).unwrap();
    assert!(got[MIB..] == data[..]);
}

/// Polls at most `polls` times, then drops the future.
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

#[test]
fn dropping_a_stream_sendfile_at_every_poll_leaves_the_stream_working() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = make_file(dir.path(), MIB);
    let lp = new_loop();
    let mut polls = 1;
    loop {
        let (mut stream, peer) = stream_pair(&lp);
        stream
            .transport()
            .with_socket(|s| s.set_send_buffer_size(32 * 1024))
            .unwrap()
            .unwrap();
        let reader = lp.spawn_local(read_all(peer));
        let path = path.clone();
        let (out, sent) = run(&lp, async move {
            let file = File::open(&path).unwrap();
            stream.write_all(&[b'<'; 100_000]).await.unwrap();
            let out = DropAfter {
                fut: Some(Box::pin(std::future::IntoFuture::into_future(
                    stream.sendfile(&file, 0, None),
                ))),
                left: polls,
            }
            .await;
            let out = out.map(|r| r.map_err(Error::from));
            let sent = (&file).stream_position().unwrap() as usize;
            stream.write_all(b"AFTER").await.unwrap();
            stream.close().await.unwrap();
            (out.map(|r| r.unwrap()), sent)
        });
        let got = run(&lp, reader).unwrap();
        let mut want = vec![b'<'; 100_000];
        want.extend_from_slice(&data[..sent]);
        want.extend_from_slice(b"AFTER");
        assert!(got == want, "after {polls} polls");
        if let Some(n) = out {
            assert_eq!(n, data.len() as u64);
            assert!(polls > 2);
            return;
        }
        polls += 1;
        assert!(polls < 10_000);
    }
}
