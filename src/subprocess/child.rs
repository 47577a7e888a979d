//! The async form of a child process (asyncio's `create_subprocess_exec`
//! and its `Process`): a [`Child`] whose stdin, stdout and stderr are
//! bridge streams ([`PipeWriter`], [`PipeReader`]) and whose exit is a
//! future ([`ProcessWait`]).

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{Command, ExitStatus};
use std::task::{Context, Poll};

use super::{piped, shell, SubprocessProtocol, SubprocessTransport};
use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::pipe::{PipeReader, PipeWriter};

/// The transport's protocol when the pipes go to streams: nothing to do.
struct Streams;
impl SubprocessProtocol for Streams {}

/// A child process with its pipes as streams (asyncio's `Process`).
///
/// The streams are public fields, to take and use separately; each is
/// `None` if that stream was not piped. Dropping the `Child` does not kill
/// the process: it runs on and is reaped when it exits (or killed and
/// reaped when the loop closes). [`kill`](Child::kill) and
/// [`wait`](Child::wait) for the rest.
///
/// ```
/// use futures::io::{AsyncReadExt, AsyncWriteExt};
///
/// let lp = sloop::EventLoop::new()?;
/// let mut child = lp.create_subprocess_exec("cat", &[])?;
/// let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
/// let (out, status) = lp.run_until_complete(async move {
///     stdin.write_all(b"meow").await?;
///     stdin.close().await?; // cat sees EOF
///     let mut out = String::new();
///     stdout.read_to_string(&mut out).await?;
///     Ok::<_, std::io::Error>((out, child.wait().await?))
/// })??;
/// assert_eq!(out, "meow");
/// assert!(status.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Child {
    /// The child's stdin, if piped.
    pub stdin: Option<PipeWriter>,
    /// The child's stdout, if piped.
    pub stdout: Option<PipeReader>,
    /// The child's stderr, if piped.
    pub stderr: Option<PipeReader>,
    transport: SubprocessTransport,
}

impl Child {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.transport.pid()
    }

    /// A future of the child's exit status. Does not close stdin: a child
    /// that reads it to the end waits for that (close or drop `stdin`).
    pub fn wait(&self) -> ProcessWait {
        self.transport.wait()
    }

    /// The exit code (minus the signal that killed it) once the child
    /// exited (asyncio's `returncode`).
    pub fn returncode(&self) -> Option<i32> {
        self.transport.returncode()
    }

    /// Sends `signal` to the child.
    ///
    /// # Errors
    ///
    /// As [`SubprocessTransport::send_signal`].
    pub fn send_signal(&self, signal: i32) -> Result<(), Error> {
        self.transport.send_signal(signal)
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    ///
    /// As [`SubprocessTransport::send_signal`].
    pub fn terminate(&self) -> Result<(), Error> {
        self.transport.terminate()
    }

    /// Sends SIGKILL.
    ///
    /// # Errors
    ///
    /// As [`SubprocessTransport::send_signal`].
    pub fn kill(&self) -> Result<(), Error> {
        self.transport.kill()
    }

    /// The subprocess transport behind the child (its pipes are the
    /// streams', not the transport's).
    pub fn transport(&self) -> &SubprocessTransport {
        &self.transport
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.id())
            .field("returncode", &self.returncode())
            .finish_non_exhaustive()
    }
}

/// The future of [`Child::wait`] and [`SubprocessTransport::wait`]: the
/// child's exit status (an error only if the loop closed first).
///
/// # Cancel safety
///
/// Cancel safe: dropping it changes nothing; the child is still reaped.
#[must_use = "futures do nothing unless awaited"]
pub struct ProcessWait {
    pub(super) transport: SubprocessTransport,
}

impl Future for ProcessWait {
    type Output = io::Result<ExitStatus>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.transport.poll_exit(cx.waker()) {
            Some(status) => Poll::Ready(Ok(status)),
            None if self.transport.inner.lp.is_closed() => Poll::Ready(Err(Error::Closed.into())),
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for ProcessWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessWait")
            .field("pid", &self.transport.pid())
            .finish()
    }
}

impl LoopHandle {
    /// Runs `program` with `args`, its stdin, stdout and stderr piped, and
    /// returns the [`Child`] with them as streams (asyncio's
    /// `create_subprocess_exec`). See the example on [`Child`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`]; the spawn's I/O error (`NotFound` for a missing
    /// program).
    pub fn create_subprocess_exec(
        &self,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> Result<Child, Error> {
        self.spawn_child(&mut piped(program, args))
    }

    /// Runs `command` with `/bin/sh -c` (asyncio's
    /// `create_subprocess_shell`); see
    /// [`create_subprocess_exec`](LoopHandle::create_subprocess_exec).
    ///
    /// ```
    /// let lp = sloop::EventLoop::new()?;
    /// let child = lp.create_subprocess_shell("exit 3")?;
    /// let status = lp.run_until_complete(child.wait())??;
    /// assert_eq!(status.code(), Some(3));
    /// assert_eq!(child.returncode(), Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`create_subprocess_exec`](LoopHandle::create_subprocess_exec).
    pub fn create_subprocess_shell(&self, command: &str) -> Result<Child, Error> {
        self.spawn_child(&mut shell(command))
    }

    /// Runs a `std::process::Command` as configured; the streams it pipes
    /// become the [`Child`]'s.
    ///
    /// # Errors
    ///
    /// As [`create_subprocess_exec`](LoopHandle::create_subprocess_exec).
    pub fn spawn_child(&self, command: &mut Command) -> Result<Child, Error> {
        let (transport, [stdin, stdout, stderr]) =
            SubprocessTransport::spawn(self, command, Box::new(Streams), false)?;
        let stdin = stdin.map(|fd| self.open_write_pipe(fd)).transpose();
        let stdout = stdout.map(|fd| self.open_read_pipe(fd)).transpose();
        let stderr = stderr.map(|fd| self.open_read_pipe(fd)).transpose();
        match (stdin, stdout, stderr) {
            (Ok(stdin), Ok(stdout), Ok(stderr)) => Ok(Child {
                stdin,
                stdout,
                stderr,
                transport,
            }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                transport.close();
                Err(e)
            }
        }
    }
}
