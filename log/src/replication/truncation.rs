//! Where a follower's log diverges from its leader's, from their leader-epoch caches
//! (KIP-101, KIP-279, and KIP-595's check inside Fetch): the leader's side finds that a
//! follower's last fetched epoch ended earlier on the leader than the follower thinks, and
//! the follower's side turns the leader's answer into an offset to truncate to. Pure
//! functions over `(epoch, end offset)` pairs as `LeaderEpochCache::end_offset_for` gives
//! them, so they run the same on a broker and in a simulation.

use crate::storage::epochs::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

/// An epoch and the offset where it ended (`OffsetForLeaderEpoch`'s answer, Fetch's
/// `diverging_epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

impl EpochEnd {
    pub fn new(epoch: i32, end_offset: i64) -> Self {
        EpochEnd { epoch, end_offset }
    }

    pub fn from_pair((epoch, end_offset): (i32, i64)) -> Self {
        EpochEnd { epoch, end_offset }
    }

    fn is_undefined(&self) -> bool {
        self.epoch == UNDEFINED_EPOCH || self.end_offset == UNDEFINED_EPOCH_OFFSET
    }
}

/// Why a follower's fetch cannot be answered with records or a divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DivergenceError {
    /// The leader knows no epoch at or below the follower's last fetched one, or the fetch
    /// is below the leader's log start: Kafka answers OFFSET_OUT_OF_RANGE and the follower
    /// starts over from the leader's log start.
    #[error("the follower's position cannot be matched against the leader's epochs")]
    OutOfRange,
}

/// The leader's check of a follower's Fetch (Kafka's `Partition.readRecords` with a
/// `lastFetchedEpoch`): `leader_answer` is the leader's `end_offset_for(last_fetched_epoch)`.
/// The follower's log diverged if the leader ended that epoch earlier (or knows it only by
/// a smaller one); the answer then carries where, and no records.
pub fn diverging_epoch(
    leader_answer: EpochEnd,
    last_fetched_epoch: i32,
    fetch_offset: i64,
    leader_log_start: i64,
) -> Result<Option<EpochEnd>, DivergenceError> {
    if leader_answer.is_undefined() || fetch_offset < leader_log_start {
        return Err(DivergenceError::OutOfRange);
    }
    let diverged =
        leader_answer.epoch < last_fetched_epoch || leader_answer.end_offset < fetch_offset;
    Ok(diverged.then_some(leader_answer))
}

/// Where a follower truncates, and whether that settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub offset: i64,
    /// False when the follower did not know the leader's epoch: it truncates to the end of
    /// its own largest epoch below, then asks again (the next fetch carries its new last
    /// epoch).
    pub completed: bool,
}

/// The follower's truncation for the leader's answer (Kafka's
/// `AbstractFetcherThread.getOffsetTruncationState`): `local_answer` is the follower's own
/// `end_offset_for(leader.epoch)`, `log_end` its log end, `fetch_offset` where it fetches.
pub fn truncation_for(
    leader: EpochEnd,
    local_answer: EpochEnd,
    log_end: i64,
    fetch_offset: i64,
) -> Truncation {
    if leader.end_offset == UNDEFINED_EPOCH_OFFSET {
        // The leader knows nothing to compare with: keep what the fetch position says.
        return Truncation {
            offset: fetch_offset,
            completed: true,
        };
    }
    if leader.epoch == UNDEFINED_EPOCH || local_answer.is_undefined() {
        // Either side has no epoch to compare (no history here yet): the leader's end
        // offset bounds what can be kept.
        return Truncation {
            offset: leader.end_offset.min(log_end),
            completed: true,
        };
    }
    if local_answer.epoch != leader.epoch {
        // This replica never saw the leader's epoch: cut to the end of its own largest
        // epoch below it, and ask again.
        return Truncation {
            offset: local_answer.end_offset.min(log_end),
            completed: false,
        };
    }
    Truncation {
        offset: local_answer.end_offset.min(leader.end_offset).min(log_end),
        completed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::epochs::LeaderEpochCache;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for (e, o) in entries {
            c.assign(*e, *o).unwrap();
        }
        c
    }

    /// Runs the Fetch-borne protocol to its end: the follower fetches with its last epoch,
    /// the leader answers a divergence or not, the follower truncates; returns the offset
    /// the follower ends up fetching from.
    fn settle(
        leader: &LeaderEpochCache,
        leader_leo: i64,
        follower: &mut LeaderEpochCache,
        leo: i64,
    ) -> i64 {
        let mut leo = leo;
        for _ in 0..10 {
            let Some(last) = follower.latest_epoch() else {
                return leo;
            };
            let answer = EpochEnd::from_pair(leader.end_offset_for(last, leader_leo));
            match diverging_epoch(answer, last, leo, 0).unwrap() {
                None => return leo,
                Some(div) => {
                    let local = EpochEnd::from_pair(follower.end_offset_for(div.epoch, leo));
                    let t = truncation_for(div, local, leo, leo);
                    leo = t.offset;
                    follower.truncate_from_end(leo);
                }
            }
        }
        panic!("no agreement in 10 rounds");
    }

    /// KIP-101's scenario: the follower has an epoch-1 tail the new leader never got.
    #[test]
    fn a_tail_from_a_lost_leadership_is_cut() {
        // Leader: epoch 0 [0,5), epoch 2 from 5. Follower: epoch 0 [0,5), epoch 1 [5,8).
        let leader = cache(&[(0, 0), (2, 5)]);
        let mut follower = cache(&[(0, 0), (1, 5)]);
        assert_eq!(settle(&leader, 9, &mut follower, 8), 5);
        assert_eq!(follower.latest_epoch(), Some(0));
    }

    #[test]
    fn a_follower_ahead_within_the_same_epoch_is_cut_to_the_leaders_end() {
        // Both in epoch 3, the follower has [10,12) that the leader lost before taking over
        // again in epoch 4.
        let leader = cache(&[(3, 0), (4, 10)]);
        let mut follower = cache(&[(3, 0)]);
        assert_eq!(settle(&leader, 15, &mut follower, 12), 10);
    }

    #[test]
    fn a_follower_behind_in_the_leaders_epoch_keeps_everything() {
        let leader = cache(&[(0, 0), (2, 5)]);
        let mut follower = cache(&[(0, 0), (2, 5)]);
        assert_eq!(settle(&leader, 20, &mut follower, 7), 7);
        // Behind in an older epoch too.
        let mut follower = cache(&[(0, 0)]);
        assert_eq!(settle(&leader, 20, &mut follower, 3), 3);
    }

    #[test]
    fn an_epoch_the_follower_never_saw_takes_two_rounds() {
        // The leader answers with epoch 1, which the follower never had: it truncates to the
        // end of its epoch 0 first, then learns that the leader's epoch 0 ended at 4.
        let leader = cache(&[(0, 0), (1, 4), (5, 6)]);
        let mut follower = cache(&[(0, 0), (3, 5)]);
        let answer = EpochEnd::from_pair(leader.end_offset_for(3, 10));
        assert_eq!(answer, EpochEnd::new(1, 6));
        let div = diverging_epoch(answer, 3, 8, 0).unwrap().unwrap();
        let local = EpochEnd::from_pair(follower.end_offset_for(div.epoch, 8));
        assert_eq!(local, EpochEnd::new(0, 5));
        assert_eq!(
            truncation_for(div, local, 8, 8),
            Truncation {
                offset: 5,
                completed: false
            }
        );
        assert_eq!(settle(&leader, 10, &mut follower, 8), 4);
    }

    #[test]
    fn the_leader_refuses_positions_it_cannot_place() {
        let leader = cache(&[(4, 100)]);
        let answer = EpochEnd::from_pair(leader.end_offset_for(2, 150));
        assert_eq!(
            answer,
            EpochEnd::new(2, 100),
            "below every epoch: ends at the first"
        );
        assert_eq!(diverging_epoch(answer, 2, 120, 100), Ok(Some(answer)));
        assert_eq!(
            diverging_epoch(answer, 2, 90, 100),
            Err(DivergenceError::OutOfRange),
            "below the leader's log start"
        );
        let unknown = EpochEnd::from_pair(leader.end_offset_for(7, 150));
        assert_eq!(
            diverging_epoch(unknown, 7, 120, 100),
            Err(DivergenceError::OutOfRange)
        );
    }
}
