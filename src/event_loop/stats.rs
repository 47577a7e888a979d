//! Live statistics of a loop: what it holds and what it has done.
//!
//! [`LoopHandle::stats`] returns a [`LoopStats`] snapshot. Keeping the
//! figures must cost the loop almost nothing, so few of them are counters:
//!
//! - Counted as they happen, in plain `Cell`s: polls (once per poll), I/O
//!   events (a register per event, stored once per iteration), callbacks
//!   run and task polls (one add each), and, per transport, bytes received
//!   and sent (one add on a field of the transport, which the read or
//!   write just touched).
//! - Read off structures the loop keeps anyway, when `stats` is called:
//!   the ready queue's length, the timer heap (its sequence number is the
//!   number of timers ever scheduled), the task slab, the selector's
//!   registrations. The selector's sources are walked: each transport and
//!   listening socket adds itself (kind, bytes, buffered bytes, paused
//!   directions, its server), so a snapshot is exact at the moment it is
//!   taken, and costs one walk over the registered fds.
//! - Transports that are gone leave their byte counts in the loop's totals
//!   when they deregister, so totals never go backwards.
//! - Timing (time polling vs running, [`LoopHandle::set_time_stats`]) reads
//!   the clock twice per poll and is off unless asked for; slow callbacks
//!   are counted only where debug mode already times each callback.
//!
//! A [`Remote`](super::Remote) asks for a snapshot from another thread
//! with [`Remote::stats`](super::Remote::stats).

use std::cell::{Cell, RefCell};
use std::ops::AddAssign;
use std::time::{Duration, Instant};

use super::LoopHandle;
use crate::exception::TransportKind;

/// A snapshot of a loop's statistics: what it holds (gauges) and what it
/// has done since it was created (totals).
///
/// Taken by [`LoopHandle::stats`]; the figures are exact at that moment.
/// Snapshots of several loops add up (`+=`) into one, as
/// `LoopGroup::stats` does.
///
/// ```
/// use std::time::Duration;
///
/// let lp = sloop::EventLoop::new()?;
/// let timers: Vec<_> = (0..5)
///     .map(|_| lp.call_later(Duration::from_secs(60), || {}))
///     .collect::<Result<_, _>>()?;
/// timers[0].cancel();
/// timers[1].cancel();
/// let stats = lp.stats();
/// assert_eq!(stats.timers_live, 3);
/// assert_eq!(stats.timers_scheduled, 5);
/// assert_eq!(stats.timers_cancelled, 2);
/// assert_eq!(stats.transports.total(), 0);
/// # Ok::<(), sloop::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LoopStats {
    /// Iterations run (asyncio's `_run_once` calls).
    pub iterations: u64,
    /// Times the loop asked the kernel for events (an iteration may skip
    /// its poll; see the `event_loop` module docs).
    pub polls: u64,
    /// I/O events the polls returned.
    pub events: u64,
    /// Callbacks run: `call_soon`, timers, readers and writers, and
    /// callbacks sent by a `Remote`. Protocol methods are not counted here.
    pub callbacks: u64,
    /// Times a task (or the future of `run_until_complete`) was polled.
    pub task_polls: u64,
    /// Items waiting in the ready queue for the next iteration.
    pub ready: usize,
    /// Timers ever scheduled (`call_later`, `call_at`, `sleep`, ...).
    pub timers_scheduled: u64,
    /// Timers cancelled before they fired.
    pub timers_cancelled: u64,
    /// Timers scheduled and neither fired nor cancelled yet.
    pub timers_live: usize,
    /// Tasks spawned and not finished yet.
    pub tasks: usize,
    /// File descriptors registered with the poller: transports, listening
    /// sockets and `add_reader`/`add_writer` fds (the poller's own and its
    /// waker's are not counted).
    pub fds: usize,
    /// Open transports, by kind. A transport is open from its creation
    /// until its `connection_lost` has run.
    pub transports: TransportCounts,
    /// Transports that have closed (their `connection_lost` ran) since the
    /// loop was created.
    pub transports_closed: u64,
    /// Servers accepting connections.
    pub servers: usize,
    /// Listening sockets of those servers.
    pub listeners: usize,
    /// Bytes received by the loop's transports, closed ones included.
    pub bytes_read: u64,
    /// Bytes the loop's transports handed to the kernel, closed ones
    /// included.
    pub bytes_written: u64,
    /// Bytes buffered in open transports, waiting for the kernel to take
    /// them.
    pub write_buffered: usize,
    /// Open transports paused for reading (`pause_reading`).
    pub paused_reading: usize,
    /// Open transports whose protocol was told to pause writing (the write
    /// buffer is over its high-water mark).
    pub paused_writing: usize,
    /// Callbacks and task polls that took longer than the slow callback
    /// duration. Counted in debug mode only, which is when they are timed.
    pub slow_callbacks: u64,
    /// The slowest of them.
    pub slowest_callback: Option<SlowCallback>,
    /// Time spent waiting in the poller, when time statistics are on
    /// ([`LoopHandle::set_time_stats`]).
    pub time_polling: Duration,
    /// Time spent between polls (running callbacks, tasks and protocols),
    /// when time statistics are on.
    pub time_running: Duration,
}

impl LoopStats {
    /// The share of measured time spent running rather than waiting in the
    /// poller, from 0.0 to 1.0; `None` before any time was measured.
    ///
    /// ```
    /// let stats = sloop::event_loop::LoopStats::default();
    /// assert_eq!(stats.busy(), None);
    /// ```
    pub fn busy(&self) -> Option<f64> {
        let total = self.time_polling + self.time_running;
        if total.is_zero() {
            return None;
        }
        Some(self.time_running.as_secs_f64() / total.as_secs_f64())
    }
}

/// Adds another loop's figures: totals and gauges are summed, the slowest
/// callback is the slower one.
///
/// ```
/// use sloop::event_loop::LoopStats;
///
/// let a = sloop::EventLoop::new()?;
/// let b = sloop::EventLoop::new()?;
/// a.call_soon(|| {})?;
/// b.call_soon(|| {})?;
/// let mut sum = LoopStats::default();
/// sum += a.stats();
/// sum += b.stats();
/// assert_eq!(sum.ready, 2);
/// # Ok::<(), sloop::Error>(())
/// ```
impl AddAssign for LoopStats {
    fn add_assign(&mut self, o: LoopStats) {
        self.iterations += o.iterations;
        self.polls += o.polls;
        self.events += o.events;
        self.callbacks += o.callbacks;
        self.task_polls += o.task_polls;
        self.ready += o.ready;
        self.timers_scheduled += o.timers_scheduled;
        self.timers_cancelled += o.timers_cancelled;
        self.timers_live += o.timers_live;
        self.tasks += o.tasks;
        self.fds += o.fds;
        self.transports += o.transports;
        self.transports_closed += o.transports_closed;
        self.servers += o.servers;
        self.listeners += o.listeners;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.write_buffered += o.write_buffered;
        self.paused_reading += o.paused_reading;
        self.paused_writing += o.paused_writing;
        self.slow_callbacks += o.slow_callbacks;
        if o.slowest_callback.as_ref().map(|s| s.duration)
            > self.slowest_callback.as_ref().map(|s| s.duration)
        {
            self.slowest_callback = o.slowest_callback;
        }
        self.time_polling += o.time_polling;
        self.time_running += o.time_running;
    }
}

/// Open transports of a loop, by kind; see [`LoopStats::transports`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportCounts {
    /// TCP stream transports.
    pub tcp: usize,
    /// Unix stream transports.
    pub unix: usize,
    /// UDP datagram transports.
    pub udp: usize,
    /// Unix datagram transports.
    pub unix_datagram: usize,
}

impl TransportCounts {
    /// All of them. See the example on [`LoopStats`].
    pub fn total(&self) -> usize {
        self.tcp + self.unix + self.udp + self.unix_datagram
    }

    fn add(&mut self, kind: TransportKind) {
        match kind {
            TransportKind::Tcp => self.tcp += 1,
            TransportKind::Unix => self.unix += 1,
            TransportKind::Udp => self.udp += 1,
            TransportKind::UnixDatagram => self.unix_datagram += 1,
        }
    }
}

/// Sums the counts of each kind. See [`LoopStats`]'s `+=`.
impl AddAssign for TransportCounts {
    fn add_assign(&mut self, o: TransportCounts) {
        self.tcp += o.tcp;
        self.unix += o.unix;
        self.udp += o.udp;
        self.unix_datagram += o.unix_datagram;
    }
}

/// The slowest callback a loop ran in debug mode; see
/// [`LoopStats::slowest_callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowCallback {
    /// How long it ran.
    pub duration: Duration,
    /// What it was, as debug mode's warning names it.
    pub what: String,
}

/// One transport's figures: what [`Transport::stats`](crate::Transport::stats)
/// and [`DatagramTransport::stats`](crate::DatagramTransport::stats) return.
///
/// ```
/// struct Quiet;
/// impl sloop::DatagramProtocol for Quiet {
///     fn datagram_received(&mut self, _: &[u8], _: std::net::SocketAddr) {}
/// }
///
/// let lp = sloop::EventLoop::new()?;
/// let transport = lp.run_until_complete(
///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
/// )??;
/// let stats = transport.stats();
/// assert_eq!((stats.bytes_received, stats.bytes_sent), (0, 0));
/// assert!(stats.created_at <= lp.time());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Bytes received (for a datagram transport: payload bytes).
    pub bytes_received: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Bytes buffered, waiting for the kernel to take them.
    pub write_buffered: usize,
    /// When the transport was created (loop time).
    pub created_at: Instant,
}

/// The per-transport byte counters, kept in each transport: one add per
/// `recv` and per `send`.
#[derive(Debug)]
pub(crate) struct ByteCounters {
    received: Cell<u64>,
    sent: Cell<u64>,
    created_at: Instant,
}

impl ByteCounters {
    pub(crate) fn new() -> ByteCounters {
        ByteCounters {
            received: Cell::new(0),
            sent: Cell::new(0),
            created_at: Instant::now(),
        }
    }

    #[inline(always)]
    pub(crate) fn received(&self, n: usize) {
        self.received
            .set(self.received.get().wrapping_add(n as u64));
    }

    #[inline(always)]
    pub(crate) fn sent(&self, n: usize) {
        self.sent.set(self.sent.get().wrapping_add(n as u64));
    }

    /// Takes back bytes counted as sent before a send that did not take
    /// them all.
    #[inline(always)]
    pub(crate) fn unsent(&self, n: usize) {
        self.sent.set(self.sent.get().wrapping_sub(n as u64));
    }

    pub(crate) fn snapshot(&self, write_buffered: usize) -> TransportStats {
        TransportStats {
            bytes_received: self.received.get(),
            bytes_sent: self.sent.get(),
            write_buffered,
            created_at: self.created_at,
        }
    }
}

/// What a source adds to a snapshot: see `IoSource::tally`.
pub(crate) enum SourceTally {
    /// An open transport.
    Transport {
        kind: TransportKind,
        stats: TransportStats,
        paused_reading: bool,
        paused_writing: bool,
    },
    /// A listening socket of the server whose shared state is at `server`
    /// (compared, never dereferenced: several listeners, one server).
    Listener { server: *const () },
}

/// The loop's own counters, in its state (`LoopInner::counters`).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) polls: Cell<u64>,
    pub(crate) events: Cell<u64>,
    pub(crate) callbacks: Cell<u64>,
    pub(crate) task_polls: Cell<u64>,
    /// Left by transports when they deregister.
    closed_read: Cell<u64>,
    closed_written: Cell<u64>,
    transports_closed: Cell<u64>,
    slow_callbacks: Cell<u64>,
    slowest: RefCell<Option<SlowCallback>>,
    /// Whether polls are timed ([`LoopHandle::set_time_stats`]).
    pub(crate) timing: Cell<bool>,
    /// When the last poll returned (the running time since starts there).
    pub(crate) mark: Cell<Option<Instant>>,
    pub(crate) polling: Cell<Duration>,
    pub(crate) running: Cell<Duration>,
}

impl Counters {
    #[inline(always)]
    pub(crate) fn bump(cell: &Cell<u64>) {
        cell.set(cell.get().wrapping_add(1));
    }

    /// Times one poll: `f` is the poll.
    #[cold]
    #[inline(never)]
    pub(crate) fn timed_poll<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = Instant::now();
        if let Some(mark) = self.mark.get() {
            self.running
                .set(self.running.get() + before.saturating_duration_since(mark));
        }
        let r = f();
        let after = Instant::now();
        self.polling
            .set(self.polling.get() + after.saturating_duration_since(before));
        self.mark.set(Some(after));
        r
    }
}

impl LoopHandle {
    /// A snapshot of this loop's statistics: see [`LoopStats`] for what
    /// each figure means, and the example there.
    ///
    /// Cheap enough to call often (once a second, say): it walks the
    /// registered fds once and reads the rest. From another thread, use
    /// [`Remote::stats`](super::Remote::stats).
    ///
    /// ```
    /// struct Quiet;
    /// impl sloop::Protocol for Quiet {}
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let server = lp.run_until_complete(lp.create_server(|| Quiet, "127.0.0.1:0"))??;
    /// let stats = lp.stats();
    /// assert_eq!((stats.servers, stats.listeners, stats.fds), (1, 1, 1));
    /// server.close();
    /// assert_eq!(lp.stats().servers, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> LoopStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let mut s = LoopStats {
            iterations: inner.iterations.get(),
            polls: c.polls.get(),
            events: c.events.get(),
            callbacks: c.callbacks.get(),
            task_polls: c.task_polls.get(),
            ready: inner.ready.try_borrow().map_or(0, |r| r.len()),
            tasks: inner.tasks.try_borrow().map_or(0, |t| t.len()),
            transports_closed: c.transports_closed.get(),
            bytes_read: c.closed_read.get(),
            bytes_written: c.closed_written.get(),
            slow_callbacks: c.slow_callbacks.get(),
            slowest_callback: c.slowest.borrow().clone(),
            time_polling: c.polling.get(),
            time_running: c.running.get(),
            ..LoopStats::default()
        };
        if let Ok(timers) = inner.timers.try_borrow() {
            s.timers_scheduled = timers.scheduled();
            s.timers_cancelled = timers.cancelled_total();
            s.timers_live = timers.live();
        }
        let mut servers: Vec<*const ()> = Vec::new();
        if let Ok(selector) = inner.selector.try_borrow() {
            if let Some(selector) = selector.as_ref() {
                s.fds = selector.len();
                selector.tally(&mut |t| match t {
                    SourceTally::Transport {
                        kind,
                        stats,
                        paused_reading,
                        paused_writing,
                    } => {
                        s.transports.add(kind);
                        s.bytes_read += stats.bytes_received;
                        s.bytes_written += stats.bytes_sent;
                        s.write_buffered += stats.write_buffered;
                        s.paused_reading += usize::from(paused_reading);
                        s.paused_writing += usize::from(paused_writing);
                    }
                    SourceTally::Listener { server } => {
                        s.listeners += 1;
                        if !servers.contains(&server) {
                            servers.push(server);
                        }
                    }
                });
            }
        }
        s.servers = servers.len();
        s
    }

    /// Turns time statistics on or off: with them on, the loop reads the
    /// clock before and after each poll, for
    /// [`LoopStats::time_polling`] and [`LoopStats::time_running`]. Off by
    /// default, since the two clock reads cost more than all the other
    /// counters together.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// lp.set_time_stats(true);
    /// assert!(lp.time_stats());
    /// lp.run_until_complete(sloop::sleep(Duration::from_millis(20)))?;
    /// let stats = lp.stats();
    /// assert!(stats.time_polling > Duration::ZERO);
    /// assert!(stats.busy().is_some());
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn set_time_stats(&self, on: bool) {
        let c = &self.inner.counters;
        c.timing.set(on);
        c.mark.set(None);
    }

    /// Whether time statistics are on. See
    /// [`set_time_stats`](LoopHandle::set_time_stats).
    pub fn time_stats(&self) -> bool {
        self.inner.counters.timing.get()
    }

    /// A transport deregistered for good: its bytes stay in the loop's
    /// totals.
    pub(crate) fn transport_closed(&self, stats: &TransportStats) {
        let c = &self.inner.counters;
        c.closed_read
            .set(c.closed_read.get().wrapping_add(stats.bytes_received));
        c.closed_written
            .set(c.closed_written.get().wrapping_add(stats.bytes_sent));
        Counters::bump(&c.transports_closed);
    }

    /// Debug mode found a slow callback or task poll.
    pub(crate) fn slow_callback(&self, duration: Duration, what: impl FnOnce() -> String) {
        let c = &self.inner.counters;
        Counters::bump(&c.slow_callbacks);
        let mut slowest = c.slowest.borrow_mut();
        if slowest.as_ref().map_or(true, |s| duration > s.duration) {
            *slowest = Some(SlowCallback {
                duration,
                what: what(),
            });
        }
    }
}

impl LoopStats {
    /// The figures in Prometheus' text exposition format (version 0.0.4),
    /// one metric per figure, named `sloop_...`: counters end in `_total`,
    /// times are in seconds. `examples/hyper_server.rs` serves this at
    /// `/metrics`.
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// lp.call_soon(|| {})?;
    /// let text = lp.stats().to_prometheus();
    /// assert!(text.contains("# TYPE sloop_ready_callbacks gauge\nsloop_ready_callbacks 1\n"));
    /// assert!(text.contains("sloop_transports{kind=\"tcp\"} 0\n"));
    /// # Ok::<(), sloop::Error>(())
    /// ```
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, values: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP sloop_{name} {help}");
            let _ = writeln!(out, "# TYPE sloop_{name} {kind}");
            for (labels, v) in values {
                let _ = writeln!(out, "sloop_{name}{labels} {v}");
            }
        };
        let c = "counter";
        let g = "gauge";
        metric(
            "iterations_total",
            c,
            "Loop iterations.",
            &[("", self.iterations as f64)],
        );
        metric(
            "polls_total",
            c,
            "Polls of the kernel.",
            &[("", self.polls as f64)],
        );
        metric(
            "events_total",
            c,
            "I/O events.",
            &[("", self.events as f64)],
        );
        metric(
            "callbacks_total",
            c,
            "Callbacks run.",
            &[("", self.callbacks as f64)],
        );
        metric(
            "task_polls_total",
            c,
            "Task polls.",
            &[("", self.task_polls as f64)],
        );
        metric(
            "ready_callbacks",
            g,
            "Items in the ready queue.",
            &[("", self.ready as f64)],
        );
        metric(
            "timers_scheduled_total",
            c,
            "Timers scheduled.",
            &[("", self.timers_scheduled as f64)],
        );
        metric(
            "timers_cancelled_total",
            c,
            "Timers cancelled.",
            &[("", self.timers_cancelled as f64)],
        );
        metric(
            "timers",
            g,
            "Live timers.",
            &[("", self.timers_live as f64)],
        );
        metric("tasks", g, "Live tasks.", &[("", self.tasks as f64)]);
        metric(
            "fds",
            g,
            "Registered file descriptors.",
            &[("", self.fds as f64)],
        );
        let t = &self.transports;
        metric(
            "transports",
            g,
            "Open transports by kind.",
            &[
                ("{kind=\"tcp\"}", t.tcp as f64),
                ("{kind=\"unix\"}", t.unix as f64),
                ("{kind=\"udp\"}", t.udp as f64),
                ("{kind=\"unix_datagram\"}", t.unix_datagram as f64),
            ],
        );
        metric(
            "transports_closed_total",
            c,
            "Transports closed.",
            &[("", self.transports_closed as f64)],
        );
        metric(
            "servers",
            g,
            "Serving servers.",
            &[("", self.servers as f64)],
        );
        metric(
            "listeners",
            g,
            "Listening sockets.",
            &[("", self.listeners as f64)],
        );
        metric(
            "read_bytes_total",
            c,
            "Bytes received.",
            &[("", self.bytes_read as f64)],
        );
        metric(
            "written_bytes_total",
            c,
            "Bytes sent.",
            &[("", self.bytes_written as f64)],
        );
        metric(
            "write_buffered_bytes",
            g,
            "Bytes waiting to be sent.",
            &[("", self.write_buffered as f64)],
        );
        metric(
            "paused_reading",
            g,
            "Transports paused for reading.",
            &[("", self.paused_reading as f64)],
        );
        metric(
            "paused_writing",
            g,
            "Transports over their high-water mark.",
            &[("", self.paused_writing as f64)],
        );
        metric(
            "slow_callbacks_total",
            c,
            "Slow callbacks (debug mode).",
            &[("", self.slow_callbacks as f64)],
        );
        metric(
            "poll_seconds_total",
            c,
            "Time waiting in the poller.",
            &[("", self.time_polling.as_secs_f64())],
        );
        metric(
            "running_seconds_total",
            c,
            "Time running between polls.",
            &[("", self.time_running.as_secs_f64())],
        );
        out
    }
}
