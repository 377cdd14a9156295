//! Timestamps at the edges of time: every windowed operator (time, session and sliding
//! windows, suppression, stream-stream joins) takes arbitrary timestamps — 0, near
//! `i64::MAX`, out of order — without overflowing, hanging or panicking, and what it counts
//! still adds up (every record is in a window's count or counted as dropped). Kafka Streams
//! shipped a stream-thread hang from an overflow in punctuation scheduling; the core's
//! punctuation has its own property in `rill-core`'s tests.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use rill_dsl::prelude::*;
use rill_dsl::testing::TestDriver;

fn ms(n: i64) -> Duration {
    Duration::from_millis(n as u64)
}

/// Timestamps from the three regions where arithmetic breaks: near 0, near `i64::MAX`, and
/// anywhere (none negative: the task's timestamp policy turns those away, tested below).
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..50, (i64::MAX - 50)..=i64::MAX, 0..=i64::MAX,]
}

/// Window sizes, gaps and graces: small, or so large that `t + size` overflows.
fn span() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..20, (i64::MAX / 2)..=i64::MAX]
}

fn pipe_all(d: &mut TestDriver, keys: &[(u8, i64)]) {
    for (k, ts) in keys {
        d.pipe("input", &format!("k{}", k % 3), &"v".to_string(), *ts)
            .unwrap_or_else(|e| panic!("record at {ts}: {e}"));
    }
}

/// The latest count of each window (a tombstone removes it), summed.
fn final_total(d: &mut TestDriver) -> i64 {
    let mut latest = BTreeMap::new();
    for r in d.read_windowed::<String, i64>("out").unwrap() {
        let w = (r.key.key, r.key.window.start, r.key.window.end);
        match r.value {
            Some(n) => latest.insert(w, n),
            None => latest.remove(&w),
        };
    }
    latest.values().sum()
}

fn count_over(windows: TimeWindows) -> TestDriver {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(windows)
        .count()
        .to_stream()
        .to("out");
    TestDriver::new(&b.build().unwrap(), 1).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Tumbling: each record is in one window's count, or dropped as late once.
    #[test]
    fn tumbling_counts_add_up(
        records in prop::collection::vec((any::<u8>(), timestamp()), 1..40),
        size in span(),
        grace in span(),
    ) {
        let mut d = count_over(TimeWindows::of_size_with_grace(ms(size), ms(grace)));
        pipe_all(&mut d, &records);
        let late = d.dropped().get(DropReason::LateWindow) as i64;
        prop_assert_eq!(final_total(&mut d) + late, records.len() as i64);
    }

    /// Hopping: each record is in every window holding it, or dropped once per closed one.
    #[test]
    fn hopping_counts_add_up(
        records in prop::collection::vec((any::<u8>(), timestamp()), 1..40),
        size in span(),
        advance_part in 1i64..=4,
        grace in span(),
    ) {
        let advance = (size / advance_part).max(1);
        let windows = TimeWindows::of_size_with_grace(ms(size), ms(grace)).advance_by(ms(advance));
        let memberships: i64 = records.iter().map(|(_, t)| windows.starts(*t).len() as i64).sum();
        let mut d = count_over(windows);
        pipe_all(&mut d, &records);
        let late = d.dropped().get(DropReason::LateWindow) as i64;
        prop_assert_eq!(final_total(&mut d) + late, memberships);
    }

    /// Sessions: merges sum their counts, so the live sessions hold every record not dropped.
    #[test]
    fn session_counts_add_up(
        records in prop::collection::vec((any::<u8>(), timestamp()), 1..40),
        gap in span(),
        grace in span(),
    ) {
        let b = StreamsBuilder::new();
        b.stream::<String, String>("input")
            .group_by_key()
            .windowed_by(SessionWindows::of_inactivity_gap_and_grace(ms(gap), ms(grace)))
            .count()
            .to_stream()
            .to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        pipe_all(&mut d, &records);
        let late = d.dropped().get(DropReason::LateSession) as i64;
        // Sessions expired from the store keep their last count in the output.
        prop_assert_eq!(final_total(&mut d) + late, records.len() as i64);
    }

    /// Sliding windows, suppressed until they close: windows span the time difference, and
    /// each is emitted once.
    #[test]
    fn sliding_windows_stay_in_bounds(
        records in prop::collection::vec((any::<u8>(), timestamp()), 1..30),
        difference in span(),
        grace in span(),
    ) {
        let b = StreamsBuilder::new();
        let counts = b
            .stream::<String, String>("input")
            .group_by_key()
            .windowed_by(SlidingWindows::of_time_difference_and_grace(ms(difference), ms(grace)))
            .count();
        counts.to_stream().to("out");
        counts.suppress(Suppressed::until_time_limit(ms(grace))).to_stream().to("limited");
        let b2 = StreamsBuilder::new();
        b2.stream::<String, String>("input")
            .group_by_key()
            .windowed_by(SlidingWindows::of_time_difference_and_grace(ms(difference), ms(grace)))
            .emit_strategy(EmitStrategy::OnWindowClose)
            .count()
            .to_stream()
            .to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        pipe_all(&mut d, &records);
        for r in d.read_windowed::<String, i64>("out").unwrap() {
            let w = r.key.window;
            prop_assert!(w.start >= 0);
            prop_assert_eq!(w.end, w.start.saturating_add(difference));
            prop_assert!(r.value.unwrap_or(0) >= 1);
        }
        let mut d = TestDriver::new(&b2.build().unwrap(), 1).unwrap();
        pipe_all(&mut d, &records);
        let mut seen = std::collections::BTreeSet::new();
        for r in d.read_windowed::<String, i64>("out").unwrap() {
            prop_assert!(seen.insert((r.key.key, r.key.window.start)), "a window emitted twice");
        }
    }

    /// Stream-stream joins and their outer buffers, with windows that reach past the end of
    /// time.
    #[test]
    fn stream_joins_take_any_timestamp(
        records in prop::collection::vec((any::<bool>(), any::<u8>(), timestamp()), 1..40),
        before in span(),
        after in span(),
        grace in span(),
    ) {
        let b = StreamsBuilder::new();
        let left = b.stream::<String, String>("left");
        let right = b.stream::<String, String>("right");
        let w = JoinWindows::of_time_difference_and_grace(ms(before), ms(grace)).after(ms(after));
        left.outer_join(&right, |l, r| format!("{l:?}+{r:?}"), w).to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        for (side, k, ts) in &records {
            let topic = if *side { "left" } else { "right" };
            d.pipe(topic, &format!("k{}", k % 3), &"v".to_string(), *ts).unwrap();
        }
        let out = d.read::<String, String>("out").unwrap();
        let late = d.dropped().get(DropReason::LateJoin) as usize;
        // Every record is joined, emitted alone, waiting for its window to close, or late.
        prop_assert!(late <= records.len());
        prop_assert!(out.iter().all(|r| r.value.is_some()));
    }
}

/// A negative timestamp is an error under the default policy (Kafka's
/// `FailOnInvalidTimestamp`), never a panic, and nothing is counted for it.
#[test]
fn a_negative_timestamp_is_an_error_not_a_panic() {
    let mut d = count_over(TimeWindows::of_size_no_grace(ms(10)));
    assert!(d
        .pipe("input", &"k".to_string(), &"v".to_string(), -5)
        .is_err());
    assert_eq!(d.dropped().total(), 0);
}
