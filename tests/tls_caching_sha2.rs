//! caching_sha2_password against a fake MySQL 8 server (no MySQL 8 runs
//! here; `support::mysql8` says what it does). First the fake is checked
//! with PyMySQL, which implements every path; then cutover's backend login
//! is run against it on each path, and its refusals are checked.

mod support;

use std::path::Path;
use std::time::Duration;

use cutover::config::{BackendConfig, Config};
use cutover::pattern::Side;
use support::certs;
use support::mysql8::{server_tls, FakeMysql8, Options, Path as P};

fn options(certs: Option<&certs::Certs>) -> Options {
    Options {
        user: "app".into(),
        password: "s3cret-pw".into(),
        tls: certs.map(|c| server_tls(&c.server_cert, &c.server_key)),
        switch_to: None,
    }
}

/// `[destination]` pointing at the fake as `user:pw`, with `tls` keys.
fn backend(fake: &FakeMysql8, pw: &str, tls: &str) -> BackendConfig {
    let text = format!(
        "[source]\nurl = \"mysql://x@127.0.0.1:1/x\"\n[destination]\nurl = \"mysql://app:{pw}@127.0.0.1:{}/x\"\n{tls}\n",
        fake.port
    );
    Config::parse(&text).expect("config").destination
}

async fn login(cfg: &BackendConfig) -> Result<(), String> {
    cutover::backend::ping(cfg, Side::Destination, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One login with PyMySQL: `port ca key step`; prints `step OK` or `step ERR code`.
const PYMYSQL: &str = r#"
import sys, pymysql
port, ca, key, step = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
kw = {
    'rsa': dict(password='s3cret-pw', ssl_disabled=True),
    'fast': dict(password='s3cret-pw', ssl_disabled=True),
    'wrong': dict(password='nope', ssl_disabled=True),
    'configured-key': dict(password='s3cret-pw', ssl_disabled=True, server_public_key=open(key, 'rb').read()),
    'tls': dict(password='s3cret-pw', ssl={'ca': ca}),
}[step]
try:
    c = pymysql.connect(host='127.0.0.1', port=port, user='app', **kw)
    c.ping()
    c.close()
    print(step, 'OK')
except pymysql.err.MySQLError as e:
    print(step, 'ERR', e.args[0])
"#;

#[tokio::test]
async fn the_fake_is_credible_pymysql_takes_every_path() {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(py.exists(), "{} missing: run scripts/test", py.display());
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let fake = FakeMysql8::start(options(Some(&certs))).await;
    let key = dir.path().join("server_public_key.pem");
    std::fs::write(&key, &fake.public_key_pem).unwrap();
    // One step per process, so the fake's cache state is known at each.
    let run = |step: &'static str| {
        let (py, ca, key, port) = (py.clone(), certs.ca.clone(), key.clone(), fake.port);
        async move {
            let out = tokio::process::Command::new(py)
                .arg("-c")
                .arg(PYMYSQL)
                .args([
                    port.to_string(),
                    ca.display().to_string(),
                    key.display().to_string(),
                    step.into(),
                ])
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text.trim().to_string()
        }
    };
    assert_eq!(run("rsa").await, "rsa OK");
    assert_eq!(run("fast").await, "fast OK");
    assert_eq!(run("wrong").await, "wrong ERR 1045");
    fake.flush_cache();
    assert_eq!(run("configured-key").await, "configured-key OK");
    fake.flush_cache();
    assert_eq!(run("tls").await, "tls OK");
    assert_eq!(
        fake.paths(),
        [
            P::FullRsaRequested,
            P::Fast,
            P::Denied,
            P::FullRsaConfigured,
            P::FullTls
        ]
    );
}

#[tokio::test]
async fn cutover_backend_login_takes_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let fake = FakeMysql8::start(options(Some(&certs))).await;
    let key = dir.path().join("server_public_key.pem");
    std::fs::write(&key, &fake.public_key_pem).unwrap();

    // Plaintext, cold cache: RSA with the key fetched by `02`; then warm: fast.
    let plain = backend(&fake, "s3cret-pw", "ssl_mode = \"disabled\"");
    login(&plain).await.unwrap();
    login(&plain).await.unwrap();
    // Plaintext with server_public_key: RSA without asking.
    fake.flush_cache();
    let keyed = backend(
        &fake,
        "s3cret-pw",
        &format!(
            "ssl_mode = \"disabled\"\nserver_public_key = \"{}\"",
            key.display()
        ),
    );
    login(&keyed).await.unwrap();
    // TLS (verify_identity): the password over TLS; then fast over TLS.
    fake.flush_cache();
    let tls = backend(
        &fake,
        "s3cret-pw",
        &format!(
            "ssl_mode = \"verify_identity\"\nssl_ca = \"{}\"",
            certs.ca.display()
        ),
    );
    login(&tls).await.unwrap();
    login(&tls).await.unwrap();
    // `preferred` (the default) takes TLS when offered.
    fake.flush_cache();
    login(&backend(&fake, "s3cret-pw", "")).await.unwrap();
    assert_eq!(
        fake.paths(),
        [
            P::FullRsaRequested,
            P::Fast,
            P::FullRsaConfigured,
            P::FullTls,
            P::Fast,
            P::FullTls
        ]
    );

    let e = login(&backend(&fake, "wrong", "ssl_mode = \"disabled\""))
        .await
        .unwrap_err();
    assert!(
        e.contains("destination") && e.contains("Access denied") && e.contains("1045"),
        "{e}"
    );
}

#[tokio::test]
async fn refusals_name_the_backend_and_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());

    // TLS required, the server offers none.
    let no_tls = FakeMysql8::start(options(None)).await;
    let e = login(&backend(&no_tls, "s3cret-pw", "ssl_mode = \"required\""))
        .await
        .unwrap_err();
    assert!(
        e.contains("TLS to destination backend") && e.contains("does not offer TLS"),
        "{e}"
    );
    // `preferred` falls back to plaintext (and RSA).
    login(&backend(&no_tls, "s3cret-pw", "")).await.unwrap();
    assert_eq!(no_tls.paths(), [P::FullRsaRequested]);

    // mysql_clear_password in plaintext: refused, never sent.
    let mut o = options(None);
    o.switch_to = Some("mysql_clear_password".into());
    let clear = FakeMysql8::start(o).await;
    let e = login(&backend(&clear, "s3cret-pw", "ssl_mode = \"disabled\""))
        .await
        .unwrap_err();
    assert!(
        e.contains("destination") && e.contains("mysql_clear_password") && e.contains("TLS"),
        "{e}"
    );

    // An unknown plugin.
    let mut o = options(Some(&certs));
    o.switch_to = Some("authentication_ldap_sasl_client".into());
    let ldap = FakeMysql8::start(o).await;
    let e = login(&backend(&ldap, "s3cret-pw", "")).await.unwrap_err();
    assert!(
        e.contains("destination")
            && e.contains("authentication_ldap_sasl_client")
            && e.contains("`app`"),
        "{e}"
    );

    // A certificate from another CA under verify_ca.
    let fake = FakeMysql8::start(options(Some(&certs))).await;
    let tls = format!(
        "ssl_mode = \"verify_ca\"\nssl_ca = \"{}\"",
        certs.other_ca.display()
    );
    let e = login(&backend(&fake, "s3cret-pw", &tls)).await.unwrap_err();
    assert!(
        e.contains("TLS to destination backend") && e.contains("other-ca.pem"),
        "{e}"
    );
}

/// How a session's backend connection is opened: as `creds`.
fn session_params(creds: cutover::backend::Credentials) -> cutover::backend::ConnectParams {
    use mysql_common::constants::{CapabilityFlags as C, MariadbCapabilities};
    cutover::backend::ConnectParams {
        capabilities: C::CLIENT_PROTOCOL_41 | C::CLIENT_DEPRECATE_EOF | C::CLIENT_LONG_PASSWORD,
        mariadb: MariadbCapabilities::empty(),
        credentials: Some(creds),
        collation: 45,
        database: None,
        max_packet: 16 * 1024 * 1024,
        timeout: Duration::from_secs(10),
        attributes: Vec::new(),
    }
}

/// A `[[users]]` login's own backend account logs in with
/// caching_sha2_password on every path, as the URL account does (the URL
/// account's password is wrong here, so only the session's account can
/// succeed); a pass-through login, which knows only SHA1(password), is
/// refused naming the plugin instead of sending a wrong answer.
#[tokio::test]
async fn a_sessions_own_account_logs_in_with_caching_sha2() {
    use cutover::backend::{Backend, Credentials, Secret};
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let fake = FakeMysql8::start(options(Some(&certs))).await;
    let own = || session_params(Credentials::password("app", "s3cret-pw"));
    let tls = backend(
        &fake,
        "url-account-pw",
        &format!(
            "ssl_mode = \"verify_identity\"\nssl_ca = \"{}\"",
            certs.ca.display()
        ),
    );
    Backend::<()>::connect(&tls, Side::Destination, &own())
        .await
        .expect("the session's account over TLS");
    fake.flush_cache();
    let plain = backend(&fake, "url-account-pw", "ssl_mode = \"disabled\"");
    Backend::<()>::connect(&plain, Side::Destination, &own())
        .await
        .expect("the session's account by RSA");
    Backend::<()>::connect(&plain, Side::Destination, &own())
        .await
        .expect("the session's account, fast path");
    let hash_only = session_params(Credentials {
        user: "app".into(),
        secret: Secret::NativeHash([7; 20]),
    });
    let e = Backend::<()>::connect(&plain, Side::Destination, &hash_only)
        .await
        .err()
        .expect("a native hash cannot answer caching_sha2_password")
        .to_string();
    assert!(
        e.contains("caching_sha2_password")
            && e.contains("pass-through")
            && e.contains("destination"),
        "{e}"
    );
    assert_eq!(
        fake.paths(),
        [P::FullTls, P::FullRsaRequested, P::Fast],
        "no login attempt reached the fake with the hash"
    );
}
