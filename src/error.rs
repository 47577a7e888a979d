//! The crate's error type.
//!
//! Everything that touches the operating system fails with [`std::io::Error`];
//! misuse of the loop or of a transport fails with an [`Error`] variant whose
//! `Display` is asyncio's own message (docs/design.md D7), so a user coming from
//! asyncio recognises it. `Error` converts into `io::Error` (kind `Other`,
//! or the original error for [`Error::Io`]), so `?` works in functions that
//! return `io::Result`.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// What went wrong when using the loop or a transport.
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
    /// The connection was lost (the transport is closed).
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
            Error::ConnectionLost => f.write_str("Connection is closed by peer"),
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

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::ConnectionLost => io::Error::new(io::ErrorKind::NotConnected, e),
            Error::InvalidWriteLimits { .. }
            | Error::InvalidAddress { .. }
            | Error::AddressRequired => io::Error::new(io::ErrorKind::InvalidInput, e),
            other => io::Error::other(other),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
