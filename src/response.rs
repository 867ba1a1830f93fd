//! Where a backend's response to one command ends, and what it said.
//!
//! One state machine, fed packet by packet, serves both the relay (packets
//! are copied to the client as they arrive) and the mirror (packets are
//! discarded). It never buffers a result set, so memory does not grow with
//! result size.

#![warn(missing_docs)]

use crate::wire::{self, ErrInfo, OkInfo, MAX_PAYLOAD};

const MORE_RESULTS: u16 = 0x0008;
const CURSOR_EXISTS: u16 = 0x0040;
/// SERVER_STATUS_IN_TRANS: a transaction is open after this answer.
pub const IN_TRANS: u16 = 0x0001;
/// SERVER_STATUS_AUTOCOMMIT: the session is in autocommit mode.
pub const AUTOCOMMIT: u16 = 0x0002;

/// The shape of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// COM_QUERY, COM_STMT_EXECUTE: OK / ERR / result sets, maybe several.
    Query,
    /// COM_STMT_PREPARE: PREPARE_OK + parameter and column definitions.
    Prepare,
    /// COM_STMT_FETCH, COM_FIELD_LIST: rows (or definitions) up to a terminator.
    Rows,
    /// Exactly one packet (OK / ERR / EOF / statistics string).
    Single,
}

/// What a finished response amounted to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The last OK packet seen (affected rows, insert id of a write).
    pub ok: Option<OkInfo>,
    /// The ERR packet, if the command failed.
    pub err: Option<ErrInfo>,
    /// Status flags of the last OK/EOF seen (IN_TRANS etc.).
    pub status: Option<u16>,
    /// Result sets returned.
    pub result_sets: u32,
    /// For COM_STMT_PREPARE: (statement id, columns, params).
    pub prepared: Option<(u32, u16, u16)>,
}

impl Summary {
    /// Whether the command failed (an ERR packet ended the response).
    pub fn is_err(&self) -> bool {
        self.err.is_some()
    }
    /// The IN_TRANS flag of the last status seen; `None` if the response
    /// carried no status (an ERR packet, a classic EOF-less answer).
    pub fn in_trans(&self) -> Option<bool> {
        self.status.map(|s| s & IN_TRANS != 0)
    }
    /// The AUTOCOMMIT flag of the last status seen; `None` without status.
    pub fn autocommit(&self) -> Option<bool> {
        self.status.map(|s| s & AUTOCOMMIT != 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    Params(u16, u16),
    ParamsEof(u16),
    PrepColumns(u16),
    PrepColumnsEof,
    Done,
}

/// Progress after feeding one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More packets of this response follow.
    More,
    /// That was the last packet.
    Done,
    /// The server asked for a LOCAL INFILE; the client must send the file.
    LocalInfile,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed response packet from backend ({0})")]
/// A backend packet that does not fit the response being read (what).
pub struct Malformed(&'static str);

/// Follows one response packet by packet (see the module docs).
pub struct Tracker {
    kind: ResponseKind,
    deprecate_eof: bool,
    state: State,
    continuation: bool,
    /// What the response amounted to so far.
    pub summary: Summary,
}

impl Tracker {
    /// A tracker for a response of `kind`, in the framing the connection
    /// negotiated (`deprecate_eof`: results end with an OK, not an EOF).
    pub fn new(kind: ResponseKind, deprecate_eof: bool) -> Self {
        let state = match kind {
            ResponseKind::Rows => State::Rows,
            _ => State::First,
        };
        Tracker {
            kind,
            deprecate_eof,
            state,
            continuation: false,
            summary: Summary::default(),
        }
    }

    /// Whether the last packet was fed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// After a LOCAL INFILE exchange the server answers like a fresh query.
    pub fn resume_after_infile(&mut self) {
        self.state = State::First;
    }

    /// Feed the next packet's payload (one physical packet).
    ///
    /// # Errors
    /// [`Malformed`] for an empty packet, a packet after the end, or one
    /// that does not parse where a header is expected.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Step, Malformed> {
        let was_continuation = self.continuation;
        self.continuation = payload.len() == MAX_PAYLOAD;
        if was_continuation {
            // The tail of a split packet carries no header byte of its own.
            return Ok(Step::More);
        }
        let step = self.advance(payload)?;
        if step == Step::Done {
            self.state = State::Done;
        }
        Ok(step)
    }

    fn terminator(&mut self, payload: &[u8]) -> Step {
        let status = if self.deprecate_eof {
            let ok = wire::parse_ok(payload);
            if let Some(ok) = ok {
                self.summary.ok.get_or_insert(ok);
            }
            ok.map(|o| o.status).unwrap_or(0)
        } else {
            wire::parse_eof_status(payload)
        };
        self.summary.status = Some(status);
        self.summary.result_sets += 1;
        self.after_result(status)
    }

    fn after_result(&mut self, status: u16) -> Step {
        if status & MORE_RESULTS != 0 {
            self.state = State::First;
            Step::More
        } else {
            Step::Done
        }
    }

    fn is_terminator(&self, payload: &[u8]) -> bool {
        payload.first() == Some(&0xFE)
            && if self.deprecate_eof {
                payload.len() < MAX_PAYLOAD
            } else {
                payload.len() < 9
            }
    }

    fn advance(&mut self, payload: &[u8]) -> Result<Step, Malformed> {
        let head = *payload.first().ok_or(Malformed("empty packet"))?;
        if head == 0xFF
            && !matches!(
                self.state,
                State::Columns(_) | State::Params(..) | State::PrepColumns(_)
            )
        {
            self.summary.err = Some(wire::parse_err(payload));
            return Ok(Step::Done);
        }
        match self.state {
            State::Done => Err(Malformed("packet after end of response")),
            State::First => self.first(head, payload),
            State::Columns(n) => {
                self.state = match n.saturating_sub(1) {
                    0 if self.deprecate_eof => State::Rows,
                    0 => State::ColumnsEof,
                    left => State::Columns(left),
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                let status = wire::parse_eof_status(payload);
                if status & CURSOR_EXISTS != 0 {
                    self.summary.status = Some(status);
                    self.summary.result_sets += 1;
                    return Ok(Step::Done);
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if self.is_terminator(payload) {
                    Ok(self.terminator(payload))
                } else {
                    Ok(Step::More)
                }
            }
            State::Params(n, cols) => {
                self.state = State::Params(n - 1, cols);
                Ok(self.prepare_next())
            }
            State::ParamsEof(cols) => {
                self.state = State::PrepColumns(cols);
                Ok(self.prepare_next())
            }
            State::PrepColumns(n) => {
                self.state = State::PrepColumns(n - 1);
                Ok(self.prepare_next())
            }
            State::PrepColumnsEof => Ok(Step::Done),
        }
    }

    /// The first packet of a response (or of the next result set).
    fn first(&mut self, head: u8, payload: &[u8]) -> Result<Step, Malformed> {
        match (self.kind, head) {
            (ResponseKind::Single, 0x00) | (ResponseKind::Single, 0xFE) => {
                if let Some(ok) = wire::parse_ok(payload) {
                    if head == 0x00 || self.deprecate_eof {
                        self.summary.ok = Some(ok);
                        self.summary.status = Some(ok.status);
                    }
                }
                if head == 0xFE && !self.deprecate_eof {
                    self.summary.status = Some(wire::parse_eof_status(payload));
                }
                Ok(Step::Done)
            }
            (ResponseKind::Single, _) => Ok(Step::Done),
            (ResponseKind::Prepare, 0x00) => {
                if payload.len() < 12 {
                    return Err(Malformed("short PREPARE_OK"));
                }
                let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                let cols = u16::from_le_bytes([payload[5], payload[6]]);
                let params = u16::from_le_bytes([payload[7], payload[8]]);
                self.summary.prepared = Some((id, cols, params));
                self.state = State::Params(params, cols);
                Ok(self.prepare_next())
            }
            (ResponseKind::Prepare, _) => Err(Malformed("unexpected PREPARE response")),
            (_, 0x00) => {
                let ok = wire::parse_ok(payload).ok_or(Malformed("bad OK packet"))?;
                self.summary.ok = Some(ok);
                self.summary.status = Some(ok.status);
                Ok(self.after_result(ok.status))
            }
            (_, 0xFB) => Ok(Step::LocalInfile),
            _ => {
                let mut b = payload;
                let n = wire::get_lenenc_int(&mut b).ok_or(Malformed("bad column count"))?;
                self.state = State::Columns(n);
                Ok(Step::More)
            }
        }
    }

    /// Move through the PREPARE response's sections, skipping empty ones.
    fn prepare_next(&mut self) -> Step {
        loop {
            self.state = match self.state {
                State::Params(0, cols) if !self.deprecate_eof && self.had_params() => {
                    State::ParamsEof(cols)
                }
                State::Params(0, cols) => State::PrepColumns(cols),
                State::PrepColumns(0) if !self.deprecate_eof && self.had_columns() => {
                    State::PrepColumnsEof
                }
                State::PrepColumns(0) => return Step::Done,
                _ => return Step::More,
            };
        }
    }

    fn had_params(&self) -> bool {
        self.summary.prepared.is_some_and(|(_, _, p)| p > 0)
    }

    fn had_columns(&self) -> bool {
        self.summary.prepared.is_some_and(|(_, c, _)| c > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ok_payload;
    use mysql_common::constants::StatusFlags;

    fn feed_all(t: &mut Tracker, packets: &[Vec<u8>]) -> Vec<Step> {
        packets.iter().map(|p| t.feed(p).unwrap()).collect()
    }

    fn col() -> Vec<u8> {
        let mut p = vec![3, b'd', b'e', b'f'];
        p.extend_from_slice(&[0; 20]);
        p
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    #[test]
    fn classic_result_set_then_more_results() {
        let mut t = Tracker::new(ResponseKind::Query, false);
        let steps = feed_all(
            &mut t,
            &[
                vec![2],
                col(),
                col(),
                eof(0),
                vec![1, b'1', 0xFB],
                eof(MORE_RESULTS | IN_TRANS),
            ],
        );
        assert!(steps.iter().all(|s| *s == Step::More));
        let ok = ok_payload(0, 1, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0);
        assert_eq!(t.feed(&ok).unwrap(), Step::Done);
        assert_eq!(t.summary.result_sets, 1);
        assert_eq!(t.summary.in_trans(), Some(false));
        assert!(t.feed(&ok).is_err(), "nothing may follow the end");
    }

    #[test]
    fn deprecate_eof_result_set_ends_with_an_ok_terminator() {
        let mut t = Tracker::new(ResponseKind::Query, true);
        assert_eq!(t.feed(&[1]).unwrap(), Step::More);
        assert_eq!(t.feed(&col()).unwrap(), Step::More);
        assert_eq!(t.feed(&[1, b'x']).unwrap(), Step::More);
        let term = ok_payload(0xFE, 0, 0, StatusFlags::SERVER_STATUS_IN_TRANS, 0);
        assert_eq!(t.feed(&term).unwrap(), Step::Done);
        assert_eq!(t.summary.in_trans(), Some(true));
    }

    #[test]
    fn errors_local_infile_and_split_rows() {
        let mut t = Tracker::new(ResponseKind::Query, true);
        assert_eq!(
            t.feed(&crate::wire::err_payload(1146, "42S02", "no"))
                .unwrap(),
            Step::Done
        );
        assert_eq!(t.summary.err.as_ref().map(|e| e.code), Some(1146));

        let mut t = Tracker::new(ResponseKind::Query, true);
        assert_eq!(t.feed(b"\xFBfile.csv").unwrap(), Step::LocalInfile);
        t.resume_after_infile();
        assert_eq!(
            t.feed(&ok_payload(0, 3, 0, StatusFlags::empty(), 0))
                .unwrap(),
            Step::Done
        );
        assert_eq!(t.summary.ok.map(|o| o.affected_rows), Some(3));

        // a row of exactly 2^24-1 bytes continues in the next packet, whose
        // first byte (0xFE here) must not be taken for a terminator
        let mut t = Tracker::new(ResponseKind::Query, true);
        t.feed(&[1]).unwrap();
        t.feed(&col()).unwrap();
        let big = vec![0xFCu8; MAX_PAYLOAD];
        assert_eq!(t.feed(&big).unwrap(), Step::More);
        assert_eq!(t.feed(&[0xFE, 0, 0]).unwrap(), Step::More);
        assert_eq!(
            t.feed(&ok_payload(0xFE, 0, 0, StatusFlags::empty(), 0))
                .unwrap(),
            Step::Done
        );
    }

    #[test]
    fn prepare_sections_in_both_framings() {
        let prep_ok = |cols: u16, params: u16| {
            let mut p = vec![0, 7, 0, 0, 0];
            p.extend_from_slice(&cols.to_le_bytes());
            p.extend_from_slice(&params.to_le_bytes());
            p.extend_from_slice(&[0, 0, 0]);
            p
        };
        let mut t = Tracker::new(ResponseKind::Prepare, false);
        let steps = feed_all(&mut t, &[prep_ok(1, 2), col(), col(), eof(0), col()]);
        assert!(steps.iter().all(|s| *s == Step::More));
        assert_eq!(t.feed(&eof(0)).unwrap(), Step::Done);
        assert_eq!(t.summary.prepared, Some((7, 1, 2)));

        let mut t = Tracker::new(ResponseKind::Prepare, true);
        assert_eq!(t.feed(&prep_ok(0, 1)).unwrap(), Step::More);
        assert_eq!(t.feed(&col()).unwrap(), Step::Done);
        let mut t = Tracker::new(ResponseKind::Prepare, false);
        assert_eq!(t.feed(&prep_ok(0, 0)).unwrap(), Step::Done);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut t = Tracker::new(ResponseKind::Query, true);
        assert!(t.feed(&[]).is_err());
        let mut t = Tracker::new(ResponseKind::Query, true);
        assert!(t.feed(&[0xFC]).is_err());
        let mut t = Tracker::new(ResponseKind::Prepare, true);
        assert!(t.feed(&[0, 1]).is_err());
    }
}
