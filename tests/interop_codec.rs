//! `examples/codec_lines.rs` (asynchronous-codec's `Framed` + `LinesCodec`
//! on the bridge) against a plain `std::net::TcpStream` client.

mod examples_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use examples_support::{ExampleServer, SAFETY};

fn connect(server: &ExampleServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s.set_write_timeout(Some(SAFETY)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `input` in the given pieces (each its own `write`, with no delay
/// needed: the server must reassemble lines however they arrive), then
/// EOF; returns everything the server sent until it closed.
fn exchange(server: &ExampleServer, pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = connect(server);
    let mut reader = s.try_clone().unwrap();
    // Read on a thread while writing, so a large exchange cannot deadlock
    // on full socket buffers.
    let reading = std::thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).map(|_| got)
    });
    for p in pieces {
        s.write_all(p).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    reading
        .join()
        .unwrap()
        .expect("read until the server closes")
}

#[test]
fn lines_split_at_odd_places_come_back_upper_cased_in_order() {
    let server = ExampleServer::start("codec_lines", &[]);
    let mut s = connect(&server);
    // Each piece, then the replies it completes. Waiting for those replies
    // before the next piece makes sure the server really got the pieces
    // apart: the codec holds `wor`, then `ld\r`, then half of `é` (0xC3
    // 0xA9) while the next piece is still unsent.
    let steps: &[(&[u8], &str)] = &[
        (b"hel", ""),
        (b"lo\nwor", "HELLO\n"),
        (b"ld\r", ""),
        (
            b"\n\nthree\nlines\nin one write\ncaf\xC3",
            "WORLD\r\n\nTHREE\nLINES\nIN ONE WRITE\n",
        ),
        (b"\xA9 cr\xC3", ""),
        (b"\xA8me\nl", "CAFÉ CRÈME\n"),
        (b"a", ""),
        (b"st\n", "LAST\n"),
    ];
    for (piece, reply) in steps {
        s.write_all(piece).unwrap();
        let mut got = vec![0; reply.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), *reply);
    }
    // EOF: the server closes its side after the last reply, sending
    // nothing more.
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after EOF, got {rest:?}");
}

#[test]
fn ten_thousand_lines_and_a_line_larger_than_the_read_limit() {
    let server = ExampleServer::start("codec_lines", &[]);
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!("line {i} of many\n"));
    }
    // 300 KB in one line: more than the stream's 64 KiB read limit, so
    // reading pauses and resumes while the codec waits for the newline.
    let long: String = (0..300_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    input.push_str(&long);
    input.push('\n');
    input.push_str("end\n");
    // Cut into 7919-byte pieces: prime, so the cuts fall everywhere.
    let pieces: Vec<&[u8]> = input.as_bytes().chunks(7919).collect();
    let got = exchange(&server, &pieces);
    assert_eq!(got.len(), input.len());
    assert!(
        String::from_utf8(got).unwrap() == input.to_uppercase(),
        "echo differs"
    );
}

#[test]
fn several_clients_at_once_each_get_their_own_lines() {
    let server = ExampleServer::start("codec_lines", &[]);
    let mut clients: Vec<(TcpStream, String)> = (0..8)
        .map(|c| (connect(&server), format!("client {c} says hi\n")))
        .collect();
    // Every client writes before any reads: the single-threaded server
    // has all of them open at once.
    for (s, line) in &mut clients {
        s.write_all(line.as_bytes()).unwrap();
    }
    for (s, line) in &mut clients {
        let mut buf = vec![0; line.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, line.to_uppercase().as_bytes());
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "nothing after EOF, got {rest:?}");
    }
}
