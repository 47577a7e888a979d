//! sloop's TLS against outside implementations: `openssl s_client` and
//! `s_server`, Python's `ssl` module as client and as server, `curl
//! --cacert` against `examples/hyper_server.rs --tls` (HTTP/1.1 and HTTP/2
//! by ALPN), and Python's `websockets` over wss against async-tungstenite
//! on a TLS `TransportStream`. Each test says "skipped" and passes if its
//! peer is not installed.
#![cfg(feature = "tls")]

mod examples_support;
mod support;
#[path = "tls_support/mod.rs"]
mod tls_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use examples_support::{have, run_with_timeout, ExampleServer};
use support::{new_loop, on_thread, pattern, run, until, Echo, Recorder};
use tls_support::Pki;

fn have_openssl() -> bool {
    let ok = have("openssl", &["version"]);
    if !ok {
        eprintln!("skipped: openssl is not installed");
    }
    ok
}

fn have_python_ssl() -> bool {
    let ok = have("python3", &["-c", "import ssl"]);
    if !ok {
        eprintln!("skipped: python3 with ssl is not installed");
    }
    ok
}

#[test]
fn openssl_s_client_talks_to_a_sloop_server() {
    if !have_openssl() {
        return;
    }
    let pki = Pki::new();
    let (ca, _, _) = pki.pem_files();
    let lp = new_loop();
    let server = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    // stdin stays open until the echo is back (s_client ends at its EOF).
    let echoed = run(
        &lp,
        on_thread(move || {
            let child = Command::new("openssl")
                .args(["s_client", "-connect"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-servername", "localhost", "-verify_return_error", "-quiet"])
                .arg("-CAfile")
                .arg(&ca)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut child = support::KillOnDrop(child);
            let mut stdin = child.0.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, b"hello from openssl\n").unwrap();
            let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
            let line = lines.next().map(|l| l.unwrap_or_default());
            drop(stdin);
            line
        }),
    );
    assert_eq!(echoed.as_deref(), Some("hello from openssl"));
    server.close();
}

#[test]
fn a_sloop_client_talks_to_openssl_s_server() {
    if !have_openssl() {
        return;
    }
    let pki = Pki::new();
    let (_, cert, key) = pki.pem_files();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // -rev: each line comes back reversed.
    let child = Command::new("openssl")
        .args(["s_server", "-rev", "-naccept", "1", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = support::KillOnDrop(child);
    // It prints ACCEPT once listening.
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("ACCEPT")),
        "s_server started"
    );
    let lp = new_loop();
    let (rec, r) = Recorder::new();
    let t = run(
        &lp,
        lp.create_connection(move || rec, ("127.0.0.1", port))
            .tls(pki.client(), "localhost"),
    )
    .unwrap();
    t.write(b"stressed\n").unwrap();
    run(&lp, until(|| r.borrow().data.ends_with(b"\n")));
    assert!(String::from_utf8_lossy(&r.borrow().data).contains("desserts"));
    t.close();
    run(&lp, until(|| r.borrow().lost()));
}

const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
msg = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(65536)
            assert chunk, "early EOF"
            got += chunk
        assert got == msg
        print("ok", s.version(), len(got))
"#;

#[test]
fn python_ssl_client_talks_to_a_sloop_server() {
    if !have_python_ssl() {
        return;
    }
    let pki = Pki::new();
    let (ca, _, _) = pki.pem_files();
    let lp = new_loop();
    let server = run(
        &lp,
        lp.create_server(Echo::default, "127.0.0.1:0")
            .tls(pki.server()),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    let out = run(
        &lp,
        on_thread(move || {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", PY_CLIENT, &port.to_string()]).arg(&ca);
            run_with_timeout(cmd, b"")
        }),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok TLSv1.3 1048576"
    );
    server.close();
}

const PY_SERVER: &str = r#"
import socket, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
with socket.create_server(("127.0.0.1", 0)) as srv:
    print(srv.getsockname()[1], flush=True)
    raw, _ = srv.accept()
    raw.settimeout(20)
    with ctx.wrap_socket(raw, server_side=True) as s:
        total = 0
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break  # close_notify
            s.sendall(chunk)
            total += len(chunk)
        s.unwrap()  # answer close_notify with ours
        print("served", total, flush=True)
"#;

#[test]
fn a_sloop_client_talks_to_a_python_ssl_server() {
    if !have_python_ssl() {
        return;
    }
    let pki = Pki::new();
    let (_, cert, key) = pki.pem_files();
    let child = Command::new("python3")
        .args(["-c", PY_SERVER])
        .arg(&cert)
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = support::KillOnDrop(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let lp = new_loop();
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let lost = std::rc::Rc::new(std::cell::RefCell::new(None));
    let (g, l) = (got.clone(), lost.clone());
    struct Client {
        msg: Vec<u8>,
        got: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        lost: std::rc::Rc<std::cell::RefCell<Option<bool>>>,
        t: Option<sloop::Transport>,
    }
    impl sloop::Protocol for Client {
        fn connection_made(&mut self, t: &sloop::Transport) {
            t.write(&self.msg).unwrap();
            self.t = Some(t.clone());
        }
        fn data_received(&mut self, d: &[u8]) {
            let mut g = self.got.borrow_mut();
            g.extend_from_slice(d);
            if g.len() == self.msg.len() {
                self.t.as_ref().unwrap().close();
            }
        }
        fn connection_lost(&mut self, exc: Option<std::io::Error>) {
            *self.lost.borrow_mut() = Some(exc.is_none());
        }
    }
    let msg = pattern(1 << 20);
    let m = msg.clone();
    run(
        &lp,
        lp.create_connection(
            move || Client {
                msg: m,
                got: g,
                lost: l,
                t: None,
            },
            ("127.0.0.1", port),
        )
        .tls(pki.client(), "localhost"),
    )
    .unwrap();
    run(&lp, until(|| lost.borrow().is_some()));
    assert_eq!(*lost.borrow(), Some(true), "a clean end");
    assert!(*got.borrow() == msg);
    let rest = run(
        &lp,
        on_thread(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).map(|_| s)
        }),
    )
    .unwrap();
    assert_eq!(rest.trim(), format!("served {}", 1 << 20));
}

fn curl_https(server: &ExampleServer, ca: &std::path::Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        " %{http_code} %{http_version}",
    ])
    .args(extra)
    .arg("--cacert")
    .arg(ca)
    .arg(format!("https://127.0.0.1:{}/", server.addr.port()));
    let out = run_with_timeout(cmd, b"");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_cacert_against_hyper_over_tls_http1_and_h2() {
    if !have("curl", &["--version"]) {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let pki = Pki::new();
    let (ca, cert, key) = pki.pem_files();
    let mut server = ExampleServer::start(
        "hyper_server",
        &["--tls", cert.to_str().unwrap(), key.to_str().unwrap()],
    );
    let h1 = curl_https(&server, &ca, &["--http1.1"]);
    assert!(h1.ends_with(" 200 1.1"), "{h1}");
    let h2 = curl_https(&server, &ca, &["--http2"]);
    assert!(h2.ends_with(" 200 2"), "ALPN chose h2: {h2}");
    // Without the CA, curl refuses the certificate.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"])
        .arg(format!("https://127.0.0.1:{}/", server.addr.port()));
    let out = run_with_timeout(cmd, b"");
    assert!(!out.status.success(), "an untrusted certificate is refused");
    server.assert_running();
}

const WSS_CLIENT: &str = r#"
import ssl, sys
from websockets.sync.client import connect
uri, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
kwargs = dict(ssl=ctx, max_size=2 ** 21, open_timeout=20, close_timeout=20)
try:
    ws = connect(uri, proxy=None, **kwargs)
except TypeError:  # websockets < 15 has no proxy argument
    ws = connect(uri, **kwargs)
n = 0
for size in [0, 1, 125, 126, 65536, 1 << 20]:
    b = bytes(i % 251 for i in range(size))
    ws.send(b)
    assert ws.recv(timeout=20) == b
    ws.send("é" * size)
    assert ws.recv(timeout=20) == "é" * size
    n += 2
ws.close()
print("ok", n, ws.close_code)
"#;

#[test]
fn python_websockets_over_wss() {
    if !have("python3", &["-c", "import websockets.sync.client, ssl"]) {
        eprintln!("skipped: python3 with `websockets` (>= 12) is not installed");
        return;
    }
    use futures::StreamExt;
    let pki = Pki::new();
    let (ca, _, _) = pki.pem_files();
    let lp = new_loop();
    let server = run(
        &lp,
        lp.start_server(
            |stream: sloop::TransportStream| async move {
                let Ok(mut ws) = async_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            },
            "127.0.0.1:0",
        )
        .tls(pki.server()),
    )
    .unwrap();
    let port = server.local_addrs()[0].port();
    let out = run(
        &lp,
        on_thread(move || {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", WSS_CLIENT, &format!("wss://localhost:{port}/")])
                .arg(&ca);
            run_with_timeout(cmd, b"")
        }),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 12 1000");
    server.close();
}

#[test]
fn the_tls_echo_example_with_files_and_self_signed() {
    let pki = Pki::new();
    let (_, cert, key) = pki.pem_files();
    let lp = new_loop();
    for (files, client) in [
        (true, pki.client()),
        (false, sloop::tls::danger::no_verification()),
    ] {
        let args: Vec<&str> = if files {
            vec![cert.to_str().unwrap(), key.to_str().unwrap()]
        } else {
            vec![]
        };
        let mut server = ExampleServer::start("tls_echo", &args);
        let (rec, r) = Recorder::new();
        let t = run(
            &lp,
            lp.create_connection(move || rec, server.addr)
                .tls(client, "localhost"),
        )
        .unwrap();
        t.write(b"through the example").unwrap();
        run(&lp, until(|| r.borrow().data == b"through the example"));
        t.close();
        run(&lp, until(|| r.borrow().lost()));
        server.assert_running();
    }
}
