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
