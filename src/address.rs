//! [`Address`]: the address of one end of a stream connection, below
//! every other module (transports give it, and so do the loop's reports
//! about them, [`TransportInfo`](crate::TransportInfo)).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The address of one end of a stream connection. See the example on
/// [`Transport::local_addr`](crate::Transport::local_addr).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix socket: its path, or `None` for an unnamed (or abstract)
    /// socket.
    Unix(Option<PathBuf>),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(Some(p)) => write!(f, "{}", p.display()),
            Address::Unix(None) => f.write_str(""),
        }
    }
}

impl Address {
    pub(crate) fn from_sockaddr(a: &socket2::SockAddr) -> Option<Address> {
        if let Some(inet) = a.as_socket() {
            return Some(Address::Inet(inet));
        }
        if a.is_unix() {
            return Some(Address::Unix(a.as_pathname().map(|p| p.to_path_buf())));
        }
        None
    }
}
