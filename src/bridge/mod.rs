//! The async/await side: futures that ride on the loop.
//!
//! Every type here is a protocol (or a timer callback) under the hood: the
//! bridge never touches a socket itself (docs/design.md D10). [`stream`] and
//! [`datagram`] turn transports into `AsyncRead`/`AsyncWrite` and
//! `Stream`/`Sink`; [`time`] has `sleep`, `timeout` and `interval`; [`rt`]
//! has the `Send` timer and executor that runtime-agnostic crates (hyper)
//! ask for.

pub mod datagram;
mod open;
pub mod rt;
mod sendfile;
pub mod stream;
pub mod time;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::transport::EmptyWaiter;

/// The flush of both bridges: wait on the transport's empty waiter, made
/// by `start` (which gives `None` when there is nothing to wait for) and
/// kept in `slot` across polls. A waiter that completed is checked again
/// with `start`: it may be a dropped flush's, from before the last writes.
pub(crate) fn poll_flush_with(
    slot: &mut Option<EmptyWaiter>,
    cx: &mut Context<'_>,
    start: impl Fn() -> io::Result<Option<EmptyWaiter>>,
) -> Poll<io::Result<()>> {
    loop {
        let waiter = match slot {
            Some(waiter) => waiter,
            None => match start()? {
                Some(waiter) => slot.insert(waiter),
                None => return Poll::Ready(Ok(())),
            },
        };
        let result = futures::ready!(Pin::new(waiter).poll(cx));
        *slot = None;
        result.map_err(io::Error::from)?;
    }
}
