//! The client side: cutover as a TLS server for applications (`[tls]`).
//!
//! The acceptor lives in an `ArcSwap`: [`ServerTls::reload`] (SIGHUP)
//! re-reads the certificate and key and swaps them in for the next
//! handshakes; established connections keep the session they negotiated.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use super::{provider, read_certs, read_key};

/// `[tls]`: what applications may or must use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsConfig {
    /// `cert`: the certificate chain shown to clients (PEM, leaf first).
    pub cert: Option<PathBuf>,
    /// `key`: its private key (PEM).
    pub key: Option<PathBuf>,
    /// `require`: refuse logins without TLS (ER_SECURE_TRANSPORT_REQUIRED).
    pub require: bool,
}

/// The live acceptor and the files it was read from.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    /// Plaintext logins are refused.
    pub require: bool,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl ServerTls {
    /// Read the certificate and key of `cfg`; `Ok(None)` when none is configured.
    ///
    /// # Errors
    /// The file that cannot be read, holds no certificate / key, or a key
    /// that does not fit the certificate (the message names the file).
    pub fn load(cfg: &ClientTlsConfig) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
            return Ok(None);
        };
        let acceptor = acceptor(cert, key)?;
        Ok(Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            require: cfg.require,
            acceptor: ArcSwap::from_pointee(acceptor),
        }))
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }

    /// Re-read the certificate and key; on failure the current ones stay.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn reload(&self) -> Result<(), String> {
        let next = acceptor(&self.cert, &self.key)?;
        self.acceptor.store(Arc::new(next));
        Ok(())
    }
}

fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} does not fit {}: {e}", "key", cert.display()))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Reload `tls` on every SIGHUP until the process ends; each attempt is
/// logged and counted (`cutover_tls_reloads_total{outcome}`). Without
/// `[tls]` a SIGHUP is logged and ignored (it no longer ends the process).
pub async fn reload_on_sighup(tls: Option<Arc<ServerTls>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP (no certificate reload): {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: no [tls] certificate configured, nothing to reload");
            continue;
        };
        let outcome = match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.cert.display(), "SIGHUP: TLS certificate reloaded");
                "success"
            }
            Err(e) => {
                tracing::warn!(
                    "SIGHUP: TLS certificate not reloaded, keeping the current one: {e}"
                );
                "failure"
            }
        };
        metrics::counter!("cutover_tls_reloads_total", "outcome" => outcome).increment(1);
    }
}
