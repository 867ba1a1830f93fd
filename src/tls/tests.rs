//! The backend TLS settings: modes, loading errors naming their key, the
//! upgrade decision, the name `verify_identity` checks.

use std::path::{Path, PathBuf};

use mysql_common::constants::CapabilityFlags;

use super::client::{self, Upgrade};
use super::*;
use crate::pattern::Side;

#[test]
fn modes_parse_in_mysql_spellings_and_say_what_they_demand() {
    for (text, mode) in [
        ("disabled", SslMode::Disabled),
        ("PREFERRED", SslMode::Preferred),
        ("required", SslMode::Required),
        ("VERIFY-CA", SslMode::VerifyCa),
        ("verify_identity", SslMode::VerifyIdentity),
    ] {
        assert_eq!(text.parse::<SslMode>(), Ok(mode));
        assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode), "round trip");
    }
    let e = "verify-full".parse::<SslMode>().unwrap_err();
    assert!(
        e.contains("verify-full") && e.contains("verify_identity"),
        "{e}"
    );
    assert_eq!(
        SslMode::default(),
        SslMode::Preferred,
        "MySQL clients' default"
    );
    let demands: Vec<(bool, bool)> = [
        SslMode::Disabled,
        SslMode::Preferred,
        SslMode::Required,
        SslMode::VerifyCa,
        SslMode::VerifyIdentity,
    ]
    .iter()
    .map(|m| (m.requires_tls(), m.verifies_chain()))
    .collect();
    assert_eq!(
        demands,
        [
            (false, false),
            (false, false),
            (true, false),
            (true, true),
            (true, true)
        ]
    );
}

fn keys(mode: &str) -> BackendTlsKeys {
    BackendTlsKeys {
        ssl_mode: Some(mode.into()),
        ..Default::default()
    }
}

/// A self-signed certificate and its key as PEM files in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn loading_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let err = |k: BackendTlsKeys| BackendTls::load(&k).unwrap_err();

    assert_eq!(err(keys("sometimes")).key, "ssl_mode");
    let missing = dir.path().join("nope.pem");
    let e = err(BackendTlsKeys {
        ssl_ca: Some(missing.clone()),
        ..keys("verify_ca")
    });
    assert_eq!(e.key, "ssl_ca");
    assert!(e.message.contains("nope.pem"), "{}", e.message);
    // A key file is not a CA bundle.
    assert_eq!(
        err(BackendTlsKeys {
            ssl_ca: Some(key.clone()),
            ..keys("verify_ca")
        })
        .key,
        "ssl_ca"
    );
    assert_eq!(
        err(BackendTlsKeys {
            ssl_cert: Some(cert.clone()),
            ..keys("required")
        })
        .key,
        "ssl_key",
        "a certificate without its key"
    );
    assert_eq!(
        err(BackendTlsKeys {
            server_public_key: Some(cert.clone()),
            ..keys("disabled")
        })
        .key,
        "server_public_key",
        "a certificate is not an RSA public key"
    );

    let ok = BackendTls::load(&BackendTlsKeys {
        ssl_ca: Some(cert.clone()),
        ssl_cert: Some(cert),
        ssl_key: Some(key),
        ..keys("verify_identity")
    })
    .unwrap();
    assert!(ok.rustls.is_some());
    assert!(BackendTls::load(&keys("disabled"))
        .unwrap()
        .rustls
        .is_none());
}

#[test]
fn the_upgrade_follows_the_mode_and_the_greeting() {
    let with = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SSL;
    let without = CapabilityFlags::CLIENT_PROTOCOL_41;
    for (mode, offered, want) in [
        ("disabled", with, Some(false)),
        ("preferred", with, Some(true)),
        ("preferred", without, Some(false)),
        ("required", with, Some(true)),
        ("required", without, None),
        ("verify_identity", without, None),
    ] {
        let tls = BackendTls::load(&keys(mode)).unwrap();
        let u = Upgrade {
            side: Side::Destination,
            host: "db.example",
            tls: &tls,
            server_caps: offered,
        };
        match (client::wanted(&u), want) {
            (Ok(got), Some(want)) => assert_eq!(got, want, "{mode}"),
            (Err(e), None) => {
                let e = e.to_string();
                assert!(
                    e.contains("destination")
                        && e.contains(mode)
                        && e.contains("does not offer TLS"),
                    "{e}"
                );
            }
            (got, want) => panic!("{mode}: {got:?} but expected {want:?}"),
        }
    }
}

#[test]
fn config_keys_are_checked_naming_side_and_key() {
    use crate::config::Config;
    let base =
        "[source]\nurl = 'mysql://a:b@db1/shop'\n[destination]\nurl = 'mysql://a:b@db2/shop'\n";
    let c = Config::parse(base).unwrap();
    assert_eq!(
        (c.source.tls.mode, c.destination.tls.mode),
        (SslMode::Preferred, SslMode::Preferred),
        "MySQL clients' default"
    );
    assert!(c.tls.cert.is_none() && !c.tls.require);
    let err = |extra: &str, at: &str| {
        let text = base.replace(at, &format!("{at}{extra}\n"));
        Config::parse(&text).unwrap_err().to_string()
    };
    let e = err("ssl_mode = 'verify-full'", "url = 'mysql://a:b@db2/shop'\n");
    assert!(e.contains("destination.ssl_mode"), "{e}");
    let e = err(
        "ssl_ca = '/nonexistent/ca.pem'",
        "url = 'mysql://a:b@db1/shop'\n",
    );
    assert!(
        e.contains("source.ssl_ca") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let tls = |t: &str| {
        Config::parse(&format!("{t}\n{base}"))
            .unwrap_err()
            .to_string()
    };
    let e = tls("[tls]\nrequire = true");
    assert!(e.contains("tls.require"), "{e}");
    let e = tls("[tls]\ncert = '/x.pem'");
    assert!(e.contains("tls.key"), "{e}");
    let e = Config::parse(&format!(
        "{base}[[users]]\nname = 'app'\nrequire_tls = true\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("users[0].require_tls"), "{e}");
}
