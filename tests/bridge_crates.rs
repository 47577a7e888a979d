//! The bridge under crates users already know: `futures-rustls` over a
//! plain `TransportStream` (TLS as a second route, in the futures-io
//! world), and `async-compression`'s gzip over the stream's
//! `AsyncBufRead`, checked against `gunzip` and Python's `gzip`.

#![cfg(feature = "tls")]

mod support;
#[path = "tls_support/mod.rs"]
mod tls_support;

use std::io::{self, Write};
use std::process::{Command, Stdio};

use futures::{AsyncReadExt, AsyncWriteExt};
use sloop::tls::rustls::pki_types::ServerName;
use sloop::TransportStream;
use support::{new_loop, pattern, run};
use tls_support::Pki;

#[test]
fn futures_rustls_over_a_plain_transport_stream() {
    let pki = Pki::new();
    let lp = new_loop();
    let acceptor = futures_rustls::TlsAcceptor::from(pki.server());
    let server = run(
        &lp,
        lp.start_server(
            move |stream: TransportStream| {
                let acceptor = acceptor.clone();
                async move {
                    let mut tls = acceptor.accept(stream).await.unwrap();
                    let mut buf = vec![0; 64 * 1024];
                    loop {
                        let n = tls.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        tls.write_all(&buf[..n]).await.unwrap();
                    }
                    tls.close().await.unwrap();
                }
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let connector = futures_rustls::TlsConnector::from(pki.client());
    let h = lp.handle();
    let ok = run(&lp, async move {
        let plain = h.open_connection(addr).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), plain)
            .await?;
        let msg = pattern(2_000_000);
        // Write and read at once: the echo must not wait for the end.
        let (mut r, mut w) = tls.split();
        let writer = async {
            w.write_all(&msg).await?;
            w.close().await
        };
        let reader = async {
            let mut back = Vec::new();
            r.read_to_end(&mut back).await?;
            Ok::<_, io::Error>(back)
        };
        let ((), back) = futures::future::try_join(writer, reader).await?;
        Ok::<_, io::Error>(back == msg)
    })
    .unwrap();
    assert!(ok, "2 MB echoed through futures-rustls on the bridge");
    server.close();
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Decompresses `gz` with `program args`, fed on stdin.
fn decompress_with(program: &str, args: &[&str], gz: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = gz.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{program} failed");
    out.stdout
}

#[test]
fn async_compression_gzip_over_the_streams_async_buf_read() {
    use async_compression::futures::bufread::{GzipDecoder, GzipEncoder};
    let lp = new_loop();
    // The server gzips what it reads, straight from the stream's buffer.
    let server = run(
        &lp,
        lp.start_server(
            |mut stream: TransportStream| async move {
                let mut gz = Vec::new();
                GzipEncoder::new(&mut stream)
                    .read_to_end(&mut gz)
                    .await
                    .unwrap();
                stream.write_all(&gz).await.unwrap();
                stream.close().await.unwrap();
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {i} of a compressible text\n").into_bytes())
        .collect();
    let t2 = text.clone();
    let h = lp.handle();
    let gz = run(&lp, async move {
        let mut s = h.open_connection(addr).await?;
        s.write_all(&t2).await?;
        s.close().await?; // EOF ends the gzip stream
        let mut gz = Vec::new();
        s.read_to_end(&mut gz).await?;
        Ok::<_, io::Error>(gz)
    })
    .unwrap();
    assert!(gz.len() < text.len() / 5, "it compressed");
    if have("gunzip", "--version") {
        assert!(
            decompress_with("gunzip", &["-c"], &gz) == text,
            "gunzip agrees"
        );
    } else {
        eprintln!("skipped: gunzip is not installed");
    }
    if have("python3", "--version") {
        let py =
            "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
        assert!(
            decompress_with("python3", &["-c", py], &gz) == text,
            "Python agrees"
        );
    } else {
        eprintln!("skipped: python3 is not installed");
    }
    // And back: a client decodes gzip from the stream's buffer.
    let server = run(
        &lp,
        lp.start_server(
            move |mut stream: TransportStream| {
                let gz = gz.clone();
                async move {
                    stream.write_all(&gz).await.unwrap();
                    stream.close().await.unwrap();
                }
            },
            "127.0.0.1:0",
        ),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let h = lp.handle();
    let plain = run(&lp, async move {
        let mut s = h.open_connection(addr).await?;
        let mut out = Vec::new();
        GzipDecoder::new(&mut s).read_to_end(&mut out).await?;
        Ok::<_, io::Error>(out)
    })
    .unwrap();
    assert!(plain == text, "decoded over the bridge");
    server.close();
}
