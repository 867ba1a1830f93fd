//! Issue 18 item 1: capabilities are negotiated the way a server does it.
//! The greeting offers what both MariaDB backends offer and the relay keeps
//! faithful (MariaDB's extended type metadata included, CLIENT_MYSQL cleared
//! as MariaDB clears it), each client's flags are intersected with the
//! offer, and the backend connections get the same set — so what a client
//! sees through cutover is what it sees directly: the same column
//! definition bytes, JSON columns typed as JSON in node mysql2, MariaDB
//! Connector/J and the mariadb CLI.
//!
//! Needs what `scripts/test` installs: node with tests/compat/node's
//! mysql2, Java with `libmariadb-java`, the mariadb client.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use cutover::pattern::Pattern;
use cutover::wire::PacketIo;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use support::proxy::raw::{self, login_as};
use support::proxy::TestProxy;
use support::Pair;
use tokio::process::Command;

const JDBC_JAR: &str = "/usr/share/java/mariadb-java-client.jar";
const TABLE: &str = "CREATE TABLE jt (j JSON, u UUID); \
    INSERT INTO jt VALUES ('{\"k\":\"v\"}', 'f8f2e7c4-1111-4c22-8d33-0123456789ab')";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn pair_with_table() -> Pair {
    let pair = Pair::start().await;
    pair.source.exec(TABLE).await;
    pair.destination.exec(TABLE).await;
    pair
}

/// A MariaDB client's flags: CLIENT_MYSQL cleared, extended metadata asked for.
fn mariadb_client_caps() -> CapabilityFlags {
    raw::default_caps() - CapabilityFlags::CLIENT_LONG_PASSWORD
}

/// Column definitions of `sql`'s result as raw payloads (DEPRECATE_EOF framing).
async fn column_definitions(io: &mut PacketIo, sql: &str) -> Vec<Vec<u8>> {
    let mut q = vec![0x03];
    q.extend_from_slice(sql.as_bytes());
    let count = raw::command(io, &q).await;
    assert!(count[0] > 0 && count[0] < 0xFB, "column count: {count:?}");
    let mut defs = Vec::new();
    for _ in 0..count[0] {
        defs.push(raw::next(io).await);
    }
    raw::until_terminator(io).await; // rows, then the closing OK
    defs
}

#[tokio::test]
async fn the_greeting_offers_what_both_mariadb_backends_offer_and_the_relay_keeps() {
    let pair = pair_with_table().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let direct = login_as(pair.source.port, raw::default_caps(), 0, "app", "app").await;
    let via = login_as(proxy.port, raw::default_caps(), 0, "app", "app").await;
    let (d, v) = (direct.greeting, via.greeting);
    assert!(
        !d.capabilities()
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
        "MariaDB clears CLIENT_MYSQL"
    );
    assert!(
        !v.capabilities()
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
        "so does cutover"
    );
    for bit in [
        CapabilityFlags::CLIENT_NO_SCHEMA,
        CapabilityFlags::CLIENT_ODBC,
        CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS,
        CapabilityFlags::CLIENT_REMEMBER_OPTIONS,
        CapabilityFlags::CLIENT_CONNECT_ATTRS,
        CapabilityFlags::CLIENT_SESSION_TRACK,
        CapabilityFlags::CLIENT_DEPRECATE_EOF,
    ] {
        assert!(d.capabilities().contains(bit), "source offers {bit:?}");
        assert!(v.capabilities().contains(bit), "cutover offers {bit:?}");
    }
    // Only what the relay keeps faithful: nothing the source lacks, no
    // compression, no TLS (yet).
    assert!((v.capabilities() - d.capabilities()).is_empty());
    assert!(!v.capabilities().contains(CapabilityFlags::CLIENT_COMPRESS));
    assert!(
        d.mariadb_ext_capabilities()
            .contains(MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA),
        "{:?}",
        d.mariadb_ext_capabilities()
    );
    assert_eq!(
        v.mariadb_ext_capabilities(),
        MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA,
        "extended metadata only: cache-metadata, progress and bulk change the framing"
    );
    assert_eq!(
        v.server_version_str(),
        d.server_version_str(),
        "the source's version string"
    );
    assert_eq!(v.default_collation(), d.default_collation());
    proxy.stop().await;
}

#[tokio::test]
async fn extended_metadata_bytes_arrive_as_they_do_directly() {
    let pair = pair_with_table().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let ext = MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA.bits();
    for (caps, ext, marker) in [
        (mariadb_client_caps(), ext, true),
        // A MySQL client (CLIENT_MYSQL set) gets plain definitions, as directly.
        (raw::default_caps(), ext, false),
    ] {
        let mut direct = login_as(pair.source.port, caps, ext, "app", "app").await;
        let mut via = login_as(proxy.port, caps, ext, "app", "app").await;
        assert_eq!((direct.reply[0], via.reply[0]), (0, 0), "logged in");
        let d = column_definitions(&mut direct.io, "SELECT j, u FROM jt").await;
        let v = column_definitions(&mut via.io, "SELECT j, u FROM jt").await;
        assert_eq!(v, d, "column definitions byte for byte (marker {marker})");
        let has = |defs: &[Vec<u8>], needle: &[u8]| {
            defs.iter()
                .any(|p| p.windows(needle.len()).any(|w| w == needle))
        };
        // MariaDB "Result set packets": extended metadata is (type, lenenc
        // string) pairs; 1 = format name, 0 = type name.
        assert_eq!(has(&v, b"\x01\x04json"), marker, "format=json");
        assert_eq!(has(&v, b"\x00\x04uuid"), marker, "type=uuid");
    }
    proxy.stop().await;
}

const MYSQL2: &str = r#"
const mysql = require('mysql2');
const [port, mode, sql] = process.argv.slice(1);
const c = mysql.createConnection({host: '127.0.0.1', port: +port, user: 'app', password: 'app', database: 'shop'});
c[mode](sql, (err, rows, fields) => {
  if (err) { console.log(JSON.stringify({err: err.code})); c.destroy(); return; }
  console.log(JSON.stringify({
    rows,
    types: rows.map(r => Object.values(r).map(v => typeof v)),
    formats: fields.map(f => f.extendedFormat === undefined ? null : f.extendedFormat),
  }));
  c.end();
});
"#;

async fn mysql2(port: u16, mode: &str, sql: &str) -> serde_json::Value {
    let dir = root().join("tests/compat/node");
    assert!(
        dir.join("node_modules/mysql2").exists(),
        "tests/compat/node/node_modules missing: run scripts/test (npm ci)"
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["-e", MYSQL2, &port.to_string(), mode, sql])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("node hung")
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "node output {text:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn node_mysql2_reads_json_columns_as_objects_through_cutover() {
    let pair = pair_with_table().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    for (mode, sql) in [
        ("query", "SELECT j FROM jt"),
        ("execute", "SELECT j FROM jt"),
        (
            "execute",
            "SELECT JSON_EXTRACT('{\"test\": true}', '$') AS x",
        ),
        ("query", "SELECT JSON_EXTRACT('{\"test\": true}', '$') AS x"),
    ] {
        let direct = mysql2(pair.source.port, mode, sql).await;
        let via = mysql2(proxy.port, mode, sql).await;
        assert_eq!(via, direct, "{mode} {sql}");
        assert_eq!(via["types"][0][0], "object", "{mode} {sql}: {via}");
        assert_eq!(via["formats"][0], "json", "{mode} {sql}: {via}");
    }
    let via = mysql2(proxy.port, "query", "SELECT j FROM jt").await;
    assert_eq!(via["rows"][0]["j"]["k"], "v", "{via}");
    proxy.stop().await;
}

const JAVA: &str = r#"
import java.sql.*;
public class Meta {
  public static void main(String[] a) throws Exception {
    String url = "jdbc:mariadb://127.0.0.1:" + a[0] + "/shop?user=app&password=app&useServerPrepStmts=" + a[1];
    try (Connection c = DriverManager.getConnection(url);
         PreparedStatement s = c.prepareStatement("SELECT j, u FROM jt WHERE ? = ?")) {
      s.setInt(1, 1);
      s.setInt(2, 1);
      try (ResultSet r = s.executeQuery()) {
        ResultSetMetaData m = r.getMetaData();
        StringBuilder out = new StringBuilder();
        while (r.next()) {
          for (int i = 1; i <= m.getColumnCount(); i++) {
            out.append(m.getColumnName(i)).append(' ').append(m.getColumnTypeName(i)).append(' ')
               .append(m.getColumnType(i)).append(' ').append(m.getColumnClassName(i)).append(' ')
               .append(r.getString(i)).append('\n');
          }
        }
        System.out.print(out);
      }
    }
  }
}
"#;

#[tokio::test]
async fn connector_j_and_the_mariadb_cli_see_what_they_see_directly() {
    assert!(
        std::path::Path::new(JDBC_JAR).exists(),
        "{JDBC_JAR} missing: run scripts/test (it installs Java and libmariadb-java)"
    );
    let pair = pair_with_table().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let dir = tempfile::tempdir().unwrap();
    let java = dir.path().join("Meta.java");
    std::fs::write(&java, JAVA).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output();
        async move {
            let out = tokio::time::timeout(Duration::from_secs(120), out)
                .await
                .expect("client hung")
                .expect("run client");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    for server_prep in ["true", "false"] {
        let jdbc = |port: u16| {
            let mut c = Command::new("java");
            c.args(["-cp", JDBC_JAR])
                .arg(&java)
                .args([&port.to_string(), server_prep]);
            c
        };
        let direct = run(&mut jdbc(pair.source.port)).await;
        let via = run(&mut jdbc(proxy.port)).await;
        assert_eq!(via, direct, "Connector/J, useServerPrepStmts={server_prep}");
        assert!(via.contains("{\"k\":\"v\"}"), "{via}");
    }
    let cli = |port: u16| {
        let mut c = Command::new("mariadb");
        c.args([
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-uapp",
            "-papp",
            "shop",
        ])
        .args(["--column-type-info", "-t", "-e", "SELECT j, u FROM jt"]);
        c
    };
    let direct = run(&mut cli(pair.source.port)).await;
    let via = run(&mut cli(proxy.port)).await;
    assert_eq!(via, direct, "mariadb --column-type-info");
    assert!(
        via.contains("(format=json)") && via.contains("(type=uuid)"),
        "{via}"
    );
    proxy.stop().await;
}
