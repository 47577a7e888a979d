//! Certificates for the TLS tests, made at test time with rcgen: a CA, a
//! leaf for "localhost" (and 127.0.0.1) signed by it, an expired leaf, and
//! a second CA nobody trusts. PEM files for the outside peers (openssl,
//! Python, curl) are written to a temp dir on demand.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sloop::tls::rustls;
use sloop::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct Pki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub leaf_pem: String,
    pub leaf_der: CertificateDer<'static>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
    pub expired_der: CertificateDer<'static>,
    pub expired_key_der: Vec<u8>,
    pub rogue_der: CertificateDer<'static>,
    pub rogue_key_der: Vec<u8>,
    pub dir: tempfile::TempDir,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    let key = KeyPair::generate().unwrap();
    (p.self_signed(&key).unwrap(), key)
}

fn leaf(
    names: &[&str],
    issuer: &(rcgen::Certificate, KeyPair),
    expired: bool,
) -> (rcgen::Certificate, KeyPair) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    if expired {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    (p.signed_by(&key, &issuer.0, &issuer.1).unwrap(), key)
}

impl Pki {
    pub fn new() -> Pki {
        let root = ca("sloop test CA");
        let (cert, key) = leaf(&["localhost", "127.0.0.1"], &root, false);
        let (expired, expired_key) = leaf(&["localhost"], &root, true);
        let rogue_ca = ca("rogue CA");
        let (rogue, rogue_key) = leaf(&["localhost"], &rogue_ca, false);
        Pki {
            ca_pem: root.0.pem(),
            ca_der: root.0.der().clone(),
            leaf_pem: cert.pem(),
            leaf_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            expired_der: expired.der().clone(),
            expired_key_der: expired_key.serialize_der(),
            rogue_der: rogue.der().clone(),
            rogue_key_der: rogue_key.serialize_der(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The server's configuration with `alpn` protocols.
    pub fn server_with_alpn(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut c = sloop::tls::server_config_builder(
            vec![self.leaf_der.clone()],
            PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
        )
        .unwrap();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        self.server_with_alpn(&[])
    }

    pub fn expired_server(&self) -> Arc<rustls::ServerConfig> {
        sloop::tls::server_config(
            vec![self.expired_der.clone()],
            PrivateKeyDer::Pkcs8(self.expired_key_der.clone().into()),
        )
        .unwrap()
    }

    pub fn rogue_server(&self) -> Arc<rustls::ServerConfig> {
        sloop::tls::server_config(
            vec![self.rogue_der.clone()],
            PrivateKeyDer::Pkcs8(self.rogue_key_der.clone().into()),
        )
        .unwrap()
    }

    /// A client trusting the test CA.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        sloop::tls::client_config_with_roots(roots)
    }

    pub fn client_with_alpn(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut c = (*self.client()).clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    /// Writes the CA, the leaf and its key as PEM files: (ca, cert, key).
    pub fn pem_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let ca = self.dir.path().join("ca.pem");
        let cert = self.dir.path().join("cert.pem");
        let key = self.dir.path().join("key.pem");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        std::fs::write(&cert, &self.leaf_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (ca, cert, key)
    }
}
