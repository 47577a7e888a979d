//! # sloop
//!
//! asyncio's selector event loop for Rust: a single-threaded loop on
//! [mio](https://docs.rs/mio) that runs callbacks, timers, raw fd readers
//! and writers, callback-style **protocols over transports** (TCP, Unix,
//! UDP), and **futures**, with asyncio's semantics. The same transports are
//! also `AsyncRead`/`AsyncWrite` streams, so both styles live on one loop,
//! even on one connection.
//!
//! ## Two styles, one loop
//!
//! A callback protocol, as in asyncio: the transport calls the protocol
//! when bytes arrive; the protocol writes through the transport.
//!
//! ```
//! use futures::io::{AsyncReadExt, AsyncWriteExt};
//! use sloop::{EventLoop, Protocol, Transport};
//!
//! struct Echo(Option<Transport>);
//!
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, transport: &Transport) {
//!         self.0 = Some(transport.clone());
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         if let Some(t) = &self.0 {
//!             let _ = t.write(data);
//!         }
//!     }
//!     // No cleanup needed in connection_lost: the transport drops its
//!     // protocol (and the handle it holds) after that call.
//! }
//!
//! let lp = EventLoop::new()?;
//! let h = lp.handle();
//! let reply = lp.run_until_complete(async move {
//!     let server = h.create_server(|| Echo(None), "127.0.0.1:0").await?;
//!     let port = server.local_addrs()[0].port();
//!     // The client side is a stream: the other style.
//!     let mut client = h.open_connection(("127.0.0.1", port)).await?;
//!     client.write_all(b"ping").await?;
//!     client.close().await?; // EOF: the echo server closes in turn
//!     let mut reply = Vec::new();
//!     client.read_to_end(&mut reply).await?;
//!     Ok::<_, std::io::Error>(reply)
//! })??;
//! assert_eq!(reply, b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `??` after `run_until_complete`: the first `?` takes the loop's own
//! result (an [`Error`] if the loop could not run the future, e.g.
//! [`Error::Closed`]), the second the future's output, here an
//! `io::Result`.
//!
//! The same server with `async fn`: each connection is a task holding a
//! [`TransportStream`].
//!
//! ```
//! use futures::io::AsyncWriteExt;
//! use sloop::{EventLoop, TransportStream};
//!
//! async fn echo(stream: TransportStream) {
//!     let (mut reader, mut writer) = stream.split();
//!     if futures::io::copy_buf(&mut reader, &mut writer).await.is_ok() {
//!         let _ = writer.close().await;
//!     }
//! }
//!
//! let lp = EventLoop::new()?;
//! let server = lp.run_until_complete(lp.start_server(echo, "127.0.0.1:0"))??;
//! println!("listening on {}", server.local_addrs()[0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Timers and tasks need no sockets:
//!
//! ```
//! use std::time::Duration;
//!
//! let lp = sloop::EventLoop::new()?;
//! lp.call_later(Duration::from_millis(1), || println!("a timer"))?;
//! let task = lp.spawn_local(async {
//!     sloop::sleep(Duration::from_millis(1)).await;
//!     "done"
//! });
//! assert_eq!(lp.run_until_complete(task)?.unwrap(), "done");
//! # Ok::<(), sloop::Error>(())
//! ```
//!
//! ## The main types
//!
//! - **The loop.** [`EventLoop`] owns a loop and closes it when dropped;
//!   [`LoopHandle`] is the cheap, `!Send` handle that callbacks, protocols
//!   and tasks hold, with every method (`EventLoop` derefs to it);
//!   [`Remote`] is the one `Send` handle, for other threads. A spawned
//!   future is a [`Task`].
//! - **Callback style.** A [`Protocol`] (or a [`BufferedProtocol`], which
//!   lends its own buffer) is driven by a [`Transport`] (TCP, Unix); a
//!   [`DatagramProtocol`] by a [`DatagramTransport`] (UDP, Unix datagram).
//!   [`LoopHandle::create_server`] gives a [`Server`],
//!   [`LoopHandle::create_connection`] a `Transport`.
//! - **Async style.** A [`TransportStream`] is a connection as
//!   `AsyncRead + AsyncWrite + AsyncBufRead` ([`LoopHandle::open_connection`],
//!   [`LoopHandle::start_server`], or [`TransportStream::new`] over any
//!   `Transport`); a [`DatagramSocket`] is a `Stream` and `Sink` of
//!   datagrams; [`sleep`], [`timeout`] and [`interval`] ride on the loop's
//!   timers.
//! - **Errors.** Misuse is an [`Error`] with asyncio's message, each
//!   variant of one [`io::ErrorKind`](std::io::ErrorKind)
//!   ([`Error::kind`]); the OS's errors are `io::Error`s. What fails out of
//!   any caller's reach (a panicking callback, a fatal transport error)
//!   goes to the exception handler as an [`ExceptionContext`].
//! - **More cores, and a look inside.** A [`group::LoopGroup`] runs a loop
//!   per thread and serves on every one of them; [`LoopHandle::stats`]
//!   tells what a loop holds and has done ([`LoopStats`]).
//!
//! ## Dependencies
//!
//! The async side implements the `futures` traits (`AsyncRead`,
//! `AsyncWrite`, `AsyncBufRead`, `Stream`, `Sink`); the methods you call
//! on them (`read`, `write_all`, `close`, `next`, `send`…) come from
//! `futures`' extension traits (`AsyncReadExt`, `AsyncWriteExt`,
//! `AsyncBufReadExt`, `StreamExt`, `SinkExt`), so that side needs
//! `futures` next to `sloop`:
//!
//! ```toml
//! [dependencies]
//! sloop = "0.1"
//! futures = "0.3" # the *Ext traits of the async side
//! ```
//!
//! The callback side needs nothing else. Sockets are lent as `socket2`
//! types ([`Transport::with_socket`], [`Server::with_sockets`]); add
//! `socket2` only to name its types yourself.
//!
//! ## Addresses and builders
//!
//! Every constructor that takes an internet address takes it as one
//! [`ToAddrs`] value, as std's `TcpStream::connect` does: `"host:port"`,
//! `("host", port)`, `"host:service"`, a [`SocketAddr`](std::net::SocketAddr)
//! or a list of them. Unix paths have their own `_unix` constructors.
//!
//! asyncio's `create_server`, `create_connection` and
//! `create_datagram_endpoint` are coroutines with many keyword arguments.
//! Here they return builders ([`ServerBuilder`], [`Connect`],
//! [`DatagramEndpointBuilder`]): the options chain as methods, the ones
//! left out keep asyncio's defaults, and the builder is
//! [`IntoFuture`](std::future::IntoFuture), so `.await` (or
//! [`run_until_complete`](LoopHandle::run_until_complete)) creates the
//! server, connection or endpoint. Nothing happens before. The future
//! resolves names (and service names) on a short-lived thread, because the
//! system resolver blocks and the loop must not; numeric addresses are used
//! at once. [`create_server`](LoopHandle::create_server) has an example.
//!
//! # asyncio → sloop
//!
//! | asyncio | sloop |
//! | --- | --- |
//! | `asyncio.new_event_loop()` | [`EventLoop::new`], [`EventLoop::builder`] |
//! | `loop.run_forever()`, `run_until_complete`, `stop`, `close` | [`LoopHandle::run_forever`], [`LoopHandle::run_until_complete`], [`LoopHandle::stop`], [`LoopHandle::close`] |
//! | `loop.call_soon`, `call_later`, `call_at`, `time` | [`LoopHandle::call_soon`], [`LoopHandle::call_later`], [`LoopHandle::call_at`], [`LoopHandle::time`] |
//! | `Handle`, `TimerHandle` | [`Handle`], [`TimerHandle`] |
//! | `loop.call_soon_threadsafe` | [`Remote::call_soon`] |
//! | `loop.add_reader`, `remove_reader`, `add_writer`, `remove_writer` | the same names on [`LoopHandle`] |
//! | `loop.sock_recv`, `sock_recv_into`, `sock_recvfrom`, `sock_sendall`, `sock_sendto`, `sock_connect`, `sock_accept` | the same names on [`LoopHandle`] (see [`sock`]) |
//! | `loop.sendfile`, `loop.sock_sendfile` | [`LoopHandle::sendfile`], [`LoopHandle::sock_sendfile`] (see [`sendfile`]); on the bridge [`TransportStream::sendfile`] |
//! | `loop.create_task`, `Task.cancel` | [`LoopHandle::spawn_local`], [`Task::cancel`] |
//! | `create_task(name=)`, `Task.get_name`, `set_name` | [`LoopHandle::spawn_local_named`], [`Task::name`], [`Task::set_name`] |
//! | `asyncio.get_running_loop()` | [`get_running_loop`] |
//! | `asyncio.sleep`, `wait_for` | [`sleep`], [`timeout`] |
//! | `loop.set_exception_handler`, `get_exception_handler`, `call_exception_handler` | [`LoopHandle::set_exception_handler`], [`LoopHandle::exception_handler`], [`LoopHandle::call_exception_handler`], with [`ExceptionContext`] |
//! | `loop.set_debug`, `slow_callback_duration` | [`LoopHandle::set_debug`], [`LoopHandle::set_slow_callback_duration`] |
//! | `asyncio.Protocol`, `BufferedProtocol` | [`Protocol`], [`BufferedProtocol`] (wrapped in [`Buffered`] where a protocol is expected) |
//! | `_SelectorSocketTransport` (TCP and Unix) | [`Transport`] |
//! | `transport.write`, `writelines`, `write_eof`, `close`, `abort` | the same names on [`Transport`] |
//! | `get_write_buffer_size`, `get_write_buffer_limits`, `set_write_buffer_limits` | [`Transport::write_buffer_size`], [`Transport::write_buffer_limits`], [`Transport::set_write_buffer_limits`] |
//! | `get_extra_info('peername' / 'sockname' / 'socket')` | [`Transport::peer_addr`], [`Transport::local_addr`], [`Transport::with_socket`] (and [`Transport::get_extra_info`]) |
//! | `transport.set_protocol`, `pause_reading`, `resume_reading`, `is_reading` | the same names on [`Transport`] |
//! | `_make_empty_waiter` | [`Transport::empty_waiter`] |
//! | `loop.create_server`, `create_unix_server`, `create_server(sock=)` | [`LoopHandle::create_server`], [`LoopHandle::create_unix_server`], [`LoopHandle::create_server_from_socket`] |
//! | `Server.close`, `wait_closed`, `is_serving`, `start_serving`, `serve_forever`; `sockets` | the same names on [`Server`]; [`Server::with_sockets`] |
//! | `loop.create_connection`, `create_unix_connection`, `connect_accepted_socket` | [`LoopHandle::create_connection`], [`LoopHandle::create_unix_connection`], [`LoopHandle::connect_accepted_socket`] |
//! | `DatagramProtocol`, `_SelectorDatagramTransport` | [`DatagramProtocol`], [`DatagramTransport`] |
//! | datagram `transport.set_protocol`, `get_protocol` | [`DatagramTransport::set_protocol`], [`DatagramTransport::with_protocol`] |
//! | `loop.create_datagram_endpoint` | [`LoopHandle::create_datagram_endpoint`], [`LoopHandle::create_unix_datagram_endpoint`] |
//! | `host`/`port` arguments, `loop.getaddrinfo` in the executor | one [`ToAddrs`] argument, resolved off the loop thread by the future |
//! | `asyncio.open_connection`, `start_server` (`StreamReader`/`StreamWriter`) | [`LoopHandle::open_connection`], [`LoopHandle::start_server`] → [`TransportStream`] |
//! | `loop.add_signal_handler`, `remove_signal_handler` | [`LoopHandle::add_signal_handler`], [`LoopHandle::remove_signal_handler`]; [`LoopHandle::run_until_signal`] to stop on Ctrl-C |
//! | `loop.run_in_executor(None, f)`, `getaddrinfo`, `getnameinfo`, `shutdown_default_executor` | [`LoopHandle::run_in_executor`], [`LoopHandle::getaddrinfo`], [`LoopHandle::getnameinfo`], [`LoopHandle::shutdown_default_executor`] ([`executor`]) |
//! | `loop.connect_read_pipe`, `connect_write_pipe` | [`LoopHandle::connect_read_pipe`], [`LoopHandle::connect_write_pipe`] → [`pipe::PipeTransport`]; [`LoopHandle::open_read_pipe`], [`LoopHandle::open_write_pipe`] → [`pipe::PipeReader`], [`pipe::PipeWriter`] |
//! | `loop.subprocess_exec`, `subprocess_shell`, `SubprocessProtocol` | [`LoopHandle::subprocess_exec`], [`LoopHandle::subprocess_shell`], [`LoopHandle::subprocess_command`] → [`subprocess::SubprocessTransport`] |
//! | `asyncio.create_subprocess_exec`, `create_subprocess_shell`, `Process.wait` | [`LoopHandle::create_subprocess_exec`], [`LoopHandle::create_subprocess_shell`], [`LoopHandle::spawn_child`] → [`subprocess::Child`] |
//!
//! # Design
//!
//! One iteration of the loop is asyncio's `_run_once`; the
//! [`event_loop`] module lists its steps, and the one liberty taken with
//! them (a zero-timeout poll right after a poll is skipped). The rules the
//! rest stands on: one loop per thread, and only [`Remote`] crosses
//! threads; no borrow of the loop is held while user code runs, so every
//! method may be called from any callback; a panic in a callback is caught
//! and reported to the exception handler, and the loop runs on.

#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod address;
pub mod bridge;
mod connect;
pub mod datagram_endpoint;
mod error;
pub mod event_loop;
mod exception;
pub mod executor;
pub mod group;
pub mod guide;
mod net;
pub mod pipe;
pub mod protocol;
pub mod sendfile;
pub mod server;
mod signals;
pub mod sock;
pub mod subprocess;
mod sync;
mod sys;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use bridge::datagram::{DatagramRecvHalf, DatagramSendHalf, DatagramSocket};
pub use bridge::stream::{ReadHalf, StreamParts, TransportStream, WriteHalf};
pub use bridge::time::{interval, sleep, sleep_until, timeout, Elapsed, Interval, Sleep, Timeout};
pub use connect::{Connect, ConnectErrors};
pub use datagram_endpoint::{DatagramEndpointBuilder, UnixDatagramEndpointBuilder};
pub use error::{Error, Result, TlsFailure};
pub use event_loop::{
    get_running_loop, Builder, EventLoop, ExceptionHandler, Handle, LoopHandle, Remote, RemoteTask,
    TimerHandle,
};
pub use event_loop::{LoopStats, SlowCallback, TransportCounts, TransportStats};
pub use event_loop::{Task, TaskError};
pub use exception::{Exception, ExceptionContext, TaskInfo, TransportInfo, TransportKind};
pub use net::{Addrs, Family, ToAddrs};
pub use protocol::{AnyProtocol, Buffered, BufferedProtocol, IntoProtocol, Protocol};
pub use sendfile::{Sendfile, SendfileError, SockSendfile};
pub use server::{ServeForever, Server, ServerBuilder, WaitClosed};
pub use transport::datagram::{DatagramAddr, DatagramProtocol, DatagramTransport, UnixAddr};
pub use transport::{Address, EmptyWaiter, Transport};
