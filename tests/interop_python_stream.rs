//! CPython's asyncio as the peer: echo and half-close both ways.
//! Skipped (with a message) when `python3` is missing.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::*;

/// An asyncio echo server; `keep_open` is what its eof_received returns
/// (true: it sends "done:<n>" after our EOF, then closes).
const PY_SERVER: &str = r#"
import asyncio, sys
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.n = 0
    def data_received(self, d): self.n += len(d); self.t.write(d)
    def eof_received(self):
        self.t.write(b"done:%d" % self.n)
        self.t.close()
        return True
async def main():
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(30)
asyncio.run(main())
"#;

/// An asyncio client: sends N bytes, half-closes, reads until EOF, prints
/// the byte count and whether the bytes matched.
const PY_CLIENT: &str = r#"
import asyncio, sys
async def main():
    port = int(sys.argv[1]); n = int(sys.argv[2])
    r, w = await asyncio.open_connection("127.0.0.1", port)
    data = bytes((i * 7 + i // 251) % 256 for i in range(n))
    w.write(data); await w.drain(); w.write_eof()
    got = await r.read()
    print(len(got), got == data, flush=True)
    w.close()
asyncio.run(main())
"#;

#[test]
fn python_server_echo_and_half_close() {
    if !have_python() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", PY_SERVER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = KillOnDrop(child);
    let port: u16 = line.trim().parse().unwrap();
    let lp = new_loop();
    let (p, rec) = Recorder::new();
    let t = run(&lp, lp.create_connection(move || p, ("127.0.0.1", port))).unwrap();
    let body = pattern(3_000_017);
    t.write(&body).unwrap();
    t.write_eof().unwrap();
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    let r = rec.borrow();
    let mut expect = body.clone();
    expect.extend_from_slice(format!("done:{}", body.len()).as_bytes());
    assert!(
        r.data == expect,
        "echo, then the reply after our half-close"
    );
    assert_eq!(r.count(|e| *e == Ev::Eof), 1);
    assert_eq!(r.events.last(), Some(&Ev::Lost(None)));
}

#[test]
fn python_client_against_our_echo_server() {
    if !have_python() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let lp = new_loop();
    let (server, addr) = echo_server(&lp);
    let port = addr.port().to_string();
    let out = run(
        &lp,
        on_thread(move || {
            Command::new("python3")
                .args(["-c", PY_CLIENT, &port, "2000003"])
                .output()
                .unwrap()
        }),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000003 True");
    let s = server.clone();
    run(&lp, until(move || s.connection_count() == 0));
    server.close();
}
