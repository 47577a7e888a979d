//! The bridge's own examples, run as users run them: `echo_async` (an
//! `async fn` echo server) and `mixed` (a callback handshake upgraded to an
//! async task), each against a plain socket client.

mod examples_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use examples_support::{ExampleServer, SAFETY};

fn connect(server: &ExampleServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s
}

/// Writes `input` (from a thread, so big inputs cannot deadlock), then EOF;
/// returns everything the server sent until it closed.
fn exchange(server: &ExampleServer, input: Vec<u8>) -> Vec<u8> {
    let s = connect(server);
    let mut writer = s.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        writer.write_all(&input).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    writing.join().unwrap();
    got
}

#[test]
fn echo_async_echoes_everything_then_closes() {
    let server = ExampleServer::start("echo_async", &[]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    assert!(exchange(&server, data.clone()) == data);
    assert!(exchange(&server, Vec::new()).is_empty());
}

#[test]
fn mixed_upgrades_after_the_handshake_without_losing_bytes() {
    let server = ExampleServer::start("mixed", &[]);
    // Handshake and conversation in one write: the upgrade must hand the
    // bytes after the handshake line to the async side.
    let got = exchange(&server, b"HELLO alice\nhow are you?\nfine\n".to_vec());
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "OK alice\nalice: HOW ARE YOU?\nalice: FINE\n"
    );
    // One byte at a time works too.
    let mut s = connect(&server);
    for b in b"HELLO bob\nhi\n" {
        s.write_all(&[*b]).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "OK bob\nbob: HI\n");
    // A bad handshake is refused by the callback side.
    assert_eq!(
        exchange(&server, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        b"ERR\n"
    );
}
