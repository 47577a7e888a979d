//! The async/await side: futures that ride on the loop.
//!
//! Every type here is a protocol (or a timer callback) under the hood: the
//! bridge never touches a socket itself (DESIGN.md D10). [`stream`] and
//! [`datagram`] turn transports into `AsyncRead`/`AsyncWrite` and
//! `Stream`/`Sink`; [`time`] has `sleep`, `timeout` and `interval`; [`rt`]
//! has the `Send` timer and executor that runtime-agnostic crates (hyper)
//! ask for.

pub mod datagram;
mod open;
pub mod rt;
pub mod stream;
pub mod time;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::transport::EmptyWaiter;

/// The flush of both bridges: wait on the transport's empty waiter, made on
/// the first poll by `start` (which gives `None` when there is nothing to
/// wait for) and kept in `slot` across polls.
pub(crate) fn poll_flush_with(
    slot: &mut Option<EmptyWaiter>,
    cx: &mut Context<'_>,
    start: impl FnOnce() -> io::Result<Option<EmptyWaiter>>,
) -> Poll<io::Result<()>> {
    if slot.is_none() {
        match start()? {
            Some(waiter) => *slot = Some(waiter),
            None => return Poll::Ready(Ok(())),
        }
    }
    let waiter = slot.as_mut().expect("set above");
    let result = futures::ready!(Pin::new(waiter).poll(cx));
    *slot = None;
    Poll::Ready(result.map_err(io::Error::from))
}
