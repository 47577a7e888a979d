//! Creating servers: [`ServerBuilder`], the options that
//! [`LoopHandle::create_server`], [`LoopHandle::create_unix_server`] and
//! [`LoopHandle::create_server_from_socket`] return; awaiting it creates
//! the server.
//!
//! Binding is `net`'s: addresses are resolved off the loop thread (all of
//! them at once), a Unix path's leftover socket file is removed only if it
//! is a socket and a connect to it is refused; a live server's path or a
//! non-socket gives `AddrInUse`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::IntoFuture;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use slab::Slab;
use socket2::{Domain, Socket, Type};

use super::listener::Listener;
use super::{Factory, Server, ServerInner};
use crate::event_loop::LoopHandle;
use crate::net::{self, Addrs, Family, ListenOptions, SocketFile, ToAddrs};
use crate::protocol::IntoProtocol;
use crate::transport::socket::Kind;

/// asyncio's default listen backlog; [`ServerBuilder::backlog`] changes
/// it (see the example on [`ServerBuilder`]).
pub const DEFAULT_BACKLOG: u32 = 100;

/// A listening socket with its kind and, for a Unix path, its file.
type Bound = (Socket, Kind, Option<SocketFile>);

/// Where a server listens.
enum Bind {
    /// Addresses to resolve and bind.
    Addrs(Vec<Addrs>),
    /// A Unix path.
    Unix(PathBuf),
    /// An existing listening (or bound) socket.
    Sock(Socket, Kind),
}

/// Options for a server, then `.await` to create it. Made by
/// [`LoopHandle::create_server`], [`LoopHandle::create_unix_server`],
/// [`LoopHandle::create_server_from_socket`] and their stream twins
/// ([`start_server`](LoopHandle::start_server),
/// [`start_unix_server`](LoopHandle::start_unix_server)).
///
/// It is [`IntoFuture`]: chain the options, then await it in a task, or
/// hand it to [`run_until_complete`](LoopHandle::run_until_complete), to
/// get the [`Server`]. Nothing happens until then: the addresses are
/// resolved (off the loop thread, see [`ToAddrs`]) and bound by the future.
///
/// # Cancel safety
///
/// Dropping the future before it completes leaves nothing open: what it
/// resolves is discarded, and the sockets are bound and handed to the
/// server in the poll that completes it. A socket given to
/// [`create_server_from_socket`](LoopHandle::create_server_from_socket)
/// is closed with the builder or its future.
///
/// ```
/// use sloop::{EventLoop, Family, Protocol};
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let lp = EventLoop::new()?;
/// let server = lp.run_until_complete(
///     lp.create_server(|| Quiet, ("", 0))
///         .family(Family::V4)
///         .backlog(64)
///         .reuse_address(true)
///         .reuse_port(false)
///         .keep_alive(true)
///         .max_connections(1000)
///         .start_serving(false),
/// )??;
/// assert!(server.local_addrs().iter().all(|a| a.is_ipv4()));
/// assert!(!server.is_serving());
/// server.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a server is created by awaiting its builder"]
pub struct ServerBuilder {
    lp: LoopHandle,
    factory: Factory,
    bind: Bind,
    /// The first malformed address or misuse, which the future fails with.
    error: Option<io::Error>,
    backlog: u32,
    reuse_address: bool,
    reuse_port: bool,
    family: Option<Family>,
    keep_alive: bool,
    start_serving: bool,
    max_connections: Option<usize>,
    unix_mode: Option<u32>,
    /// TLS on every connection (`.tls(..)`).
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bind = match &self.bind {
            Bind::Addrs(a) => a
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Bind::Unix(p) => p.display().to_string(),
            Bind::Sock(s, _) => format!("{s:?}"),
        };
        f.debug_struct("ServerBuilder")
            .field("bind", &bind)
            .field("error", &self.error)
            .field("backlog", &self.backlog)
            .field("reuse_address", &self.reuse_address)
            .field("reuse_port", &self.reuse_port)
            .field("family", &self.family)
            .field("keep_alive", &self.keep_alive)
            .field("start_serving", &self.start_serving)
            .field("max_connections", &self.max_connections)
            .field("unix_mode", &self.unix_mode)
            .finish()
    }
}

impl ServerBuilder {
    /// The `listen` backlog, which is also how many connections one
    /// readiness accepts (100). See the example on [`ServerBuilder`].
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// `SO_REUSEADDR` (on by default, as asyncio on POSIX). See the example
    /// on [`ServerBuilder`].
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT`: several loops (threads) may listen on one port. See
    /// the example on [`ServerBuilder`].
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Listen only on addresses of this family (asyncio's `family=`): an
    /// empty host or `*` then means every interface of that family only (one
    /// socket), and a host without such an address fails the future with
    /// `AddrNotAvailable`. Ignored for Unix servers and given sockets. See
    /// the example on [`ServerBuilder`].
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// `SO_KEEPALIVE` on every accepted connection (asyncio 3.13's
    /// `keep_alive=True`; off by default): set on the TCP listening
    /// sockets, including one given to
    /// [`create_server_from_socket`](LoopHandle::create_server_from_socket),
    /// and inherited by each socket they accept. Ignored for Unix servers.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    /// Whether to accept at once (true) or only after
    /// [`Server::start_serving`].
    pub fn start_serving(mut self, on: bool) -> Self {
        self.start_serving = on;
        self
    }

    /// Also listen on `addr` (any [`ToAddrs`]: asyncio's list of hosts).
    /// Addresses that several entries resolve to are bound once.
    ///
    /// The future fails with `InvalidInput` if `addr` is malformed, or if
    /// the server is not a TCP server made from addresses.
    pub fn also_bind(mut self, addr: impl ToAddrs) -> Self {
        match (&mut self.bind, addr.to_addrs()) {
            (Bind::Addrs(v), Ok(a)) => v.push(a),
            (_, Err(e)) => self.fail(e),
            (_, Ok(a)) => self.fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("also_bind({a}) needs a TCP server made from addresses"),
            )),
        }
        self
    }

    /// Keeps the first error, which the future fails with.
    fn fail(&mut self, e: io::Error) {
        self.error.get_or_insert(e);
    }

    /// At most this many connections open at once: accepting pauses at the
    /// cap and resumes as connections close. See the example on
    /// [`LoopHandle::create_unix_connection`].
    pub fn max_connections(mut self, cap: usize) -> Self {
        self.max_connections = Some(cap.max(1));
        self
    }

    /// The permission bits of a Unix server's socket file (e.g. `0o600`:
    /// only this user may connect). They are set after `bind` and before
    /// `listen`, so no connection is ever accepted under the wider mode
    /// that `bind` gives (R30). Ignored for TCP and abstract names. See the
    /// example on [`LoopHandle::create_unix_connection`].
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.unix_mode = Some(mode & 0o7777);
        self
    }

    /// TLS on every connection, with a rustls server configuration (see
    /// [`tls::server_config`](crate::tls::server_config)); the protocol's
    /// `connection_made` comes once its handshake is done. A connection
    /// whose handshake fails or times out is closed with no callback; the
    /// server goes on. See the [`tls`](crate::tls) module.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<crate::tls::rustls::ServerConfig>) -> Self {
        let cfg = crate::tls::TlsConfig::server(config);
        self.tls = Some(match self.tls.take() {
            Some(old) => cfg.timeouts_of(&old),
            None => cfg,
        });
        self
    }

    /// TLS with a full [`TlsConfig`](crate::tls::TlsConfig) (its timeouts
    /// included).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: crate::tls::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// What awaiting the builder runs.
    async fn create(self) -> io::Result<Server> {
        let ServerBuilder {
            lp,
            factory,
            bind,
            error,
            backlog,
            reuse_address,
            reuse_port,
            family,
            keep_alive,
            start_serving,
            max_connections,
            unix_mode,
            #[cfg(feature = "tls")]
            tls,
        } = self;
        #[cfg(feature = "tls")]
        let factory: Factory = match tls {
            None => factory,
            Some(cfg) => {
                let (lp, mut inner) = (lp.clone(), factory);
                Box::new(move || cfg.wrap_server(&lp, inner()))
            }
        };
        if let Some(e) = error {
            return Err(e);
        }
        let opts = ListenOptions {
            reuse_address,
            reuse_port,
            backlog,
            family,
            keep_alive,
        };
        let socks: Vec<Bound> = match bind {
            Bind::Addrs(addrs) => net::bind_tcp(addrs, opts)
                .await?
                .into_iter()
                .map(|s| (s, Kind::Tcp, None))
                .collect(),
            Bind::Unix(path) => {
                let (s, file) = net::bind_unix(&path, backlog, unix_mode)?;
                vec![(s, Kind::Unix, file)]
            }
            Bind::Sock(s, kind) => {
                s.set_nonblocking(true)?;
                if opts.keep_alive && kind == Kind::Tcp {
                    s.set_keepalive(true)?;
                }
                s.listen(backlog as i32)?;
                vec![(s, kind, None)]
            }
        };
        let inner = Rc::new(ServerInner {
            lp: lp.clone(),
            factory: RefCell::new(Some(factory)),
            listeners: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            serving: Cell::new(false),
            serving_forever: Cell::new(false),
            backlog,
            max_connections,
            clients: RefCell::new(Slab::new()),
            waiters: RefCell::new(Slab::new()),
        });
        for (s, kind, unix_file) in socks {
            let l = Listener::new(&lp, s, kind, unix_file);
            inner.listeners.borrow_mut().push(l);
        }
        let server = Server { inner };
        if start_serving {
            if let Err(e) = server.start_serving() {
                server.close();
                return Err(e.into());
            }
        }
        Ok(server)
    }
}

/// Awaiting the builder binds and creates the server.
impl IntoFuture for ServerBuilder {
    type Output = io::Result<Server>;
    type IntoFuture = LocalBoxFuture<'static, io::Result<Server>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.create())
    }
}

impl LoopHandle {
    /// Creates a TCP server on `addr`, calling `factory` for each
    /// connection (asyncio's `create_server`). `addr` is any [`ToAddrs`]:
    /// `"host:port"`, `(host, port)`, a [`SocketAddr`](std::net::SocketAddr)
    /// or a list of them; an empty host or `*` means every interface, IPv4
    /// and IPv6.
    ///
    /// Returns a [`ServerBuilder`]: chain asyncio's options on it, then
    /// `.await` it. It is [`IntoFuture`] rather than a function with a
    /// dozen arguments, so that the options read as names and the ones
    /// left out keep asyncio's defaults; nothing is bound until it is
    /// awaited. A host name (or a service name for the port) is resolved
    /// then, on a short-lived thread, because the system resolver blocks
    /// and the loop must not; numeric addresses skip the thread.
    ///
    /// ```
    /// use sloop::{EventLoop, Protocol};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let lp = EventLoop::new()?;
    /// let h = lp.handle();
    /// let server = lp.run_until_complete(async move {
    ///     h.create_server(|| Quiet, ("localhost", 0))
    ///         .backlog(1024)
    ///         .reuse_port(true)
    ///         .await
    /// })??;
    /// assert!(server.is_serving());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The future fails with `InvalidInput` for a malformed `addr`, a
    /// resolution error, the bind error ("error while attempting to bind
    /// on address ..."), or a poller error.
    pub fn create_server<F, P>(&self, mut factory: F, addr: impl ToAddrs) -> ServerBuilder
    where
        F: FnMut() -> P + 'static,
        P: IntoProtocol,
    {
        let (bind, error) = match addr.to_addrs() {
            Ok(a) => (Bind::Addrs(vec![a]), None),
            Err(e) => (Bind::Addrs(Vec::new()), Some(e)),
        };
        let mut b = self.server_builder(Box::new(move || factory().into_protocol()), bind);
        b.error = error;
        b
    }

    /// Creates a Unix stream server at `path`. A leftover socket file is
    /// replaced only if nothing listens on it; a live server's path and
    /// any other file are left alone. On close the file is removed if it
    /// is still the one this server bound. A path starting with a NUL byte
    /// is a Linux abstract name: no file, and no permission check at all
    /// (anyone on the host may connect). The socket file gets the mode the
    /// process umask allows, or the one given with
    /// [`unix_mode`](ServerBuilder::unix_mode).
    ///
    /// # Errors
    ///
    /// The future fails with `AddrInUse` ("Address '...' is already in
    /// use") if a live server or a non-socket file holds the path.
    pub fn create_unix_server<F, P>(&self, mut factory: F, path: impl AsRef<Path>) -> ServerBuilder
    where
        F: FnMut() -> P + 'static,
        P: IntoProtocol,
    {
        self.server_builder(
            Box::new(move || factory().into_protocol()),
            Bind::Unix(path.as_ref().to_path_buf()),
        )
    }

    /// Creates a server on an existing bound (or listening) stream socket,
    /// TCP or Unix (asyncio's `sock=`). `listen(backlog)` is called on it.
    ///
    /// ```
    /// use socket2::{Domain, Socket, Type};
    ///
    /// struct Quiet;
    /// impl sloop::Protocol for Quiet {}
    ///
    /// let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    /// sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>()?.into())?;
    /// let here = sock.local_addr()?.as_socket().unwrap();
    /// let lp = sloop::EventLoop::new()?;
    /// let server = lp.run_until_complete(lp.create_server_from_socket(|| Quiet, sock))??;
    /// assert_eq!(server.local_addrs(), [here]);
    /// server.close();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The future fails with `InvalidInput` ("A Stream Socket was
    /// expected") if `sock` is not a stream socket.
    pub fn create_server_from_socket<F, P>(&self, mut factory: F, sock: Socket) -> ServerBuilder
    where
        F: FnMut() -> P + 'static,
        P: IntoProtocol,
    {
        let kind = match sock.domain() {
            Ok(d) if d == Domain::UNIX => Kind::Unix,
            _ => Kind::Tcp,
        };
        let ok = sock.r#type().map(|t| t == Type::STREAM).unwrap_or(false);
        let mut b = self.server_builder(
            Box::new(move || factory().into_protocol()),
            Bind::Sock(sock, kind),
        );
        if !ok {
            b.fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "A Stream Socket was expected",
            ));
        }
        b
    }

    fn server_builder(&self, factory: Factory, bind: Bind) -> ServerBuilder {
        ServerBuilder {
            lp: self.clone(),
            factory,
            bind,
            error: None,
            backlog: DEFAULT_BACKLOG,
            reuse_address: true,
            reuse_port: false,
            family: None,
            keep_alive: false,
            start_serving: true,
            max_connections: None,
            unix_mode: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
