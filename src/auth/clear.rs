//! `mysql_clear_password`: the password itself, NUL-terminated (MySQL
//! Reference Manual, "Client-Side Cleartext Pluggable Authentication").
//! Used by PAM/LDAP servers and cloud IAM tokens; cutover sends it only
//! over TLS.

/// The plugin's protocol name.
pub const NAME: &[u8] = b"mysql_clear_password";

/// `password NUL`.
pub fn answer(password: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(password.len() + 1);
    a.extend_from_slice(password.as_bytes());
    a.push(0);
    a
}
