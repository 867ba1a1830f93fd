//! TLS on both sides against real MariaDB servers that refuse plaintext
//! (`--require-secure-transport=ON`), with certificates made in the test:
//! cutover verifies both backends' identity, logs in to the source as an
//! `ed25519` user, serves its own clients over TLS, and the validator and
//! fixer connect over TLS too.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cutover::config::Config;
use cutover::pattern::{Pattern, PatternHandle, Side};
use cutover::validate::Validator;
use mysql_async::prelude::*;
use support::certs::{self, Certs};
use support::proxy::{server_code, TestProxy};
use support::Pair;

/// A pair refusing plaintext, serving the test CA's certificate, with an
/// `ed25519` account `edu`/`edpw` on both servers.
async fn tls_pair(certs: &Certs) -> Pair {
    let mut flags = certs.mariadb_flags();
    flags.push("--require-secure-transport=ON".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let pair = Pair::start_with(&flags, &flags).await;
    for db in [&pair.source, &pair.destination] {
        db.exec(
            "INSTALL SONAME 'auth_ed25519';\n\
             CREATE USER 'edu'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw');\n\
             GRANT ALL ON *.* TO 'edu'@'%';",
        )
        .await;
    }
    pair
}

/// Each `[[users]]` login's backend accounts (issue 18: a login is its own
/// account on the backends): the ed25519 user on the source, `app` on the
/// destination.
const ACCOUNTS: &str = "source_user = \"edu\"\nsource_password = \"edpw\"\n\
    destination_user = \"app\"\ndestination_password = \"app\"\n";

/// cutover's config: `verify_identity` on both sides (the source as the
/// ed25519 user), `[tls]` for clients (required), two `[[users]]`.
fn config(pair: &Pair, certs: &Certs, pattern: Pattern, data_dir: &Path) -> Config {
    config_with(pair, certs, pattern, data_dir, "verify_identity", &certs.ca)
}

/// As [`config`], with the destination's `ssl_mode` and `ssl_ca` given.
fn config_with(
    pair: &Pair,
    certs: &Certs,
    pattern: Pattern,
    data_dir: &Path,
    dst_mode: &str,
    dst_ca: &Path,
) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ninitial_pattern = \"{pattern}\"\nconnect_timeout_ms = 2000\n\
         data_dir = \"{dir}\"\n\
         [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nrequire = true\n\
         [source]\nurl = \"mysql://edu:edpw@127.0.0.1:{sp}/shop\"\nssl_mode = \"verify_identity\"\nssl_ca = \"{ca}\"\n\
         [destination]\nurl = \"mysql://app:app@127.0.0.1:{dp}/shop\"\nssl_mode = \"{dst_mode}\"\nssl_ca = \"{dst_ca}\"\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n{accounts}\
         [[users]]\nname = \"secure\"\npassword = \"pw\"\nrequire_tls = true\n{accounts}\
         [validation]\nrecheck_delay_ms = 0\n",
        dir = data_dir.display(),
        cert = certs.server_cert.display(),
        key = certs.server_key.display(),
        ca = certs.ca.display(),
        dst_ca = dst_ca.display(),
        accounts = ACCOUNTS,
        sp = pair.source.port,
        dp = pair.destination.port,
    );
    Config::parse(&text).expect("valid TLS config")
}

/// A client of cutover verifying its certificate against `ca`.
fn client_opts(proxy: &TestProxy, ca: &Path, user: &str, pw: &str) -> mysql_async::OptsBuilder {
    let ssl = mysql_async::SslOpts::default()
        .with_root_certs(vec![ca.to_path_buf().into()])
        .with_disable_built_in_roots(true);
    proxy
        .opts()
        .user(Some(user))
        .pass(Some(pw))
        .ssl_opts(Some(ssl))
}

#[tokio::test]
async fn src_first_writes_land_on_both_sides_over_verified_tls_and_ed25519() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    let proxy = TestProxy::from_config(config(&pair, &certs, Pattern::SrcFirst, dir.path())).await;
    let mut app = mysql_async::Conn::new(client_opts(&proxy, &certs.ca, "app", "app"))
        .await
        .expect("TLS client through cutover");
    app.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    app.query_drop("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    app.exec_drop("UPDATE t SET v = ? WHERE id = ?", ("deux", 2))
        .await
        .unwrap();

    let who: Option<String> = app.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(
        who.as_deref(),
        Some("edu@%"),
        "the source login is the ed25519 account"
    );
    let cipher: Option<(String, String)> = app
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    let cipher = cipher.unwrap().1;
    assert!(!cipher.is_empty(), "cutover's source connection is TLS");

    let want = vec![(1, "one".to_string()), (2, "deux".to_string())];
    for db in [&pair.source, &pair.destination] {
        let rows: Vec<(i32, String)> = db.query("SELECT id, v FROM t ORDER BY id").await;
        assert_eq!(rows, want);
    }
    // The mirror connection is TLS too: the destination lists it with a cipher.
    let dst_tls: Vec<(String,)> = pair
        .destination
        .query(
            "SELECT s.VARIABLE_VALUE FROM information_schema.SESSION_STATUS s WHERE s.VARIABLE_NAME = 'SSL_CIPHER'",
        )
        .await;
    assert!(
        !dst_tls[0].0.is_empty(),
        "the harness connection itself is TLS"
    );
    drop(app);
    proxy.stop().await;
}

#[tokio::test]
async fn validation_and_fixer_work_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    pair.source
        .exec("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_300")
        .await;
    pair.destination
        .exec("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_290; UPDATE t SET v = -1 WHERE id = 7")
        .await;
    let cfg = config(&pair, &certs, Pattern::SrcFirst, dir.path());
    let v = Validator::new(Arc::new(cfg), PatternHandle::new(Pattern::SrcFirst)).unwrap();
    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(
        report.totals.found(),
        11,
        "10 missing + 1 different: {report:?}"
    );
    let fixed = v.fix_open().await.unwrap();
    assert_eq!((fixed.fixed, fixed.failed), (11, 0), "{fixed:?}");
    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert!(report.consistent(), "{report:?}");
    let n: Vec<(i64, i64)> = pair
        .destination
        .query("SELECT COUNT(*), SUM(v) FROM t")
        .await;
    assert_eq!(n, vec![(300, 300 * 301 / 2)]);
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_an_error_naming_the_side() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    let cfg = config_with(
        &pair,
        &certs,
        Pattern::DstOnly,
        dir.path(),
        "verify_ca",
        &certs.other_ca,
    );
    let e = cutover::backend::ping(&cfg.destination, Side::Destination, Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("destination") && e.contains("TLS"), "{e}");
    assert!(
        e.contains("other-ca.pem") && e.contains("verify_ca"),
        "names the CA and mode: {e}"
    );
    // The validator's own connections refuse it too, naming the side.
    let v = Validator::new(Arc::new(cfg.clone()), PatternHandle::new(Pattern::DstOnly)).unwrap();
    let report = v.run_full_to_completion(None, false).await.unwrap();
    let why = report.error.clone().unwrap_or_default();
    assert!(
        why.contains("destination") && why.to_lowercase().contains("certificate"),
        "{report:?}"
    );

    // Through cutover (dst_only): the client gets 1429 naming the destination.
    let proxy = TestProxy::from_config(cfg).await;
    let err = mysql_async::Conn::new(client_opts(&proxy, &certs.ca, "app", "app"))
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1429, "{err}");
    assert!(err.to_string().contains("destination"), "{err}");
    proxy.stop().await;

    // verify_identity by DNS name: `localhost` is in the certificate too.
    let mut cfg = config(&pair, &certs, Pattern::DstOnly, dir.path());
    cfg.destination.host = "localhost".into();
    cutover::backend::ping(&cfg.destination, Side::Destination, Duration::from_secs(5))
        .await
        .expect("localhost is in the certificate");
}

#[tokio::test]
async fn plaintext_is_refused_by_the_backends_and_by_cutover_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;

    // ssl_mode = disabled against require_secure_transport: the server's own refusal.
    let plain = Config::parse(&format!(
        "[source]\nurl = \"{}\"\nssl_mode = \"disabled\"\n[destination]\nurl = \"{}\"\n",
        pair.source.url("shop"),
        pair.destination.url("shop")
    ))
    .unwrap();
    let e = cutover::backend::ping(&plain.source, Side::Source, Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    // MariaDB 10.11 answers a plaintext login under require_secure_transport
    // with 1045 (MySQL 8: 3159); either way it is the server's ERR, relayed.
    assert!(
        e.contains("source backend refused") && e.contains("(1045)"),
        "{e}"
    );

    // `[tls] require = true`: a plaintext client gets 3159.
    let proxy = TestProxy::from_config(config(&pair, &certs, Pattern::SrcOnly, dir.path())).await;
    let err = mysql_async::Conn::new(proxy.opts()).await.unwrap_err();
    assert_eq!(server_code(&err), 3159, "{err}");
    mysql_async::Conn::new(client_opts(&proxy, &certs.ca, "app", "app"))
        .await
        .expect("the same login over TLS");
    proxy.stop().await;
}

#[tokio::test]
async fn require_tls_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    let mut cfg = config(&pair, &certs, Pattern::SrcOnly, dir.path());
    cfg.tls.require = false;
    let proxy = TestProxy::from_config(cfg).await;
    // `app` may use plaintext; `secure` (require_tls) may not.
    let mut app = proxy.conn().await;
    let one: Option<i32> = app.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let err = mysql_async::Conn::new(proxy.opts().user(Some("secure")).pass(Some("pw")))
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 3159, "{err}");
    assert!(err.to_string().contains("secure"), "names the user: {err}");
    let wrong = mysql_async::Conn::new(proxy.opts().user(Some("secure")).pass(Some("nope")))
        .await
        .unwrap_err();
    assert_eq!(
        server_code(&wrong),
        1045,
        "a wrong password is access denied first"
    );
    mysql_async::Conn::new(client_opts(&proxy, &certs.ca, "secure", "pw"))
        .await
        .expect("secure over TLS");
    // COM_CHANGE_USER to the TLS-only user on a plaintext session is refused.
    let changed = app
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("secure".into()))
                .with_pass(Some("pw".into())),
        )
        .await;
    assert!(changed.is_err(), "plaintext session cannot become `secure`");
    proxy.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&certs.server_cert, &live_cert).unwrap();
    std::fs::copy(&certs.server_key, &live_key).unwrap();
    let mut cfg = config(&pair, &certs, Pattern::SrcOnly, dir.path());
    cfg.tls.cert = Some(live_cert.clone());
    cfg.tls.key = Some(live_key.clone());
    let listener = cutover::listener::Listener::bind(
        Arc::new(cfg),
        PatternHandle::new(Pattern::SrcOnly),
        cutover::stats::DataPathStats::new(),
    )
    .await
    .unwrap();
    let port = listener.local_addr().port();
    tokio::spawn(cutover::tls::server::reload_on_sighup(listener.tls()));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(listener.run(stop.clone()));
    let opts = |ca: &Path| {
        let ssl = mysql_async::SslOpts::default()
            .with_root_certs(vec![ca.to_path_buf().into()])
            .with_disable_built_in_roots(true);
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("app"))
            .pass(Some("app"))
            .prefer_socket(false)
            .ssl_opts(Some(ssl))
    };
    let mut before = mysql_async::Conn::new(opts(&certs.ca)).await.unwrap();

    // Rotate to a certificate from another CA, then SIGHUP this process.
    std::fs::copy(&certs.rotated_cert, &live_cert).unwrap();
    std::fs::copy(&certs.rotated_key, &live_key).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rotated = None;
    for _ in 0..100 {
        if let Ok(c) = mysql_async::Conn::new(opts(&certs.other_ca)).await {
            rotated = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut after = rotated.expect("new connections get the rotated certificate");
    assert!(
        mysql_async::Conn::new(opts(&certs.ca)).await.is_err(),
        "the old certificate is gone for new handshakes"
    );
    let a: Option<i32> = before.query_first("SELECT 1").await.unwrap();
    let b: Option<i32> = after.query_first("SELECT 2").await.unwrap();
    assert_eq!(
        (a, b),
        (Some(1), Some(2)),
        "the connection made before the reload still works"
    );

    // A broken file is refused and the current certificate stays.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    mysql_async::Conn::new(opts(&certs.other_ca))
        .await
        .expect("still the rotated certificate");
    drop((before, after));
    stop.cancel();
    let _ = task.await;
}

/// Real clients over TLS to cutover (verifying its certificate), cutover
/// over TLS to both backends (verify_identity), in src_first: each client's
/// write lands on both sides.
#[tokio::test]
async fn real_clients_over_tls_through_cutover() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join(".venv/bin/python");
    let node_dir = root.join("tests/compat/node");
    assert!(py.exists(), "{} missing: run scripts/test", py.display());
    assert!(
        node_dir.join("node_modules/mysql2").exists(),
        "node_modules missing: run scripts/test"
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    let proxy = TestProxy::from_config(config(&pair, &certs, Pattern::SrcFirst, dir.path())).await;
    let mut app = mysql_async::Conn::new(client_opts(&proxy, &certs.ca, "app", "app"))
        .await
        .unwrap();
    app.query_drop("CREATE TABLE clients (name VARCHAR(20) PRIMARY KEY)")
        .await
        .unwrap();

    let (port, ca) = (proxy.port.to_string(), certs.ca.display().to_string());
    let insert = |name: &str| format!("INSERT INTO clients VALUES ('{name}')");
    let pymysql = format!(
        "import pymysql\nc = pymysql.connect(host='127.0.0.1', port={port}, user='app', password='app', \
         database='shop', ssl={{'ca': '{ca}'}})\nc.cursor().execute(\"{}\")\nc.commit()\nprint('OK')",
        insert("pymysql")
    );
    // caching_sha2_password over TLS: full authentication, no switch.
    let connector = format!(
        "import mysql.connector\nc = mysql.connector.connect(host='127.0.0.1', port={port}, user='app', \
         password='app', database='shop', use_pure=True, ssl_ca='{ca}', ssl_verify_identity=True, \
         auth_plugin='caching_sha2_password')\ncur = c.cursor()\ncur.execute(\"{}\")\nc.commit()\n\
         try:\n    mysql.connector.connect(host='127.0.0.1', port={port}, user='app', password='app', \
         use_pure=True, ssl_disabled=True)\n    print('plaintext accepted')\n\
         except mysql.connector.Error as e:\n    print('OK', e.errno)",
        insert("connector")
    );
    let mysql2 = format!(
        "const mysql = require('mysql2/promise'); const fs = require('fs');\n\
         (async () => {{ const c = await mysql.createConnection({{host: '127.0.0.1', port: {port}, user: 'app', \
         password: 'app', database: 'shop', ssl: {{ca: fs.readFileSync('{ca}')}}}});\n\
         await c.query(\"{}\"); await c.end(); console.log('OK'); }})().catch(e => {{ console.log('ERR', e.message); process.exit(1); }});",
        insert("mysql2")
    );
    let runs: Vec<(&str, tokio::process::Command)> = vec![
        ("pymysql", {
            let mut c = tokio::process::Command::new(&py);
            c.arg("-c").arg(&pymysql);
            c
        }),
        ("connector", {
            let mut c = tokio::process::Command::new(&py);
            c.arg("-c").arg(&connector);
            c
        }),
        ("mysql2", {
            let mut c = tokio::process::Command::new("node");
            c.current_dir(&node_dir).arg("-e").arg(&mysql2);
            c
        }),
        ("cli", {
            let mut c = tokio::process::Command::new("mariadb");
            c.args([
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                "localhost",
                "-P",
                &port,
                "-u",
                "app",
                "-papp",
            ])
            .args([
                "--ssl",
                &format!("--ssl-ca={ca}"),
                "--ssl-verify-server-cert",
                "shop",
                "-e",
            ])
            .arg(insert("cli"));
            c
        }),
    ];
    for (name, mut cmd) in runs {
        let out = cmd
            .output()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e} (run scripts/test)"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stdout}{stderr}");
        if name == "connector" {
            assert_eq!(
                stdout.trim(),
                "OK 3159",
                "plaintext refused with 3159: {stderr}"
            );
        } else if name != "cli" {
            assert_eq!(stdout.trim(), "OK", "{name}: {stderr}");
        }
    }
    let want: Vec<String> = ["cli", "connector", "mysql2", "pymysql"]
        .map(String::from)
        .to_vec();
    for db in [&pair.source, &pair.destination] {
        let got: Vec<String> = db.query("SELECT name FROM clients ORDER BY name").await;
        assert_eq!(got, want, "every client's write on both sides");
    }
    drop(app);
    proxy.stop().await;
}

/// MariaDB's `auth_ed25519` message is 32 random bytes; one in 256 ends in
/// a 0 byte, which a client must sign too (a NUL-stripping parser fails
/// those logins with 1045). 1000 verified-TLS logins as the ed25519 user
/// meet such a message most runs (the deterministic check is the unit test
/// `auth::client::tests::an_ed25519_message_ending_in_nul_is_signed_whole`);
/// every one must succeed.
#[tokio::test]
async fn every_ed25519_login_succeeds_whatever_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs::make(dir.path());
    let pair = tls_pair(&certs).await;
    let cfg = config(&pair, &certs, Pattern::SrcOnly, dir.path());
    let mut refused = Vec::new();
    for _ in 0..1000 {
        if let Err(e) =
            cutover::backend::ping(&cfg.source, Side::Source, Duration::from_secs(10)).await
        {
            refused.push(e.to_string());
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 1000 refused: {:?}",
        refused.len(),
        refused.first()
    );
}
