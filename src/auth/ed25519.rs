//! MariaDB's `client_ed25519` (server plugin `auth_ed25519`): the client
//! signs the server's 32-byte message with an Ed25519 key whose secret is
//! the first half of SHA-512(password) (MariaDB Knowledge Base,
//! "Authentication Plugin - ed25519"). The signature comes from
//! mysql_common (feature `client_ed25519`).

/// The plugin's protocol name.
pub const NAME: &[u8] = b"client_ed25519";

/// The 64-byte signature of `message`.
pub fn sign(message: &[u8], password: &str) -> Vec<u8> {
    mysql_common::scramble::create_response_for_ed25519(password.as_bytes(), message).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_deterministic_and_keyed_by_the_password() {
        let msg = [7u8; 32];
        let a = sign(&msg, "pw");
        assert_eq!(a.len(), 64);
        assert_eq!(a, sign(&msg, "pw"), "Ed25519 signatures are deterministic");
        assert_ne!(a, sign(&msg, "other"));
        assert_ne!(a, sign(&[8u8; 32], "pw"));
    }
}
