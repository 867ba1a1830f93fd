//! The validator's and fixer's mysql_async connections get the same TLS
//! settings as the data path (`[source]` / `[destination]` `ssl_mode`,
//! `ssl_ca`, `ssl_cert`, `ssl_key`), through mysql_async's rustls backend.
//!
//! Differences, all on mysql_async's side: with `preferred`, a server that
//! offers no TLS is detected at the first connect and the pool falls back to
//! plaintext (see `Db::conn`); `server_public_key` is not used (mysql_async
//! asks the server for its key for caching_sha2_password without TLS);
//! `mysql_clear_password` is enabled only when TLS is required.

use mysql_async::{ClientIdentity, OptsBuilder, SslOpts};

use crate::config::BackendConfig;
use crate::tls::SslMode;

/// `opts` with `cfg`'s TLS settings applied.
pub fn apply(opts: OptsBuilder, cfg: &BackendConfig) -> OptsBuilder {
    let tls = &cfg.tls;
    let Some(ssl) = ssl_opts(cfg) else {
        return opts;
    };
    opts.ssl_opts(Some(ssl))
        .enable_cleartext_plugin(tls.mode.requires_tls())
}

/// The `SslOpts` for `cfg`'s mode; `None` for `disabled`.
pub fn ssl_opts(cfg: &BackendConfig) -> Option<SslOpts> {
    let tls = &cfg.tls;
    if tls.mode == SslMode::Disabled {
        return None;
    }
    let mut ssl = SslOpts::default();
    if let Some(ca) = &tls.ca {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let id = ClientIdentity::new(cert.clone().into(), key.clone().into());
        ssl = ssl.with_client_identity(Some(id));
    }
    Some(match tls.mode {
        SslMode::VerifyIdentity => ssl,
        SslMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
        _ => ssl.with_danger_accept_invalid_certs(true),
    })
}

/// Whether this error means "the server offers no TLS" (mysql_async's
/// `NoClientSslFlagFromServer`), which `preferred` answers with plaintext.
pub fn is_tls_not_offered(e: &mysql_async::Error) -> bool {
    matches!(
        e,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
    )
}

/// Attempts per validator connection while the server answers
/// ER_ACCESS_DENIED_ERROR (1045): see [`retries_access_denied`].
pub const LOGIN_ATTEMPTS: usize = 3;

/// Whether a failed connect is retried: ER_ACCESS_DENIED_ERROR (1045).
/// mysql_common 0.37 strips a trailing 0 byte from every AuthSwitchRequest's
/// data, so MariaDB's 32 random `client_ed25519` bytes ending in 0 (one
/// login in 256) are signed short and refused (fixed upstream in
/// rust_mysql_common PR 193, release 0.38). A fresh connection gets a fresh
/// message; a wrong password costs [`LOGIN_ATTEMPTS`] refusals instead of
/// one. The data path signs the whole message itself (`auth::client`).
pub fn retries_access_denied(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1045)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "x".into(),
            state: "28000".into(),
        })
    }

    #[test]
    fn only_a_refused_login_is_retried() {
        assert!(retries_access_denied(&server(1045)));
        assert!(
            !retries_access_denied(&server(1044)),
            "ER_DBACCESS_DENIED_ERROR"
        );
        assert!(
            !retries_access_denied(&server(3159)),
            "secure transport required"
        );
        let tls = mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer);
        assert!(!retries_access_denied(&tls) && is_tls_not_offered(&tls));
    }
}
