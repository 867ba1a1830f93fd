//! `cutover validate`: exit 0 when consistent, 1 when discrepancies remain,
//! 2 for configuration errors; `--fix` repairs; a summary table on stdout.

mod support;

use cutover::control::{FileStateStore, PersistedState, State, StateStore};
use cutover::pattern::Pattern;
use support::Pair;
use tokio::process::Command;

/// Write the migration state `cutover serve` would have persisted.
fn persist(path: &std::path::Path, state: State) {
    FileStateStore::new(path)
        .save(&PersistedState::fresh(state))
        .unwrap();
}

async fn validate(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("validate")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CUTOVER_LOG", "warn")
        .output()
        .await
        .expect("run cutover validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn exit_codes_summary_and_fix() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE a (id INT PRIMARY KEY, v INT, utime BIGINT); \
                INSERT INTO a SELECT seq, seq, seq FROM seq_1_to_5000; \
                CREATE TABLE b (k VARCHAR(10) PRIMARY KEY, v TEXT); \
                INSERT INTO b SELECT CONCAT('k', seq), REPEAT('z', seq) FROM seq_1_to_300;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cutover.toml");
    let data = dir.path().join("data");
    // The authoritative side comes from the persisted migration state.
    let state = dir.path().join("state.json");
    persist(&state, State::SrcFirst);
    let state_line = format!("state_file = '{}'\n", state.display());
    std::fs::write(
        &cfg,
        state_line.clone()
            + &support::validate::config_text(
                &pair,
                Pattern::SrcFirst,
                &data,
                "recheck_delay_ms = 0",
            ),
    )
    .unwrap();

    let (code, out, err) = validate(&cfg, &[]).await;
    assert_eq!(code, 0, "consistent: {out}\n{err}");
    assert!(out.contains("consistent"), "{out}");
    assert!(out.lines().next().unwrap().starts_with("table"), "{out}");

    pair.destination
        .exec("UPDATE a SET v = 0 WHERE id = 4000; DELETE FROM b WHERE k = 'k7';")
        .await;
    let (code, out, err) = validate(&cfg, &[]).await;
    assert_eq!(code, 1, "differences: {out}\n{err}");
    assert!(out.contains("2 discrepancies remain"), "{out}");
    let a_line = out.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(
        a_line.split_whitespace().collect::<Vec<_>>() == ["a", "5000", "0", "0", "1", "0"],
        "{a_line}"
    );

    // Incremental on table a from utime 3000 still sees the changed row 4000.
    let (code, out, _) = validate(&cfg, &["--table", "a", "--since", "3000"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("incremental validation"), "{out}");

    let (code, out, err) = validate(&cfg, &["--fix"]).await;
    assert_eq!(code, 0, "fixed: {out}\n{err}");
    assert!(out.contains("2 repaired"), "{out}");
    let (code, out, _) = validate(&cfg, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(data.join("inconsistencies.jsonl").exists());

    // Configuration errors.
    std::fs::write(&cfg, "[source]\nurl = 'mysql://a@h/db'\n").unwrap();
    let (code, _, err) = validate(&cfg, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("destination.url"), "{err}");
    let (code, _, err) = validate(&dir.path().join("missing.toml"), &[]).await;
    assert_eq!(code, 2, "{err}");
    // A backend that is not there: the run cannot complete.
    std::fs::write(
        &cfg,
        format!(
            "{state_line}data_dir = '{}'\n[source]\nurl = 'mysql://app:app@127.0.0.1:1/shop'\n[destination]\nurl = '{}'\n",
            data.display(),
            pair.destination.url("shop")
        ),
    )
    .unwrap();
    let (code, _, err) = validate(&cfg, &[]).await;
    assert_eq!(code, 3, "{err}");
}
