//! The transaction / switch gate of one session: which pattern a statement
//! runs under, and when the session holds up a pattern switch.

use crate::pattern::{InFlight, Pattern, PatternHandle};

/// Where a session stands with respect to transactions and the pattern gate
/// of [`PatternHandle`].
///
/// **Invariant: the gate unit is held from a transaction's first statement
/// to its end, and the pattern is frozen for that time.** Every statement
/// of a transaction runs under the pattern the transaction started under,
/// and a switch that drains ([`PatternHandle::drain`]) waits until the
/// transaction has ended — so no transaction straddles two patterns and no
/// write is applied in one order on one side and in another on the other.
/// Outside a transaction each statement is its own unit: it waits at the
/// gate while a switch drains, and releases the gate when it is over.
///
/// The flow per statement is [`begin`](Self::begin) → (the authoritative
/// side answers) → [`observe`](Self::observe) its IN_TRANS status flag →
/// [`end`](Self::end). Whether a transaction is open is what the
/// authoritative side says (MySQL's `SERVER_STATUS_IN_TRANS`), so BEGIN,
/// `SET autocommit=0` + a write, implicit commits by DDL and server-side
/// rollbacks (deadlock) are all followed without parsing SQL.
///
/// The gate also remembers, per transaction, that the mirror side was lost
/// or skipped inside it: that side is not reopened before the transaction
/// ends (it would miss the transaction's earlier statements).
#[derive(Default)]
pub(super) struct TxnGate {
    state: State,
}

#[derive(Default)]
enum State {
    /// No unit held: the next statement waits at the gate.
    #[default]
    Idle,
    /// One statement runs outside a transaction (it may open one).
    Statement(Unit),
    /// A transaction is open: every statement runs under its pattern.
    Transaction(Unit),
}

/// A held gate unit and what is frozen with it.
struct Unit {
    pattern: Pattern,
    _in_flight: InFlight,
    mirror_suspended: bool,
}

impl TxnGate {
    /// Start a statement and return the pattern it runs under: inside a
    /// transaction its frozen pattern; otherwise the current one, after
    /// waiting at the gate while a switch drains (the unit is held until
    /// [`end`](Self::end)).
    pub async fn begin(&mut self, handle: &PatternHandle) -> Pattern {
        match &self.state {
            State::Statement(u) | State::Transaction(u) => u.pattern,
            State::Idle => {
                let (pattern, in_flight) = handle.enter().await;
                self.state = State::Statement(Unit {
                    pattern,
                    _in_flight: in_flight,
                    mirror_suspended: false,
                });
                pattern
            }
        }
    }

    /// Record the authoritative side's answer: `in_trans` is its IN_TRANS
    /// flag, `None` when the answer carried no status (the state stays).
    /// Returns whether a transaction is open now. A transaction that ended
    /// also ends the mirror's suspension; the unit stays held until
    /// [`end`](Self::end).
    pub fn observe(&mut self, in_trans: Option<bool>) -> bool {
        let open = in_trans.unwrap_or(self.in_transaction());
        self.state = match std::mem::take(&mut self.state) {
            State::Idle => State::Idle,
            State::Statement(u) | State::Transaction(u) if open => State::Transaction(u),
            State::Statement(u) | State::Transaction(u) => State::Statement(Unit {
                mirror_suspended: false,
                ..u
            }),
        };
        self.in_transaction()
    }

    /// The statement is over: outside a transaction the unit is released
    /// (a waiting switch may proceed); inside one it stays held.
    pub fn end(&mut self) {
        if let State::Statement(_) = self.state {
            self.state = State::Idle;
        }
    }

    /// Forget the transaction and release the unit (COM_CHANGE_USER,
    /// COM_RESET_CONNECTION: the server rolled back whatever was open).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// The frozen pattern of the open transaction, if one is open.
    pub fn transaction_pattern(&self) -> Option<Pattern> {
        match &self.state {
            State::Transaction(u) => Some(u.pattern),
            _ => None,
        }
    }

    /// The open transaction started under a fleet epoch other than the
    /// handle's and the authoritative side changed since: it was never
    /// drained for that switch (this member was fenced while it ran), so no
    /// further statement of it may run (ROLLBACK excepted). `None` otherwise.
    pub fn stale_transaction(&self, handle: &PatternHandle) -> Option<(Pattern, Pattern)> {
        let State::Transaction(u) = &self.state else {
            return None;
        };
        let now = handle.load();
        (u._in_flight.epoch() != handle.epoch() && now.primary() != u.pattern.primary())
            .then_some((u.pattern, now))
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// Whether the mirror side is suspended until the transaction ends.
    pub fn mirror_suspended(&self) -> bool {
        match &self.state {
            State::Statement(u) | State::Transaction(u) => u.mirror_suspended,
            State::Idle => false,
        }
    }

    /// The mirror side was lost or skipped: do not reopen it before the
    /// transaction (or this statement, if it opens none) ends. No effect
    /// while no unit is held.
    pub fn suspend_mirror(&mut self) {
        if let State::Statement(u) | State::Transaction(u) = &mut self.state {
            u.mirror_suspended = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_autocommit_statement_holds_the_gate_only_while_it_runs() {
        let h = PatternHandle::new(Pattern::SrcFirst);
        let mut gate = TxnGate::default();
        assert_eq!(gate.begin(&h).await, Pattern::SrcFirst);
        assert_eq!(h.in_flight(), 1);
        assert!(!gate.observe(Some(false)));
        assert_eq!(h.in_flight(), 1, "held until the statement is over");
        gate.end();
        assert_eq!(h.in_flight(), 0);
        assert_eq!(gate.transaction_pattern(), None);
    }

    #[tokio::test]
    async fn a_transaction_holds_the_gate_and_its_pattern_until_it_ends() {
        let h = PatternHandle::new(Pattern::SrcFirst);
        let mut gate = TxnGate::default();
        gate.begin(&h).await; // BEGIN
        assert!(gate.observe(Some(true)));
        gate.end();
        assert_eq!(
            h.in_flight(),
            1,
            "held between the transaction's statements"
        );
        assert_eq!(gate.transaction_pattern(), Some(Pattern::SrcFirst));

        let drain = h.drain(Duration::from_millis(50)).await;
        assert_eq!(
            drain.unwrap_err().in_flight,
            1,
            "a draining switch waits for it"
        );
        h.swap(Pattern::DstFirst); // an undrained swap still cannot reach it
        assert_eq!(gate.begin(&h).await, Pattern::SrcFirst, "frozen");
        assert!(gate.observe(Some(true)));
        gate.end();

        gate.begin(&h).await; // COMMIT
        assert!(!gate.observe(Some(false)));
        gate.end();
        assert_eq!(h.in_flight(), 0);
        assert_eq!(
            gate.begin(&h).await,
            Pattern::DstFirst,
            "the next one sees the switch"
        );
    }

    #[tokio::test]
    async fn a_suspended_mirror_stays_suspended_until_the_transaction_ends() {
        let h = PatternHandle::new(Pattern::DstFirst);
        let mut gate = TxnGate::default();
        gate.begin(&h).await;
        gate.suspend_mirror(); // lost at BEGIN
        gate.observe(Some(true));
        gate.end();
        gate.begin(&h).await;
        assert!(gate.mirror_suspended());
        gate.observe(Some(false)); // COMMIT
        assert!(!gate.mirror_suspended());
        gate.end();
        assert!(!gate.mirror_suspended());
        gate.suspend_mirror();
        assert!(!gate.mirror_suspended(), "no effect without a unit");
    }

    #[tokio::test]
    async fn a_transaction_older_than_an_authority_change_of_the_fleet_is_stale() {
        let h = PatternHandle::new(Pattern::SrcFirst);
        h.adopt(Pattern::SrcFirst, 3);
        let mut gate = TxnGate::default();
        gate.begin(&h).await;
        gate.observe(Some(true));
        gate.end();
        h.adopt(Pattern::SrcOnly, 4); // same authority: the frozen pattern is fine
        assert_eq!(gate.stale_transaction(&h), None);
        h.adopt(Pattern::DstFirst, 5); // adopted without a drain (a fenced member)
        assert_eq!(
            gate.stale_transaction(&h),
            Some((Pattern::SrcFirst, Pattern::DstFirst))
        );
        gate.reset();
        assert_eq!(gate.stale_transaction(&h), None);
    }

    #[tokio::test]
    async fn an_answer_without_status_changes_nothing_and_reset_releases() {
        let h = PatternHandle::new(Pattern::SrcOnly);
        let mut gate = TxnGate::default();
        gate.begin(&h).await;
        assert!(!gate.observe(None));
        gate.end();
        assert_eq!(h.in_flight(), 0);
        gate.begin(&h).await;
        assert!(gate.observe(Some(true)));
        assert!(gate.observe(None), "still open");
        gate.end();
        gate.reset();
        assert_eq!((h.in_flight(), gate.in_transaction()), (0, false));
    }
}
