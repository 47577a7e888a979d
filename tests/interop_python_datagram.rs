//! CPython's asyncio datagram endpoint as the peer: an asyncio echo server
//! answers our client, and an asyncio client talks to our echo server.

mod dgram_support;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use dgram_support::{create, log, run_for, Ev, Hooks};
use sloop::EventLoop;
use support::KillOnDrop;

const ASYNCIO_ECHO_SERVER: &str = r#"
import asyncio, sys
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr): self.t.sendto(data, addr)
async def main():
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    print(t.get_extra_info("sockname")[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes
    t.close()
asyncio.run(main())
"#;

const ASYNCIO_CLIENT: &str = r#"
import asyncio, sys
N = int(sys.argv[2])
class Client(asyncio.DatagramProtocol):
    def __init__(self, done): self.done, self.got = done, []
    def connection_made(self, t):
        for i in range(N): t.sendto(b"py-%d" % i)
    def datagram_received(self, data, addr):
        self.got.append(data)
        if len(self.got) == N: self.done.set_result(self.got)
    def error_received(self, exc): self.done.set_exception(exc)
async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    t, p = await loop.create_datagram_endpoint(lambda: Client(done),
        remote_addr=("127.0.0.1", int(sys.argv[1])))
    got = await asyncio.wait_for(done, 10)
    t.close()
    print("ok" if sorted(got) == sorted(b"py-%d" % i for i in range(N)) else "bad", flush=True)
asyncio.run(main())
"#;

fn python() -> Option<Command> {
    Command::new("python3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| Command::new("python3"))
}

/// Our client sends 100 datagrams to an asyncio echo server and gets each
/// back, from the server's address.
#[test]
fn asyncio_echo_server_answers_sloop_client() {
    let Some(mut py) = python() else {
        eprintln!("python3 not found; skipped");
        return;
    };
    let child = py
        .args(["-c", ASYNCIO_ECHO_SERVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server: SocketAddr = format!("127.0.0.1:{}", line.trim()).parse().unwrap();

    const N: usize = 100;
    let lp = EventLoop::new().unwrap();
    let l = log();
    let h = lp.handle();
    let got = std::rc::Rc::new(std::cell::Cell::new(0));
    let t = create(
        &lp,
        lp.create_datagram_endpoint({
            let (l, got) = (l.clone(), got.clone());
            move || {
                Hooks::new(&l)
                    .made(|t| {
                        for i in 0..N {
                            t.send(format!("rs-{i}").as_bytes()).unwrap();
                        }
                    })
                    .data(move |_, _, _| {
                        got.set(got.get() + 1);
                        if got.get() == N {
                            h.stop();
                        }
                    })
            }
        })
        .remote_addr(server),
    )
    .unwrap();
    run_for(&lp, 10);
    let mut payloads: Vec<Vec<u8>> = l
        .borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::Data(d, from) => {
                assert_eq!(*from, server);
                Some(d.clone())
            }
            _ => None,
        })
        .collect();
    payloads.sort();
    let mut expected: Vec<Vec<u8>> = (0..N).map(|i| format!("rs-{i}").into_bytes()).collect();
    expected.sort();
    assert_eq!(payloads, expected);
    t.close();
    child.0.stdin.take().unwrap().write_all(b"").unwrap(); // closes stdin
    assert!(child.0.wait().unwrap().success());
}

/// An asyncio client sends 100 datagrams to our echo server and checks the
/// answers itself.
#[test]
fn sloop_echo_server_answers_asyncio_client() {
    let Some(mut py) = python() else {
        eprintln!("python3 not found; skipped");
        return;
    };
    let lp = EventLoop::new().unwrap();
    let t = create(
        &lp,
        lp.create_datagram_endpoint(|| {
            Hooks::new(&log()).data(|t, data, addr| t.sendto(data, Some(*addr)).unwrap())
        })
        .local_addr("127.0.0.1:0"),
    )
    .unwrap();
    let port = t.local_addr().unwrap().port().to_string();
    let child = py
        .args(["-c", ASYNCIO_CLIENT, &port, "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Serve until the client prints its verdict: a reader thread stops the
    // loop through Remote once the line is there.
    let remote = lp.remote();
    let stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let _ = remote.stop();
        line
    });
    run_for(&lp, 15);
    let verdict = reader.join().unwrap();
    assert_eq!(verdict.trim(), "ok");
    assert!(child.0.wait().unwrap().success());
    t.close();
}
