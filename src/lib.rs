//! # sloop
//!
//! asyncio's selector event loop for Rust: a single-threaded loop on
//! [mio](https://docs.rs/mio) that runs callbacks, timers, I/O callbacks and
//! futures, with asyncio's semantics.
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
//! | `loop.create_task`, `Task.cancel` | [`LoopHandle::spawn_local`], [`Task::cancel`] |
//! | `asyncio.get_running_loop()` | [`get_running_loop`] |
//! | `asyncio.sleep`, `wait_for` | [`sleep`], [`timeout`] |
//! | `loop.set_exception_handler`, `call_exception_handler` | the same names on [`LoopHandle`], with [`ExceptionContext`] |
//! | `loop.set_debug`, `slow_callback_duration` | [`LoopHandle::set_debug`], [`LoopHandle::set_slow_callback_duration`] |
//!
//! # Design
//!
//! One iteration of the loop is asyncio's `_run_once`; the
//! [`event_loop`] module lists its steps. The rules the rest stands on:
//! one loop per thread, and only [`Remote`] crosses threads; no borrow of
//! the loop is held while user code runs, so every method may be called
//! from any callback; a panic in a callback is caught and reported to the
//! exception handler, and the loop runs on.

#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod bridge;
mod connect;
pub mod datagram_endpoint;
mod error;
pub mod event_loop;
mod exception;
pub mod protocol;
pub mod server;
pub mod sock;
mod sys;
mod task;
pub mod transport;

pub use bridge::datagram::{DatagramRecvHalf, DatagramSendHalf, DatagramSocket};
pub use bridge::stream::{ReadHalf, StreamParts, TransportStream, WriteHalf};
pub use bridge::time::{interval, sleep, sleep_until, timeout, Elapsed, Interval, Sleep, Timeout};
pub use connect::Connect;
pub use datagram_endpoint::{DatagramEndpointBuilder, Family, UnixDatagramEndpointBuilder};
pub use error::{Error, Result};
pub use event_loop::{
    get_running_loop, Builder, EventLoop, Handle, LoopHandle, Remote, RemoteTask, TimerHandle,
};
pub use exception::{Exception, ExceptionContext};
pub use protocol::{AnyProtocol, Buffered, BufferedProtocol, IntoProtocol, Protocol};
pub use server::{Server, ServerBuilder, WaitClosed};
pub use task::{Task, TaskError};
pub use transport::datagram::{DatagramAddr, DatagramProtocol, DatagramTransport, UnixAddr};
pub use transport::{Address, EmptyWaiter, Transport};
