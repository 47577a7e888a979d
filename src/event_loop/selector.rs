//! The selector: mio's `Poll`, and a slab of the file descriptors it watches.
//!
//! Each registered fd has one slab entry and one mio registration. An entry
//! holds either the raw reader/writer callbacks of
//! [`add_reader`](crate::LoopHandle::add_reader) and
//! [`add_writer`](crate::LoopHandle::add_writer), or an [`IoSource`]: a
//! transport, which reads and writes by itself when told its fd is ready.
//!
//! The mio token of an entry is its slab key with a generation number in the
//! high 32 bits ([`IoKey`]). An fd closed and a new one opened in the same
//! iteration can get the same slab slot, and an event fetched for the old fd
//! must not reach the new one: the generation tells them apart (docs/design.md D4).
//! The generation's top bit says whether the entry is a source, so that an
//! event's target is known from its token alone ([`EventTarget`]); the slab
//! is looked up (and the generation checked) once, when the event runs.
//!
//! mio is edge-triggered; asyncio's selectors are level-triggered. Sources
//! keep their own readiness flags and drain until `WouldBlock` (or requeue
//! themselves when a read budget runs out). Raw callbacks cannot be trusted to
//! drain, so after each one the loop re-arms the registration, which makes
//! epoll report a still-ready fd again (docs/design.md D3). A reader or writer
//! whose [`Handle`] was cancelled is not re-armed: the event that finds it
//! cancelled removes it, as asyncio's `_process_events` does (D15), so a
//! still-ready fd cannot keep the loop spinning.

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::handle::Handle;
use crate::error::Error;

/// The token of the loop's own waker (the self-pipe of asyncio).
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// How many events one `epoll_wait` may return.
pub(crate) const EVENTS_CAPACITY: usize = 1024;

/// The bit of [`IoKey`]'s generation that marks a source's registration
/// (the kind of an entry never changes while it is registered).
const SOURCE_BIT: u32 = 1 << 31;

/// A slab key with its generation: the identity of one registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoKey {
    key: u32,
    generation: u32,
}

impl IoKey {
    fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.key as usize)
    }

    fn from_token(token: Token) -> IoKey {
        IoKey {
            key: token.0 as u32,
            generation: (token.0 >> 32) as u32,
        }
    }
}

/// Whom an event is for, read off its token alone.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EventTarget {
    /// The loop's waker rang (another thread queued something).
    Waker,
    /// A source; whether the event is stale is checked when it runs.
    Source(IoKey, Readiness),
    /// Raw reader/writer callbacks ([`Selector::callbacks_ready`]).
    Callbacks(IoKey, Readiness),
}

impl EventTarget {
    #[inline]
    pub(crate) fn of(event: &mio::event::Event) -> EventTarget {
        let token = event.token();
        if token == WAKER_TOKEN {
            return EventTarget::Waker;
        }
        let key = IoKey::from_token(token);
        let readiness = Readiness::from_event(event);
        if key.generation & SOURCE_BIT != 0 {
            EventTarget::Source(key, readiness)
        } else {
            EventTarget::Callbacks(key, readiness)
        }
    }
}

/// What an event says about an fd; a source gets it in
/// [`IoSource::ready`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Readiness(u8);

impl Readiness {
    /// Reading may make progress: data, the peer's EOF, or an error to
    /// collect.
    pub(crate) const READABLE: Readiness = Readiness(1);
    /// Writing may make progress (or fail with the fd's error).
    pub(crate) const WRITABLE: Readiness = Readiness(2);
    /// The peer closed its side, or the fd is in error: a short read
    /// proves nothing about the next one.
    pub(crate) const HUP: Readiness = Readiness(4);

    pub(crate) fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn is_readable(self) -> bool {
        self.contains(Self::READABLE)
    }

    pub(crate) fn is_writable(self) -> bool {
        self.contains(Self::WRITABLE)
    }

    /// Folded the way its users read it, so each asks one bit.
    #[inline]
    fn from_event(event: &mio::event::Event) -> Readiness {
        let error = event.is_error();
        // The usual event of a busy stream: data in, room out, no error.
        if event.is_readable() && event.is_writable() && !error && !event.is_read_closed() {
            return Readiness(Self::READABLE.0 | Self::WRITABLE.0);
        }
        let hup = event.is_read_closed() | error;
        let readable = event.is_readable() | hup;
        let writable = event.is_writable() | error;
        Readiness(readable as u8 | (writable as u8) << 1 | (hup as u8) << 2)
    }
}

impl std::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

/// Something that owns an fd and handles its readiness itself: a transport,
/// a server's listening socket.
pub(crate) trait IoSource {
    /// The fd is ready (or may be: sources must tolerate spurious calls).
    fn ready(&self, readiness: Readiness);
    /// A closing source no longer owns its fd for `add_reader`'s check.
    fn is_closing(&self) -> bool;
    /// A short description for error messages.
    fn describe(&self) -> String;
    /// What a report says about the source if it is a transport.
    fn transport_info(&self) -> Option<crate::exception::TransportInfo> {
        None
    }
    /// The loop closed with this source still registered: release the
    /// protocol and the fd now, since no callback will ever run again
    /// (this breaks the transport <-> protocol `Rc` cycle; docs/design.md D1).
    fn loop_closed(&self) {}
    /// What the source adds to the loop's statistics (`LoopHandle::stats`);
    /// nothing by default. Runs with the selector borrowed: it must not
    /// call user code or the loop.
    fn tally(&self) -> Option<super::SourceTally> {
        None
    }
}

enum IoKind {
    Callbacks {
        reader: Option<Handle>,
        writer: Option<Handle>,
    },
    Source(Rc<dyn IoSource>),
}

struct IoEntry {
    fd: RawFd,
    generation: u32,
    kind: IoKind,
}

pub(crate) struct Selector {
    poll: Poll,
    entries: Slab<IoEntry>,
    /// fd -> slab key + 1 (0: not registered).
    by_fd: Vec<u32>,
    next_generation: u32,
}

impl Selector {
    pub(crate) fn new() -> io::Result<(Selector, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let selector = Selector {
            poll,
            entries: Slab::new(),
            by_fd: Vec::new(),
            next_generation: 0,
        };
        Ok((selector, waker))
    }

    /// Waits for events (at most `timeout`) into `events`. An interrupted
    /// wait counts as an empty one. The events are kept outside the selector
    /// so the loop can dispatch them while handlers (un)register fds.
    pub(crate) fn poll(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        match self.poll.poll(events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            res => res,
        }
    }

    /// Which raw callbacks of `key` an event with `readiness` makes ready:
    /// (reader, writer). Nothing for a stale key (the fd was closed and its
    /// slot reused since the event was fetched). A cancelled callback counts:
    /// handling its event is what removes it ([`rearm`](Selector::rearm)).
    pub(crate) fn callbacks_ready(&self, key: IoKey, readiness: Readiness) -> (bool, bool) {
        let Some(entry) = self.entries.get(key.key as usize) else {
            return (false, false);
        };
        match &entry.kind {
            IoKind::Callbacks { reader, writer } if entry.generation == key.generation => (
                readiness.is_readable() && reader.is_some(),
                readiness.is_writable() && writer.is_some(),
            ),
            _ => (false, false),
        }
    }

    fn key_of_fd(&self, fd: RawFd) -> Option<usize> {
        let i = usize::try_from(fd).ok()?;
        match self.by_fd.get(i) {
            Some(&k) if k != 0 => Some(k as usize - 1),
            _ => None,
        }
    }

    fn insert(&mut self, fd: RawFd, kind: IoKind, interest: Interest) -> io::Result<IoKey> {
        let index = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        let mut generation = self.next_generation & !SOURCE_BIT;
        if matches!(kind, IoKind::Source(_)) {
            generation |= SOURCE_BIT;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.entries.vacant_entry();
        let key = IoKey {
            key: slot.key() as u32,
            generation,
        };
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), key.token(), interest)?;
        slot.insert(IoEntry {
            fd,
            generation,
            kind,
        });
        if self.by_fd.len() <= index {
            self.by_fd.resize(index + 1, 0);
        }
        self.by_fd[index] = key.key + 1;
        Ok(key)
    }

    fn remove(&mut self, key: usize) {
        let entry = self.entries.remove(key);
        // The fd may already be closed by its owner; nothing to do then.
        let _ = self.poll.registry().deregister(&mut SourceFd(&entry.fd));
        if let Some(k) = self.by_fd.get_mut(entry.fd as usize) {
            *k = 0;
        }
    }

    /// Sets the reader (`read`) or writer callback of `fd`, registering the
    /// fd if it is new. Returns the callbacks it replaces (to be cancelled):
    /// the one in the same direction, and the other one too if the entry
    /// was stale.
    pub(crate) fn add_callback(
        &mut self,
        fd: RawFd,
        handle: Handle,
        read: bool,
    ) -> Result<(Option<Handle>, Option<Handle>), Error> {
        let Some(key) = self.key_of_fd(fd) else {
            let (reader, writer, interest) = if read {
                (Some(handle), None, Interest::READABLE)
            } else {
                (None, Some(handle), Interest::WRITABLE)
            };
            self.insert(fd, IoKind::Callbacks { reader, writer }, interest)?;
            return Ok((None, None));
        };
        let entry = &mut self.entries[key];
        let token = IoKey {
            key: key as u32,
            generation: entry.generation,
        }
        .token();
        match &mut entry.kind {
            IoKind::Source(source) => Err(Error::FdUsedByTransport {
                fd,
                transport: source.describe(),
            }),
            IoKind::Callbacks { reader, writer } => {
                let old = if read {
                    reader.replace(handle)
                } else {
                    writer.replace(handle)
                };
                let interest = interest_of(reader, writer).expect("one callback is set");
                match self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), token, interest)
                {
                    Ok(()) => Ok((old, None)),
                    // The kernel no longer knows this registration: its fd
                    // was closed while registered (a cancelled reader
                    // waits for an event that a closed fd never gives) and
                    // the number now belongs to a new socket. The entry is
                    // stale: replace it with a fresh one for the new fd.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        let (new, stale) = if read {
                            (reader.take(), writer.take())
                        } else {
                            (writer.take(), reader.take())
                        };
                        self.remove(key);
                        let (reader, writer, interest) = if read {
                            (new, None, Interest::READABLE)
                        } else {
                            (None, new, Interest::WRITABLE)
                        };
                        self.insert(fd, IoKind::Callbacks { reader, writer }, interest)?;
                        Ok((old, stale))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Removes the reader or writer callback of `fd`; returns it if there was
    /// one. The fd is unregistered once it has neither.
    pub(crate) fn remove_callback(&mut self, fd: RawFd, read: bool) -> Option<Handle> {
        let key = self.key_of_fd(fd)?;
        let entry = &mut self.entries[key];
        let token = IoKey {
            key: key as u32,
            generation: entry.generation,
        }
        .token();
        let IoKind::Callbacks { reader, writer } = &mut entry.kind else {
            return None;
        };
        let old = if read { reader.take() } else { writer.take() };
        match interest_of(reader, writer) {
            None => self.remove(key),
            Some(interest) => {
                let _ = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), token, interest);
            }
        }
        old
    }

    /// Checks that no live source owns `fd` (asyncio's
    /// `_ensure_fd_no_transport`).
    pub(crate) fn ensure_fd_no_source(&self, fd: RawFd) -> Result<(), Error> {
        if let Some(key) = self.key_of_fd(fd) {
            if let IoKind::Source(source) = &self.entries[key].kind {
                if !source.is_closing() {
                    return Err(Error::FdUsedByTransport {
                        fd,
                        transport: source.describe(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The reader or writer callback behind a queued event, if the
    /// registration is still the one the event was for.
    pub(crate) fn callback(&self, key: IoKey, read: bool) -> Option<Handle> {
        let entry = self.entries.get(key.key as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        match &entry.kind {
            IoKind::Callbacks { reader, writer } => {
                if read {
                    reader.clone()
                } else {
                    writer.clone()
                }
            }
            IoKind::Source(_) => None,
        }
    }

    pub(crate) fn fd(&self, key: IoKey) -> Option<RawFd> {
        let entry = self.entries.get(key.key as usize)?;
        (entry.generation == key.generation).then_some(entry.fd)
    }

    /// Re-arms a raw registration after an event for it was handled, so
    /// that an fd its callback did not drain is reported again (docs/design.md
    /// D3). A cancelled reader or writer is removed instead, never re-armed
    /// (asyncio's `_process_events` calls `_remove_reader` for it; D15), and
    /// the fd is unregistered once neither is left. Whatever cancelled the
    /// handle already dropped its callback, so dropping it here runs no user
    /// code.
    pub(crate) fn rearm(&mut self, key: IoKey) {
        let Some(entry) = self.entries.get_mut(key.key as usize) else {
            return;
        };
        if entry.generation != key.generation {
            return;
        }
        let IoKind::Callbacks { reader, writer } = &mut entry.kind else {
            return;
        };
        if reader.as_ref().is_some_and(Handle::cancelled) {
            *reader = None;
        }
        if writer.as_ref().is_some_and(Handle::cancelled) {
            *writer = None;
        }
        match interest_of(reader, writer) {
            Some(interest) => {
                let fd = entry.fd;
                let _ = self
                    .poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), key.token(), interest);
            }
            None => self.remove(key.key as usize),
        }
    }

    /// Registers a source for both directions, once, edge-triggered.
    pub(crate) fn register_source(
        &mut self,
        fd: RawFd,
        source: Rc<dyn IoSource>,
    ) -> Result<IoKey, Error> {
        if let Some(key) = self.key_of_fd(fd) {
            // A closing transport's fd, or raw callbacks: refuse to share it.
            let transport = match &self.entries[key].kind {
                IoKind::Source(s) => s.describe(),
                IoKind::Callbacks { .. } => "add_reader/add_writer".to_owned(),
            };
            return Err(Error::FdUsedByTransport { fd, transport });
        }
        Ok(self.insert(
            fd,
            IoKind::Source(source),
            Interest::READABLE | Interest::WRITABLE,
        )?)
    }

    /// Changes what a source is registered for (e.g. a listener that only
    /// reads). The source must be live.
    pub(crate) fn reregister_source(&mut self, key: IoKey, interest: Interest) -> io::Result<()> {
        let Some(fd) = self.fd(key) else {
            return Ok(());
        };
        self.poll
            .registry()
            .reregister(&mut SourceFd(&fd), key.token(), interest)
    }

    /// Unregisters a source. Call before closing its fd.
    pub(crate) fn deregister_source(&mut self, key: IoKey) {
        if self.fd(key).is_some() {
            self.remove(key.key as usize);
        }
    }

    /// The source behind a queued event, if it is still registered.
    pub(crate) fn source(&self, key: IoKey) -> Option<Rc<dyn IoSource>> {
        let entry = self.entries.get(key.key as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        match &entry.kind {
            IoKind::Source(s) => Some(s.clone()),
            IoKind::Callbacks { .. } => None,
        }
    }

    /// How many fds are registered.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Hands what each source adds to the statistics to `f`.
    pub(crate) fn tally(&self, f: &mut dyn FnMut(super::SourceTally)) {
        for (_, entry) in &self.entries {
            if let IoKind::Source(source) = &entry.kind {
                if let Some(t) = source.tally() {
                    f(t);
                }
            }
        }
    }

    /// Takes every entry's callbacks and sources out (on close), so they are
    /// dropped with no borrow held.
    pub(crate) fn drain(&mut self) -> (Vec<Handle>, Vec<Rc<dyn IoSource>>) {
        let mut handles = Vec::new();
        let mut sources = Vec::new();
        for entry in self.entries.drain() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&entry.fd));
            match entry.kind {
                IoKind::Callbacks { reader, writer } => {
                    handles.extend(reader.into_iter().chain(writer))
                }
                IoKind::Source(s) => sources.push(s),
            }
        }
        self.by_fd.clear();
        (handles, sources)
    }
}

fn interest_of(reader: &Option<Handle>, writer: &Option<Handle>) -> Option<Interest> {
    match (reader.is_some(), writer.is_some()) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}
