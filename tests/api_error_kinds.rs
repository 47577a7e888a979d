//! One `io::ErrorKind` per `sloop::Error` variant (issue 11): `Error::kind`
//! is the table, `From<Error> for io::Error` follows it, and the callback
//! transports, the async bridge and the `sock_*` functions report each
//! condition with the same kind, on real loopback sockets.

mod support;

use std::io::{self, ErrorKind};
use std::net::UdpSocket;

use futures::io::AsyncWriteExt;
use futures::{SinkExt, StreamExt};
use sloop::{DatagramSocket, Error, TransportStream};
use support::*;

/// The variant an `io::Error` made by sloop carries, if any.
fn inner(e: &io::Error) -> Option<&Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<Error>())
}

#[test]
fn every_variant_converts_with_its_own_kind() {
    let table = [
        (Error::ConnectionLost, ErrorKind::BrokenPipe),
        (Error::WriteAfterEof, ErrorKind::BrokenPipe),
        (
            Error::InvalidWriteLimits { high: 1, low: 2 },
            ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidAddress {
                expected: "127.0.0.1:9".into(),
            },
            ErrorKind::InvalidInput,
        ),
        (Error::AddressRequired, ErrorKind::InvalidInput),
        (
            Error::FdUsedByTransport {
                fd: 3,
                transport: "<t>".into(),
            },
            ErrorKind::InvalidInput,
        ),
        (Error::Closed, ErrorKind::Other),
        (Error::AlreadyRunning, ErrorKind::Other),
        (Error::AnotherLoopRunning, ErrorKind::Other),
        (Error::CloseWhileRunning, ErrorKind::Other),
        (Error::StoppedBeforeComplete, ErrorKind::Other),
        (Error::EmptyWaiterAlreadySet, ErrorKind::Other),
        (Error::EmptyBuffer, ErrorKind::Other),
        (Error::ServerClosed, ErrorKind::Other),
        (Error::AlreadyServingForever, ErrorKind::Other),
        (Error::SendfileInProgress, ErrorKind::Other),
        (
            Error::SendfileNotAvailable {
                reason: "not a regular file".into(),
            },
            ErrorKind::Unsupported,
        ),
        (
            Error::InvalidSendfileArgument {
                message: "count must be a positive integer (got 0)".into(),
            },
            ErrorKind::InvalidInput,
        ),
        (
            Error::Io(io::Error::from(ErrorKind::ConnectionReset)),
            ErrorKind::ConnectionReset,
        ),
    ];
    for (e, kind) in table {
        assert_eq!(e.kind(), kind, "{e:?}");
        let text = e.to_string();
        let is_io = matches!(e, Error::Io(_));
        let io_err = io::Error::from(e);
        assert_eq!(io_err.kind(), kind, "{text}");
        assert_eq!(io_err.to_string(), text);
        // The variant rides along, except for an OS error, which is itself.
        assert_eq!(inner(&io_err).is_some(), !is_io, "{text}");
    }
}

#[test]
fn a_write_on_a_closed_connection_is_broken_pipe_in_both_styles() {
    let lp = new_loop();
    // Callback style: the transport refuses with ConnectionLost.
    let (t, _peer) = connected(&lp, Echo::default());
    t.close();
    let refused = t.write(b"late").unwrap_err();
    assert!(matches!(refused, Error::ConnectionLost), "{refused:?}");
    assert_eq!(refused.kind(), ErrorKind::BrokenPipe);

    // Async style: the same condition, the same kind and variant.
    let (t, _peer) = connected(&lp, Echo::default());
    let mut stream = TransportStream::new(&t);
    t.close();
    let err = run(&lp, stream.write_all(b"late")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert!(
        matches!(inner(&err), Some(Error::ConnectionLost)),
        "{err:?}"
    );
}

#[test]
fn a_stream_write_after_its_close_is_broken_pipe_as_after_shutdown() {
    let lp = new_loop();
    let (t, mut peer) = connected(&lp, Echo::default());
    let mut stream = TransportStream::new(&t);
    // close() sends EOF and keeps the connection: like shutdown(Write).
    run(&lp, stream.close()).unwrap();
    let got = run(
        &lp,
        on_thread(move || {
            use std::io::Read;
            let mut rest = Vec::new();
            peer.read_to_end(&mut rest).map(|_| rest)
        }),
    )
    .unwrap();
    assert!(got.is_empty(), "the peer saw EOF");
    let err = run(&lp, stream.write_all(b"more")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert!(matches!(inner(&err), Some(Error::WriteAfterEof)), "{err:?}");

    // A std socket says the same after shutdown(Write).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let std_err = std::io::Write::write(&mut c, b"more").unwrap_err();
    assert_eq!(std_err.kind(), err.kind(), "{std_err}");
}

#[test]
fn a_closed_datagram_socket_refuses_sends_as_broken_pipe_and_ends_reads() {
    let lp = new_loop();
    let h = lp.handle();
    run(&lp, async move {
        let std_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = std_sock.local_addr().unwrap();
        let mut sock = DatagramSocket::from_std(&h, std_sock).unwrap();
        let t = sock.transport().clone();
        sock.close().await.unwrap();

        // The transport's own refusal and the socket's agree.
        let refused = t.sendto(b"late", Some(me)).unwrap_err();
        assert!(matches!(refused, Error::ConnectionLost), "{refused:?}");
        let err = sock.send_to(b"late", me).await.unwrap_err();
        assert_eq!(err.kind(), refused.kind(), "{err}");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        let err = sock.send((b"late".to_vec(), me)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");

        // Receiving ends: None from the Stream, EOF from recv_from.
        assert!(sock.next().await.is_none());
        let err = sock.recv_from().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    });
}

#[test]
fn the_loops_refusals_keep_their_kinds_through_sock_functions_and_question_mark() {
    let lp = new_loop();
    let h = lp.handle();
    // add_reader on a fd a transport owns: FdUsedByTransport, InvalidInput
    // once `?` turns it into an io::Error.
    let (t, _peer) = connected(&lp, Echo::default());
    let fd = t.as_raw_fd().unwrap();
    let add = || -> io::Result<()> {
        h.add_reader(&fd, || {})?;
        Ok(())
    };
    let err = add().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    match inner(&err) {
        Some(Error::FdUsedByTransport { fd: got, .. }) => assert_eq!(*got, fd),
        other => panic!("{other:?}"),
    }
    t.close();

    // sock_recv on a closed loop: Closed, Other.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    drop(lp);
    let err = futures::executor::block_on(async {
        let mut buf = [0u8; 4];
        h.sock_recv_into(&a, &mut buf).await.unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(matches!(inner(&err), Some(Error::Closed)), "{err:?}");
}
