//! User variables (`@v`) on the mirror: the primary's values, not the
//! mirror's own evaluation.
//!
//! Each side evaluates `SET @u = UUID()`, `SELECT … INTO @v` or `@v := …`
//! itself, so the mirror's `@v` may differ from the authoritative side's.
//! cutover does not try to make every assignment deterministic; it syncs
//! lazily instead: just before a mirrored statement that reads `@v` (and
//! that the mirror may not hold the primary's value of), the primary's
//! values are read in the same pipeline as, and before, the statement on the
//! primary (`SELECT @v, …`, its answer consumed by cutover), and set on the
//! mirror as typed literals before the statement runs there. Nothing extra
//! runs on the primary between the client's statements, so its diagnostics
//! stay the client's — except for statements that read them (`ROW_COUNT()`,
//! `FOUND_ROWS()`, GET DIAGNOSTICS), which are not synced (and are counted
//! as unsafe by the determinism analysis).
//!
//! Types are kept: integers (signed or not) and DECIMALs as their text,
//! DOUBLEs as their shortest round-trip text with an exponent (a DOUBLE
//! literal), strings as `_charset X'hex' COLLATE collation` (bytes in the
//! variable's own character set), binary strings as `_binary X'…'`, NULL.

use std::collections::HashSet;

use crate::backend::Captured;
use crate::command;
use crate::lexer::{Lexer, Tok};

/// Most variable names a session tracks (beyond it, every referenced
/// variable is synced before each mirrored statement).
const MAX_KNOWN: usize = 1024;

/// One `@name` in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VarRef {
    /// Lower-case name (user variable names are case-insensitive).
    pub name: String,
    /// The statement reads it.
    pub read: bool,
    /// The statement assigns it (`SET @v = …`, `@v := …`, `INTO @v`).
    pub assigned: bool,
    /// … each time to a single literal (both sides get the same value).
    pub literal: bool,
}

/// The user variables `sql` names (empty without an `@`, the common case).
pub(super) fn scan(sql: &[u8]) -> Vec<VarRef> {
    if !sql.contains(&b'@') {
        return Vec::new();
    }
    let mut out: Vec<VarRef> = Vec::new();
    let mut lx = Lexer::new(sql);
    let (mut prev, mut prev_end) = (None::<Tok<'_>>, usize::MAX);
    let (mut set_list, mut into, mut depth, mut first) = (false, false, 0i32, true);
    while let Some((t, start)) = lx.next() {
        if first {
            let next = lx.clone().next();
            set_list = t.is(b"SET") && !matches!(next, Some((n, _)) if n.is(b"STATEMENT"));
            first = false;
        }
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Semi => (set_list, into, first) = (false, false, true),
            Tok::Word(_) => into = t.is(b"INTO"),
            Tok::Punct(b'@') => {
                let user_at_host =
                    prev_end == start && matches!(prev, Some(Tok::Word(_) | Tok::Quoted(..)));
                if let Some(r) = var_at(&mut lx, user_at_host, set_list && depth == 0, into) {
                    push(&mut out, r);
                }
            }
            _ => {}
        }
        prev = Some(t);
        prev_end = lx.pos;
    }
    out
}

/// The variable after an `@` (none for `@@system` and `user@host`).
fn var_at(lx: &mut Lexer<'_>, user_at_host: bool, set_target: bool, into: bool) -> Option<VarRef> {
    let (t, start) = lx.clone().next()?;
    if t == Tok::Punct(b'@') {
        // @@system_variable (or @@scope.variable): not a user variable
        lx.next();
        lx.next();
        return None;
    }
    let name = match t {
        Tok::Word(w) | Tok::Quoted(_, w) if start == lx.pos => w,
        _ => return None,
    };
    lx.next();
    if user_at_host {
        return None;
    }
    let after = lx.clone().next().map(|(t, _)| t);
    let assigned =
        after == Some(Tok::Assign) || (set_target && after == Some(Tok::Punct(b'='))) || into;
    let literal = assigned && !into && is_literal_assignment(lx);
    Some(VarRef {
        name: String::from_utf8_lossy(name).to_lowercase(),
        read: !assigned,
        assigned,
        literal,
    })
}

/// After `@v`: `= <one literal>` followed by `,`, `;` or the end.
fn is_literal_assignment(lx: &Lexer<'_>) -> bool {
    let mut l = lx.clone();
    if !matches!(l.next(), Some((Tok::Punct(b'=') | Tok::Assign, _))) {
        return false;
    }
    let mut value = l.next().map(|(t, _)| t);
    if value == Some(Tok::Punct(b'-')) {
        value = l.next().map(|(t, _)| t);
    }
    let literal = match value {
        Some(Tok::Quoted(b'\'', _)) => true,
        Some(t @ Tok::Word(w)) => w.first().is_some_and(u8::is_ascii_digit) || t.is(b"NULL"),
        _ => false,
    };
    literal && matches!(l.next(), None | Some((Tok::Punct(b',') | Tok::Semi, _)))
}

fn push(out: &mut Vec<VarRef>, r: VarRef) {
    match out.iter_mut().find(|o| o.name == r.name) {
        Some(o) => {
            o.literal = match (o.assigned, r.assigned) {
                (true, true) => o.literal && r.literal,
                (false, true) => r.literal,
                _ => o.literal,
            };
            o.read |= r.read;
            o.assigned |= r.assigned;
        }
        None => out.push(r),
    }
}

/// The session's user variables as far as the mirror is concerned.
#[derive(Debug, Default)]
pub(super) struct UserVars {
    /// Every variable the session named (bounded).
    known: HashSet<String>,
    /// Those the mirror connection `mirror` holds the primary's value of.
    synced: HashSet<String>,
    /// The mirror connection (backend thread id) `synced` is about.
    mirror: Option<u32>,
}

impl UserVars {
    /// The variables to read from the primary before a mirrored statement
    /// naming `refs` runs on the mirror connection `mirror` (`None`: one
    /// will be opened, its variables replayed, not synced). With
    /// `invisible` (CALL: the routine may read any variable), every known
    /// variable not synced.
    pub fn needing_sync(
        &mut self,
        refs: &[VarRef],
        invisible: bool,
        mirror: Option<u32>,
    ) -> Vec<String> {
        if mirror.is_none() || mirror != self.mirror {
            self.synced.clear();
            self.mirror = mirror;
        }
        self.learn(refs);
        let mut names: Vec<String> = refs
            .iter()
            .filter(|r| r.read && !self.synced.contains(&r.name))
            .map(|r| r.name.clone())
            .collect();
        if invisible {
            for k in &self.known {
                if !self.synced.contains(k) && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        names
    }

    /// A mirrored statement ran on the mirror connection `mirror` with
    /// `synced` set from the primary: those (and every variable it only
    /// read) now hold the primary's values; those it assigned may not.
    pub fn after_mirrored(
        &mut self,
        refs: &[VarRef],
        synced: &[String],
        invisible: bool,
        mirror: Option<u32>,
    ) {
        if mirror != self.mirror {
            self.synced.clear();
            self.mirror = mirror;
        }
        if mirror.is_none() {
            return;
        }
        self.synced.extend(synced.iter().cloned());
        for r in refs.iter().filter(|r| r.assigned) {
            if r.literal && !r.read {
                self.synced.insert(r.name.clone());
            } else {
                self.synced.remove(&r.name);
            }
        }
        if invisible {
            // a routine may have assigned any of them
            self.synced.clear();
        }
    }

    /// A statement that was not mirrored (a session-state statement applied
    /// to both sides, or one run on the authoritative side only) named
    /// `refs`: what it assigned may now differ on the mirror, unless it
    /// assigned a literal and reached both sides (`both`).
    pub fn after_other(
        &mut self,
        refs: &[VarRef],
        both: bool,
        invisible: bool,
        mirror: Option<u32>,
    ) {
        if both && mirror != self.mirror {
            self.synced.clear();
            self.mirror = mirror;
        }
        self.learn(refs);
        for r in refs.iter().filter(|r| r.assigned) {
            if both && r.literal {
                self.synced.insert(r.name.clone());
            } else {
                self.synced.remove(&r.name);
            }
        }
        if invisible {
            self.synced.clear();
        }
    }

    /// Whether the session named any variable.
    pub fn has_known(&self) -> bool {
        !self.known.is_empty()
    }

    /// COM_RESET_CONNECTION / COM_CHANGE_USER: every variable is gone.
    pub fn reset(&mut self) {
        *self = UserVars::default();
    }

    fn learn(&mut self, refs: &[VarRef]) {
        for r in refs {
            if self.known.len() < MAX_KNOWN {
                self.known.insert(r.name.clone());
            }
        }
    }
}

/// What one statement does about user variables (see the module docs).
#[derive(Debug, Default)]
pub(super) struct VarSync {
    refs: Vec<VarRef>,
    /// A CALL: its routine may read or assign any variable.
    invisible: bool,
    /// Read from the primary before the statement.
    pub names: Vec<String>,
    /// `SET @a = …` for the mirror, once the primary answered.
    pub set: Option<Vec<u8>>,
}

impl VarSync {
    /// Queue the read of the primary's values on `backend` (before the statement).
    pub fn queue(&self, backend: &mut super::backends::Conn, limit: usize) {
        if !self.names.is_empty() {
            backend.queue_capture(&capture_query(&self.names), limit);
        }
    }

    /// The primary answered: build the mirror's `SET` from what was read.
    pub fn answered(&mut self, backend: &mut super::backends::Conn) {
        if self.names.is_empty() {
            return;
        }
        let captured = backend.take_captured();
        self.set = captured.first().and_then(|c| assignments(&self.names, c));
        if self.set.is_none() {
            tracing::warn!(names = ?self.names, "could not read user variables from the authoritative side; the mirror uses its own values");
            self.names.clear();
        }
    }
}

impl super::Session {
    /// Decide what to read before a statement of `class` (text `text`)
    /// mirrored to `mirror` (`None`: not mirrored).
    pub(super) fn plan_var_sync(
        &mut self,
        text: &[u8],
        mirror: Option<crate::pattern::Side>,
        class: crate::classify::Class,
    ) -> VarSync {
        let refs = scan(text);
        let invisible = self.vars.has_known() && first_word_is(text, b"CALL");
        if refs.is_empty() && !invisible {
            return VarSync::default();
        }
        let mirrored = mirror.is_some()
            && matches!(
                class,
                crate::classify::Class::Write | crate::classify::Class::Ddl
            );
        let names = if mirrored && !crate::determinism::reads_diagnostics(text) {
            let thread = mirror
                .and_then(|m| self.backends.get(m))
                .map(|b| b.thread_id);
            self.vars.needing_sync(&refs, invisible, thread)
        } else {
            Vec::new()
        };
        VarSync {
            refs,
            invisible,
            names,
            set: None,
        }
    }

    /// The statement is over: what the mirror now holds. `mirrored`: it
    /// was applied to the mirror side `mirror`; `both`: a session-state
    /// statement applied to both sides.
    pub(super) fn finish_var_sync(
        &mut self,
        sync: VarSync,
        mirror: Option<crate::pattern::Side>,
        mirrored: bool,
        both: bool,
    ) {
        if sync.refs.is_empty() && !sync.invisible {
            return;
        }
        let thread = mirror
            .and_then(|m| self.backends.get(m))
            .map(|b| b.thread_id);
        if mirrored {
            let synced = if sync.set.is_some() {
                &sync.names[..]
            } else {
                &[]
            };
            self.vars
                .after_mirrored(&sync.refs, synced, sync.invisible, thread);
        } else {
            self.vars
                .after_other(&sync.refs, both && thread.is_some(), sync.invisible, thread);
        }
    }
}

fn first_word_is(text: &[u8], word: &[u8]) -> bool {
    matches!(Lexer::new(text).next(), Some((t, _)) if t.is(word))
}

/// `` @`name` `` (backticks doubled).
fn quoted(name: &str) -> String {
    format!("@`{}`", name.replace('`', "``"))
}

/// The query run on the primary before the statement: per variable its
/// value (for the type) and its bytes as a string literal.
pub(super) fn capture_query(names: &[String]) -> Vec<u8> {
    let cols: Vec<String> = names
        .iter()
        .map(|n| {
            let v = quoted(n);
            format!(
                "{v}, CONCAT('_', CHARSET({v}), ' X''', HEX({v}), ''' COLLATE `', COLLATION({v}), '`')"
            )
        })
        .collect();
    command::query(format!("SELECT {}", cols.join(", ")))
}

const LONGLONG: u8 = 0x08;
const DOUBLE: u8 = 0x05;
const NEWDECIMAL: u8 = 0xF6;

/// `SET @a = <literal>, …` for the mirror from the primary's answer to
/// [`capture_query`]; `None` when the answer is unusable (an error, a
/// truncated value).
pub(super) fn assignments(names: &[String], c: &Captured) -> Option<Vec<u8>> {
    let row = c.rows.first().filter(|_| c.err.is_none() && !c.truncated)?;
    if row.len() != names.len() * 2 || c.columns.len() != row.len() {
        return None;
    }
    let mut parts = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let (value, literal) = (&row[2 * i], &row[2 * i + 1]);
        let text = match (value, c.columns[2 * i].column_type) {
            (None, _) => "NULL".to_string(),
            (Some(v), LONGLONG | NEWDECIMAL) => String::from_utf8(v.clone()).ok()?,
            (Some(v), DOUBLE) => {
                let t = String::from_utf8(v.clone()).ok()?;
                if t.contains(['e', 'E']) {
                    t
                } else {
                    format!("{t}E0")
                }
            }
            (Some(_), _) => String::from_utf8(literal.clone()?).ok()?,
        };
        parts.push(format!("{} = {text}", quoted(name)));
    }
    Some(command::query(format!("SET {}", parts.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ColumnMeta;

    /// (name, read, assigned, literal)
    fn names(refs: &[VarRef]) -> Vec<(&str, bool, bool, bool)> {
        refs.iter()
            .map(|r| (r.name.as_str(), r.read, r.assigned, r.literal))
            .collect()
    }

    #[test]
    fn finds_references_and_assignments() {
        assert!(scan(b"INSERT INTO t VALUES (1)").is_empty());
        assert_eq!(
            names(&scan(b"INSERT INTO uv VALUES (1, @u, @T, @`r x`)")),
            [
                ("u", true, false, false),
                ("t", true, false, false),
                ("r x", true, false, false)
            ]
        );
        assert_eq!(
            names(&scan(
                b"SET @u = UUID(), @n = 5, @s = 'x', @w = @n + 1, @@session.sql_mode = ''"
            )),
            [
                ("u", false, true, false),
                ("n", true, true, true),
                ("s", false, true, true),
                ("w", false, true, false)
            ]
        );
        assert_eq!(
            names(&scan(b"SELECT id INTO @v FROM t LIMIT 1")),
            [("v", false, true, false)]
        );
        assert_eq!(
            names(&scan(b"UPDATE t SET a = (@c := @c + 1)")),
            [("c", true, true, false)]
        );
        assert!(scan(b"GRANT ALL ON *.* TO 'app'@'%'").is_empty());
        assert!(scan(b"CREATE USER app@localhost").is_empty());
        assert!(scan(b"SELECT @@version, '@x'").is_empty());
    }

    #[test]
    fn syncs_only_what_the_mirror_may_not_hold() {
        let mut v = UserVars::default();
        let set = scan(b"SET @u = UUID(), @n = 5");
        v.after_other(&set, true, false, Some(7));
        let use_them = scan(b"INSERT INTO t VALUES (@u, @n)");
        assert_eq!(
            v.needing_sync(&use_them, false, Some(7)),
            ["u"],
            "@n = 5 reached both"
        );
        v.after_mirrored(&use_them, &["u".into()], false, Some(7));
        assert!(v.needing_sync(&use_them, false, Some(7)).is_empty());
        v.after_other(&scan(b"SET @n = 6"), true, false, Some(7));
        assert!(
            v.needing_sync(&use_them, false, Some(7)).is_empty(),
            "a literal reached both sides"
        );
        v.after_other(&scan(b"SELECT 1 INTO @n"), true, false, Some(7));
        assert_eq!(v.needing_sync(&use_them, false, Some(7)), ["n"]);
        assert_eq!(
            v.needing_sync(&use_them, false, Some(8)),
            ["u", "n"],
            "another connection"
        );
        assert_eq!(
            v.needing_sync(&[], true, Some(8)).len(),
            2,
            "CALL: every known one"
        );
    }

    #[test]
    fn literals_keep_their_types() {
        let col = |t| ColumnMeta {
            column_type: t,
            charset: 33,
            flags: 0,
        };
        let c = Captured {
            columns: [0x08, 0xFB, 0x05, 0xFB, 0xF6, 0xFB, 0xFB, 0xFB, 0xFB, 0xFB]
                .into_iter()
                .map(col)
                .collect(),
            rows: vec![vec![
                Some(b"-5".to_vec()),
                Some(b"_binary X'FB' COLLATE `binary`".to_vec()),
                Some(b"0.052471494351021476".to_vec()),
                None,
                Some(b"1.50".to_vec()),
                None,
                None,
                None,
                Some(b"\xe9".to_vec()),
                Some(b"_latin1 X'E9' COLLATE `latin1_swedish_ci`".to_vec()),
            ]],
            ..Captured::default()
        };
        let names: Vec<String> = ["i", "r", "d", "n", "s"].map(String::from).to_vec();
        let set = assignments(&names, &c).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&set[1..]),
            "SET @`i` = -5, @`r` = 0.052471494351021476E0, @`d` = 1.50, @`n` = NULL, @`s` = _latin1 X'E9' COLLATE `latin1_swedish_ci`"
        );
        assert_eq!(
            String::from_utf8_lossy(&capture_query(&["a`b".into()])[1..]),
            "SELECT @`a``b`, CONCAT('_', CHARSET(@`a``b`), ' X''', HEX(@`a``b`), ''' COLLATE `', COLLATION(@`a``b`), '`')"
        );
    }
}
