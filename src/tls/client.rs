//! The backend side: cutover as a TLS client of a MySQL/MariaDB server.

use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{
    key_err, provider, read_certs, read_key, BackendTls, BackendTlsKeys, KeyError, SslMode,
};
use crate::error::BackendError;
use crate::pattern::Side;
use crate::wire::PacketIo;

/// The rustls client configuration for `mode`: the verifier it implies,
/// TLS 1.2 and 1.3, the client certificate if configured.
///
/// # Errors
/// [`KeyError`] naming `ssl_ca`, `ssl_cert` or `ssl_key`.
pub fn config(mode: SslMode, keys: &BackendTlsKeys) -> Result<rustls::ClientConfig, KeyError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| key_err("ssl_mode", e.to_string()))?;
    let roots = Arc::new(roots(keys)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| key_err("ssl_ca", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::VerifyIdentity => webpki,
        SslMode::VerifyCa => Arc::new(ChainOnly(webpki)),
        _ => Arc::new(Unverified(webpki)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&keys.ssl_cert, &keys.ssl_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|e| key_err("ssl_cert", e))?;
            let key = read_key(key).map_err(|e| key_err("ssl_key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| key_err("ssl_key", format!("does not fit ssl_cert: {e}")))
        }
        (Some(_), None) => Err(key_err("ssl_key", "missing (ssl_cert is set)")),
        (None, Some(_)) => Err(key_err("ssl_cert", "missing (ssl_key is set)")),
    }
}

/// `ssl_ca`'s certificates, or Mozilla's roots when it is unset.
fn roots(keys: &BackendTlsKeys) -> Result<RootCertStore, KeyError> {
    let mut store = RootCertStore::empty();
    match &keys.ssl_ca {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            for cert in read_certs(path).map_err(|e| key_err("ssl_ca", e))? {
                store
                    .add(cert)
                    .map_err(|e| key_err("ssl_ca", format!("{}: {e}", path.display())))?;
            }
        }
    }
    Ok(store)
}

/// `verify_ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

/// `preferred` / `required`: any certificate (MySQL's semantics); the
/// handshake signatures are still checked, so the session key belongs to
/// whoever holds that certificate.
#[derive(Debug)]
struct Unverified(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What the backend login needs to decide and perform the upgrade.
pub struct Upgrade<'a> {
    /// Which backend (for errors).
    pub side: Side,
    /// The host name cutover connects to (checked by `verify_identity`).
    pub host: &'a str,
    /// The backend's TLS settings.
    pub tls: &'a BackendTls,
    /// What the server's greeting offers.
    pub server_caps: CapabilityFlags,
}

/// Whether to upgrade this connection: `Ok(true)` when the mode asks for TLS
/// and the server offers it.
///
/// # Errors
/// [`BackendError::Tls`] when the mode requires TLS and the server's
/// greeting lacks CLIENT_SSL.
pub fn wanted(u: &Upgrade<'_>) -> Result<bool, BackendError> {
    let offered = u.server_caps.contains(CapabilityFlags::CLIENT_SSL);
    match (u.tls.mode, offered) {
        (SslMode::Disabled, _) => Ok(false),
        (SslMode::Preferred, offered) => Ok(offered),
        (_, true) => Ok(true),
        (mode, false) => Err(BackendError::Tls {
            side: u.side,
            reason: format!(
                "ssl_mode = {} but the server does not offer TLS (no CLIENT_SSL in its greeting; \
                 start it with ssl_cert/ssl_key)",
                mode.as_str()
            ),
        }),
    }
}

/// Send the SSLRequest (`ssl_request`, sequence `seq`) and run the TLS
/// handshake; the returned connection is encrypted.
///
/// # Errors
/// [`BackendError::Io`] when the write fails, [`BackendError::Tls`] when the
/// handshake fails (certificate refused: the reason names the mode and the
/// CA file).
pub async fn upgrade(
    io: &mut PacketIo,
    u: &Upgrade<'_>,
    ssl_request: &[u8],
    seq: u8,
) -> Result<(), BackendError> {
    let side = u.side;
    if io.read_buffered() != 0 {
        return Err(tls_err(
            u,
            "the server sent data before the TLS handshake".into(),
        ));
    }
    io.send_packet(seq, ssl_request)
        .await
        .map_err(|source| BackendError::Io { side, source })?;
    let Some(cfg) = u.tls.rustls.clone() else {
        return Err(tls_err(u, "no TLS configuration for this mode".into()));
    };
    let name = server_name(u.host, u.tls.mode).map_err(|e| tls_err(u, e))?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    io.upgrade(|stream| connector.connect(name, stream))
        .await
        .map_err(|e| tls_err(u, handshake_failure(e, u.tls)))
}

fn tls_err(u: &Upgrade<'_>, reason: String) -> BackendError {
    BackendError::Tls {
        side: u.side,
        reason,
    }
}

/// The name rustls checks (and sends as SNI): the configured host. A host
/// that is neither a DNS name nor an IP address is refused by
/// `verify_identity`; the other modes do not look at it.
fn server_name(host: &str, mode: SslMode) -> Result<ServerName<'static>, String> {
    match ServerName::try_from(host.to_string()) {
        Ok(n) => Ok(n),
        Err(_) if mode != SslMode::VerifyIdentity => {
            Ok(ServerName::try_from("cutover.invalid").expect("a valid DNS name"))
        }
        Err(e) => Err(format!("host `{host}` cannot be verified: {e}")),
    }
}

fn handshake_failure(e: std::io::Error, tls: &BackendTls) -> String {
    let ca = match &tls.ca {
        Some(p) => format!("ssl_ca {}", p.display()),
        None => "the built-in roots (ssl_ca unset)".into(),
    };
    if tls.mode.verifies_chain() {
        format!(
            "TLS handshake failed: {e} (ssl_mode = {}, trusting {ca})",
            tls.mode.as_str()
        )
    } else {
        format!(
            "TLS handshake failed: {e} (ssl_mode = {})",
            tls.mode.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_identity_checks_the_configured_host_by_name_or_address() {
        let name = |h, m| server_name(h, m).map(|n| n.to_str().into_owned());
        assert_eq!(
            name("db.example.com", SslMode::VerifyIdentity).unwrap(),
            "db.example.com"
        );
        assert_eq!(
            name("10.0.0.7", SslMode::VerifyIdentity).unwrap(),
            "10.0.0.7"
        );
        assert_eq!(name("::1", SslMode::VerifyIdentity).unwrap(), "::1");
        let e = name("db_host!", SslMode::VerifyIdentity).unwrap_err();
        assert!(e.contains("db_host!"), "{e}");
        // Modes that do not check the name connect to any host spelling.
        assert!(name("db_host!", SslMode::Required).is_ok());
        assert!(name("db_host!", SslMode::VerifyCa).is_ok());
    }
}
