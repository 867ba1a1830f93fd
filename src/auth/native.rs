//! `mysql_native_password`: `SHA1(pw) XOR SHA1(nonce ‖ SHA1(SHA1(pw)))`
//! (MySQL Client/Server Protocol, "Native Authentication").

/// The plugin's protocol name.
pub const NAME: &[u8] = b"mysql_native_password";

/// The 20-byte answer to `nonce`; empty for an empty password.
pub fn scramble(nonce: &[u8], password: &str) -> Vec<u8> {
    mysql_common::scramble::scramble_native(nonce, password.as_bytes())
        .map(|a| a.to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
