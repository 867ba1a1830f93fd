//! The non-authoritative side: deterministic mirroring of writes, the
//! per-statement result diff, and what happens when that side fails.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use super::exec::{Cmd, Unsendable};
use super::Session;
use crate::backend::InfileCopy;
use crate::classify::Class;
use crate::command;
use crate::determinism::{self, Analysis, Pin};
use crate::pattern::Side;
use crate::response::{ResponseKind, Summary};
use crate::route::Plan;
use crate::stats::{DataPathStats, DirtyRecord};

/// What a deferred mirrored statement must be compared with once its answer
/// arrives: the authoritative side's outcome and where it wrote.
#[derive(Debug, Clone)]
pub(super) struct MirrorCheck {
    pub primary: Summary,
    pub pinned: bool,
    pub table: Option<String>,
    pub digest: String,
}

/// How one mirrored write is made deterministic.
pub(super) struct Pinning {
    pub pin: Pin,
    pub analysis: Analysis,
}

impl Session {
    /// Decide whether (and how) to pin this statement. Only writes in
    /// double-write patterns pay for it.
    pub(super) fn pinning(&mut self, plan: &Plan, class: Class, cmd: &Cmd<'_>) -> Option<Pinning> {
        if plan.mirror.is_none()
            || !matches!(class, Class::Write | Class::Ddl)
            || !self.shared.config.deterministic_mirroring
        {
            return None;
        }
        let analysis = match cmd {
            Cmd::Raw(p) => determinism::analyze(p.get(1..).unwrap_or_default()),
            Cmd::Execute { id, .. } => {
                let stmt = self.stmts.get_mut(*id)?;
                let sql = &stmt.sql;
                stmt.analysis
                    .get_or_insert_with(|| {
                        let mut a = determinism::analyze(sql);
                        if a.rewritten.take().is_some() {
                            // a prepared text is fixed: its UUID()/SYSDATE()
                            // cannot be pinned per execution
                            a.unsafe_reason
                                .get_or_insert("nondeterministic_function_in_prepared_statement");
                        }
                        a
                    })
                    .clone()
            }
        };
        Some(Pinning {
            pin: Pin::now(),
            analysis,
        })
    }

    /// Mirror a successful write to the non-authoritative side. With
    /// `defer` (a plain write inside a transaction) the answer is not
    /// awaited: the client moves on while the mirror works, and the answer
    /// is read before anything else on that connection — at the latest at
    /// COMMIT, which is mirrored synchronously, so nobody can see the
    /// transaction's effects before the mirror has them too.
    pub(super) async fn mirror(
        &mut self,
        side: Side,
        cmd: &Cmd<'_>,
        primary: &Summary,
        infile: Option<&InfileCopy>,
        pinning: Option<&Pinning>,
        defer: bool,
    ) {
        if self.backends[side.index()].is_none() {
            let refused = if self.gate.mirror_suspended() || self.gate.in_transaction() {
                Some("connection lost inside the current transaction".to_string())
            } else if let Err(e) = self.shared.backoff[side.index()].check() {
                Some(format!("backing off: {e}"))
            } else {
                self.ensure_backend(side).await.err().map(|e| e.to_string())
            };
            if let Some(reason) = refused {
                self.skip_mirror(side, &reason);
                return;
            }
        }
        let insert_id = primary
            .ok
            .map(|o| o.last_insert_id)
            .filter(|_| pinning.is_some_and(|p| !p.analysis.multi));
        let tag = MirrorCheck {
            primary: primary.clone(),
            pinned: pinning.is_some(),
            table: pinning.and_then(|p| p.analysis.table.clone()),
            digest: pinning
                .map(|p| p.analysis.digest.clone())
                .unwrap_or_default(),
        };
        let defer = defer && infile.is_none();
        let outcome = match self.payload_for(cmd, side).await {
            Ok(p) => {
                let b = self.backends[side.index()].as_mut().expect("ensured above");
                if let Some(pin) = pinning {
                    b.queue_silent(&pin.pin.prefix(insert_id));
                }
                let r = if defer {
                    b.send_deferred(&p, tag.clone()).await.map(|()| None)
                } else {
                    match b.send(&p).await {
                        Ok(()) => b.discard(ResponseKind::Query, infile).await.map(Some),
                        Err(e) => Err(e),
                    }
                };
                if pinning.is_some() && r.is_ok() {
                    b.queue_silent(&determinism::reset());
                }
                r.map_err(Unsendable::Backend)
            }
            Err(u) => Err(u),
        };
        if infile.is_some_and(|f| f.truncated) {
            warn!(%side, "LOAD DATA LOCAL file larger than max_allowed_packet; mirror received a truncated copy");
            self.count_secondary_failure(side);
        }
        match outcome {
            Ok(Some(s)) => self.judge(side, &tag, s),
            Ok(None) => {}
            Err(u) => self.note_secondary(side, Err(u), Some(primary)),
        }
        self.process_settled(side);
    }

    /// Judge the answers of deferred mirrored statements read so far (any
    /// later read on that connection reads them first).
    pub(super) fn process_settled(&mut self, side: Side) {
        let Some(b) = self.backends[side.index()].as_mut() else {
            return;
        };
        for (tag, s) in b.take_settled() {
            self.judge(side, &tag, s);
        }
    }

    fn judge(&mut self, side: Side, tag: &MirrorCheck, mirror: Summary) {
        self.diff_outcomes(side, tag, &mirror);
        self.note_secondary(side, Ok(mirror), Some(&tag.primary));
    }

    /// Compare the mirror's outcome with the primary's: affected rows,
    /// generated ids, error vs success. A difference means the sides have
    /// diverged: counted and queued for a targeted re-check.
    fn diff_outcomes(&mut self, side: Side, tag: &MirrorCheck, mirror: &Summary) {
        let primary = &tag.primary;
        let kind = match (&primary.ok, &mirror.ok, &mirror.err) {
            (_, _, Some(_)) => Some("error"),
            (Some(p), Some(m), None) if p.affected_rows != m.affected_rows => Some("affected_rows"),
            (Some(p), Some(m), None) if p.last_insert_id != m.last_insert_id && tag.pinned => {
                Some("insert_id")
            }
            _ => None,
        };
        let Some(kind) = kind else { return };
        DataPathStats::incr(&self.shared.stats.mirror_mismatches);
        metrics::counter!("cutover_mirror_mismatches_total", "kind" => kind).increment(1);
        let key = primary
            .ok
            .map(|o| o.last_insert_id)
            .filter(|id| *id > 0 && primary.ok.is_some_and(|o| o.affected_rows == 1));
        warn!(%side, kind, table = ?tag.table, digest = %tag.digest, primary = ?primary.ok, mirror = ?mirror.ok, "mirror result differs from the authoritative side");
        self.push_dirty(
            tag.table.clone(),
            key,
            format!("mismatch:{kind}"),
            tag.digest.clone(),
        );
    }

    /// A statement we mirror although it may not be deterministic.
    pub(super) fn flag_unsafe(&mut self, pinning: &Pinning) {
        let Some(reason) = pinning.analysis.unsafe_reason else {
            return;
        };
        DataPathStats::incr(&self.shared.stats.unsafe_statements);
        metrics::counter!("cutover_unsafe_statements_total", "reason" => reason).increment(1);
        let digest = pinning.analysis.digest.clone();
        warn!(reason, digest = %digest, table = ?pinning.analysis.table, "mirroring a statement that may not be deterministic");
        self.push_dirty(
            pinning.analysis.table.clone(),
            None,
            format!("unsafe:{reason}"),
            digest,
        );
    }

    fn push_dirty(&self, table: Option<String>, key: Option<u64>, reason: String, digest: String) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.shared.stats.dirty.push(DirtyRecord {
            table,
            key,
            reason,
            digest,
            at_ms,
        });
    }

    pub(super) fn skip_mirror(&mut self, side: Side, reason: &str) {
        debug!(%side, reason, "mirror skipped");
        self.count_secondary_failure(side);
        self.gate.suspend_mirror();
    }

    pub(super) fn count_secondary_failure(&self, side: Side) {
        let stats = &self.shared.stats;
        DataPathStats::incr(&stats.double_write_failure);
        stats.secondary_error(side);
        metrics::counter!("cutover_secondary_errors_total", "backend" => side.as_str())
            .increment(1);
    }

    /// Count and log what happened on a non-authoritative backend.
    pub(super) fn note_secondary(
        &mut self,
        side: Side,
        outcome: Result<Summary, Unsendable>,
        primary: Option<&Summary>,
    ) {
        match outcome {
            Ok(s) => {
                if let Some(err) = &s.err {
                    warn!(%side, code = err.code, message = %err.message, "mirrored statement failed");
                    self.count_secondary_failure(side);
                } else if primary.is_some() {
                    DataPathStats::incr(&self.shared.stats.double_write_success);
                }
            }
            Err(Unsendable::Backend(e)) => {
                warn!(%side, "mirror backend failed: {e}");
                self.count_secondary_failure(side);
                if e.is_fatal() {
                    self.drop_backend(side);
                    if self.gate.in_transaction() {
                        self.gate.suspend_mirror();
                    }
                }
            }
            Err(Unsendable::Malformed) => self.count_secondary_failure(side),
        }
    }

    /// The authoritative side's transaction ended but the other side's did
    /// not follow (e.g. a deadlock or a failed COMMIT): roll it back there.
    pub(super) async fn rollback_others(&mut self, primary: Side) {
        let other = primary.other();
        let Some(b) = self.backends[other.index()].as_mut() else {
            return;
        };
        if !b.in_trans {
            return;
        }
        warn!(side = %other, "rolling back a transaction left open on the non-authoritative side");
        let outcome = b
            .run(&command::query("ROLLBACK"), ResponseKind::Query)
            .await
            .map_err(Unsendable::Backend);
        self.count_secondary_failure(other);
        self.note_secondary(other, outcome, None);
    }
}
