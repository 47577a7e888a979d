//! Serving on every loop of a group: servers bound with `SO_REUSEPORT` on
//! each loop, the same for async handlers and UDP endpoints, and the
//! round-robin acceptor; and what each loop does when the group shuts down.
//!
//! Each loop keeps what the group started on it in its [`Held`] (a
//! thread-local of the loop's thread, see the parent module): the group's
//! handles ([`GroupServer`], [`GroupEndpoint`]) are `Send` and name those
//! things by number, asking the loops to act on them.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{held, send_async, send_call, wait_call, LoopError, LoopGroup};
use crate::bridge::stream::TransportStream;
use crate::event_loop::{get_running_loop, Handle, LoopHandle, Remote};
use crate::protocol::IntoProtocol;
use crate::server::{Server, ServerBuilder};
use crate::transport::datagram::DatagramProtocol;
use crate::transport::datagram::DatagramTransport;
use crate::transport::Transport;

/// Numbers the servers and endpoints of every group.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A round-robin acceptor: the listening socket and its reader.
struct Acceptor {
    listener: Rc<TcpListener>,
    reader: Handle,
}

/// What the group started on one loop.
#[derive(Default)]
pub(super) struct Held {
    servers: RefCell<Vec<(u64, Server)>>,
    endpoints: RefCell<Vec<(u64, DatagramTransport)>>,
    acceptors: RefCell<Vec<(u64, Acceptor)>>,
    /// Connections a round-robin acceptor handed to this loop (pruned of
    /// finished ones as it grows).
    handed: RefCell<Vec<Transport>>,
    /// How long `handed` may grow before it is pruned.
    prune_at: Cell<usize>,
    /// Connections aborted at the shutdown's deadline.
    pub(super) aborted: Cell<usize>,
    /// Whether the shutdown ran.
    pub(super) shut_down: Cell<bool>,
}

impl Held {
    fn hand(&self, t: Transport) {
        let mut handed = self.handed.borrow_mut();
        if handed.len() >= self.prune_at.get().max(64) {
            handed.retain(|t| t.as_raw_fd().is_some());
            self.prune_at.set(handed.len() * 2);
        }
        handed.push(t);
    }

    fn handed_live(&self) -> usize {
        self.handed
            .borrow()
            .iter()
            .filter(|t| t.as_raw_fd().is_some())
            .count()
    }
}

/// A server of a [`LoopGroup`]: one listening socket per loop (or one
/// acceptor for all). `Send` and `Sync`; closing it closes every loop's
/// listener. The group's shutdown closes it too.
///
/// See the example on [`LoopGroup`].
#[derive(Debug, Clone)]
pub struct GroupServer {
    id: u64,
    addrs: Vec<SocketAddr>,
    remotes: Vec<Remote>,
}

impl GroupServer {
    /// The addresses the server listens on (with the ports the kernel
    /// chose for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting on every loop and closes the listening sockets;
    /// connections already accepted stay open. Returns once every loop has
    /// done it.
    ///
    /// ```
    /// use sloop::{Protocol, Transport};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// let server = group.start_server(|| Quiet, "127.0.0.1:0")?;
    /// assert_eq!(group.stats().total.listeners, 2);
    /// server.close();
    /// assert_eq!(group.stats().total.listeners, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&self) {
        let id = self.id;
        let pending: Vec<_> = self
            .remotes
            .iter()
            .map(|r| {
                send_call(r, move |lp| {
                    if let Some(held) = held() {
                        close_by_id(lp, &held, id);
                    }
                })
            })
            .collect();
        for p in pending {
            let _ = wait_call(p);
        }
    }
}

/// UDP endpoints of a [`LoopGroup`], one per loop on the same address
/// (`SO_REUSEPORT`: the kernel spreads the peers over them). Closed by
/// [`close`](GroupEndpoint::close) or the group's shutdown.
///
/// ```
/// use std::net::SocketAddr;
/// use sloop::{DatagramProtocol, DatagramTransport};
///
/// struct Echo(Option<DatagramTransport>);
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, t: &DatagramTransport) {
///         self.0 = Some(t.clone());
///     }
///     fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
///         let _ = self.0.as_ref().unwrap().sendto(data, Some(from));
///     }
/// }
///
/// let group = sloop::group::LoopGroup::new(2)?;
/// let udp = group.create_datagram_endpoint(|| Echo(None), "127.0.0.1:0")?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"ping", udp.local_addr())?;
/// let mut buf = [0; 8];
/// let n = client.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"ping");
/// assert_eq!(group.stats().total.transports.udp, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct GroupEndpoint {
    id: u64,
    addr: SocketAddr,
    remotes: Vec<Remote>,
}

impl GroupEndpoint {
    /// The address every loop's endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every loop's endpoint (once what it queued is sent).
    pub fn close(&self) {
        let server = GroupServer {
            id: self.id,
            addrs: Vec::new(),
            remotes: self.remotes.clone(),
        };
        server.close();
    }
}

/// Closes what `id` names on this loop.
fn close_by_id(lp: &LoopHandle, held: &Held, id: u64) {
    for s in take_id(&held.servers, id) {
        s.close();
    }
    for e in take_id(&held.endpoints, id) {
        e.close();
    }
    for a in take_id(&held.acceptors, id) {
        close_acceptor(lp, a);
    }
}

/// Takes the entries numbered `id` out of `v` (nothing stays borrowed).
fn take_id<T>(v: &RefCell<Vec<(u64, T)>>, id: u64) -> Vec<T> {
    let all = std::mem::take(&mut *v.borrow_mut());
    let (gone, kept): (Vec<_>, Vec<_>) = all.into_iter().partition(|(i, _)| *i == id);
    v.borrow_mut().extend(kept);
    gone.into_iter().map(|(_, t)| t).collect()
}

fn close_acceptor(lp: &LoopHandle, a: Acceptor) {
    a.reader.cancel();
    let _ = lp.remove_reader(&*a.listener);
}

fn resolve(addr: impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the address resolved to nothing",
        ));
    }
    Ok(addrs)
}

impl LoopGroup {
    /// Starts a TCP server on every loop, each listening on `addr` with
    /// `SO_REUSEPORT`, so the kernel spreads the connections over the
    /// loops; each connection stays on the loop that accepted it.
    /// `factory` makes each connection's protocol, on that connection's
    /// loop.
    ///
    /// `addr` is resolved here (it may name several addresses); port 0
    /// gets one port from the kernel, which every loop then shares. See the
    /// example on [`LoopGroup`].
    ///
    /// # Errors
    ///
    /// A bind or listen error from any loop (the loops that did bind close
    /// again), or [`LoopError::OnGroupThread`] as an `io::Error`.
    pub fn start_server<F, P>(
        &self,
        factory: F,
        addr: impl ToSocketAddrs,
    ) -> io::Result<GroupServer>
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: IntoProtocol,
    {
        self.start_server_with(factory, addr, |b| b)
    }

    /// [`start_server`](LoopGroup::start_server) with options: `configure`
    /// gets each loop's [`ServerBuilder`] (with `SO_REUSEPORT` on and a
    /// backlog of 1024 set) and returns it with its own options, such as
    /// [`backlog`](ServerBuilder::backlog),
    /// [`max_connections`](ServerBuilder::max_connections) (per loop) or
    /// [`keep_alive`](ServerBuilder::keep_alive).
    ///
    /// ```
    /// use sloop::{Protocol, Transport};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// let server =
    ///     group.start_server_with(|| Quiet, "127.0.0.1:0", |b| b.backlog(64).keep_alive(true))?;
    /// assert_eq!(server.local_addrs().len(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start_server`](LoopGroup::start_server).
    pub fn start_server_with<F, P, C>(
        &self,
        factory: F,
        addr: impl ToSocketAddrs,
        configure: C,
    ) -> io::Result<GroupServer>
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: IntoProtocol,
        C: Fn(ServerBuilder) -> ServerBuilder + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        self.start_on_each(addr, move |lp, addrs| {
            let f = factory.clone();
            configure(
                lp.create_server(move || f(), addrs)
                    .reuse_port(true)
                    .backlog(1024),
            )
        })
    }

    /// Like [`start_server`](LoopGroup::start_server), with an `async`
    /// handler per connection (the loop's
    /// [`start_server`](LoopHandle::start_server)): `handler(stream)` runs
    /// as a task on the connection's loop, so its future need not be
    /// `Send`.
    ///
    /// ```
    /// use futures::{AsyncReadExt, AsyncWriteExt};
    /// use std::io::{Read, Write};
    ///
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// let server = group.start_server_async(
    ///     |mut stream: sloop::TransportStream| async move {
    ///         let mut buf = [0; 64];
    ///         while let Ok(n @ 1..) = stream.read(&mut buf).await {
    ///             if stream.write_all(&buf[..n]).await.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     },
    ///     "127.0.0.1:0",
    /// )?;
    /// let mut client = std::net::TcpStream::connect(server.local_addrs()[0])?;
    /// client.write_all(b"hi")?;
    /// let mut back = [0; 2];
    /// client.read_exact(&mut back)?;
    /// assert_eq!(&back, b"hi");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start_server`](LoopGroup::start_server).
    pub fn start_server_async<H, Fut>(
        &self,
        handler: H,
        addr: impl ToSocketAddrs,
    ) -> io::Result<GroupServer>
    where
        H: Fn(TransportStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let handler = Arc::new(handler);
        self.start_on_each(addr, move |lp, addrs| {
            let h = handler.clone();
            lp.start_server(move |s| h(s), addrs)
                .reuse_port(true)
                .backlog(1024)
        })
    }

    /// Binds on loop 0 first (to learn the ports), then on the others.
    fn start_on_each<M>(&self, addr: impl ToSocketAddrs, make: M) -> io::Result<GroupServer>
    where
        M: Fn(&LoopHandle, Vec<SocketAddr>) -> ServerBuilder + Send + Sync + 'static,
    {
        if self.on_own_thread() {
            return Err(LoopError::OnGroupThread.into());
        }
        let addrs = resolve(addr)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let make = Arc::new(make);
        let start = |remote: &Remote, addrs: Vec<SocketAddr>| {
            let make = make.clone();
            send_async(remote, move |lp| {
                let builder = make(&lp, addrs);
                async move {
                    let server = builder.await?;
                    let bound = server.local_addrs();
                    if let Some(held) = held() {
                        held.servers.borrow_mut().push((id, server));
                    }
                    Ok(bound)
                }
            })
        };
        let remotes = self.remotes();
        let server = GroupServer {
            id,
            addrs: Vec::new(),
            remotes: remotes.clone(),
        };
        let bound = wait_call(start(&remotes[0], addrs))?;
        let pending: Vec<_> = remotes[1..]
            .iter()
            .map(|r| start(r, bound.clone()))
            .collect();
        for p in pending {
            if let Err(e) = wait_call(p) {
                server.close();
                return Err(e.into());
            }
        }
        Ok(GroupServer {
            addrs: bound,
            ..server
        })
    }

    /// A UDP endpoint on every loop, each bound to `addr` with
    /// `SO_REUSEPORT` (the kernel spreads datagrams by their source
    /// address, so a peer keeps talking to one loop). `factory` makes each
    /// loop's protocol. See the example on [`GroupEndpoint`].
    ///
    /// # Errors
    ///
    /// A bind error from any loop (the others close again).
    pub fn create_datagram_endpoint<F, P>(
        &self,
        factory: F,
        addr: impl ToSocketAddrs,
    ) -> io::Result<GroupEndpoint>
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: DatagramProtocol + 'static,
    {
        if self.on_own_thread() {
            return Err(LoopError::OnGroupThread.into());
        }
        let addr = resolve(addr)?[0];
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let factory = Arc::new(factory);
        let start = |remote: &Remote, addr: SocketAddr| {
            let f = factory.clone();
            send_async(remote, move |lp| {
                let builder = lp
                    .create_datagram_endpoint(move || f())
                    .local_addr(addr)
                    .reuse_port(true);
                async move {
                    let t = builder.await?;
                    let bound = t.local_addr().ok_or_else(|| io::Error::other("unbound"))?;
                    if let Some(held) = held() {
                        held.endpoints.borrow_mut().push((id, t));
                    }
                    Ok(bound)
                }
            })
        };
        let remotes = self.remotes();
        let endpoint = GroupEndpoint {
            id,
            addr,
            remotes: remotes.clone(),
        };
        let bound = wait_call(start(&remotes[0], addr))?;
        let pending: Vec<_> = remotes[1..].iter().map(|r| start(r, bound)).collect();
        for p in pending {
            if let Err(e) = wait_call(p) {
                endpoint.close();
                return Err(e.into());
            }
        }
        Ok(GroupEndpoint {
            addr: bound,
            ..endpoint
        })
    }

    /// Serves `listener` with one acceptor, on loop 0, which hands each
    /// accepted socket to the next loop in turn (through its [`Remote`];
    /// the loop adopts it with
    /// [`connect_accepted_socket`](LoopHandle::connect_accepted_socket)).
    /// For a listener made elsewhere (inherited, or with options of its
    /// own), or when the kernel's `SO_REUSEPORT` hashing spreads too few
    /// clients unevenly. The accepting loop does a little more work than
    /// the others.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use sloop::{Protocol, Transport};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: &Transport) {
    ///         t.write(b"hi").unwrap();
    ///         t.close();
    ///     }
    /// }
    ///
    /// let group = sloop::group::LoopGroup::new(2)?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let server = group.start_server_round_robin(|| Hello, listener)?;
    /// for _ in 0..4 {
    ///     let mut c = std::net::TcpStream::connect(server.local_addrs()[0])?;
    ///     let mut got = String::new();
    ///     c.read_to_string(&mut got)?;
    ///     assert_eq!(got, "hi");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// If the listener cannot be made non-blocking or polled, or loop 0
    /// has stopped.
    pub fn start_server_round_robin<F, P>(
        &self,
        factory: F,
        listener: TcpListener,
    ) -> io::Result<GroupServer>
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: IntoProtocol,
    {
        if self.on_own_thread() {
            return Err(LoopError::OnGroupThread.into());
        }
        listener.set_nonblocking(true)?;
        let addrs = vec![listener.local_addr()?];
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let remotes = self.remotes();
        let targets = remotes.clone();
        let factory = Arc::new(factory);
        let started = send_call(&remotes[0], move |lp| -> io::Result<()> {
            let listener = Rc::new(listener);
            let next = Cell::new(0usize);
            let l = listener.clone();
            let reader = lp.add_reader(&*listener, move || loop {
                match l.accept() {
                    Ok((sock, _)) => {
                        let i = next.get();
                        next.set((i + 1) % targets.len());
                        hand_over(&targets[i], factory.clone(), sock);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Out of fds or the like: try again at the next event.
                    Err(e) => {
                        log::warn!("round-robin acceptor: accept failed: {e}");
                        break;
                    }
                }
            })?;
            if let Some(held) = held() {
                held.acceptors
                    .borrow_mut()
                    .push((id, Acceptor { listener, reader }));
            }
            Ok(())
        });
        wait_call(started)??;
        Ok(GroupServer { id, addrs, remotes })
    }
}

/// Sends an accepted socket to the loop of `target`, which makes it a
/// transport there. A stopped loop drops it (the client sees a reset).
fn hand_over<F, P>(target: &Remote, factory: Arc<F>, sock: std::net::TcpStream)
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol,
{
    let _ = target.call_soon(move || {
        let Some(lp) = get_running_loop() else {
            return;
        };
        let connect = lp.connect_accepted_socket(move || factory(), sock.into());
        lp.spawn_local(async move {
            match connect.await {
                Ok(t) => {
                    if let Some(held) = held() {
                        held.hand(t);
                    }
                }
                Err(e) => log::debug!("round-robin acceptor: connection lost at once: {e}"),
            }
        })
        .detach();
    });
}

/// The group's shutdown, on one loop: close what the group started, wait
/// for the connections to end until `deadline`, abort the rest, stop.
pub(super) fn begin_shutdown(lp: &LoopHandle, held: Rc<Held>, deadline: Instant) {
    held.shut_down.set(true);
    for (_, a) in std::mem::take(&mut *held.acceptors.borrow_mut()) {
        close_acceptor(lp, a);
    }
    for (_, e) in std::mem::take(&mut *held.endpoints.borrow_mut()) {
        e.close();
    }
    let servers: Vec<Server> = std::mem::take(&mut *held.servers.borrow_mut())
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    for s in &servers {
        s.close();
    }
    let lp2 = lp.clone();
    lp.spawn_local(async move {
        let left = deadline.saturating_duration_since(Instant::now());
        let drained = async {
            for s in &servers {
                s.wait_closed().await;
            }
            // Handed-over connections have no server to wait on: look
            // again each millisecond until they are gone.
            while held.handed_live() > 0 {
                crate::bridge::time::sleep(Duration::from_millis(1)).await;
            }
        };
        if crate::bridge::time::timeout(left, drained).await.is_err() {
            let mut aborted = 0;
            for s in &servers {
                aborted += s.connection_count();
                s.abort_clients();
            }
            let handed: Vec<Transport> = held.handed.borrow().clone();
            for t in &handed {
                if t.as_raw_fd().is_some() {
                    aborted += 1;
                    t.abort();
                }
            }
            held.aborted.set(aborted);
        }
        lp2.stop();
    })
    .detach();
}
