//! Stream protocols: the callbacks a transport calls (asyncio's
//! `asyncio.Protocol` and `asyncio.BufferedProtocol`).
//!
//! A protocol is plain user state with callback methods; a
//! [`Transport`] owns it and calls it. Every
//! method has a default that does nothing, as in asyncio.
//!
//! # Call order
//!
//! `connection_made` first; then any number of `data_received` (or, for a
//! [`BufferedProtocol`], `get_buffer` each optionally followed by
//! `buffer_updated`); then at most one `eof_received`; then exactly one
//! `connection_lost`, which is the last call. `pause_writing` and
//! `resume_writing` strictly alternate and stop after `connection_lost`.
//!
//! Every method of the transport may be called from inside every callback
//! (docs/design.md D2): the protocol is taken out of the transport while it runs.
//! A `pause_writing`/`resume_writing` that a protocol's own call triggers is
//! delivered right after the current callback returns (D6).
//!
//! A panic in a callback is caught: it becomes a fatal error of that
//! transport only (asyncio's "Fatal error: protocol.data_received() call
//! failed."), and the protocol then gets `connection_lost(Some(err))`.

use std::any::Any;
use std::io;

use crate::transport::Transport;

mod datagram;
pub(crate) mod stream_reader;

pub use datagram::DatagramProtocol;

/// A stream protocol that receives data as `&[u8]` slices of the loop's
/// shared read buffer (docs/design.md D5).
///
/// ```
/// use sloop::{Protocol, Transport};
///
/// struct Echo(Option<Transport>);
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: &Transport) {
///         self.0 = Some(transport.clone());
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         let _ = self.0.as_ref().unwrap().write(data);
///     }
/// }
/// ```
pub trait Protocol: 'static {
    /// The connection is up. Keep a clone of `transport` to write later.
    /// See the example on [`Protocol`].
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// Bytes arrived. `data` borrows the loop's read buffer: copy what
    /// must outlive the call. See the example on [`Protocol`].
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The peer closed its write side. Return `false` (the default) to let
    /// the transport close itself (after sending what it still buffers),
    /// `true` to keep the write side open: the connection is then
    /// half-closed and the protocol closes it when done. See the example on
    /// [`Protocol`].
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is closed: `None` after `close`/`abort` or a normal
    /// end, `Some(err)` after an error (a reset, a failed write, a panic in
    /// a callback). This is the last call the protocol receives. See the
    /// example on [`LoopHandle::create_unix_connection`](crate::LoopHandle::create_unix_connection).
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// The transport's write buffer went above its high-water mark: stop
    /// writing until [`resume_writing`](Protocol::resume_writing).
    fn pause_writing(&mut self) {}

    /// The write buffer drained to the low-water mark or below. See the
    /// example on [`Protocol`].
    fn resume_writing(&mut self) {}
}

/// A stream protocol that lends its own memory for the transport to read
/// into (asyncio's `BufferedProtocol`): no copy from a shared buffer.
/// Give it where a protocol is expected wrapped in [`Buffered`].
///
/// ```
/// use sloop::{Buffered, BufferedProtocol, EventLoop};
///
/// struct Collect {
///     buf: Vec<u8>,
///     got: Vec<u8>,
/// }
/// impl BufferedProtocol for Collect {
///     fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
///         &mut self.buf
///     }
///     fn buffer_updated(&mut self, nbytes: usize) {
///         self.got.extend_from_slice(&self.buf[..nbytes]);
///     }
/// }
///
/// let lp = EventLoop::new()?;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let make = || Buffered(Collect { buf: vec![0; 4096], got: Vec::new() });
/// let t = lp.run_until_complete(lp.create_connection(make, listener.local_addr()?))??;
/// let (mut peer, _) = listener.accept()?;
/// std::io::Write::write_all(&mut peer, b"hello")?;
/// let probe = t.clone();
/// lp.run_until_complete(async move {
///     while probe.with_protocol(|c: &mut Collect| c.got.len()) != Some(5) {
///         sloop::sleep(std::time::Duration::from_millis(1)).await;
///     }
/// })?;
/// t.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait BufferedProtocol: 'static {
    /// The connection is up. Keep a clone of `transport` to write later.
    /// See the example on [`Protocol`].
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// Returns the buffer to read into. `size_hint` is how much the caller
    /// would like room for; `0` means any size (asyncio's `-1`). An empty
    /// buffer is a fatal error of the transport
    /// ([`Error::EmptyBuffer`](crate::Error::EmptyBuffer)). See the example
    /// on [`BufferedProtocol`].
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];

    /// The first `nbytes` of the buffer last returned by
    /// [`get_buffer`](BufferedProtocol::get_buffer) were filled. See the
    /// example on [`BufferedProtocol`].
    fn buffer_updated(&mut self, nbytes: usize);

    /// As [`Protocol::eof_received`].
    fn eof_received(&mut self) -> bool {
        false
    }

    /// As [`Protocol::connection_lost`].
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// As [`Protocol::pause_writing`].
    fn pause_writing(&mut self) {}

    /// As [`Protocol::resume_writing`].
    fn resume_writing(&mut self) {}
}

/// What the transport's read path needs of a protocol that lends it memory:
/// a [`BufferedProtocol`], told when a `recv` into its buffer read nothing
/// (`WouldBlock` or an error), so that it may take the buffer back. A
/// public `BufferedProtocol` keeps its buffer (asyncio calls nothing then
/// either); the stream bridge's protocol returns its block to the pool.
pub(crate) trait LendsBuffer: BufferedProtocol {
    fn nothing_read(&mut self) {}
}

impl LendsBuffer for dyn StoredBuffered {}

/// Marks a [`BufferedProtocol`] where a protocol is expected:
/// `create_server(|| Buffered(MyProto::new()), addr)`, or
/// `transport.set_protocol(Buffered(p))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Buffered<P>(pub P);

/// A protocol of either kind, boxed: what a transport owns. Opaque: make
/// one with [`IntoProtocol::into_protocol`] (or `From`), from a
/// [`Protocol`] or a [`Buffered`]-wrapped [`BufferedProtocol`].
///
/// A factory that picks the kind at run time returns this:
///
/// ```
/// use sloop::{AnyProtocol, Buffered, BufferedProtocol, IntoProtocol, Protocol};
///
/// struct Lines;
/// impl Protocol for Lines {}
///
/// struct Bulk(Vec<u8>);
/// impl BufferedProtocol for Bulk {
///     fn get_buffer(&mut self, _: usize) -> &mut [u8] {
///         &mut self.0
///     }
///     fn buffer_updated(&mut self, _: usize) {}
/// }
///
/// fn make(bulk: bool) -> AnyProtocol {
///     if bulk {
///         Buffered(Bulk(vec![0; 64 * 1024])).into_protocol()
///     } else {
///         Lines.into()
///     }
/// }
/// assert!(make(true).is_buffered());
/// assert!(!make(false).is_buffered());
/// ```
pub struct AnyProtocol(pub(crate) ProtocolBox);

/// The two kinds a transport can hold, behind [`AnyProtocol`]: boxed
/// with an `Any` view, so that
/// [`Transport::with_protocol`](crate::Transport::with_protocol) can lend
/// the protocol by its type (the public traits need no `Any` bound, and no
/// trait upcasting, which the crate's minimum Rust lacks).
pub(crate) enum ProtocolBox {
    Stream(Box<dyn StoredProtocol>),
    Buffered(Box<dyn StoredBuffered>),
}

/// A [`Protocol`] as a transport stores it.
pub(crate) trait StoredProtocol: Protocol {
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<P: Protocol> StoredProtocol for P {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A [`BufferedProtocol`] as a transport stores it.
pub(crate) trait StoredBuffered: BufferedProtocol {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn as_buffered(&mut self) -> &mut dyn BufferedProtocol;
}

impl<P: BufferedProtocol> StoredBuffered for P {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn as_buffered(&mut self) -> &mut dyn BufferedProtocol {
        self
    }
}

impl AnyProtocol {
    /// Whether it is a [`BufferedProtocol`] (given as [`Buffered`]).
    pub fn is_buffered(&self) -> bool {
        matches!(self.0, ProtocolBox::Buffered(_))
    }
}

impl std::fmt::Debug for AnyProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ProtocolBox::Stream(_) => f.write_str("<Protocol>"),
            ProtocolBox::Buffered(_) => f.write_str("<BufferedProtocol>"),
        }
    }
}

impl<P: Protocol> From<P> for AnyProtocol {
    fn from(p: P) -> AnyProtocol {
        AnyProtocol(ProtocolBox::Stream(Box::new(p)))
    }
}

impl<P: BufferedProtocol> From<Buffered<P>> for AnyProtocol {
    fn from(p: Buffered<P>) -> AnyProtocol {
        AnyProtocol(ProtocolBox::Buffered(Box::new(p.0)))
    }
}

/// What may be given where a protocol is expected: any [`Protocol`], a
/// [`Buffered`]-wrapped [`BufferedProtocol`], or an [`AnyProtocol`].
pub trait IntoProtocol {
    /// Boxes the protocol.
    fn into_protocol(self) -> AnyProtocol;
}

impl<P: Protocol> IntoProtocol for P {
    fn into_protocol(self) -> AnyProtocol {
        self.into()
    }
}

impl<P: BufferedProtocol> IntoProtocol for Buffered<P> {
    fn into_protocol(self) -> AnyProtocol {
        self.into()
    }
}

impl IntoProtocol for AnyProtocol {
    fn into_protocol(self) -> AnyProtocol {
        self
    }
}
