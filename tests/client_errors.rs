//! Every error cutover makes itself, read by real clients: the mariadb CLI
//! (libmariadb, classic EOF), PyMySQL and MariaDB Connector/J (JDBC). Each
//! must see the server-range code and a message naming the cause — not
//! `ERROR 2027 Received malformed packet` (issue 10, finding 8).
//!
//! Needs what `scripts/test` installs: the mariadb client, `.venv` with
//! PyMySQL, Java with `libmariadb-java`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover::pattern::Pattern;
use support::proxy::TestProxy;
use support::Pair;
use tokio::process::Command;

const JDBC_JAR: &str = "/usr/share/java/mariadb-java-client.jar";

const PYMYSQL: &str = r#"
import sys, pymysql
port, user, pw, sql = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    c = pymysql.connect(host='127.0.0.1', port=port, user=user, password=pw, database='shop')
    with c.cursor() as cur:
        cur.execute(sql)
        cur.fetchall()
    print('OK')
except pymysql.err.MySQLError as e:
    print('ERR', e.args[0], e.args[1] if len(e.args) > 1 else '')
"#;

const JAVA: &str = r#"
import java.sql.*;
public class Check {
  public static void main(String[] a) {
    try (Connection c = DriverManager.getConnection("jdbc:mariadb://127.0.0.1:" + a[0] + "/shop", a[1], a[2]);
         Statement s = c.createStatement()) {
      s.execute(a[3]);
      System.out.println("OK");
    } catch (SQLException e) {
      System.out.println("ERR " + e.getErrorCode() + " " + e.getSQLState() + " " + e.getMessage());
    }
  }
}
"#;

#[derive(Debug, Clone, Copy)]
enum Client {
    Cli,
    PyMySql,
    Jdbc,
}

const CLIENTS: [Client; 3] = [Client::Cli, Client::PyMySql, Client::Jdbc];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn prerequisites(dir: &Path) -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/test (it creates the venv with PyMySQL)",
        py.display()
    );
    assert!(
        Path::new(JDBC_JAR).exists(),
        "{JDBC_JAR} missing: run scripts/test (it installs Java and libmariadb-java)"
    );
    let java = dir.join("Check.java");
    std::fs::write(&java, JAVA).unwrap();
    java
}

/// Run `sql` as `user`/`pw` through `client`; "OK" or "ERR <code> …".
async fn run(client: Client, java: &Path, port: u16, user: &str, pw: &str, sql: &str) -> String {
    let port_s = port.to_string();
    let mut cmd = match client {
        Client::Cli => {
            let mut c = Command::new("mariadb");
            c.args(["-h127.0.0.1", &format!("-P{port}"), &format!("-u{user}")])
                .arg(format!("-p{pw}"))
                .args(["shop", "-e", sql]);
            c
        }
        Client::PyMySql => {
            let mut c = Command::new(root().join(".venv/bin/python"));
            c.args(["-c", PYMYSQL, &port_s, user, pw, sql]);
            c
        }
        Client::Jdbc => {
            let mut c = Command::new("java");
            c.args(["-cp", JDBC_JAR])
                .arg(java)
                .args([&port_s, user, pw, sql]);
            c
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("client hung")
        .expect("run client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match client {
        // "ERROR 1429 (HY000) at line 1: …" → "ERR 1429 (HY000) …"
        Client::Cli if out.status.success() => "OK".into(),
        Client::Cli => text
            .lines()
            .find(|l| l.starts_with("ERROR"))
            .unwrap_or(text.trim())
            .replacen("ERROR", "ERR", 1),
        _ => text.trim().to_string(),
    }
}

fn expect(got: &str, code: u16, needle: &str, what: &str, client: Client) {
    assert!(
        got.starts_with(&format!("ERR {code}")) && got.contains(needle),
        "{client:?}, {what}: expected ERR {code} … {needle}, got: {got}"
    );
    assert!(!got.contains("2027"), "{client:?}: malformed packet: {got}");
}

#[tokio::test]
async fn cutover_made_errors_are_readable_by_the_cli_pymysql_and_jdbc() {
    let dir = tempfile::tempdir().unwrap();
    let java = prerequisites(dir.path());
    let mut pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::DstOnly).await;
    let one = TestProxy::start_with(&pair, Pattern::SrcOnly, "max_connections = 1").await;
    for client in CLIENTS {
        let port = proxy.port;
        // a statement that works, so the checks below mean something
        assert_eq!(
            run(client, &java, port, "app", "app", "SELECT 1").await,
            "OK",
            "{client:?}"
        );
        // ER_ACCESS_DENIED_ERROR 1045
        let got = run(client, &java, port, "app", "wrong", "SELECT 1").await;
        expect(&got, 1045, "Access denied", "wrong password", client);
        // ER_NO_SUCH_THREAD 1094 (KILL of an id cutover did not give out)
        let got = run(client, &java, port, "app", "app", "KILL 424242").await;
        expect(&got, 1094, "424242", "KILL unknown id", client);
        // ER_CON_COUNT_ERROR 1040
        let mut held = mysql_async::Conn::new(one.opts()).await.unwrap();
        let got = run(client, &java, one.port, "app", "app", "SELECT 1").await;
        // Sent instead of the greeting, as a real server does: a TLS-first
        // client (the mariadb CLI) reports it as 2002 quoting "1040 - Too
        // many connections", Connector/J as "Could not connect … Too many
        // connections" — exactly as they do for MariaDB itself.
        assert!(
            got.starts_with("ERR") && got.contains("Too many connections"),
            "{client:?}, max_connections: {got}"
        );
        use mysql_async::prelude::Queryable;
        held.query_drop("DO 1").await.unwrap();
        drop(held);

        // ER_NET_READ_ERROR 1158: the destination dies mid-statement (killed
        // once the statement is seen running there)
        let stmt = run(client, &java, port, "app", "app", "SELECT SLEEP(30)");
        let watch = pair.destination.opts(None);
        let kill = async {
            let mut c = mysql_async::Conn::new(watch).await.unwrap();
            use mysql_async::prelude::Queryable;
            for _ in 0..600 {
                let n: Option<i64> = c
                    .query_first(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                         WHERE INFO LIKE 'SELECT SLEEP(30)%'",
                    )
                    .await
                    .unwrap();
                if n == Some(1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(c);
            pair.destination.kill();
        };
        let (got, ()) = tokio::join!(stmt, kill);
        expect(
            &got,
            1158,
            "destination",
            "backend lost mid-statement",
            client,
        );

        // ER_CONNECT_TO_FOREIGN_DATA_SOURCE 1429: the destination is down
        let got = run(client, &java, port, "app", "app", "SELECT 1").await;
        expect(&got, 1429, "destination", "backend down", client);
        pair.destination.restart().await;
        // cutover retries a dead backend with back-off: wait for it to come back
        let mut ok = String::new();
        for _ in 0..50 {
            ok = run(client, &java, port, "app", "app", "SELECT 1").await;
            if ok == "OK" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(ok, "OK", "{client:?}: destination back");
    }
    one.stop().await;
    proxy.stop().await;
}
