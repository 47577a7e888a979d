//! An echo server that shows what its loops are doing: one compact line
//! of live statistics per second, from `LoopGroup::stats`.
//!
//! ```text
//! cargo run --release --example top -- 127.0.0.1:8888 [--loops N] [--backlog N]
//! ```
//!
//! It prints `listening on ADDR` and then, each second:
//!
//! ```text
//! conns 100 (+3/s)  req/s 41234  in 40.3 MiB/s  out 40.3 MiB/s  buffered 0 B  busy 61% 58%
//! ```
//!
//! - `conns`: open connections, and how many opened per second;
//! - `req/s`: reads per second (each `data_received` is one echo request);
//! - `in`/`out`: bytes per second received and sent;
//! - `buffered`: bytes waiting in write buffers right now;
//! - `busy`: per loop, the share of the last second spent running rather
//!   than waiting in the poller (time statistics are turned on for this;
//!   they cost two clock reads per poll).
//!
//! Statistics cost the loops next to nothing to keep; asking for them is
//! one message to each loop per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sloop::event_loop::LoopStats;
use sloop::group::LoopGroup;
use sloop::{Protocol, Transport};

struct Echo {
    transport: Option<Transport>,
    reads: Arc<AtomicU64>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = &self.transport {
            let _ = t.write(data);
        }
    }

    fn pause_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.pause_reading();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }
}

fn bytes(n: f64) -> String {
    if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut addr, mut loops, mut backlog) = ("127.0.0.1:8888".to_owned(), 1, 1024u32);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backlog" => backlog = args.next().ok_or("--backlog needs N")?.parse()?,
            "--loops" => loops = args.next().ok_or("--loops needs N")?.parse()?,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}").into()),
            _ => addr = arg,
        }
    }
    let group = LoopGroup::new(loops)?;
    group.spawn_on_each(|lp| lp.set_time_stats(true));
    let reads = Arc::new(AtomicU64::new(0));
    let r = reads.clone();
    let server = group.start_server_with(
        move || Echo {
            transport: None,
            reads: r.clone(),
        },
        addr.as_str(),
        move |b| b.backlog(backlog),
    )?;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    let mut last = group.stats();
    let mut last_reads = 0;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = group.stats();
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let total_reads = reads.load(Ordering::Relaxed);
        let (t, l) = (&now.total, &last.total);
        let opened = (t.transports.total() as u64 + t.transports_closed)
            .saturating_sub(l.transports.total() as u64 + l.transports_closed);
        let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let busy: Vec<String> = now
            .loops
            .iter()
            .zip(&last.loops)
            .map(|(n, l)| match (n, l) {
                (Some(n), Some(l)) => busy_between(n, l),
                _ => "-".to_owned(),
            })
            .collect();
        println!(
            "conns {} (+{:.0}/s)  req/s {:.0}  in {}/s  out {}/s  buffered {}  busy {}",
            t.transports.total(),
            opened as f64 / secs,
            per_sec(total_reads, last_reads),
            bytes(per_sec(t.bytes_read, l.bytes_read)),
            bytes(per_sec(t.bytes_written, l.bytes_written)),
            bytes(t.write_buffered as f64),
            busy.join(" "),
        );
        last = now;
        last_reads = total_reads;
    }
}

/// The share of time between two snapshots spent running, as a percentage.
fn busy_between(now: &LoopStats, before: &LoopStats) -> String {
    let running = now.time_running.saturating_sub(before.time_running);
    let polling = now.time_polling.saturating_sub(before.time_polling);
    let total = running + polling;
    if total.is_zero() {
        return "-".to_owned();
    }
    format!(
        "{:.0}%",
        100.0 * running.as_secs_f64() / total.as_secs_f64()
    )
}
