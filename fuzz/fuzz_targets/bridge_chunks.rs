//! The stream bridge's buffers (src/bridge/stream.rs) under arbitrary
//! chunkings: a peer writes the input in chunks the input chooses, the
//! stream reads it back with read sizes, `fill_buf`/`consume` steps and
//! read limits the input chooses; what comes out is what went in.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use futures::{AsyncBufReadExt, AsyncReadExt};
use libfuzzer_sys::fuzz_target;
use sloop::{EventLoop, Protocol, TransportStream};

struct Nop;
impl Protocol for Nop {}

thread_local! {
    static LOOP: EventLoop = EventLoop::new().unwrap();
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ops, payload) = data.split_at((data.len() / 2).min(32));
    LOOP.with(|lp| {
        let (a, mut peer) = UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let h = lp.handle();
        let expected = payload.to_vec();
        let out = lp
            .run_until_complete(async move {
                let t = h
                    .connect_accepted_socket(|| Nop, socket_of(a))
                    .await
                    .unwrap();
                let mut s = TransportStream::new(&t);
                let mut got = Vec::new();
                let mut sent = 0;
                if payload.is_empty() {
                    peer.shutdown(std::net::Shutdown::Write).unwrap();
                }
                let mut i = 0;
                loop {
                    let op = ops[i % ops.len()];
                    i += 1;
                    // The peer sends the next chunk, then the stream takes
                    // some of what is there.
                    // (Non-blocking: when the stream stops reading at its
                    // limit the socket fills, and then this step reads.)
                    let mut full = false;
                    if sent < payload.len() {
                        let n = (1 + (op as usize & 0x1f) * 37).min(payload.len() - sent);
                        match peer.write(&payload[sent..sent + n]) {
                            Ok(k) => sent += k,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => full = true,
                            Err(e) => panic!("{e}"),
                        }
                        if sent == payload.len() {
                            peer.shutdown(std::net::Shutdown::Write).unwrap();
                        }
                    }
                    // Once everything is sent (or the socket is full), a
                    // read: the loop makes progress and ends.
                    let kind = if sent == payload.len() || full {
                        (op >> 5) % 5
                    } else {
                        op >> 5
                    };
                    match kind {
                        0 | 1 | 2 => {
                            let mut buf = vec![0; 1 + (op as usize & 0x3f)];
                            let n = s.read(&mut buf).await.unwrap();
                            if n == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        3 | 4 => {
                            let chunk = s.fill_buf().await.unwrap();
                            if chunk.is_empty() {
                                break;
                            }
                            let n = chunk.len().min(1 + (op as usize & 0x1f));
                            got.extend_from_slice(&chunk[..n]);
                            s.consume_unpin(n);
                        }
                        5 => s.set_read_limit(1 + (op as usize & 0x1f) * 100),
                        6 => {
                            // Apart and back together, unread bytes kept.
                            let parts = s.into_parts();
                            s = TransportStream::from_parts(parts);
                        }
                        _ => {
                            let (r, w) = s.split();
                            s = TransportStream::unsplit(r, w).unwrap();
                        }
                    }
                }
                got
            })
            .unwrap();
        assert_eq!(out, expected);
    });
});

fn socket_of(s: UnixStream) -> socket2::Socket {
    socket2::Socket::from(std::os::fd::OwnedFd::from(s))
}
