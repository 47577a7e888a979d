//! A `log` logger for tests: it keeps each line with the thread that logged
//! it, so tests running in parallel in one binary read only their own.

use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

struct Capture;

static LINES: OnceLock<Mutex<Vec<(ThreadId, String)>>> = OnceLock::new();

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        LINES
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .push((std::thread::current().id(), line));
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per test binary) at level `Debug`.
pub fn capture_logs() {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Debug);
}

/// Takes the lines this thread logged since the last call, as
/// `"LEVEL message"`.
pub fn take_logs() -> Vec<String> {
    let me = std::thread::current().id();
    let mut all = LINES.get_or_init(Default::default).lock().unwrap();
    let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(t, _)| *t == me);
    *all = rest;
    mine.into_iter().map(|(_, l)| l).collect()
}
