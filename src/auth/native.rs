//! `mysql_native_password` (MySQL Client/Server Protocol, "Native
//! Authentication"; MySQL Reference Manual, "Native Pluggable
//! Authentication"):
//!
//! - the server stores `stage2 = SHA1(SHA1(password))` (`*` + 40 hex digits
//!   in `mysql.user`);
//! - a client answers a 20-byte nonce with
//!   `SHA1(password) XOR SHA1(nonce ‖ stage2)`.
//!
//! Knowing `stage2` and an answer, `stage1 = SHA1(password)` follows, and
//! `SHA1(stage1) == stage2` proves the answer right; `stage1` is then enough
//! to answer any other nonce. This is how a proxy logs a client in to more
//! than one server without knowing its password (MaxScale does the same).

use sha1::{Digest, Sha1};

/// The plugin's protocol name.
pub const NAME: &[u8] = b"mysql_native_password";

/// The 20-byte answer to `nonce`; empty for an empty password.
pub fn scramble(nonce: &[u8], password: &str) -> Vec<u8> {
    mysql_common::scramble::scramble_native(nonce, password.as_bytes())
        .map(|a| a.to_vec())
        .unwrap_or_default()
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn xor(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// The answer to `nonce` for the account whose `SHA1(password)` is `stage1`.
pub fn answer_from_hash(nonce: &[u8], stage1: &[u8; 20]) -> [u8; 20] {
    let stage2 = sha1(&[stage1]);
    xor(stage1, &sha1(&[nonce, &stage2]))
}

/// `stage1` from a client's 20-byte `answer` to `nonce`, if it matches the
/// stored `stage2`; `None` for a wrong password (or a malformed answer).
pub fn recover_stage1(nonce: &[u8], answer: &[u8], stage2: &[u8; 20]) -> Option<[u8; 20]> {
    let answer: &[u8; 20] = answer.try_into().ok()?;
    let stage1 = xor(answer, &sha1(&[nonce, stage2]));
    (sha1(&[&stage1]) == *stage2).then_some(stage1)
}

/// `stage2` from the `mysql.user` form `*` + 40 hex digits (either case).
pub fn parse_stored_hash(text: &str) -> Option<[u8; 20]> {
    let hex = text.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `password` is the one whose `stage2` is stored (a cleartext
/// password received over TLS, checked against `mysql.user`).
pub fn password_matches(password: &[u8], stage2: &[u8; 20]) -> bool {
    super::constant_time_eq(&sha1(&[&sha1(&[password])]), stage2)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mysql_common::scramble::scramble_native;

    #[test]
    fn known_vector() {
        // Python: sha1(pw) XOR sha1(nonce + sha1(sha1(pw))), nonce = bytes(range(1, 21)), pw = "secret"
        let nonce: Vec<u8> = (1..=20).collect();
        assert_eq!(
            hex(&scramble(&nonce, "secret")),
            "b32bb3a583e1340c0a1108d58b1be49781ad8c2f"
        );
        assert!(scramble(&nonce, "").is_empty());
    }

    #[test]
    fn recovered_hash_logs_in_like_the_password() {
        let nonce = b"abcdefghijklmnopqrst";
        let answer = scramble_native(nonce, b"s3cret").unwrap();
        // PASSWORD('s3cret') on MariaDB
        let stage2 = parse_stored_hash("*B865CAE8F340F6CE1485A06F4492BB49718DF1EC").unwrap();
        let stage1 = recover_stage1(nonce, &answer, &stage2).expect("right password");
        let other = b"ABCDEFGHIJKLMNOPQRST";
        assert_eq!(
            answer_from_hash(other, &stage1),
            scramble_native(other, b"s3cret").unwrap()
        );
        let wrong = scramble_native(nonce, b"guess").unwrap();
        assert_eq!(recover_stage1(nonce, &wrong, &stage2), None);
        assert_eq!(recover_stage1(nonce, &answer[..19], &stage2), None);
        assert!(password_matches(b"s3cret", &stage2));
        assert!(!password_matches(b"guess", &stage2));
    }

    #[test]
    fn stored_hash_format() {
        assert!(parse_stored_hash("").is_none());
        assert!(parse_stored_hash("58815970BE77B3720276F63DB198B1FA42E5CC02").is_none());
        assert!(parse_stored_hash("*58815970be77b3720276f63db198b1fa42e5cc0").is_none());
        assert!(parse_stored_hash("*58815970be77b3720276f63db198b1fa42e5cc02").is_some());
        assert!(parse_stored_hash("*Z8815970BE77B3720276F63DB198B1FA42E5CC02").is_none());
    }

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
