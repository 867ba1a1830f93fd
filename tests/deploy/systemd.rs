//! `deploy/systemd/cutover.service`: `systemd-analyze verify` (runs without
//! systemd as PID 1), `systemd-analyze security --offline` under a threshold,
//! and the unit against its configuration file and the binary.

use std::collections::BTreeMap;
use std::process::Command;

use cutover::config::{Config, Overrides};

use crate::support::binary::repo_path;
use crate::{env_vars_read, read, run, tool};

/// `Key=value` lines of the unit, all values per key in order.
fn unit() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("deploy/systemd/cutover.service").lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line}"));
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

fn one(u: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    let v = u.get(key).unwrap_or_else(|| panic!("{key}= missing"));
    assert_eq!(v.len(), 1, "{key}= set {} times", v.len());
    v[0].clone()
}

/// seconds of a systemd time span like `20s`, `2min`, `1min 30s`.
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("time span {span}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                other => panic!("unit {other} in {span}"),
            }
        })
        .sum()
}

#[test]
fn unit_verifies_and_is_hardened() {
    // verify checks that ExecStart's binary exists: point a copy at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let text = read("deploy/systemd/cutover.service").replace(
        "/usr/local/bin/cutover ",
        &format!("{} ", env!("CARGO_BIN_EXE_cutover")),
    );
    let copy = dir.path().join("cutover.service");
    std::fs::write(&copy, text).unwrap();
    let analyze = tool("systemd-analyze");
    let out = run(Command::new(&analyze).arg("verify").arg(&copy));
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msg.trim().is_empty(),
        "systemd-analyze verify:\n{msg}"
    );
    // Exposure 0.0 (locked down) .. 10.0 (unprotected); 2.0 is well inside "OK".
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy));
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{msg}");

    let u = unit();
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(&u, key), want, "{key}");
    }
    // cutover has no configuration reload (no SIGHUP handler): an ExecReload would lie.
    assert!(
        !u.contains_key("ExecReload"),
        "ExecReload without a reload in cutover"
    );
}

#[test]
fn unit_agrees_with_its_configuration_and_the_binary() {
    let u = unit();
    let exec: Vec<String> = one(&u, "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/cutover");
    assert_eq!(exec[1], "serve");
    let config = &exec[exec.iter().position(|a| a == "--config").unwrap() + 1];
    assert_eq!(
        config,
        &format!("/etc/{}/cutover.toml", one(&u, "ConfigurationDirectory")),
        "the config file lives in the ConfigurationDirectory"
    );
    let overrides = Overrides {
        source: Some("mysql://app:pw@127.0.0.1:3306/shop".into()),
        destination: Some("mysql://app:pw@127.0.0.1:3307/shop".into()),
        ..Default::default()
    };
    let cfg = Config::load(&repo_path("deploy/systemd/cutover.toml"), &overrides)
        .unwrap_or_else(|e| panic!("{e}"));
    // ProtectSystem=strict: only the StateDirectory is writable.
    let state = format!("/var/lib/{}", one(&u, "StateDirectory"));
    assert!(
        cfg.state_file.starts_with(&state),
        "state_file {:?} outside {state}",
        cfg.state_file
    );
    assert!(
        cfg.data_dir.starts_with(&state),
        "data_dir {:?} outside {state}",
        cfg.data_dir
    );
    assert_eq!(one(&u, "WorkingDirectory"), "%S/cutover");
    // systemd's SIGKILL must not cut the drain short.
    let stop = seconds(&one(&u, "TimeoutStopSec"));
    assert!(
        stop >= cfg.limits.shutdown_timeout_ms.div_ceil(1000) + 5,
        "TimeoutStopSec {stop}s vs shutdown_timeout_ms {}",
        cfg.limits.shutdown_timeout_ms
    );
    // Up to three descriptors per client connection (client, source, destination).
    let nofile: usize = one(&u, "LimitNOFILE").parse().unwrap();
    assert!(
        nofile >= 3 * cfg.limits.max_connections + 64,
        "LimitNOFILE {nofile}"
    );
    // The EnvironmentFile example sets only variables cutover reads.
    assert!(one(&u, "EnvironmentFile").ends_with("/etc/cutover/cutover.env"));
    let known = env_vars_read();
    for line in read("deploy/systemd/cutover.env.example").lines() {
        let line = line.trim_start_matches('#');
        if let Some((k, _)) = line.split_once('=') {
            assert!(
                known.contains(k),
                "cutover.env.example sets {k}, which cutover does not read"
            );
        }
    }
    for v in u.get("Environment").into_iter().flatten() {
        let k = v.split_once('=').unwrap().0;
        assert!(
            known.contains(k),
            "Environment={k}: cutover does not read it"
        );
    }
}
