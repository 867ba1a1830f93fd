//! KILL, translated: a client knows only the connection ids cutover gave
//! out (in its greeting), and must never be able to name a backend thread.
//!
//! `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>` with a cutover id is run as
//! `KILL [QUERY] <thread>` on that session's backend threads;
//! `KILL … USER <name>[, …]` on the threads of every cutover session logged
//! in as one of the names. Each KILL runs on this session's own connection
//! to that side, as this session's backend user, so the backend's privilege
//! rules apply as they would directly. A multi-statement led by its only
//! KILL runs that KILL translated, then the rest with `DO 0` in the KILL's
//! place (its OK stands for the KILL's; a KILL that fails ends the text, as
//! a server stops at a failing statement). Refused with ER_NOT_SUPPORTED_YET,
//! before anything runs: a KILL after another statement of a
//! multi-statement (or a second one), `KILL [QUERY] ID
//! <query id>` (backend query ids are not cutover's), a thread id that is
//! not a plain number, and `PREPARE … FROM` / `EXECUTE IMMEDIATE` /
//! COM_STMT_PREPARE of a KILL text. Syntax: MariaDB Knowledge Base, "KILL".

use tracing::info;

use super::Session;
use crate::classify::Classified;
use crate::codes;
use crate::command;
use crate::error::SessionError;
use crate::lexer::{Lexer, Tok};
use crate::pattern::Side;
use crate::response::ResponseKind;
use crate::wire::{self, ErrInfo};

/// Whom a KILL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A cutover connection id.
    Connection(u32),
    /// Every session logged in as one of these users (`CURRENT_USER`
    /// already replaced by the session's own).
    Users(Vec<String>),
}

/// One translatable KILL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kill {
    /// `KILL QUERY`: stop the statement, keep the connection.
    pub query_only: bool,
    pub target: Target,
}

/// What to do with a COM_QUERY that names a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KillPlan {
    Translate(Kill),
    /// A multi-statement led by its only KILL: translate the KILL, then run
    /// the rest with the KILL's bytes (`..end`) replaced by `DO 0`, whose
    /// OK stands in the KILL's place in the answer.
    Lead(Kill, usize),
    /// Refused (ER_NOT_SUPPORTED_YET) with this reason.
    Refuse(&'static str),
}

/// The plan for `sql` when the classifier found a KILL in it; `None` when
/// there is none. `current_user` stands for `CURRENT_USER`.
pub(super) fn plan(sql: &[u8], c: &Classified, current_user: &str) -> Option<KillPlan> {
    if c.kills == 0 {
        return None;
    }
    if c.statements > 1 {
        const LATER: &str = "KILL after another statement of a multi-statement through cutover (send the KILL first or as a statement of its own)";
        let end = first_statement_end(sql);
        if c.kills > 1 || end >= sql.len() {
            return Some(KillPlan::Refuse(LATER));
        }
        return Some(match parse(&sql[..end], current_user) {
            Ok(k) => KillPlan::Lead(k, end),
            Err(why) if starts_with_kill(&sql[..end]) => KillPlan::Refuse(why),
            Err(_) => KillPlan::Refuse(LATER),
        });
    }
    Some(match parse(sql, current_user) {
        Ok(k) => KillPlan::Translate(k),
        Err(why) => KillPlan::Refuse(why),
    })
}

/// Where the first statement of `sql` ends: the offset of its top-level
/// `;`, or `sql.len()`.
fn first_statement_end(sql: &[u8]) -> usize {
    let mut lx = Lexer::new(sql);
    let mut seen = false;
    while let Some((t, at)) = lx.next() {
        if t == Tok::Semi {
            if seen {
                return at;
            }
        } else {
            seen = true;
        }
    }
    sql.len()
}

fn starts_with_kill(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    lx.next().is_some_and(|(t, _)| t.is(b"KILL"))
}

/// Parse one KILL statement (comments and a trailing `;` allowed).
fn parse(sql: &[u8], current_user: &str) -> Result<Kill, &'static str> {
    let mut lx = Lexer::new(sql);
    let mut next = move || lx.next().map(|(t, _)| t).filter(|t| *t != Tok::Semi);
    if !next().is_some_and(|t| t.is(b"KILL")) {
        return Err("KILL through cutover outside a KILL statement (PREPARE, EXECUTE IMMEDIATE, a prepared statement)");
    }
    let mut t = next();
    if t.is_some_and(|t| t.is(b"HARD") || t.is(b"SOFT")) {
        t = next();
    }
    let mut query_only = false;
    if t.is_some_and(|t| t.is(b"QUERY")) {
        query_only = true;
        t = next();
    } else if t.is_some_and(|t| t.is(b"CONNECTION")) {
        t = next();
    }
    let target = match t {
        Some(w) if w.is(b"ID") => return Err("KILL [QUERY] ID <query id> through cutover"),
        Some(w) if w.is(b"USER") => Target::Users(users(&mut next, current_user)?),
        Some(Tok::Word(n)) => {
            let id = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok());
            Target::Connection(
                id.ok_or("KILL of a thread id that is not a plain number through cutover")?,
            )
        }
        _ => return Err("KILL of a thread id that is not a plain number through cutover"),
    };
    if next().is_some() {
        return Err("KILL of a thread id that is not a plain number through cutover");
    }
    Ok(Kill { query_only, target })
}

/// `user [@host] [, user [@host]]…` (host ignored: cutover sessions are
/// matched by user name); `CURRENT_USER [()]` is the session's own user.
fn users<'a>(
    next: &mut impl FnMut() -> Option<Tok<'a>>,
    current_user: &str,
) -> Result<Vec<String>, &'static str> {
    const BAD: &str = "KILL USER with an unreadable user list through cutover";
    let mut out = Vec::new();
    let mut t = next();
    loop {
        let name = match t {
            Some(w) if w.is(b"CURRENT_USER") => current_user.to_string(),
            Some(Tok::Word(w)) | Some(Tok::Quoted(_, w)) => String::from_utf8_lossy(w).into_owned(),
            _ => return Err(BAD),
        };
        out.push(name);
        t = next();
        if t == Some(Tok::Punct(b'(')) {
            if next() != Some(Tok::Punct(b')')) {
                return Err(BAD);
            }
            t = next();
        }
        if t == Some(Tok::Punct(b'@')) {
            next(); // the host
            t = next();
        }
        match t {
            None => return Ok(out),
            Some(Tok::Punct(b',')) => t = next(),
            _ => return Err(BAD),
        }
    }
}

impl Session {
    /// Run a KILL plan: translate, or refuse before anything runs. A
    /// multi-statement led by a KILL whose translation fails stops there
    /// with its ERR, as a server stops at a failing statement; otherwise
    /// the rest to run (`DO 0` in the KILL's place) is returned.
    pub(super) async fn kill(
        &mut self,
        sql: &[u8],
        plan: KillPlan,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let (kill, lead) = match plan {
            KillPlan::Refuse(what) => {
                info!(
                    what,
                    "KILL refused: it cannot be translated to backend threads"
                );
                let msg = format!("This version of cutover doesn't yet support '{what}'");
                self.reply_err(codes::ER_NOT_SUPPORTED_YET, &msg).await?;
                return Ok(None);
            }
            KillPlan::Translate(k) => (k, None),
            KillPlan::Lead(k, end) => (k, Some(end)),
        };
        if let Err(payload) = self.translate(&kill).await {
            self.client.send_packet(1, &payload).await?;
            return Ok(None);
        }
        let Some(end) = lead else {
            let status = mysql_common::constants::StatusFlags::SERVER_STATUS_AUTOCOMMIT;
            let payload = wire::ok_payload(0, 0, 0, status, 0);
            self.client.send_packet(1, &payload).await?;
            return Ok(None);
        };
        let mut rest = b"DO 0".to_vec();
        rest.extend_from_slice(&sql[end..]);
        Ok(Some(rest))
    }

    /// Kill the backend threads `kill` names; the ERR payload to answer
    /// with when none could be killed.
    async fn translate(&mut self, kill: &Kill) -> Result<(), Vec<u8>> {
        let victims = match &kill.target {
            Target::Connection(id) => match self.shared.sessions.threads(*id) {
                Some(threads) => vec![(*id, threads)],
                None => {
                    let msg = format!("Unknown thread id: {id}");
                    return Err(codes::ER_NO_SUCH_THREAD.payload(&msg));
                }
            },
            Target::Users(names) => names
                .iter()
                .flat_map(|u| self.shared.sessions.of_user(u))
                .filter_map(|id| Some((id, self.shared.sessions.threads(id)?)))
                .collect(),
        };
        info!(target = ?kill.target, query_only = kill.query_only, sessions = victims.len(), "KILL translated to backend threads");
        let mut first_err = None;
        let mut done = false;
        for (_, threads) in victims {
            for side in [Side::Source, Side::Destination] {
                let Some(thread) = threads[side.index()] else {
                    continue;
                };
                match self.kill_thread(side, thread, kill.query_only).await {
                    Some(Ok(())) => done = true,
                    Some(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    None => {}
                }
            }
        }
        match first_err {
            Some(e) if !done => Err(wire::err_payload(e.code, &e.state, &e.message)),
            _ => Ok(()),
        }
    }

    /// `KILL [QUERY] <thread>` on this session's connection to `side`;
    /// `None` when that side cannot be reached.
    async fn kill_thread(
        &mut self,
        side: Side,
        thread: u32,
        query_only: bool,
    ) -> Option<Result<(), ErrInfo>> {
        let what = if query_only { "QUERY " } else { "" };
        let sql = command::query(format!("KILL {what}{thread}"));
        let b = self.backends.ensure(side).await.ok()?;
        match b.run(&sql, ResponseKind::Query).await {
            Ok(s) => Some(s.err.map_or(Ok(()), Err)),
            Err(_) => {
                self.drop_backend(side);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    fn p(sql: &str) -> Option<KillPlan> {
        plan(sql.as_bytes(), &classify(sql.as_bytes()), "me")
    }

    fn conn(query_only: bool, id: u32) -> Option<KillPlan> {
        Some(KillPlan::Translate(Kill {
            query_only,
            target: Target::Connection(id),
        }))
    }

    fn refused(sql: &str) -> bool {
        matches!(p(sql), Some(KillPlan::Refuse(_)))
    }

    #[test]
    fn translates_every_form_of_one_kill() {
        assert_eq!(p("KILL 5"), conn(false, 5));
        assert_eq!(p("kill query 12;"), conn(true, 12));
        assert_eq!(p("KILL HARD CONNECTION 7"), conn(false, 7));
        assert_eq!(p("KILL SOFT QUERY 7 ;  "), conn(true, 7));
        assert_eq!(p("/* x */ KILL 5"), conn(false, 5));
        assert_eq!(p("-- note\nKILL 5 /* trailing */"), conn(false, 5));
        assert_eq!(p("/*!KILL 5*/"), conn(false, 5));
        assert_eq!(
            p("KILL USER 'app'@'%', bob, CURRENT_USER()"),
            Some(KillPlan::Translate(Kill {
                query_only: false,
                target: Target::Users(vec!["app".into(), "bob".into(), "me".into()]),
            }))
        );
        assert_eq!(
            p("KILL QUERY USER app@localhost"),
            Some(KillPlan::Translate(Kill {
                query_only: true,
                target: Target::Users(vec!["app".into()]),
            }))
        );
    }

    #[test]
    fn refuses_what_cannot_be_translated() {
        for sql in [
            "KILL 5; KILL 6; SELECT 1",
            "KILL ID 5; SELECT 1",
            "SELECT 1; KILL 5",
            "SELECT 1; /* c */ kill query 5",
            "KILL QUERY ID 9",
            "KILL ID 9",
            "KILL @x",
            "KILL 2+3",
            "KILL (5)",
            "KILL",
            "KILL USER",
            "PREPARE s FROM 'KILL 5'",
            "EXECUTE IMMEDIATE 'KILL 5'",
            "execute immediate \"/* c */ kill 5\"",
        ] {
            assert!(refused(sql), "{sql}");
        }
    }

    #[test]
    fn a_multi_statement_led_by_its_only_kill_is_translated_then_run() {
        let lead = |sql: &str, query_only: bool, id: u32, end: usize| {
            assert_eq!(
                p(sql),
                Some(KillPlan::Lead(
                    Kill {
                        query_only,
                        target: Target::Connection(id),
                    },
                    end
                )),
                "{sql}"
            );
        };
        lead("KILL 5; SELECT 1", false, 5, 6);
        lead("/* c */ kill 12 ;select sleep(0.05)", false, 12, 16);
        lead("KILL QUERY 7;DO 1", true, 7, 12);
    }

    #[test]
    fn leaves_everything_else_alone() {
        for sql in [
            "SELECT 1",
            "SELECT 'KILL 5'",
            "SELECT killed FROM t",
            "UPDATE t SET kill = 1",
            "PREPARE s FROM 'SELECT 1'",
            "EXECUTE s",
        ] {
            assert_eq!(p(sql), None, "{sql}");
        }
    }
}
