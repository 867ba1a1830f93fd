//! What a mirrored write amounted to for the data, and the mirror's share of
//! the authoritative side's open transaction.
//!
//! Every mirrored statement ends in exactly one outcome
//! (`cutover_double_writes_total{outcome}`):
//! - `success`: applied on the mirror, and (inside a transaction) committed
//!   there when the authoritative side committed;
//! - `rolled_back`: part of a transaction the authoritative side itself
//!   rolled back (deadlock victim, failed statement, client ROLLBACK) and
//!   rolled back on the mirror too: a consistent outcome;
//! - `failure`: the authoritative side applied (committed) it and the mirror
//!   did not — the only outcome that leaves the sides different. Counted with
//!   its reason ([`FailureReason`]) and queued as a dirty record.
//!
//! Outcomes inside a transaction are decided when it ends. A mirror-only
//! transient error (ER_LOCK_DEADLOCK 1213, ER_LOCK_WAIT_TIMEOUT 1205) is
//! retried first: the mirror's share of the transaction is rolled back and
//! replayed from the [`Journal`] (bounded), before COMMIT is sent there.

use crate::classify::TxKind;
use crate::codes;
use crate::response::Summary;
use crate::wire::{ErrInfo, OkInfo};

use super::secondary::MirrorCheck;

/// Why a mirrored write was not applied on the mirror (the `reason` label
/// of `cutover_mirror_failures_total`): the class of the mirror's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// ER_LOCK_DEADLOCK (1213) or ER_LOCK_WAIT_TIMEOUT (1205) after every retry.
    LockConflict,
    /// SQLSTATE class 23: duplicate key, foreign key, NOT NULL, CHECK.
    Constraint,
    /// A table, column, database or routine the statement needs is missing
    /// (or the statement does not parse there): SQLSTATE class 42 and 3D.
    Schema,
    /// A value the column does not take (SQLSTATE class 22).
    Data,
    /// The mirror was down, backing off, lost, or skipped for the rest of
    /// the transaction in which it was lost.
    Unavailable,
    /// LOAD DATA LOCAL: the file was larger than `max_allowed_packet`.
    InfileTruncated,
    /// Any other error.
    Other,
}

impl FailureReason {
    /// Every reason, in label order.
    #[cfg(test)]
    pub const ALL: [FailureReason; 7] = [
        FailureReason::LockConflict,
        FailureReason::Constraint,
        FailureReason::Schema,
        FailureReason::Data,
        FailureReason::Unavailable,
        FailureReason::InfileTruncated,
        FailureReason::Other,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::LockConflict => "lock_conflict",
            FailureReason::Constraint => "constraint",
            FailureReason::Schema => "schema",
            FailureReason::Data => "data",
            FailureReason::Unavailable => "unavailable",
            FailureReason::InfileTruncated => "infile_truncated",
            FailureReason::Other => "other",
        }
    }

    /// The class of a server error, by code first, then SQLSTATE class
    /// (MariaDB "MariaDB Error Codes"; SQL:2016 SQLSTATE classes).
    pub fn of(err: &ErrInfo) -> FailureReason {
        if is_transient(err) {
            return FailureReason::LockConflict;
        }
        match err.state.get(..2).unwrap_or("") {
            "23" => FailureReason::Constraint,
            "42" | "3D" | "3F" => FailureReason::Schema,
            "22" => FailureReason::Data,
            "08" => FailureReason::Unavailable,
            _ => FailureReason::Other,
        }
    }
}

/// A mirror-only error worth retrying: the statement (ER_LOCK_WAIT_TIMEOUT)
/// or the whole transaction (ER_LOCK_DEADLOCK) was rolled back there.
pub fn is_transient(err: &ErrInfo) -> bool {
    err.code == codes::ER_LOCK_DEADLOCK.code || err.code == ER_LOCK_WAIT_TIMEOUT
}

/// ER_LOCK_WAIT_TIMEOUT: "Lock wait timeout exceeded; try restarting transaction".
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// One statement as it was sent to the mirror inside a transaction.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Silent commands queued before it (user variables, pinning SET,
    /// `SET autocommit=0`).
    pub pre: Vec<Vec<u8>>,
    /// The command itself.
    pub payload: Vec<u8>,
    /// A silent command owed after it (pinning reset).
    pub post: Option<&'static [u8]>,
    /// What its answer is compared with.
    pub check: MirrorCheck,
    /// A BEGIN that runs with autocommit off on the mirror (switched off by
    /// `pre`, or still off from the previous transaction): the share stays
    /// uncommitted after a mirror-only deadlock until it is replayed.
    pub forces_autocommit_off: bool,
    /// A BEGIN that takes the `SET autocommit=1` the connection owed
    /// instead of sending it (autocommit is still off).
    pub keeps_autocommit_off: bool,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.payload.len() + self.pre.iter().map(Vec::len).sum::<usize>() + 64
    }
}

/// The statements sent to the mirror in the open transaction, in order, to
/// replay after a transient error. Bounded: past `max_bytes` it is dropped
/// and the transaction can no longer be replayed (a transient error then
/// counts as a failure).
#[derive(Debug, Default)]
pub struct Journal {
    entries: Vec<Entry>,
    bytes: usize,
}

/// The mirror's share of the authoritative side's open transaction.
#[derive(Debug)]
pub struct MirrorTxn {
    /// Mirrored statements applied on the mirror so far.
    pub applied: Vec<MirrorCheck>,
    /// Mirrored statements the mirror did not apply, with why.
    pub missed: Vec<(FailureReason, MirrorCheck)>,
    /// Applied with another outcome than on the primary (counted only if
    /// the transaction commits): kind, check, the mirror's OK.
    pub mismatches: Vec<(&'static str, MirrorCheck, Option<OkInfo>)>,
    /// A transient error hit the mirror's share: replay before COMMIT; until
    /// then nothing more of the transaction is sent there.
    pub needs_replay: bool,
    /// Nothing more of this transaction is sent to the mirror (a transient
    /// error waits for the replay, or the connection was lost).
    pub halted: bool,
    /// What to replay (`None`: not replayable).
    journal: Option<Journal>,
    max_bytes: usize,
    /// The mirror's autocommit was switched off for the transaction, so
    /// that what follows a deadlock there stays uncommitted (restored when
    /// it ends).
    pub autocommit_forced_off: bool,
    /// Replays made so far.
    pub replays: u32,
    /// The outcome of the replays was counted (`cutover_mirror_retries_total`).
    pub retry_counted: bool,
}

impl MirrorTxn {
    /// A transaction that started; `max_bytes` bounds its journal (0: none).
    pub fn new(max_bytes: usize) -> Self {
        MirrorTxn {
            applied: Vec::new(),
            missed: Vec::new(),
            mismatches: Vec::new(),
            needs_replay: false,
            halted: false,
            journal: (max_bytes > 0).then(Journal::default),
            max_bytes,
            autocommit_forced_off: false,
            replays: 0,
            retry_counted: false,
        }
    }

    /// Remember a statement sent (or to be sent at replay) to the mirror.
    pub fn record(&mut self, entry: Entry) {
        let Some(j) = &mut self.journal else {
            return;
        };
        j.bytes += entry.bytes();
        if j.bytes > self.max_bytes {
            tracing::debug!(
                max_bytes = self.max_bytes,
                "mirror transaction journal over its cap; the transaction can no longer be replayed"
            );
            self.journal = None;
            return;
        }
        j.entries.push(entry);
    }

    /// This transaction can no longer be replayed (the connection was lost,
    /// something not replayable was sent).
    pub fn unreplayable(&mut self) {
        self.journal = None;
    }

    /// Whether a replay is possible.
    pub fn replayable(&self) -> bool {
        self.journal.is_some()
    }

    /// The statements to replay, in order.
    pub fn entries(&self) -> &[Entry] {
        self.journal.as_ref().map_or(&[], |j| &j.entries)
    }

    /// Judge one answer of the mirror inside the transaction.
    pub fn answer(&mut self, check: MirrorCheck, s: &Summary) {
        match &s.err {
            None => self.applied.push(check),
            Some(err) if is_transient(err) => {
                if err.code == codes::ER_LOCK_DEADLOCK.code {
                    // The mirror rolled its whole share back.
                    let lost = std::mem::take(&mut self.applied);
                    let reason = FailureReason::LockConflict;
                    self.missed.extend(lost.into_iter().map(|c| (reason, c)));
                }
                self.missed.push((FailureReason::LockConflict, check));
                self.needs_replay = true;
                self.halted = true;
            }
            Some(err) => self.missed.push((FailureReason::of(err), check)),
        }
    }

    /// A replay starts: every statement is judged again from its answers.
    pub fn restart(&mut self) {
        self.applied.clear();
        self.missed.clear();
        self.mismatches.clear();
        self.needs_replay = false;
        self.halted = false;
        self.replays += 1;
    }

    /// Every mirrored statement of the transaction, whatever became of it.
    pub fn statements(&self) -> usize {
        self.applied.len() + self.missed.len()
    }
}

/// How the authoritative side ended a transaction, for its mirrored writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEnd {
    /// Committed (COMMIT, or an implicit commit: DDL, BEGIN, LOCK TABLES, …).
    Committed,
    /// Rolled back (ROLLBACK, deadlock victim, failed COMMIT).
    RolledBack,
}

impl TxnEnd {
    /// How a statement that ended the authoritative side's transaction
    /// ended it: a failed statement or a ROLLBACK rolls back; anything else
    /// that ends a transaction commits it.
    pub fn of(primary: &Summary, tx: Option<TxKind>) -> TxnEnd {
        if primary.is_err() || tx == Some(TxKind::Rollback) {
            TxnEnd::RolledBack
        } else {
            TxnEnd::Committed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Summary;

    fn err(code: u16, state: &str) -> ErrInfo {
        ErrInfo {
            code,
            state: state.into(),
            message: String::new(),
        }
    }

    fn check(n: u64) -> MirrorCheck {
        MirrorCheck {
            primary: Summary::default(),
            pinned: false,
            table: Some(format!("t{n}")),
            digest: String::new(),
            multi: false,
        }
    }

    #[test]
    fn error_classes() {
        assert_eq!(
            FailureReason::of(&err(1213, "40001")),
            FailureReason::LockConflict
        );
        assert_eq!(
            FailureReason::of(&err(1205, "HY000")),
            FailureReason::LockConflict
        );
        assert_eq!(
            FailureReason::of(&err(1062, "23000")),
            FailureReason::Constraint
        );
        assert_eq!(
            FailureReason::of(&err(1146, "42S02")),
            FailureReason::Schema
        );
        assert_eq!(FailureReason::of(&err(1406, "22001")), FailureReason::Data);
        assert_eq!(FailureReason::of(&err(1290, "HY000")), FailureReason::Other);
        let labels: Vec<_> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels, crate::metric_catalog::MIRROR_FAILURE_REASONS);
    }

    #[test]
    fn a_deadlock_on_the_mirror_loses_its_whole_share_until_replayed() {
        let mut t = MirrorTxn::new(1 << 20);
        t.answer(check(1), &Summary::default());
        t.answer(check(2), &Summary::default());
        let deadlock = Summary {
            err: Some(err(1213, "40001")),
            ..Summary::default()
        };
        t.answer(check(3), &deadlock);
        assert_eq!((t.applied.len(), t.missed.len()), (0, 3));
        assert!(t.needs_replay && t.halted);
        t.restart();
        assert_eq!((t.statements(), t.replays, t.halted), (0, 1, false));
    }

    #[test]
    fn a_lock_wait_timeout_loses_only_its_statement() {
        let mut t = MirrorTxn::new(1 << 20);
        t.answer(check(1), &Summary::default());
        let timeout = Summary {
            err: Some(err(1205, "HY000")),
            ..Summary::default()
        };
        t.answer(check(2), &timeout);
        assert_eq!((t.applied.len(), t.missed.len()), (1, 1));
        assert!(t.needs_replay);
    }

    #[test]
    fn the_journal_is_bounded() {
        let mut t = MirrorTxn::new(200);
        let entry = |n| Entry {
            pre: Vec::new(),
            payload: vec![b'x'; 100],
            post: None,
            check: check(n),
            forces_autocommit_off: false,
            keeps_autocommit_off: false,
        };
        t.record(entry(1));
        assert!(t.replayable());
        assert_eq!(t.entries().len(), 1);
        t.record(entry(2));
        assert!(!t.replayable(), "over the cap: no replay");
        assert!(t.entries().is_empty());
        assert!(!MirrorTxn::new(0).replayable(), "0 disables replay");
    }
}
