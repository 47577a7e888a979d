//! The listening side of a server: each listening socket, the source the
//! loop holds for it while it serves, and the accept loop.
//!
//! On readiness a listener accepts up to `backlog` connections; if the
//! budget runs out it re-queues itself (the fd is edge-triggered, so
//! waiting for an event would strand the backlog). Each accepted socket
//! becomes a transport at once, in the accept callback (asyncio defers it
//! to a task, which lets a `close` slip in between: gh-109564).
//!
//! An error of one new connection (`ECONNABORTED`, and the pending network
//! errors accept(2) lists: `ENETDOWN`, `EPROTO`, `EHOSTUNREACH`, ...) is
//! skipped and the next connection accepted, as accept(2) asks (gh-127529).
//! On `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` the loop reports "socket.accept()
//! out of system resource" once, stops accepting, and retries after
//! [`ACCEPT_RETRY_DELAY`] — never a busy loop (gh-151615); any other error
//! is reported ("Error in accept") and backed off from the same way, so a
//! queued connection never waits for an edge that will not come. With
//! [`ServerBuilder::max_connections`](super::ServerBuilder::max_connections),
//! accepting pauses at the cap (the kernel's backlog holds the rest) and
//! resumes as connections close.
//!
//! While a listener serves, its registration holds the server: that is how
//! the loop owns a serving server (see [`Server`](super::Server)).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use socket2::{SockAddr, Socket};

use super::ServerInner;
use crate::error::Error;
use crate::event_loop::{IoKey, IoSource, LoopHandle, Readiness, TimerHandle};
use crate::exception::{panic_message, Exception, ExceptionContext};
use crate::net::SocketFile;
use crate::transport::socket::{Kind, SocketTransport};
use crate::transport::ConnectionGuard;

/// asyncio's `ACCEPT_RETRY_DELAY`: how long accepting stops after running
/// out of file descriptors or memory; then it resumes by itself. See the
/// example on [`Server`](crate::Server) for a server at work.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A listening socket of either family.
pub(super) enum ListenSock {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl AsFd for ListenSock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ListenSock::Tcp(l) => l.as_fd(),
            ListenSock::Unix(l) => l.as_fd(),
        }
    }
}

/// One listening socket of a server, with its registration and its
/// EMFILE back-off.
pub(super) struct Listener {
    lp: LoopHandle,
    me: Weak<Listener>,
    /// Shared so that [`lend`](Listener::lend) can keep the fd open while
    /// user code holds it; `None` once closed.
    sock: RefCell<Option<Rc<ListenSock>>>,
    key: Cell<Option<IoKey>>,
    /// Accepting is off for the EMFILE back-off.
    backoff: Cell<bool>,
    retry: RefCell<Option<TimerHandle>>,
    /// Unix: the socket file, removed on close if still ours.
    unix_file: Option<SocketFile>,
}

/// What the loop holds for a serving listener. It holds the server
/// strongly: a serving server belongs to the loop, as in asyncio, so it
/// serves on when every [`Server`](super::Server) handle is gone, until
/// [`Server::close`](super::Server::close) or the loop's close deregisters
/// it.
struct Serving {
    server: Rc<ServerInner>,
    listener: Rc<Listener>,
}

/// What the accept loop does after `accept` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptAction {
    /// The queue is empty: wait for the next readiness.
    Drained,
    /// Only this connection failed (it is gone from the queue): accept the
    /// next one.
    Retry,
    /// Out of fds or memory: report once, stop accepting, and try again
    /// after [`ACCEPT_RETRY_DELAY`].
    Backoff,
    /// Anything else (a bug, a broken listener): report it, and back off
    /// as for `Backoff`.
    Report,
}

/// The accept loop's answer to `accept` failing with `errno`.
fn accept_error_action(errno: i32) -> AcceptAction {
    match errno {
        libc::EAGAIN => AcceptAction::Drained,
        // accept(2): errors of the new connection alone (already pending
        // network errors, a firewall's refusal) are to be retried.
        libc::EINTR
        | libc::ECONNABORTED
        | libc::ENETDOWN
        | libc::EPROTO
        | libc::ENOPROTOOPT
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::EHOSTUNREACH
        | libc::EOPNOTSUPP
        | libc::ENETUNREACH
        | libc::EPERM
        | libc::ETIMEDOUT => AcceptAction::Retry,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => AcceptAction::Backoff,
        _ => AcceptAction::Report,
    }
}

impl Listener {
    /// A listener on `sock`, a bound and listening socket of `kind`.
    pub(super) fn new(
        lp: &LoopHandle,
        sock: Socket,
        kind: Kind,
        unix_file: Option<SocketFile>,
    ) -> Rc<Listener> {
        let fd = OwnedFd::from(sock);
        let sock = match kind {
            Kind::Tcp => ListenSock::Tcp(mio::net::TcpListener::from(fd)),
            Kind::Unix => ListenSock::Unix(mio::net::UnixListener::from(fd)),
        };
        Rc::new_cyclic(|me| Listener {
            lp: lp.clone(),
            me: me.clone(),
            sock: RefCell::new(Some(Rc::new(sock))),
            key: Cell::new(None),
            backoff: Cell::new(false),
            retry: RefCell::new(None),
            unix_file,
        })
    }

    /// Registers with the loop, which then holds `server` (see the module
    /// docs), and accepts what already waits in the backlog.
    pub(super) fn start(self: &Rc<Self>, server: &Rc<ServerInner>) -> Result<(), Error> {
        let Some(fd) = self.fd() else {
            return Ok(()); // closed
        };
        let source = Rc::new(Serving {
            server: server.clone(),
            listener: self.clone(),
        });
        let key = self.lp.register_source(fd, source)?;
        self.key.set(Some(key));
        // A listener only ever reads.
        self.lp.reregister_source(key, mio::Interest::READABLE)?;
        // Connections may already wait in the backlog.
        self.schedule();
        Ok(())
    }

    pub(super) fn schedule(&self) {
        if let Some(key) = self.key.get() {
            self.lp.schedule_io(key, Readiness::READABLE);
        }
    }

    fn accept(&self) -> io::Result<(Socket, Kind)> {
        match self.sock.borrow().as_deref() {
            Some(ListenSock::Tcp(l)) => {
                let (s, _) = l.accept()?;
                Ok((Socket::from(OwnedFd::from(s)), Kind::Tcp))
            }
            Some(ListenSock::Unix(l)) => {
                let (s, _) = l.accept()?;
                Ok((Socket::from(OwnedFd::from(s)), Kind::Unix))
            }
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        }
    }

    fn accept_loop(&self, server: &Rc<ServerInner>) {
        for _ in 0..server.backlog.max(1) {
            if server.closed.get() || !server.serving.get() || self.backoff.get() {
                return;
            }
            if server.at_cap() {
                return; // resumed by connection_gone
            }
            match self.accept() {
                Ok((sock, kind)) => server.new_connection(sock, kind),
                Err(e) => match accept_error_action(e.raw_os_error().unwrap_or(0)) {
                    AcceptAction::Drained => return,
                    AcceptAction::Retry => continue,
                    AcceptAction::Backoff => {
                        return self.back_off("socket.accept() out of system resource", e);
                    }
                    AcceptAction::Report => return self.back_off("Error in accept", e),
                },
            }
        }
        // Budget spent with more possibly waiting: come back next iteration.
        self.schedule();
    }

    /// Reports `e`, stops accepting, and accepts again after
    /// [`ACCEPT_RETRY_DELAY`]: never a busy loop, and never a backlog left
    /// waiting for an edge.
    fn back_off(&self, message: &str, e: io::Error) {
        self.lp.call_exception_handler(
            ExceptionContext::new(message)
                .with_exception(Exception::Io(e))
                .with_socket(self.describe()),
        );
        self.backoff.set(true);
        let me = self.me.clone();
        let timer = self.lp.call_later(ACCEPT_RETRY_DELAY, move || {
            if let Some(me) = me.upgrade() {
                me.backoff.set(false);
                me.retry.borrow_mut().take();
                me.schedule();
            }
        });
        *self.retry.borrow_mut() = timer.ok();
    }

    /// Deregisters and closes the socket, and removes a Unix socket file
    /// that is still ours. Idempotent.
    pub(super) fn close(&self) {
        if let Some(t) = self.retry.borrow_mut().take() {
            t.cancel();
        }
        if let Some(key) = self.key.take() {
            self.lp.deregister_source(key);
        }
        // The fd closes here, or when the last lent clone is dropped.
        let Some(sock) = self.sock.borrow_mut().take() else {
            return;
        };
        drop(sock);
        if let Some(file) = &self.unix_file {
            file.remove_if_ours();
        }
    }

    /// A shared clone of the socket, for user code to borrow
    /// ([`Server::with_sockets`](super::Server::with_sockets)): a close
    /// meanwhile closes the fd once the clone is dropped, so the fd the
    /// user code sees is never closed (or reused) under it.
    pub(super) fn lend(&self) -> Option<Rc<ListenSock>> {
        self.sock.borrow().clone()
    }

    pub(super) fn local_addr(&self) -> Option<SockAddr> {
        match self.sock.borrow().as_deref() {
            Some(ListenSock::Tcp(l)) => l.local_addr().ok().map(SockAddr::from),
            Some(ListenSock::Unix(l)) => {
                let a = l.local_addr().ok()?;
                SockAddr::unix(a.as_pathname()?).ok()
            }
            None => None,
        }
    }

    fn describe(&self) -> String {
        format!("<listening socket fd={:?}>", self.fd())
    }

    pub(super) fn fd(&self) -> Option<i32> {
        match self.sock.borrow().as_deref() {
            Some(ListenSock::Tcp(l)) => Some(l.as_raw_fd()),
            Some(ListenSock::Unix(l)) => Some(l.as_raw_fd()),
            None => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // A server that never served, dropped: nobody can start it now.
        self.close();
    }
}

impl IoSource for Serving {
    fn ready(&self, readiness: Readiness) {
        if readiness.is_readable() {
            self.listener.accept_loop(&self.server);
        }
    }

    fn is_closing(&self) -> bool {
        self.listener.sock.borrow().is_none()
    }

    fn describe(&self) -> String {
        self.listener.describe()
    }

    fn tally(&self) -> Option<crate::event_loop::SourceTally> {
        Some(crate::event_loop::SourceTally::Listener {
            server: Rc::as_ptr(&self.server).cast(),
        })
    }

    fn loop_closed(&self) {
        self.server.close();
    }
}

impl ServerInner {
    /// Makes a transport of an accepted socket, with a protocol from the
    /// factory and a link to this server.
    fn new_connection(self: &Rc<Self>, sock: Socket, kind: Kind) {
        let Some(mut factory) = self.factory.borrow_mut().take() else {
            return; // the factory is running (it accepted re-entrantly?)
        };
        let made = self.lp.catch_user(&mut factory);
        if self.closed.get() {
            // Closed from inside the factory: the factory goes now, since
            // it may hold a handle of this server (an Rc cycle otherwise).
            drop(factory);
        } else {
            *self.factory.borrow_mut() = Some(factory);
        }
        let protocol = match made {
            Ok(p) => p,
            Err(payload) => {
                // gh-155934: report always and close the socket (dropped).
                let msg = panic_message(&*payload);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Error on transport creation for incoming connection")
                        .with_exception(Exception::Panic(msg)),
                );
                return;
            }
        };
        let slot = self.clients.borrow_mut().insert(Weak::new());
        let guard = ConnectionGuard::new(self.clone(), slot);
        match SocketTransport::create(&self.lp, sock, kind, protocol, Some(guard)) {
            Ok((rc, _started)) => {
                if let Some(w) = self.clients.borrow_mut().get_mut(slot) {
                    *w = Rc::downgrade(&rc);
                }
            }
            Err((e, link)) => {
                drop(link);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Error on transport creation for incoming connection")
                        .with_exception(Exception::Other(Box::new(io::Error::from(e)))),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{accept_error_action, AcceptAction};

    #[test]
    fn accept_errors_of_one_connection_are_retried() {
        // accept(2): pending network errors of the new socket come back
        // from accept; treat them like EAGAIN and accept again, or the rest
        // of the queue waits for an edge that may never come.
        for errno in [
            libc::EINTR,
            libc::ECONNABORTED,
            libc::ENETDOWN,
            libc::EPROTO,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
            libc::EPERM,
            libc::ETIMEDOUT,
        ] {
            assert_eq!(
                accept_error_action(errno),
                AcceptAction::Retry,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn accept_errors_are_classified() {
        assert_eq!(accept_error_action(libc::EAGAIN), AcceptAction::Drained);
        assert_eq!(
            accept_error_action(libc::EWOULDBLOCK),
            AcceptAction::Drained
        );
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(
                accept_error_action(errno),
                AcceptAction::Backoff,
                "errno {errno}"
            );
        }
        for errno in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EFAULT, 0] {
            assert_eq!(
                accept_error_action(errno),
                AcceptAction::Report,
                "errno {errno}"
            );
        }
    }
}
