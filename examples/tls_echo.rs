//! A TLS echo server: the callback-style echo of `echo_protocol`, over TLS.
//!
//! ```text
//! tls_echo ADDR [CERT.pem KEY.pem]
//! ```
//!
//! With a PEM certificate chain and key, it serves them; without, it makes
//! a self-signed certificate for `localhost` at start (with rcgen) and
//! prints its SHA-256 fingerprint. It prints `listening on ADDR` once
//! ready and runs until killed. Try it with
//! `openssl s_client -connect 127.0.0.1:8443 -quiet`.
//!
//! The protocol is the plain echo: TLS is the server's option
//! (`create_server(..).tls(config)`); the protocol only sees plaintext and
//! a [`Transport`] with the usual API (flow control included).

use sloop::tls::rustls;
use sloop::{EventLoop, Protocol, Transport};

/// Echoes; stops reading while the peer does not read (flow control).
struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, t: &Transport) {
        self.0 = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        let _ = self.0.as_ref().expect("connected").write(data);
    }
    fn pause_writing(&mut self) {
        self.0.as_ref().expect("connected").pause_reading();
    }
    fn resume_writing(&mut self) {
        self.0.as_ref().expect("connected").resume_reading();
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.0 = None;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().cloned().unwrap_or("127.0.0.1:8443".into());
    let (chain, key) = match (args.get(1), args.get(2)) {
        (Some(cert), Some(key)) => sloop::tls::load_pem_files(cert, key)?,
        (None, None) => {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
            let der = made.cert.der().clone();
            let digest = ring_digest(der.as_ref());
            println!("self-signed certificate for localhost, SHA-256 {digest}");
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
            (vec![der], key)
        }
        _ => return Err("usage: tls_echo ADDR [CERT.pem KEY.pem]".into()),
    };
    let config = sloop::tls::server_config(chain, key)?;
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(
        lp.create_server(|| Echo(None), &addr)
            .backlog(1024)
            .tls(config),
    )??;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    lp.run_forever()?;
    Ok(())
}

/// The certificate's SHA-256 fingerprint, as `AB:CD:...` (openssl's form).
fn ring_digest(der: &[u8]) -> String {
    let hash = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider
        .hash(der);
    hash.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
