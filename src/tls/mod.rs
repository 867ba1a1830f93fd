//! TLS on both sides of the proxy, with rustls (ring provider; no OpenSSL).
//!
//! - Backend side ([`client`]): per `[source]` / `[destination]`, MySQL's
//!   `ssl_mode` names (`disabled`, `preferred`, `required`, `verify_ca`,
//!   `verify_identity`), `ssl_ca` (default: the Mozilla roots built in via
//!   `webpki-roots`), an optional client certificate, and
//!   `server_public_key` for caching_sha2_password without TLS. The upgrade
//!   follows the protocol: SSLRequest after the greeting, the TLS handshake,
//!   then the handshake response over TLS (MySQL Client/Server Protocol,
//!   "Connection Phase", "SSL Handshake").
//! - Client side ([`server`]): `[tls] cert` / `key` / `require`; CLIENT_SSL is
//!   advertised when a certificate is configured, the certificate is reloaded
//!   on SIGHUP without touching established connections.
//!
//! Certificates and keys are read when the configuration is loaded, so a bad
//! file is a start-up error naming its key.

#![warn(missing_docs)]

pub mod client;
pub mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::wire::Transport;

/// MySQL's `--ssl-mode` for a backend connection (MySQL 8.0 Reference
/// Manual, "Command Options for Encrypted Connections").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disabled,
    /// TLS when the server offers it (certificate not verified); plaintext
    /// otherwise. MySQL clients' default.
    #[default]
    Preferred,
    /// TLS or fail; the certificate is not verified.
    Required,
    /// TLS, the chain verified against `ssl_ca` (or the built-in roots); the
    /// host name is not checked.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host cutover
    /// connects to (DNS name or IP address in subjectAltName).
    VerifyIdentity,
}

impl SslMode {
    /// The config spelling (`verify_identity`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "disabled",
            SslMode::Preferred => "preferred",
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify_ca",
            SslMode::VerifyIdentity => "verify_identity",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disabled | SslMode::Preferred)
    }

    /// Whether the certificate chain is verified.
    pub fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyIdentity)
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    /// Case-insensitive; `-` and `_` are the same (`VERIFY-IDENTITY` works).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "disabled" => Ok(SslMode::Disabled),
            "preferred" => Ok(SslMode::Preferred),
            "required" => Ok(SslMode::Required),
            "verify_ca" => Ok(SslMode::VerifyCa),
            "verify_identity" => Ok(SslMode::VerifyIdentity),
            _ => Err(format!(
                "`{s}` is not one of disabled, preferred, required, verify_ca, verify_identity"
            )),
        }
    }
}

/// The TLS settings of one backend, with its files already read.
#[derive(Clone, Default)]
pub struct BackendTls {
    /// `ssl_mode`.
    pub mode: SslMode,
    /// `ssl_ca`: PEM bundle of trusted roots; `None` = the built-in roots.
    pub ca: Option<PathBuf>,
    /// `ssl_cert`: client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// `ssl_key`: the client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// `server_public_key`: the server's RSA public key (PEM) for
    /// caching_sha2_password full authentication without TLS.
    pub server_public_key: Option<PathBuf>,
    /// The rustls client configuration for `mode` (none for `disabled`).
    pub rustls: Option<Arc<rustls::ClientConfig>>,
    /// The parsed `server_public_key`.
    pub public_key: Option<Arc<rsa::RsaPublicKey>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("server_public_key", &self.server_public_key)
            .finish()
    }
}

impl PartialEq for BackendTls {
    /// Equal settings (the loaded objects follow from the paths).
    fn eq(&self, o: &Self) -> bool {
        (
            self.mode,
            &self.ca,
            &self.cert,
            &self.key,
            &self.server_public_key,
        ) == (o.mode, &o.ca, &o.cert, &o.key, &o.server_public_key)
    }
}

impl Eq for BackendTls {}

/// The raw `[source]` / `[destination]` TLS keys, before loading.
#[derive(Debug, Clone, Default)]
pub struct BackendTlsKeys {
    /// `ssl_mode` as written.
    pub ssl_mode: Option<String>,
    /// `ssl_ca`.
    pub ssl_ca: Option<PathBuf>,
    /// `ssl_cert`.
    pub ssl_cert: Option<PathBuf>,
    /// `ssl_key`.
    pub ssl_key: Option<PathBuf>,
    /// `server_public_key`.
    pub server_public_key: Option<PathBuf>,
}

/// A TLS setting that cannot be used: the key (relative to its table,
/// e.g. `ssl_ca`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn key_err(key: &'static str, message: impl Into<String>) -> KeyError {
    KeyError {
        key,
        message: message.into(),
    }
}

impl BackendTls {
    /// Read and check the files named by `keys` and build the rustls
    /// configuration for the mode.
    ///
    /// # Errors
    /// [`KeyError`] naming the key: an unknown mode, an unreadable or empty
    /// PEM file, `ssl_cert` without `ssl_key` (or the reverse), a key that
    /// does not match its certificate, a public key that is not RSA.
    pub fn load(keys: &BackendTlsKeys) -> Result<BackendTls, KeyError> {
        let mode = match &keys.ssl_mode {
            Some(m) => m.parse().map_err(|e| key_err("ssl_mode", e))?,
            None => SslMode::default(),
        };
        let public_key = match &keys.server_public_key {
            Some(p) => {
                let pem = std::fs::read(p)
                    .map_err(|e| key_err("server_public_key", format!("{}: {e}", p.display())))?;
                let key = crate::auth::caching_sha2::parse_public_key(&pem)
                    .map_err(|e| key_err("server_public_key", format!("{}: {e}", p.display())))?;
                Some(Arc::new(key))
            }
            None => None,
        };
        let rustls = match mode {
            SslMode::Disabled => None,
            _ => Some(Arc::new(client::config(mode, keys)?)),
        };
        Ok(BackendTls {
            mode,
            ca: keys.ssl_ca.clone(),
            cert: keys.ssl_cert.clone(),
            key: keys.ssl_key.clone(),
            server_public_key: keys.server_public_key.clone(),
            rustls,
            public_key,
        })
    }
}

/// The ring crypto provider every rustls configuration of cutover uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
///
/// # Errors
/// The file cannot be read, does not parse, or holds no certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
///
/// # Errors
/// The file cannot be read or holds no private key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Transport for tokio_rustls::client::TlsStream<Box<dyn Transport>> {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.get_ref().0.peer_addr()
    }

    fn set_nodelay(&self) {
        self.get_ref().0.set_nodelay();
    }

    fn set_reset_on_close(&self) {
        self.get_ref().0.set_reset_on_close();
    }

    fn is_secure(&self) -> bool {
        true
    }
}

impl Transport for tokio_rustls::server::TlsStream<Box<dyn Transport>> {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.get_ref().0.peer_addr()
    }

    fn set_nodelay(&self) {
        self.get_ref().0.set_nodelay();
    }

    fn set_reset_on_close(&self) {
        self.get_ref().0.set_reset_on_close();
    }

    fn is_secure(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
