//! TransportStream: AsyncRead/AsyncWrite/AsyncBufRead over a transport,
//! with asyncio StreamReader's backpressure, flush through the empty
//! waiter, split halves, cancellation, and hand-over between styles.

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use futures::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use sloop::{Protocol, Transport, TransportStream};
use support::{new_loop, on_thread, pattern, run};

/// A stream from `open_connection` and the plain socket at the other end.
async fn connected(h: &sloop::LoopHandle) -> (TransportStream, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = h.open_connection(("127.0.0.1", addr.port())).await.unwrap();
    // The kernel finished the handshake already: accept returns at once.
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

/// An echo server written with `futures::io::copy` on split halves.
async fn copy_echo(stream: TransportStream) {
    let (mut reader, mut writer) = stream.split();
    futures::io::copy(&mut reader, &mut writer).await.unwrap();
    writer.close().await.unwrap();
}

#[test]
fn ten_megabytes_through_futures_io_copy_both_ways() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let server = h.start_server(copy_echo, "127.0.0.1:0").await.unwrap();
        let port = server.local_addrs()[0].port();
        let client = h.open_connection(("127.0.0.1", port)).await.unwrap();
        let (mut reader, mut writer) = client.split();
        let data = pattern(10 * 1024 * 1024);
        let sent = data.clone();
        let sender = h.spawn_local(async move {
            // Odd-sized writes, to cross every boundary.
            for chunk in sent.chunks(65_521) {
                writer.write_all(chunk).await.unwrap();
            }
            writer.close().await.unwrap();
            writer
        });
        let mut received = Vec::with_capacity(data.len());
        futures::io::copy(&mut reader, &mut received).await.unwrap();
        assert_eq!(received.len(), data.len());
        assert!(received == data, "echo differs");
        drop(sender.await.unwrap());
        server.close();
    });
}

#[test]
fn eof_from_the_peer_ends_reads_with_zero_and_the_write_side_stays_open() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let server = h
            .start_server(
                |mut stream| async move {
                    let mut all = Vec::new();
                    stream.read_to_end(&mut all).await.unwrap(); // until the peer's EOF
                    assert_eq!(
                        stream.read(&mut [0u8; 8]).await.unwrap(),
                        0,
                        "EOF stays EOF"
                    );
                    // Half-closed: we can still answer.
                    stream
                        .write_all(format!("got {} bytes", all.len()).as_bytes())
                        .await
                        .unwrap();
                    stream.close().await.unwrap();
                },
                "127.0.0.1:0",
            )
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let answer = on_thread(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[7u8; 1000]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        })
        .await;
        assert_eq!(answer, "got 1000 bytes");
    });
}

#[test]
fn a_slow_reader_keeps_the_servers_memory_bounded() {
    // The peer sends 8 MB and reads nothing until the server has paused
    // reading. The server echoes; its write buffer fills (pause_writing),
    // so it stops reading (poll_write Pending), its read buffer fills and
    // it pauses reading. Everything stays under the limits; nothing is lost.
    let lp = new_loop();
    let h = lp.handle();
    let max_read_buffered = Rc::new(Cell::new(0usize));
    let max_write_buffered = Rc::new(Cell::new(0usize));
    let paused_reading = Rc::new(Cell::new(false));
    let server_side: Rc<RefCell<Option<Transport>>> = Rc::default();
    let (mr, mw, ss) = (
        max_read_buffered.clone(),
        max_write_buffered.clone(),
        server_side.clone(),
    );
    let pr = paused_reading.clone();
    run(&lp, async move {
        let server = h
            .start_server(
                move |mut stream| {
                    let (mr, mw) = (mr.clone(), mw.clone());
                    *ss.borrow_mut() = Some(stream.transport().clone());
                    async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            mr.set(mr.get().max(stream.buffered_len()));
                            mw.set(mw.get().max(stream.transport().write_buffer_size()));
                            let n = stream.read(&mut buf).await.unwrap();
                            if n == 0 {
                                break;
                            }
                            stream.write_all(&buf[..n]).await.unwrap();
                        }
                        stream.close().await.unwrap();
                    }
                },
                "127.0.0.1:0",
            )
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        const TOTAL: usize = 8 * 1024 * 1024;
        let (go, start_reading) = std::sync::mpsc::channel::<()>();
        let echoed = on_thread(move || {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.set_send_buffer_size(4096).unwrap();
            s.connect(&addr.into()).unwrap();
            let s: TcpStream = s.into();
            let mut writer = s.try_clone().unwrap();
            let data = pattern(TOTAL);
            // Send everything from one thread while another reads only
            // once told, so the server meets a peer that reads nothing.
            let reader = std::thread::spawn(move || {
                start_reading.recv().unwrap();
                let mut got = Vec::new();
                (&s).read_to_end(&mut got).unwrap();
                got
            });
            writer.write_all(&data).unwrap();
            writer.shutdown(std::net::Shutdown::Write).unwrap();
            reader.join().unwrap() == data
        });
        // The server's handler is stuck in write_all by now; watch its
        // transport from here until reading pauses, then let the peer read.
        support::until(|| {
            server_side
                .borrow()
                .as_ref()
                .is_some_and(|t| !t.is_reading())
        })
        .await;
        pr.set(true);
        go.send(()).unwrap();
        let echoed = echoed.await;
        assert!(echoed, "every byte came back, in order");
        server.close();
    });
    let limit = sloop::bridge::stream::DEFAULT_READ_LIMIT;
    assert!(paused_reading.get(), "the stream paused reading");
    // At most twice the limit, plus one receive on top of it.
    assert!(
        max_read_buffered.get() <= 2 * limit + 256 * 1024,
        "read buffer {}",
        max_read_buffered.get()
    );
    // At most the high-water mark plus one write.
    assert!(
        max_write_buffered.get() <= 64 * 1024 + 16 * 1024,
        "write buffer {}",
        max_write_buffered.get()
    );
}

#[test]
fn flush_completes_only_once_the_peer_can_read_everything() {
    // After flush nothing is left in user space: with the loop closed and
    // never run again, the peer still receives every byte.
    const TOTAL: usize = 4 * 1024 * 1024;
    let lp = new_loop();
    let h = lp.handle();
    // Small kernel buffers, set before listen(), so most of TOTAL must wait
    // in the transport's buffer.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(64 * 1024).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(1).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let (go, start_reading) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(support::SAFETY)).unwrap();
        start_reading.recv().unwrap();
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).map(|_| got)
    });
    let stream = run(&lp, async move {
        let mut stream = h.open_connection(("127.0.0.1", addr.port())).await.unwrap();
        stream
            .transport()
            .with_socket(|s| s.set_send_buffer_size(16 * 1024).unwrap());
        // Straight to the transport (no flow control): the peer reads
        // nothing yet, so the kernel takes a few hundred KiB at most.
        stream.transport().write(&pattern(TOTAL)).unwrap();
        assert!(
            stream.transport().write_buffer_size() > TOTAL / 2,
            "most is in user space"
        );
        go.send(()).unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.transport().write_buffer_size(), 0);
        stream
    });
    drop(stream);
    lp.close().unwrap(); // frees the transport and its socket; no more I/O
    let got = peer
        .join()
        .unwrap()
        .expect("EOF once the loop closed the socket");
    assert_eq!(got.len(), TOTAL);
    assert!(got == pattern(TOTAL));
}

#[test]
fn a_flush_or_close_dropped_mid_flight_leaves_the_next_one_waiting_for_the_bytes() {
    // D15: a flush or close future may be dropped at any poll. The next
    // flush waits for the bytes written since (not for the empty waiter the
    // dropped one left behind, which completed meanwhile), lets go of the
    // transport's empty waiter when done, and a close after a dropped one
    // still sends everything, then EOF.
    const PART: usize = 2 * 1024 * 1024;
    let lp = new_loop();
    let h = lp.handle();
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(64 * 1024).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(1).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // The peer reads each part only when told, and says when it has it.
    let (go, next_part) = std::sync::mpsc::channel::<()>();
    let (part_read, got_part) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(support::SAFETY)).unwrap();
        for _ in 0..3 {
            next_part.recv().unwrap();
            let mut part = vec![0u8; PART];
            s.read_exact(&mut part).unwrap();
            assert!(part == pattern(PART));
            part_read.send(()).unwrap();
        }
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        rest.len()
    });
    run(&lp, async move {
        let mut stream = h.open_connection(("127.0.0.1", addr.port())).await.unwrap();
        stream
            .transport()
            .with_socket(|s| s.set_send_buffer_size(16 * 1024).unwrap());
        let cut = Duration::from_millis(5);

        // A flush dropped while the peer reads nothing.
        stream.transport().write(&pattern(PART)).unwrap();
        assert!(sloop::timeout(cut, stream.flush()).await.is_err());
        go.send(()).unwrap();
        // The peer has every byte: the buffer drained, and the dropped
        // flush's waiter completed with nobody polling it.
        let got_part = on_thread(move || got_part.recv().map(|()| got_part).unwrap()).await;

        // The next flush waits for the bytes written since.
        stream.transport().write(&pattern(PART)).unwrap();
        assert!(stream.transport().write_buffer_size() > 0);
        assert!(
            sloop::timeout(cut, stream.flush()).await.is_err(),
            "the second part is still buffered: the flush must wait"
        );
        go.send(()).unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.transport().write_buffer_size(), 0);
        assert!(
            stream.transport().empty_waiter().is_ok(),
            "the flush let go of the transport's empty waiter"
        );
        let got_part = on_thread(move || got_part.recv().map(|()| got_part).unwrap()).await;

        // A close dropped mid-flight, then closed again.
        stream.transport().write(&pattern(PART)).unwrap();
        assert!(sloop::timeout(cut, stream.close()).await.is_err());
        go.send(()).unwrap();
        stream.close().await.unwrap();
        on_thread(move || got_part.recv().unwrap()).await;
    });
    assert_eq!(peer.join().unwrap(), 0, "EOF right after the third part");
}

#[test]
fn split_halves_work_from_two_tasks() {
    // R37: a reader task and a writer task on one stream's halves, 100 MB
    // each way through an echo server: separate wakers, no stall.
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let server = h.start_server(copy_echo, "127.0.0.1:0").await.unwrap();
        let port = server.local_addrs()[0].port();
        let (mut reader, mut writer) = h
            .open_connection(("127.0.0.1", port))
            .await
            .unwrap()
            .split();
        let data = pattern(100 * 1000 * 1000);
        let expected = data.clone();
        let writing = h.spawn_local(async move {
            for chunk in data.chunks(64 * 1024) {
                writer.write_all(chunk).await.unwrap();
            }
            writer
        });
        let reading = h.spawn_local(async move {
            let mut got = vec![0u8; expected.len()];
            reader.read_exact(&mut got).await.unwrap();
            assert!(got == expected);
            reader
        });
        let writer = writing.await.unwrap();
        let reader = reading.await.unwrap();
        let mut stream = TransportStream::unsplit(reader, writer)
            .map_err(|_| "halves differ")
            .unwrap();
        stream.close().await.unwrap();
        server.close();
    });
}

#[test]
fn a_cancelled_read_leaves_the_stream_usable_and_a_cancelled_task_closes_it() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let (mut stream, mut peer) = connected(&h).await;

        // A read cut short by a timeout loses nothing.
        let mut buf = [0u8; 16];
        let cut = sloop::timeout(Duration::from_millis(5), stream.read(&mut buf)).await;
        assert!(cut.is_err());
        peer.write_all(b"still here").unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"still here");

        // A task cancelled mid-read drops its stream: the peer sees EOF.
        let task = h.spawn_local(async move {
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf).await;
            unreachable!("nothing is sent");
        });
        sloop::sleep(Duration::from_millis(2)).await;
        assert!(task.cancel());
        assert!(task.await.unwrap_err().is_cancelled());
        let eof = on_thread(move || {
            let mut rest = Vec::new();
            peer.read_to_end(&mut rest).unwrap();
            rest.len()
        })
        .await;
        assert_eq!(eof, 0, "clean EOF, no reset");
    });
}

#[test]
fn an_error_from_the_transport_surfaces_on_the_next_read_and_write() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let (mut stream, peer) = connected(&h).await;
        // RST: SO_LINGER 0 then close.
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        let mut buf = [0u8; 8];
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        let err = stream.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    });
}

#[test]
fn async_buf_read_lines() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let (mut stream, mut peer) = connected(&h).await;
        peer.write_all(b"first line\nsecond ").unwrap();
        peer.write_all(b"line\nno newline").unwrap();
        drop(peer);
        let mut lines = Vec::new();
        let mut line = String::new();
        while stream.read_line(&mut line).await.unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        assert_eq!(lines, ["first line\n", "second line\n", "no newline"]);
    });
}

/// A callback protocol that reads one line, then hands the connection to
/// an async task together with whatever followed the line.
struct Handshake {
    transport: Option<Transport>,
    line: Vec<u8>,
    upgraded: Rc<RefCell<Option<TransportStream>>>,
}

impl Protocol for Handshake {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.line.extend_from_slice(data);
        if let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let transport = self.transport.take().unwrap();
            transport.write(b"welcome\n").unwrap();
            let rest = self.line.split_off(end + 1);
            let stream = TransportStream::with_buffered(&transport, &rest);
            *self.upgraded.borrow_mut() = Some(stream);
        }
    }
}

#[test]
fn a_callback_protocol_upgrades_to_a_stream_without_losing_bytes_and_back() {
    let lp = new_loop();
    let h = lp.handle();
    let slot: Rc<RefCell<Option<TransportStream>>> = Rc::default();
    let s = slot.clone();
    run(&lp, async move {
        let server = h
            .create_server(
                move || Handshake {
                    transport: None,
                    line: Vec::new(),
                    upgraded: s.clone(),
                },
                "127.0.0.1:0",
            )
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let peer = on_thread(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // The handshake and the first data in one segment.
            c.write_all(b"HELLO v1\npayload-1|").unwrap();
            let mut welcome = [0u8; 8];
            c.read_exact(&mut welcome).unwrap();
            c.write_all(b"payload-2|").unwrap();
            c
        });
        support::until(|| slot.borrow().is_some()).await;
        let mut stream = slot.borrow_mut().take().unwrap();
        let mut c = peer.await;
        let mut got = vec![0u8; "payload-1|payload-2|".len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"payload-1|payload-2|");

        // And back to a callback protocol, with the unread bytes.
        c.write_all(b"tail").unwrap();
        support::until(|| stream.buffered_len() == 4).await;
        let parts = stream.into_parts();
        assert_eq!(parts.buffered, b"tail");
        assert!(!parts.eof);
        let record = Rc::new(RefCell::new(Vec::new()));
        struct Collect(Rc<RefCell<Vec<u8>>>);
        impl Protocol for Collect {
            fn data_received(&mut self, data: &[u8]) {
                self.0.borrow_mut().extend_from_slice(data);
            }
        }
        let mut proto = Collect(record.clone());
        proto.data_received(&parts.buffered);
        parts.transport.set_protocol(proto);
        c.write_all(b"+more").unwrap();
        support::until(|| record.borrow().len() == 9).await;
        assert_eq!(&*record.borrow(), b"tail+more");
        assert!(!parts.transport.is_closing(), "into_parts does not close");
        parts.transport.close();
        server.close();
    });
}

#[test]
fn unix_stream_open_and_serve() {
    let lp = new_loop();
    let h = lp.handle();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    run(&lp, async move {
        let server = h.start_unix_server(copy_echo, &path).await.unwrap();
        let mut client = h.open_unix_connection(&path).await.unwrap();
        client.write_all(b"over a unix socket").await.unwrap();
        client.close().await.unwrap();
        let mut back = String::new();
        client.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "over a unix socket");
        server.close();
    });
}

#[test]
fn a_stream_never_polled_stays_bounded_and_the_peer_blocks() {
    // R20: nobody reads the stream; the peer keeps sending.
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let (stream, peer) = connected(&h).await;
        peer.set_nonblocking(true).unwrap();
        let sent = Rc::new(Cell::new(0usize));
        let chunk = vec![1u8; 64 * 1024];
        // Send until the kernel refuses for a while: the loop must have
        // stopped reading by then.
        let mut refusals = 0;
        while refusals < 50 {
            match (&peer).write(&chunk) {
                Ok(n) => {
                    sent.set(sent.get() + n);
                    refusals = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    refusals += 1;
                    sloop::sleep(Duration::from_millis(2)).await; // let the loop read
                }
                Err(e) => panic!("{e}"),
            }
            assert!(sent.get() < 200 * 1024 * 1024, "the peer never blocked");
        }
        let limit = sloop::bridge::stream::DEFAULT_READ_LIMIT;
        assert!(!stream.transport().is_reading(), "reading paused");
        assert!(
            stream.buffered_len() > 2 * limit,
            "paused only above twice the limit"
        );
        assert!(
            stream.buffered_len() <= 2 * limit + 256 * 1024,
            "{}",
            stream.buffered_len()
        );
        // Draining the stream resumes reading and delivers everything.
        let mut stream = stream;
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while total < sent.get() {
            total += stream.read(&mut buf).await.unwrap();
        }
        assert_eq!(total, sent.get());
        assert!(stream.transport().is_reading(), "resumed once drained");
    });
}

#[test]
fn a_dropped_write_all_leaves_the_stream_consistent_and_close_still_lets_the_peer_reply() {
    // R36: write_all cut short by a timeout; later writes follow in order;
    // close sends EOF and the peer's reply still arrives.
    const BIG: usize = 16 * 1024 * 1024;
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let (mut stream, mut s) = connected(&h).await;
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let peer = on_thread(move || {
            go_rx.recv().unwrap(); // read nothing until told
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap(); // until our EOF
            s.write_all(b"reply after your EOF").unwrap();
            got
        });
        let data = pattern(BIG);
        let cut = sloop::timeout(Duration::from_millis(50), stream.write_all(&data)).await;
        assert!(
            cut.is_err(),
            "the peer reads nothing, so write_all cannot finish"
        );
        go_tx.send(()).unwrap();
        stream.write_all(b"TAIL").await.unwrap();
        stream.close().await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "reply after your EOF");
        let got = peer.await;
        let (prefix, tail) = got.split_at(got.len() - 4);
        assert_eq!(tail, b"TAIL");
        assert!(!prefix.is_empty() && prefix.len() < BIG);
        assert!(
            prefix == &data[..prefix.len()],
            "what was accepted went out whole, in order"
        );
    });
}

#[test]
fn into_parts_and_from_parts_keep_the_bytes_and_the_eof() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let (stream, mut s) = connected(&h).await;
        s.write_all(b"last words").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let peer = on_thread(move || {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            rest
        });
        // Data, then the FIN (after which the transport stops reading).
        support::until(|| stream.buffered_len() == 10 && !stream.transport().is_reading()).await;
        let parts = stream.into_parts();
        assert_eq!(parts.buffered, b"last words");
        assert!(parts.eof, "the peer's EOF is part of the hand-over");
        let mut again = TransportStream::from_parts(parts);
        let mut all = Vec::new();
        again.read_to_end(&mut all).await.unwrap(); // ends: EOF carried over
        assert_eq!(all, b"last words");
        again.write_all(b"bye").await.unwrap();
        again.close().await.unwrap();
        drop(again);
        assert_eq!(peer.await, b"bye");
    });
}
