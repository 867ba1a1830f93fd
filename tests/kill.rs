//! Issue 18 item 2: a client can never name a backend thread id. KILL is
//! found after comments and in every statement of a multi-statement; a
//! cutover id is translated to that session's backend threads, what cannot
//! be translated is refused before anything runs (ER_NOT_SUPPORTED_YET). A
//! multi-statement led by its only KILL runs the KILL translated, then the rest.

mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::proxy::{server_code, TestProxy};
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

/// The result sets of a multi-statement: per statement, its rows of one
/// integer column (none for an OK).
async fn result_sets(c: &mut mysql_async::Conn, sql: &str) -> Result<Vec<Vec<i64>>, u16> {
    let mut r = c.query_iter(sql).await.map_err(|e| server_code(&e))?;
    let mut sets = Vec::new();
    while !r.is_empty() {
        sets.push(r.collect::<i64>().await.map_err(|e| server_code(&e))?);
    }
    Ok(sets)
}

#[tokio::test]
async fn a_multi_statement_led_by_a_kill_translates_it_then_runs_the_rest() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await; // mysql_async enables multi-statements
    pair.source
        .exec("CREATE TABLE d (id INT PRIMARY KEY)")
        .await;
    let mut direct = pair.source.conn().await;
    for (sql, table) in [
        ("KILL {}; SELECT 1", ""),
        // node mysql2's own suite kills pooled connections this way.
        ("kill {}; select sleep(0.05)", ""),
        (
            "/* c */ KILL CONNECTION {} ; INSERT INTO {t} VALUES (2)",
            "t",
        ),
    ] {
        // What the same text answers directly, killing a direct victim.
        let direct_victim = pair.source.conn().await;
        let reference = sql
            .replace("{}", &direct_victim.id().to_string())
            .replace("{t}", "d");
        let want = result_sets(&mut direct, &reference).await.unwrap();
        let mut victim = proxy.conn().await;
        let sql = sql
            .replace("{}", &victim.id().to_string())
            .replace("{t}", table);
        let sets = result_sets(&mut c, &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(sets, want, "{sql}: as directly");
        assert!(!alive(&mut victim).await, "{sql}: the victim was killed");
    }
    let src: Vec<i32> = pair.source.query("SELECT id FROM t").await;
    let dst: Vec<i32> = pair.destination.query("SELECT id FROM t").await;
    assert_eq!(
        (src, dst),
        (vec![2], vec![2]),
        "the rest ran and was mirrored"
    );
    // A leading KILL that fails stops the text there, as a server does.
    let e = result_sets(&mut c, "KILL 999999; INSERT INTO t VALUES (3)").await;
    assert_eq!(e, Err(NO_SUCH_THREAD));
    let src: Vec<i32> = pair.source.query("SELECT id FROM t").await;
    assert_eq!(src, [2], "nothing after the failed KILL ran");
    assert!(alive(&mut c).await);
    proxy.stop().await;
}

#[tokio::test]
async fn a_kill_after_another_statement_is_refused_before_anything_runs() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut victim = proxy.conn().await;
    let mut c = proxy.conn().await;
    let id = victim.id();
    for sql in [
        format!("INSERT INTO t VALUES (1); KILL {id}"),
        format!("SELECT 1; /* c */ kill query {id}"),
        format!("KILL {id}; INSERT INTO t VALUES (1); KILL {id}"),
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
                                    // Leading a multi-statement, the same (the example: this used
                                    // to reach the backend and kill the foreign connection).
    for sql in [
        format!("KILL {t}"),
        format!("/* x */ KILL QUERY {t}"),
        format!("KILL {t}; SELECT 1"),
    ] {
        let e = c.query_drop(&sql).await.unwrap_err();
        assert_eq!(server_code(&e), NO_SUCH_THREAD, "{sql}");
        assert!(e.to_string().contains(&t.to_string()), "{e}");
    }
    // Every other way of naming it is refused.
    for sql in [
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
