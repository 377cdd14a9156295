//! Exact outputs of windowed aggregations: Kafka's documented window examples, grace and
//! late records, hopping windows a record is partly too late for, output timestamps,
//! suppression, sessions with retractions, and sliding windows.

use std::time::Duration;

use rill_dsl::prelude::*;
use rill_dsl::testing::{TestDriver, TestRecord};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// (key, window start, window end, count or none, timestamp) of windowed output.
type Row = (String, i64, i64, Option<i64>, i64);

fn rows(out: Vec<TestRecord<Windowed<String>, i64>>) -> Vec<Row> {
    out.into_iter()
        .map(|r| {
            (
                r.key.key,
                r.key.window.start,
                r.key.window.end,
                r.value,
                r.timestamp,
            )
        })
        .collect()
}

fn row(k: &str, start: i64, end: i64, n: i64, ts: i64) -> Row {
    (k.to_string(), start, end, Some(n), ts)
}

fn tombstone(k: &str, start: i64, end: i64, ts: i64) -> Row {
    (k.to_string(), start, end, None, ts)
}

/// `input` (String -> String) counted per key in `windows`, written to `out`.
fn counting(windows: TimeWindows) -> TestDriver {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(windows)
        .count()
        .to_stream()
        .to("out");
    TestDriver::new(&b.build().unwrap(), 1).unwrap()
}

fn pipe(d: &mut TestDriver, key: &str, ts: i64) {
    d.pipe("input", &key.to_string(), &"v".to_string(), ts)
        .unwrap();
}

#[test]
fn tumbling_window_of_size_12_puts_21_in_12_to_24() {
    let mut d = counting(TimeWindows::of_size_no_grace(ms(12)));
    pipe(&mut d, "k", 21);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("k", 12, 24, 1, 21)]
    );
}

#[test]
fn hopping_windows_of_size_12_advance_5_put_21_in_three_windows() {
    let mut d = counting(TimeWindows::of_size_no_grace(ms(12)).advance_by(ms(5)));
    pipe(&mut d, "k", 21);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("k", 10, 22, 1, 21),
            row("k", 15, 27, 1, 21),
            row("k", 20, 32, 1, 21)
        ]
    );
    // No window starts below 0.
    let mut d = counting(TimeWindows::of_size_no_grace(ms(12)).advance_by(ms(5)));
    pipe(&mut d, "z", 3);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("z", 0, 12, 1, 3)]
    );
}

#[test]
fn grace_admits_late_records_until_the_window_closes() {
    let mut d = counting(TimeWindows::of_size_with_grace(ms(10), ms(5)));
    for ts in [1, 12, 4, 2, 16, 3, 19] {
        pipe(&mut d, "a", ts);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("a", 0, 10, 1, 1),
            row("a", 10, 20, 1, 12),
            // Stream time 12, close 7: [0, 10) is still open. The output timestamp is the
            // largest record timestamp in the window.
            row("a", 0, 10, 2, 4),
            row("a", 0, 10, 3, 4),
            row("a", 10, 20, 2, 16),
            // a@3 arrives at stream time 16 (close 11 >= 10): dropped.
            row("a", 10, 20, 3, 19),
        ]
    );
}

/// A cache too small for anything evicts every window after each record: the next update of
/// a window reads what the store holds (a miss is not taken for a new window).
#[test]
fn windows_evicted_from_a_full_cache_are_read_back_from_the_store() {
    let mut d = counting(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(5)));
    d.set_cache_max_bytes(1);
    d.set_auto_commit(false);
    for ts in [6, 7, 11] {
        pipe(&mut d, "a", ts);
    }
    d.commit().unwrap();
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("a", 0, 10, 1, 6),
            row("a", 5, 15, 1, 6),
            row("a", 0, 10, 2, 7),
            row("a", 5, 15, 2, 7),
            row("a", 5, 15, 3, 11),
            row("a", 10, 20, 1, 11),
        ]
    );
}

#[test]
fn a_record_too_late_for_one_hopping_window_still_updates_the_others() {
    let mut d = counting(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(5)));
    pipe(&mut d, "a", 14);
    pipe(&mut d, "a", 7);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("a", 5, 15, 1, 14),
            row("a", 10, 20, 1, 14),
            // [0, 10) closed at stream time 14; [5, 15) is open.
            row("a", 5, 15, 2, 14),
        ]
    );
}

thread_local! {
    static CLONES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A value that counts its copies (on this thread: the test driver runs here).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Counted(String);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.with(|c| c.set(c.get() + 1));
        Counted(self.0.clone())
    }
}

/// Copies of the value made while three records go through `op` over hopping windows of
/// size 10 advancing by 2 (five windows per record).
fn clones_through(
    op: impl FnOnce(rill_dsl::TimeWindowedKStream<String, Counted>) -> KTable<Windowed<String>, i64>,
) -> usize {
    let b = StreamsBuilder::new();
    let windowed = b
        .stream::<String, Counted>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(2)));
    op(windowed).to_stream().to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    CLONES.with(|c| c.set(0));
    for ts in [20, 21, 22] {
        d.pipe("input", &"k".to_string(), &Counted("v".into()), ts)
            .unwrap();
    }
    let n = CLONES.with(|c| c.get());
    // The driver commits after each record: each forwards its five windows.
    assert_eq!(d.read_windowed::<String, i64>("out").unwrap().len(), 15);
    n
}

/// A count reads no value: a hopping record's value is not copied for its windows. An
/// aggregator that takes values gets a copy in every window but the last, which takes
/// the record's own.
#[test]
fn a_count_copies_no_value_and_an_aggregate_one_per_extra_window() {
    assert_eq!(clones_through(|w| w.count()), 0);
    assert_eq!(
        clones_through(|w| w.aggregate(|| 0, |_, v: Counted, n| n + v.0.len() as i64)),
        3 * 4
    );
}

thread_local! {
    static DESERIALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// UTF-8 values that count how often they are built (checking them builds nothing).
struct CountingValues;

impl rill_dsl::Serde<String> for CountingValues {
    fn serialize(&self, value: &String) -> Result<Option<Vec<u8>>, rill_dsl::serdes::SerdeError> {
        Ok(Some(value.as_bytes().to_vec()))
    }
    fn deserialize(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<Option<String>, rill_dsl::serdes::SerdeError> {
        DESERIALIZED.with(|c| c.set(c.get() + 1));
        Ok(bytes.map(|b| String::from_utf8_lossy(b).into_owned()))
    }
    fn check(&self, bytes: Option<&[u8]>) -> Result<bool, rill_dsl::serdes::SerdeError> {
        Ok(bytes.is_some())
    }
}

/// Values built for three records and a null one through `op` on the source stream; and
/// the windows counted (the null value is skipped either way).
fn values_built(op: impl FnOnce(&KStream<String, String>)) -> (usize, usize) {
    let b = StreamsBuilder::new();
    let input = b.stream_with(
        "input",
        Consumed::with(
            rill_dsl::serdes::auto::<String>(),
            std::sync::Arc::new(CountingValues),
        ),
    );
    input
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)))
        .count()
        .to_stream()
        .to("out");
    op(&input);
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    DESERIALIZED.with(|c| c.set(0));
    for ts in [1, 2, 3] {
        pipe(&mut d, "k", ts);
    }
    d.pipe_tombstone("input", &"k".to_string(), 4).unwrap();
    let counted = d.read_windowed::<String, i64>("out").unwrap();
    (
        DESERIALIZED.with(|c| c.get()),
        counted.last().and_then(|r| r.value).unwrap_or(0) as usize,
    )
}

/// A source whose records only a count reads checks their values without building them;
/// with any other reader after it, it builds them as before.
#[test]
fn a_source_read_only_by_counts_does_not_build_its_values() {
    assert_eq!(values_built(|_| ()), (0, 3));
    assert_eq!(values_built(|s| s.to("copy")), (4, 3));
}

/// Windows past the store's retention (size + grace) leave the window store: a hopping
/// record's windows, each created by the record that opened it.
#[test]
fn windows_past_their_retention_leave_the_window_store() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(5)))
        .count_with(Materialized::named("counts"))
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    let windows = |d: &mut TestDriver| {
        d.core()
            .store("input", 0, "counts")
            .unwrap()
            .all()
            .unwrap()
            .len()
    };
    pipe(&mut d, "a", 7);
    assert_eq!(windows(&mut d), 2, "[0, 10) and [5, 15)");
    // Stream time 12: [0, 10) is gone; a's [5, 15), b's [5, 15) and [10, 20) are there.
    pipe(&mut d, "b", 12);
    assert_eq!(windows(&mut d), 3);
    // Stream time 40: windows starting before 31 are gone; b's [35, 45) and [40, 50) stay.
    pipe(&mut d, "b", 40);
    assert_eq!(windows(&mut d), 2);
}

#[test]
fn stream_time_is_per_partition() {
    // With four partitions, keys on other partitions do not close each other's windows.
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)))
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 4).unwrap();
    // Find two keys on different partitions.
    let part = |k: &str| rill_log::client::partitioner::partition_for_key(k.as_bytes(), 4);
    let a = "a".to_string();
    let other = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| part(k) != part(&a))
        .unwrap();
    pipe(&mut d, &other, 100);
    pipe(&mut d, &a, 5);
    let out = rows(d.read_windowed("out").unwrap());
    assert_eq!(
        out,
        vec![row(&other, 100, 110, 1, 100), row("a", 0, 10, 1, 5)]
    );
}

#[test]
fn suppress_until_window_closes_emits_each_window_once() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_with_grace(ms(10), ms(5)))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (k, ts) in [("b", 4), ("a", 1), ("a", 3), ("a", 12), ("a", 14)] {
        pipe(&mut d, k, ts);
    }
    // Stream time 14: [0, 10) closes at 10 + 5 = 15.
    assert!(d.read_windowed::<String, i64>("out").unwrap().is_empty());
    pipe(&mut d, "b", 15);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 0, 10, 2, 3), row("b", 0, 10, 1, 4)]
    );
    // Late for [0, 10): dropped by the aggregation, nothing more is emitted for it.
    pipe(&mut d, "a", 2);
    pipe(&mut d, "a", 25);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 10, 20, 2, 14), row("b", 10, 20, 1, 15)]
    );
}

/// A hopping count behind `suppress(until_window_closes)`, caching on, committed only when
/// the test says.
fn suppressed_hopping_count(size: u64, advance: u64, grace: u64) -> TestDriver {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_with_grace(ms(size), ms(grace)).advance_by(ms(advance)))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.set_auto_commit(false);
    d
}

#[test]
fn suppress_sees_cached_updates_in_the_order_of_their_last_update() {
    let mut d = suppressed_hopping_count(10, 5, 2);
    pipe(&mut d, "a", 6);
    d.commit().unwrap();
    // [10, 20) and [15, 25) are updated first, then [5, 15) by a record late but within
    // grace (stream time 16: [5, 15) closes at 17), then [10, 20) and [15, 25) again, at 17.
    // Forwarded in the order of first updates, [10, 20) at 17 would close [5, 15) in the
    // suppression buffer while its update to 2 was still in the cache: emitted twice.
    for ts in [16, 14, 17] {
        pipe(&mut d, "a", ts);
    }
    d.commit().unwrap();
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 0, 10, 1, 6), row("a", 5, 15, 2, 14)]
    );
}

/// Whatever the commit points, a suppressed hopping count emits each window once, with the
/// count of the records in it (records at most 1.5 s late, grace 2 s: none dropped).
#[test]
fn suppress_emits_each_window_once_with_its_count_whatever_the_commits() {
    const SIZE: i64 = 10_000;
    const ADVANCE: i64 = 5_000;
    let mut state = 1u64;
    let mut below = |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    for _ in 0..10 {
        let mut d = suppressed_hopping_count(SIZE as u64, ADVANCE as u64, 2_000);
        let mut expected = std::collections::BTreeMap::new();
        let mut got = Vec::new();
        for i in 0..3_000i64 {
            let late = if below(10) == 0 {
                below(1_500) as i64
            } else {
                0
            };
            let ts = (i * 10 - late).max(0);
            let key = ["a", "b", "c", "d"][below(4) as usize];
            let mut start = ts - ts % ADVANCE;
            while start >= 0 && start > ts - SIZE {
                *expected.entry((key.to_string(), start)).or_insert(0) += 1;
                start -= ADVANCE;
            }
            pipe(&mut d, key, ts);
            if below(40) == 0 {
                d.commit().unwrap();
            }
        }
        // Past every window's close, for each key.
        for key in ["a", "b", "c", "d"] {
            pipe(&mut d, key, 40_000);
        }
        d.commit().unwrap();
        for r in d.read_windowed::<String, i64>("out").unwrap() {
            if r.key.window.start < 35_000 {
                got.push(((r.key.key, r.key.window.start), r.value.unwrap()));
            }
        }
        let once: std::collections::BTreeMap<_, _> = got.iter().cloned().collect();
        assert_eq!(got.len(), once.len(), "a window was emitted twice: {got:?}");
        assert_eq!(once, expected);
    }
}

#[test]
fn emit_strategy_on_window_close_gives_final_results() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)))
        .emit_strategy(EmitStrategy::OnWindowClose)
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for ts in [1, 2, 9, 10] {
        pipe(&mut d, "a", ts);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 0, 10, 3, 9)]
    );
}

#[test]
fn sessions_merge_and_retract_as_in_kafkas_docs() {
    let min = 60_000;
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_and_grace(
            Duration::from_secs(300),
            Duration::from_secs(3600),
        ))
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (k, t) in [
        ("green", 0),
        ("green", 6),
        ("blue", 2),
        ("green", 4),
        ("blue", 5),
        ("blue", 11),
    ] {
        pipe(&mut d, k, t * min);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("green", 0, 0, 1, 0),
            row("green", 6 * min, 6 * min, 1, 6 * min),
            row("blue", 2 * min, 2 * min, 1, 2 * min),
            // green@4 joins both green sessions: each is retracted, the merged one emitted.
            tombstone("green", 0, 0, 0),
            tombstone("green", 6 * min, 6 * min, 6 * min),
            row("green", 0, 6 * min, 3, 6 * min),
            tombstone("blue", 2 * min, 2 * min, 2 * min),
            row("blue", 2 * min, 5 * min, 2, 5 * min),
            row("blue", 11 * min, 11 * min, 1, 11 * min),
        ]
    );
}

#[test]
fn sessions_drop_records_whose_session_has_closed() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(ms(5)))
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "a", 10);
    pipe(&mut d, "a", 30);
    // Stream time 30: a session ending at 12 < 30 is closed.
    pipe(&mut d, "a", 12);
    // Inside the open session [30, 30]: same window, so an update, not a retraction.
    pipe(&mut d, "a", 30);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("a", 10, 10, 1, 10),
            row("a", 30, 30, 1, 30),
            row("a", 30, 30, 2, 30)
        ]
    );
}

#[test]
fn sliding_windows_update_left_and_right_windows() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_and_grace(
            ms(10),
            ms(100),
        ))
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for ts in [15, 18, 30, 22] {
        pipe(&mut d, "a", ts);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            // a@15: its left window.
            row("a", 5, 15, 1, 15),
            // a@18: the right window of 15 appears, then its own left window [8, 18] ([5, 15]
            // does not hold 18 and stays as it is). New windows come in Kafka Streams' order:
            // the previous record's right window, the left window, the own right window.
            row("a", 16, 26, 1, 18),
            row("a", 8, 18, 2, 18),
            // a@30: its left window [20, 30] holds only itself; the right window of 18
            // ([19, 29]) does not hold 30.
            row("a", 20, 30, 1, 30),
            // a@22 (out of order): the windows holding 22 that exist change first, newest
            // start first; then the new ones: the right window of 18 ([19, 29]), the left
            // window [12, 22], and the right window of 22 ([23, 33]), which holds 30.
            row("a", 20, 30, 2, 30),
            row("a", 16, 26, 2, 22),
            row("a", 19, 29, 1, 22),
            row("a", 12, 22, 3, 22),
            row("a", 23, 33, 1, 30),
        ]
    );
}

#[test]
fn suppressed_sessions_close_a_gap_after_their_end() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(ms(5)))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "a", 0);
    pipe(&mut d, "a", 3);
    pipe(&mut d, "a", 7);
    // Stream time 7: the retraction of [0, 0] is due (0 + 5 <= 7), and dropped: final
    // results carry no deletions (KTableSuppressProcessorTest.
    // finalResultsShouldDropTombstonesForSessionWindows). [0, 7] could still grow until
    // stream time reaches 7 + 5.
    assert!(rows(d.read_windowed("out").unwrap()).is_empty());
    pipe(&mut d, "b", 12);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 0, 7, 3, 7)]
    );
}

#[test]
fn sliding_windows_count_records_with_equal_timestamps() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_with_no_grace(ms(10)))
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "a", 25);
    pipe(&mut d, "a", 25);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 15, 25, 1, 25), row("a", 15, 25, 2, 25)]
    );
}

#[test]
fn a_corrupt_suppression_buffer_is_an_error_not_a_panic() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)))
        .count()
        .suppress(Suppressed::until_window_closes().named("buffer"))
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "a", 1);
    // A key too short for `T | time | key`, inside the range of due entries.
    d.core()
        .store("input", 0, "buffer")
        .unwrap()
        .put(b"T\x80", b"x")
        .unwrap();
    let err = d
        .pipe("input", &"a".to_string(), &"v".to_string(), 30)
        .unwrap_err();
    assert!(err.to_string().contains("short key"), "{err}");
}

/// With the record cache holding updates until the commit, a commit forwards each updated
/// window once, with its latest count and timestamp, windows in the order first updated.
#[test]
fn the_record_cache_forwards_each_hopping_window_once_per_commit() {
    let mut d = counting(TimeWindows::of_size_no_grace(ms(12)).advance_by(ms(5)));
    d.set_auto_commit(false);
    pipe(&mut d, "k", 21);
    pipe(&mut d, "k", 23);
    pipe(&mut d, "k", 26);
    assert_eq!(rows(d.read_windowed("out").unwrap()), vec![]);
    d.commit().unwrap();
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("k", 10, 22, 1, 21),
            row("k", 15, 27, 3, 26),
            row("k", 20, 32, 3, 26),
            row("k", 25, 37, 1, 26),
        ]
    );
    pipe(&mut d, "k", 24);
    d.commit().unwrap();
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("k", 15, 27, 4, 26), row("k", 20, 32, 4, 26)]
    );
}

// ---------------------------------------------------------------------------------------
// Kafka Streams' own unit tests, ported: same inputs, same expected records and drops.
// ---------------------------------------------------------------------------------------

/// `input` counted per key in session windows, written to `out` (and, suppressed until the
/// sessions close, to `final` when `suppressed`).
fn session_counting(windows: SessionWindows, materialized: Materialized) -> TestDriver {
    let b = StreamsBuilder::new();
    let counts = b
        .stream::<String, String>("input")
        .group_by_key()
        .windowed_by(windows)
        .count_with(materialized);
    counts.to_stream().to("out");
    counts
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("final");
    TestDriver::new(&b.build().unwrap(), 1).unwrap()
}

fn late(d: &TestDriver, reason: DropReason) -> u64 {
    d.dropped().get(reason)
}

/// KStreamSessionWindowAggregateProcessorTest.shouldLogAndMeterWhenSkippingLateRecordWithZeroGrace:
/// a session closes at `stream time - grace - gap`.
#[test]
fn kafka_session_late_record_with_zero_grace() {
    let mut d = session_counting(
        SessionWindows::of_inactivity_gap_and_grace(ms(10), ms(0)),
        Materialized::default(),
    );
    pipe(&mut d, "dummy", 0);
    pipe(&mut d, "OnTime1", 0);
    pipe(&mut d, "dummy", 11);
    // Close 11 - 0 - 10 = 1: a session ending at 0 is closed.
    pipe(&mut d, "Late1", 0);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("dummy", 0, 0, 1, 0),
            row("OnTime1", 0, 0, 1, 0),
            row("dummy", 11, 11, 1, 11),
        ]
    );
    assert_eq!(late(&d, DropReason::LateSession), 1);
    assert_eq!(d.dropped().total(), 1);
}

/// KStreamSessionWindowAggregateProcessorTest.shouldLogAndMeterWhenSkippingLateRecordWithNonzeroGrace.
#[test]
fn kafka_session_late_record_with_nonzero_grace() {
    let mut d = session_counting(
        SessionWindows::of_inactivity_gap_and_grace(ms(10), ms(1)),
        Materialized::default(),
    );
    pipe(&mut d, "dummy", 0);
    pipe(&mut d, "OnTime1", 0);
    pipe(&mut d, "dummy", 11);
    // Close 11 - 1 - 10 = 0: a session ending at 0 is still open.
    pipe(&mut d, "OnTime2", 0);
    pipe(&mut d, "dummy", 12);
    // Close 12 - 1 - 10 = 1.
    pipe(&mut d, "Late1", 0);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("dummy", 0, 0, 1, 0),
            row("OnTime1", 0, 0, 1, 0),
            row("dummy", 11, 11, 1, 11),
            row("OnTime2", 0, 0, 1, 0),
            tombstone("dummy", 11, 11, 11),
            row("dummy", 11, 12, 2, 12),
        ]
    );
    assert_eq!(late(&d, DropReason::LateSession), 1);
}

/// The case (gap 10, grace 1, stream time 11: records at 0 and 9 are on time), and
/// a record that is late alone but joins a session still open.
#[test]
fn kafka_session_lateness_is_judged_on_the_merged_session() {
    let mut d = session_counting(
        SessionWindows::of_inactivity_gap_and_grace(ms(10), ms(1)),
        Materialized::default(),
    );
    pipe(&mut d, "t", 11);
    pipe(&mut d, "a", 0);
    pipe(&mut d, "b", 9);
    pipe(&mut d, "t", 14);
    // Close 14 - 11 = 3: b@0 alone would be late, but it joins [9, 9].
    pipe(&mut d, "b", 0);
    // a@0's session [0, 0] ended before 3: late.
    pipe(&mut d, "a", 0);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("t", 11, 11, 1, 11),
            row("a", 0, 0, 1, 0),
            row("b", 9, 9, 1, 9),
            tombstone("t", 11, 11, 11),
            row("t", 11, 14, 2, 14),
            tombstone("b", 9, 9, 9),
            row("b", 0, 9, 2, 9),
        ]
    );
    assert_eq!(late(&d, DropReason::LateSession), 1);
}

/// KStreamSessionWindowAggregateProcessorTest.shouldImmediatelyForwardRemovedSessionsWhenMerging
/// and shouldImmediatelyForwardNewSessionWhenNonCachedStore.
#[test]
fn kafka_session_merge_forwards_the_removed_session_first() {
    let mut d = session_counting(
        SessionWindows::of_inactivity_gap_with_no_grace(Duration::from_secs(300)),
        Materialized::default(),
    );
    for k in ["a", "b", "c"] {
        pipe(&mut d, k, 0);
    }
    pipe(&mut d, "a", 5);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("a", 0, 0, 1, 0),
            row("b", 0, 0, 1, 0),
            row("c", 0, 0, 1, 0),
            tombstone("a", 0, 0, 0),
            row("a", 0, 5, 2, 5),
        ]
    );
}

/// SuppressScenarioTest.shouldSupportFinalResultsForSessionWindows: a record inside a
/// session's bounds removes it and puts it anew (tombstone first), a late record is dropped
/// everywhere, and final results carry no tombstones.
#[test]
fn kafka_session_final_results() {
    let mut d = session_counting(
        SessionWindows::of_inactivity_gap_with_no_grace(ms(5)),
        Materialized::named("counts").with_caching_disabled(),
    );
    pipe(&mut d, "k1", 0);
    pipe(&mut d, "k1", 5);
    pipe(&mut d, "k1", 1);
    pipe(&mut d, "k2", 11);
    pipe(&mut d, "k1", 5);
    pipe(&mut d, "k1", 30);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("k1", 0, 0, 1, 0),
            tombstone("k1", 0, 0, 0),
            row("k1", 0, 5, 2, 5),
            tombstone("k1", 0, 5, 5),
            row("k1", 0, 5, 3, 5),
            row("k2", 11, 11, 1, 11),
            row("k1", 30, 30, 1, 30),
        ]
    );
    assert_eq!(
        rows(d.read_windowed("final").unwrap()),
        vec![row("k1", 0, 5, 3, 5), row("k2", 11, 11, 1, 11)]
    );
    assert_eq!(late(&d, DropReason::LateSession), 1);
}

/// A session stays in the store for its retention: by default gap + grace, longer when
/// `Materialized::with_retention` says so — and a record within the gap of a retained session
/// merges with it (AbstractSessionBytesStoreTest.shouldRemoveExpired and
/// shouldNotFetchExpiredSessions: expired sessions are not found; SessionStoreMaterializer:
/// a retention below gap + grace is refused). One deliberate difference, at the boundary: a
/// session ending exactly at `stream time - retention` is still found (see the README).
#[test]
fn kafka_session_retention_decides_what_a_record_can_merge_with() {
    for (retention, merged) in [(None, false), (Some(100), true)] {
        let m = match retention {
            None => Materialized::named("s"),
            Some(r) => Materialized::named("s").with_retention(ms(r)),
        };
        let mut d = session_counting(SessionWindows::of_inactivity_gap_with_no_grace(ms(10)), m);
        pipe(&mut d, "a", 0);
        // Stream time 20: close 10, and with the default retention (10) [0, 0] expired.
        pipe(&mut d, "b", 20);
        let stored = d
            .core()
            .store("input", 0, "s")
            .unwrap()
            .all()
            .unwrap()
            .len();
        assert_eq!(
            stored,
            if merged { 2 } else { 1 },
            "retention {retention:?}"
        );
        // a@10 is on time (its session would end at 10, not before the close at 10).
        pipe(&mut d, "a", 10);
        let want = if merged {
            vec![
                row("a", 0, 0, 1, 0),
                row("b", 20, 20, 1, 20),
                tombstone("a", 0, 0, 0),
                row("a", 0, 10, 2, 10),
            ]
        } else {
            vec![
                row("a", 0, 0, 1, 0),
                row("b", 20, 20, 1, 20),
                row("a", 10, 10, 1, 10),
            ]
        };
        assert_eq!(rows(d.read_windowed("out").unwrap()), want);
    }
    // Shorter than gap + grace: refused, as Kafka Streams refuses it.
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_and_grace(ms(10), ms(5)))
        .count_with(Materialized::named("s").with_retention(ms(14)))
        .to_stream()
        .to("out");
    assert!(b.build().is_err());
}

/// Kafka Streams' session `aggregate` starts from the initializer's value and merges every
/// session into it (`merger(init, first)`, then each next one).
#[test]
fn kafka_session_merges_start_from_the_initializer() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_and_grace(ms(15), ms(20)))
        .aggregate(
            || "0".to_string(),
            |_, v, acc| format!("{acc}+{v}"),
            |_, a, b| format!("{a}|{b}"),
        )
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    // "3"@15 joins both sessions: [0, 0] ends within the gap before it (and is kept for gap +
    // grace), [30, 30] starts within the gap after it.
    for (v, ts) in [("1", 0), ("2", 30), ("3", 15)] {
        d.pipe("input", &"k".to_string(), &v.to_string(), ts)
            .unwrap();
    }
    let out: Vec<(i64, i64, Option<String>)> = d
        .read_windowed::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.key.window.start, r.key.window.end, r.value))
        .collect();
    assert_eq!(
        out,
        vec![
            (0, 0, Some("0+1".into())),
            (30, 30, Some("0+2".into())),
            (0, 0, None),
            (30, 30, None),
            (0, 30, Some("0|0+1|0+2+3".into())),
        ]
    );
}

/// SuppressScenarioTest.shouldSuppressIntermediateEventsWithTimeLimit: the time limit
/// counts from a key's first buffered update (non-resetting).
#[test]
fn kafka_suppress_time_limit_does_not_restart_on_updates() {
    let b = StreamsBuilder::new();
    let counts = b
        .table::<String, String>("input")
        .group_by(|k, v| (v.clone(), k.clone()))
        .count();
    counts
        .suppress(Suppressed::until_time_limit(ms(2)))
        .to_stream()
        .to("output-suppressed");
    counts.to_stream().to("output-raw");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    let kv = |d: &mut TestDriver, k: &str, v: &str, ts: i64| {
        d.pipe("input", &k.to_string(), &v.to_string(), ts).unwrap()
    };
    let read = |d: &mut TestDriver, topic: &str| -> Vec<(String, Option<i64>, i64)> {
        d.read::<String, i64>(topic)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect()
    };
    let s = |k: &str, n: i64, ts: i64| (k.to_string(), Some(n), ts);
    kv(&mut d, "k1", "v1", 0);
    kv(&mut d, "k1", "v2", 1);
    kv(&mut d, "k2", "v1", 2);
    assert_eq!(
        read(&mut d, "output-raw"),
        vec![s("v1", 1, 0), s("v1", 0, 1), s("v2", 1, 1), s("v1", 1, 2)]
    );
    // v1 was first buffered at 0: due at 2 although updated at 1 and 2.
    assert_eq!(read(&mut d, "output-suppressed"), vec![s("v1", 1, 2)]);
    kv(&mut d, "tick", "tick", 3);
    assert_eq!(read(&mut d, "output-raw"), vec![s("tick", 1, 3)]);
    assert_eq!(read(&mut d, "output-suppressed"), vec![s("v2", 1, 1)]);
    kv(&mut d, "tick", "tock", 4);
    assert_eq!(
        read(&mut d, "output-raw"),
        vec![s("tick", 0, 4), s("tock", 1, 4)]
    );
    // tick was first buffered at 3: not due at 4.
    assert_eq!(read(&mut d, "output-suppressed"), vec![]);
}

/// KTableSuppressProcessorTest.suppressShouldNotDropTombstonesForSessionWindows: a time
/// limit forwards deletions (only final results drop them).
#[test]
fn kafka_suppress_time_limit_forwards_tombstones() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(ms(5)))
        .count()
        .suppress(Suppressed::until_time_limit(ms(0)))
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "k", 0);
    pipe(&mut d, "k", 3);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("k", 0, 0, 1, 0),
            tombstone("k", 0, 0, 0),
            row("k", 0, 3, 2, 3)
        ]
    );
}

/// KStreamWindowAggregateTest.shouldLogAndMeterWhenSkippingExpiredWindow (both emit
/// strategies): a hopping record too late for one window is counted once per closed window.
#[test]
fn kafka_time_windows_count_a_drop_per_closed_window() {
    for on_close in [false, true] {
        let b = StreamsBuilder::new();
        b.stream::<String, String>("input")
            .group_by_key()
            .windowed_by(TimeWindows::of_size_with_grace(ms(10), ms(90)).advance_by(ms(5)))
            .emit_strategy(if on_close {
                EmitStrategy::OnWindowClose
            } else {
                EmitStrategy::OnWindowUpdate
            })
            .count_with(Materialized::named("c").with_retention(ms(100)))
            .to_stream()
            .to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        for ts in [100, 0, 1, 2, 3, 4, 5, 6, 105, 106] {
            pipe(&mut d, "k", ts);
        }
        assert_eq!(late(&d, DropReason::LateWindow), 7, "on close {on_close}");
        let want = if on_close {
            // Close at 105 - 90 = 15: [5, 15) is final.
            vec![row("k", 5, 15, 2, 6)]
        } else {
            vec![
                row("k", 95, 105, 1, 100),
                row("k", 100, 110, 1, 100),
                row("k", 5, 15, 1, 5),
                row("k", 5, 15, 2, 6),
                row("k", 100, 110, 2, 105),
                row("k", 105, 115, 1, 105),
                row("k", 100, 110, 3, 106),
                row("k", 105, 115, 2, 106),
            ]
        };
        assert_eq!(
            rows(d.read_windowed("out").unwrap()),
            want,
            "on close {on_close}"
        );
    }
}

/// KStreamWindowAggregateTest.shouldLogAndMeterWhenSkippingExpiredWindowByGrace.
#[test]
fn kafka_time_windows_drop_records_past_grace() {
    let mut d = counting(TimeWindows::of_size_with_grace(ms(10), ms(90)).advance_by(ms(10)));
    for ts in [200, 100, 101, 102, 103, 104, 105, 6] {
        pipe(&mut d, "k", ts);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("k", 200, 210, 1, 200)]
    );
    assert_eq!(late(&d, DropReason::LateWindow), 7);
}

/// KStreamWindowAggregateTest.shouldLogAndMeterWhenSkippingNullKey: a null key cannot be
/// aggregated; it is counted as dropped.
#[test]
fn kafka_a_null_key_is_counted_as_dropped() {
    let mut d = counting(TimeWindows::of_size_no_grace(ms(10)));
    d.pipe_raw("input", None, Some("1".into()), 0).unwrap();
    assert!(d.read_windowed::<String, i64>("out").unwrap().is_empty());
    assert_eq!(late(&d, DropReason::NullKey), 1);
}

/// KStreamSlidingWindowAggregateTest.testNoGracePeriodSmallInput, ON_WINDOW_CLOSE (with a
/// count, see the README on sliding aggregates): a sliding window's end is in it, so it
/// closes once `end < stream time - grace`, and is emitted once.
#[test]
fn kafka_sliding_windows_emit_on_close_once() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_with_no_grace(ms(50)))
        .emit_strategy(EmitStrategy::OnWindowClose)
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for ts in [100, 105, 106, 103] {
        pipe(&mut d, "A", ts);
    }
    // Stream time 106: [56, 106] is not closed (its end is in it), and a@103 updates it.
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("A", 50, 100, 1, 100), row("A", 55, 105, 2, 105)]
    );
    for ts in [113, 110] {
        pipe(&mut d, "A", ts);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("A", 56, 106, 4, 106)]
    );
}

/// SuppressScenarioTest.shouldSupportFinalResultsForSlidingWindows: `suppress
/// (until_window_closes)` on sliding windows keeps Kafka's own rule (`end <= stream time -
/// grace`); raw updates compared as Kafka's test does, sorted by window and timestamp.
#[test]
fn kafka_sliding_windows_final_results() {
    let b = StreamsBuilder::new();
    let counts = b
        .stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_and_grace(ms(5), ms(15)))
        .count_with(Materialized::named("counts").with_caching_disabled());
    counts
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("output-suppressed");
    counts.to_stream().to("output-raw");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for ts in [10, 11, 10, 13, 10, 24, 5, 7, 90] {
        pipe(&mut d, "k1", ts);
    }
    let mut raw = rows(d.read_windowed("output-raw").unwrap());
    // Kafka's test sorts by the windowed key's text ("[k1@11/16]") and then timestamp.
    raw.sort_by_key(|(k, s, e, _, ts)| (format!("[{k}@{s}/{e}]"), *ts));
    assert_eq!(
        raw,
        vec![
            row("k1", 11, 16, 1, 11),
            row("k1", 11, 16, 2, 13),
            row("k1", 12, 17, 1, 13),
            row("k1", 19, 24, 1, 24),
            row("k1", 5, 10, 1, 10),
            row("k1", 5, 10, 2, 10),
            row("k1", 5, 10, 3, 10),
            row("k1", 5, 10, 4, 10),
            row("k1", 5, 10, 5, 10),
            row("k1", 6, 11, 2, 11),
            row("k1", 6, 11, 3, 11),
            row("k1", 6, 11, 4, 11),
            row("k1", 6, 11, 5, 11),
            row("k1", 8, 13, 4, 13),
            row("k1", 8, 13, 5, 13),
            row("k1", 85, 90, 1, 90),
        ]
    );
    assert_eq!(
        rows(d.read_windowed("output-suppressed").unwrap()),
        vec![
            row("k1", 5, 10, 5, 10),
            row("k1", 6, 11, 5, 11),
            row("k1", 8, 13, 5, 13),
            row("k1", 11, 16, 2, 13),
            row("k1", 12, 17, 1, 13),
            row("k1", 19, 24, 1, 24),
        ]
    );
}

/// One input record fanned out into two reaches a sliding aggregation as two records: both
/// count (the window buffer keys each apart).
#[test]
fn sliding_windows_count_each_record_fanned_out_from_one_input() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .flat_map_values(|v: String| vec![v.clone(), v])
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_with_no_grace(ms(10)))
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "k", 5);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("k", 0, 10, 1, 5), row("k", 0, 10, 2, 5)]
    );
}

/// Windows Kafka Streams refuses when they are made (TimeWindowsTest.windowSizeMustNotBeZero,
/// advanceIntervalMustNotBeZero, advanceIntervalMustNotBeLargerThanWindowSize;
/// SessionWindowsTest.windowSizeMustNotBeZero) are refused by `build`, with the reason.
#[test]
fn invalid_windows_are_refused_by_build() {
    let with = |w: TimeWindows| {
        let b = StreamsBuilder::new();
        b.stream::<String, String>("input")
            .group_by_key()
            .windowed_by(w)
            .count();
        b.build().map(|_| ()).map_err(|e| e.to_string())
    };
    let zero = with(TimeWindows::of_size_no_grace(ms(0))).unwrap_err();
    assert!(zero.contains("size must be more than zero"), "{zero}");
    let wide = with(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(11))).unwrap_err();
    assert!(wide.contains("advance (11 ms)"), "{wide}");
    assert!(with(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(0))).is_err());
    assert!(with(TimeWindows::of_size_no_grace(ms(10)).advance_by(ms(10))).is_ok());
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(ms(0)))
        .count();
    let gap = b.build().unwrap_err().to_string();
    assert!(gap.contains("inactivity gap"), "{gap}");
}

/// KStreamSlidingWindowAggregateTest.testEarlyRecordsSmallInput, both emit strategies (with
/// a count; Kafka's test compares each window's updates as a set): records before the time
/// difference share the window `[0, d]`.
#[test]
fn kafka_sliding_windows_early_records() {
    use std::collections::{BTreeMap, BTreeSet};
    for on_close in [false, true] {
        let b = StreamsBuilder::new();
        b.stream::<String, String>("input")
            .group_by_key()
            .windowed_by(SlidingWindows::of_time_difference_and_grace(ms(50), ms(0)))
            .emit_strategy(if on_close {
                EmitStrategy::OnWindowClose
            } else {
                EmitStrategy::OnWindowUpdate
            })
            .count()
            .to_stream()
            .to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        for ts in [0, 5, 6, 3, 13, 10, 70] {
            pipe(&mut d, "A", ts);
        }
        let mut got: BTreeMap<i64, BTreeSet<(i64, i64)>> = BTreeMap::new();
        for (_, start, end, n, ts) in rows(d.read_windowed("out").unwrap()) {
            assert_eq!(end, start + 50);
            got.entry(start).or_default().insert((n.unwrap(), ts));
        }
        let want: Vec<(i64, Vec<(i64, i64)>)> = if on_close {
            vec![
                (0, vec![(6, 13)]),
                (1, vec![(5, 13)]),
                (4, vec![(4, 13)]),
                (6, vec![(3, 13)]),
                (7, vec![(2, 13)]),
                (11, vec![(1, 13)]),
            ]
        } else {
            vec![
                (0, vec![(1, 0), (2, 5), (3, 6), (4, 6), (5, 13), (6, 13)]),
                (1, vec![(1, 5), (2, 6), (3, 6), (4, 13), (5, 13)]),
                (4, vec![(2, 6), (3, 13), (4, 13)]),
                (6, vec![(1, 6), (2, 13), (3, 13)]),
                (7, vec![(1, 13), (2, 13)]),
                (11, vec![(1, 13)]),
                (20, vec![(1, 70)]),
            ]
        };
        let want: BTreeMap<i64, BTreeSet<(i64, i64)>> = want
            .into_iter()
            .map(|(s, v)| (s, v.into_iter().collect()))
            .collect();
        assert_eq!(got, want, "on close {on_close}");
    }
}

/// A suppressed record goes on with the headers of its latest update, as Kafka Streams'
/// buffer keeps each record's context (KTableSuppressProcessorTest.
/// suppressShouldNotDropTombstonesForTimeWindows checks the headers too).
#[test]
fn suppression_keeps_the_headers_of_the_latest_update() {
    use bytes::Bytes;
    use rill_dsl::core::processor::Record;
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10)))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    type Headers = Vec<(String, Option<Bytes>)>;
    let record = |v: &str, ts, headers: Headers| Record {
        key: Some(Bytes::from("k")),
        value: Some(Bytes::from(v.to_string())),
        timestamp: ts,
        headers,
        typed: None,
    };
    let h = |v: &str| vec![("h".to_string(), Some(Bytes::from(v.to_string())))];
    d.core().pipe("input", record("a", 1, h("first"))).unwrap();
    d.core().pipe("input", record("b", 2, h("second"))).unwrap();
    // No headers: the entry keeps the short layout.
    d.core().pipe("input", record("c", 12, Vec::new())).unwrap();
    d.core().pipe("input", record("d", 25, Vec::new())).unwrap();
    let out = d.core().read_output("out");
    let seen: Vec<(i64, Headers)> = out
        .iter()
        .map(|o| (o.record.timestamp, o.record.headers.clone()))
        .collect();
    assert_eq!(seen, vec![(2, h("second")), (12, Vec::new())]);
}

/// KStreamSessionWindowAggregateProcessorTest.shouldHandleMultipleSessionsAndMerging,
/// ON_WINDOW_CLOSE: each session once, when stream time has passed its end by more than the
/// gap (no grace), with the session's end as timestamp.
#[test]
fn kafka_sessions_emit_on_close() {
    const GAP: i64 = 5 * 60 * 1000;
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(ms(
            GAP as u64
        )))
        .emit_strategy(EmitStrategy::OnWindowClose)
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (k, ts) in [
        ("a", 0),
        ("b", 0),
        ("c", 0),
        ("d", 0),
        ("d", GAP / 2),
        ("a", GAP + 1),
        ("b", GAP + 1),
        ("a", GAP + 1 + GAP / 2),
        ("c", GAP + 1 + GAP / 2),
    ] {
        pipe(&mut d, k, ts);
    }
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![
            row("a", 0, 0, 1, 0),
            row("b", 0, 0, 1, 0),
            row("c", 0, 0, 1, 0),
            row("d", 0, GAP / 2, 2, GAP / 2),
        ]
    );
    // At the boundary: at stream time 10 (gap 10) a record at 0 can still join [0, 0]
    // (its session would end at 0, not before the close at 0): not final yet.
    let b = StreamsBuilder::new();
    b.stream::<String, String>("input")
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(ms(10)))
        .emit_strategy(EmitStrategy::OnWindowClose)
        .count()
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    pipe(&mut d, "a", 0);
    pipe(&mut d, "b", 10);
    assert!(rows(d.read_windowed("out").unwrap()).is_empty());
    pipe(&mut d, "a", 0);
    pipe(&mut d, "b", 11);
    assert_eq!(
        rows(d.read_windowed("out").unwrap()),
        vec![row("a", 0, 0, 2, 0)]
    );
}
