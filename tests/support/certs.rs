//! A test CA and certificates made in the test with rcgen (ECDSA P-256),
//! written as PEM files: a server certificate for `localhost` and
//! `127.0.0.1` (what `verify_identity` checks), a client certificate, and
//! an unrelated CA (to prove a wrong CA is refused).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// PEM files in a directory of the caller's.
pub struct Certs {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate (SAN: localhost, 127.0.0.1) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate and key (same CA).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA: it signed only the rotated certificate.
    pub other_ca: PathBuf,
    /// A second server certificate for the same names, from the other CA
    /// (rotation tests), and its key.
    pub rotated_cert: PathBuf,
    pub rotated_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

fn leaf(cn: &str, sans: &[&str], issuer: &(rcgen::Certificate, KeyPair)) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Make every file under `dir`.
pub fn make(dir: &Path) -> Certs {
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let root = ca("cutover test CA");
    let (server_cert, server_key) = leaf("localhost", &["localhost", "127.0.0.1"], &root);
    let (client_cert, client_key) = leaf("cutover client", &["cutover-client"], &root);
    let other = ca("someone else's CA");
    let (rotated_cert, rotated_key) =
        leaf("localhost rotated", &["localhost", "127.0.0.1"], &other);
    Certs {
        ca: write("ca.pem", &root.0.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.pem", &other.0.pem()),
        rotated_cert: write("rotated.pem", &rotated_cert),
        rotated_key: write("rotated.key", &rotated_key),
    }
}

impl Certs {
    /// mariadbd flags serving TLS with the server certificate, trusting the CA.
    pub fn mariadb_flags(&self) -> Vec<String> {
        vec![
            format!("--ssl-ca={}", self.ca.display()),
            format!("--ssl-cert={}", self.server_cert.display()),
            format!("--ssl-key={}", self.server_key.display()),
        ]
    }
}
