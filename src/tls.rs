//! TLS: configurations and the upgrade of a live connection (asyncio's
//! `ssl=` arguments and `loop.start_tls`), on rustls with the ring
//! provider. Enabled by the `tls` cargo feature (on by default).
//!
//! - A server: [`ServerBuilder::tls`](crate::ServerBuilder::tls) with a
//!   rustls [`ServerConfig`].
//! - A client: [`Connect::tls`](crate::Connect::tls) with a rustls
//!   [`ClientConfig`] and the server name to verify;
//!   [`client_config`] gives one that trusts the platform's certificate
//!   store. Verification is always on unless the configuration says
//!   otherwise ([`danger::no_verification`]); an empty or malformed server
//!   name is refused ([`Error::InvalidServerName`]).
//! - STARTTLS: [`LoopHandle::start_tls`] upgrades a live plain connection.
//!
//! The protocol's [`Transport`] is then a TLS transport with the same API:
//! `connection_made` comes once the handshake is done, `close` sends
//! close_notify, [`Transport::tls_info`] tells the version, cipher suite,
//! ALPN protocol, server name and the peer's certificates. A handshake
//! that fails or takes longer than its timeout (60 s unless set) fails the
//! connect future with a typed error ([`Error::Tls`] with rustls's reason,
//! [`Error::TlsHandshakeTimeout`]); a server just drops that connection
//! and goes on serving. The bridge works unchanged on top:
//! `open_connection(..).tls(..)` gives a TLS
//! [`TransportStream`](crate::TransportStream).
//!
//! ```
//! use sloop::tls::rustls;
//! use sloop::EventLoop;
//!
//! // A certificate for "localhost" (tests and examples make one with rcgen).
//! # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! # let (cert_der, key_der) = (cert.cert.der().clone(), cert.key_pair.serialize_der());
//! let server_config = sloop::tls::server_config(
//!     vec![cert_der.clone()],
//!     rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
//! )?;
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(cert_der)?;
//! let client_config = sloop::tls::client_config_with_roots(roots);
//!
//! let lp = EventLoop::new()?;
//! let server = lp.run_until_complete(
//!     lp.start_server(|mut s: sloop::TransportStream| async move {
//!         use futures::{AsyncReadExt, AsyncWriteExt};
//!         let mut buf = [0; 5];
//!         if s.read_exact(&mut buf).await.is_ok() {
//!             let _ = s.write_all(&buf).await;
//!         }
//!     }, "127.0.0.1:0").tls(server_config),
//! )??;
//! let addr = server.local_addrs()[0];
//! let got = lp.run_until_complete(async move {
//!     use futures::{AsyncReadExt, AsyncWriteExt};
//!     let mut s = sloop::get_running_loop().unwrap()
//!         .open_connection(addr).tls(client_config, "localhost").await?;
//!     let info = s.transport().tls_info().unwrap();
//!     assert_eq!(info.server_name.as_deref(), Some("localhost"));
//!     s.write_all(b"hello").await?;
//!     let mut buf = [0; 5];
//!     s.read_exact(&mut buf).await?;
//!     Ok::<_, std::io::Error>(buf)
//! })??;
//! assert_eq!(&got, b"hello");
//! server.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

pub use rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::Error;
use crate::event_loop::LoopHandle;
use crate::protocol::{AnyProtocol, IntoProtocol, Protocol};
use crate::transport::tls::{Layer, TlsTransport};
use crate::transport::{EmptyWaiter, Transport};

pub use crate::transport::TlsInfo;

/// asyncio's default TLS handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// asyncio's default TLS shutdown timeout.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The ring provider, which every configuration the crate makes uses.
// ring without post-quantum key exchange (rustls marks it deprecated for
// that); the issue asks for ring so that no C toolchain beyond cc is needed.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts the platform's certificate store
/// (loaded once per process, with `rustls-native-certs`), TLS 1.2 and 1.3,
/// ALPN unset. Clone it and set `alpn_protocols` for HTTP/2.
///
/// # Errors
///
/// `NotFound` if the platform store has no usable certificate.
pub fn client_config() -> io::Result<Arc<ClientConfig>> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            return Err(format!(
                "no usable certificate in the platform's trust store ({})",
                why.join("; ")
            ));
        }
        Ok(roots)
    });
    match roots {
        Ok(r) => Ok(client_config_with_roots(r.clone())),
        Err(e) => Err(io::Error::new(io::ErrorKind::NotFound, e.clone())),
    }
}

/// A client configuration that trusts `roots` (a private CA, a test
/// certificate). See the example in the [module docs](self).
pub fn client_config_with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A server configuration with one certificate chain and its key, TLS 1.2
/// and 1.3, no client authentication. Set `alpn_protocols` on it (through
/// `Arc::get_mut` or before wrapping) for HTTP/2. See the example in the
/// [module docs](self).
///
/// # Errors
///
/// [`Error::Tls`] if the key does not fit the certificate or is of an
/// unsupported kind.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    server_config_builder(chain, key).map(Arc::new)
}

/// As [`server_config`], unwrapped, to set more fields (ALPN).
///
/// # Errors
///
/// As [`server_config`].
pub fn server_config_builder(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, Error> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| crate::transport::tls::tls_error(&e))
}

/// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1) from files, for [`server_config`].
///
/// # Errors
///
/// `InvalidData` if a file holds no certificate or no key, or is not PEM;
/// the file's own I/O error otherwise.
pub fn load_pem_files(
    cert_chain: impl AsRef<std::path::Path>,
    key: impl AsRef<std::path::Path>,
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    use rustls::pki_types::pem::PemObject;
    let bad = |what: &str, e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}")),
    };
    let chain = CertificateDer::pem_file_iter(cert_chain.as_ref())
        .map_err(|e| bad("certificate file", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate file", e))?;
    if chain.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no certificate in the certificate file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key.as_ref()).map_err(|e| bad("key file", e))?;
    Ok((chain, key))
}

/// Configurations that turn off what keeps TLS safe; their names say so.
pub mod danger {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::UnixTime;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts any certificate for any name: for tests against a server
    /// whose certificate cannot be known. The server name is still
    /// required (it is sent as SNI).
    #[derive(Debug)]
    struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAnything {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A client configuration that verifies nothing: any certificate, any
    /// name, any issuer. Never for production.
    ///
    /// ```
    /// let config = sloop::tls::danger::no_verification();
    /// assert!(config.alpn_protocols.is_empty());
    /// ```
    pub fn no_verification() -> Arc<ClientConfig> {
        let p = provider();
        Arc::new(
            ClientConfig::builder_with_provider(p.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(p)))
                .with_no_client_auth(),
        )
    }
}

/// One side of a TLS session and its timeouts: what the builders'
/// `.tls(..)` and [`LoopHandle::start_tls`] take.
#[derive(Clone)]
pub struct TlsConfig {
    side: Side,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
}

#[derive(Clone)]
enum Side {
    Client(Arc<ClientConfig>, String),
    Server(Arc<ServerConfig>),
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match &self.side {
            Side::Client(_, name) => format!("client of {name:?}"),
            Side::Server(_) => "server".to_owned(),
        };
        f.debug_struct("TlsConfig")
            .field("side", &side)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl TlsConfig {
    /// The client side, verifying the server as `server_name` (a DNS name
    /// or an IP address).
    ///
    /// ```
    /// let c = sloop::tls::TlsConfig::client(sloop::tls::danger::no_verification(), "localhost")
    ///     .handshake_timeout(std::time::Duration::from_secs(5))
    ///     .shutdown_timeout(std::time::Duration::from_secs(1));
    /// assert!(format!("{c:?}").contains("localhost"));
    /// ```
    pub fn client(config: Arc<ClientConfig>, server_name: impl Into<String>) -> TlsConfig {
        TlsConfig::new(Side::Client(config, server_name.into()))
    }

    /// The server side.
    pub fn server(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig::new(Side::Server(config))
    }

    fn new(side: Side) -> TlsConfig {
        TlsConfig {
            side,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// How long the handshake may take (asyncio's `ssl_handshake_timeout`,
    /// 60 s by default); then the connection is aborted with
    /// [`Error::TlsHandshakeTimeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsConfig {
        self.handshake_timeout = timeout;
        self
    }

    /// How long `close` waits for the close_notify and what is buffered
    /// to go out (asyncio's `ssl_shutdown_timeout`, 30 s by default); then
    /// the connection is aborted.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> TlsConfig {
        self.shutdown_timeout = timeout;
        self
    }

    /// `self` with `other`'s timeouts.
    pub(crate) fn timeouts_of(mut self, other: &TlsConfig) -> TlsConfig {
        self.handshake_timeout = other.handshake_timeout;
        self.shutdown_timeout = other.shutdown_timeout;
        self
    }

    /// The TLS transport for `protocol`, its layer for the plain
    /// transport, and the waiter for the end of the handshake.
    pub(crate) fn wrap(
        &self,
        lp: &LoopHandle,
        protocol: AnyProtocol,
    ) -> Result<(Rc<TlsTransport>, Layer, EmptyWaiter), Error> {
        let (conn, name) = match &self.side {
            Side::Client(config, name) => {
                let server_name = ServerName::try_from(name.as_str())
                    .map_err(|_| Error::InvalidServerName { name: name.clone() })?
                    .to_owned();
                let c = rustls::ClientConnection::new(config.clone(), server_name)
                    .map_err(|e| crate::transport::tls::tls_error(&e))?;
                (rustls::Connection::Client(c), Some(name.clone()))
            }
            Side::Server(config) => {
                let c = rustls::ServerConnection::new(config.clone())
                    .map_err(|e| crate::transport::tls::tls_error(&e))?;
                (rustls::Connection::Server(c), None)
            }
        };
        Ok(TlsTransport::create(
            lp,
            conn,
            protocol,
            name,
            self.handshake_timeout,
            self.shutdown_timeout,
        ))
    }

    /// A server's per-connection wrapping of its factory's protocol: the
    /// layer to install on the accepted socket.
    pub(crate) fn wrap_server(&self, lp: &LoopHandle, protocol: AnyProtocol) -> AnyProtocol {
        match self.wrap(lp, protocol) {
            Ok((_, layer, _)) => layer.into_protocol(),
            Err(e) => {
                log::error!("cannot start a TLS session: {e}");
                Refuse.into_protocol()
            }
        }
    }
}

/// The protocol of an accepted connection whose TLS session could not be
/// made: it closes at once.
struct Refuse;

impl Protocol for Refuse {
    fn connection_made(&mut self, t: &Transport) {
        t.abort();
    }
}

/// Waits for the handshake of a TLS transport; dropped first, it aborts
/// the connection (the protocol gets no callback if `connection_made` has
/// not run, else `connection_lost`).
pub(crate) struct Handshake {
    transport: Option<Transport>,
    started: EmptyWaiter,
}

impl Handshake {
    pub(crate) fn new(tls: Rc<TlsTransport>, started: EmptyWaiter) -> Handshake {
        Handshake {
            transport: Some(Transport::from_tls(tls)),
            started,
        }
    }
}

impl Future for Handshake {
    type Output = io::Result<Transport>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.started).poll(cx) {
            Poll::Pending => Poll::Pending,
            // Polled again after it gave the transport away: nothing more
            // to give.
            Poll::Ready(Ok(())) => Poll::Ready(
                self.transport
                    .take()
                    .ok_or_else(|| Error::ConnectionLost.into()),
            ),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if let Some(t) = self.transport.take() {
            t.abort();
        }
    }
}

/// The future of [`LoopHandle::start_tls`]: the TLS transport once the
/// handshake is done.
///
/// # Cancel safety
///
/// Dropping it before the handshake finished aborts the connection; the
/// protocol gets no callback.
#[must_use = "the TLS transport is given by awaiting it"]
pub struct StartTls(Pin<Box<dyn Future<Output = io::Result<Transport>>>>);

impl fmt::Debug for StartTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StartTls")
    }
}

impl Future for StartTls {
    type Output = io::Result<Transport>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl LoopHandle {
    /// Upgrades a live plain connection to TLS (asyncio's `start_tls`,
    /// STARTTLS): from this call on, what arrives on `transport` is TLS,
    /// and `protocol` is the protocol of the new TLS transport, which the
    /// future gives once the handshake is done (`protocol` gets
    /// `connection_made` with it then). `transport`'s old protocol is
    /// replaced at once (dropped after its running callback returns).
    ///
    /// `received`: bytes the old protocol read past the point of the
    /// upgrade (a ClientHello pipelined behind "STARTTLS\r\n"); they are
    /// fed to TLS first, so nothing that arrived before, during or right
    /// after the upgrade is lost or seen twice.
    ///
    /// # Errors
    ///
    /// The future fails with [`Error::ConnectionLost`] if `transport` is
    /// closing, [`Error::InvalidServerName`], or the handshake's error.
    pub fn start_tls(
        &self,
        transport: &Transport,
        protocol: impl IntoProtocol,
        tls: TlsConfig,
        received: &[u8],
    ) -> StartTls {
        if transport.is_closing() {
            return StartTls(Box::pin(async { Err(Error::ConnectionLost.into()) }));
        }
        let (rc, layer, started) = match tls.wrap(self, protocol.into_protocol()) {
            Ok(x) => x,
            Err(e) => return StartTls(Box::pin(async move { Err(e.into()) })),
        };
        transport.set_protocol(layer);
        rc.attach(transport.clone());
        rc.feed_received(received);
        StartTls(Box::pin(Handshake::new(rc, started)))
    }
}
