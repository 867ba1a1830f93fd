//! Test support: throw-away MariaDB instances for integration tests.
//!
//! `mod support;` in a test file, then `Pair::start().await` (or
//! `MariaDb::start("name").await`). Each instance is a fresh copy of a template
//! datadir (made once per target dir), listens on its own 127.0.0.1 port and has
//! user `app`/`app` with all privileges and database `shop`.
//!
//! Extra server flags: `MariaDb::start_with("name", &["--binlog-format=ROW", …])`,
//! `Pair::start_with(&src_flags, &dst_flags)`; [`binlog_flags`] gives what a
//! binlog (ROW format, distinct server id) needs. A flag given there replaces
//! the default of the same option (e.g. `--log-bin` drops `--skip-log-bin`).
//!
//! mariadbd runs under a tiny `sh` supervisor whose stdin is a pipe held by the
//! test process: when the test process dies for any reason (panic, SIGKILL,
//! Ctrl-C) the pipe closes and the supervisor SIGKILLs mariadbd, so no server
//! outlives its test.
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod control;
pub mod mysql8;
pub mod proxy;
pub mod validate;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

mod etcd;
#[allow(unused_imports)]
pub use etcd::Etcd;

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
const NOT_INSTALLED: &str = "MariaDB not installed: run scripts/test (it installs it)";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Server flags besides the per-instance paths and port (see shared/notes/environment.md).
const SERVER_FLAGS: [&str; 9] = [
    "--no-defaults",
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--max-connections=1000",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    "--performance-schema=OFF",
    "--innodb-flush-log-at-trx-commit=2",
];

/// Runs at every start of every instance.
pub const INIT_SQL: &str = "CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app';\n\
GRANT ALL ON *.* TO 'app'@'%' WITH GRANT OPTION;\n\
CREATE DATABASE IF NOT EXISTS shop;\n";

/// Supervisor (`sh -c SUPERVISOR sh DIR mariadbd ARGS...`): runs mariadbd and SIGKILLs it
/// when a line arrives on stdin or stdin reaches EOF; on EOF without a `keep` line (the test
/// process died) it also removes DIR. Exits with mariadbd's status. (Background jobs get
/// stdin from /dev/null, so the pipe is kept on fd 3.)
const SUPERVISOR: &str = r#"dir=$1; shift; exec 3<&0
"$@" 3<&- & pid=$!
(read cmd <&3; [ "$cmd" = keep ] || : >"$dir/.orphaned"; kill -9 $pid 2>/dev/null) &
reader=$!
exec 3<&-
wait $pid; st=$?
kill $reader 2>/dev/null
[ -e "$dir/.orphaned" ] && rm -rf "$dir"
exit $st"#;

/// One running (or killed) MariaDB server with its own datadir.
pub struct MariaDb {
    pub port: u16,
    name: String,
    /// `--ssl-ca` of the flags: the harness's own connections use TLS
    /// trusting it (the server may refuse plaintext).
    ssl_ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    child: Option<(Child, ChildStdin)>,
    /// Extra server flags (kept across `restart`).
    extra: Vec<String>,
}

/// Flags for a binary log in ROW format with `server_id` (distinct per
/// server), written into the instance's datadir (`binlog.000001`, …).
pub fn binlog_flags(server_id: u32) -> Vec<String> {
    vec![
        "--log-bin=binlog".to_string(),
        "--binlog-format=ROW".to_string(),
        format!("--server-id={server_id}"),
    ]
}

/// `--name=value` / `--name` → `name`, with `_` and `-` equivalent and the
/// `skip-` prefix removed (so `--log-bin=x` overrides `--skip-log-bin`).
fn option_name(flag: &str) -> String {
    let f = flag.trim_start_matches('-');
    let f = f.split('=').next().unwrap_or(f).replace('_', "-");
    f.strip_prefix("skip-").map(str::to_string).unwrap_or(f)
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 *below* the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): no other process's `bind(0)`
/// or outgoing connection is given it while a server the test restarts on
/// the same port (etcd, MariaDB, cutover) is down. Random, so concurrent
/// test processes rarely pick the same; the servers' spawn loops retry on
/// "address already in use".
pub fn free_port() -> u16 {
    use rand::Rng;
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000, ephemeral_start.max(12_000));
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(lo..hi);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

/// The template datadir, created once per target dir under an exclusive file lock
/// (tests run as separate processes). Rebuilt when the mariadbd binary changes.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let bin = fs::metadata(MARIADBD).unwrap_or_else(|_| panic!("{NOT_INSTALLED}"));
        let stamp = format!("{} {} {}\n", MARIADBD, bin.mtime(), bin.size());
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(&base).unwrap();
        let tpl = base.join("mariadb-template");
        let lock = fs::File::create(base.join("mariadb-template.lock")).unwrap();
        lock.lock().expect("lock mariadb-template.lock");
        if fs::read_to_string(tpl.join("STAMP")).ok().as_deref() != Some(stamp.as_str()) {
            let tmp = base.join(format!("mariadb-template.tmp{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            let _ = fs::remove_dir_all(&tpl);
            let out = Command::new("mariadb-install-db")
                .args(["--no-defaults", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db", "--innodb-log-file-size=16M"])
                .arg(format!("--datadir={}", tmp.join("data").display()))
                .args(is_root().then_some("--user=root"))
                .output()
                .unwrap_or_else(|e| panic!("{NOT_INSTALLED} (mariadb-install-db: {e})"));
            let (o, e) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(
                out.status.success(),
                "mariadb-install-db failed ({}):\n{o}\n{e}",
                out.status
            );
            fs::write(tmp.join("STAMP"), &stamp).unwrap();
            fs::rename(&tmp, &tpl).unwrap();
        }
        drop(lock); // unlocks
        tpl.join("data")
    })
}

impl MariaDb {
    /// A fresh instance named `name` (used in messages and the tempdir name).
    pub async fn start(name: &str) -> MariaDb {
        Self::start_with(name, &[] as &[&str]).await
    }

    /// Like [`MariaDb::start`] with extra server flags (`--binlog-format=ROW`,
    /// `--default-time-zone=+02:00`, `--ssl-cert=…`, …), kept across
    /// `restart`. With `--ssl-ca=PATH` among them, the harness's own
    /// connections (`opts`, `conn`, readiness) use TLS verified against that CA.
    pub async fn start_with<S: AsRef<str>>(name: &str, flags: &[S]) -> MariaDb {
        if !Path::new(MARIADBD).exists() {
            panic!("{NOT_INSTALLED}");
        }
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix(&format!("mariadb-{name}-"))
            .tempdir()
            .expect("tempdir");
        copy_dir(template, &dir.path().join("data"));
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("init.sql"), INIT_SQL).unwrap();
        let ssl_ca = flags
            .iter()
            .find_map(|f| f.as_ref().strip_prefix("--ssl-ca="))
            .map(PathBuf::from);
        let mut db = MariaDb {
            port: 0,
            name: name.to_string(),
            ssl_ca,
            dir,
            child: None,
            extra: flags.iter().map(|f| f.as_ref().to_string()).collect(),
        };
        // The free port can be taken by someone else before mariadbd binds it: retry.
        for attempt in 1..=3 {
            db.port = free_port();
            match db.spawn_and_wait().await {
                Ok(()) => return db,
                Err(log) if attempt < 3 && log.contains("Address already in use") => continue,
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!()
    }

    /// `mysql://app:app@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("mysql://app:app@127.0.0.1:{}/{db}", self.port)
    }

    pub fn opts(&self, db: Option<&str>) -> mysql_async::OptsBuilder {
        let ssl = self.ssl_ca.as_ref().map(|ca| {
            mysql_async::SslOpts::default()
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true)
        });
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("app"))
            .pass(Some("app"))
            .db_name(db)
            .prefer_socket(false)
            .ssl_opts(ssl)
    }

    /// A direct connection (not through the proxy) to database `shop`.
    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts(Some("shop")))
            .await
            .unwrap_or_else(|e| panic!("connect to {} (port {}): {e}", self.name, self.port))
    }

    /// One-off direct query on `shop`; panics with the SQL on error.
    pub async fn query<T: FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        let mut conn = self.conn().await;
        let rows = conn
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("query on {} failed: {sql}: {e}", self.name));
        let _ = conn.disconnect().await;
        rows
    }

    /// One-off direct statement(s) on `shop` (several separated by `;` are fine).
    pub async fn exec(&self, sql: &str) {
        let mut conn = self.conn().await;
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("exec on {} failed: {sql}: {e}", self.name));
        let _ = conn.disconnect().await;
    }

    /// SIGKILL the server (like a crash) and reap it. No-op if not running.
    pub fn kill(&mut self) {
        if let Some((mut child, mut stdin)) = self.child.take() {
            let _ = stdin.write_all(b"keep\n"); // supervisor SIGKILLs mariadbd
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Start again on the same datadir and port (kills it first if still running).
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait().await {
            panic!("{log}");
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log_path = d.join("error.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = Command::new("/bin/sh");
        let overridden: Vec<String> = self.extra.iter().map(|f| option_name(f)).collect();
        cmd.args(["-c", SUPERVISOR, "sh"])
            .arg(d)
            .arg(MARIADBD)
            .args(
                SERVER_FLAGS
                    .iter()
                    .filter(|f| **f == "--no-defaults" || !overridden.contains(&option_name(f))),
            )
            .args(&self.extra);
        for (k, v) in [
            ("datadir", d.join("data")),
            ("socket", d.join("mysqld.sock")),
            ("pid-file", d.join("mariadbd.pid")),
            ("log-error", log_path.clone()),
            ("tmpdir", d.join("tmp")),
            ("init-file", d.join("init.sql")),
        ] {
            cmd.arg(format!("--{k}={}", v.display()));
        }
        cmd.arg(format!("--port={}", self.port));
        cmd.args(is_root().then_some("--user=root"));
        cmd.stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {MARIADBD}: {e}"));
        let stdin = child.stdin.take().unwrap();
        self.child = Some((child, stdin));
    }

    /// Spawn mariadbd and wait until `app` can log in. Err(message with log tail).
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_err;
        loop {
            match mysql_async::Conn::new(self.opts(None)).await {
                Ok(mut conn) => {
                    // Make sure it is our server, not someone else's on a reused port.
                    let socket: Option<String> =
                        conn.query_first("SELECT @@socket").await.ok().flatten();
                    let _ = conn.disconnect().await;
                    let ours = self.dir.path().join("mysqld.sock");
                    if socket.as_deref() == Some(ours.to_str().unwrap()) {
                        return Ok(());
                    }
                    self.kill();
                    return Err(format!("port {}: Address already in use", self.port));
                }
                Err(e) => last_err = e.to_string(),
            }
            let exited = match &mut self.child {
                Some((child, _)) => child.try_wait().ok().flatten(),
                None => None,
            };
            if exited.is_some() || Instant::now() > deadline {
                let why = match exited {
                    Some(st) => format!("exited during startup ({st})"),
                    None => format!("not ready after {READY_TIMEOUT:?} (last error: {last_err})"),
                };
                self.kill();
                return Err(format!(
                    "MariaDB `{}` on port {} {why}; error log tail:\n{}",
                    self.name,
                    self.port,
                    self.error_log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A SOURCE and a DESTINATION server, independent of each other.
pub struct Pair {
    pub source: MariaDb,
    pub destination: MariaDb,
}

impl Pair {
    /// Start both concurrently.
    pub async fn start() -> Pair {
        Self::start_with(&[] as &[&str], &[] as &[&str]).await
    }

    /// Start both concurrently, each with its extra server flags.
    pub async fn start_with<S: AsRef<str>, T: AsRef<str>>(source: &[S], destination: &[T]) -> Pair {
        let (source, destination) = tokio::join!(
            MariaDb::start_with("source", source),
            MariaDb::start_with("destination", destination)
        );
        Pair {
            source,
            destination,
        }
    }

    /// Both with a ROW-format binlog (server ids 1 and 2).
    pub async fn start_binlog() -> Pair {
        Self::start_with(&binlog_flags(1), &binlog_flags(2)).await
    }
}
