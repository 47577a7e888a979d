//! The guide: how to write the common things with sloop, and how to come to
//! it from asyncio or from tokio. A documentation-only module; every
//! example runs as a doc test.
//!
//! # Writing a protocol
//!
//! A [`Protocol`](crate::Protocol) is plain state with callbacks; the
//! transport owns it and calls it, one call at a time, never while another
//! of its calls runs. Keep a clone of the [`Transport`](crate::Transport)
//! from `connection_made` to write later. Nothing needs undoing in
//! `connection_lost`: the transport drops its protocol (and the handle it
//! holds) after that last call.
//!
//! ```
//! use sloop::{EventLoop, Protocol, Transport};
//!
//! /// Counts lines and answers each with its number.
//! struct LineCounter {
//!     transport: Option<Transport>,
//!     partial: Vec<u8>,
//!     lines: usize,
//! }
//!
//! impl Protocol for LineCounter {
//!     fn connection_made(&mut self, transport: &Transport) {
//!         self.transport = Some(transport.clone());
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         // `data` borrows the loop's read buffer: keep what you need.
//!         self.partial.extend_from_slice(data);
//!         while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
//!             self.partial.drain(..=end);
//!             self.lines += 1;
//!             let reply = format!("{}\n", self.lines);
//!             let _ = self.transport.as_ref().unwrap().write(reply.as_bytes());
//!         }
//!     }
//!     fn eof_received(&mut self) -> bool {
//!         false // close our side too, once what is buffered is sent
//!     }
//! }
//!
//! let lp = EventLoop::new()?;
//! let server = lp.run_until_complete(lp.create_server(
//!     || LineCounter { transport: None, partial: Vec::new(), lines: 0 },
//!     "127.0.0.1:0",
//! ))??;
//! let addr = server.local_addrs()[0];
//! let reply = lp.run_until_complete(async move {
//!     use futures::io::{AsyncReadExt, AsyncWriteExt};
//!     let mut client = sloop::get_running_loop().unwrap().open_connection(addr).await?;
//!     client.write_all(b"a\nb\nc\n").await?;
//!     client.close().await?; // EOF: the server answers, then closes
//!     let mut reply = String::new();
//!     client.read_to_string(&mut reply).await?;
//!     Ok::<_, std::io::Error>(reply)
//! })??;
//! assert_eq!(reply, "1\n2\n3\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything a protocol may call is allowed from inside any callback:
//! `write`, `close`, `abort`, `pause_reading`, `set_protocol`, the loop's
//! `call_soon` and `stop`. A panic in a callback is caught: it is reported
//! to the loop's exception handler and closes that connection only.
//!
//! # Flow control and backpressure
//!
//! `write` never blocks and never drops data: what the kernel does not take
//! is buffered. Above the high-water mark (64 KiB by default,
//! [`Transport::set_write_buffer_limits`](crate::Transport::set_write_buffer_limits))
//! the protocol gets `pause_writing`; at or below the low-water mark,
//! `resume_writing`. A protocol that forwards data pauses its source in
//! between, as this relay pauses reading from the connection it reads:
//!
//! ```
//! use sloop::{Protocol, Transport};
//!
//! /// Echoes, and stops reading while the peer is slow to take the echo.
//! struct Echo(Option<Transport>);
//!
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: &Transport) {
//!         self.0 = Some(t.clone());
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         let _ = self.0.as_ref().unwrap().write(data);
//!     }
//!     fn pause_writing(&mut self) {
//!         self.0.as_ref().unwrap().pause_reading();
//!     }
//!     fn resume_writing(&mut self) {
//!         self.0.as_ref().unwrap().resume_reading();
//!     }
//! }
//! ```
//!
//! On the async side the same rules are the `futures` traits': a
//! [`TransportStream`](crate::TransportStream)'s `poll_write` is `Pending`
//! while its transport has paused writing, `flush` waits until the buffer
//! reached the kernel, and reading stops (`pause_reading`) once more than
//! twice the read limit is unread, asyncio's `StreamReader` rule. A task
//! that awaits each write gets backpressure without doing anything.
//!
//! # Mixing the two styles on one connection
//!
//! A transport can change hands: a protocol may hand its connection to an
//! async task by making a [`TransportStream`](crate::TransportStream) of it
//! ([`TransportStream::new`](crate::TransportStream::new) installs the
//! stream's own protocol), and a stream gives its transport back with
//! [`into_parts`](crate::TransportStream::into_parts), with the bytes
//! nobody read. Here a callback protocol checks a greeting and hands the
//! rest of the conversation to a task:
//!
//! ```
//! use futures::io::{AsyncBufReadExt, AsyncWriteExt};
//! use sloop::{EventLoop, Protocol, Transport, TransportStream};
//!
//! struct Greeting(Option<Transport>);
//!
//! impl Protocol for Greeting {
//!     fn connection_made(&mut self, t: &Transport) {
//!         self.0 = Some(t.clone());
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         let t = self.0.take().unwrap();
//!         if data != b"HELLO\n" {
//!             return t.close();
//!         }
//!         // From here on the connection is a stream, served by a task.
//!         let mut stream = TransportStream::new(&t);
//!         sloop::get_running_loop().unwrap().spawn_local(async move {
//!             let _ = stream.write_all(b"welcome\n").await;
//!             let mut line = String::new();
//!             let _ = stream.read_line(&mut line).await;
//!             let _ = stream.write_all(line.to_uppercase().as_bytes()).await;
//!             let _ = stream.close().await;
//!         });
//!     }
//! }
//!
//! let lp = EventLoop::new()?;
//! let server = lp.run_until_complete(lp.create_server(|| Greeting(None), "127.0.0.1:0"))??;
//! let addr = server.local_addrs()[0];
//! let got = lp.run_until_complete(async move {
//!     use futures::io::AsyncReadExt;
//!     let mut c = sloop::get_running_loop().unwrap().open_connection(addr).await?;
//!     c.write_all(b"HELLO\n").await?;
//!     let mut welcome = [0u8; 8];
//!     c.read_exact(&mut welcome).await?;
//!     c.write_all(b"shout\n").await?;
//!     let mut rest = String::new();
//!     c.read_to_string(&mut rest).await?;
//!     Ok::<_, std::io::Error>(rest)
//! })??;
//! assert_eq!(got, "SHOUT\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `mixed` example does the same with a deadline on the greeting and
//! hands over the bytes that came with it.
//!
//! # Coming from asyncio
//!
//! The names are asyncio's (the [table](crate#asyncio--sloop) on the
//! front page), and so is the behaviour, scenario by scenario: one
//! iteration of the loop is `_run_once`, transports follow
//! `selector_events.py`, flow control is `_FlowControlMixin`. What differs
//! comes from Rust:
//!
//! - Coroutines with keyword arguments are builders you `.await`:
//!   `loop.create_server(factory, host, port, backlog=...)` is
//!   `lp.create_server(factory, (host, port)).backlog(..).await`.
//! - `get_extra_info` has typed accessors (`peer_addr`, `local_addr`,
//!   `with_socket`); the string form is kept for parity.
//! - A protocol is owned by its transport, so `get_protocol` is
//!   `with_protocol::<P, _>(|p| ..)` on a datagram transport.
//! - Errors are values: misuse returns an [`Error`](crate::Error) carrying
//!   asyncio's message instead of raising.
//! - Some behaviour departs on purpose; the [differences] page lists each
//!   case with its reason.
//!
//! # Coming from tokio or smol
//!
//! | tokio | sloop |
//! | --- | --- |
//! | `Runtime`/`LocalSet`, `block_on` | [`EventLoop`](crate::EventLoop), [`run_until_complete`](crate::LoopHandle::run_until_complete) (one loop per thread; nothing is `Send` but [`Remote`](crate::Remote)) |
//! | `tokio::task::spawn_local`, `JoinHandle` | [`spawn_local`](crate::LoopHandle::spawn_local), [`Task`](crate::Task) (awaitable; dropping it detaches, as a `JoinHandle`) |
//! | `tokio::spawn` from another thread | [`Remote::spawn`](crate::Remote) |
//! | `TcpListener::bind` + `accept` loop | [`start_server`](crate::LoopHandle::start_server) (a handler per connection) |
//! | `TcpStream::connect` | [`open_connection`](crate::LoopHandle::open_connection) |
//! | `tokio::io::AsyncReadExt` | `futures::io::AsyncReadExt` (the `futures` traits, as smol's) |
//! | `tokio::time::sleep`, `timeout`, `interval` | [`sleep`](crate::sleep), [`timeout`](crate::timeout), [`interval`](crate::interval) |
//! | `UdpSocket` | [`DatagramSocket`](crate::DatagramSocket) (`Stream` + `Sink` of datagrams) |
//!
//! Crates written for `futures-io` run unchanged; crates written for
//! `tokio::io` need the usual compatibility wrapper. A future that is not
//! `Send` is fine everywhere; one from another thread's code reaches the
//! loop through [`Remote`](crate::Remote), and a waker from another thread
//! wakes the loop.

/// Where sloop deliberately departs from asyncio, and why (the repository's
/// `docs/differences.md`). Examples of the sloop side are in the
/// [guide](super) and on the items this page links to.
#[doc = include_str!("../docs/differences.md")]
pub mod differences {}
