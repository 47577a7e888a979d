//! `Server::serve_forever` (asyncio's): it starts serving, completes once
//! the server is closed and its last connection has ended, refuses a
//! second concurrent call, and closes the server when dropped while it
//! serves (design D15: dropped at each point of its life).

mod support;

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::task::noop_waker;
use sloop::{EventLoop, Server, TransportStream};
use support::*;

/// An echo server that is not serving yet.
fn idle_server(lp: &EventLoop) -> (Server, SocketAddr) {
    let server = run(
        lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .start_serving(false),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Opens a client stream and checks that the server echoes on it.
async fn echoing_client(lp: &sloop::LoopHandle, addr: SocketAddr) -> TransportStream {
    let mut c = lp
        .open_connection(("127.0.0.1", addr.port()))
        .await
        .unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    c
}

/// Polls `fut` once, outside any task.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = noop_waker();
    Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

#[test]
fn serve_forever_starts_serving_and_ends_after_close_and_the_last_connection() {
    let lp = new_loop();
    let h = lp.handle();
    let (server, addr) = idle_server(&lp);
    assert!(!server.is_serving());
    let serving = lp.spawn_local(server.serve_forever());
    let mut client = run(&lp, echoing_client(&h, addr));
    assert!(server.is_serving(), "serve_forever started it");
    assert_eq!(server.connection_count(), 1);

    server.close();
    run(&lp, sloop::sleep(Duration::from_millis(10)));
    assert!(
        !serving.is_finished(),
        "closed, but a connection is still open"
    );
    // As in asyncio, close forgets the running call: a new one hears
    // "closed", not "already being awaited".
    assert!(matches!(
        run(&lp, server.serve_forever()),
        Err(sloop::Error::ServerClosed)
    ));
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");

    // The client hangs up; the echo server closes its side; the server has
    // no connection left and serve_forever completes.
    run(&lp, async move {
        client.close().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
    });
    run(&lp, serving).unwrap().unwrap();
    assert_eq!(server.connection_count(), 0);
}

#[test]
fn serve_forever_on_a_serving_server_completes_at_close_when_idle() {
    let lp = new_loop();
    let (server, _) = echo_server(&lp);
    assert!(server.is_serving());
    let s = server.clone();
    lp.call_later(Duration::from_millis(5), move || s.close())
        .unwrap();
    run(&lp, server.serve_forever()).unwrap();
    assert!(!server.is_serving());
    assert!(server.with_sockets(|s| s.is_empty()));
}

#[test]
fn a_second_serve_forever_at_once_is_refused_and_a_later_one_sees_the_close() {
    let lp = new_loop();
    let (server, addr) = idle_server(&lp);
    let mut first = server.serve_forever();
    assert!(poll_once(&mut first).is_pending());
    assert!(server.is_serving());

    // A second one only fails when polled: creating it claims nothing.
    let unpolled = server.serve_forever();
    drop(unpolled);
    let err = run(&lp, server.serve_forever()).unwrap_err();
    assert!(
        matches!(err, sloop::Error::AlreadyServingForever),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "server is already being awaited on serve_forever()"
    );
    assert!(server.is_serving(), "the refused call changed nothing");
    let h = lp.handle();
    drop(run(&lp, echoing_client(&h, addr)));

    server.close();
    // The dropped client's connection ends; then the first completes.
    run(&lp, first).unwrap();
    let err = run(&lp, server.serve_forever()).unwrap_err();
    assert!(matches!(err, sloop::Error::ServerClosed), "{err:?}");
    assert_eq!(err.to_string(), "server is closed");
    assert!(matches!(
        server.start_serving(),
        Err(sloop::Error::ServerClosed)
    ));
}

#[test]
fn serve_forever_dropped_before_its_first_poll_changes_nothing() {
    let lp = new_loop();
    let (server, addr) = idle_server(&lp);
    drop(server.serve_forever());
    assert!(!server.is_serving(), "not started");
    assert_eq!(server.with_sockets(|s| s.len()), 1, "not closed");

    // The unpolled future holds the server like a handle does: with every
    // Server handle gone, polling it still starts the server.
    let fut = server.serve_forever();
    drop(server);
    let serving = lp.spawn_local(fut);
    let h = lp.handle();
    drop(run(&lp, echoing_client(&h, addr)));
    assert!(!serving.is_finished());
    assert!(serving.cancel());
    assert!(run(&lp, serving).unwrap_err().is_cancelled());
    assert!(TcpStream::connect(addr).is_err(), "cancelled: closed");
}

#[test]
fn serve_forever_cancelled_while_serving_closes_the_server_not_its_connections() {
    let lp = new_loop();
    let h = lp.handle();
    let (server, addr) = idle_server(&lp);
    let serving = lp.spawn_local(server.serve_forever());
    let mut client = run(&lp, echoing_client(&h, addr));
    assert!(serving.cancel());
    let out = run(&lp, serving);
    assert!(out.unwrap_err().is_cancelled());
    assert!(!server.is_serving());
    assert!(
        server.with_sockets(|s| s.is_empty()),
        "closed, as asyncio does"
    );
    assert!(TcpStream::connect(addr).is_err());
    // The connection lives on.
    run(&lp, async {
        client.write_all(b"more").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"more");
    });
    assert_eq!(server.connection_count(), 1);
    // The flag went with it: a new call sees the close, not a rival.
    assert!(matches!(
        run(&lp, server.serve_forever()),
        Err(sloop::Error::ServerClosed)
    ));
}

#[test]
fn serve_forever_dropped_inside_a_callback_closes_the_server() {
    let lp = new_loop();
    let (server, addr) = idle_server(&lp);
    let mut fut = server.serve_forever();
    assert!(poll_once(&mut fut).is_pending());
    let s = server.clone();
    let (tx, rx) = futures::channel::oneshot::channel();
    lp.call_soon(move || {
        drop(fut);
        assert!(!s.is_serving());
        assert!(s.with_sockets(|s| s.is_empty()));
        tx.send(()).unwrap();
    })
    .unwrap();
    run(&lp, rx).unwrap();
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn serve_forever_dropped_after_close_with_connections_left_changes_nothing() {
    let lp = new_loop();
    let h = lp.handle();
    let (server, addr) = idle_server(&lp);
    let mut fut = server.serve_forever();
    assert!(poll_once(&mut fut).is_pending());
    let mut client = run(&lp, echoing_client(&h, addr));
    server.close();
    assert!(poll_once(&mut fut).is_pending(), "a connection is left");
    drop(fut);
    // The connection is untouched, and wait_closed still waits for it.
    let mut wait = server.wait_closed();
    assert!(poll_once(&mut wait).is_pending());
    run(&lp, async {
        client.write_all(b"echo").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
    });
    drop(client);
    run(&lp, wait);
    assert!(matches!(
        run(&lp, server.serve_forever()),
        Err(sloop::Error::ServerClosed)
    ));
}

#[test]
fn serve_forever_dropped_after_it_completed_changes_nothing() {
    let lp = new_loop();
    let (server, _) = idle_server(&lp);
    let mut fut = server.serve_forever();
    assert!(poll_once(&mut fut).is_pending());
    server.close();
    assert!(matches!(poll_once(&mut fut), Poll::Ready(Ok(()))));
    drop(fut);
    assert!(matches!(
        run(&lp, server.serve_forever()),
        Err(sloop::Error::ServerClosed)
    ));
}

#[test]
fn closing_the_loop_cancels_serve_forever_and_closes_the_server() {
    let lp = new_loop();
    let (server, addr) = idle_server(&lp);
    let serving = lp.spawn_local(server.serve_forever());
    let s = server.clone();
    run(&lp, until(move || s.is_serving()));
    lp.close().unwrap();
    assert!(serving.is_finished());
    assert!(futures::executor::block_on(serving)
        .unwrap_err()
        .is_cancelled());
    assert!(!server.is_serving());
    assert!(TcpStream::connect(addr).is_err());
}
