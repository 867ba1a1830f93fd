//! Authentication plugins (MySQL Client/Server Protocol, "Authentication
//! Methods"; MariaDB's `client_ed25519`).
//!
//! - [`client`]: cutover logging in to a backend: the first answer for the
//!   greeting's plugin, auth switch requests, and the extra rounds of
//!   caching_sha2_password (fast OK, full authentication over TLS or by RSA).
//! - [`server`]: cutover authenticating an application that speaks
//!   caching_sha2_password over TLS (full authentication, no switch).
//! - One module per plugin with its pure computation ([`native`],
//!   [`caching_sha2`], [`ed25519`], [`clear`]), unit-tested on known vectors.

#![warn(missing_docs)]

pub mod caching_sha2;
pub mod clear;
pub mod client;
pub mod ed25519;
pub mod native;
pub mod server;

/// The account a backend connection logs in as: a `[[users]]` login's
/// backend account, a backend URL's (cutover's own work), or a pass-through
/// client's own.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The backend user name.
    pub user: String,
    /// What proves it.
    pub secret: Secret,
}

/// How a backend login is proved.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The account's password: answers every plugin of [`Plugin`].
    Password(String),
    /// SHA1(password), recovered from a pass-through client's
    /// mysql_native_password answer ([`native::recover_stage1`]): enough
    /// for mysql_native_password logins, not for other plugins.
    NativeHash([u8; 20]),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::NativeHash(_) => f.write_str("NativeHash(<redacted>)"),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `user` with a password.
    pub fn password(user: &str, password: &str) -> Self {
        Credentials {
            user: user.into(),
            secret: Secret::Password(password.into()),
        }
    }

    /// The account of a backend URL.
    pub fn of(cfg: &crate::config::BackendConfig) -> Self {
        Credentials::password(&cfg.user, &cfg.password)
    }

    /// The password, when known (not for a pass-through login's hash).
    pub fn known_password(&self) -> Option<&str> {
        match &self.secret {
            Secret::Password(p) => Some(p),
            Secret::NativeHash(_) => None,
        }
    }
}

/// An authentication plugin cutover can answer as a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `mysql_native_password`: SHA1 challenge-response.
    Native,
    /// `caching_sha2_password` (MySQL 8 default): SHA256 challenge-response,
    /// full authentication when the server's cache is cold.
    CachingSha2,
    /// `client_ed25519` (MariaDB `auth_ed25519`): an Ed25519 signature of
    /// the server's message with a key derived from the password.
    Ed25519,
    /// `mysql_clear_password` (PAM, LDAP, cloud IAM tokens): the password
    /// itself, sent only over TLS.
    Clear,
}

impl Plugin {
    /// The plugin of a protocol name; `None` for one cutover cannot answer.
    pub fn from_name(name: &[u8]) -> Option<Plugin> {
        match name {
            native::NAME => Some(Plugin::Native),
            caching_sha2::NAME => Some(Plugin::CachingSha2),
            ed25519::NAME => Some(Plugin::Ed25519),
            clear::NAME => Some(Plugin::Clear),
            _ => None,
        }
    }

    /// The protocol name (`mysql_native_password`, …).
    pub fn name(self) -> &'static [u8] {
        match self {
            Plugin::Native => native::NAME,
            Plugin::CachingSha2 => caching_sha2::NAME,
            Plugin::Ed25519 => ed25519::NAME,
            Plugin::Clear => clear::NAME,
        }
    }

    /// The name as text, for messages.
    pub fn as_str(self) -> &'static str {
        std::str::from_utf8(self.name()).expect("ASCII")
    }
}

/// Compare secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
