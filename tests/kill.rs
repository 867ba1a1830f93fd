//! Issue 18 item 2: a client can never name a backend thread id. KILL is
//! found after comments and in every statement of a multi-statement; a
//! cutover id is translated to that session's backend threads, what cannot
//! be translated is refused before anything runs (ER_NOT_SUPPORTED_YET).

mod proxy_support;
mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use proxy_support::{server_code, TestProxy};
use support::{MariaDb, Pair};

const NOT_SUPPORTED: u16 = 1235;
const NO_SUCH_THREAD: u16 = 1094;

/// A direct client of `db` (another application, not behind cutover) whose
/// backend thread id is larger than any id this test's cutover gives out,
/// so the only way to reach it through cutover is to name its thread id.
async fn foreign_client(db: &MariaDb) -> mysql_async::Conn {
    loop {
        let c = db.conn().await;
        if c.id() > 50 {
            return c;
        }
        drop(c);
    }
}

async fn alive(c: &mut mysql_async::Conn) -> bool {
    c.query_drop("SELECT 1").await.is_ok()
}

#[tokio::test]
async fn kill_after_a_comment_is_translated() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    for sql in [
        "/* x */ KILL {}",
        "-- why\nKILL CONNECTION {} /* trailing */ ;",
        "/*!KILL {}*/",
    ] {
        let mut victim = proxy.conn().await;
        let mut killer = proxy.conn().await;
        killer
            .query_drop(sql.replace("{}", &victim.id().to_string()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(!alive(&mut victim).await, "{sql}: the victim was killed");
        assert!(alive(&mut killer).await, "{sql}");
    }
    // KILL QUERY after a comment stops the statement, not the connection.
    let mut victim = proxy.conn().await;
    let id = victim.id();
    let sleeper = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(20)").await;
        (r.map_err(|e| server_code(&e)), alive(&mut victim).await)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut killer = proxy.conn().await;
    killer
        .query_drop(format!("# stop it\nKILL QUERY {id}"))
        .await
        .unwrap();
    let (got, still) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the sleep was interrupted")
        .unwrap();
    assert!(matches!(got, Ok(Some(1)) | Err(1317)), "{got:?}");
    assert!(still, "KILL QUERY keeps the connection");
    proxy.stop().await;
}

#[tokio::test]
async fn kill_inside_a_multi_statement_is_refused_before_anything_runs() {
    let pair = Pair::start().await;
    pair.source
        .exec("CREATE TABLE t (id INT PRIMARY KEY)")
        .await;
    pair.destination
        .exec("CREATE TABLE t (id INT PRIMARY KEY)")
        .await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut victim = proxy.conn().await;
    let mut c = proxy.conn().await; // mysql_async enables multi-statements
    let id = victim.id();
    for sql in [
        format!("KILL {id}; SELECT 1"),
        format!("INSERT INTO t VALUES (1); KILL {id}"),
        format!("SELECT 1; /* c */ kill query {id}"),
    ] {
        let e = c.query_drop(&sql).await.unwrap_err();
        assert_eq!(server_code(&e), NOT_SUPPORTED, "{sql}");
        assert!(e.to_string().contains("multi-statement"), "{e}");
        assert!(alive(&mut victim).await, "{sql}: the victim lives");
    }
    let rows: Vec<i32> = pair.source.query("SELECT id FROM t").await;
    assert!(rows.is_empty(), "nothing of a refused text ran");
    proxy.stop().await;
}

#[tokio::test]
async fn a_backend_thread_id_never_reaches_the_backend() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut foreign = foreign_client(&pair.source).await;
    let t = foreign.id();
    let mut c = proxy.conn().await; // mysql_async enables multi-statements
                                    // Alone: not a cutover id → ER_NO_SUCH_THREAD, as README promises.
    for sql in [format!("KILL {t}"), format!("/* x */ KILL QUERY {t}")] {
        let e = c.query_drop(&sql).await.unwrap_err();
        assert_eq!(server_code(&e), NO_SUCH_THREAD, "{sql}");
        assert!(e.to_string().contains(&t.to_string()), "{e}");
    }
    // Every other way of naming it is refused.
    for sql in [
        format!("KILL {t}; SELECT 1"),
        format!("SELECT 1; KILL {t}"),
        format!("KILL QUERY ID {t}"),
        format!("KILL ID {t}"),
        format!("KILL {t} + 0"),
        format!("PREPARE s FROM 'KILL {t}'"),
        format!("EXECUTE IMMEDIATE 'KILL {t}'"),
    ] {
        let e = c.query_drop(&sql).await.unwrap_err();
        assert_eq!(server_code(&e), NOT_SUPPORTED, "{sql}");
    }
    let e = c.prep(format!("KILL {t}")).await.unwrap_err();
    assert_eq!(server_code(&e), NOT_SUPPORTED, "COM_STMT_PREPARE of a KILL");
    assert!(alive(&mut foreign).await, "the foreign client lives");
    assert!(alive(&mut c).await);
    proxy.stop().await;
}

#[tokio::test]
async fn kill_user_reaches_only_cutover_sessions_of_that_user() {
    let pair = Pair::start().await;
    let grants = "CREATE USER 'u2'@'%' IDENTIFIED BY 'pw2'; GRANT ALL ON shop.* TO 'u2'@'%'";
    pair.source.exec(grants).await;
    pair.destination.exec(grants).await;
    let users = "[[users]]\nname = \"app\"\npassword = \"app\"\n\
                 [[users]]\nname = \"u2\"\npassword = \"pw2\"\n";
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, users).await;
    let u2 = || proxy.opts().user(Some("u2")).pass(Some("pw2"));
    let mut a = mysql_async::Conn::new(u2()).await.unwrap();
    let mut b = mysql_async::Conn::new(u2()).await.unwrap();
    let mut app = proxy.conn().await;
    // u2 directly on the source: not behind cutover, not named by KILL USER.
    let direct = pair
        .source
        .opts(Some("shop"))
        .user(Some("u2"))
        .pass(Some("pw2"));
    let mut outside = mysql_async::Conn::new(direct).await.unwrap();
    app.query_drop("KILL USER 'u2'@'%'").await.unwrap();
    assert!(
        !alive(&mut a).await && !alive(&mut b).await,
        "u2's sessions"
    );
    assert!(alive(&mut app).await, "app's own session");
    assert!(alive(&mut outside).await, "u2's connection outside cutover");
    proxy.stop().await;
}
