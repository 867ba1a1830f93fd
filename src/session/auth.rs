//! Who a client is: checking a login (first handshake and COM_CHANGE_USER)
//! and the backend account each side's connections then log in as.
//!
//! A `[[users]]` login is checked against its configured password and maps
//! to its configured backend accounts (default: the same name and password
//! on both backends). With `auth = "passthrough"`, any other user is checked
//! against the authoritative backend (see `passthrough`).

use mysql_common::scramble::scramble_native;

use crate::backend::{Credentials, Secret};
use crate::config::{AuthMode, UserConfig};
use crate::native_password;
use crate::pattern::Side;
use crate::session::passthrough::Stored;
use crate::shared::Shared;

/// The backend account of a session, per side (index = [`Side::index`]).
pub type Accounts = [Credentials; 2];

/// The backend accounts of a configured login.
pub fn configured_accounts(u: &UserConfig) -> Accounts {
    [Side::Source, Side::Destination].map(|side| {
        let (user, password) = u.backend_account(side);
        Credentials {
            user: user.into(),
            secret: Secret::Password(password.into()),
        }
    })
}

/// Check `answer`, the client's mysql_native_password answer to `scramble`,
/// for `user`; the backend accounts to use on success, `None` when denied.
/// `authoritative` is the side whose accounts a pass-through login is
/// checked against.
pub async fn verify(
    shared: &Shared,
    user: &str,
    scramble: &[u8; 20],
    answer: &[u8],
    authoritative: Side,
) -> Option<Accounts> {
    if let Some(u) = shared.config.user(user.as_bytes()) {
        return native_matches(scramble, &u.password, answer).then(|| configured_accounts(u));
    }
    if shared.config.auth != AuthMode::Passthrough {
        return None;
    }
    let stored = shared.passthrough().hashes(authoritative, user).await;
    let secret = stored.iter().find_map(|s| match s {
        Stored::Empty if answer.is_empty() => Some(Secret::Password(String::new())),
        Stored::Hash(stage2) => {
            native_password::recover_stage1(scramble, answer, stage2).map(Secret::NativeHash)
        }
        Stored::Empty => None,
    })?;
    let account = Credentials {
        user: user.into(),
        secret,
    };
    Some([account.clone(), account])
}

/// mysql_native_password: the client proves it knows the password by
/// sending SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))); an empty password
/// is an empty answer.
fn native_matches(scramble: &[u8; 20], password: &str, answer: &[u8]) -> bool {
    match scramble_native(scramble, password.as_bytes()) {
        None => answer.is_empty(),
        Some(expected) => answer.len() == 20 && constant_time_eq(&expected, answer),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_answers() {
        let s = *b"01234567890123456789";
        let good = scramble_native(&s, b"pw").unwrap();
        assert!(native_matches(&s, "pw", &good));
        assert!(!native_matches(&s, "px", &good));
        assert!(!native_matches(&s, "pw", &good[..19]));
        assert!(native_matches(&s, "", &[]));
        assert!(!native_matches(&s, "", &good));
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
