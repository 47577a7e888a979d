//! The crate's error type.
//!
//! Everything that touches the operating system fails with [`std::io::Error`];
//! misuse of the loop or of a transport fails with an [`Error`] variant whose
//! `Display` is asyncio's own message (docs/design.md D7), so a user coming from
//! asyncio recognises it. Each variant has one [`io::ErrorKind`]
//! ([`Error::kind`]), and `Error` converts into an `io::Error` of that kind
//! carrying the `Error` itself, so `?` works in functions that return
//! `io::Result` and the async bridge reports the same condition with the
//! same kind wherever it meets it.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// What went wrong when using the loop or a transport.
///
/// # As `io::Error`
///
/// [`kind`](Error::kind) gives each variant the [`io::ErrorKind`] a
/// std or tokio user would expect for it, and `From<Error> for io::Error`
/// uses it: the `io::Error` has that kind and carries the `Error` (get it
/// back with [`get_ref`](io::Error::get_ref) and `downcast_ref`), except
/// that [`Error::Io`] converts to the OS error it holds. The async bridge
/// ([`TransportStream`](crate::TransportStream),
/// [`DatagramSocket`](crate::DatagramSocket)) reports every condition
/// below through this same conversion.
///
/// | variant | `io::ErrorKind` | why |
/// | --- | --- | --- |
/// | [`ConnectionLost`](Error::ConnectionLost) | `BrokenPipe` | a write to a connection that is gone: what `write` on a std or tokio socket returns (`EPIPE`) once the peer or `shutdown` ended it. Reads never see it: a stream's reads end with `Ok(0)`. |
/// | [`WriteAfterEof`](Error::WriteAfterEof) | `BrokenPipe` | `write` after `shutdown(Write)` is `EPIPE` on a std socket too. |
/// | [`InvalidWriteLimits`](Error::InvalidWriteLimits), [`InvalidAddress`](Error::InvalidAddress), [`AddressRequired`](Error::AddressRequired), [`FdUsedByTransport`](Error::FdUsedByTransport) | `InvalidInput` | an argument the call cannot take; nothing was done. |
/// | [`Io`](Error::Io) | the OS error's own | |
/// | [`Tls`](Error::Tls) | `InvalidData` | what tokio-rustls gives for a refused handshake or record. |
/// | [`TlsHandshakeTimeout`](Error::TlsHandshakeTimeout), [`TlsShutdownTimeout`](Error::TlsShutdownTimeout) | `TimedOut` | |
/// | [`TlsWriteEofUnsupported`](Error::TlsWriteEofUnsupported) | `Unsupported` | |
/// | [`InvalidServerName`](Error::InvalidServerName) | `InvalidInput` | |
/// | the loop's and server's states: [`Closed`](Error::Closed), [`AlreadyRunning`](Error::AlreadyRunning), [`AnotherLoopRunning`](Error::AnotherLoopRunning), [`CloseWhileRunning`](Error::CloseWhileRunning), [`StoppedBeforeComplete`](Error::StoppedBeforeComplete), [`ServerClosed`](Error::ServerClosed), [`AlreadyServingForever`](Error::AlreadyServingForever); [`EmptyWaiterAlreadySet`](Error::EmptyWaiterAlreadySet), [`EmptyBuffer`](Error::EmptyBuffer) | `Other` | no I/O kind describes them (tokio reports its shut-down runtime as `Other` too); not `Interrupted`, which `read_exact` and friends would retry. Match the variant, not the kind. |
/// | [`SendfileNotAvailable`](Error::SendfileNotAvailable) | `Unsupported` | the zero-copy path cannot serve this transport or file, and the fallback is off. |
/// | [`InvalidSendfileArgument`](Error::InvalidSendfileArgument) | `InvalidInput` | as the other bad arguments. |
/// | [`SendfileInProgress`](Error::SendfileInProgress) | `Other` | a state of the transport, as the empty waiter's. |
///
/// ```
/// use std::io;
/// use sloop::Error;
///
/// let e = io::Error::from(Error::ConnectionLost);
/// assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
/// assert_eq!(e.kind(), Error::ConnectionLost.kind());
/// let inner = e.get_ref().and_then(|e| e.downcast_ref::<Error>());
/// assert!(matches!(inner, Some(Error::ConnectionLost)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The loop was closed; nothing can be scheduled on it any more.
    Closed,
    /// `run_forever` or `run_until_complete` was called while this loop runs.
    AlreadyRunning,
    /// Another sloop loop is running on this thread.
    AnotherLoopRunning,
    /// `close` was called while the loop runs.
    CloseWhileRunning,
    /// The loop was stopped before the future given to `run_until_complete` completed.
    StoppedBeforeComplete,
    /// `add_reader`/`add_writer` on a file descriptor that a live transport owns.
    FdUsedByTransport {
        /// The file descriptor.
        fd: RawFd,
        /// A short description of the transport that owns it.
        transport: String,
    },
    /// `write` after `write_eof`.
    WriteAfterEof,
    /// A second empty waiter while one is pending.
    EmptyWaiterAlreadySet,
    /// The connection is gone: the transport was closed (by either side,
    /// or by an error) before the write or wait. Its message is asyncio's
    /// `StreamWriter` one ("Connection lost").
    ConnectionLost,
    /// `set_write_buffer_limits` with `high < low`.
    InvalidWriteLimits {
        /// The high-water mark asked for.
        high: usize,
        /// The low-water mark asked for.
        low: usize,
    },
    /// `sendto` on a connected datagram transport with another address.
    InvalidAddress {
        /// The address the transport is connected to.
        expected: String,
    },
    /// `sendto` without an address on an unconnected datagram transport.
    AddressRequired,
    /// A protocol's `get_buffer` returned an empty buffer.
    EmptyBuffer,
    /// `start_serving` or `serve_forever` on a closed server.
    ServerClosed,
    /// `serve_forever` while another `serve_forever` of the same server
    /// runs.
    AlreadyServingForever,
    /// An I/O error from the operating system.
    Io(io::Error),
    /// `write`, `writelines`, `write_eof`, an empty waiter or a second
    /// sendfile while a zero-copy sendfile has the transport
    /// ([`LoopHandle::sendfile`](crate::LoopHandle::sendfile)).
    SendfileInProgress,
    /// Sendfile's zero-copy path does not apply (not a plain socket, not
    /// a regular file, or the kernel refused) and the fallback is off
    /// (asyncio's `SendfileNotAvailableError`).
    SendfileNotAvailable {
        /// Why, in asyncio's words.
        reason: String,
    },
    /// A sendfile argument it cannot take: a count of 0, a range past
    /// the largest file offset, a socket that is not a stream.
    InvalidSendfileArgument {
        /// What is wrong with it.
        message: String,
    },
    /// A TLS failure: the handshake or a record was refused, by this side
    /// or by the peer's alert. `reason` is rustls's own message.
    Tls {
        /// What kind of failure it is.
        failure: TlsFailure,
        /// rustls's message (or the alert the peer sent).
        reason: String,
    },
    /// The TLS handshake did not finish within the handshake timeout (the
    /// peer never spoke, or stalled); the connection was aborted.
    TlsHandshakeTimeout(std::time::Duration),
    /// The peer did not let the TLS shutdown finish within the shutdown
    /// timeout; the connection was aborted.
    TlsShutdownTimeout(std::time::Duration),
    /// `write_eof` on a TLS transport whose protocol version has no
    /// half-close (TLS 1.2: close_notify closes both directions).
    TlsWriteEofUnsupported,
    /// A TLS client connection without a valid server name: with
    /// verification on, the name is what the certificate is checked
    /// against, so an empty or malformed one is refused.
    InvalidServerName {
        /// The name given.
        name: String,
    },
    /// A signal number outside 1..=64 (asyncio's "invalid signal number").
    InvalidSignal(i32),
    /// A signal that cannot be handled: SIGKILL, SIGSTOP, the fault
    /// signals, or one the C library reserves.
    SignalCannotBeCaught(i32),
    /// `run_in_executor` after `shutdown_default_executor` (or on a closed
    /// loop's executor).
    ExecutorShutdown,
    /// `connect_read_pipe`/`connect_write_pipe` on something that is not a
    /// pipe, socket or character device (a regular file, say).
    NotAPipe,
}

/// The kinds of [`Error::Tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer's certificate is signed by no trusted authority.
    UnknownIssuer,
    /// The peer's certificate is not valid for the server name.
    NotValidForName,
    /// The peer's certificate expired (or is not valid yet).
    Expired,
    /// The peer's certificate is otherwise unacceptable (malformed,
    /// revoked, wrong usage, bad signature).
    BadCertificate,
    /// No protocol version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// The peer sent something that is not TLS (garbage instead of a
    /// ClientHello, say) or broke the protocol.
    InvalidMessage,
    /// The peer refused the handshake with an alert.
    AlertReceived,
    /// The peer closed the connection during the handshake.
    ClosedDuringHandshake,
    /// Anything else rustls refused.
    Other,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("Event loop is closed"),
            Error::AlreadyRunning => f.write_str("This event loop is already running"),
            Error::AnotherLoopRunning => {
                f.write_str("Cannot run the event loop while another loop is running")
            }
            Error::CloseWhileRunning => f.write_str("Cannot close a running event loop"),
            Error::StoppedBeforeComplete => {
                f.write_str("Event loop stopped before Future completed.")
            }
            Error::FdUsedByTransport { fd, transport } => {
                write!(f, "File descriptor {fd} is used by transport {transport}")
            }
            Error::WriteAfterEof => f.write_str("Cannot call write() after write_eof()"),
            Error::EmptyWaiterAlreadySet => f.write_str("Empty waiter is already set"),
            Error::ConnectionLost => f.write_str("Connection lost"),
            Error::InvalidWriteLimits { high, low } => {
                write!(f, "high ({high}) must be >= low ({low}) must be >= 0")
            }
            Error::InvalidAddress { expected } => {
                write!(f, "Invalid address: must be None or {expected}")
            }
            Error::AddressRequired => {
                f.write_str("an address is required on an unconnected transport")
            }
            Error::EmptyBuffer => f.write_str("get_buffer() returned an empty buffer"),
            Error::ServerClosed => f.write_str("server is closed"),
            Error::AlreadyServingForever => {
                f.write_str("server is already being awaited on serve_forever()")
            }
            Error::Io(e) => e.fmt(f),
            Error::SendfileInProgress => f.write_str("unable to write; sendfile is in progress"),
            Error::SendfileNotAvailable { reason } => f.write_str(reason),
            Error::InvalidSendfileArgument { message } => f.write_str(message),
            Error::Tls { failure, reason } => write!(f, "TLS error ({failure:?}): {reason}"),
            Error::TlsHandshakeTimeout(d) => {
                write!(f, "TLS handshake is taking longer than {:?}", d)
            }
            Error::TlsShutdownTimeout(d) => {
                write!(f, "TLS shutdown is taking longer than {:?}", d)
            }
            Error::TlsWriteEofUnsupported => {
                f.write_str("write_eof needs TLS 1.3: TLS 1.2 has no half-close")
            }
            Error::InvalidServerName { name } => {
                write!(
                    f,
                    "invalid TLS server name {name:?}: a DNS name or an IP address is required"
                )
            }
            Error::InvalidSignal(n) => write!(f, "invalid signal number {n}"),
            Error::SignalCannotBeCaught(n) => write!(f, "sig {n} cannot be caught"),
            Error::ExecutorShutdown => f.write_str("Executor shutdown has been called"),
            Error::NotAPipe => f.write_str("Pipe transport is for pipes/sockets only."),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// The [`io::ErrorKind`] of this error: the one it has as an
    /// `io::Error` (see the table in the [type docs](Error)).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io(e) => e.kind(),
            Error::ConnectionLost | Error::WriteAfterEof => io::ErrorKind::BrokenPipe,
            Error::InvalidWriteLimits { .. }
            | Error::InvalidAddress { .. }
            | Error::AddressRequired
            | Error::FdUsedByTransport { .. } => io::ErrorKind::InvalidInput,
            Error::InvalidSignal(_) | Error::SignalCannotBeCaught(_) => io::ErrorKind::InvalidInput,
            Error::ExecutorShutdown => io::ErrorKind::Other,
            Error::NotAPipe => io::ErrorKind::InvalidInput,
            Error::Closed
            | Error::AlreadyRunning
            | Error::AnotherLoopRunning
            | Error::CloseWhileRunning
            | Error::StoppedBeforeComplete
            | Error::EmptyWaiterAlreadySet
            | Error::EmptyBuffer
            | Error::ServerClosed
            | Error::AlreadyServingForever => io::ErrorKind::Other,
            Error::SendfileInProgress => io::ErrorKind::Other,
            Error::SendfileNotAvailable { .. } => io::ErrorKind::Unsupported,
            Error::InvalidSendfileArgument { .. } => io::ErrorKind::InvalidInput,
            Error::Tls { .. } => io::ErrorKind::InvalidData,
            Error::TlsHandshakeTimeout(_) | Error::TlsShutdownTimeout(_) => io::ErrorKind::TimedOut,
            Error::TlsWriteEofUnsupported => io::ErrorKind::Unsupported,
            Error::InvalidServerName { .. } => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<Error> for io::Error {
    /// An `io::Error` of kind [`e.kind()`](Error::kind) carrying `e`, or
    /// the OS error itself for [`Error::Io`].
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            e => io::Error::new(e.kind(), e),
        }
    }
}

/// `Result` with this crate's [`Error`].
///
/// ```
/// fn run() -> sloop::Result<u32> {
///     let lp = sloop::EventLoop::new()?; // an io::Error converts
///     lp.run_until_complete(async { 7 })
/// }
/// assert_eq!(run().unwrap(), 7);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
