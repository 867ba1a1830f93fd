//! What a write can read that a pin fixes, for `[mirror] pinning =
//! "when_needed"` (issue #17): the clock, the RNG, the next AUTO_INCREMENT
//! value. The statement text shows calls (`NOW()`, `RAND()`); the schema
//! shows what it does not — a column whose default or `ON UPDATE` is an
//! expression (`CURRENT_TIMESTAMP`, `RAND()`, …), a generated column, a
//! TIMESTAMP column (with `explicit_defaults_for_timestamp=OFF` a NULL
//! stored there becomes the current time), a system-versioned table (its
//! row_start/row_end take the clock), a view (its SELECT may call NOW()),
//! a table with triggers, an AUTO_INCREMENT column. Sources: MariaDB Knowledge
//! Base, "CREATE TABLE" (DEFAULT expressions, ON UPDATE), "System-Versioned
//! Tables", "Information Schema COLUMNS Table" (COLUMN_DEFAULT shows a
//! string literal quoted, NULL as `NULL`, an expression as written).

use std::collections::HashSet;

use super::{text, CatalogData, SYSTEM_SCHEMAS};
use crate::backend::Captured;
use crate::determinism::Verb;
use crate::lexer::{Lexer, Tok};

/// The query for the tables whose writes may read the clock or the RNG
/// without the statement saying so: (schema, table) rows.
pub(super) fn clocked_tables_sql() -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS} AND (EXTRA LIKE '%on update%' \
         OR IS_GENERATED <> 'NEVER' OR DATA_TYPE = 'timestamp' OR (COLUMN_DEFAULT IS NOT NULL AND COLUMN_DEFAULT <> 'NULL' \
         AND COLUMN_DEFAULT NOT LIKE '''%' AND COLUMN_DEFAULT NOT REGEXP '^-?[0-9]+(\\\\.[0-9]+)?$')) \
         UNION SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS} AND TABLE_TYPE IN ('SYSTEM VERSIONED', 'VIEW')"
    )
}

/// The query for every table and view outside the system schemas: a write
/// to a table not among them (created since the last read, or temporary)
/// is pinned whole.
pub(super) fn all_tables_sql() -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
    )
}

/// Table names (bare, lower-case) that decide what a write needs pinned.
#[derive(Debug, Clone, Default)]
pub struct TableFacts {
    /// The facts were read (without them everything is pinned).
    pub known: bool,
    /// Every table and view the catalog read saw.
    pub tables: HashSet<String>,
    /// Tables whose writes may read the clock or the RNG implicitly
    /// (expression defaults, ON UPDATE, generated or TIMESTAMP columns,
    /// system versioning, triggers) and views.
    pub clocked: HashSet<String>,
    /// Tables with an AUTO_INCREMENT column.
    pub autoinc: HashSet<String>,
}

impl TableFacts {
    /// Built from the clocked-tables rows, the AUTO_INCREMENT rows and the
    /// trigger tables. Names are kept bare: a statement naming `t` in any
    /// schema is matched (more pinning, never less).
    pub fn build<'a>(
        [clocked, autoinc, all]: [&Captured; 3],
        triggers: impl Iterator<Item = &'a str>,
    ) -> TableFacts {
        let name = |r: &Vec<Option<Vec<u8>>>| text(r.get(1)?).map(|t| t.to_lowercase());
        let mut facts = TableFacts {
            known: true,
            tables: all.rows.iter().filter_map(name).collect(),
            clocked: clocked.rows.iter().filter_map(name).collect(),
            autoinc: autoinc.rows.iter().filter_map(name).collect(),
        };
        facts.clocked.extend(triggers.map(str::to_lowercase));
        facts
    }
}

/// What one write needs pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// `timestamp`.
    pub clock: bool,
    /// `rand_seed1` / `rand_seed2`.
    pub rand: bool,
    /// `insert_id` on the mirror.
    pub insert_id: bool,
}

impl Needs {
    /// Everything (`pinning = "always"`, or nothing known).
    pub const ALL: Needs = Needs {
        clock: true,
        rand: true,
        insert_id: true,
    };
}

/// Functions that read the clock (MariaDB "Date & Time Functions"; SYSDATE()
/// is rewritten to NOW() before this is asked).
const CLOCK_WORDS: [&[u8]; 13] = [
    b"NOW",
    b"CURRENT_TIMESTAMP",
    b"CURRENT_DATE",
    b"CURRENT_TIME",
    b"CURDATE",
    b"CURTIME",
    b"LOCALTIME",
    b"LOCALTIMESTAMP",
    b"UTC_DATE",
    b"UTC_TIME",
    b"UTC_TIMESTAMP",
    b"UNIX_TIMESTAMP",
    b"SYSDATE",
];

/// What the write `sql` (its verb `verb`, its target table `target` as
/// `name` or `db.name`) needs pinned, by its words: a clock function, RAND,
/// a clocked table, an AUTO_INCREMENT table it inserts into, a stored
/// function (then everything). A target the catalog has not seen (created
/// since its last read, or a temporary table) is pinned whole.
pub fn needs(data: &CatalogData, sql: &[u8], verb: Option<Verb>, target: Option<&str>) -> Needs {
    let facts = &data.tables;
    let bare = target
        .and_then(|t| t.rsplit('.').next())
        .map(str::to_lowercase);
    if !facts.known || !bare.is_some_and(|t| facts.tables.contains(&t)) {
        return Needs::ALL;
    }
    let inserts = matches!(verb, Some(Verb::Insert | Verb::Load) | None);
    let mut out = Needs {
        clock: false,
        rand: false,
        insert_id: false,
    };
    let mut lx = Lexer::new(sql);
    let mut lower = String::new();
    while let Some((t, _)) = lx.next() {
        let w = match t {
            Tok::Word(w) | Tok::Quoted(b'`', w) => w,
            _ => continue,
        };
        if CLOCK_WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) {
            out.clock = true;
            continue;
        }
        if w.eq_ignore_ascii_case(b"RAND") {
            out.rand = true;
            continue;
        }
        lower.clear();
        lower.extend(
            String::from_utf8_lossy(w)
                .chars()
                .map(|c| c.to_ascii_lowercase()),
        );
        if facts.clocked.contains(&lower) {
            out.clock = true;
            out.rand = true;
        }
        if inserts && facts.autoinc.contains(&lower) {
            out.insert_id = true;
        }
        if data.functions.keys().any(|(_, f)| *f == lower) {
            return Needs::ALL;
        }
    }
    out
}
