//! asyncio's stream entry points: [`open_connection`](LoopHandle::open_connection)
//! and [`start_server`](LoopHandle::start_server), giving
//! [`TransportStream`]s instead of callbacks.
//!
//! They are `create_connection` and `create_server` with the stream's
//! protocol as the factory, and return the same builders: a server spawns
//! one task per connection, running the handler on the connection's
//! stream; a connection's builder gives the stream instead of the
//! transport.

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use super::stream::TransportStream;
use crate::connect::Connect;
use crate::event_loop::LoopHandle;
use crate::net::ToAddrs;
use crate::protocol::stream_reader::{Connecting, StreamState};
use crate::protocol::{AnyProtocol, Buffered, IntoProtocol};
use crate::server::ServerBuilder;
use crate::transport::Transport;

impl LoopHandle {
    /// Opens a TCP connection to `addr` as a [`TransportStream`]
    /// (asyncio's `open_connection`). `addr` is any [`ToAddrs`]
    /// (`("example.com", 80)`, `"127.0.0.1:8080"`, a `SocketAddr`…); a name
    /// is resolved off the loop thread. Returns the [`Connect`] builder of
    /// [`create_connection`](LoopHandle::create_connection), with its
    /// options; await it for the stream.
    ///
    /// ```
    /// use futures::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let h = lp.handle();
    /// lp.run_until_complete(async move {
    ///     let server = h
    ///         .start_server(|mut stream| async move {
    ///             let mut buf = [0u8; 5];
    ///             stream.read_exact(&mut buf).await.unwrap();
    ///             stream.write_all(&buf).await.unwrap();
    ///             stream.close().await.unwrap();
    ///         }, "127.0.0.1:0")
    ///         .await?;
    ///     let port = server.local_addrs()[0].port();
    ///     let mut client = h.open_connection(("127.0.0.1", port)).await?;
    ///     client.write_all(b"hello").await?;
    ///     let mut echoed = Vec::new();
    ///     client.read_to_end(&mut echoed).await?;
    ///     assert_eq!(echoed, b"hello");
    ///     Ok::<(), std::io::Error>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`create_connection`](LoopHandle::create_connection).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes closes the socket it opened
    /// (see [`Connect`]).
    pub fn open_connection(&self, addr: impl ToAddrs) -> Connect<TransportStream> {
        let (protocol, pending) = pending_stream();
        self.create_connection(move || protocol, addr)
            .map_output(move |transport| pending.into_stream(&transport))
    }

    /// Opens a Unix stream connection to `path` as a [`TransportStream`].
    ///
    /// # Errors
    ///
    /// As [`create_unix_connection`](LoopHandle::create_unix_connection).
    ///
    /// # Cancel safety
    ///
    /// As [`open_connection`](LoopHandle::open_connection).
    pub fn open_unix_connection(&self, path: impl AsRef<Path>) -> Connect<TransportStream> {
        let (protocol, pending) = pending_stream();
        self.create_unix_connection(move || protocol, path)
            .map_output(move |transport| pending.into_stream(&transport))
    }

    /// Starts a TCP server on `addr` (any [`ToAddrs`], as for
    /// [`create_server`](LoopHandle::create_server)) that runs
    /// `handler(stream)` in a new task for each connection (asyncio's
    /// `start_server`). Returns the server builder: set options on it, then
    /// await it for the [`Server`](crate::Server).
    ///
    /// The connection closes when the handler drops its stream.
    pub fn start_server<H, F>(&self, handler: H, addr: impl ToAddrs) -> ServerBuilder
    where
        H: Fn(TransportStream) -> F + 'static,
        F: Future<Output = ()> + 'static,
    {
        self.create_server(stream_factory(self.clone(), handler), addr)
    }

    /// Like [`start_server`](LoopHandle::start_server), on a Unix socket
    /// path.
    pub fn start_unix_server<H, F>(&self, handler: H, path: impl AsRef<Path>) -> ServerBuilder
    where
        H: Fn(TransportStream) -> F + 'static,
        F: Future<Output = ()> + 'static,
    {
        self.create_unix_server(stream_factory(self.clone(), handler), path)
    }
}

/// The stream of a connection being opened: its protocol's state, once
/// `connection_made` ran.
struct PendingStream(Rc<Cell<Option<Rc<StreamState>>>>);

impl PendingStream {
    fn into_stream(self, transport: &Transport) -> TransportStream {
        match self.0.take() {
            Some(state) => TransportStream::from_shared(state),
            // Not reached: the connection completes after connection_made.
            None => TransportStream::new(transport),
        }
    }
}

/// A connecting protocol for `open_connection` and its stream to come.
fn pending_stream() -> (AnyProtocol, PendingStream) {
    let slot = Rc::new(Cell::new(None));
    let fill = slot.clone();
    let protocol = Connecting::new(move |state| fill.set(Some(state)));
    (Buffered(protocol).into_protocol(), PendingStream(slot))
}

/// A protocol factory whose protocols spawn `handler` on their stream once
/// connected.
fn stream_factory<H, F>(lp: LoopHandle, handler: H) -> impl FnMut() -> AnyProtocol + 'static
where
    H: Fn(TransportStream) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let handler = Rc::new(handler);
    move || {
        let (lp, handler) = (lp.clone(), handler.clone());
        Buffered(Connecting::new(move |state| {
            lp.spawn_local(handler(TransportStream::from_shared(state)))
                .detach();
        }))
        .into_protocol()
    }
}
