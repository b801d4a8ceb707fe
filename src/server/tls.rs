//! TLS terminated by the server itself: a certificate chain and its private key read from PEM
//! files, served through rustls, and read again on SIGHUP so that a renewed certificate takes
//! effect without a restart (connections already open keep theirs).
//!
//! Invariant: the server always has a certificate that loaded whole and whose key matches it; a
//! reload that fails (a file half-written by a renewal tool, a key of another certificate)
//! keeps the one in use and says why.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a certificate or its key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read, or holds no PEM certificate.
    #[error("certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
    /// The key file cannot be read, holds no PEM private key, or a kind rustls cannot sign with.
    #[error("private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    /// The private key is not the certificate's.
    #[error("private key {key} does not belong to the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the configuration (no protocol version the provider supports).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate in use, replaced whole on reload.
#[derive(Debug)]
pub struct CertificateStore {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateStore {
    /// Loads the certificate chain and key, checking that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertificateStore>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = load_pair(&provider, cert, key)?;
        Ok(Arc::new(CertificateStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads the files again and, when they load whole, serves them to new connections.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_pair(&self.provider, &self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// The rustls configuration that serves whatever certificate is current (HTTP/1.1 and h2).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips the certificate, so a client could go
        // on with the one a reload replaced (after a key compromise, say). A deployment checks
        // in once a day at most, so a full handshake each time costs nothing worth keeping.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn load_pair(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |message: String| TlsError::Certificate { path: cert.to_owned(), message };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into()));
    }
    let key_error = |message: String| TlsError::Key { path: key.to_owned(), message };
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| key_error(e.to_string()))?;
    let signing = provider.key_provider.load_private_key(der).map_err(|e| key_error(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(TlsError::Mismatch { cert: cert.to_owned(), key: key.to_owned() })
        }
        // The key's public half could not be derived to compare (an unusual key type): the
        // handshake would fail with it, so it is refused as well.
        Err(e) => Err(key_error(e.to_string())),
    }
}
