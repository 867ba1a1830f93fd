//! `caching_sha2_password` (MySQL 8.0/8.4's default), as a client (MySQL
//! Client/Server Protocol, "Caching_sha2_password information"):
//!
//! 1. the scramble `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) ‖ nonce)`;
//! 2. the server answers `01 03` (fast authentication: its cache knew the
//!    account; the OK follows) or `01 04` (full authentication);
//! 3. full authentication over TLS: the password, NUL-terminated;
//!    without TLS: RSA-OAEP(SHA-1) of `(pw ‖ NUL) XOR nonce` (the nonce
//!    repeated), with the configured `server_public_key` or the key the
//!    server sends after the request `02` (as `01` + PEM).

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

/// The plugin's protocol name.
pub const NAME: &[u8] = b"caching_sha2_password";
/// Second byte of `01 03`: fast authentication succeeded.
pub const FAST_AUTH_OK: u8 = 0x03;
/// Second byte of `01 04`: the server wants full authentication.
pub const FULL_AUTH: u8 = 0x04;
/// The client's request for the server's RSA public key.
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;

/// The 32-byte scramble of `nonce`; empty for an empty password.
pub fn scramble(nonce: &[u8], password: &str) -> Vec<u8> {
    mysql_common::scramble::scramble_sha256(nonce, password.as_bytes())
        .map(|a| a.to_vec())
        .unwrap_or_default()
}

/// `(password ‖ NUL) XOR nonce`, the nonce repeated as often as needed:
/// what is RSA-encrypted (it binds the ciphertext to this connection).
pub fn xor_with_nonce(password: &str, nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(password.len() + 1);
    out.extend_from_slice(password.as_bytes());
    out.push(0);
    if !nonce.is_empty() {
        for (i, b) in out.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
    }
    out
}

/// A server RSA public key in PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC
/// KEY`, what MySQL sends and writes to `public_key.pem`) or PKCS#1 (`BEGIN
/// RSA PUBLIC KEY`).
///
/// # Errors
/// Not PEM, or not an RSA public key.
pub fn parse_public_key(pem: &[u8]) -> Result<RsaPublicKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM text file".to_string())?;
    let text = text.trim_matches(char::from(0)).trim();
    RsaPublicKey::from_public_key_pem(text)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(text))
        .map_err(|e| format!("not an RSA public key in PEM ({e})"))
}

/// RSA-OAEP(SHA-1) of [`xor_with_nonce`]: the full-authentication answer
/// without TLS (MySQL ≥ 8.0.5 uses OAEP padding).
///
/// # Errors
/// The password is too long for the key (OAEP-SHA1 fits `key bytes − 42`
/// bytes: 214 for a 2048-bit key).
pub fn encrypt_password(
    password: &str,
    nonce: &[u8],
    key: &RsaPublicKey,
) -> Result<Vec<u8>, String> {
    let plain = xor_with_nonce(password, nonce);
    key.encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &plain)
        .map_err(|e| format!("cannot RSA-encrypt the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::native::tests::hex;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::RsaPrivateKey;

    fn nonce() -> Vec<u8> {
        (1..=20).collect()
    }

    #[test]
    fn scramble_known_vector() {
        // Python: h1 = sha256(pw); h1 XOR sha256(sha256(h1) + nonce)
        assert_eq!(
            hex(&scramble(&nonce(), "secret")),
            "746ebe205d56a0707acb3e796e834e0dd7b1d61743b26bd5202c7a623230c7c9"
        );
        assert!(scramble(&nonce(), "").is_empty());
    }

    #[test]
    fn xor_known_vector() {
        // "secret\0" XOR 01 02 03 04 05 06 07
        assert_eq!(hex(&xor_with_nonce("secret", &nonce())), "72676076607207");
        // longer than the nonce: it repeats
        let long = "x".repeat(45);
        let x = xor_with_nonce(&long, &nonce());
        assert_eq!(x[20], b'x' ^ 1);
        assert_eq!(x[45], nonce()[45 % 20], "the NUL terminator XOR the nonce");
    }

    #[test]
    fn rsa_oaep_sha1_round_trip_and_key_formats() {
        let mut rng = rand::thread_rng();
        let private = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = RsaPublicKey::from(&private);
        let spki = public.to_public_key_pem(Default::default()).unwrap();
        let key = parse_public_key(spki.as_bytes()).unwrap();
        assert_eq!(key, public);
        let pkcs1 =
            rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(&public, Default::default()).unwrap();
        assert_eq!(parse_public_key(pkcs1.as_bytes()).unwrap(), public);

        let sealed = encrypt_password("secret", &nonce(), &key).unwrap();
        assert_eq!(sealed.len(), 256);
        let opened = private.decrypt(Oaep::new::<sha1::Sha1>(), &sealed).unwrap();
        assert_eq!(
            hex(&opened),
            "72676076607207",
            "OAEP(SHA-1) of (pw ‖ NUL) XOR nonce"
        );
        assert_ne!(
            sealed,
            encrypt_password("secret", &nonce(), &key).unwrap(),
            "randomised padding"
        );

        let too_long = "p".repeat(300);
        assert!(encrypt_password(&too_long, &nonce(), &key).is_err());
        assert!(parse_public_key(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }
}
