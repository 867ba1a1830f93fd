//! `cutover ctl` against a running admin API (real validator, real MariaDB
//! pair): exit codes and output of each command.

mod support;

use std::path::Path;

use support::control::{config, Admin};
use support::Pair;
use tokio::process::Command;

async fn ctl(admin: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.arg("ctl")
        .arg("--admin")
        .arg(admin)
        .args(args)
        .env("CUTOVER_LOG", "warn")
        .env_remove("CUTOVER_ADMIN_TOKEN")
        .env_remove("CUTOVER_CONFIG");
    if let Some(t) = token {
        cmd.env("CUTOVER_ADMIN_TOKEN", t);
    }
    let out = cmd.output().await.expect("run cutover ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cfg(pair: &Pair, dir: &Path, extra: &str) -> cutover::config::Config {
    config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.join("state.json"),
        extra,
    )
}

#[tokio::test]
async fn ctl_walks_the_runbook_with_exit_codes_and_output() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE orders (id INT PRIMARY KEY, v INT); INSERT INTO orders SELECT seq, seq FROM seq_1_to_2000;";
    pair.source.exec(fill).await;
    pair.destination
        .exec("CREATE TABLE orders (id INT PRIMARY KEY, v INT)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start_with_validation(&cfg(&pair, dir.path(), "")).await;
    let url = format!("http://{}", admin.addr);

    let (code, out, err) = ctl(&url, None, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("state            initial (pattern src_only)"),
        "{out}"
    );
    assert!(out.contains("-> src_only   allowed"), "{out}");
    let (code, out, _) = ctl(&url, None, &["status", "--json"]).await;
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["current_state"], "initial");

    for state in ["src_only", "src_first"] {
        let (code, out, err) = ctl(&url, None, &["switch", state]).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("-> {state}")), "{out}");
    }
    let (code, out, _) = ctl(&url, None, &["switch", "src_first"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("already in src_first (no change)"), "{out}");

    // Refused with the server's message and what is missing.
    let (code, out, err) = ctl(&url, None, &["switch", "dst_first"]).await;
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("409"), "{err}");
    assert!(
        err.contains("needs a full validation started in src_first"),
        "{err}"
    );
    let (_, out, _) = ctl(&url, None, &["status"]).await;
    assert!(
        out.contains("-> dst_first  blocked (only with --force)"),
        "{out}"
    );

    // Backfill, waiting: exit 0, the summary names the table.
    let (code, out, err) = ctl(&url, None, &["validate", "--fix", "--wait"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("orders"), "{out}");
    assert!(out.contains("2000 found, 2000 repaired"), "{out}");
    assert!(out.contains("consistent"), "{out}");

    // A difference, found but not repaired: exit 1; listed; fixed.
    pair.destination
        .exec("UPDATE orders SET v = 0 WHERE id = 7")
        .await;
    let (code, out, err) = ctl(&url, None, &["validate", "--tables", "orders", "--wait"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 differences remain"), "{out}");
    let (code, out, _) = ctl(&url, None, &["inconsistencies", "--status", "open"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("orders") && out.contains("neq") && out.contains("{\"id\":7}"),
        "{out}"
    );
    let (code, out, _) = ctl(&url, None, &["fix"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("1 fixed, 0 obsolete, 0 failed"), "{out}");
    let (code, _, _) = ctl(&url, None, &["validate", "--wait"]).await;
    assert_eq!(code, 0);
    let (code, out, err) = ctl(&url, None, &["switch", "dst_first"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ctl(&url, None, &["history"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("src_first  -> dst_first"),
        "{out}"
    );

    // Bad input: usage error (clap) exits 2.
    let (code, _, err) = ctl(&url, None, &["switch", "nowhere"]).await;
    assert_eq!(code, 2, "{err}");
    admin.stop().await;

    // Nobody listening: exit 3.
    let (code, _, err) = ctl(&url, None, &["status"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test]
async fn ctl_sends_the_token_and_reads_the_url_from_the_config() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin =
        Admin::start_with_validation(&cfg(&pair, dir.path(), "admin_token = 's3cret'")).await;
    let url = format!("http://{}", admin.addr);
    let (code, _, err) = ctl(&url, None, &["status"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("401") && err.contains("Authorization"),
        "{err}"
    );
    let (code, out, err) = ctl(&url, Some("s3cret"), &["switch", "src_only"]).await;
    assert_eq!(code, 0, "{out}{err}");

    // No --admin: the URL comes from the config's admin_listen.
    let toml = dir.path().join("cutover.toml");
    std::fs::write(
        &toml,
        format!(
            "admin_listen = '{}'\nadmin_token = 's3cret'\n[source]\nurl = '{}'\n[destination]\nurl = '{}'\n",
            admin.addr,
            pair.source.url("shop"),
            pair.destination.url("shop")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["ctl", "--config"])
        .arg(&toml)
        .arg("history")
        .env("CUTOVER_ADMIN_TOKEN", "s3cret")
        .env_remove("CUTOVER_ADMIN_URL")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("initial    -> src_only"), "{text}");
    admin.stop().await;
}
