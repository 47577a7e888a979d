//! Soak and churn: servers and clients on one or more loops for a given
//! time, every byte checked end to end (issue 16's reliability suite).
//!
//! Each loop (one thread each) runs a callback echo server (a `Protocol`
//! that pauses reading while its writes are paused) and an async echo
//! server (`start_server` copying the stream back), and clients that
//! connect to any loop's servers with random sizes, random chunks, pauses,
//! slow reading and deliberate aborts. Each client hashes what it sent and
//! what came back; a difference is a verification error. Every 10 s, and
//! at the end, one line: connections served, bytes verified, errors, peak
//! RSS, open fds and RSS growth over the last minute.
//!
//! ```text
//! cargo run --release --example soak -- --secs 600 [--loops 2] [--clients 32] [--churn 10000]
//! ```
//!
//! `--churn N` first makes N short connections from a plain thread against
//! both servers (a third each: clean close, RST, reset in the middle of a
//! large echo) and prints fds and RSS before and after. Traffic stays on
//! 127.0.0.1. Exit status 1 if any byte failed to verify.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use sloop::{EventLoop, LoopHandle, Protocol, Transport, TransportStream};

#[derive(Default)]
struct Stats {
    served: AtomicU64,
    clients_done: AtomicU64,
    bytes_verified: AtomicU64,
    aborted: AtomicU64,
    errors: AtomicU64,
    loops_done: AtomicUsize,
}

/// xorshift64*: a small, seeded generator (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Log-uniform size in 1..=max: many small, some large.
    fn size(&mut self, max: u64) -> usize {
        let bits = 64 - max.leading_zeros() as u64;
        let b = self.below(bits) + 1;
        (self.below(1 << b).min(max - 1) + 1) as usize
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
    }
}

/// The callback server: echo, reading paused while writing is.
struct Echo {
    t: Option<Transport>,
    stats: Arc<Stats>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: &Transport) {
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        self.t = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        let _ = self.t.as_ref().unwrap().write(data);
    }
    fn pause_writing(&mut self) {
        self.t.as_ref().unwrap().pause_reading();
    }
    fn resume_writing(&mut self) {
        self.t.as_ref().unwrap().resume_reading();
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.t = None;
    }
}

/// One client connection: returns the bytes verified, `None` if aborted
/// on purpose, `Err` on a verification or unexpected error.
async fn one_client(lp: &LoopHandle, addr: SocketAddr, rng: &mut Rng) -> io::Result<Option<usize>> {
    let stream = lp.open_connection(addr).await?;
    let transport = stream.transport().clone();
    let (mut r, mut w) = stream.split();
    let total = rng.size(1 << 20);
    let mode = rng.below(8); // 0: slow reader, 1: pausing writer, 2: abort, else plain
    let abort_at = if mode == 2 {
        rng.below(total as u64) as usize
    } else {
        usize::MAX
    };
    let mut wrng = Rng(rng.next() | 1);
    let mut sent_hash = DefaultHasher::new();
    let writer = async {
        let mut left = total;
        let mut buf = vec![0; 64 << 10];
        while left > 0 {
            let n = wrng.size(64 << 10).min(left);
            wrng.fill(&mut buf[..n]);
            sent_hash.write(&buf[..n]);
            w.write_all(&buf[..n]).await?;
            left -= n;
            if total - left >= abort_at {
                transport.abort();
                return Ok(false);
            }
            if mode == 1 && wrng.below(4) == 0 {
                sloop::sleep(Duration::from_millis(wrng.below(5))).await;
            }
        }
        w.close().await?;
        Ok::<_, io::Error>(true)
    };
    let mut got_hash = DefaultHasher::new();
    let reader = async {
        let mut got = 0;
        let mut buf = vec![0; 64 << 10];
        while got < total {
            let want = if mode == 0 { 512 } else { buf.len() };
            let n = r.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            got_hash.write(&buf[..n]);
            got += n;
            if mode == 0 {
                sloop::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok::<_, io::Error>(got)
    };
    let (wrote, got) = futures::future::join(writer, reader).await;
    match wrote {
        Ok(false) => Ok(None),
        Err(e) => Err(e),
        Ok(true) => {
            let got = got?;
            if got != total || got_hash.finish() != sent_hash.finish() {
                return Err(io::Error::other(format!(
                    "verification failed: sent {total}, got {got}"
                )));
            }
            Ok(Some(total))
        }
    }
}

async fn client(
    lp: LoopHandle,
    addrs: Arc<Vec<SocketAddr>>,
    stats: Arc<Stats>,
    seed: u64,
    deadline: Instant,
) {
    let mut rng = Rng(seed | 1);
    while Instant::now() < deadline {
        let addr = addrs[rng.below(addrs.len() as u64) as usize];
        match one_client(&lp, addr, &mut rng).await {
            Ok(Some(n)) => {
                stats.bytes_verified.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(None) => {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("soak: client error: {e}");
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.clients_done.fetch_add(1, Ordering::Relaxed);
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// N short connections from this thread, a third each: clean, RST, reset
/// in the middle of a large echo.
fn churn(addrs: &[SocketAddr], n: usize) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    let big = vec![5u8; 256 << 10];
    for i in 0..n {
        let addr = addrs[i % addrs.len()];
        let r = (|| -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            match (i / addrs.len()) % 3 {
                0 => {
                    s.write_all(b"ping")?;
                    let mut b = [0; 4];
                    s.read_exact(&mut b)?;
                    s.shutdown(Shutdown::Write)?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest)?;
                    if &b != b"ping" || !rest.is_empty() {
                        return Err(io::Error::other("bad echo"));
                    }
                }
                1 => {
                    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                }
                _ => {
                    // As much as fits without blocking, then a reset while
                    // the server is still echoing it.
                    s.set_nonblocking(true)?;
                    let _ = s.write(&big);
                    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

fn main() {
    let mut secs = 60u64;
    let mut loops = 2usize;
    let mut clients = 32usize;
    let mut churn_n = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--secs" => secs = val(),
            "--loops" => loops = val() as usize,
            "--clients" => clients = val() as usize,
            "--churn" => churn_n = val() as usize,
            _ => panic!("usage: soak --secs N [--loops L] [--clients C] [--churn N]"),
        }
    }
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let (addr_tx, addr_rx) = mpsc::channel();
    let mut all_tx = Vec::new();
    let mut threads = Vec::new();
    for l in 0..loops {
        let (tx, rx) = futures::channel::oneshot::channel::<(Arc<Vec<SocketAddr>>, Instant)>();
        all_tx.push(tx);
        let addr_tx = addr_tx.clone();
        let stats = stats.clone();
        threads.push(std::thread::spawn(move || {
            let lp = EventLoop::new().unwrap();
            let h = lp.handle();
            let (a, b) = lp
                .run_until_complete(async {
                    let a = h.create_server(
                        {
                            let st = stats.clone();
                            move || Echo {
                                t: None,
                                stats: st.clone(),
                            }
                        },
                        "127.0.0.1:0",
                    );
                    let st = stats.clone();
                    let b = h.start_server(
                        move |s: TransportStream| {
                            st.served.fetch_add(1, Ordering::Relaxed);
                            async move {
                                let (r, mut w) = s.split();
                                if futures::io::copy(r, &mut w).await.is_ok() {
                                    let _ = w.close().await;
                                }
                            }
                        },
                        "127.0.0.1:0",
                    );
                    (
                        a.backlog(1024).await.unwrap(),
                        b.backlog(1024).await.unwrap(),
                    )
                })
                .unwrap();
            addr_tx
                .send(vec![a.local_addrs()[0], b.local_addrs()[0]])
                .unwrap();
            lp.run_until_complete(async {
                // Serving (the churn, if any) while waiting for every
                // loop's addresses.
                let (addrs, deadline) = rx.await.unwrap();
                let total_loops = addrs.len() / 2;
                let cs: Vec<_> = (0..clients)
                    .map(|c| {
                        h.spawn_local(client(
                            h.clone(),
                            addrs.clone(),
                            stats.clone(),
                            (l * 1000 + c) as u64 * 0x9E37_79B9 + 7,
                            deadline,
                        ))
                    })
                    .collect();
                for c in cs {
                    if c.await.is_err() {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                stats.loops_done.fetch_add(1, Ordering::SeqCst);
                // Serve the other loops' clients until they are done too.
                while stats.loops_done.load(Ordering::SeqCst) < total_loops {
                    sloop::sleep(Duration::from_millis(10)).await;
                }
                a.close();
                b.close();
                a.wait_closed().await;
                b.wait_closed().await;
            })
            .unwrap();
        }));
    }
    drop(addr_tx);
    let mut addrs = Vec::new();
    for _ in 0..loops {
        addrs.extend(addr_rx.recv().unwrap());
    }
    if churn_n > 0 {
        // Churn before the clients start: the servers are idle, so fds and
        // RSS before and after compare like for like.
        let fds0 = open_fds();
        let rss0 = status_kib("VmRSS:");
        let t = Instant::now();
        let (ok, failed) = churn(&addrs, churn_n);
        // The servers notice the last closes on their own loops.
        let settle = Instant::now();
        while open_fds() > fds0 && settle.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "churn: connections={churn_n} ok={ok} failed={failed} secs={:.1} fds_before={fds0} fds_after={} rss_before_kib={rss0} rss_after_kib={}",
            t.elapsed().as_secs_f64(),
            open_fds(),
            status_kib("VmRSS:")
        );
    }
    // The clients' time counts from here, after the churn.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let addrs = Arc::new(addrs);
    for tx in all_tx {
        tx.send((addrs.clone(), deadline)).unwrap();
    }
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let line = |samples: &VecDeque<(Instant, u64)>| {
        let rss = status_kib("VmRSS:");
        // Over the last minute of traffic (sampling stops at the deadline,
        // before the clients drain).
        let growth = match (samples.front(), samples.back()) {
            (Some(&(t0, old)), Some(&(t1, new))) if t1 - t0 >= Duration::from_secs(59) => {
                format!("{:.2}%", (new as f64 - old as f64) * 100.0 / old as f64)
            }
            _ => "n/a".into(),
        };
        format!(
            "soak: t={}s loops={loops} connections_served={} clients_done={} bytes_verified={} aborted={} errors={} rss_kib={rss} peak_rss_kib={} fds={} rss_growth_last_min={growth}",
            start.elapsed().as_secs(),
            stats.served.load(Ordering::Relaxed),
            stats.clients_done.load(Ordering::Relaxed),
            stats.bytes_verified.load(Ordering::Relaxed),
            stats.aborted.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
            status_kib("VmHWM:"),
            open_fds(),
        )
    };
    let mut last_print = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let now = Instant::now();
        if now < deadline {
            samples.push_back((now, status_kib("VmRSS:")));
            while samples
                .front()
                .is_some_and(|&(t, _)| now - t > Duration::from_secs(60))
            {
                samples.pop_front();
            }
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            println!("{}", line(&samples));
            last_print = Instant::now();
        }
    }
    for t in threads {
        t.join().expect("a loop thread panicked");
    }
    println!("{}", line(&samples));
    if stats.errors.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
