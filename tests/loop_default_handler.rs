//! Where the default exception handler's reports go: to the `log` facade
//! when a logger takes them, else to standard error, as asyncio's default
//! handler reaches stderr with no setup — never to both.
//!
//! Whether a logger is installed is process-wide state, so the cases that
//! need a process without one (or a clean stderr) re-run this test binary
//! as a child with `SLOOP_DEFAULT_HANDLER_CHILD` set to the case's name;
//! only [`child_entry_point`] does anything in the child.

mod support;

use std::process::{Command, Output};

use sloop::EventLoop;
use support::logs::{capture_logs, take_logs};

const CHILD_ENV: &str = "SLOOP_DEFAULT_HANDLER_CHILD";
const PANIC_MESSAGE: &str = "callback gave up on purpose";
/// The line the default handler writes for the panic, in asyncio's layout.
const REPORT_LINE: &str = "exception: panic: callback gave up on purpose";

/// Runs one loop iteration in which a callback panics; the loop reports it
/// to the default handler and runs on.
fn panic_in_a_callback() {
    let lp = EventLoop::new().unwrap();
    lp.call_soon(|| panic!("{PANIC_MESSAGE}")).unwrap();
    let handle = lp.handle();
    lp.call_soon(move || handle.stop()).unwrap();
    lp.run_forever().unwrap();
}

/// Runs `case` in a child process and returns its output.
fn run_child(case: &str) -> Output {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry_point", "--exact", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, case)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child {case} failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// The child's side. Outside a child it does nothing.
#[test]
fn child_entry_point() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Keep the panic hook's own "thread panicked" line off stderr, so what
    // is left there is only what the loop wrote.
    std::panic::set_hook(Box::new(|_| {}));
    match case.as_str() {
        "no-logger" => panic_in_a_callback(),
        "logger" => {
            capture_logs();
            panic_in_a_callback();
            // Hand the captured lines to the parent on stdout.
            for line in take_logs() {
                println!("captured: {line}");
            }
        }
        "logger-at-off" => {
            // A logger is installed but the max level was never raised
            // above `Off`: `log::error!` would drop the report.
            capture_logs();
            log::set_max_level(log::LevelFilter::Off);
            panic_in_a_callback();
            assert!(take_logs().is_empty());
        }
        other => panic!("unknown child case {other}"),
    }
}

#[test]
fn without_a_logger_a_callback_panic_reaches_stderr() {
    let output = run_child("no-logger");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Exception in callback"),
        "asyncio's message is on stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.matches(REPORT_LINE).count(),
        1,
        "the panic is reported once:\n{stderr}"
    );
}

#[test]
fn with_a_logger_the_report_goes_to_the_logger() {
    capture_logs();
    panic_in_a_callback();
    let logs = take_logs();
    let reports: Vec<_> = logs.iter().filter(|l| l.contains(REPORT_LINE)).collect();
    assert_eq!(reports.len(), 1, "{logs:?}");
    assert!(
        reports[0].starts_with("ERROR Exception in callback"),
        "{logs:?}"
    );
}

#[test]
fn with_a_logger_nothing_is_written_to_stderr() {
    let output = run_child("logger");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("captured: ERROR Exception in callback"),
        "the logger got the report:\n{stdout}"
    );
    assert!(stdout.contains(REPORT_LINE), "{stdout}");
    assert!(
        !stderr.contains(PANIC_MESSAGE),
        "not written to stderr as well:\n{stderr}"
    );
}

#[test]
fn a_logger_that_drops_errors_leaves_the_report_on_stderr() {
    let output = run_child("logger-at-off");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(REPORT_LINE).count(), 1, "{stderr}");
}
