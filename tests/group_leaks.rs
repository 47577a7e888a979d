//! No thread and no fd is left after a `LoopGroup` shuts down or is
//! dropped. A test binary of its own with one test: it counts the whole
//! process's threads (`/proc/self/task`) and fds (`/proc/self/fd`), which
//! other tests running in parallel would change.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use sloop::group::LoopGroup;
use sloop::{DatagramProtocol, DatagramTransport, Protocol, Transport};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// The process's (threads, fds). A joined thread can still be listed for
/// a moment after `pthread_join` returns (the kernel wakes the joiner
/// before it removes the task), and nothing can wait for that: look again
/// a bounded number of times until the counts come back to `base`.
fn settled(base: (usize, usize)) -> (usize, usize) {
    let mut now = (0, 0);
    for _ in 0..2000 {
        now = (count("/proc/self/task"), count("/proc/self/fd"));
        if now == base {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    now
}

struct Echo(Option<Transport>);
impl Protocol for Echo {
    fn connection_made(&mut self, t: &Transport) {
        self.0 = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        let _ = self.0.as_ref().unwrap().write(data);
    }
}

struct UdpEcho(Option<DatagramTransport>);
impl DatagramProtocol for UdpEcho {
    fn connection_made(&mut self, t: &DatagramTransport) {
        self.0 = Some(t.clone());
    }
    fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
        let _ = self.0.as_ref().unwrap().sendto(data, Some(from));
    }
}

fn echo(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0; 1];
    c.read_exact(&mut b).unwrap();
    c
}

/// Starts a group serving every way, with live clients; returns it and
/// the clients.
fn busy_group() -> (LoopGroup, Vec<TcpStream>, UdpSocket) {
    let group = LoopGroup::new(4).unwrap();
    let tcp = group.start_server(|| Echo(None), "127.0.0.1:0").unwrap();
    let rr = group
        .start_server_round_robin(
            || Echo(None),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        )
        .unwrap();
    let udp = group
        .create_datagram_endpoint(|| UdpEcho(None), "127.0.0.1:0")
        .unwrap();
    group.spawn_on_each(|lp| {
        lp.call_later(Duration::from_secs(3600), || {}).unwrap();
    });
    let mut clients: Vec<TcpStream> = (0..20).map(|_| echo(tcp.local_addrs()[0])).collect();
    clients.extend((0..20).map(|_| echo(rr.local_addrs()[0])));
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(b"x", udp.local_addr()).unwrap();
    let mut b = [0; 1];
    u.recv(&mut b).unwrap();
    (group, clients, u)
}

#[test]
fn no_thread_or_fd_left() {
    let base = (count("/proc/self/task"), count("/proc/self/fd"));

    // Shut down with live clients: aborted at the deadline.
    let (group, clients, u) = busy_group();
    assert_eq!(count("/proc/self/task"), base.0 + 4);
    let report = group.shutdown(Duration::from_millis(10));
    assert_eq!(report.aborted(), 40, "{report:?}");
    drop((clients, u));
    assert_eq!(settled(base), base, "after shutdown");

    // Shut down after the clients left: clean.
    let (group, clients, u) = busy_group();
    drop((clients, u));
    let report = group.shutdown(Duration::from_secs(20));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(settled(base), base, "after a clean shutdown");

    // Dropped without a shutdown.
    let (group, clients, u) = busy_group();
    drop(group);
    drop((clients, u));
    assert_eq!(settled(base), base, "after a drop");
}
