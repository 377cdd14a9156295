//! Windows and windowed aggregations, with Kafka Streams' rules (`st` = stream time, the
//! largest timestamp the operator has seen):
//! - time windows (tumbling, hopping) are `[start, start + size)`, starts multiples of
//!   `advance` from epoch 0 and never below 0; a window takes updates while
//!   `end > st - grace`;
//! - sliding windows of difference `d` are `[t - d, t]` for each record (and `[t + 1, t + 1
//!   + d]` when that holds a record), both ends inclusive; a window takes updates while
//!   `end >= st - grace`;
//! - session windows merge every session with `end >= ts - gap` and `start <= ts + gap`;
//!   unless the merged session is the record's own instant `[ts, ts]`, every merged-away
//!   session is retracted with a tombstone (one with the merged bounds too) before the merged
//!   one is put anew; a record is late when the merged session ends before `st - grace -
//!   gap`, and sessions stay in the store while `end >= st - retention`.
//!
//! Join windows match records of two streams `before` and `after` each other's timestamps.

use std::time::Duration;

use crate::options::millis;

/// Tumbling (`advance == size`) or hopping time windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    pub size_ms: i64,
    pub advance_ms: i64,
    pub grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size` that accept records up to `grace` after they end.
    pub fn of_size_with_grace(size: Duration, grace: Duration) -> Self {
        let size_ms = millis(size);
        TimeWindows {
            size_ms,
            advance_ms: size_ms,
            grace_ms: millis(grace),
        }
    }

    /// Tumbling windows of `size` that close when they end.
    pub fn of_size_no_grace(size: Duration) -> Self {
        Self::of_size_with_grace(size, Duration::ZERO)
    }

    /// Hopping windows: a new one every `advance` (at most the size).
    pub fn advance_by(mut self, advance: Duration) -> Self {
        self.advance_ms = millis(advance);
        self
    }

    /// Why these windows cannot be used (Kafka Streams' rules: a size above zero, an advance
    /// above zero and at most the size), if they cannot.
    pub(crate) fn invalid(&self) -> Option<String> {
        if self.size_ms <= 0 {
            Some("time windows: the window size must be more than zero".into())
        } else if self.advance_ms <= 0 || self.advance_ms > self.size_ms {
            Some(format!(
                "time windows: the advance ({} ms) must be more than zero and at most the size \
                 ({} ms)",
                self.advance_ms, self.size_ms
            ))
        } else {
            None
        }
    }

    /// The starts of the windows holding `ts`, oldest first.
    pub fn starts(&self, ts: i64) -> impl ExactSizeIterator<Item = i64> {
        self.starts_above(ts, i64::MIN)
    }

    /// [`TimeWindows::starts`] above `floor` (exclusive): the windows of `ts` still open
    /// when those ending at or before `floor + size` are closed.
    fn starts_above(&self, ts: i64, floor: i64) -> impl ExactSizeIterator<Item = i64> {
        let (oldest, count) = self.span_above(ts, floor);
        let advance = self.advance_ms;
        (0..count).map(move |i| oldest + i as i64 * advance)
    }

    /// [`TimeWindows::starts_above`] as the oldest start and how many windows (each starting
    /// `advance` after the one before): nothing to collect for the usual one or few.
    pub(crate) fn span_above(&self, ts: i64, floor: i64) -> (i64, usize) {
        // The oldest window holding `ts` starts at the first multiple of `advance` above
        // `ts - size` (and not below 0, nor at or below `floor`); the newest at the last one
        // at or below `ts`.
        let (size, advance) = (self.size_ms, self.advance_ms);
        let newest = if ts < 0 { -1 } else { ts - ts % advance };
        let lowest = ts.saturating_sub(size).max(floor).max(-1);
        // Past the last multiple of `advance` that an i64 holds, no window starts.
        let Some(oldest) = (lowest.div_euclid(advance) + 1).checked_mul(advance) else {
            return (0, 0);
        };
        let oldest = oldest.max(0);
        // Counted, not stepped through an inclusive range: `RangeInclusive::step_by` costs
        // more than the few windows it yields.
        let count = if newest < oldest {
            0
        } else {
            usize::try_from((newest - oldest) / advance + 1).unwrap_or(0)
        };
        (oldest, count)
    }
}

/// Sliding windows: for each record at `t`, the window `[t - d, t]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub time_difference_ms: i64,
    pub grace_ms: i64,
}

impl SlidingWindows {
    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        SlidingWindows {
            time_difference_ms: millis(difference),
            grace_ms: millis(grace),
        }
    }

    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }
}

/// Session windows: records of a key less than `gap` apart share a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub gap_ms: i64,
    pub grace_ms: i64,
}

impl SessionWindows {
    pub fn of_inactivity_gap_and_grace(gap: Duration, grace: Duration) -> Self {
        SessionWindows {
            gap_ms: millis(gap),
            grace_ms: millis(grace),
        }
    }

    pub fn of_inactivity_gap_with_no_grace(gap: Duration) -> Self {
        Self::of_inactivity_gap_and_grace(gap, Duration::ZERO)
    }
}

/// When a windowed aggregation emits (Kafka Streams' `EmitStrategy`, KIP-825).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitStrategy {
    /// Every update of a window.
    #[default]
    OnWindowUpdate,
    /// Each window once, its final result, when it closes (`end + grace <= st`).
    OnWindowClose,
}

impl TimeWindows {
    /// What a time-windowed store keeps: windows for size + grace, or `retention` if longer.
    pub(crate) fn retention_ms(&self, retention: Option<i64>) -> i64 {
        self.size_ms
            .saturating_add(self.grace_ms)
            .max(retention.unwrap_or(0))
    }

    pub(crate) fn grace_ms(&self) -> i64 {
        self.grace_ms
    }
}

/// How far apart in time two records of a stream-stream join may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    pub before_ms: i64,
    pub after_ms: i64,
    pub grace_ms: i64,
}

impl JoinWindows {
    /// Records at most `difference` apart, either way; no grace: an unmatched record is
    /// emitted alone (left / outer joins) as soon as its window ends.
    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }

    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        JoinWindows {
            before_ms: millis(difference),
            after_ms: millis(difference),
            grace_ms: millis(grace),
        }
    }

    /// Right records up to `before` earlier than the left record.
    pub fn before(mut self, before: Duration) -> Self {
        self.before_ms = millis(before);
        self
    }

    /// Right records up to `after` later than the left record.
    pub fn after(mut self, after: Duration) -> Self {
        self.after_ms = millis(after);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The starts of the windows holding `ts`, by trying every multiple of `advance`.
    fn naive(size: i64, advance: i64, ts: i64) -> Vec<i64> {
        (0..=ts.max(0))
            .filter(|s| s % advance == 0 && *s <= ts && ts < s + size)
            .collect()
    }

    #[test]
    fn window_starts_are_every_aligned_window_holding_the_timestamp() {
        for size in 1..25 {
            for advance in 1..=size {
                let w = TimeWindows::of_size_no_grace(Duration::from_millis(size as u64))
                    .advance_by(Duration::from_millis(advance as u64));
                for ts in -3..120 {
                    let got: Vec<i64> = w.starts(ts).collect();
                    assert_eq!(
                        got,
                        naive(size, advance, ts),
                        "size {size} advance {advance} ts {ts}"
                    );
                    for floor in [i64::MIN, -5, 0, ts - size, ts - 3, ts, ts + 2] {
                        let got: Vec<i64> = w.starts_above(ts, floor).collect();
                        let want: Vec<i64> = naive(size, advance, ts)
                            .into_iter()
                            .filter(|s| *s > floor)
                            .collect();
                        assert_eq!(got, want, "size {size} advance {advance} ts {ts} > {floor}");
                    }
                }
            }
        }
    }
}
