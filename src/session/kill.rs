//! `KILL [QUERY|CONNECTION] <id>` where `<id>` is the connection id cutover
//! gave the client: translated to the backend threads of that session.

use tracing::info;

use super::Session;
use crate::codes;
use crate::command;
use crate::error::SessionError;
use crate::pattern::Side;
use crate::response::ResponseKind;
use crate::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kill {
    pub query_only: bool,
    pub id: u32,
}

/// Recognise `KILL [HARD|SOFT] [CONNECTION|QUERY] [ID] <number> [;]`.
/// Anything else (KILL USER …, comments, several statements) is left to the
/// normal routing.
pub(super) fn parse(sql: &[u8]) -> Option<Kill> {
    let text = std::str::from_utf8(sql).ok()?;
    let mut words = text
        .trim()
        .trim_end_matches(';')
        .split_ascii_whitespace()
        .peekable();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut query_only = false;
    if words
        .peek()
        .is_some_and(|w| w.eq_ignore_ascii_case("hard") || w.eq_ignore_ascii_case("soft"))
    {
        words.next();
    }
    match words.peek() {
        Some(w) if w.eq_ignore_ascii_case("query") => {
            query_only = true;
            words.next();
        }
        Some(w) if w.eq_ignore_ascii_case("connection") => {
            words.next();
        }
        _ => {}
    }
    if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("id")) {
        words.next();
    }
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some(Kill { query_only, id })
}

impl Session {
    pub(super) async fn kill(&mut self, kill: Kill) -> Result<(), SessionError> {
        let Some(threads) = self.shared.sessions.threads(kill.id) else {
            let msg = format!("Unknown thread id: {}", kill.id);
            return self.reply_err(codes::ER_NO_SUCH_THREAD, &msg).await;
        };
        info!(
            target_conn = kill.id,
            query_only = kill.query_only,
            "KILL translated to backend threads"
        );
        let mut first_err = None;
        let mut done = false;
        for side in [Side::Source, Side::Destination] {
            let Some(thread) = threads[side.index()] else {
                continue;
            };
            let what = if kill.query_only { "QUERY " } else { "" };
            let sql = command::query(format!("KILL {what}{thread}"));
            let Ok(b) = self.backends.ensure(side).await else {
                continue;
            };
            match b.run(&sql, ResponseKind::Query).await {
                Ok(s) => match s.err {
                    None => done = true,
                    Some(e) => {
                        first_err.get_or_insert(e);
                    }
                },
                Err(_) => self.drop_backend(side),
            }
        }
        if done || first_err.is_none() {
            let status = mysql_common::constants::StatusFlags::SERVER_STATUS_AUTOCOMMIT;
            self.client
                .send_packet(1, &wire::ok_payload(0, 0, 0, status, 0))
                .await?;
            return Ok(());
        }
        let e = first_err.expect("checked");
        self.client
            .send_packet(1, &wire::err_payload(e.code, &e.state, &e.message))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kill_forms() {
        assert_eq!(
            parse(b"KILL 5"),
            Some(Kill {
                query_only: false,
                id: 5
            })
        );
        assert_eq!(
            parse(b"kill query 12;"),
            Some(Kill {
                query_only: true,
                id: 12
            })
        );
        assert_eq!(
            parse(b"KILL HARD CONNECTION 7"),
            Some(Kill {
                query_only: false,
                id: 7
            })
        );
        assert_eq!(
            parse(b"KILL QUERY ID 9"),
            Some(Kill {
                query_only: true,
                id: 9
            })
        );
        assert_eq!(parse(b"KILL USER app"), None);
        assert_eq!(parse(b"KILL 5; SELECT 1"), None);
        assert_eq!(parse(b"SELECT 1"), None);
        assert_eq!(parse(b"KILL"), None);
    }
}
