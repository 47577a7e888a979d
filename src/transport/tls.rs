//! The TLS transport: asyncio's `SSLProtocol` and `_SSLProtocolTransport`
//! on rustls (docs/design.md D12, layered transports).
//!
//! Two halves share one [`TlsTransport`]:
//!
//! - **The layer**, a [`Protocol`] installed on the plain transport
//!   underneath (a socket transport, or another TLS transport): its
//!   `data_received` feeds rustls, its `eof_received` and
//!   `connection_lost` end the session, its flow notifications tell the TLS
//!   transport how full the socket's buffer is.
//! - **The application transport**, what the user's protocol gets as its
//!   [`Transport`]: `write` encrypts and hands the records to the plain
//!   transport at once, `close` sends close_notify and closes the plain
//!   transport (bounded by the shutdown timeout), and so on.
//!
//! The user's protocol lives in this transport's own [`ProtocolCell`], as
//! every protocol does (D14): re-entrancy (D2), held-back notifications
//! (D6), panics (D8) and `connection_lost` once come from there.
//! `connection_made` runs when the handshake is done (asyncio's order); a
//! failed or timed-out handshake gives no callback and fails the connect
//! (or `start_tls`) future with the typed error.
//!
//! # What it holds
//!
//! After the handshake rustls encrypts each write at once and the records
//! go straight to the plain transport, so the TLS layer holds no plaintext
//! of the user's: the write buffer is the plain transport's, and flow
//! control counts it against this transport's watermarks (the plain
//! transport is given the same marks, so its pause and resume are the
//! moments the total crosses them). Received plaintext is copied out of
//! rustls into a scratch buffer shared by the thread's TLS transports and
//! delivered at once; an idle connection keeps no buffer of its own.
//! Ciphertext that arrives while reading is paused and rustls is full waits
//! in a backlog, and the plain transport stops reading.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustls::Connection;

use super::cell::{
    Host, ProtocolCell, BUFFERED, CLOSING, EOF, LOST_DONE, LOST_SCHEDULED, PAUSED, READ_EOF,
    STARTED,
};
use super::flow::FlowControl;
use super::socket::slot::{feed_buffered, Installed, ProtocolSlot};
use super::{Address, EmptyWaiter, Transport, TransportImpl, WaiterState};
use crate::error::{Error, TlsFailure};
use crate::event_loop::{LoopHandle, TimerHandle};
use crate::exception::{TransportInfo, TransportKind};
use crate::protocol::stream_reader::StreamReaderProtocol;
use crate::protocol::{AnyProtocol, Protocol};

// The TLS transport's own state bits, above the cell's.

/// The handshake finished and `connection_made` was called.
const HANDSHAKE_DONE: u32 = 1 << 24;
/// Records are being handed to the plain transport: its flow
/// notifications wait for the flush to end.
const FLUSHING: u32 = 1 << 25;
/// A flow notification came during a flush.
const FLOW_DIRTY: u32 = 1 << 26;
/// close_notify was queued.
const CLOSE_NOTIFY_SENT: u32 = 1 << 27;
/// The layer got `connection_made` (or `start_tls` attached it).
const ATTACHED: u32 = 1 << 28;

/// The peer's close_notify came: the session ended cleanly, whatever the
/// plain transport reports after it (our reply may meet a closed socket).
const CLEAN_END: u32 = 1 << 29;

/// The plain transport's EOF came while reading was paused: it is passed
/// on after the plaintext still held, on resume.
const EOF_PENDING: u32 = 1 << 30;

/// The size of the scratch buffer plaintext is copied into: one TLS
/// record's worth.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// One scratch buffer for all the thread's TLS transports (taken while
    /// used; a nested use makes its own).
    static SCRATCH_BUF: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

fn take_scratch() -> Box<[u8]> {
    SCRATCH_BUF
        .with(|s| s.take())
        .unwrap_or_else(|| vec![0; SCRATCH].into_boxed_slice())
}

fn restore_scratch(buf: Box<[u8]>) {
    SCRATCH_BUF.with(|s| s.set(Some(buf)));
}

/// The facts of an established TLS session, from
/// [`Transport::tls_info`](crate::Transport::tls_info).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version, as rustls names it (`"TLSv1_3"`).
    pub version: String,
    /// The cipher suite, as rustls names it (`"TLS13_AES_256_GCM_SHA384"`).
    pub cipher_suite: String,
    /// The protocol ALPN settled on, if any (`b"h2"`).
    pub alpn_protocol: Option<Vec<u8>>,
    /// The server name: the one the client asked for (SNI) on a server,
    /// the one verified on a client.
    pub server_name: Option<String>,
    /// The peer's certificate chain, DER, its own first (empty if it sent
    /// none, as a client usually does).
    pub peer_certificates: Vec<Vec<u8>>,
}

/// Maps rustls's error to the crate's typed one, keeping its message.
pub(crate) fn tls_error(e: &rustls::Error) -> Error {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let failure = match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => TlsFailure::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::NotValidForName,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => TlsFailure::Expired,
            _ => TlsFailure::BadCertificate,
        },
        E::PeerIncompatible(_) | E::NoApplicationProtocol => TlsFailure::Incompatible,
        E::AlertReceived(a) => match a {
            A::ProtocolVersion | A::HandshakeFailure | A::NoApplicationProtocol => {
                TlsFailure::Incompatible
            }
            _ => TlsFailure::AlertReceived,
        },
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerMisbehaved(_)
        | E::DecryptError => TlsFailure::InvalidMessage,
        _ => TlsFailure::Other,
    };
    Error::Tls {
        failure,
        reason: e.to_string(),
    }
}

/// A TLS session over a plain transport: see the [module docs](self).
pub(crate) struct TlsTransport {
    lp: LoopHandle,
    me: Weak<TlsTransport>,
    /// The plain transport underneath, once attached; dropped at loss.
    sock: RefCell<Option<Transport>>,
    conn: RefCell<Connection>,
    cell: ProtocolCell<ProtocolSlot>,
    flow: Cell<FlowControl>,
    /// The handshake or shutdown timer.
    timer: RefCell<Option<TimerHandle>>,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    /// The name a client verified the server against.
    server_name: Option<String>,
    /// Completes after `connection_made`, or fails with why the handshake
    /// did not finish.
    started: RefCell<Option<Rc<WaiterState>>>,
    /// Why the session ends, for `connection_lost` (or `started`).
    error: RefCell<Option<Error>>,
    /// Ciphertext rustls could not take yet (reading is paused).
    backlog: RefCell<Vec<u8>>,
}

/// Hands records to the plain transport, which sends or buffers them all.
struct Sink<'a>(&'a Transport);

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let [one] = bufs {
            return self.write(one); // the common case: one record
        }
        let mut slices: [&[u8]; 32] = [&[]; 32];
        let n = bufs.len().min(slices.len());
        let mut total = 0;
        for (s, b) in slices.iter_mut().zip(&bufs[..n]) {
            *s = b;
            total += b.len();
        }
        self.0.writelines(&slices[..n])?;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The protocol the TLS transport installs on the plain transport.
pub(crate) struct Layer {
    tls: Rc<TlsTransport>,
}

impl Layer {
    /// The TLS transport this layer carries.
    pub(crate) fn tls(&self) -> Rc<TlsTransport> {
        self.tls.clone()
    }
}

impl Protocol for Layer {
    fn connection_made(&mut self, transport: &Transport) {
        self.tls.attach(transport.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.tls.feed(data);
    }
    fn eof_received(&mut self) -> bool {
        self.tls.tcp_eof()
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.tls.plain_lost(exc);
    }
    fn pause_writing(&mut self) {
        self.tls.plain_flow();
    }
    fn resume_writing(&mut self) {
        self.tls.plain_flow();
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        // Dropped without a loss (the loop closed, or the connect gave up
        // before connection_made): the user's protocol goes with no call.
        let p = self.tls.cell.loop_closed();
        drop(p);
        self.tls.cancel_timer();
    }
}

impl TlsTransport {
    /// A TLS session for `protocol` over a plain transport still to come:
    /// install the returned layer on it (as its protocol, or with
    /// [`attach`](TlsTransport::attach) for a live one). The waiter
    /// completes after `connection_made`, or fails with why the handshake
    /// did not finish.
    pub(crate) fn create(
        lp: &LoopHandle,
        mut conn: Connection,
        protocol: AnyProtocol,
        server_name: Option<String>,
        handshake_timeout: Duration,
        shutdown_timeout: Duration,
    ) -> (Rc<TlsTransport>, Layer, EmptyWaiter) {
        // Writes are flow-controlled by watermarks, not refused: rustls
        // keeps whatever it is given.
        conn.set_buffer_limit(None);
        let started = Rc::new(WaiterState::default());
        let rc = Rc::new_cyclic(|me| TlsTransport {
            lp: lp.clone(),
            me: me.clone(),
            sock: RefCell::new(None),
            conn: RefCell::new(conn),
            cell: ProtocolCell::default(),
            flow: Cell::new(FlowControl::default()),
            timer: RefCell::new(None),
            handshake_timeout,
            shutdown_timeout,
            server_name,
            started: RefCell::new(Some(started.clone())),
            error: RefCell::new(None),
            backlog: RefCell::new(Vec::new()),
        });
        rc.install(protocol.into());
        let layer = Layer { tls: rc.clone() };
        (rc, layer, EmptyWaiter::new(started))
    }

    #[inline(always)]
    fn has(&self, bits: u32) -> bool {
        self.cell.flags.has(bits)
    }

    #[inline(always)]
    fn set_flag(&self, bits: u32, on: bool) {
        self.cell.flags.set(bits, on);
    }

    fn sock(&self) -> Option<Transport> {
        self.sock.borrow().clone()
    }

    fn install(&self, p: Installed) {
        self.set_flag(BUFFERED, p.is_buffered());
        self.cell.replace(p);
    }

    fn handle(&self) -> Transport {
        Transport::from_tls(self.me.upgrade().expect("transport alive while used"))
    }

    /// The plain transport is there: the handshake starts (a client sends
    /// its hello) and its timer runs.
    pub(crate) fn attach(&self, sock: Transport) {
        if self.has(ATTACHED) {
            return;
        }
        if self.has(CLOSING) {
            // Closed or aborted before the plain transport started (a
            // server's abort_clients right after accept).
            sock.abort();
            return;
        }
        self.set_flag(ATTACHED, true);
        let (low, high) = self.flow.get().limits();
        let _ = sock.set_write_buffer_limits(Some(high), Some(low));
        *self.sock.borrow_mut() = Some(sock);
        self.arm_timer(self.handshake_timeout, true);
        self.flush();
    }

    fn arm_timer(&self, delay: Duration, handshake: bool) {
        let me = self.me.clone();
        let timer = self.lp.call_later(delay, move || {
            if let Some(me) = me.upgrade() {
                me.timed_out(handshake);
            }
        });
        if let Ok(t) = timer {
            if let Some(old) = self.timer.borrow_mut().replace(t) {
                old.cancel();
            }
        }
    }

    fn cancel_timer(&self) {
        let t = self.timer.borrow_mut().take();
        if let Some(t) = t {
            t.cancel();
        }
    }

    fn timed_out(&self, handshake: bool) {
        self.timer.borrow_mut().take();
        let e = if handshake {
            Error::TlsHandshakeTimeout(self.handshake_timeout)
        } else {
            Error::TlsShutdownTimeout(self.shutdown_timeout)
        };
        log::debug!("{}: {e}", self.describe_impl());
        self.fail(e, true);
    }

    /// Ends the session with `e` (kept for `connection_lost`): the plain
    /// transport is aborted, or closed after what it buffers (an alert)
    /// is sent.
    fn fail(&self, e: Error, abort: bool) {
        {
            let mut err = self.error.borrow_mut();
            if err.is_none() {
                *err = Some(e);
            }
        }
        self.set_flag(CLOSING, true);
        if let Some(s) = self.sock() {
            if abort {
                s.abort();
            } else {
                s.close();
            }
        }
    }

    // ----- incoming -----

    /// Ciphertext from the plain transport.
    pub(crate) fn feed_received(&self, data: &[u8]) {
        self.feed(data);
    }

    fn feed(&self, data: &[u8]) {
        if !self.backlog.borrow().is_empty() {
            self.backlog.borrow_mut().extend_from_slice(data);
            return;
        }
        self.feed_slice(data);
    }

    fn feed_slice(&self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.has(LOST_DONE) || self.error.borrow().is_some() {
                return;
            }
            let step = {
                let mut conn = self.conn.borrow_mut();
                match conn.read_tls(&mut data) {
                    // After close_notify nothing more is read: the rest
                    // means nothing.
                    Ok(0) => return self.progress(),
                    Ok(_) => conn.process_new_packets().map(|_| true),
                    Err(_) => Ok(false), // rustls is full: reading paused
                }
            };
            match step {
                Ok(true) => self.progress(),
                Ok(false) => {
                    self.backlog.borrow_mut().extend_from_slice(data);
                    if let Some(s) = self.sock() {
                        s.pause_reading();
                    }
                    return;
                }
                Err(e) => {
                    let err = tls_error(&e);
                    log::debug!("{}: {err}", self.describe_impl());
                    // The alert rustls queued goes out before the close.
                    self.flush();
                    return self.fail(err, false);
                }
            }
        }
        self.flush();
    }

    /// After rustls took records: the handshake may be done, plaintext
    /// may be waiting, replies may be due.
    fn progress(&self) {
        if !self.has(HANDSHAKE_DONE) {
            self.flush();
            if self.conn.borrow().is_handshaking() {
                return;
            }
            self.handshake_done();
        }
        self.deliver();
    }

    fn handshake_done(&self) {
        self.set_flag(HANDSHAKE_DONE | STARTED, true);
        self.cancel_timer();
        let t = self.handle();
        self.cell
            .call(self, "connection_made", |p| p.connection_made(&t));
        let w = self.started.borrow_mut().take();
        if let Some(w) = w {
            w.complete(Ok(()));
        }
    }

    /// Delivers the plaintext rustls holds, while the protocol reads.
    fn deliver(&self) {
        loop {
            let f = self.cell.flags.get();
            if f & (STARTED | PAUSED | CLOSING | READ_EOF | LOST_SCHEDULED) != STARTED {
                return;
            }
            let mut buf = take_scratch();
            let r = self.conn.borrow_mut().reader().read(&mut buf);
            match r {
                Ok(0) => {
                    restore_scratch(buf);
                    self.set_flag(CLEAN_END, true);
                    return self.peer_closed();
                }
                Ok(n) => {
                    let data = &buf[..n];
                    let fed = self.cell.call(self, "data_received", |p| match p {
                        Installed::Stream(p) => {
                            p.data_received(data);
                            true
                        }
                        other => match other.buffered() {
                            Some(bp) => feed_buffered(bp, data),
                            None => true,
                        },
                    });
                    restore_scratch(buf);
                    if fed == Some(false) {
                        return self.fail(Error::EmptyBuffer, true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    restore_scratch(buf);
                    return;
                }
                Err(e) => {
                    restore_scratch(buf);
                    return self.fail(Error::Io(e), true);
                }
            }
        }
    }

    /// The peer's close_notify: the protocol's `eof_received` decides
    /// whether the write side stays open.
    fn peer_closed(&self) {
        if self.cell.flags.replace(READ_EOF, true) {
            return;
        }
        let keep = self
            .cell
            .call(self, "eof_received", |p| p.eof_received())
            .unwrap_or(false);
        if !keep {
            self.close_impl();
        }
    }

    /// The plain transport's EOF: during the handshake an error; after
    /// close_notify the end; without close_notify (a truncation, which
    /// asyncio also passes on) the protocol's EOF.
    fn tcp_eof(&self) -> bool {
        if !self.has(HANDSHAKE_DONE) {
            let mut err = self.error.borrow_mut();
            if err.is_none() {
                *err = Some(Error::Tls {
                    failure: TlsFailure::ClosedDuringHandshake,
                    reason: "the peer closed the connection during the TLS handshake".into(),
                });
            }
            return false;
        }
        if self.has(READ_EOF) {
            return !self.has(CLOSING);
        }
        if self.has(PAUSED) || !self.backlog_is_empty() {
            // Plaintext still held goes first, once reading resumes.
            self.set_flag(EOF_PENDING, true);
            return true;
        }
        self.deliver();
        self.peer_closed();
        !self.has(CLOSING)
    }

    fn backlog_is_empty(&self) -> bool {
        self.backlog.borrow().is_empty()
    }

    /// The plain transport is gone: so is this one.
    fn plain_lost(&self, exc: Option<io::Error>) {
        self.cancel_timer();
        self.set_flag(CLOSING, true);
        let err = self.error.borrow_mut().take();
        let w = self.started.borrow_mut().take();
        if let Some(w) = w {
            // The handshake never finished: the connect future fails.
            w.complete(Err(match (err, exc) {
                (Some(e), _) => e,
                (None, Some(e)) => Error::Io(e),
                (None, None) => Error::ConnectionLost,
            }));
            self.cell.loss_scheduled();
            self.cell.lost(self, None);
            return;
        }
        let exc = match err {
            Some(e) => Some(io::Error::from(e)),
            None if self.has(CLEAN_END) => None,
            None => exc,
        };
        self.cell.loss_scheduled();
        self.cell.lost(self, exc);
    }

    // ----- outgoing -----

    /// Hands every record rustls has to the plain transport.
    fn flush(&self) {
        let Some(sock) = self.sock() else {
            return;
        };
        if self.cell.flags.replace(FLUSHING, true) {
            return; // the outer flush goes on
        }
        loop {
            let mut conn = self.conn.borrow_mut();
            if !conn.wants_write() {
                break;
            }
            if conn.write_tls(&mut Sink(&sock)).is_err() {
                break; // the plain transport is closing: its loss follows
            }
        }
        self.set_flag(FLUSHING, false);
        if self.cell.flags.replace(FLOW_DIRTY, false) {
            self.check_flow();
        }
    }

    /// The plain transport's buffer crossed a mark.
    fn plain_flow(&self) {
        if self.has(FLUSHING) {
            self.set_flag(FLOW_DIRTY, true);
        } else {
            self.check_flow();
        }
    }

    fn check_flow(&self) {
        let size = self.write_buffer_size_impl();
        let mut flow = self.flow.get();
        if flow.should_pause(size) {
            self.flow.set(flow);
            self.cell.notify_flow(self, true);
        } else if flow.should_resume(size) {
            self.flow.set(flow);
            self.cell.notify_flow(self, false);
        }
    }

    fn write_buffer_size_impl(&self) -> usize {
        self.sock
            .borrow()
            .as_ref()
            .map_or(0, |s| s.write_buffer_size())
    }

    fn send_close_notify(&self) {
        if self.cell.flags.replace(CLOSE_NOTIFY_SENT, true) {
            return;
        }
        self.conn.borrow_mut().send_close_notify();
        self.flush();
    }

    fn close_impl(&self) {
        if self.cell.flags.replace(CLOSING, true) {
            return;
        }
        if !self.has(HANDSHAKE_DONE) {
            // asyncio aborts a session closed during its handshake.
            if let Some(s) = self.sock() {
                s.abort();
            }
            return;
        }
        self.send_close_notify();
        self.arm_timer(self.shutdown_timeout, false);
        if let Some(s) = self.sock() {
            s.close();
        }
    }

    fn is_tls13(&self) -> bool {
        self.conn.borrow().protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
    }

    /// Plaintext and backlog again after `resume_reading`.
    fn resumed(&self) {
        self.deliver();
        if self.has(PAUSED) || self.has(CLOSING) {
            return;
        }
        let backlog = std::mem::take(&mut *self.backlog.borrow_mut());
        if !backlog.is_empty() {
            self.feed_slice(&backlog);
        }
        if self.has(PAUSED) || !self.backlog_is_empty() {
            return;
        }
        if self.cell.flags.replace(EOF_PENDING, false) {
            if !self.tcp_eof() {
                self.close_impl();
            }
            return;
        }
        if let Some(s) = self.sock() {
            s.resume_reading();
        }
    }

    pub(crate) fn tls_info(&self) -> Option<TlsInfo> {
        let c = self.conn.borrow();
        if c.is_handshaking() {
            return None;
        }
        let server_name = match &*c {
            Connection::Server(s) => s.server_name().map(String::from),
            Connection::Client(_) => self.server_name.clone(),
        };
        Some(TlsInfo {
            version: format!("{:?}", c.protocol_version()?),
            cipher_suite: format!("{:?}", c.negotiated_cipher_suite()?.suite()),
            alpn_protocol: c.alpn_protocol().map(|p| p.to_vec()),
            server_name,
            peer_certificates: c
                .peer_certificates()
                .map(|v| v.iter().map(|d| d.as_ref().to_vec()).collect())
                .unwrap_or_default(),
        })
    }

    /// [`Transport::with_protocol`], as the socket transport does it.
    pub(crate) fn with_protocol<P: Any, R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        self.cell.with_protocol(self, f)
    }

    fn describe_impl(&self) -> String {
        let state = if self.has(LOST_DONE) {
            " closed"
        } else if self.has(CLOSING) {
            " closing"
        } else if !self.has(HANDSHAKE_DONE) {
            " handshaking"
        } else {
            ""
        };
        let plain = match self.sock.try_borrow() {
            Ok(s) => s.as_ref().map(|s| format!("{s:?}")),
            Err(_) => None,
        };
        format!(
            "<TlsTransport{state} over {}>",
            plain.as_deref().unwrap_or("nothing")
        )
    }
}

impl Host for TlsTransport {
    fn loop_handle(&self) -> &LoopHandle {
        &self.lp
    }

    fn info(&self) -> TransportInfo {
        TransportImpl::info(self)
    }

    fn force_close(&self, exc: Option<io::Error>) {
        match exc {
            Some(e) => self.fail(Error::Io(e), true),
            None => TransportImpl::abort(self),
        }
    }

    fn after_lost(&self) {
        let sock = self.sock.borrow_mut().take();
        drop(sock);
        self.backlog.borrow_mut().clear();
        self.backlog.borrow_mut().shrink_to_fit();
    }
}

impl TransportImpl for TlsTransport {
    /// The socket's figures: bytes are TLS records as the kernel saw
    /// them, buffered bytes are records not yet sent.
    fn stats(&self) -> crate::event_loop::TransportStats {
        match self.sock() {
            Some(t) => t.stats(),
            None => crate::event_loop::ByteCounters::new().snapshot(0),
        }
    }

    fn write(&self, data: &[u8]) -> Result<(), Error> {
        let f = self.cell.flags.get();
        if f & (CLOSING | LOST_SCHEDULED) != 0 {
            return Err(self.cell.refuse_write());
        }
        if f & EOF != 0 {
            return Err(Error::WriteAfterEof);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.conn.borrow_mut().writer().write_all(data)?;
        self.flush();
        self.check_flow();
        Ok(())
    }

    fn writelines(&self, bufs: &[&[u8]]) -> Result<(), Error> {
        let f = self.cell.flags.get();
        if f & (CLOSING | LOST_SCHEDULED) != 0 {
            return Err(self.cell.refuse_write());
        }
        if f & EOF != 0 {
            return Err(Error::WriteAfterEof);
        }
        {
            let mut conn = self.conn.borrow_mut();
            for b in bufs {
                conn.writer().write_all(b)?;
            }
        }
        self.flush();
        self.check_flow();
        Ok(())
    }

    fn write_eof(&self) -> Result<(), Error> {
        if self.has(CLOSING) || self.has(EOF) {
            return Ok(());
        }
        if !self.is_tls13() {
            return Err(Error::TlsWriteEofUnsupported);
        }
        self.set_flag(EOF, true);
        self.send_close_notify();
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        self.is_tls13()
    }

    fn close(&self) {
        self.close_impl();
    }

    fn abort(&self) {
        self.set_flag(CLOSING, true);
        if let Some(s) = self.sock() {
            s.abort();
        }
    }

    fn is_closing(&self) -> bool {
        self.has(CLOSING)
    }

    fn pause_reading(&self) {
        if self.has(CLOSING) || self.has(PAUSED) {
            return;
        }
        self.set_flag(PAUSED, true);
        if let Some(s) = self.sock() {
            s.pause_reading();
        }
    }

    fn resume_reading(&self) {
        if self.has(CLOSING) || !self.has(PAUSED) {
            return;
        }
        self.set_flag(PAUSED, false);
        // Plaintext rustls holds, and the backlog, go in the next
        // iteration, as a socket transport's re-queued read does.
        let me = self.me.upgrade().expect("transport alive while used");
        self.lp.call_soon_internal(move || me.resumed());
    }

    fn is_reading(&self) -> bool {
        !self.has(CLOSING) && !self.has(PAUSED) && !self.has(READ_EOF)
    }

    fn write_buffer_size(&self) -> usize {
        self.write_buffer_size_impl()
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        self.flow.get().limits()
    }

    fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), Error> {
        let mut flow = self.flow.get();
        flow.set_limits(high, low)?;
        self.flow.set(flow);
        let (low, high) = flow.limits();
        if let Some(s) = self.sock() {
            s.set_write_buffer_limits(Some(high), Some(low))?;
        }
        self.check_flow();
        Ok(())
    }

    fn set_write_buffer_cap(&self, cap: Option<usize>) {
        if let Some(s) = self.sock() {
            s.set_write_buffer_cap(cap);
        }
    }

    fn set_protocol(&self, protocol: AnyProtocol) {
        self.install(protocol.into());
    }

    fn set_bridge_protocol(&self, protocol: StreamReaderProtocol) {
        self.install(Installed::Bridge(Box::new(protocol)));
    }

    fn empty_waiter(&self) -> Result<EmptyWaiter, Error> {
        match self.sock() {
            Some(s) if !self.has(LOST_SCHEDULED) => s.empty_waiter(),
            _ => {
                let state = Rc::new(WaiterState::default());
                state.complete(Err(Error::ConnectionLost));
                Ok(EmptyWaiter::new(state))
            }
        }
    }

    fn local_addr(&self) -> Option<Address> {
        self.sock()?.local_addr()
    }

    fn peer_addr(&self) -> Option<Address> {
        self.sock()?.peer_addr()
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.sock()?.as_raw_fd()
    }

    fn with_socket(&self, f: &mut dyn FnMut(&socket2::Socket)) {
        if let Some(s) = self.sock() {
            s.with_socket(|sock| f(sock));
        }
    }

    fn describe(&self) -> String {
        self.describe_impl()
    }

    fn info(&self) -> TransportInfo {
        let kind = match self.sock() {
            Some(s) if matches!(s.local_addr(), Some(Address::Unix(_))) => TransportKind::Unix,
            _ => TransportKind::Tcp,
        };
        TransportInfo::new(
            kind,
            TransportImpl::raw_fd(self),
            TransportImpl::local_addr(self),
            TransportImpl::peer_addr(self),
            self.describe_impl(),
        )
    }
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe_impl())
    }
}
