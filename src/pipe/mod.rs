//! Pipe transports: asyncio's `connect_read_pipe` and `connect_write_pipe`
//! (`_UnixReadPipeTransport`, `_UnixWritePipeTransport`), and the bridge
//! streams over them ([`PipeReader`], [`PipeWriter`], in `stream`).
//!
//! A pipe transport is its own type, [`PipeTransport`], with its own
//! protocol trait, [`PipeProtocol`], rather than a flavour of the socket
//! [`Transport`](crate::Transport): the socket transport's read and write
//! paths call `recv`/`send` straight on the fd (the echo benchmark's hot
//! path), and a per-call choice of syscall would cost every socket; and
//! `Transport` is becoming an enum for TLS, so a pipe variant there would
//! collide. asyncio, too, has separate pipe classes.
//!
//! Like asyncio's, a pipe transport uses the loop's readers and writers
//! ([`add_reader`](LoopHandle::add_reader)): a read pipe reads when its fd
//! is readable; a write pipe writes at once what the pipe takes, buffers
//! the rest and waits for writability. The write end also watches for
//! readability, which on a pipe means the reader went away: with nothing
//! buffered, that is `connection_lost(BrokenPipe)` at once (with data
//! buffered, the next write fails with `EPIPE`, which is the same). Writing
//! never raises SIGPIPE: `connect_write_pipe` makes the process ignore it
//! if its disposition is the default (Rust programs ignore it already).
//!
//! Protocol calls follow the rules of the socket transport (D2, D6, D8):
//! the protocol is taken out while it runs, so the transport's methods may
//! be called from inside it; a flow notification raised inside a protocol
//! call is delivered after it returns; a panic in the protocol goes to the
//! loop's exception handler and closes the transport.

mod stream;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::task::Waker;

pub use stream::{PipeReader, PipeWriter};

use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::exception::ExceptionContext;
use crate::transport::flow::FlowControl;

/// How much a read pipe reads at once: a Linux pipe's default capacity.
const READ_SIZE: usize = 64 * 1024;

/// The callbacks of a pipe transport (asyncio's `Protocol` for a read
/// pipe, `BaseProtocol` for a write pipe). Every method has a default
/// that does nothing.
pub trait PipeProtocol: 'static {
    /// The transport is ready; called once, first.
    fn connection_made(&mut self, transport: &PipeTransport) {
        let _ = transport;
    }
    /// Bytes read from a read pipe.
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }
    /// A read pipe reached its end (the writer closed it). The transport
    /// closes after this.
    fn eof_received(&mut self) {}
    /// The transport is closed: `None` after `close` or EOF, the error
    /// otherwise (`BrokenPipe` when a write pipe's reader went away).
    /// The last call.
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }
    /// A write pipe's buffer passed its high-water mark.
    fn pause_writing(&mut self) {}
    /// A write pipe's buffer drained to its low-water mark.
    fn resume_writing(&mut self) {}
}

/// What a pipe transport is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

struct State {
    closing: bool,
    /// `connection_lost` has been scheduled or ran.
    lost: bool,
    paused_reading: bool,
    buffer: VecDeque<u8>,
    /// The write watermarks and whether the protocol was told to pause:
    /// the socket transport's flow control (asyncio's `_FlowControlMixin`).
    flow: FlowControl,
    /// Waiters for the write buffer to drain (the bridge's flush).
    drain_waiters: Vec<Waker>,
}

struct PipeInner {
    lp: LoopHandle,
    direction: Direction,
    /// `None` once closed.
    file: RefCell<Option<File>>,
    fd: RawFd,
    state: RefCell<State>,
    /// `None` while the protocol runs (or after the last call).
    protocol: RefCell<Option<Box<dyn PipeProtocol>>>,
    /// Set once `connection_lost` ran: nothing is called after it.
    finished: Cell<bool>,
}

/// A pipe transport (asyncio's `_UnixReadPipeTransport` or
/// `_UnixWritePipeTransport`): a cheap `Rc` handle, `!Send`. Made by
/// [`connect_read_pipe`](LoopHandle::connect_read_pipe) or
/// [`connect_write_pipe`](LoopHandle::connect_write_pipe), or owned by a
/// subprocess transport.
///
/// The write methods do nothing useful on a read pipe (they return
/// [`Error::ConnectionLost`] or `0`), and the reading ones nothing on a
/// write pipe.
///
/// ```
/// use std::{cell::RefCell, io::Write, rc::Rc};
/// use sloop::pipe::{PipeProtocol, PipeTransport};
///
/// struct Collect(Rc<RefCell<Vec<u8>>>);
/// impl PipeProtocol for Collect {
///     fn data_received(&mut self, data: &[u8]) {
///         self.0.borrow_mut().extend_from_slice(data);
///     }
///     fn connection_lost(&mut self, _: Option<std::io::Error>) {
///         sloop::get_running_loop().unwrap().stop();
///     }
/// }
///
/// let lp = sloop::EventLoop::new()?;
/// let (reader, mut writer) = std::io::pipe()?;
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let g = got.clone();
/// lp.connect_read_pipe(move || Collect(g), reader)?;
/// writer.write_all(b"through the pipe")?;
/// drop(writer); // EOF
/// lp.run_forever()?;
/// assert_eq!(*got.borrow(), b"through the pipe");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PipeTransport {
    inner: Rc<PipeInner>,
}

impl fmt::Debug for PipeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.direction {
            Direction::Read => "ReadPipeTransport",
            Direction::Write => "WritePipeTransport",
        };
        write!(
            f,
            "<{kind} fd={} closing={}>",
            self.inner.fd,
            self.is_closing()
        )
    }
}

/// Checks `fd` is a pipe, socket or character device (asyncio's rule) and
/// makes it non-blocking.
fn open_pipe(fd: OwnedFd) -> Result<File, Error> {
    let file = File::from(fd);
    let kind = file.metadata()?.file_type();
    if !(kind.is_fifo() || kind.is_socket() || kind.is_char_device()) {
        return Err(Error::NotAPipe);
    }
    crate::sys::set_nonblocking(&file)?;
    Ok(file)
}

impl LoopHandle {
    /// Makes a read pipe transport of `pipe` (any pipe, socket or
    /// character device: a `std::io::PipeReader`, a `ChildStdout`, an
    /// `OwnedFd`...) with the protocol `factory` makes (asyncio's
    /// `connect_read_pipe`). The transport owns the fd and closes it.
    /// `connection_made` comes in the next iteration, then the data.
    /// See the example on [`PipeTransport`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`]; [`Error::NotAPipe`] for a regular file or
    /// directory; an I/O error from `fstat` or `fcntl`.
    pub fn connect_read_pipe<P: PipeProtocol>(
        &self,
        factory: impl FnOnce() -> P,
        pipe: impl Into<OwnedFd>,
    ) -> Result<PipeTransport, Error> {
        self.check_open()?;
        let file = open_pipe(pipe.into())?;
        PipeTransport::start(self, Direction::Read, file, Box::new(factory()))
    }

    /// Makes a write pipe transport of `pipe` (asyncio's
    /// `connect_write_pipe`); see
    /// [`connect_read_pipe`](LoopHandle::connect_read_pipe). If SIGPIPE
    /// has its default disposition, it is set to ignored, so a write to a
    /// pipe whose reader is gone fails with `EPIPE` (`connection_lost`)
    /// instead of killing the process.
    ///
    /// ```
    /// use sloop::pipe::{PipeProtocol, PipeTransport};
    /// use std::io::Read;
    ///
    /// struct Quiet;
    /// impl PipeProtocol for Quiet {}
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let (mut reader, writer) = std::io::pipe()?;
    /// let t = lp.connect_write_pipe(|| Quiet, writer)?;
    /// t.write(b"hello")?;
    /// t.close(); // after the buffer drains
    /// lp.run_until_complete(sloop::sleep(std::time::Duration::from_millis(1)))?;
    /// let mut got = String::new();
    /// reader.read_to_string(&mut got)?; // EOF: the transport closed its end
    /// assert_eq!(got, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`connect_read_pipe`](LoopHandle::connect_read_pipe).
    pub fn connect_write_pipe<P: PipeProtocol>(
        &self,
        factory: impl FnOnce() -> P,
        pipe: impl Into<OwnedFd>,
    ) -> Result<PipeTransport, Error> {
        self.check_open()?;
        let file = open_pipe(pipe.into())?;
        crate::sys::ignore_sigpipe()?;
        PipeTransport::start(self, Direction::Write, file, Box::new(factory()))
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl PipeTransport {
    fn start(
        lp: &LoopHandle,
        direction: Direction,
        file: File,
        protocol: Box<dyn PipeProtocol>,
    ) -> Result<PipeTransport, Error> {
        let fd = file.as_raw_fd();
        let inner = Rc::new(PipeInner {
            lp: lp.clone(),
            direction,
            file: RefCell::new(Some(file)),
            fd,
            state: RefCell::new(State {
                closing: false,
                lost: false,
                paused_reading: false,
                buffer: VecDeque::new(),
                flow: FlowControl::default(),
                drain_waiters: Vec::new(),
            }),
            protocol: RefCell::new(Some(protocol)),
            finished: Cell::new(false),
        });
        let t = PipeTransport { inner };
        // asyncio: connection_made soon, then start watching the fd.
        // The loop's callbacks hold the transport (strongly) while it is
        // active, as asyncio's loop does: dropping every handle does not
        // end it.
        let t2 = t.clone();
        lp.call_soon(move || {
            let t = t2;
            let me = t.clone();
            t.call_protocol(move |p| p.connection_made(&me));
            if t.inner.state.borrow().lost {
                return;
            }
            // A read pipe reads; a write pipe's end turns readable when its
            // reader goes away.
            let watch = t.watch_readable();
            if let Err(e) = watch {
                t.fatal(io::Error::from(e));
            }
        })?;
        Ok(t)
    }

    fn watch_readable(&self) -> Result<crate::Handle, Error> {
        let me = self.clone();
        self.inner
            .lp
            .add_reader(&self.inner.fd, move || me.read_ready())
    }

    /// Calls the protocol, taken out meanwhile; when it is out already (a
    /// call from inside a protocol call), the call waits for the next
    /// iteration. A panic is reported and closes the transport.
    fn call_protocol(&self, f: impl FnOnce(&mut dyn PipeProtocol) + 'static) {
        if self.inner.finished.get() {
            return;
        }
        let taken = self.inner.protocol.borrow_mut().take();
        let Some(mut protocol) = taken else {
            let me = self.clone();
            let _ = self.inner.lp.call_soon(move || me.call_protocol(f));
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut *protocol)));
        *self.inner.protocol.borrow_mut() = Some(protocol);
        if let Err(p) = result {
            self.inner.lp.handle_panic(
                p,
                ExceptionContext::new("Fatal error: protocol callback panicked")
                    .with_socket(format!("{self:?}")),
            );
            self.force_close(None);
        }
    }

    fn read_ready(&self) {
        if self.inner.direction == Direction::Write {
            // The reader of this write pipe went away.
            if self.inner.state.borrow().buffer.is_empty() {
                self.force_close(Some(io::ErrorKind::BrokenPipe.into()));
            } else {
                // The pending write gets EPIPE; stop watching meanwhile.
                let _ = self.inner.lp.remove_reader(&self.inner.fd);
            }
            return;
        }
        let mut buf = vec![0u8; READ_SIZE];
        let result = match self.inner.file.borrow().as_ref() {
            Some(mut file) => file.read(&mut buf),
            None => return,
        };
        match result {
            Ok(0) => {
                let _ = self.inner.lp.remove_reader(&self.inner.fd);
                self.call_protocol(|p| p.eof_received());
                self.close();
            }
            Ok(n) => {
                buf.truncate(n);
                self.call_protocol(move |p| p.data_received(&buf));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.fatal(e),
        }
    }

    /// Writes `data`: at once what the pipe takes, the rest when it is
    /// writable again (asyncio's write pipe `write`). Above the high-water
    /// mark the protocol gets `pause_writing`.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] once the transport is closing (or on a
    /// read pipe); the data is dropped.
    pub fn write(&self, data: &[u8]) -> Result<(), Error> {
        if self.inner.direction != Direction::Write {
            return Err(Error::ConnectionLost);
        }
        {
            let state = self.inner.state.borrow();
            if state.closing || state.lost {
                return Err(Error::ConnectionLost);
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut sent = 0;
        if self.inner.state.borrow().buffer.is_empty() {
            let result = match self.inner.file.borrow().as_ref() {
                Some(mut file) => file.write(data),
                None => return Err(Error::ConnectionLost),
            };
            match result {
                Ok(n) => sent = n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fatal(e);
                    return Ok(());
                }
            }
            if sent == data.len() {
                return Ok(());
            }
            let me = self.clone();
            let watch = self
                .inner
                .lp
                .add_writer(&self.inner.fd, move || me.write_ready());
            if let Err(e) = watch {
                self.fatal(io::Error::from(e));
                return Ok(());
            }
        }
        self.inner.state.borrow_mut().buffer.extend(&data[sent..]);
        self.maybe_pause();
        Ok(())
    }

    fn write_ready(&self) {
        let result = {
            let file = self.inner.file.borrow();
            let Some(mut file) = file.as_ref() else {
                return;
            };
            let state = self.inner.state.borrow();
            let (a, _) = state.buffer.as_slices();
            file.write(a)
        };
        match result {
            Ok(n) => {
                self.inner.state.borrow_mut().buffer.drain(..n);
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                return
            }
            Err(e) => return self.fatal(e),
        }
        self.maybe_resume();
        let (empty, closing) = {
            let state = self.inner.state.borrow();
            (state.buffer.is_empty(), state.closing)
        };
        if empty {
            let _ = self.inner.lp.remove_writer(&self.inner.fd);
            let waiters = std::mem::take(&mut self.inner.state.borrow_mut().drain_waiters);
            waiters.into_iter().for_each(Waker::wake);
            if closing {
                self.schedule_lost(None);
            }
        }
    }

    fn maybe_pause(&self) {
        let pause = {
            let state = &mut *self.inner.state.borrow_mut();
            state.flow.should_pause(state.buffer.len())
        };
        if pause {
            self.call_protocol(|p| p.pause_writing());
        }
    }

    fn maybe_resume(&self) {
        let resume = {
            let state = &mut *self.inner.state.borrow_mut();
            state.flow.should_resume(state.buffer.len())
        };
        if resume {
            self.call_protocol(|p| p.resume_writing());
        }
    }

    /// Closes a write pipe after its buffer drains (asyncio's pipe
    /// `write_eof` is `close`).
    pub fn write_eof(&self) {
        self.close();
    }

    /// Whether [`write_eof`](PipeTransport::write_eof) works: on a write
    /// pipe.
    pub fn can_write_eof(&self) -> bool {
        self.inner.direction == Direction::Write
    }

    /// Closes the transport: at once for a read pipe; after the buffer
    /// drains for a write pipe. The protocol then gets
    /// `connection_lost(None)`, in a later iteration. Idempotent.
    pub fn close(&self) {
        let drained = {
            let mut state = self.inner.state.borrow_mut();
            if state.closing || state.lost {
                return;
            }
            state.closing = true;
            state.buffer.is_empty()
        };
        let _ = self.inner.lp.remove_reader(&self.inner.fd);
        if drained {
            self.schedule_lost(None);
        }
    }

    /// Closes now, dropping what is buffered; `connection_lost(None)`.
    pub fn abort(&self) {
        self.force_close(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        let state = self.inner.state.borrow();
        state.closing || state.lost
    }

    /// The pipe's fd (`-1`-free: the number it had, also after close).
    pub fn fd(&self) -> RawFd {
        self.inner.fd
    }

    /// Whether this is a read pipe.
    pub fn is_reader(&self) -> bool {
        self.inner.direction == Direction::Read
    }

    /// Stops reading (a read pipe) until
    /// [`resume_reading`](PipeTransport::resume_reading). Idempotent.
    pub fn pause_reading(&self) {
        if self.inner.direction != Direction::Read || self.is_closing() {
            return;
        }
        let mut state = self.inner.state.borrow_mut();
        if !state.paused_reading {
            state.paused_reading = true;
            drop(state);
            let _ = self.inner.lp.remove_reader(&self.inner.fd);
        }
    }

    /// Reads again after [`pause_reading`](PipeTransport::pause_reading).
    pub fn resume_reading(&self) {
        if self.inner.direction != Direction::Read || self.is_closing() {
            return;
        }
        let mut state = self.inner.state.borrow_mut();
        if state.paused_reading {
            state.paused_reading = false;
            drop(state);
            let watch = self.watch_readable();
            if let Err(e) = watch {
                self.fatal(io::Error::from(e));
            }
        }
    }

    /// Whether a read pipe is reading.
    pub fn is_reading(&self) -> bool {
        self.inner.direction == Direction::Read
            && !self.is_closing()
            && !self.inner.state.borrow().paused_reading
    }

    /// How many bytes wait in a write pipe's buffer.
    pub fn write_buffer_size(&self) -> usize {
        self.inner.state.borrow().buffer.len()
    }

    /// Sets the write buffer's high- and low-water marks (defaults 64 KiB
    /// and a quarter of `high`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWriteLimits`] if `high < low`.
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), Error> {
        self.inner.state.borrow_mut().flow.set_limits(high, low)?;
        self.maybe_pause();
        Ok(())
    }

    /// The write buffer's `(high, low)` water marks.
    pub fn write_buffer_limits(&self) -> (usize, usize) {
        let (low, high) = self.inner.state.borrow().flow.limits();
        (high, low)
    }

    /// Registers `waker` to be woken when the write buffer is empty (or
    /// the transport lost); `true` if it is empty now.
    pub(crate) fn poll_drained(&self, waker: &Waker) -> bool {
        let mut state = self.inner.state.borrow_mut();
        if state.buffer.is_empty() || state.lost {
            return true;
        }
        if !state.drain_waiters.iter().any(|w| w.will_wake(waker)) {
            state.drain_waiters.push(waker.clone());
        }
        false
    }

    fn fatal(&self, e: io::Error) {
        if e.kind() != io::ErrorKind::BrokenPipe && e.kind() != io::ErrorKind::ConnectionReset {
            log::debug!("{self:?}: fatal error on pipe transport: {e}");
        }
        self.force_close(Some(e));
    }

    fn force_close(&self, exc: Option<io::Error>) {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.lost {
                return;
            }
            state.closing = true;
            state.buffer = VecDeque::new();
        }
        let _ = self.inner.lp.remove_reader(&self.inner.fd);
        self.schedule_lost(exc);
    }

    /// Stops watching the fd and calls `connection_lost` in the next
    /// iteration, then closes the fd.
    fn schedule_lost(&self, exc: Option<io::Error>) {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.lost {
                return;
            }
            state.lost = true;
        }
        let _ = self.inner.lp.remove_reader(&self.inner.fd);
        let _ = self.inner.lp.remove_writer(&self.inner.fd);
        let waiters = std::mem::take(&mut self.inner.state.borrow_mut().drain_waiters);
        waiters.into_iter().for_each(Waker::wake);
        let me = self.clone();
        let scheduled = self.inner.lp.call_soon(move || me.finish(exc));
        if scheduled.is_err() {
            // The loop is closed: close the fd now, without the protocol.
            self.inner.file.borrow_mut().take();
            self.inner.finished.set(true);
        }
    }

    fn finish(&self, exc: Option<io::Error>) {
        if self.inner.protocol.borrow().is_none() && !self.inner.finished.get() {
            // The protocol is running (a nested run): lost comes after it.
            let me = self.clone();
            let _ = self.inner.lp.call_soon(move || me.finish(exc));
            return;
        }
        self.call_protocol(move |p| p.connection_lost(exc));
        self.inner.finished.set(true);
        let protocol = self.inner.protocol.borrow_mut().take();
        drop(protocol);
        self.inner.file.borrow_mut().take();
    }
}
