//! Who a client is: checking a login (first handshake and COM_CHANGE_USER)
//! and the backend account each side's connections then log in as.
//!
//! A client proves its password with a mysql_native_password answer to the
//! scramble or, over TLS with caching_sha2_password, with the password
//! itself (full authentication, `auth::server`); see [`Proof`].
//!
//! A `[[users]]` login is checked against its configured password and maps
//! to its configured backend accounts (default: the same name and password
//! on both backends). With `auth = "passthrough"`, any other user is checked
//! against the authoritative backend (see `passthrough`).

use crate::auth::{self, native, Credentials, Secret};
use crate::config::{AuthMode, UserConfig};
use crate::pattern::Side;
use crate::session::passthrough::Stored;
use crate::shared::Shared;

/// The backend account of a session, per side (index = [`Side::index`]).
pub type Accounts = [Credentials; 2];

/// The backend accounts of a configured login.
pub fn configured_accounts(u: &UserConfig) -> Accounts {
    [Side::Source, Side::Destination].map(|side| {
        let (user, password) = u.backend_account(side);
        Credentials::password(user, password)
    })
}

/// What a client proved its password with.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A mysql_native_password answer to the session's scramble.
    Native(&'a [u8]),
    /// The password itself, received over TLS (caching_sha2_password full
    /// authentication, see `auth::server`).
    Cleartext(&'a [u8]),
}

impl Proof<'_> {
    /// Whether the client sent a password at all (for the ERR's wording).
    pub fn is_empty(&self) -> bool {
        match self {
            Proof::Native(a) | Proof::Cleartext(a) => a.is_empty(),
        }
    }
}

/// Check the client's `proof` (against `scramble` when native) for `user`;
/// the backend accounts to use on success, `None` when denied.
/// `authoritative` is the side whose accounts a pass-through login is
/// checked against.
pub async fn verify(
    shared: &Shared,
    user: &str,
    scramble: &[u8; 20],
    proof: Proof<'_>,
    authoritative: Side,
) -> Option<Accounts> {
    if let Some(u) = shared.config.user(user.as_bytes()) {
        return matches(scramble, &u.password, proof).then(|| configured_accounts(u));
    }
    if shared.config.auth != AuthMode::Passthrough {
        return None;
    }
    let stored = shared.passthrough().hashes(authoritative, user).await;
    let secret = stored
        .iter()
        .find_map(|s| passthrough_secret(scramble, *s, proof))?;
    let account = Credentials {
        user: user.into(),
        secret,
    };
    Some([account.clone(), account])
}

/// What a pass-through login logs in to the backends with, if `proof`
/// matches the account's `stored` password: the password itself when the
/// client sent it (every backend plugin then works), else SHA1(password)
/// recovered from the native answer (mysql_native_password only).
fn passthrough_secret(scramble: &[u8; 20], stored: Stored, proof: Proof<'_>) -> Option<Secret> {
    match (stored, proof) {
        (Stored::Empty, p) if p.is_empty() => Some(Secret::Password(String::new())),
        (Stored::Empty, _) => None,
        (Stored::Hash(stage2), Proof::Native(answer)) => {
            native::recover_stage1(scramble, answer, &stage2).map(Secret::NativeHash)
        }
        (Stored::Hash(stage2), Proof::Cleartext(pw)) => {
            let pw = std::str::from_utf8(pw).ok()?;
            native::password_matches(pw.as_bytes(), &stage2).then(|| Secret::Password(pw.into()))
        }
    }
}

/// Whether `proof` shows `password`. mysql_native_password: the client
/// sends SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))), an empty password an
/// empty answer; cleartext: the password itself.
fn matches(scramble: &[u8; 20], password: &str, proof: Proof<'_>) -> bool {
    match proof {
        Proof::Native(answer) => {
            let expected = native::scramble(scramble, password);
            auth::constant_time_eq(&expected, answer)
        }
        Proof::Cleartext(answer) => auth::constant_time_eq(password.as_bytes(), answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_answers() {
        let s = *b"01234567890123456789";
        let good = native::scramble(&s, "pw");
        assert!(matches(&s, "pw", Proof::Native(&good)));
        assert!(!matches(&s, "px", Proof::Native(&good)));
        assert!(!matches(&s, "pw", Proof::Native(&good[..19])));
        assert!(matches(&s, "", Proof::Native(&[])));
        assert!(!matches(&s, "", Proof::Native(&good)));
        assert!(matches(&s, "pw", Proof::Cleartext(b"pw")));
        assert!(!matches(&s, "pw", Proof::Cleartext(b"px")));
    }

    #[test]
    fn passthrough_cleartext_keeps_the_password() {
        let s = *b"01234567890123456789";
        // PASSWORD('s3cret') on MariaDB
        let stage2 =
            native::parse_stored_hash("*B865CAE8F340F6CE1485A06F4492BB49718DF1EC").unwrap();
        let stored = Stored::Hash(stage2);
        assert_eq!(
            passthrough_secret(&s, stored, Proof::Cleartext(b"s3cret")),
            Some(Secret::Password("s3cret".into()))
        );
        assert_eq!(passthrough_secret(&s, stored, Proof::Cleartext(b"x")), None);
        let answer = native::scramble(&s, "s3cret");
        assert!(matches!(
            passthrough_secret(&s, stored, Proof::Native(&answer)),
            Some(Secret::NativeHash(_))
        ));
        assert_eq!(
            passthrough_secret(&s, Stored::Empty, Proof::Cleartext(b"")),
            Some(Secret::Password(String::new()))
        );
    }

    #[test]
    fn configured_login_maps_to_its_accounts() {
        let mut u = UserConfig::new("ro", "pw");
        u.destination_user = Some("ro_dst".into());
        let a = configured_accounts(&u);
        assert_eq!(a[Side::Source.index()].user, "ro");
        assert_eq!(a[Side::Destination.index()].user, "ro_dst");
        assert_eq!(
            a[Side::Destination.index()].secret,
            Secret::Password("pw".into())
        );
    }
}
