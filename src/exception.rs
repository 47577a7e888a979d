//! What the loop reports when something goes wrong outside any caller's
//! reach: a panic in a callback, a fatal transport error, a failed accept.
//!
//! asyncio passes a dict with well-known keys to `call_exception_handler`;
//! here it is [`ExceptionContext`], with the same keys as typed fields. The
//! [default handler](crate::LoopHandle::default_exception_handler) logs it
//! through the `log` facade at error level, formatted as asyncio formats it,
//! and writes it to standard error instead when no logger would take it, so
//! a report is never lost for want of setup.

use std::any::Any;
use std::fmt;
use std::io;

/// The error an [`ExceptionContext`] carries.
#[derive(Debug)]
#[non_exhaustive]
pub enum Exception {
    /// A callback, protocol method or task panicked; the panic's message.
    Panic(String),
    /// An I/O error.
    Io(io::Error),
    /// Any other error.
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Exception {
    /// Makes an [`Exception::Panic`] from a payload caught by `catch_unwind`.
    pub fn from_panic(payload: &(dyn Any + Send)) -> Exception {
        Exception::Panic(panic_message(payload))
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exception::Panic(msg) => write!(f, "panic: {msg}"),
            Exception::Io(e) => write!(f, "{e}"),
            Exception::Other(e) => write!(f, "{e}"),
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// What [`call_exception_handler`](crate::LoopHandle::call_exception_handler)
/// receives: asyncio's context dict as a struct.
///
/// `message` is always set; the other fields describe what was involved
/// (asyncio's `exception`, `handle`, `task`, `future`, `transport`,
/// `protocol` and `socket` keys), as text, since the objects themselves are
/// usually borrowed or gone by the time the handler runs.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// What happened, e.g. "Exception in callback ...".
    pub message: String,
    /// The error or panic, if there is one.
    pub exception: Option<Exception>,
    /// The callback handle that was running.
    pub handle: Option<String>,
    /// The task that was running.
    pub task: Option<String>,
    /// The future involved.
    pub future: Option<String>,
    /// The transport involved.
    pub transport: Option<String>,
    /// The protocol involved.
    pub protocol: Option<String>,
    /// The socket involved.
    pub socket: Option<String>,
}

impl ExceptionContext {
    /// A context with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ExceptionContext {
            message: message.into(),
            ..Default::default()
        }
    }

    /// Sets `exception`.
    pub fn with_exception(mut self, exception: Exception) -> Self {
        self.exception = Some(exception);
        self
    }

    /// Sets `handle`.
    pub fn with_handle(mut self, handle: impl fmt::Display) -> Self {
        self.handle = Some(handle.to_string());
        self
    }

    /// Sets `task`.
    pub fn with_task(mut self, task: impl fmt::Display) -> Self {
        self.task = Some(task.to_string());
        self
    }

    /// Sets `transport`.
    pub fn with_transport(mut self, transport: impl fmt::Display) -> Self {
        self.transport = Some(transport.to_string());
        self
    }

    /// Sets `protocol`.
    pub fn with_protocol(mut self, protocol: impl fmt::Display) -> Self {
        self.protocol = Some(protocol.to_string());
        self
    }

    /// Sets `socket`.
    pub fn with_socket(mut self, socket: impl fmt::Display) -> Self {
        self.socket = Some(socket.to_string());
        self
    }
}

impl fmt::Display for ExceptionContext {
    /// asyncio's default-handler layout: the message, then one `key: value`
    /// line per other field, in sorted key order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str("Unhandled exception in event loop")?;
        } else {
            f.write_str(&self.message)?;
        }
        if let Some(e) = &self.exception {
            write!(f, "\nexception: {e}")?;
        }
        let keys = [
            ("future", &self.future),
            ("handle", &self.handle),
            ("protocol", &self.protocol),
            ("socket", &self.socket),
            ("task", &self.task),
            ("transport", &self.transport),
        ];
        for (key, value) in keys {
            if let Some(v) = value {
                write!(f, "\n{key}: {v}")?;
            }
        }
        Ok(())
    }
}
