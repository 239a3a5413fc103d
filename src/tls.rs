//! Native TLS with rustls, for deployments without a TLS-terminating proxy.
//! Callbacks carry a bearer-like signature, so they should travel over HTTPS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// Native TLS: the `server.tls` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain could not be read.
    #[error("server.tls.cert_path `{path}`: {reason}")]
    Certificate {
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The private key could not be read.
    #[error("server.tls.key_path `{path}`: {reason}")]
    Key {
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificate and key do not form a usable configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Builds the TLS acceptor from PEM files (certificate chain, then private key).
pub fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let certificate_error = |reason: String| TlsError::Certificate {
        path: shown(&settings.cert_path),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(&settings.cert_path)
        .map_err(|err| certificate_error(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| certificate_error(err.to_string()))?;
    if certificates.is_empty() {
        return Err(certificate_error("no PEM certificate found".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_path).map_err(|err| TlsError::Key {
        path: shown(&settings.key_path),
        reason: err.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|err| TlsError::Config(err.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
