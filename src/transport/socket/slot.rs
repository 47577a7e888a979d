//! The socket transport's protocol slot: which protocol kinds a stream
//! transport can hold, and how it holds them so that the read path moves a
//! plain box.

use std::cell::Cell;
use std::io;

use crate::protocol::stream_reader::StreamReaderProtocol;
use std::any::Any;

use crate::protocol::{AnyProtocol, BufferedProtocol, ProtocolBox, StoredBuffered, StoredProtocol};
use crate::transport::cell::{Lendable, Notified, Slot};
use crate::transport::Transport;

/// A protocol as the transport holds it: the public kinds, and the
/// bridge's own protocol kept as its concrete type, so that the read path
/// of every [`TransportStream`](crate::TransportStream) calls it directly
/// rather than through a vtable.
pub(crate) enum Installed {
    Stream(Box<dyn StoredProtocol>),
    Buffered(Box<dyn StoredBuffered>),
    Bridge(Box<StreamReaderProtocol>),
}

impl From<AnyProtocol> for Installed {
    fn from(p: AnyProtocol) -> Installed {
        match p.0 {
            ProtocolBox::Stream(p) => Installed::Stream(p),
            ProtocolBox::Buffered(p) => Installed::Buffered(p),
        }
    }
}

/// Calls the same method on whichever kind is installed.
macro_rules! on_each_kind {
    ($installed:expr, $p:ident => $call:expr) => {
        match $installed {
            Installed::Stream($p) => $call,
            Installed::Buffered($p) => $call,
            Installed::Bridge($p) => $call,
        }
    };
}

/// The user's protocol as `Any`, to lend it by type; `None` for the
/// stream bridge's own.
impl Lendable for Installed {
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        match self {
            Installed::Stream(p) => Some(p.as_any_mut()),
            Installed::Buffered(p) => Some(p.as_any_mut()),
            Installed::Bridge(_) => None,
        }
    }
}

impl Installed {
    pub(crate) fn connection_made(&mut self, t: &Transport) {
        on_each_kind!(self, p => p.connection_made(t))
    }
    pub(crate) fn eof_received(&mut self) -> bool {
        on_each_kind!(self, p => p.eof_received())
    }
    /// Whether the transport reads into the protocol's own buffer.
    pub(crate) fn is_buffered(&self) -> bool {
        !matches!(self, Installed::Stream(_))
    }

    /// The protocol as a `BufferedProtocol`, unless it is a `Protocol`.
    pub(crate) fn buffered(&mut self) -> Option<&mut dyn BufferedProtocol> {
        match self {
            Installed::Stream(_) => None,
            Installed::Buffered(p) => Some(p.as_buffered()),
            Installed::Bridge(p) => Some(p.as_mut()),
        }
    }
}

impl Notified for Installed {
    fn pause_writing(&mut self) {
        on_each_kind!(self, p => p.pause_writing())
    }
    fn resume_writing(&mut self) {
        on_each_kind!(self, p => p.resume_writing())
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        on_each_kind!(self, p => p.connection_lost(exc))
    }
}

/// One `Option<Box<…>>` per kind (all but one empty) rather than an
/// `Option<Installed>`, so that the read paths move a box out and back:
/// two words, no tag.
#[derive(Default)]
pub(crate) struct ProtocolSlot {
    pub(crate) stream: Cell<Option<Box<dyn StoredProtocol>>>,
    pub(crate) buffered: Cell<Option<Box<dyn StoredBuffered>>>,
    pub(crate) bridge: Cell<Option<Box<StreamReaderProtocol>>>,
}

impl Slot for ProtocolSlot {
    type Protocol = Installed;

    fn take(&self) -> Option<Installed> {
        if let Some(p) = self.stream.take() {
            return Some(Installed::Stream(p));
        }
        if let Some(p) = self.bridge.take() {
            return Some(Installed::Bridge(p));
        }
        self.buffered.take().map(Installed::Buffered)
    }

    fn replace(&self, p: Installed) -> Option<Installed> {
        let old = self.take();
        match p {
            Installed::Stream(p) => self.stream.set(Some(p)),
            Installed::Buffered(p) => self.buffered.set(Some(p)),
            Installed::Bridge(p) => self.bridge.set(Some(p)),
        }
        old
    }
}

/// Feeds `data` to a buffered protocol through get_buffer/buffer_updated
/// (asyncio's `_feed_data_to_buffered_proto`), for bytes read into the
/// shared buffer when the protocol changed kind meanwhile. Returns `false`
/// if `get_buffer` returned an empty buffer (the rest is not delivered).
pub(crate) fn feed_buffered(p: &mut dyn BufferedProtocol, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let buf = p.get_buffer(data.len());
        if buf.is_empty() {
            return false;
        }
        let n = buf.len().min(data.len());
        buf[..n].copy_from_slice(&data[..n]);
        p.buffer_updated(n);
        data = &data[n..];
    }
    true
}
