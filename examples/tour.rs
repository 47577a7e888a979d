//! A short tour of sloop: timers, a callback from another thread, a task,
//! a callback-protocol server talking to an async client, and UDP.
//!
//! Run it with `cargo run --example tour`; it finishes on its own in well
//! under a second and prints what happens, in order.

use std::time::{Duration, Instant};

use futures::io::{AsyncBufReadExt, AsyncWriteExt};
use sloop::{DatagramSocket, EventLoop, Protocol, Transport};

/// A callback protocol: answers each line with its length.
#[derive(Default)]
struct LineLength {
    transport: Option<Transport>,
    line: Vec<u8>,
}

impl Protocol for LineLength {
    fn connection_made(&mut self, transport: &Transport) {
        println!("  [server] connection from {:?}", transport.peer_addr());
        self.transport = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        for &b in data {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            println!("  [server] data_received: {line:?}");
            if let Some(t) = &self.transport {
                let _ = t.write(format!("{} bytes\n", line.len()).as_bytes());
            }
            self.line.clear();
        }
    }

    fn eof_received(&mut self) -> bool {
        println!("  [server] eof_received: the client is done; closing after the replies");
        false // asyncio's rule: false means "close the transport for me"
    }

    fn connection_lost(&mut self, exc: Option<std::io::Error>) {
        // The last call: the transport drops this protocol (and with it
        // the protocol's clone of the transport) right after it returns.
        println!("  [server] connection_lost({exc:?})");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
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

    // 4. A callback-protocol server and an async client on the same loop.
    println!("== a Protocol server, an async client ==");
    let handle = lp.handle();
    lp.run_until_complete(async move {
        let server = handle
            .create_server(LineLength::default, "127.0.0.1:0")
            .await?;
        let addr = server.local_addrs()[0];
        println!("  [server] listening on {addr}");
        let mut client = handle.open_connection(("127.0.0.1", addr.port())).await?;
        for line in ["hello", "asyncio semantics", "in Rust"] {
            client.write_all(format!("{line}\n").as_bytes()).await?;
            let mut reply = String::new();
            client.read_line(&mut reply).await?;
            println!("  [client] sent {line:?}, got {:?}", reply.trim_end());
        }
        client.close().await?; // EOF
        let mut rest = String::new();
        client.read_line(&mut rest).await?; // 0 bytes: the server closed too
        server.close();
        server.wait_closed().await;
        Ok::<(), std::io::Error>(())
    })??;

    // 5. Datagrams: two UDP sockets as Sink/Stream-capable futures.
    println!("== UDP ==");
    let handle = lp.handle();
    lp.run_until_complete(async move {
        let mut a = DatagramSocket::bind(&handle, "127.0.0.1:0").await?;
        let mut b = DatagramSocket::bind(&handle, "127.0.0.1:0").await?;
        let b_addr = b.local_addr().expect("bound");
        a.send_to(b"ping", b_addr).await?;
        let (data, from) = b.recv_from().await?;
        println!("  [b] got {:?} from {from}", String::from_utf8_lossy(&data));
        b.send_to(b"pong", from).await?;
        let (data, _) = a.recv_from().await?;
        println!("  [a] got {:?}", String::from_utf8_lossy(&data));
        Ok::<(), std::io::Error>(())
    })??;
    println!("done");
    Ok(())
}
