//! What `cutover ctl` prints: plain text for a person, from the admin API's
//! JSON. Missing fields render as `-`, never panic.

use std::fmt::Write;

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `ctl status`: state, next moves, validation, inconsistencies, mirror, backends.
pub fn status(st: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "state            {} (pattern {})",
        s(&st["current_state"]),
        s(&st["current_pattern"])
    );
    next_moves(&mut o, &st["next_moves"]);
    validation(&mut o, st);
    let _ = writeln!(
        o,
        "inconsistencies  {} open",
        u(&st["open_inconsistencies"])
    );
    let m = &st["mirror_health"];
    let p = &st["pool_metrics"];
    let _ = writeln!(
        o,
        "mirror           {} lost writes, {} mismatches, {} unsafe statements \
         ({} mirrored ok, {} rolled back with their transaction, {} retried)",
        u(&m["failures"]),
        u(&m["mismatches"]),
        u(&m["unsafe_statements"]),
        u(&p["double_write_success"]),
        u(&p["double_write_rolled_back"]),
        u(&p["mirror_retries_succeeded"]) + u(&p["mirror_retries_failed"])
    );
    let backend = |b: &Value| {
        if b["ok"] == true {
            format!("ok ({:.1} ms)", b["latency_ms"].as_f64().unwrap_or(0.0))
        } else {
            format!("DOWN ({})", s(&b["error"]))
        }
    };
    let _ = writeln!(
        o,
        "backends         source {}, destination {}",
        backend(&st["pool_health"]["source"]),
        backend(&st["pool_health"]["destination"])
    );
    drift(&mut o, &st["drift"]);
    if let Some(w) = st["auto_promotion"]["waiting_for"].as_str() {
        let _ = writeln!(o, "auto-promotion   waiting for {w}");
    }
    if st["auto_migrate"].is_object() {
        let a = &st["auto_migrate"];
        let _ = writeln!(
            o,
            "auto-migrate     {} at {}{}",
            s(&a["outcome"]),
            s(&a["current_step"]),
            a["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    o
}

/// The `drift` section of `/status` (issue #19).
fn drift(o: &mut String, d: &Value) {
    if !d.is_object() {
        return;
    }
    if let Some(e) = d["error"].as_str() {
        let _ = writeln!(o, "drift            not checked: {e}");
        return;
    }
    let items = d["items"].as_array().cloned().unwrap_or_default();
    if d["checked_at"].is_null() {
        let _ = writeln!(o, "drift            not checked yet");
        return;
    }
    if items.is_empty() {
        let _ = writeln!(o, "drift            none (checked {})", s(&d["checked_at"]));
        return;
    }
    for (i, it) in items.iter().enumerate() {
        let label = if i == 0 { "drift" } else { "" };
        let tag = if it["blocking"] == true {
            "BLOCKING"
        } else if it["intended"] == true {
            "intended"
        } else {
            "info"
        };
        let _ = writeln!(
            o,
            "{label:<16} {tag:<8} {} {}: source {}, destination {}",
            s(&it["kind"]),
            s(&it["name"]),
            s(&it["source"]),
            s(&it["destination"])
        );
    }
}

fn next_moves(o: &mut String, moves: &Value) {
    let Some(moves) = moves.as_array().filter(|m| !m.is_empty()) else {
        let _ = writeln!(o, "next moves       none (final state)");
        return;
    };
    for (i, m) in moves.iter().enumerate() {
        let label = if i == 0 { "next moves" } else { "" };
        let verdict = if m["allowed"] == true {
            "allowed".to_string()
        } else if m["forced_only"] == true {
            "blocked (only with --force)".to_string()
        } else {
            "blocked".to_string()
        };
        let _ = writeln!(o, "{label:<16} -> {:<10} {verdict}", s(&m["to"]));
        for b in m["blockers"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "{:<16}      needs {}", "", s(b));
        }
    }
}

fn validation(o: &mut String, st: &Value) {
    let d = &st["validation_detail"];
    if st["validation"]["available"] != true {
        let _ = writeln!(o, "validation       not available in this server");
        return;
    }
    if let Some(tables) = d["full"]["tables"].as_array() {
        let checked: u64 = tables.iter().map(|t| u(&t["rows_checked"])).sum();
        let total: u64 = tables.iter().map(|t| u(&t["estimated_total"])).sum();
        let current = tables.iter().find(|t| t["done"] == false);
        let eta = current
            .and_then(|t| t["eta_seconds"].as_f64())
            .map(|e| {
                format!(
                    ", ETA {e:.0} s for {}",
                    s(&current.map_or(Value::Null, |t| t["table"].clone()))
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "validation       running: {checked}/{total} rows, {} tables done of {}{eta}, {} found so far",
            tables.iter().filter(|t| t["done"] == true).count(),
            tables.len(),
            u(&d["full"]["found"])
        );
    }
    match st["validation"]["last_full"].as_object() {
        None => {
            let _ = writeln!(o, "last validation  none since the server started");
        }
        Some(l) => {
            let _ = writeln!(
                o,
                "last validation  {} in {} at {}: {} rows, {} found, {} repaired, {} left",
                s(&l["outcome"]),
                s(&l["state"]),
                s(&l["finished_at"]),
                u(&l["rows_checked"]),
                u(&l["found"]),
                u(&l["repaired"]),
                s(&l["discrepancies"])
            );
        }
    }
}

/// `ctl switch`.
pub fn moved(st: &Value, to: crate::control::State) -> String {
    if st["changed"] == false {
        return format!("already in {to} (no change)\n");
    }
    let h = st["history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .unwrap_or(Value::Null);
    let forced = if h["forced"] == true { " (forced)" } else { "" };
    format!(
        "moved {} -> {}{forced}; pattern {}\n",
        s(&h["from"]),
        s(&st["current_state"]),
        s(&st["current_pattern"])
    )
}

/// `ctl validate` (the 202 answer).
pub fn started(r: &Value) -> String {
    let mut o = format!(
        "full validation {} {} over {} (fix: {})\n",
        s(&r["run_id"]),
        if r["resumed"] == true {
            "resumed"
        } else {
            "started"
        },
        r["tables"]
            .as_array()
            .map(|t| t.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "every table".into()),
        s(&r["fix"])
    );
    if let Some(n) = r["note"].as_str() {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// `ctl validate --wait`: the finished run.
pub fn run_summary(r: &Value) -> String {
    let mut o = format!(
        "{:<24} {:>10} {:>8} {:>9}\n",
        "table", "rows", "found", "repaired"
    );
    for t in r["tables"].as_array().into_iter().flatten() {
        let found = u(&t["target_missing"]) + u(&t["base_missing"]) + u(&t["neq"]);
        let _ = writeln!(
            o,
            "{:<24} {:>10} {:>8} {:>9}",
            s(&t["table"]),
            u(&t["rows_checked"]),
            found,
            u(&t["repaired"])
        );
    }
    for t in r["skipped"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "{:<24} skipped: {}", s(&t["table"]), s(&t["reason"]));
    }
    let verdict = match (s(&r["outcome"]).as_str(), u(&r["remaining"])) {
        ("completed", 0) => "consistent".to_string(),
        ("completed", n) => format!("{n} differences remain"),
        (other, _) => format!("{other}: {}", s(&r["error"])),
    };
    let _ = writeln!(
        o,
        "run {} (base {}): {} found, {} repaired, {} events recorded — {verdict}",
        s(&r["run_id"]),
        s(&r["direction"]),
        u(&r["found"]),
        u(&r["totals"]["repaired"]),
        u(&r["events_recorded"])
    );
    o
}

/// `ctl fix`.
pub fn fixed(r: &Value) -> String {
    let mut o = format!(
        "{} fixed, {} obsolete, {} failed (of {})\n",
        u(&r["fixed"]),
        u(&r["obsolete"]),
        u(&r["failed"]),
        u(&r["attempted"])
    );
    for e in r["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "error: {}", s(e));
    }
    if r["rescan"].is_object() {
        let _ = writeln!(
            o,
            "started full run {} with fix over {} (differences no event records)",
            s(&r["rescan"]["run_id"]),
            r["rescan"]["tables"]
                .as_array()
                .map(|t| t.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
    }
    if let Some(n) = r["note"].as_str() {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// `ctl inconsistencies`.
pub fn events(list: &Value) -> String {
    let mut o = format!(
        "{:>6}  {:<20} {:<15} {:<4} {:<9} pk\n",
        "id", "table", "kind", "base", "status"
    );
    for e in list.as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:>6}  {:<20} {:<15} {:<4} {:<9} {}",
            s(&e["id"]),
            s(&e["table"]),
            s(&e["kind"]),
            s(&e["direction"]),
            s(&e["status"]),
            e["pk"]
        );
    }
    o
}

/// `ctl history`.
pub fn history(h: &Value) -> String {
    let mut o = String::new();
    for t in h.as_array().into_iter().flatten() {
        let forced = if t["forced"] == true { "  forced" } else { "" };
        let _ = writeln!(
            o,
            "{}  {:<10} -> {:<10} {}{forced}",
            s(&t["time"]),
            s(&t["from"]),
            s(&t["to"]),
            s(&t["trigger"])
        );
        for b in t["overridden"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "      overrode: {}", s(b));
        }
    }
    if o.is_empty() {
        o.push_str("no moves yet\n");
    }
    o
}
