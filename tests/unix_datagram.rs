//! Unix datagram endpoints: path addresses, socket pairs, stale socket
//! files.

mod dgram_support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use dgram_support::{create, log, run_for, Ev, Hooks};
use sloop::{Error, EventLoop, UnixAddr};

/// Two endpoints bound to paths talk to each other; each sees the other's
/// path as the sender; a connected one refuses other paths.
#[test]
fn round_trip_between_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("server.sock");
    let client_path = dir.path().join("client.sock");
    let lp = EventLoop::new().unwrap();

    let slog = log::<UnixAddr>();
    let server = create(
        &lp,
        lp.create_unix_datagram_endpoint({
            let slog = slog.clone();
            move || {
                Hooks::new(&slog).data(|t, data, addr| {
                    let mut reply = b"echo:".to_vec();
                    reply.extend_from_slice(data);
                    t.sendto(&reply, Some(addr.clone())).unwrap();
                })
            }
        })
        .local_addr(&server_path),
    )
    .unwrap();
    assert_eq!(
        server.local_addr(),
        Some(UnixAddr::Path(server_path.clone()))
    );
    assert_eq!(server.peer_addr(), None);

    let clog = log::<UnixAddr>();
    let h = lp.handle();
    let client = create(
        &lp,
        lp.create_unix_datagram_endpoint({
            let clog = clog.clone();
            move || {
                Hooks::new(&clog)
                    .made(|t| {
                        t.send(b"one").unwrap();
                        t.send(b"").unwrap();
                    })
                    .data(move |_, data, _| {
                        if data == b"echo:" {
                            h.stop();
                        }
                    })
            }
        })
        .local_addr(&client_path)
        .remote_addr(&server_path),
    )
    .unwrap();
    assert_eq!(
        client.peer_addr(),
        Some(UnixAddr::Path(server_path.clone()))
    );
    let err = client
        .sendto(b"x", Some(UnixAddr::Path(dir.path().join("other"))))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidAddress { .. }), "{err:?}");
    run_for(&lp, 5);

    let from_client = UnixAddr::Path(client_path.clone());
    assert_eq!(
        *slog.borrow(),
        vec![
            Ev::Made,
            Ev::Data(b"one".to_vec(), from_client.clone()),
            Ev::Data(b"".to_vec(), from_client),
        ]
    );
    let from_server = UnixAddr::Path(server_path.clone());
    assert_eq!(
        *clog.borrow(),
        vec![
            Ev::Made,
            Ev::Data(b"echo:one".to_vec(), from_server.clone()),
            Ev::Data(b"echo:".to_vec(), from_server),
        ]
    );
    client.close();
    server.close();
}

/// A stale socket file at the local path is replaced (asyncio does that);
/// a regular file is not touched and binding fails.
#[test]
fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixDatagram::bind(&path).unwrap()); // leaves the file behind
    assert!(path.exists());
    let lp = EventLoop::new().unwrap();
    let t = create(
        &lp,
        lp.create_unix_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(&path),
    )
    .expect("the stale file is removed first");
    let peer = UnixDatagram::unbound().unwrap();
    peer.send_to(b"alive", &path).unwrap();
    t.close();

    let file = dir.path().join("regular");
    std::fs::write(&file, b"keep me").unwrap();
    let err = create(
        &lp,
        lp.create_unix_datagram_endpoint(|| Hooks::new(&log()))
            .local_addr(&file),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// A socket pair: unnamed addresses; the peer's datagrams arrive and
/// replies go back through `send`; close gives connection_lost once.
#[test]
fn socketpair_endpoint() {
    let (mine, peer) = UnixDatagram::pair().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let lp = EventLoop::new().unwrap();
    let l = log::<UnixAddr>();
    let h = lp.handle();
    let t = create(
        &lp,
        lp.create_unix_datagram_endpoint({
            let l = l.clone();
            move || {
                Hooks::new(&l)
                    .data(|t, data, _| {
                        t.send(&data.to_ascii_uppercase()).unwrap();
                        t.close();
                    })
                    .lost(move || h.stop())
            }
        })
        .socket(mine),
    )
    .unwrap();
    peer.send(b"shout").unwrap();
    run_for(&lp, 5);
    let mut buf = [0; 16];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"SHOUT");
    assert_eq!(
        *l.borrow(),
        vec![
            Ev::Made,
            Ev::Data(b"shout".to_vec(), UnixAddr::Unnamed),
            Ev::Lost(None)
        ]
    );
    assert!(t.is_closing());
    assert_eq!(t.raw_fd(), None);
}

/// Linux's abstract namespace: no file, the name comes back as the sender.
#[cfg(target_os = "linux")]
#[test]
fn abstract_addresses() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("sloop-test-{}", std::process::id()).into_bytes();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let peer = UnixDatagram::bind_addr(&addr).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let lp = EventLoop::new().unwrap();
    let t = create(&lp, lp.create_unix_datagram_endpoint(|| Hooks::new(&log()))).unwrap();
    t.sendto(b"abs", Some(UnixAddr::Abstract(name.clone())))
        .unwrap();
    let mut buf = [0; 8];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abs");
    t.close();
}
