//! TLS to PostgreSQL, through rustls (ring) as everywhere else in
//! recordhook, with libpq's `sslmode`s:
//!
//! - `disable`: never TLS.
//! - `prefer` (the default): TLS when the server offers it, plain when it
//!   refuses; the certificate is not checked unless `sslrootcert` is given.
//! - `require`: TLS or no connection; the certificate is not checked unless
//!   `sslrootcert` is given (then it is `verify-ca`, as libpq does).
//! - `verify-ca`: TLS, the server's chain must lead to a trusted CA; its
//!   host name is not checked.
//! - `verify-full`: `verify-ca` and the certificate must name the host.
//!
//! Trusted CAs are `sslrootcert`'s, or else the public (Mozilla) roots:
//! unlike libpq, `~/.postgresql/root.crt` is not read. tokio-postgres parses
//! only `disable`/`prefer`/`require`, so the TLS parameters are taken out of
//! the URL here ([`resolve`]) and the rest is handed to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::secret_url::SecretUrl;
use crate::spool::PostgresTlsError;

/// How hard the connection insists on TLS, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plain.
    #[default]
    Prefer,
    /// TLS or nothing; the certificate checked only against `sslrootcert`.
    Require,
    /// TLS with a certificate from a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a certificate from a trusted CA that names the host.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in the order of how much they insist.
    const ALL: [Self; 5] = [
        Self::Disable,
        Self::Prefer,
        Self::Require,
        Self::VerifyCa,
        Self::VerifyFull,
    ];

    /// Its name, as in configuration and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == text)
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, Self::Disable | Self::Prefer)
    }
}

/// The TLS settings of `[spool.postgres]`, as configured (each may instead
/// be given in the URL's query, as libpq allows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresTls {
    /// `sslmode`; `prefer` when given nowhere.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`: PEM file of the CAs the server's certificate must
    /// lead to.
    pub sslrootcert: Option<PathBuf>,
    /// `sslcert`: PEM client certificate chain, leaf first.
    pub sslcert: Option<PathBuf>,
    /// `sslkey`: PEM private key of `sslcert`.
    pub sslkey: Option<PathBuf>,
}

/// The URL to hand to tokio-postgres and the TLS settings in force.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// The URL without the TLS parameters (it may hold a password).
    pub url: SecretUrl,
    /// The mode in force.
    pub mode: SslMode,
    root_cert: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// The query parameters taken out of the URL.
const PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Merges the URL's TLS parameters with `configured`: a parameter may be in
/// either place, or in both with the same value; different values are
/// refused rather than one silently winning.
pub(super) fn resolve(
    url: &SecretUrl,
    configured: &PostgresTls,
) -> Result<Resolved, PostgresTlsError> {
    let (stripped, from_url) = split_query(url.expose());
    let pick = |parameter: &'static str, configured: Option<String>| {
        let in_url = from_url
            .iter()
            .rev()
            .find(|(key, _)| key == parameter)
            .map(|(_, value)| value.clone());
        match (in_url, configured) {
            (Some(in_url), Some(configured)) if in_url != configured => {
                Err(PostgresTlsError::Conflict {
                    parameter,
                    in_url,
                    configured,
                })
            }
            (in_url, configured) => Ok(configured.or(in_url)),
        }
    };
    let path = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
    let mode = match pick("sslmode", configured.sslmode.map(|m| m.as_str().to_owned()))? {
        None => SslMode::default(),
        Some(text) => SslMode::parse(&text).ok_or(PostgresTlsError::UnknownMode(text))?,
    };
    let root_cert = pick("sslrootcert", path(&configured.sslrootcert))?.map(PathBuf::from);
    let cert = pick("sslcert", path(&configured.sslcert))?.map(PathBuf::from);
    let key = pick("sslkey", path(&configured.sslkey))?.map(PathBuf::from);
    let client_cert = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(PostgresTlsError::HalfClientCertificate),
    };
    let url = match stripped {
        Some(stripped) => SecretUrl::parse(&stripped)
            .map_err(|err| PostgresTlsError::Config(format!("the URL without sslmode: {err}")))?,
        None => url.clone(),
    };
    Ok(Resolved {
        url,
        mode,
        root_cert,
        client_cert,
    })
}

/// Whether the TLS settings of `url` and `configured` are consistent (for
/// validating the configuration; files are read when connecting).
pub fn check_tls(url: &SecretUrl, configured: &PostgresTls) -> Result<(), PostgresTlsError> {
    resolve(url, configured).map(|_| ())
}

/// `url` without the [`PARAMETERS`] (None when it had none) and their
/// percent-decoded values. The rest of the query is kept byte for byte: a
/// form-encoding round trip would turn an `options` value's `%20` into a
/// `+`, which tokio-postgres does not read as a space.
fn split_query(url: &str) -> (Option<String>, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (None, Vec::new());
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key);
        if PARAMETERS.contains(&key.as_str()) {
            taken.push((key, decode(value)));
        } else {
            kept.push(pair);
        }
    }
    if taken.is_empty() {
        return (None, taken);
    }
    let mut stripped = base.to_owned();
    if !kept.is_empty() {
        stripped.push('?');
        stripped.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        stripped.push('#');
        stripped.push_str(fragment);
    }
    (Some(stripped), taken)
}

impl Resolved {
    /// tokio-postgres's own mode: whether to ask for TLS and whether to go
    /// on without it (the certificate checks are the connector's).
    pub fn client_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The connector every connection (pooled or listening) is made with.
    pub fn connector(&self) -> Result<MakeRustlsConnect, PostgresTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, &self.root_cert) {
            (SslMode::VerifyFull, root_cert) => {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(root_cert.as_deref())?),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|err| PostgresTlsError::Config(err.to_string()))?
            }
            (SslMode::VerifyCa, root_cert) | (_, root_cert @ Some(_)) => Arc::new(Verifier {
                roots: Some(roots(root_cert.as_deref())?),
                provider: Arc::clone(&provider),
            }),
            (_, None) => Arc::new(Verifier {
                roots: None,
                provider: Arc::clone(&provider),
            }),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| PostgresTlsError::Config(err.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates("sslcert", cert)?, private_key(key)?)
                .map_err(|err| PostgresTlsError::Config(err.to_string()))?,
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// A failure to use the PEM file at `path`, named by its `setting`.
fn file_error(setting: &'static str, path: &Path, reason: impl ToString) -> PostgresTlsError {
    PostgresTlsError::File {
        setting,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The certificates in the PEM file at `path`; at least one.
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PostgresTlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| file_error(setting, path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_error(setting, path, err))?;
    if certificates.is_empty() {
        return Err(file_error(setting, path, "no PEM certificate found"));
    }
    Ok(certificates)
}

/// The private key in the PEM file at `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PostgresTlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| file_error("sslkey", path, err))
}

/// The trusted CAs: `sslrootcert`'s, or else the public roots.
fn roots(root_cert: Option<&Path>) -> Result<RootCertStore, PostgresTlsError> {
    let Some(path) = root_cert else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates("sslrootcert", path)? {
        roots
            .add(certificate)
            .map_err(|err| file_error("sslrootcert", path, err))?;
    }
    Ok(roots)
}

/// The checks of every mode but `verify-full` (which is rustls's own):
/// with `roots`, the chain must lead to one of them and the name in the
/// certificate is not compared (`verify-ca`, and `require`/`prefer` with
/// `sslrootcert`, as libpq); without, any certificate is taken (`prefer`
/// and `require`, as libpq: encrypted, but the handshake's signature is
/// checked against a certificate that proves nothing about who holds it).
#[derive(Debug)]
struct Verifier {
    roots: Option<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> SecretUrl {
        SecretUrl::parse(text).unwrap()
    }

    #[test]
    fn the_tls_parameters_are_taken_out_of_the_url_and_the_rest_kept_as_written() {
        let resolved = resolve(
            &url("postgres://u:pw@h/db?options=-c%20x%3Dy&sslmode=verify-full&sslrootcert=/ca.pem"),
            &PostgresTls::default(),
        )
        .unwrap();
        assert_eq!(
            resolved.url.expose(),
            "postgres://u:pw@h/db?options=-c%20x%3Dy"
        );
        assert_eq!(resolved.mode, SslMode::VerifyFull);
        assert_eq!(resolved.root_cert, Some(PathBuf::from("/ca.pem")));
        let plain = resolve(&url("postgres://h/db"), &PostgresTls::default()).unwrap();
        assert_eq!(plain.url.expose(), "postgres://h/db");
        assert_eq!(plain.mode, SslMode::Prefer);
    }

    #[test]
    fn a_parameter_given_twice_must_agree() {
        let configured = PostgresTls {
            sslmode: Some(SslMode::VerifyFull),
            ..PostgresTls::default()
        };
        let same = resolve(&url("postgres://h/db?sslmode=verify-full"), &configured).unwrap();
        assert_eq!(same.mode, SslMode::VerifyFull);
        assert_eq!(same.url.expose(), "postgres://h/db");
        let err = resolve(&url("postgres://h/db?sslmode=disable"), &configured).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spool.postgres.sslmode is `verify-full` but the URL says sslmode=disable: give it \
             in one place"
        );
    }

    #[test]
    fn unknown_modes_and_half_client_certificates_are_refused() {
        let none = PostgresTls::default();
        assert_eq!(
            resolve(&url("postgres://h/db?sslmode=allow"), &none).unwrap_err(),
            PostgresTlsError::UnknownMode("allow".to_owned())
        );
        assert_eq!(
            resolve(&url("postgres://h/db?sslcert=/c.pem"), &none).unwrap_err(),
            PostgresTlsError::HalfClientCertificate
        );
    }

    #[test]
    fn a_missing_root_certificate_is_named() {
        let resolved = resolve(
            &url("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"),
            &PostgresTls::default(),
        )
        .unwrap();
        let err = resolved.connector().err().unwrap().to_string();
        assert!(
            err.starts_with("spool.postgres.sslrootcert `/nonexistent/ca.pem`: "),
            "{err}"
        );
    }
}
