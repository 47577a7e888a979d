//! Reliability M07: one huge write (1 GiB). It is accepted with a single
//! copy of the unsent rest, which costs the process no more than that rest
//! in memory; with a hard cap (R16) below it, it is refused before anything
//! is copied. Alone in its test binary, so no other test's memory shows in
//! this process's figures.

mod support;

use support::*;

/// A field of /proc/self/status, in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const GIB: usize = 1 << 30;

#[test]
fn a_one_gib_write_is_buffered_with_one_copy_or_refused_above_the_cap() {
    let lp = new_loop();
    // Zeroed by calloc: the payload's pages cost nothing until written, so
    // the growth measured below is the transport's copy.
    let payload = vec![0u8; GIB];

    // Above a cap: refused at once, nothing copied.
    let (proto, rec) = Recorder::new();
    let (t, _peer) = connected(&lp, proto);
    t.set_write_buffer_cap(Some(GIB / 2));
    let before = status_bytes("VmRSS:");
    let err = t.write(&payload).unwrap_err();
    assert_eq!(err.to_string(), "write buffer cap exceeded");
    assert_eq!(t.write_buffer_size(), 0);
    assert!(
        status_bytes("VmHWM:") < before + GIB / 4,
        "no copy of the payload was made"
    );
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));

    // No cap (asyncio's behaviour): the kernel takes what it can, the rest
    // is buffered in one exact copy, and the protocol is paused.
    let (proto, rec) = Recorder::new();
    let (t, _peer) = connected(&lp, proto);
    let before = status_bytes("VmRSS:");
    t.write(&payload).unwrap();
    let buffered = t.write_buffer_size();
    assert!(
        buffered > GIB - (64 << 20) && buffered <= GIB,
        "the unsent rest is buffered ({buffered} bytes)"
    );
    let peak = status_bytes("VmHWM:");
    assert!(
        peak <= before + buffered + (64 << 20),
        "peak RSS grew by {} for {buffered} buffered bytes",
        peak - before
    );
    // pause_writing reaches the protocol right after the write (D6).
    run(&lp, async {});
    assert!(rec.borrow().events.contains(&Ev::Pause));
    t.abort();
    let r = rec.clone();
    run(&lp, until(move || r.borrow().lost()));
    assert_eq!(t.write_buffer_size(), 0, "abort drops the buffer");
}
