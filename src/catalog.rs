//! What the databases' stored programs do that statement text does not
//! show: stored functions that modify data (a `SELECT f()` is then a
//! write) and triggers or functions whose effects cannot be made the same
//! on both sides (a write that fires them is then unsafe).
//!
//! Read from the authoritative side's `information_schema` (ROUTINES,
//! TRIGGERS, and TABLES for AUTO_INCREMENT) on a connection of cutover's
//! own — never on a client's session connection, whose diagnostics would
//! change — at start, every `[mirror] catalog_refresh_ms`, and at once after
//! DDL through cutover that creates, alters or drops a routine or trigger.
//! Shared by every session (an `ArcSwap`, read without locking).
//!
//! What counts (MariaDB does not enforce `SQL_DATA_ACCESS`, so bodies are
//! read): a routine **writes** when it is declared `MODIFIES SQL DATA`, or
//! its body holds INSERT / UPDATE / DELETE / REPLACE / TRUNCATE / LOAD /
//! CREATE / ALTER / DROP, assigns a user variable, or calls a routine that
//! writes. A routine or trigger body is **non-deterministic** when it
//! inserts into a table with an AUTO_INCREMENT column (ids depend on how
//! concurrent sessions interleave on each side), calls UUID(),
//! UUID_SHORT(), SYSDATE(), CONNECTION_ID(), LOAD_FILE() or RANDOM_BYTES(),
//! or calls a non-deterministic routine. A body cutover may not read
//! (`ROUTINE_DEFINITION` is NULL without privileges) counts as both.

#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_common::constants::CapabilityFlags;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{Backend, Captured, ConnectParams};
use crate::command;
use crate::config::BackendConfig;
use crate::error::BackendError;
use crate::lexer::{Lexer, Tok};
use crate::pattern::Side;

mod clock;
pub use clock::{needs, Needs, TableFacts};

/// What a stored routine's or trigger's body may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// It modifies data (or session state).
    pub writes: bool,
    /// Its effects may differ between the two sides.
    pub nondeterministic: bool,
    /// Tables it writes (`schema.table`, lower-case).
    pub targets: Vec<String>,
}

/// A trigger: the event it fires on and what its body does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub event: String,
    /// What the body does.
    pub effects: Effects,
}

/// One snapshot of the catalog.
#[derive(Debug, Clone, Default)]
pub struct CatalogData {
    /// Stored functions by (schema, name), lower-case.
    pub functions: HashMap<(String, String), Effects>,
    /// Triggers by (schema, table), lower-case.
    pub triggers: HashMap<(String, String), Vec<Trigger>>,
    /// What writes to each table may read implicitly (for `[mirror]
    /// pinning = "when_needed"`).
    pub tables: TableFacts,
}

impl CatalogData {
    /// The stored function `name` (`db.name` or, unqualified, in `db`).
    pub fn function(&self, db: Option<&str>, name: &str) -> Option<&Effects> {
        let (schema, name) = split(db, name)?;
        self.functions.get(&(schema, name))
    }

    /// The triggers on `table` (`db.table` or, unqualified, in `db`) that a
    /// write of `verb` (`INSERT`, `UPDATE`, `DELETE`; `None`: any) fires.
    pub fn triggers_on(&self, db: Option<&str>, table: &str, verb: Option<&str>) -> Vec<&Trigger> {
        let Some(key) = split(db, table) else {
            return Vec::new();
        };
        self.triggers
            .get(&key)
            .map(|ts| {
                ts.iter()
                    .filter(|t| verb.is_none_or(|v| t.event.eq_ignore_ascii_case(v)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `db.name` / `name` in `db` → (schema, name), lower-case, unquoted.
fn split(db: Option<&str>, name: &str) -> Option<(String, String)> {
    let name = name.trim_matches('`');
    match name.split_once('.') {
        Some((s, n)) => Some((unquote(s), unquote(n))),
        None => Some((db?.to_lowercase(), unquote(name))),
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('`').replace("``", "`").to_lowercase()
}

/// The shared catalog (see the module docs).
pub struct Catalog {
    data: ArcSwap<CatalogData>,
    /// Any stored function exists (the check plain reads make).
    has_functions: AtomicBool,
    loaded: AtomicBool,
    /// Reads started so far (a read's ticket orders it).
    reads: AtomicU64,
    /// Ticket of the read whose snapshot is stored: an older read that
    /// finishes later (a periodic one overtaken by the refresh after DDL)
    /// does not overwrite a newer snapshot.
    stored: Mutex<u64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            data: ArcSwap::from_pointee(CatalogData::default()),
            has_functions: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            stored: Mutex::new(0),
        }
    }
}

impl Catalog {
    /// The current snapshot.
    pub fn load(&self) -> Arc<CatalogData> {
        self.data.load_full()
    }

    /// Whether any stored function exists: a plain read pays nothing more
    /// when none does.
    pub fn has_functions(&self) -> bool {
        self.has_functions.load(Ordering::Relaxed)
    }

    /// Whether a first snapshot was read.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Replace the snapshot.
    pub fn store(&self, data: CatalogData) {
        self.has_functions
            .store(!data.functions.is_empty(), Ordering::Relaxed);
        self.data.store(Arc::new(data));
        self.loaded.store(true, Ordering::Relaxed);
    }

    /// Read the catalog from `cfg` (side `side`) and replace the snapshot.
    ///
    /// # Errors
    /// The connect, login or query failure; the snapshot stays.
    pub async fn refresh(
        &self,
        cfg: &BackendConfig,
        side: Side,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let ticket = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let data = tokio::time::timeout(timeout * 2, read(cfg, side, timeout))
            .await
            .map_err(|_| BackendError::Io {
                side,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "catalog read timed out"),
            })??;
        debug!(
            functions = data.functions.len(),
            triggers = data.triggers.len(),
            "stored-program catalog read"
        );
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if ticket > *stored {
            *stored = ticket;
            self.store(data);
        }
        Ok(())
    }

    /// Refresh every `every` until `stop`, from the side `side()` names.
    pub async fn keep_fresh(
        self: Arc<Self>,
        cfgs: [BackendConfig; 2],
        side: impl Fn() -> Side,
        every: Duration,
        timeout: Duration,
        stop: CancellationToken,
    ) {
        loop {
            let s = side();
            if let Err(e) = self.refresh(&cfgs[s.index()], s, timeout).await {
                warn!(%s, "could not read the stored-program catalog: {e}");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

const SYSTEM_SCHEMAS: &str = "('mysql','sys','information_schema','performance_schema')";

async fn read(
    cfg: &BackendConfig,
    side: Side,
    timeout: Duration,
) -> Result<CatalogData, BackendError> {
    let params = ConnectParams {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF,
        mariadb: mysql_common::constants::MariadbCapabilities::empty(),
        credentials: None, // the URL account: cutover's own work
        collation: 45,
        database: None,
        max_packet: 64 * 1024 * 1024,
        timeout,
        attributes: Vec::new(),
    };
    let (mut b, _) = Backend::<()>::connect(cfg, side, &params).await?;
    let limit = 64 << 20;
    let q = |sql: String| command::query(sql);
    let routines = b
        .query_rows(&q(format!("SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, SQL_DATA_ACCESS, ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA NOT IN {SYSTEM_SCHEMAS}")), limit)
        .await?;
    let triggers = b
        .query_rows(&q(format!("SELECT TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, EVENT_MANIPULATION, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA NOT IN {SYSTEM_SCHEMAS}")), limit)
        .await?;
    let autoinc = b
        .query_rows(&q(format!("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.COLUMNS WHERE EXTRA LIKE '%auto_increment%' AND TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}")), limit)
        .await?;
    let clocked = b.query_rows(&q(clock::clocked_tables_sql()), limit).await?;
    let all = b.query_rows(&q(clock::all_tables_sql()), limit).await?;
    b.quit().await;
    for c in [&routines, &triggers, &autoinc, &clocked, &all] {
        if let Some(err) = &c.err {
            return Err(BackendError::Server {
                side,
                err: err.clone(),
            });
        }
    }
    let mut data = build(&routines, &triggers, &autoinc);
    let trigger_tables = data.triggers.keys().map(|(_, t)| t.as_str());
    data.tables = TableFacts::build([&clocked, &autoinc, &all], trigger_tables);
    Ok(data)
}

fn text(cell: &Option<Vec<u8>>) -> Option<String> {
    cell.as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Build a snapshot from the three result sets (also used by tests).
pub fn build(routines: &Captured, triggers: &Captured, autoinc: &Captured) -> CatalogData {
    let autoinc: HashSet<String> = autoinc
        .rows
        .iter()
        .filter_map(|r| Some(format!("{}.{}", text(r.first()?)?, text(r.get(1)?)?).to_lowercase()))
        .collect();
    // (schema, name, is_function) → (declared writes, body)
    let mut bodies = Vec::new();
    for r in &routines.rows {
        let (Some(schema), Some(name)) = (text(&r[0]), text(&r[1])) else {
            continue;
        };
        let function = text(&r[2]).is_some_and(|t| t.eq_ignore_ascii_case("FUNCTION"));
        let modifies = text(&r[3]).is_some_and(|t| t.eq_ignore_ascii_case("MODIFIES SQL DATA"));
        bodies.push((
            (schema.to_lowercase(), name.to_lowercase()),
            function,
            modifies,
            text(&r[4]),
        ));
    }
    let mut scanned: Scanned = HashMap::new();
    for (key, _, modifies, body) in &bodies {
        let (mut e, calls) = match body {
            Some(b) => scan_body(b.as_bytes(), &key.0, &autoinc),
            None => (unreadable(), Vec::new()),
        };
        e.writes |= *modifies;
        scanned.insert(key.clone(), (e, calls));
    }
    close_over_calls(&mut scanned);
    let mut data = CatalogData::default();
    for (key, function, _, _) in bodies {
        if function {
            if let Some((e, _)) = scanned.get(&key) {
                data.functions.insert(key, e.clone());
            }
        }
    }
    for r in &triggers.rows {
        let (Some(schema), Some(table), Some(event)) = (text(&r[0]), text(&r[1]), text(&r[2]))
        else {
            continue;
        };
        let schema = schema.to_lowercase();
        let (mut effects, calls) = match text(&r[3]) {
            Some(b) => scan_body(b.as_bytes(), &schema, &autoinc),
            None => (unreadable(), Vec::new()),
        };
        for c in calls {
            if let Some((e, _)) = scanned.get(&c) {
                effects.writes |= e.writes;
                effects.nondeterministic |= e.nondeterministic;
                effects.targets.extend(e.targets.iter().cloned());
            }
        }
        data.triggers
            .entry((schema, table.to_lowercase()))
            .or_default()
            .push(Trigger { event, effects });
    }
    data
}

/// Routines by (schema, name): their own effects and the routines they call.
type Scanned = HashMap<(String, String), (Effects, Vec<(String, String)>)>;

/// A body cutover cannot read: it may do anything.
fn unreadable() -> Effects {
    Effects {
        writes: true,
        nondeterministic: true,
        targets: Vec::new(),
    }
}

/// Routines calling routines: effects flow from callee to caller.
fn close_over_calls(scanned: &mut Scanned) {
    for _ in 0..scanned.len().min(32) {
        let mut changed = false;
        let keys: Vec<_> = scanned.keys().cloned().collect();
        for k in keys {
            let calls = scanned[&k].1.clone();
            for c in calls {
                let Some((callee, _)) = scanned.get(&c).cloned() else {
                    continue;
                };
                let (e, _) = scanned.get_mut(&k).expect("key exists");
                let before = (e.writes, e.nondeterministic, e.targets.len());
                e.writes |= callee.writes;
                e.nondeterministic |= callee.nondeterministic;
                for t in callee.targets {
                    if !e.targets.contains(&t) {
                        e.targets.push(t);
                    }
                }
                changed |= before != (e.writes, e.nondeterministic, e.targets.len());
            }
        }
        if !changed {
            break;
        }
    }
}

const WRITE_WORDS: [&[u8]; 9] = [
    b"INSERT",
    b"UPDATE",
    b"DELETE",
    b"REPLACE",
    b"TRUNCATE",
    b"LOAD",
    b"CREATE",
    b"ALTER",
    b"DROP",
];
const NONDETERMINISTIC: [&[u8]; 6] = [
    b"UUID",
    b"UUID_SHORT",
    b"SYSDATE",
    b"CONNECTION_ID",
    b"LOAD_FILE",
    b"RANDOM_BYTES",
];
/// Words between a write keyword and its table.
const BEFORE_TABLE: [&[u8]; 12] = [
    b"INTO",
    b"IGNORE",
    b"LOW_PRIORITY",
    b"FROM",
    b"QUICK",
    b"TABLE",
    b"TEMPORARY",
    b"IF",
    b"NOT",
    b"EXISTS",
    b"OR",
    b"DELAYED",
];

/// What a body does, and the routines it calls (schema, name).
pub fn scan_body(
    body: &[u8],
    schema: &str,
    autoinc: &HashSet<String>,
) -> (Effects, Vec<(String, String)>) {
    let mut e = Effects::default();
    let mut calls = Vec::new();
    let mut lx = Lexer::new(body);
    let mut prev: Option<Tok<'_>> = None;
    let mut target_of: Option<bool> = None; // Some(insert?) while the next name is a target
    while let Some((t, _)) = lx.next() {
        let next = lx.clone().next().map(|(n, _)| n);
        match t {
            Tok::Word(w) if prev.is_some_and(|p| p.is(b"CALL")) => {
                // a procedure: its own scan (below) or, unknown, anything
                e.writes = true;
                calls.push((
                    schema.to_string(),
                    String::from_utf8_lossy(w).to_lowercase(),
                ));
            }
            Tok::Word(_)
                if WRITE_WORDS.iter().any(|w| t.is(w))
                    && next != Some(Tok::Punct(b'('))
                    && !prev.is_some_and(|p| p.is(b"KEY")) =>
            {
                // (REPLACE( and INSERT( are string functions; ON DUPLICATE KEY UPDATE is not a target)
                e.writes = true;
                target_of = Some(t.is(b"INSERT") || t.is(b"REPLACE"));
            }
            Tok::Word(w) | Tok::Quoted(b'`', w) if target_of.is_some() => {
                if BEFORE_TABLE.iter().any(|k| t.is(k)) {
                    prev = Some(t);
                    continue;
                }
                let name = qualified(&mut lx, w, schema);
                let insert = target_of.take().unwrap_or(false);
                if insert && autoinc.contains(&name) {
                    e.nondeterministic = true;
                }
                if !e.targets.contains(&name) {
                    e.targets.push(name);
                }
            }
            Tok::Word(w) if next == Some(Tok::Punct(b'(')) && prev != Some(Tok::Punct(b'.')) => {
                if NONDETERMINISTIC.iter().any(|f| t.is(f)) {
                    e.nondeterministic = true;
                }
                calls.push((
                    schema.to_string(),
                    String::from_utf8_lossy(w).to_lowercase(),
                ));
            }
            Tok::Punct(b'@') if matches!(next, Some(Tok::Word(_) | Tok::Quoted(..))) => {
                let mut l = lx.clone();
                l.next();
                let assigns = matches!(l.next(), Some((Tok::Assign, _)));
                if assigns || prev.is_some_and(|p| p.is(b"SET") || p == Tok::Punct(b',')) {
                    e.writes = true; // assigns a user variable
                }
            }
            _ => {}
        }
        prev = Some(t);
    }
    (e, calls)
}

/// `name` or `name.next` (schema-qualified), lower-case `schema.table`.
fn qualified(lx: &mut Lexer<'_>, name: &[u8], schema: &str) -> String {
    let mut l = lx.clone();
    let first = String::from_utf8_lossy(name).to_lowercase();
    if let Some((Tok::Punct(b'.'), _)) = l.next() {
        if let Some((Tok::Word(t) | Tok::Quoted(b'`', t), _)) = l.next() {
            *lx = l;
            return format!("{first}.{}", String::from_utf8_lossy(t).to_lowercase());
        }
    }
    format!("{schema}.{first}")
}

/// The routine or trigger a DDL statement creates, alters or drops: the
/// catalog must be re-read after it.
pub fn changes_stored_programs(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    if !matches!(lx.next(), Some((t, _)) if t.is(b"CREATE") || t.is(b"ALTER") || t.is(b"DROP")) {
        return false;
    }
    for _ in 0..8 {
        match lx.next() {
            Some((t, _)) if t.is(b"FUNCTION") || t.is(b"PROCEDURE") || t.is(b"TRIGGER") => {
                return true
            }
            Some((t, _))
                if t.is(b"TABLE") || t.is(b"VIEW") || t.is(b"INDEX") || t.is(b"DATABASE") =>
            {
                return false
            }
            None => return false,
            _ => {}
        }
    }
    false
}

/// Stored functions a statement calls (`name(` or `db.name(`), as written.
pub fn calls<'a>(sql: &'a [u8]) -> impl Iterator<Item = (Option<&'a [u8]>, &'a [u8])> + 'a {
    let mut lx = Lexer::new(sql);
    let mut prev: [Option<Tok<'a>>; 2] = [None, None];
    std::iter::from_fn(move || loop {
        let (t, _) = lx.next()?;
        let next = lx.clone().next().map(|(n, _)| n);
        let found = match t {
            Tok::Word(w) | Tok::Quoted(b'`', w) if next == Some(Tok::Punct(b'(')) => match prev {
                [Some(Tok::Word(s) | Tok::Quoted(b'`', s)), Some(Tok::Punct(b'.'))] => {
                    Some((Some(s), w))
                }
                [_, Some(Tok::Punct(b'.'))] => None,
                _ => Some((None, w)),
            },
            _ => None,
        };
        prev = [prev[1], Some(t)];
        if found.is_some() {
            return found;
        }
    })
}

#[cfg(test)]
mod tests;
