//! Unit tests of the stored-program catalog.

use super::*;
use crate::backend::{Captured, ColumnMeta};

fn rows(rows: &[&[Option<&str>]]) -> Captured {
    let width = rows.first().map_or(0, |r| r.len());
    Captured {
        columns: vec![
            ColumnMeta {
                column_type: 253,
                charset: 45,
                flags: 0
            };
            width
        ],
        rows: rows
            .iter()
            .map(|r| r.iter().map(|c| c.map(|s| s.as_bytes().to_vec())).collect())
            .collect(),
        ..Captured::default()
    }
}

fn catalog() -> CatalogData {
    let routines = rows(&[
        &[
            Some("shop"),
            Some("bump"),
            Some("FUNCTION"),
            Some("CONTAINS SQL"),
            Some("BEGIN INSERT INTO hits (k) VALUES (k); RETURN 1; END"),
        ],
        &[
            Some("shop"),
            Some("fmt"),
            Some("FUNCTION"),
            Some("NO SQL"),
            Some("RETURN CONCAT('<', x, '>')"),
        ],
        &[
            Some("shop"),
            Some("stamp"),
            Some("FUNCTION"),
            Some("NO SQL"),
            Some("RETURN CONCAT(UUID(), x)"),
        ],
        &[
            Some("shop"),
            Some("outer_f"),
            Some("FUNCTION"),
            Some("READS SQL DATA"),
            Some("RETURN fmt(bump(x))"),
        ],
        &[
            Some("shop"),
            Some("hidden"),
            Some("FUNCTION"),
            Some("NO SQL"),
            None,
        ],
        &[
            Some("shop"),
            Some("logit"),
            Some("PROCEDURE"),
            Some("CONTAINS SQL"),
            Some("BEGIN UPDATE counters SET n = n + 1; END"),
        ],
        &[
            Some("shop"),
            Some("via_proc"),
            Some("FUNCTION"),
            Some("CONTAINS SQL"),
            Some("BEGIN CALL logit(); RETURN 1; END"),
        ],
        &[
            Some("shop"),
            Some("setter"),
            Some("FUNCTION"),
            Some("NO SQL"),
            Some("BEGIN SET @last = x; RETURN x; END"),
        ],
        &[
            Some("shop"),
            Some("declared"),
            Some("FUNCTION"),
            Some("MODIFIES SQL DATA"),
            Some("RETURN 1"),
        ],
    ]);
    let triggers = rows(&[
        &[
            Some("shop"),
            Some("orders"),
            Some("INSERT"),
            Some("INSERT INTO audit (order_id) VALUES (NEW.id)"),
        ],
        &[
            Some("shop"),
            Some("orders"),
            Some("UPDATE"),
            Some("SET NEW.total = NEW.qty * NEW.price"),
        ],
        &[
            Some("shop"),
            Some("items"),
            Some("INSERT"),
            Some("SET NEW.tag = UUID()"),
        ],
        &[
            Some("shop"),
            Some("stock"),
            Some("UPDATE"),
            Some("UPDATE shop.ledger SET n = n + 1 WHERE id = NEW.id"),
        ],
    ]);
    let autoinc = rows(&[
        &[Some("shop"), Some("audit")],
        &[Some("shop"), Some("hits")],
    ]);
    build(&routines, &triggers, &autoinc)
}

#[test]
fn functions_that_write_are_known() {
    let c = catalog();
    let f = |n: &str| c.function(Some("shop"), n).cloned().unwrap();
    assert!(
        f("bump").writes && f("bump").nondeterministic,
        "auto-increment insert"
    );
    assert_eq!(f("bump").targets, ["shop.hits"]);
    assert!(!f("fmt").writes && !f("fmt").nondeterministic);
    assert!(!f("stamp").writes && f("stamp").nondeterministic);
    assert!(f("outer_f").writes, "calls a writing function");
    assert!(
        f("hidden").writes && f("hidden").nondeterministic,
        "unreadable body"
    );
    assert!(f("via_proc").writes);
    assert!(f("via_proc").targets.contains(&"shop.counters".to_string()));
    assert!(f("setter").writes, "assigns a user variable");
    assert!(f("declared").writes, "declared MODIFIES SQL DATA");
    assert!(
        c.function(Some("shop"), "logit").is_none(),
        "a procedure is not a function"
    );
    assert!(c.function(Some("other"), "bump").is_none());
    assert!(
        c.function(None, "shop.BUMP").is_some(),
        "qualified, any case"
    );
    assert!(c.function(None, "`shop`.`bump`").is_some());
}

#[test]
fn triggers_and_what_they_do() {
    let c = catalog();
    let on = |t: &str, v: Option<&str>| c.triggers_on(Some("shop"), t, v);
    let ins = on("orders", Some("INSERT"));
    assert_eq!(ins.len(), 1);
    assert!(
        ins[0].effects.nondeterministic,
        "audit has an AUTO_INCREMENT id"
    );
    assert_eq!(ins[0].effects.targets, ["shop.audit"]);
    let upd = on("orders", Some("UPDATE"));
    assert!(!upd[0].effects.nondeterministic && !upd[0].effects.writes);
    assert!(on("items", None)[0].effects.nondeterministic, "UUID()");
    let stock = on("stock", Some("UPDATE"));
    assert!(stock[0].effects.writes && !stock[0].effects.nondeterministic);
    assert_eq!(stock[0].effects.targets, ["shop.ledger"]);
    assert!(on("orders", Some("DELETE")).is_empty());
}

#[test]
fn finds_calls_and_routine_ddl() {
    let found: Vec<(Option<String>, String)> = calls(
        b"SELECT bump('x'), shop.fmt(a), COUNT(*), t.c FROM t WHERE x IN (SELECT `stamp`(1))",
    )
    .map(|(s, n)| {
        (
            s.map(|s| String::from_utf8_lossy(s).into_owned()),
            String::from_utf8_lossy(n).into_owned(),
        )
    })
    .collect();
    assert_eq!(
        found,
        [
            (None, "bump".to_string()),
            (Some("shop".to_string()), "fmt".to_string()),
            (None, "COUNT".to_string()),
            (None, "IN".to_string()),
            (None, "stamp".to_string()),
        ]
    );
    assert!(changes_stored_programs(
        b"CREATE DEFINER=`app`@`%` FUNCTION bump(k INT) RETURNS INT RETURN 1"
    ));
    assert!(changes_stored_programs(b"drop trigger if exists t1"));
    assert!(changes_stored_programs(
        b"CREATE OR REPLACE PROCEDURE p() BEGIN END"
    ));
    assert!(!changes_stored_programs(
        b"CREATE TABLE function_log (a INT)"
    ));
    assert!(!changes_stored_programs(b"INSERT INTO t VALUES (1)"));
}

fn facts_catalog() -> CatalogData {
    let mut data = catalog();
    let clocked = rows(&[
        &[Some("shop"), Some("Stamped")],
        &[Some("shop"), Some("recent_v")],
    ]);
    let autoinc = rows(&[&[Some("shop"), Some("orders")]]);
    let all = rows(&[
        &[Some("shop"), Some("plain")],
        &[Some("shop"), Some("Stamped")],
        &[Some("shop"), Some("orders")],
    ]);
    data.tables = TableFacts::build([&clocked, &autoinc, &all], ["audited"].into_iter());
    data
}

#[test]
fn needs_follow_the_words_and_the_tables() {
    use crate::determinism::Verb::{Delete, Insert, Update};
    let data = facts_catalog();
    let none = Needs {
        clock: false,
        rand: false,
        insert_id: false,
    };
    let n = |sql: &str, verb| {
        let target = crate::determinism::analyze(sql.as_bytes()).table;
        needs(&data, sql.as_bytes(), Some(verb), target.as_deref())
    };
    assert_eq!(n("UPDATE plain SET v = ? WHERE id = ?", Update), none);
    assert_eq!(n("DELETE FROM plain WHERE id = 1", Delete), none);
    assert!(n("UPDATE plain SET at = NOW(6)", Update).clock);
    assert!(n("update plain set d = curdate()", Update).clock);
    assert!(n("INSERT INTO plain VALUES (UNIX_TIMESTAMP())", Insert).clock);
    let r = n("INSERT INTO plain VALUES (RAND())", Insert);
    assert!(r.rand && !r.clock);
    // a table whose default / ON UPDATE / trigger reads the clock, in any spelling
    assert!(n("UPDATE `shop`.`stamped` SET v = 1", Update).clock);
    assert!(n("INSERT INTO STAMPED (v) VALUES (1)", Insert).rand);
    assert!(n("UPDATE plain JOIN audited USING (id) SET v = 1", Update).clock);
    assert!(
        n("INSERT INTO plain SELECT * FROM recent_v", Insert).clock,
        "a view"
    );
    // AUTO_INCREMENT: only an insert needs the primary's id
    assert!(n("INSERT INTO orders (v) VALUES (1)", Insert).insert_id);
    assert!(!n("UPDATE orders SET v = 1", Update).insert_id);
    // a stored function: everything
    assert_eq!(n("UPDATE plain SET v = bump(1)", Update), Needs::ALL);
    // words inside strings and comments are not names
    assert_eq!(
        n("UPDATE plain SET v = 'NOW() stamped' /* RAND() */", Update),
        none
    );
    // a target the catalog has not seen (new, or temporary): everything
    assert_eq!(n("INSERT INTO fresh VALUES (1)", Insert), Needs::ALL);
    assert_eq!(n("UPDATE shop.`fresh` SET v = 1", Update), Needs::ALL);
    // nothing known yet: everything
    let unknown = CatalogData::default();
    let plain = Some("plain");
    assert_eq!(
        needs(&unknown, b"UPDATE plain SET v = 1", Some(Update), plain),
        Needs::ALL
    );
}
