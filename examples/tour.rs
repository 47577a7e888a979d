//! A short tour of sloop: timers, a callback from another thread, a task.
//!
//! Run it with `cargo run --example tour`; it finishes on its own in well
//! under a second and prints what happens, in order.

use std::time::{Duration, Instant};

use sloop::EventLoop;

fn main() -> Result<(), sloop::Error> {
    let lp = EventLoop::new()?;
    let start = Instant::now();
    let t = move || format!("{:>4} ms", start.elapsed().as_millis());

    // 1. Callbacks and timers: call_soon runs in the next iteration, timers
    //    by deadline, never early.
    println!("== timers ==");
    lp.call_later(Duration::from_millis(30), move || {
        println!("[{}] call_later(30 ms) fired", t())
    })?;
    lp.call_later(Duration::from_millis(10), move || {
        println!("[{}] call_later(10 ms) fired", t())
    })?;
    let cancelled = lp.call_later(Duration::from_millis(20), || println!("never printed"))?;
    cancelled.cancel();
    lp.call_soon(move || println!("[{}] call_soon ran first", t()))?;
    lp.run_until_complete(sloop::sleep(Duration::from_millis(40)))?;
    println!("(the 20 ms timer was cancelled, so it never ran)");

    // 2. Another thread hands work to the loop with a Remote (asyncio's
    //    call_soon_threadsafe); the loop wakes up for it.
    println!("== call_soon_threadsafe from a thread ==");
    let remote = lp.remote();
    let worker = std::thread::spawn(move || {
        let answer: u64 = (1..=20).product();
        remote
            .call_soon(move || {
                println!(
                    "[{}] on the loop thread: the worker computed 20! = {answer}",
                    t()
                );
            })
            .expect("the loop is open");
        remote.stop().expect("the loop is open");
    });
    lp.run_forever()?;
    worker.join().expect("worker thread");

    // 3. Tasks: async code on the same loop, with timeouts.
    println!("== tasks ==");
    let handle = lp.handle();
    let total = lp.run_until_complete(async move {
        let ticker = handle.spawn_local(async move {
            let mut every = sloop::interval(Duration::from_millis(5));
            for n in 1..=3 {
                every.tick().await;
                println!("[{}] tick {n}", t());
            }
            3
        });
        let slow = sloop::timeout(
            Duration::from_millis(5),
            sloop::sleep(Duration::from_secs(10)),
        )
        .await;
        println!(
            "[{}] timeout around a 10 s sleep: {:?}",
            t(),
            slow.map_err(|e| e.to_string())
        );
        ticker.await.expect("the ticker task finishes")
    })?;
    println!("[{}] the ticker task returned {total}", t());
    println!("done");
    Ok(())
}
