//! Unit tests of the determinism analysis.

use super::*;

fn text(a: &Analysis) -> String {
    String::from_utf8_lossy(&a.rewritten.as_ref().unwrap()[1..]).into_owned()
}

#[test]
fn pins_uuid_and_sysdate_in_insert_values() {
    let a = analyze(b"INSERT INTO t (u, s, x) VALUES (UUID(), UUID_SHORT(), SYSDATE(6)), (uuid ( ), 1, 'UUID()')");
    let t = text(&a);
    assert_eq!(
        t.to_ascii_uppercase().matches("UUID").count(),
        1,
        "only the string literal keeps it: {t}"
    );
    assert!(t.contains("NOW(6)"), "{t}");
    assert!(t.ends_with("'UUID()')"), "string literal untouched: {t}");
    assert_eq!(a.unsafe_reason, None);
    assert_eq!(a.table.as_deref(), Some("t"));
    let lits: Vec<&str> = t.split('\'').collect();
    assert_ne!(lits[1], lits[3], "each occurrence gets its own value");
}

#[test]
fn flags_what_cannot_be_pinned() {
    assert_eq!(
        analyze(b"UPDATE t SET u = UUID()").unsafe_reason,
        Some("uuid_per_row")
    );
    assert_eq!(
        analyze(b"DELETE FROM t LIMIT 10").unsafe_reason,
        Some("limit_without_order_by")
    );
    assert_eq!(
        analyze(b"DELETE FROM t ORDER BY id LIMIT 10").unsafe_reason,
        None
    );
    assert_eq!(
        analyze(b"INSERT INTO t SELECT * FROM s").unsafe_reason,
        Some("insert_select_without_order_by")
    );
    assert_eq!(
        analyze(b"INSERT INTO t SELECT * FROM s ORDER BY id").unsafe_reason,
        None
    );
    assert_eq!(
        analyze(b"INSERT INTO t VALUES (CONNECTION_ID())").unsafe_reason,
        Some("unpinnable_function")
    );
    assert_eq!(
        analyze(b"UPDATE t SET a = 1 WHERE id IN (SELECT id FROM s LIMIT 1)").unsafe_reason,
        None
    );
    assert_eq!(
        analyze(b"INSERT INTO t (a) VALUES (RAND()), (NOW())").unsafe_reason,
        None
    );
}

#[test]
fn finds_the_target_table() {
    assert_eq!(
        analyze(b"INSERT IGNORE INTO `my t` VALUES (1)")
            .table
            .as_deref(),
        Some("my t")
    );
    assert_eq!(
        analyze(b"update low_priority orders set a=1")
            .table
            .as_deref(),
        Some("orders")
    );
    assert_eq!(
        analyze(b"DELETE QUICK FROM items WHERE id=1")
            .table
            .as_deref(),
        Some("items")
    );
    assert_eq!(
        analyze(b"LOAD DATA LOCAL INFILE 'x' INTO TABLE li")
            .table
            .as_deref(),
        Some("li")
    );
    assert_eq!(
        analyze(b"REPLACE t (a) VALUES (1)").verb,
        Some(Verb::Insert)
    );
    assert_eq!(
        analyze(b"INSERT INTO shop.`o``k` VALUES (1)")
            .table
            .as_deref(),
        Some("shop.o`k")
    );
}

#[test]
fn reads_the_statement_inside_a_clients_set_statement() {
    let a = analyze(b"SET STATEMENT sql_mode='' FOR INSERT INTO t (u) VALUES (UUID())");
    assert_eq!(a.verb, Some(Verb::Insert));
    assert_eq!(a.table.as_deref(), Some("t"));
    assert_eq!(a.pinnable, Pinnable::Wrap);
    assert!(!text(&a).contains("UUID()"), "{}", text(&a));
}

#[test]
fn flags_writes_that_read_the_previous_statement_s_diagnostics() {
    assert_eq!(
        analyze(b"INSERT INTO log VALUES (ROW_COUNT())").unsafe_reason,
        Some("session_diagnostics")
    );
    assert_eq!(
        analyze(b"INSERT INTO log SELECT FOUND_ROWS() ORDER BY 1").unsafe_reason,
        Some("session_diagnostics")
    );
    assert!(analyze(b"UPDATE t SET r = RAND()").calls_rand);
    assert_eq!(analyze(b"LOCK TABLES t WRITE").pinnable, Pinnable::No);
}

#[test]
fn never_panics_on_garbage() {
    for s in [
        &b"UUID("[..],
        b"INSERT INTO",
        b"(((",
        b")))",
        b"INSERT INTO t VALUES (UUID(",
        b"\xff\xfe",
    ] {
        let _ = analyze(s);
    }
}
