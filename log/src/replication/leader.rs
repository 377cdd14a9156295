//! The leader's side of one partition's replication (Kafka's `Partition` while it leads):
//! what each follower has fetched, the ISR and the one ISR change in flight to the
//! controller (`AlterPartition`), the high watermark, and whether an `acks=all` append is
//! acknowledged. Sans-IO: events in (an append, a follower's fetch, a tick, the controller's
//! answer), decisions out (a new high watermark, an ISR change to send); the broker applies
//! them to the log and the network, and a simulation can drive it with its own clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::NodeId;

/// Kafka's `UnifiedLog.UnknownOffset`: a follower that has not fetched since this leader
/// took over.
pub const UNKNOWN_OFFSET: i64 = -1;

/// A partition's leadership and ISR as the controller committed them (Kafka's
/// `LeaderAndIsr` / `PartitionRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader: NodeId,
    pub leader_epoch: i32,
    /// Bumped by the controller on every change (ISR, replicas, leader): an `AlterPartition`
    /// made against an older one is refused.
    pub partition_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
}

/// An ISR change for the controller (Kafka's `AlterPartition` for one partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    pub leader_epoch: i32,
    /// The partition epoch the change was made against.
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// Whether an `acks=all` append ending at some offset may be answered (Kafka's
/// `checkEnoughReplicasReachOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// Not every in-sync replica has it yet.
    Waiting,
    /// The high watermark passed it.
    Done,
    /// The high watermark passed it, but the ISR shrank below `min.insync.replicas`
    /// meanwhile: Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    NotEnoughReplicasAfterAppend,
}

/// What the leader knows of one follower (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end: the offset it last fetched from.
    pub log_end_offset: i64,
    pub log_start_offset: i64,
    /// The last time it was known to have everything the leader had.
    pub last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end at its last fetch.
    last_fetch_leader_leo: i64,
}

impl FollowerProgress {
    fn reset(now_ms: i64, in_sync: bool, leader_leo: i64) -> Self {
        FollowerProgress {
            log_end_offset: UNKNOWN_OFFSET,
            log_start_offset: UNKNOWN_OFFSET,
            // An in-sync follower gets the lag allowance from now; others have to catch up.
            last_caught_up_ms: if in_sync { now_ms } else { 0 },
            last_fetch_ms: if in_sync { now_ms } else { 0 },
            last_fetch_leader_leo: leader_leo,
        }
    }

    /// Kafka's `Replica.isCaughtUp`: at the leader's log end, or caught up within the lag
    /// allowance.
    fn is_caught_up(&self, leader_leo: i64, now_ms: i64, lag_max_ms: i64) -> bool {
        self.log_end_offset == leader_leo || now_ms - self.last_caught_up_ms <= lag_max_ms
    }
}

/// A follower fetch the leader cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderError {
    #[error("node {0} is not a replica of this partition")]
    NotAReplica(NodeId),
}

/// What a follower's fetch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The high watermark moved to this.
    pub high_watermark: Option<i64>,
    /// The follower caught up: this ISR expansion is to be sent to the controller.
    pub alter: Option<AlterIsr>,
}

/// One partition this node leads.
#[derive(Debug, Clone)]
pub struct LeaderPartition {
    local: NodeId,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<NodeId>,
    /// The ISR the controller committed.
    isr: BTreeSet<NodeId>,
    /// The ISR of an `AlterPartition` in flight; only one at a time, as in Kafka.
    pending: Option<BTreeSet<NodeId>>,
    min_isr: usize,
    lag_max_ms: i64,
    /// The log end when this leader's epoch began: a follower joins the ISR only once it
    /// has reached it (it then holds everything a previous leader could have acknowledged).
    epoch_start_offset: i64,
    followers: BTreeMap<NodeId, FollowerProgress>,
    log_end_offset: i64,
    high_watermark: i64,
}

impl LeaderPartition {
    /// This node becomes leader of a partition whose log ends at `log_end_offset` with a
    /// (checkpointed, possibly stale) high watermark `high_watermark`. Followers in the ISR
    /// get `replica.lag.time.max.ms` from now to fetch; the others are out until they catch
    /// up. Kafka's `makeLeader`.
    pub fn new(
        local: NodeId,
        state: &LeaderAndIsr,
        log_end_offset: i64,
        high_watermark: i64,
        min_isr: usize,
        lag_max_ms: i64,
        now_ms: i64,
    ) -> Self {
        let isr: BTreeSet<NodeId> = state.isr.iter().copied().collect();
        let followers = state
            .replicas
            .iter()
            .filter(|r| **r != local)
            .map(|r| {
                let progress = FollowerProgress::reset(now_ms, isr.contains(r), log_end_offset);
                (*r, progress)
            })
            .collect();
        LeaderPartition {
            local,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: state.replicas.clone(),
            isr,
            pending: None,
            min_isr: min_isr.max(1),
            lag_max_ms,
            epoch_start_offset: log_end_offset,
            followers,
            log_end_offset,
            high_watermark: high_watermark.min(log_end_offset),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// The committed ISR.
    pub fn isr(&self) -> Vec<NodeId> {
        self.isr.iter().copied().collect()
    }

    /// The committed ISR with the replicas a change in flight adds (Kafka's "maximal ISR",
    /// KIP-497): the high watermark and acks wait for them too, which is safe whichever way
    /// the change ends.
    pub fn maximal_isr(&self) -> BTreeSet<NodeId> {
        match &self.pending {
            Some(p) => self.isr.union(p).copied().collect(),
            None => self.isr.clone(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn follower(&self, node: NodeId) -> Option<&FollowerProgress> {
        self.followers.get(&node)
    }

    /// Whether an `AlterPartition` is in flight.
    pub fn alter_in_flight(&self) -> bool {
        self.pending.is_some()
    }

    /// Fewer in-sync replicas than `min.insync.replicas`: `acks=all` appends are refused
    /// and the high watermark stands still (Kafka 4's rule, KIP-966).
    pub fn is_under_min_isr(&self) -> bool {
        self.isr.len() < self.min_isr
    }

    /// Fewer in-sync replicas than replicas.
    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    /// `min.insync.replicas` changed (a topic config update).
    pub fn set_min_isr(&mut self, min_isr: usize, now_ms: i64) -> Option<i64> {
        self.min_isr = min_isr.max(1);
        self.maybe_increment_hw(now_ms, &|_| true)
    }

    /// The controller committed a new state for this partition in the same leader epoch
    /// (an ISR change, this leader's own or not, or new replicas): it replaces the committed
    /// one and ends the change in flight. Returns a new high watermark if it moved.
    pub fn on_committed(&mut self, state: &LeaderAndIsr, now_ms: i64) -> Option<i64> {
        debug_assert_eq!(state.leader, self.local);
        debug_assert_eq!(state.leader_epoch, self.leader_epoch);
        if state.partition_epoch < self.partition_epoch {
            return None;
        }
        self.partition_epoch = state.partition_epoch;
        self.isr = state.isr.iter().copied().collect();
        self.pending = None;
        if state.replicas != self.replicas {
            let leo = self.log_end_offset;
            let isr = &self.isr;
            self.followers.retain(|r, _| state.replicas.contains(r));
            for r in state.replicas.iter().filter(|r| **r != self.local) {
                self.followers
                    .entry(*r)
                    .or_insert_with(|| FollowerProgress::reset(now_ms, isr.contains(r), leo));
            }
            self.replicas = state.replicas.clone();
        }
        self.maybe_increment_hw(now_ms, &|_| true)
    }

    /// The controller refused the change in flight (a stale partition epoch, a fenced
    /// broker): it is dropped, and the next fetch or tick proposes again from the committed
    /// state, as Kafka's leader does.
    pub fn on_alter_failed(&mut self) {
        self.pending = None;
    }

    /// The leader appended: its log now ends at `log_end_offset`. Returns a new high
    /// watermark if it moved (with no follower in the ISR it follows the log end).
    pub fn on_append(&mut self, log_end_offset: i64, now_ms: i64) -> Option<i64> {
        debug_assert!(log_end_offset >= self.log_end_offset);
        self.log_end_offset = log_end_offset;
        self.maybe_increment_hw(now_ms, &|_| true)
    }

    /// A follower fetched from `fetch_offset` (its log end) at `now_ms`; `eligible` says
    /// whether a broker may join the ISR (not fenced, not shutting down). Kafka's
    /// `updateFollowerFetchState` with `maybeExpandIsr` and `maybeIncrementLeaderHW`.
    pub fn on_follower_fetch(
        &mut self,
        node: NodeId,
        fetch_offset: i64,
        log_start_offset: i64,
        now_ms: i64,
        eligible: &dyn Fn(NodeId) -> bool,
    ) -> Result<FetchOutcome, LeaderError> {
        let leader_leo = self.log_end_offset;
        let f = self
            .followers
            .get_mut(&node)
            .ok_or(LeaderError::NotAReplica(node))?;
        let before = f.log_end_offset;
        if fetch_offset >= leader_leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= f.last_fetch_leader_leo {
            // It now has what the leader had at its previous fetch: caught up as of then.
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = fetch_offset;
        f.log_start_offset = log_start_offset;
        f.last_fetch_ms = now_ms;
        f.last_fetch_leader_leo = leader_leo;

        let mut outcome = FetchOutcome::default();
        let joins = self.pending.is_none()
            && !self.isr.contains(&node)
            && eligible(node)
            && fetch_offset >= self.high_watermark
            && fetch_offset >= self.epoch_start_offset;
        if joins {
            let mut proposed = self.isr.clone();
            proposed.insert(node);
            outcome.alter = Some(self.propose(proposed));
        }
        if before != fetch_offset {
            outcome.high_watermark = self.maybe_increment_hw(now_ms, eligible);
        }
        Ok(outcome)
    }

    /// Followers in the ISR that have not caught up within `replica.lag.time.max.ms` leave
    /// it: the shrink to send to the controller, if any (none while a change is in flight).
    /// Kafka's `maybeShrinkIsr`.
    pub fn shrink_check(&mut self, now_ms: i64) -> Option<AlterIsr> {
        if self.pending.is_some() {
            return None;
        }
        let leo = self.log_end_offset;
        let out: Vec<NodeId> = self
            .isr
            .iter()
            .filter(|r| **r != self.local)
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_none_or(|f| !f.is_caught_up(leo, now_ms, self.lag_max_ms))
            })
            .copied()
            .collect();
        if out.is_empty() {
            return None;
        }
        let proposed = self
            .isr
            .iter()
            .filter(|r| !out.contains(r))
            .copied()
            .collect();
        Some(self.propose(proposed))
    }

    /// Whether an `acks=all` append may be attempted: Kafka refuses it with
    /// NOT_ENOUGH_REPLICAS before appending when the committed ISR is under min.
    pub fn may_append_acks_all(&self) -> bool {
        !self.is_under_min_isr()
    }

    /// Whether an `acks=all` append ending before `required_offset` is acknowledged.
    pub fn ack_state(&self, required_offset: i64) -> AckState {
        if self.high_watermark < required_offset {
            AckState::Waiting
        } else if self.maximal_isr().len() >= self.min_isr {
            AckState::Done
        } else {
            AckState::NotEnoughReplicasAfterAppend
        }
    }

    fn propose(&mut self, proposed: BTreeSet<NodeId>) -> AlterIsr {
        let alter = AlterIsr {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: proposed.iter().copied().collect(),
        };
        self.pending = Some(proposed);
        alter
    }

    /// The high watermark is the smallest log end among the maximal ISR, and among
    /// followers caught up enough to be about to join it (so a follower catching up is not
    /// left forever behind a moving high watermark); it advances only while the committed
    /// ISR holds `min.insync.replicas`. Kafka's `maybeIncrementLeaderHW`.
    fn maybe_increment_hw(
        &mut self,
        now_ms: i64,
        eligible: &dyn Fn(NodeId) -> bool,
    ) -> Option<i64> {
        if self.is_under_min_isr() {
            return None;
        }
        let leo = self.log_end_offset;
        let maximal = self.maximal_isr();
        let mut hw = leo;
        for (node, f) in &self.followers {
            let waits = maximal.contains(node)
                || (f.is_caught_up(leo, now_ms, self.lag_max_ms) && eligible(*node));
            if waits && f.log_end_offset < hw {
                hw = f.log_end_offset;
            }
        }
        (hw > self.high_watermark).then(|| {
            self.high_watermark = hw;
            hw
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 30_000;
    const L: NodeId = NodeId(0);
    const F1: NodeId = NodeId(1);
    const F2: NodeId = NodeId(2);

    fn state(epoch: i32, replicas: &[NodeId], isr: &[NodeId]) -> LeaderAndIsr {
        LeaderAndIsr {
            leader: L,
            leader_epoch: epoch,
            partition_epoch: 1,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        }
    }

    fn all(_: NodeId) -> bool {
        true
    }

    fn fetch(p: &mut LeaderPartition, node: NodeId, offset: i64, now: i64) -> FetchOutcome {
        p.on_follower_fetch(node, offset, 0, now, &all).unwrap()
    }

    fn commit(p: &mut LeaderPartition, alter: &AlterIsr, now: i64) -> Option<i64> {
        let committed = LeaderAndIsr {
            leader: L,
            leader_epoch: alter.leader_epoch,
            partition_epoch: alter.partition_epoch + 1,
            replicas: p.replicas().to_vec(),
            isr: alter.isr.clone(),
        };
        p.on_committed(&committed, now)
    }

    /// Kafka's `PartitionTest.testIsrExpansion`.
    #[test]
    fn a_follower_joins_the_isr_once_it_reaches_the_log_end() {
        let mut p = LeaderPartition::new(L, &state(5, &[L, F1], &[L]), 10, 0, 1, LAG, 1_000);
        assert_eq!(p.follower(F1).unwrap().last_caught_up_ms, 0);
        assert_eq!(p.follower(F1).unwrap().log_end_offset, UNKNOWN_OFFSET);
        let o = fetch(&mut p, F1, 3, 1_000);
        assert_eq!(o.alter, None);
        assert_eq!(p.follower(F1).unwrap().last_caught_up_ms, 0);
        let o = fetch(&mut p, F1, 10, 1_000);
        let alter = o.alter.expect("an expansion");
        assert_eq!(alter.isr, [L, F1]);
        assert_eq!(p.isr(), [L]);
        assert_eq!(p.maximal_isr().len(), 2);
        assert_eq!(p.follower(F1).unwrap().last_caught_up_ms, 1_000);
        commit(&mut p, &alter, 1_000);
        assert_eq!(p.isr(), [L, F1]);
        assert!(!p.alter_in_flight());
    }

    /// Kafka's `PartitionTest.testFollowerDoesNotJoinISRUntilCaughtUpToOffsetWithinCurrentLeaderEpoch`.
    #[test]
    fn a_follower_joins_only_after_reaching_the_epoch_start() {
        // Leader in epoch 10 of a log ending at 5 whose HW is 2.
        let mut p = LeaderPartition::new(L, &state(10, &[L, F1, F2], &[L, F2]), 5, 2, 1, LAG, 0);
        p.on_append(7, 0);
        assert_eq!(fetch(&mut p, F1, 0, 0).alter, None);
        // At the high watermark but below the epoch's start: not yet.
        assert_eq!(fetch(&mut p, F1, 2, 0).alter, None);
        let alter = fetch(&mut p, F1, 5, 0)
            .alter
            .expect("joins at the epoch start");
        assert_eq!(alter.isr, [L, F1, F2]);
        assert_eq!(p.isr(), [L, F2]);
    }

    /// Kafka's `PartitionTest.testMaybeShrinkIsr`.
    #[test]
    fn a_silent_follower_leaves_the_isr_and_the_hw_waits_for_the_commit() {
        let t0 = 1_000;
        let mut p =
            LeaderPartition::new(L, &state(5, &[L, F1, F2], &[L, F1, F2]), 10, 0, 1, LAG, t0);
        assert_eq!(fetch(&mut p, F1, 10, t0).high_watermark, None);
        // On becoming leader an in-sync follower counts as caught up.
        assert_eq!(p.shrink_check(t0), None);
        let later = t0 + LAG + 1;
        let alter = p.shrink_check(later).expect("F2 lags");
        assert_eq!(alter.isr, [L, F1]);
        // While the shrink is in flight, the maximal ISR still holds F2: the HW stays.
        assert_eq!(p.isr(), [L, F1, F2]);
        assert_eq!(p.maximal_isr().len(), 3);
        assert_eq!(p.high_watermark(), 0);
        assert_eq!(p.shrink_check(later), None, "one change at a time");
        assert_eq!(commit(&mut p, &alter, later), Some(10));
        assert_eq!(p.isr(), [L, F1]);
        assert_eq!(p.partition_epoch(), 2);
    }

    /// Kafka's `PartitionTest.testHighWatermarkAdvanceShouldNotAdvanceWhenUnderMinISR`.
    #[test]
    fn the_hw_stands_still_under_min_isr() {
        let mut p = LeaderPartition::new(L, &state(5, &[L, F1, F2], &[L, F1]), 10, 0, 3, LAG, 0);
        assert!(p.is_under_min_isr());
        assert!(!p.may_append_acks_all());
        assert_eq!(fetch(&mut p, F1, 10, 0).high_watermark, None);
        let o = fetch(&mut p, F2, 10, 0);
        assert_eq!(
            o.high_watermark, None,
            "the maximal ISR is not the committed one"
        );
        assert_eq!(p.maximal_isr().len(), 3);
        let alter = o.alter.expect("F2 joins");
        assert_eq!(commit(&mut p, &alter, 0), Some(10));
        assert!(!p.is_under_min_isr());
    }

    /// Kafka's `PartitionTest.testShouldNotShrinkIsrIfPreviousFetchIsCaughtUp`.
    #[test]
    fn a_follower_caught_up_as_of_its_previous_fetch_stays() {
        let t0 = 0;
        let mut p = LeaderPartition::new(L, &state(5, &[L, F1], &[L, F1]), 10, 0, 1, LAG, t0);
        let first = t0 + 5_000;
        assert_eq!(fetch(&mut p, F1, 5, first).high_watermark, Some(5));
        assert_eq!(p.follower(F1).unwrap().last_caught_up_ms, t0);
        let second = first + 5_001;
        p.on_append(15, second);
        assert_eq!(fetch(&mut p, F1, 10, second).high_watermark, Some(10));
        assert_eq!(p.follower(F1).unwrap().last_caught_up_ms, first);
        assert_eq!(p.shrink_check(first + LAG), None);
    }

    /// Kafka's `PartitionTest.testShouldNotShrinkIsrIfFollowerCaughtUpToLogEnd`.
    #[test]
    fn a_follower_at_the_log_end_never_lags() {
        let mut p = LeaderPartition::new(L, &state(5, &[L, F1], &[L, F1]), 10, 0, 1, LAG, 0);
        assert_eq!(fetch(&mut p, F1, 10, 0).high_watermark, Some(10));
        assert_eq!(p.shrink_check(LAG + 1), None);
    }

    #[test]
    fn acks_all_waits_for_the_isr_and_reports_a_shrink_below_min() {
        let mut p = LeaderPartition::new(L, &state(1, &[L, F1, F2], &[L, F1, F2]), 0, 0, 2, LAG, 0);
        p.on_append(4, 0);
        assert_eq!(p.ack_state(4), AckState::Waiting);
        fetch(&mut p, F1, 4, 0);
        assert_eq!(p.ack_state(4), AckState::Waiting, "F2 is in the ISR too");
        assert_eq!(fetch(&mut p, F2, 4, 0).high_watermark, Some(4));
        assert_eq!(p.ack_state(4), AckState::Done);
        // Both followers stop; the ISR shrinks to the leader alone.
        p.on_append(8, 0);
        let alter = p.shrink_check(LAG + 1).unwrap();
        assert_eq!(alter.isr, [L]);
        commit(&mut p, &alter, LAG + 1);
        assert!(!p.may_append_acks_all());
        assert_eq!(
            p.high_watermark(),
            4,
            "under min ISR the HW does not follow the leader"
        );
        assert_eq!(p.ack_state(8), AckState::Waiting);
        assert_eq!(p.ack_state(4), AckState::NotEnoughReplicasAfterAppend);
    }

    #[test]
    fn a_sole_replica_moves_the_hw_with_its_appends() {
        let mut p = LeaderPartition::new(L, &state(0, &[L], &[L]), 0, 0, 1, LAG, 0);
        assert_eq!(p.on_append(3, 0), Some(3));
        assert_eq!(p.ack_state(3), AckState::Done);
    }

    #[test]
    fn a_caught_up_follower_outside_the_isr_holds_the_hw_back() {
        // F1 is out of the ISR but fetched recently: the HW waits for it (so it can join)
        // rather than run ahead at the leader's log end.
        let t = 100_000;
        let mut p = LeaderPartition::new(L, &state(1, &[L, F1], &[L]), 0, 0, 1, LAG, t);
        p.on_append(5, t);
        assert_eq!(
            p.high_watermark(),
            5,
            "never fetched: not caught up, not waited for"
        );
        let o = fetch(&mut p, F1, 5, t + 10);
        assert!(o.alter.is_some());
        p.on_alter_failed();
        p.on_append(9, t + 20);
        assert_eq!(
            p.high_watermark(),
            5,
            "caught up 10 ms ago at 5: the HW waits"
        );
        // An ineligible (fenced) broker is not waited for.
        let o = p.on_follower_fetch(F1, 6, 0, t + 30, &|_| false).unwrap();
        assert_eq!(o.high_watermark, Some(9));
        assert_eq!(o.alter, None);
    }

    #[test]
    fn a_stale_commit_is_ignored_and_unknown_replicas_are_refused() {
        let mut p = LeaderPartition::new(L, &state(1, &[L, F1], &[L, F1]), 0, 0, 1, LAG, 0);
        let mut stale = state(1, &[L, F1], &[L]);
        stale.partition_epoch = 0;
        assert_eq!(p.on_committed(&stale, 0), None);
        assert_eq!(p.isr(), [L, F1]);
        assert_eq!(
            p.on_follower_fetch(NodeId(7), 0, 0, 0, &all),
            Err(LeaderError::NotAReplica(NodeId(7)))
        );
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(u8),
            Fetch { follower: u8, ahead: u8 },
            Tick(u16),
            Commit,
            Refuse,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (1u8..5).prop_map(Op::Append),
                (0u8..2, 0u8..6).prop_map(|(follower, ahead)| Op::Fetch { follower, ahead }),
                (0u16..20_000).prop_map(Op::Tick),
                Just(Op::Commit),
                Just(Op::Refuse),
            ]
        }

        proptest! {
            /// Whatever the order of appends, fetches, lag checks and controller answers:
            /// the high watermark never goes back nor past the log end, and whenever it moves,
            /// every committed in-sync replica holds it and the committed ISR is at least
            /// `min.insync.replicas` (so an acknowledged record survives any election from it).
            #[test]
            fn the_high_watermark_only_covers_what_the_isr_holds(
                min_isr in 1usize..4,
                ops in proptest::collection::vec(op(), 1..120),
            ) {
                let followers = [F1, F2];
                let mut p = LeaderPartition::new(L, &state(1, &[L, F1, F2], &[L, F1, F2]), 0, 0, min_isr, LAG, 0);
                let mut now = 0i64;
                let mut leos = [0i64; 2];
                let mut in_flight: Option<AlterIsr> = None;
                for op in ops {
                    let before = p.high_watermark();
                    match op {
                        Op::Append(n) => {
                            let leo = p.log_end_offset() + i64::from(n);
                            p.on_append(leo, now);
                        }
                        Op::Fetch { follower, ahead } => {
                            let i = usize::from(follower);
                            leos[i] = (leos[i] + i64::from(ahead)).min(p.log_end_offset());
                            let o = p.on_follower_fetch(followers[i], leos[i], 0, now, &all).unwrap();
                            if o.alter.is_some() {
                                in_flight = o.alter;
                            }
                        }
                        Op::Tick(ms) => {
                            now += i64::from(ms);
                            if let Some(a) = p.shrink_check(now) {
                                in_flight = Some(a);
                            }
                        }
                        Op::Commit => {
                            if let Some(a) = in_flight.take() {
                                commit(&mut p, &a, now);
                            }
                        }
                        Op::Refuse => {
                            if in_flight.take().is_some() {
                                p.on_alter_failed();
                            }
                        }
                    }
                    let hw = p.high_watermark();
                    prop_assert!(hw >= before);
                    prop_assert!(hw <= p.log_end_offset());
                    if hw > before {
                        prop_assert!(p.isr().len() >= min_isr);
                        for (i, f) in followers.iter().enumerate() {
                            if p.isr().contains(f) {
                                prop_assert!(leos[i] >= hw, "{f} in the ISR at {} < hw {hw}", leos[i]);
                            }
                        }
                    }
                    prop_assert_eq!(p.alter_in_flight(), in_flight.is_some());
                }
            }
        }
    }
}
