//! `[[users]]` and `auth`: who may log in to cutover, and as which account
//! cutover logs that client in to each backend.
//!
//! The model is ProxySQL's `mysql_users`: an application logs in to cutover
//! with a configured name and password, and cutover logs in to each backend
//! as an account of its own per user — by default the same name and password
//! on both backends, so the backends' grants apply to each application user
//! (a read-only user stays read-only through cutover). The `[source]` /
//! `[destination]` URL accounts are only for cutover's own work (start-up
//! probe, health checks, validation, repair).
//!
//! With `auth = "passthrough"`, a user that is not listed is authenticated
//! against the authoritative backend's own accounts (users created on the
//! server at run time work without a config change); see
//! `crate::session::passthrough`.

use serde::Deserialize;

use super::{key_err, BackendConfig, ConfigError};
use crate::pattern::Side;

/// How cutover authenticates a client login (`auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// `auth = "users"` (default): only the `[[users]]` logins.
    #[default]
    Users,
    /// `auth = "passthrough"`: `[[users]]` first; any other user is checked
    /// against the authoritative backend's `mysql_native_password` account of
    /// the same name and logged in to the backends as itself.
    Passthrough,
}

impl AuthMode {
    pub(super) fn parse(v: Option<&str>) -> Result<AuthMode, ConfigError> {
        match v {
            None | Some("users") => Ok(AuthMode::Users),
            Some("passthrough") => Ok(AuthMode::Passthrough),
            Some(other) => Err(key_err(
                "auth",
                format!("expected \"users\" or \"passthrough\", got \"{other}\""),
            )),
        }
    }
}

/// A login an application may use against cutover (`[[users]]`), and the
/// account it maps to on each backend.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name clients log in with.
    pub name: String,
    /// The password clients log in with (checked with mysql_native_password).
    #[serde(default)]
    pub password: String,
    /// Account on the source backend; default `name`.
    #[serde(default)]
    pub source_user: Option<String>,
    /// Its password; default `password`.
    #[serde(default)]
    pub source_password: Option<String>,
    /// Account on the destination backend; default `name`.
    #[serde(default)]
    pub destination_user: Option<String>,
    /// Its password; default `password`.
    #[serde(default)]
    pub destination_password: Option<String>,
    /// Refuse this user's logins without TLS (ER_SECURE_TRANSPORT_REQUIRED).
    #[serde(default)]
    pub require_tls: bool,
}

impl UserConfig {
    /// A login that maps to the given account on both backends.
    pub fn new(name: &str, password: &str) -> Self {
        UserConfig {
            name: name.into(),
            password: password.into(),
            source_user: None,
            source_password: None,
            destination_user: None,
            destination_password: None,
            require_tls: false,
        }
    }

    /// The `(user, password)` cutover logs in with on `side` for this login.
    pub fn backend_account(&self, side: Side) -> (&str, &str) {
        let (user, password) = match side {
            Side::Source => (&self.source_user, &self.source_password),
            Side::Destination => (&self.destination_user, &self.destination_password),
        };
        (
            user.as_deref().unwrap_or(&self.name),
            password.as_deref().unwrap_or(&self.password),
        )
    }
}

/// The users list after defaults: without any `[[users]]`, the one login is
/// the source URL's user and password, and it maps to each side's URL
/// account (so a config with only the two URLs keeps working as before).
pub(super) fn with_defaults(
    mut users: Vec<UserConfig>,
    source: &BackendConfig,
    destination: &BackendConfig,
) -> Result<Vec<UserConfig>, ConfigError> {
    for (i, u) in users.iter().enumerate() {
        if u.name.is_empty() {
            return Err(key_err(&format!("users[{i}].name"), "must not be empty"));
        }
        for (key, v) in [
            ("source_user", &u.source_user),
            ("destination_user", &u.destination_user),
        ] {
            if v.as_deref() == Some("") {
                return Err(key_err(&format!("users[{i}].{key}"), "must not be empty"));
            }
        }
        if users[..i].iter().any(|o| o.name == u.name) {
            return Err(key_err(
                &format!("users[{i}].name"),
                format!("`{}` is listed twice", u.name),
            ));
        }
    }
    if users.is_empty() {
        let mut u = UserConfig::new(&source.user, &source.password);
        u.destination_user = Some(destination.user.clone());
        u.destination_password = Some(destination.password.clone());
        users.push(u);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_accounts_default_to_the_login() {
        let mut u = UserConfig::new("ro", "pw");
        assert_eq!(u.backend_account(Side::Source), ("ro", "pw"));
        assert_eq!(u.backend_account(Side::Destination), ("ro", "pw"));
        u.destination_user = Some("ro_dst".into());
        assert_eq!(u.backend_account(Side::Destination), ("ro_dst", "pw"));
        u.source_password = Some("other".into());
        assert_eq!(u.backend_account(Side::Source), ("ro", "other"));
    }

    #[test]
    fn auth_modes() {
        assert_eq!(AuthMode::parse(None).unwrap(), AuthMode::Users);
        assert_eq!(
            AuthMode::parse(Some("passthrough")).unwrap(),
            AuthMode::Passthrough
        );
        let e = AuthMode::parse(Some("ldap")).unwrap_err();
        assert!(e.to_string().contains("`auth`"), "{e}");
    }
}
