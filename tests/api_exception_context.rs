//! The typed fields of `ExceptionContext` (issue 11): the transport a
//! report is about (kind, fd, addresses) and the task (name, where it was
//! spawned), filled by the loop from real loopback sockets; `Display`
//! keeps asyncio's layout.

mod support;

use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use sloop::{
    Address, DatagramProtocol, EventLoop, ExceptionContext, LoopHandle, Protocol, TaskInfo,
    TransportInfo, TransportKind,
};
use support::*;

/// Keeps every report: message, exception text, transport, task, and the
/// whole `Display`.
type Reports = Rc<
    RefCell<
        Vec<(
            String,
            String,
            Option<TransportInfo>,
            Option<TaskInfo>,
            String,
        )>,
    >,
>;

fn capture(lp: &EventLoop) -> Reports {
    let reports = Reports::default();
    let r = reports.clone();
    lp.set_exception_handler(Some(move |_: &LoopHandle, ctx: &ExceptionContext| {
        let exc = ctx
            .exception
            .as_ref()
            .map_or(String::new(), |e| e.to_string());
        r.borrow_mut().push((
            ctx.message.clone(),
            exc,
            ctx.transport.clone(),
            ctx.task.clone(),
            ctx.to_string(),
        ));
    }));
    reports
}

struct PanicsOnData;

impl Protocol for PanicsOnData {
    fn data_received(&mut self, _: &[u8]) {
        panic!("bad request");
    }
}

#[test]
fn a_protocol_panic_names_the_tcp_transport_and_its_peer() {
    let lp = lenient_loop();
    let reports = capture(&lp);
    let server = run(&lp, lp.create_server(|| PanicsOnData, "127.0.0.1:0")).unwrap();
    let server_addr = server.local_addrs()[0];
    let mut client = TcpStream::connect(server_addr).unwrap();
    client.write_all(b"GET").unwrap();
    let r = reports.clone();
    run(&lp, until(move || !r.borrow().is_empty()));

    let reports = reports.borrow();
    let (message, exc, transport, task, text) = &reports[0];
    assert_eq!(
        message,
        "Fatal error: protocol.data_received() call failed."
    );
    assert_eq!(exc, "panic: bad request");
    assert!(task.is_none());
    let t = transport.as_ref().expect("the transport is named");
    assert_eq!(t.kind, TransportKind::Tcp);
    assert!(t.fd.is_some_and(|fd| fd >= 0), "{t:?}");
    assert_eq!(t.local_addr, Some(Address::Inet(server_addr)));
    assert_eq!(
        t.peer_addr,
        Some(Address::Inet(client.local_addr().unwrap())),
        "the client that sent the data"
    );
    // asyncio's layout: message, then sorted `key: value` lines.
    let fd = t.fd.unwrap();
    assert!(
        text.starts_with(&format!(
            "Fatal error: protocol.data_received() call failed.\n\
             exception: panic: bad request\n\
             protocol: protocol\n\
             transport: <SocketTransport tcp fd={fd} "
        )),
        "{text}"
    );
    server.close();
}

/// Panics on every datagram.
struct PanicsOnDatagram;

impl DatagramProtocol for PanicsOnDatagram {
    fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {
        panic!("bad datagram");
    }
}

#[test]
fn a_datagram_protocol_panic_names_the_udp_transport() {
    let lp = lenient_loop();
    let reports = capture(&lp);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let t = run(
        &lp,
        lp.create_datagram_endpoint(|| PanicsOnDatagram)
            .socket(sock),
    )
    .unwrap();
    let fd = t.raw_fd();
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"x", addr)
        .unwrap();
    let r = reports.clone();
    run(&lp, until(move || !r.borrow().is_empty()));

    let reports = reports.borrow();
    let (_, exc, transport, _, _) = &reports[0];
    assert_eq!(exc, "panic: bad datagram");
    let info = transport.as_ref().expect("the transport is named");
    assert_eq!(info.kind, TransportKind::Udp);
    assert_eq!(info.fd, fd);
    assert_eq!(info.local_addr, Some(Address::Inet(addr)));
    assert_eq!(info.peer_addr, None, "not connected");
    assert!(info.to_string().starts_with("<DatagramTransport"), "{info}");
    // The same description, made from the transport for a report of one's own.
    let mine = TransportInfo::from(&t);
    assert_eq!(
        (mine.kind, mine.local_addr),
        (TransportKind::Udp, info.local_addr.clone())
    );
}

#[test]
fn an_unretrieved_task_panic_names_the_task_and_where_it_was_spawned() {
    let lp = lenient_loop();
    let reports = capture(&lp);
    let line = line!() + 1;
    lp.spawn_local_named("worker-7", async { panic!("out of work") })
        .detach();
    let held = lp.spawn_local(async { panic!("held") });
    let named = TaskInfo::from(&held);
    run(&lp, sloop::sleep(Duration::from_millis(1)));
    drop(held);

    let reports = reports.borrow();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let (message, exc, transport, task, text) = &reports[0];
    assert_eq!(message, "Task exception was never retrieved");
    assert_eq!(exc, "panic: out of work");
    assert!(transport.is_none());
    let task = task.as_ref().expect("the task is named");
    assert_eq!(task.name, "worker-7");
    assert!(task.spawned_at.file().ends_with("api_exception_context.rs"));
    assert_eq!(task.spawned_at.line(), line);
    assert!(
        text.ends_with(&format!(
            "task: <Task name='worker-7' spawned at {}>",
            task.spawned_at
        )),
        "{text}"
    );
    // The held task, reported when dropped, under the name From<&Task> gave.
    assert_eq!(reports[1].3.as_ref(), Some(&named));
    assert!(matches!(
        ExceptionContext::new("x").with_task(&lp.spawn_local(async {})).task,
        Some(TaskInfo { ref name, .. }) if name.starts_with("Task-")
    ));
}
