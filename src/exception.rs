//! What the loop reports when something goes wrong outside any caller's
//! reach: a panic in a callback, a fatal transport error, a failed accept.
//!
//! asyncio passes a dict with well-known keys to `call_exception_handler`;
//! here it is [`ExceptionContext`], with the same keys as fields: typed
//! where a handler would match on them ([`Exception`], [`TransportInfo`],
//! [`TaskInfo`]), text for the rest. The
//! [default handler](crate::LoopHandle::default_exception_handler) logs it
//! through the `log` facade at error level, formatted as asyncio formats it,
//! and writes it to standard error instead when no logger would take it, so
//! a report is never lost for want of setup.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::panic::Location;

use crate::address::Address;

/// The error an [`ExceptionContext`] carries. The handler in
/// `ExceptionContext`'s example matches on `Exception::Panic`; the example
/// on [`ExceptionContext::new`] makes an `Exception::Other`.
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
    ///
    /// ```
    /// use sloop::Exception;
    ///
    /// let payload = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
    /// let e = Exception::from_panic(&*payload);
    /// assert_eq!(e.to_string(), "panic: boom");
    /// ```
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

/// The kind of a transport named in a report.
///
/// The handler in [`ExceptionContext`]'s example matches on
/// `TransportKind::Tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// A TCP [`Transport`](crate::Transport).
    Tcp,
    /// A Unix stream [`Transport`](crate::Transport).
    Unix,
    /// A UDP [`DatagramTransport`](crate::DatagramTransport).
    Udp,
    /// A Unix datagram [`DatagramTransport`](crate::DatagramTransport).
    UnixDatagram,
}

/// The transport a report is about (asyncio's `transport` key), as it was
/// when the report was made: the transport itself may be gone by the time
/// the handler looks.
///
/// `Display` is asyncio's `repr` of the transport (state, fd, reading,
/// write buffer), as the default handler prints it. Made by the loop, or
/// from a transport with `From` for a report of your own:
/// `ExceptionContext::new("bad frame").with_transport(&transport)`.
///
/// The handler in [`ExceptionContext`]'s example matches on its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportInfo {
    /// Which kind of transport.
    pub kind: TransportKind,
    /// Its socket's file descriptor; `None` once the socket is closed.
    pub fd: Option<RawFd>,
    /// The socket's own address, if it has one.
    pub local_addr: Option<Address>,
    /// The connected peer's address (a stream's client or server, a
    /// connected datagram socket's peer).
    pub peer_addr: Option<Address>,
    description: String,
}

impl TransportInfo {
    pub(crate) fn new(
        kind: TransportKind,
        fd: Option<RawFd>,
        local_addr: Option<Address>,
        peer_addr: Option<Address>,
        description: String,
    ) -> TransportInfo {
        TransportInfo {
            kind,
            fd,
            local_addr,
            peer_addr,
            description,
        }
    }
}

impl fmt::Display for TransportInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// The task a report is about (asyncio's `task` key).
///
/// `Display` is `<Task name='NAME' spawned at FILE:LINE:COL>`. Made by the
/// loop, or from a [`Task`](crate::Task) with `From`.
///
/// The handler in [`ExceptionContext`]'s example matches on its name; see
/// [`ExceptionContext::with_task`] for one made from a task.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's name at the time of the report (`Task-N` unless it was
    /// given one).
    pub name: String,
    /// Where it was spawned.
    pub spawned_at: &'static Location<'static>,
}

impl TaskInfo {
    pub(crate) fn new(name: String, spawned_at: &'static Location<'static>) -> TaskInfo {
        TaskInfo { name, spawned_at }
    }
}

impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Task name='{}' spawned at {}>",
            self.name, self.spawned_at
        )
    }
}

/// What [`call_exception_handler`](crate::LoopHandle::call_exception_handler)
/// receives: asyncio's context dict as a struct.
///
/// `message` is always set; the other fields describe what was involved
/// (asyncio's `exception`, `handle`, `task`, `future`, `transport`,
/// `protocol` and `socket` keys). The ones a handler matches on are
/// typed: the error or panic ([`Exception`]), the transport
/// ([`TransportInfo`]: kind, fd, addresses) and the task ([`TaskInfo`]:
/// name, where it was spawned). The others are text, since the objects
/// themselves are usually borrowed or gone by the time the handler runs.
/// `Display` is asyncio's default handler's layout.
///
/// A handler that deals with one case itself and passes the rest on:
///
/// ```
/// use std::cell::RefCell;
/// use std::io::Write;
/// use std::rc::Rc;
/// use sloop::{
///     Exception, ExceptionContext, LoopHandle, Protocol, TaskInfo, TransportInfo,
///     TransportKind,
/// };
///
/// struct Fragile;
/// impl Protocol for Fragile {
///     fn data_received(&mut self, _: &[u8]) {
///         panic!("bad request");
///     }
/// }
///
/// let lp = sloop::EventLoop::new()?;
/// let blamed = Rc::new(RefCell::new(Vec::new()));
/// let b = blamed.clone();
/// lp.set_exception_handler(Some(move |lp: &LoopHandle, ctx: &ExceptionContext| {
///     match (&ctx.exception, &ctx.transport, &ctx.task) {
///         // A protocol panicked on a TCP connection: note which client.
///         (
///             Some(Exception::Panic(msg)),
///             Some(TransportInfo { kind: TransportKind::Tcp, peer_addr: Some(peer), .. }),
///             _,
///         ) => b.borrow_mut().push(format!("{peer}: {msg}")),
///         // A task of ours: its name says which.
///         (_, _, Some(TaskInfo { name, .. })) if name.starts_with("worker") => {
///             b.borrow_mut().push(format!("{name} failed"))
///         }
///         _ => lp.default_exception_handler(ctx),
///     }
/// }));
///
/// let server = lp.run_until_complete(lp.create_server(|| Fragile, "127.0.0.1:0"))??;
/// let mut client = std::net::TcpStream::connect(server.local_addrs()[0])?;
/// client.write_all(b"GET")?;
/// lp.spawn_local_named("worker-1", async { panic!("out of work") }).detach();
/// lp.run_until_complete(async move {
///     while blamed.borrow().len() < 2 {
///         sloop::sleep(std::time::Duration::from_millis(1)).await;
///     }
///     let mut blamed = blamed.borrow().clone();
///     blamed.sort();
///     let client_addr = client.local_addr().unwrap();
///     assert_eq!(blamed, [format!("{client_addr}: bad request"), "worker-1 failed".into()]);
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// What happened, e.g. "Exception in callback ...".
    pub message: String,
    /// The error or panic, if there is one.
    pub exception: Option<Exception>,
    /// The callback handle that was running.
    pub handle: Option<String>,
    /// The task involved.
    pub task: Option<TaskInfo>,
    /// The future involved.
    pub future: Option<String>,
    /// The transport involved.
    pub transport: Option<TransportInfo>,
    /// The protocol involved.
    pub protocol: Option<String>,
    /// The socket involved (a server's listening socket).
    pub socket: Option<String>,
}

impl ExceptionContext {
    /// A context with only a message. The `with_*` methods add the rest,
    /// for a report of your own:
    ///
    /// ```
    /// use sloop::{Exception, ExceptionContext};
    ///
    /// let ctx = ExceptionContext::new("bad frame")
    ///     .with_exception(Exception::Other("checksum mismatch".into()))
    ///     .with_handle("<Handle decode>")
    ///     .with_protocol("<Framer>")
    ///     .with_socket("<socket fd=7>");
    /// assert_eq!(
    ///     ctx.to_string(),
    ///     "bad frame\n\
    ///      exception: checksum mismatch\n\
    ///      handle: <Handle decode>\n\
    ///      protocol: <Framer>\n\
    ///      socket: <socket fd=7>"
    /// );
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// lp.call_exception_handler(ctx); // the default handler logs it
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        ExceptionContext {
            message: message.into(),
            ..Default::default()
        }
    }

    /// Sets `exception`. See the example on [`ExceptionContext::new`].
    pub fn with_exception(mut self, exception: Exception) -> Self {
        self.exception = Some(exception);
        self
    }

    /// Sets `handle`. See the example on [`ExceptionContext::new`].
    pub fn with_handle(mut self, handle: impl fmt::Display) -> Self {
        self.handle = Some(handle.to_string());
        self
    }

    /// Sets `task`: a [`TaskInfo`], or a `&Task` to describe.
    ///
    /// ```
    /// use sloop::ExceptionContext;
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let task = lp.spawn_local_named("fetch", async {});
    /// let ctx = ExceptionContext::new("took too long").with_task(&task);
    /// let info = ctx.task.as_ref().unwrap();
    /// assert_eq!(info.name, "fetch");
    /// assert_eq!(info.spawned_at.line(), line!() - 4);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_task(mut self, task: impl Into<TaskInfo>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Sets `transport`: a [`TransportInfo`], or a `&Transport` or
    /// `&DatagramTransport` to describe.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # struct Quiet;
    /// # impl sloop::DatagramProtocol for Quiet {
    /// #     fn datagram_received(&mut self, _: &[u8], _: SocketAddr) {}
    /// # }
    /// use sloop::{ExceptionContext, TransportKind};
    ///
    /// let lp = sloop::EventLoop::new()?;
    /// let t = lp.run_until_complete(
    ///     lp.create_datagram_endpoint(|| Quiet).local_addr("127.0.0.1:0"),
    /// )??;
    /// let ctx = ExceptionContext::new("bad datagram").with_transport(&t);
    /// let info = ctx.transport.as_ref().unwrap();
    /// assert_eq!(info.kind, TransportKind::Udp);
    /// assert!(info.fd.is_some());
    /// t.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_transport(mut self, transport: impl Into<TransportInfo>) -> Self {
        self.transport = Some(transport.into());
        self
    }

    /// Sets `protocol`. See the example on [`ExceptionContext::new`].
    pub fn with_protocol(mut self, protocol: impl fmt::Display) -> Self {
        self.protocol = Some(protocol.to_string());
        self
    }

    /// Sets `socket`. See the example on [`ExceptionContext::new`].
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
        let keys: [(&str, Option<&dyn fmt::Display>); 6] = [
            ("future", self.future.as_ref().map(|v| v as _)),
            ("handle", self.handle.as_ref().map(|v| v as _)),
            ("protocol", self.protocol.as_ref().map(|v| v as _)),
            ("socket", self.socket.as_ref().map(|v| v as _)),
            ("task", self.task.as_ref().map(|v| v as _)),
            ("transport", self.transport.as_ref().map(|v| v as _)),
        ];
        for (key, value) in keys {
            if let Some(v) = value {
                write!(f, "\n{key}: {v}")?;
            }
        }
        Ok(())
    }
}
