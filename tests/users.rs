//! Issue 18 item 4: every client is itself on the backends. A `[[users]]`
//! login logs in to each backend as its own account (default: the same name
//! and password on both), so the backends' grants apply through cutover;
//! COM_CHANGE_USER re-logs the backends in as the new user; the URL account
//! is only for cutover's own work. `auth = "passthrough"` lets accounts
//! created on the server at run time log in without a config change.

mod support;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::proxy::{server_code, TestProxy};
use support::Pair;

const ACCESS_DENIED: u16 = 1045;
/// ER_TABLEACCESS_DENIED_ERROR / ER_DBACCESS_DENIED_ERROR: the backend's grants apply.
const NO_RIGHTS: [u16; 2] = [1142, 1044];

/// Accounts on both servers: `ro` may only read `shop`, `test2` owns only
/// `test2.*`.
const ACCOUNTS: &str = "CREATE USER 'ro'@'%' IDENTIFIED BY 'ro_pw'; \
    GRANT SELECT ON shop.* TO 'ro'@'%'; \
    CREATE DATABASE test2; \
    CREATE USER 'test2'@'%' IDENTIFIED BY 'test2_pw'; \
    GRANT ALL ON test2.* TO 'test2'@'%'; \
    CREATE TABLE shop.t (id INT PRIMARY KEY); \
    CREATE TABLE test2.t (id INT PRIMARY KEY)";

const USERS: &str = "[[users]]\nname = \"app\"\npassword = \"app\"\n\
    [[users]]\nname = \"ro\"\npassword = \"ro_pw\"\n\
    [[users]]\nname = \"test2\"\npassword = \"test2_pw\"\n";

async fn pair_with_accounts() -> Pair {
    let pair = Pair::start().await;
    pair.source.exec(ACCOUNTS).await;
    pair.destination.exec(ACCOUNTS).await;
    pair
}

async fn current_user(c: &mut mysql_async::Conn) -> String {
    c.query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn each_configured_user_is_itself_on_both_backends() {
    let pair = pair_with_accounts().await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, USERS).await;
    let opts = |u: &str, p: &str| proxy.opts().user(Some(u)).pass(Some(p));
    let mut app = mysql_async::Conn::new(opts("app", "app")).await.unwrap();
    let mut ro = mysql_async::Conn::new(opts("ro", "ro_pw")).await.unwrap();
    assert_eq!(current_user(&mut app).await, "app@%");
    assert_eq!(current_user(&mut ro).await, "ro@%");
    // The read-only user stays read-only: refused by the source itself.
    let e = ro.query_drop("INSERT INTO t VALUES (1)").await.unwrap_err();
    assert!(NO_RIGHTS.contains(&server_code(&e)), "{e}");
    let n: Option<i64> = ro.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(0));
    // A write by app is mirrored as app: the destination saw user app.
    app.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let dst: Vec<i32> = pair.destination.query("SELECT id FROM t").await;
    assert_eq!(dst, [1]);
    // On the destination (after a switch) it is the same user again.
    proxy.set_pattern(Pattern::DstFirst);
    assert_eq!(current_user(&mut ro).await, "ro@%");
    let e = ro.query_drop("DELETE FROM t").await.unwrap_err();
    assert!(NO_RIGHTS.contains(&server_code(&e)), "{e}");
    // Backend threads run as the client's user, not the URL account.
    let users: Vec<String> = pair
        .destination
        .query("SELECT DISTINCT USER FROM information_schema.PROCESSLIST WHERE DB = 'shop' AND USER = 'ro'")
        .await;
    assert_eq!(users, ["ro"]);
    proxy.stop().await;
}

#[tokio::test]
async fn change_user_relogs_the_backends_in_as_the_new_user() {
    let pair = pair_with_accounts().await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, USERS).await;
    let mut c = proxy.conn().await;
    assert_eq!(current_user(&mut c).await, "app@%");
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("test2".into()))
            .with_pass(Some("test2_pw".into()))
            .with_db_name(Some("test2".into())),
    )
    .await
    .unwrap();
    assert_eq!(current_user(&mut c).await, "test2@%");
    // test2 has rights on test2.* only.
    c.query_drop("INSERT INTO test2.t VALUES (1)")
        .await
        .unwrap();
    let e = c
        .query_drop("INSERT INTO shop.t VALUES (1)")
        .await
        .unwrap_err();
    assert!(NO_RIGHTS.contains(&server_code(&e)), "{e}");
    let dst: Vec<i32> = pair.destination.query("SELECT id FROM test2.t").await;
    assert_eq!(dst, [1], "mirrored as test2");
    // A wrong password for the new user ends the session, as on MariaDB.
    let bad = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("nope".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&bad), ACCESS_DENIED);
    proxy.stop().await;
}

#[tokio::test]
async fn a_configured_user_can_map_to_other_backend_accounts() {
    let pair = pair_with_accounts().await;
    let users = "[[users]]\nname = \"reporting\"\npassword = \"r\"\n\
                 source_user = \"ro\"\nsource_password = \"ro_pw\"\n\
                 destination_user = \"ro\"\ndestination_password = \"ro_pw\"\n";
    let proxy = TestProxy::start_with(&pair, Pattern::SrcOnly, users).await;
    let opts = proxy.opts().user(Some("reporting")).pass(Some("r"));
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    assert_eq!(current_user(&mut c).await, "ro@%");
    // The URL account (app) is not a login unless listed.
    let e = mysql_async::Conn::new(proxy.opts()).await.unwrap_err();
    assert_eq!(server_code(&e), ACCESS_DENIED);
    proxy.stop().await;
}

#[tokio::test]
async fn passthrough_logs_in_accounts_created_at_run_time_as_themselves() {
    let pair = pair_with_accounts().await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, "auth = \"passthrough\"").await;
    // Created after cutover started, on both servers, and in no config.
    let late = "CREATE USER 'late'@'%' IDENTIFIED BY 'late_pw'; GRANT ALL ON shop.* TO 'late'@'%'";
    pair.source.exec(late).await;
    pair.destination.exec(late).await;
    let opts = |u: &str, p: &str| proxy.opts().user(Some(u)).pass(Some(p));
    let mut c = mysql_async::Conn::new(opts("late", "late_pw"))
        .await
        .unwrap();
    assert_eq!(current_user(&mut c).await, "late@%");
    c.query_drop("INSERT INTO t VALUES (5)").await.unwrap();
    let dst: Vec<i32> = pair.destination.query("SELECT id FROM t").await;
    assert_eq!(
        dst,
        [5],
        "mirrored, logged in as late on the destination too"
    );
    // Wrong password and unknown users are refused like a server would.
    for (u, p) in [("late", "nope"), ("nobody", "x"), ("late", "")] {
        let e = mysql_async::Conn::new(opts(u, p)).await.unwrap_err();
        assert_eq!(server_code(&e), ACCESS_DENIED, "{u}/{p}");
    }
    // The server's grants apply: ro may not write.
    let mut ro = mysql_async::Conn::new(opts("ro", "ro_pw")).await.unwrap();
    let e = ro.query_drop("INSERT INTO t VALUES (6)").await.unwrap_err();
    assert!(NO_RIGHTS.contains(&server_code(&e)), "{e}");
    // A password changed on the server applies at the next login.
    pair.source
        .exec("SET PASSWORD FOR 'late'@'%' = PASSWORD('new_pw')")
        .await;
    pair.destination
        .exec("SET PASSWORD FOR 'late'@'%' = PASSWORD('new_pw')")
        .await;
    let e = mysql_async::Conn::new(opts("late", "late_pw"))
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), ACCESS_DENIED);
    let mut c = mysql_async::Conn::new(opts("late", "new_pw"))
        .await
        .unwrap();
    assert_eq!(current_user(&mut c).await, "late@%");
    proxy.stop().await;
}

/// A `[[users]]` login whose backend accounts use MariaDB's `ed25519`
/// plugin (the password is known to cutover, so every plugin it answers
/// works): the client logs in with mysql_native_password, cutover signs the
/// backends' ed25519 challenges, and writes land on both sides as that
/// account.
#[tokio::test]
async fn a_configured_users_backend_accounts_may_use_ed25519() {
    let pair = Pair::start().await;
    for db in [&pair.source, &pair.destination] {
        db.exec(
            "INSTALL SONAME 'auth_ed25519'; \
             CREATE USER 'edu'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed_pw'); \
             GRANT ALL ON shop.* TO 'edu'@'%'; \
             CREATE TABLE shop.t (id INT PRIMARY KEY)",
        )
        .await;
    }
    let users = "[[users]]\nname = \"ed\"\npassword = \"client_pw\"\n\
        source_user = \"edu\"\nsource_password = \"ed_pw\"\n\
        destination_user = \"edu\"\ndestination_password = \"ed_pw\"\n";
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, users).await;
    let opts = proxy.opts().user(Some("ed")).pass(Some("client_pw"));
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    assert_eq!(current_user(&mut c).await, "edu@%");
    c.query_drop("INSERT INTO t VALUES (7)").await.unwrap();
    for db in [&pair.source, &pair.destination] {
        let ids: Vec<i32> = db.query("SELECT id FROM t").await;
        assert_eq!(ids, [7]);
    }
    let writers: Vec<String> = pair
        .destination
        .query("SELECT DISTINCT USER FROM information_schema.PROCESSLIST WHERE USER = 'edu'")
        .await;
    assert_eq!(
        writers,
        ["edu"],
        "the mirror logged in as the ed25519 account"
    );
    proxy.stop().await;
}
