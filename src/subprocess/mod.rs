//! Child processes on the loop: asyncio's `subprocess_exec` and
//! `subprocess_shell` with a [`SubprocessProtocol`] and a
//! [`SubprocessTransport`], and (in `child`) the async form,
//! [`create_subprocess_exec`](LoopHandle::create_subprocess_exec), whose
//! [`Child`] has its pipes as bridge streams.
//!
//! A child is spawned with `std::process::Command`; its pipes become pipe
//! transports (`crate::pipe`). Its exit is watched without blocking or a
//! process-wide SIGCHLD handler: `pidfd_open` gives an fd that turns
//! readable when the child exits, registered as a reader; the loop then
//! reaps the child (`try_wait`). On kernels older than 5.3 (no pidfd), a
//! thread of the blocking pool waits with `waitid(WNOWAIT)`, which does not
//! reap, and hands back to the loop, which reaps: the pid stays the
//! child's until the loop reaps it, so a signal never reaches a stranger.
//!
//! No zombie is left: a closed transport kills a child still running (as
//! asyncio's `close` does) and the watcher reaps it; closing (or dropping)
//! the loop kills and reaps every child still running.

mod child;

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, ExitStatus, Stdio};
use std::rc::{Rc, Weak};
use std::task::Waker;

pub use child::{Child, ProcessWait};

use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::exception::ExceptionContext;
use crate::pipe::{PipeProtocol, PipeTransport};

/// The callbacks of a subprocess transport (asyncio's
/// `SubprocessProtocol`). `fd` is 0, 1 or 2: the child's stdin, stdout or
/// stderr. Every method has a default that does nothing.
pub trait SubprocessProtocol: 'static {
    /// The child is running and its pipes are connected; called first.
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        let _ = transport;
    }
    /// The child wrote `data` to its stdout (`fd` 1) or stderr (2).
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let _ = (fd, data);
    }
    /// The pipe `fd` closed (EOF, an error, or closed by us).
    fn pipe_connection_lost(&mut self, fd: i32, exc: Option<io::Error>) {
        let _ = (fd, exc);
    }
    /// The child exited; [`returncode`](SubprocessTransport::returncode)
    /// is set. Called once.
    fn process_exited(&mut self) {}
    /// The stdin pipe's buffer passed its high-water mark.
    fn pause_writing(&mut self) {}
    /// The stdin pipe's buffer drained.
    fn resume_writing(&mut self) {}
    /// The child exited and all its pipes are closed: the last call.
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }
}

struct ProcInner {
    lp: LoopHandle,
    pid: u32,
    /// `None` once reaped.
    child: RefCell<Option<std::process::Child>>,
    pidfd: RefCell<Option<OwnedFd>>,
    status: Cell<Option<ExitStatus>>,
    pipes: RefCell<[Option<PipeTransport>; 3]>,
    /// Pipes given to the protocol and not yet lost.
    open_pipes: Cell<usize>,
    protocol: RefCell<Option<Box<dyn SubprocessProtocol>>>,
    closed: Cell<bool>,
    /// `connection_lost` ran.
    finished: Cell<bool>,
    made: Cell<bool>,
    exit_waiters: RefCell<Vec<Waker>>,
    /// The transport keeps itself alive until `connection_lost` (or the
    /// loop closes), as asyncio's loop keeps its transports: dropping
    /// every handle does not lose the protocol's last calls.
    keep_alive: RefCell<Option<Rc<ProcInner>>>,
}

/// A running (or exited) child and its pipes (asyncio's
/// `SubprocessTransport`): a cheap `Rc` handle, `!Send`.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use sloop::subprocess::{SubprocessProtocol, SubprocessTransport};
///
/// #[derive(Default)]
/// struct Collect(Rc<RefCell<Vec<u8>>>);
/// impl SubprocessProtocol for Collect {
///     fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
///         self.0.borrow_mut().extend_from_slice(data);
///     }
///     fn connection_lost(&mut self, _: Option<std::io::Error>) {
///         sloop::get_running_loop().unwrap().stop();
///     }
/// }
///
/// let lp = sloop::EventLoop::new()?;
/// let out = Rc::new(RefCell::new(Vec::new()));
/// let o = out.clone();
/// let t = lp.subprocess_shell(move || Collect(o), "echo hi; exit 3")?;
/// lp.run_forever()?;
/// assert_eq!(*out.borrow(), b"hi\n");
/// assert_eq!(t.returncode(), Some(3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SubprocessTransport {
    inner: Rc<ProcInner>,
}

impl fmt::Debug for SubprocessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<SubprocessTransport pid={} returncode={:?}>",
            self.inner.pid,
            self.returncode()
        )
    }
}

/// A pipe's protocol that forwards to the subprocess protocol.
struct Forward {
    proc: Weak<ProcInner>,
    fd: i32,
}

impl Forward {
    fn with(&self, f: impl FnOnce(&SubprocessTransport)) {
        if let Some(inner) = self.proc.upgrade() {
            f(&SubprocessTransport { inner });
        }
    }
}

impl PipeProtocol for Forward {
    fn data_received(&mut self, data: &[u8]) {
        let (fd, data) = (self.fd, data.to_vec());
        self.with(|t| t.call_protocol(move |p| p.pipe_data_received(fd, &data)));
    }
    fn pause_writing(&mut self) {
        self.with(|t| t.call_protocol(|p| p.pause_writing()));
    }
    fn resume_writing(&mut self) {
        self.with(|t| t.call_protocol(|p| p.resume_writing()));
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let fd = self.fd;
        self.with(|t| {
            t.call_protocol(move |p| p.pipe_connection_lost(fd, exc));
            t.inner.open_pipes.set(t.inner.open_pipes.get() - 1);
            t.try_finish();
        });
    }
}

/// This loop's children not yet reaped; reaped (killed first if need be)
/// when the loop closes.
#[derive(Default)]
struct Children(RefCell<Vec<Weak<ProcInner>>>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.take() {
            if let Some(inner) = child.upgrade() {
                inner.reap_now();
                let me = inner.keep_alive.borrow_mut().take();
                drop(me);
            }
        }
    }
}

impl ProcInner {
    /// Kills the child if it still runs and waits for it (blocking, but
    /// only for a killed child to be reaped).
    fn reap_now(&self) {
        let child = self.child.borrow_mut().take();
        if let Some(mut child) = child {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            if let Ok(status) = child.wait() {
                self.status.set(Some(status));
            }
        }
    }
}

impl Drop for ProcInner {
    fn drop(&mut self) {
        self.reap_now();
    }
}

/// asyncio's returncode: the exit code, or minus the signal that killed
/// the child.
fn returncode_of(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}

impl SubprocessTransport {
    /// Spawns `cmd` and watches it; `pipes` says whether the pipes go to
    /// the protocol (else the caller takes them from the returned child).
    fn spawn(
        lp: &LoopHandle,
        cmd: &mut Command,
        protocol: Box<dyn SubprocessProtocol>,
        pipes: bool,
    ) -> Result<(SubprocessTransport, [Option<OwnedFd>; 3]), Error> {
        if lp.is_closed() {
            return Err(Error::Closed);
        }
        let children = lp.extension::<Children>().ok_or(Error::Closed)?;
        let mut child = cmd.spawn()?;
        let fds: [Option<OwnedFd>; 3] = [
            child.stdin.take().map(OwnedFd::from),
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        ];
        let pid = child.id();
        let inner = Rc::new(ProcInner {
            lp: lp.clone(),
            pid,
            child: RefCell::new(Some(child)),
            pidfd: RefCell::new(None),
            status: Cell::new(None),
            pipes: RefCell::new([None, None, None]),
            open_pipes: Cell::new(0),
            protocol: RefCell::new(Some(protocol)),
            closed: Cell::new(false),
            finished: Cell::new(false),
            made: Cell::new(false),
            exit_waiters: RefCell::new(Vec::new()),
            keep_alive: RefCell::new(None),
        });
        *inner.keep_alive.borrow_mut() = Some(inner.clone());
        {
            let mut list = children.0.borrow_mut();
            list.retain(|w| w.strong_count() > 0);
            list.push(Rc::downgrade(&inner));
        }
        let t = SubprocessTransport { inner };
        let mut rest = [None, None, None];
        if pipes {
            for (i, fd) in fds.into_iter().enumerate() {
                let Some(fd) = fd else { continue };
                let forward = Forward {
                    proc: Rc::downgrade(&t.inner),
                    fd: i as i32,
                };
                let pipe = if i == 0 {
                    lp.connect_write_pipe(move || forward, fd)
                } else {
                    lp.connect_read_pipe(move || forward, fd)
                };
                match pipe {
                    Ok(pipe) => {
                        t.inner.pipes.borrow_mut()[i] = Some(pipe);
                        t.inner.open_pipes.set(t.inner.open_pipes.get() + 1);
                    }
                    Err(e) => {
                        t.close();
                        return Err(e);
                    }
                }
            }
        } else {
            rest = fds;
        }
        t.watch_exit()?;
        // After the pipes' connection_made (FIFO), as asyncio's
        // _connect_pipes does.
        let me = t.clone();
        lp.call_soon(move || {
            me.inner.made.set(true);
            let t = me.clone();
            me.call_protocol(move |p| p.connection_made(&t));
            if me.inner.status.get().is_some() {
                me.call_protocol(|p| p.process_exited());
            }
            me.try_finish();
        })?;
        Ok((t, rest))
    }

    /// Registers the exit watcher: the pidfd as a reader, or the blocking
    /// pool's `waitid` where there is no pidfd.
    fn watch_exit(&self) -> Result<(), Error> {
        match crate::sys::pidfd_open(self.inner.pid) {
            Ok(pidfd) => {
                let me = self.clone();
                self.inner.lp.add_reader(&pidfd, move || me.exited())?;
                *self.inner.pidfd.borrow_mut() = Some(pidfd);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                let (me, pid) = (self.clone(), self.inner.pid);
                self.inner
                    .lp
                    .spawn_local(async move {
                        let _ =
                            crate::executor::off_loop(move || crate::sys::wait_exit_no_reap(pid))
                                .await;
                        me.exited();
                    })
                    .detach();
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The child's exit was seen: reap it, tell the protocol and waiters.
    fn exited(&self) {
        let status = {
            let mut child = self.inner.child.borrow_mut();
            match child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => status,
                Some(Ok(None)) => return, // not yet (a spurious wake)
                Some(Err(e)) => {
                    log::warn!("cannot reap child {}: {e}", self.inner.pid);
                    return;
                }
                None => return,
            }
        };
        self.inner.child.borrow_mut().take();
        let pidfd = self.inner.pidfd.borrow_mut().take();
        if let Some(pidfd) = pidfd {
            let _ = self.inner.lp.remove_reader(&pidfd);
        }
        self.inner.status.set(Some(status));
        for w in self.inner.exit_waiters.take() {
            w.wake();
        }
        if self.inner.made.get() {
            self.call_protocol(|p| p.process_exited());
            self.try_finish();
        }
    }

    /// `connection_lost` once the child exited and every pipe is closed.
    fn try_finish(&self) {
        let inner = &self.inner;
        if !inner.made.get()
            || inner.finished.get()
            || inner.status.get().is_none()
            || inner.open_pipes.get() > 0
        {
            return;
        }
        let me = self.clone();
        let _ = inner.lp.call_soon(move || {
            if me.inner.finished.get() {
                return;
            }
            me.call_protocol(|p| p.connection_lost(None));
            me.inner.finished.set(true);
            let protocol = me.inner.protocol.borrow_mut().take();
            drop(protocol);
            let me = me.inner.keep_alive.borrow_mut().take();
            drop(me);
        });
    }

    fn call_protocol(&self, f: impl FnOnce(&mut dyn SubprocessProtocol) + 'static) {
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
                ExceptionContext::new("Exception in subprocess protocol callback")
                    .with_socket(format!("{self:?}")),
            );
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The child's exit code once it exited, or minus the signal that
    /// killed it (asyncio's `returncode`); `None` while it runs.
    pub fn returncode(&self) -> Option<i32> {
        self.inner.status.get().map(returncode_of)
    }

    /// The child's exit status once it exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.status.get()
    }

    /// The pipe transport of the child's stdin (0), stdout (1) or stderr
    /// (2), if that pipe was made.
    pub fn get_pipe_transport(&self, fd: i32) -> Option<PipeTransport> {
        let i = usize::try_from(fd).ok().filter(|&i| i < 3)?;
        self.inner.pipes.borrow()[i].clone()
    }

    /// Sends `signal` to the child.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSignal`] outside 1..=64; `ESRCH`
    /// (`ProcessLookupError`) once the child was reaped.
    pub fn send_signal(&self, signal: i32) -> Result<(), Error> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidSignal(signal));
        }
        if self.inner.child.borrow().is_none() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH).into());
        }
        match self.inner.pidfd.borrow().as_ref() {
            Some(pidfd) => crate::sys::pidfd_send_signal(pidfd, signal)?,
            // Unreaped (checked above): the pid is still the child's.
            None => crate::sys::kill_child(self.inner.pid, signal)?,
        }
        Ok(())
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    ///
    /// As [`send_signal`](SubprocessTransport::send_signal).
    pub fn terminate(&self) -> Result<(), Error> {
        self.send_signal(libc::SIGTERM)
    }

    /// Sends SIGKILL.
    ///
    /// # Errors
    ///
    /// As [`send_signal`](SubprocessTransport::send_signal).
    pub fn kill(&self) -> Result<(), Error> {
        self.send_signal(libc::SIGKILL)
    }

    /// Closes the pipes and, if the child still runs, kills it (asyncio's
    /// `close`); the watcher reaps it. Idempotent.
    pub fn close(&self) {
        if self.inner.closed.replace(true) {
            return;
        }
        let pipes: Vec<PipeTransport> = self
            .inner
            .pipes
            .borrow()
            .iter()
            .flatten()
            .cloned()
            .collect();
        for p in pipes {
            p.close();
        }
        if self.inner.status.get().is_none() {
            let _ = self.kill();
        }
    }

    /// Whether [`close`](SubprocessTransport::close) was called.
    pub fn is_closing(&self) -> bool {
        self.inner.closed.get()
    }

    /// A future of the child's exit status (asyncio's `Process.wait`).
    pub fn wait(&self) -> ProcessWait {
        ProcessWait {
            transport: self.clone(),
        }
    }

    pub(crate) fn poll_exit(&self, waker: &Waker) -> Option<ExitStatus> {
        if let Some(status) = self.inner.status.get() {
            return Some(status);
        }
        let mut waiters = self.inner.exit_waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
        None
    }
}

/// A command with its three stdio streams piped (asyncio's default for
/// `subprocess_exec`).
fn piped(program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn shell(command: &str) -> Command {
    piped("/bin/sh", &["-c", command])
}

impl LoopHandle {
    /// Runs `program` with `args` (asyncio's `subprocess_exec`), its
    /// stdin, stdout and stderr piped to the protocol `factory` makes.
    /// `connection_made` comes in the next iteration. See the example on
    /// [`SubprocessTransport`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`]; the spawn's I/O error (`NotFound` for a missing
    /// program).
    pub fn subprocess_exec<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> Result<SubprocessTransport, Error> {
        self.subprocess_command(factory, &mut piped(program, args))
    }

    /// Runs `command` with `/bin/sh -c` (asyncio's `subprocess_shell`);
    /// see [`subprocess_exec`](LoopHandle::subprocess_exec).
    ///
    /// # Errors
    ///
    /// As [`subprocess_exec`](LoopHandle::subprocess_exec).
    pub fn subprocess_shell<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P,
        command: &str,
    ) -> Result<SubprocessTransport, Error> {
        self.subprocess_command(factory, &mut shell(command))
    }

    /// Runs a `std::process::Command` as configured: the streams it pipes
    /// (`Stdio::piped()`) go to the protocol; the others are as set
    /// (inherited by default, `Stdio::null()`...).
    ///
    /// ```
    /// use std::process::{Command, Stdio};
    /// use sloop::subprocess::SubprocessProtocol;
    ///
    /// struct Quiet;
    /// impl SubprocessProtocol for Quiet {}
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let mut cmd = Command::new("true");
    /// cmd.stdin(Stdio::null());
    /// let t = lp.subprocess_command(|| Quiet, &mut cmd)?;
    /// assert!(t.get_pipe_transport(0).is_none());
    /// let status = lp.run_until_complete(t.wait())??;
    /// assert!(status.success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`subprocess_exec`](LoopHandle::subprocess_exec).
    pub fn subprocess_command<P: SubprocessProtocol>(
        &self,
        factory: impl FnOnce() -> P,
        command: &mut Command,
    ) -> Result<SubprocessTransport, Error> {
        let (t, _) = SubprocessTransport::spawn(self, command, Box::new(factory()), true)?;
        Ok(t)
    }
}
