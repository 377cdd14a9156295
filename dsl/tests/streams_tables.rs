//! Exact outputs of stateless stream operators, grouping with automatic repartitioning over
//! several partitions, tables with tombstones and repeats, table re-grouping with adder and
//! subtractor, and the checks `build` does.

use std::collections::BTreeMap;
use std::time::Duration;

use rill_dsl::prelude::*;
use rill_dsl::testing::TestDriver;

fn s(x: &str) -> String {
    x.to_string()
}

/// (key, count, timestamp) of what was written to `topic`.
fn counts_at(d: &mut TestDriver, topic: &str) -> Vec<(String, i64, i64)> {
    d.read::<String, i64>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap(), r.timestamp))
        .collect()
}

fn values(d: &mut TestDriver, topic: &str) -> Vec<(String, String)> {
    d.read::<String, String>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap()))
        .collect()
}

#[test]
fn stateless_operators() {
    let b = StreamsBuilder::new();
    let words = b
        .stream::<String, String>("lines")
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .filter(|_, w| w.len() > 2)
        .filter_not(|_, w| w == "the");
    words.map_values(|w| w.len() as i64).to("lengths");
    words
        .map(|k, w| (w.clone(), format!("{k}:{w}")))
        .to("by-word");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("lines", &s("l1"), &s("The quick brown fox is up"), 5)
        .unwrap();
    let lengths: Vec<(String, Option<i64>, i64)> = d
        .read::<String, i64>("lengths")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(
        lengths,
        vec![
            (s("l1"), Some(5), 5),
            (s("l1"), Some(5), 5),
            (s("l1"), Some(3), 5)
        ]
    );
    assert_eq!(
        values(&mut d, "by-word"),
        vec![
            (s("quick"), s("l1:quick")),
            (s("brown"), s("l1:brown")),
            (s("fox"), s("l1:fox"))
        ]
    );
}

#[test]
fn split_merge_and_dynamic_topics() {
    let b = StreamsBuilder::new();
    let branches = b
        .stream::<String, i64>("numbers")
        .split("n-")
        .branch("negative", |_, v| *v < 0)
        .branch("small", |_, v| *v < 10)
        .default_branch("large");
    assert_eq!(
        branches.keys().cloned().collect::<Vec<_>>(),
        vec![s("n-large"), s("n-negative"), s("n-small")]
    );
    branches["n-negative"].to("negative");
    branches["n-small"]
        .merge(&branches["n-large"])
        .map_values(|v| v * 2)
        .to("doubled");
    branches["n-large"].to_dynamic(|_, v| format!("large-{}", v % 2));
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (i, v) in [-1i64, 5, 12, 13, 0].into_iter().enumerate() {
        d.pipe("numbers", &format!("k{i}"), &v, i as i64).unwrap();
    }
    let read = |d: &mut TestDriver, t: &str| -> Vec<i64> {
        d.read::<String, i64>(t)
            .unwrap()
            .into_iter()
            .map(|r| r.value.unwrap())
            .collect()
    };
    assert_eq!(read(&mut d, "negative"), vec![-1]);
    assert_eq!(read(&mut d, "doubled"), vec![10, 24, 26, 0]);
    assert_eq!(read(&mut d, "large-0"), vec![12]);
    assert_eq!(read(&mut d, "large-1"), vec![13]);
}

#[test]
fn a_key_change_before_a_count_repartitions_across_partitions() {
    let b = StreamsBuilder::new();
    b.stream::<(), String>("text")
        .flat_map_values(|l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .group_by(|_, w| w.clone())
        .count_with(Materialized::named("word-counts"))
        .to_stream()
        .to("counts");
    let topology = b.build().unwrap();
    // The repartition topic is named after the store (deterministic, overridable).
    assert!(topology.describe().contains("word-counts"));
    assert_eq!(
        topology.topology.repartition_topics("wc"),
        vec![s("wc-word-counts-repartition")]
    );
    let mut d = TestDriver::new(&topology, 4).unwrap();
    // Lines without keys land on partition 0; their words spread over four partitions.
    for line in ["a b c", "a b", "a", "d a"] {
        d.pipe_raw("text", None, Some(line.as_bytes().to_vec().into()), 1)
            .unwrap();
    }
    let out = d.read::<String, i64>("counts").unwrap();
    let mut last = BTreeMap::new();
    let mut partitions = BTreeMap::new();
    for r in &out {
        last.insert(r.key.clone(), r.value.unwrap());
        partitions.insert(r.key.clone(), r.partition);
    }
    assert_eq!(
        last,
        BTreeMap::from([(s("a"), 4), (s("b"), 2), (s("c"), 1), (s("d"), 1)])
    );
    // Each word was counted in the task of its own partition.
    let spread: std::collections::BTreeSet<i32> = partitions.values().copied().collect();
    assert!(spread.len() > 1, "{partitions:?}");
    assert_eq!(out.len(), 8);
}

#[test]
fn group_by_key_reduce_and_aggregate() {
    let b = StreamsBuilder::new();
    let amounts = b.stream::<String, i64>("amounts");
    amounts
        .group_by_key()
        .reduce(|a, b| a.max(b))
        .to_stream()
        .to("max");
    amounts
        .group_by_key()
        .aggregate(Vec::new, |_, v, mut acc: Vec<i64>| {
            acc.push(v);
            acc
        })
        .to_stream()
        .to("all");
    let mut d = TestDriver::new(&b.build().unwrap(), 2).unwrap();
    for (k, v, ts) in [("x", 3i64, 1), ("x", 1, 5), ("y", 7, 2), ("x", 9, 3)] {
        d.pipe("amounts", &s(k), &v, ts).unwrap();
    }
    let max: Vec<(String, i64, i64)> = d
        .read::<String, i64>("max")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap(), r.timestamp))
        .collect();
    // The aggregate's timestamp is the largest of its records'.
    assert_eq!(
        max,
        vec![
            (s("x"), 3, 1),
            (s("x"), 3, 5),
            (s("y"), 7, 2),
            (s("x"), 9, 5)
        ]
    );
    let all: Vec<Vec<i64>> = d
        .read::<String, Vec<i64>>("all")
        .unwrap()
        .into_iter()
        .filter(|r| r.key == "x")
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(all, vec![vec![3], vec![3, 1], vec![3, 1, 9]]);
}

#[test]
fn tables_apply_tombstones_and_forward_repeats() {
    let b = StreamsBuilder::new();
    let users = b.table::<String, String>("users");
    users.to_stream().to("changes");
    users
        .filter(|_, region| region != "hidden")
        .map_values(|r| r.to_uppercase())
        .to_stream()
        .to("visible");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("users", &s("u1"), &s("eu"), 1).unwrap();
    // A repeat is forwarded, as Kafka Streams forwards every update of a source table
    // (emit-on-change was withdrawn, KAFKA-12508).
    d.pipe("users", &s("u1"), &s("eu"), 1).unwrap();
    d.pipe("users", &s("u1"), &s("eu"), 2).unwrap();
    d.pipe("users", &s("u1"), &s("hidden"), 3).unwrap();
    d.pipe_tombstone("users", &s("u1"), 4).unwrap();
    d.pipe_tombstone("users", &s("u9"), 5).unwrap(); // deletes nothing: not forwarded
    let changes: Vec<(Option<String>, i64)> = d
        .read::<String, String>("changes")
        .unwrap()
        .into_iter()
        .map(|r| (r.value, r.timestamp))
        .collect();
    assert_eq!(
        changes,
        vec![
            (Some(s("eu")), 1),
            (Some(s("eu")), 1),
            (Some(s("eu")), 2),
            (Some(s("hidden")), 3),
            (None, 4)
        ]
    );
    let visible: Vec<Option<String>> = d
        .read::<String, String>("visible")
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    // A row that stops passing the filter is deleted downstream; deleting it again sends a
    // tombstone again (nothing downstream reads old values: Kafka Streams' KTableFilter).
    assert_eq!(
        visible,
        vec![Some(s("EU")), Some(s("EU")), Some(s("EU")), None, None]
    );
}

#[test]
fn table_group_by_subtracts_the_old_value_and_adds_the_new() {
    let b = StreamsBuilder::new();
    b.table::<String, String>("user-regions")
        .group_by(|_, region| (region.clone(), 1i64))
        .count()
        .to_stream()
        .to("users-per-region");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("user-regions", &s("u1"), &s("eu"), 1).unwrap();
    d.pipe("user-regions", &s("u2"), &s("eu"), 2).unwrap();
    d.pipe("user-regions", &s("u1"), &s("us"), 3).unwrap();
    d.pipe_tombstone("user-regions", &s("u2"), 4).unwrap();
    let out: Vec<(String, i64, i64)> = d
        .read::<String, i64>("users-per-region")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap(), r.timestamp))
        .collect();
    assert_eq!(
        out,
        vec![
            (s("eu"), 1, 1),
            (s("eu"), 2, 2),
            (s("eu"), 1, 3),
            (s("us"), 1, 3),
            (s("eu"), 0, 4)
        ]
    );
}

#[test]
fn null_keys_and_bad_bytes() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in").to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    // A null key a String cannot hold: skipped.
    d.pipe_raw("in", None, Some(vec![0; 8].into()), 1).unwrap();
    // A value that is not an 8-byte long: a deserialization error for the handler.
    let err = d
        .pipe_raw("in", Some("k".into()), Some("abc".into()), 2)
        .unwrap_err();
    assert!(
        matches!(
            err,
            rill_dsl::testing::DriverError::Process(
                rill_core::processor::ProcessError::Deserialization(_)
            )
        ),
        "{err:?}"
    );
    d.pipe("in", &s("k"), &7i64, 3).unwrap();
    let out = d.read::<String, i64>("out").unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, Some(7));
}

#[test]
fn names_are_deterministic_and_build_reports_misuse() {
    let build = || {
        let b = StreamsBuilder::new();
        b.stream::<String, String>("in")
            .group_by_key()
            .windowed_by(TimeWindows::of_size_no_grace(Duration::from_secs(1)))
            .count()
            .to_stream()
            .to("out");
        b.build().unwrap().describe()
    };
    assert_eq!(build(), build());
    // suppress(until_window_closes) needs a windowed table.
    let b = StreamsBuilder::new();
    b.stream::<String, String>("in")
        .group_by_key()
        .count()
        .suppress(Suppressed::until_window_closes());
    let err = b.build().unwrap_err();
    assert!(err.to_string().contains("not windowed"), "{err}");
    // Reading a topic twice is a topology error.
    let b = StreamsBuilder::new();
    b.stream::<String, String>("in");
    b.stream::<String, String>("in");
    assert!(b.build().is_err());
}

#[test]
fn suppress_until_time_limit_emits_the_latest_value_after_quiet_time() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("in")
        .group_by_key()
        .count()
        .suppress(Suppressed::until_time_limit(Duration::from_millis(10)))
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (k, ts) in [
        ("a", 1),
        ("a", 5),
        ("b", 6),
        ("a", 12),
        ("b", 17),
        ("c", 40),
    ] {
        d.pipe("in", &s(k), &s("v"), ts).unwrap();
    }
    let out = counts_at(&mut d, "out");
    // a's last update at 12 is emitted when stream time reaches 22 (at c@40); b's at 17 too.
    assert_eq!(out, vec![(s("a"), 3, 12), (s("b"), 2, 17)]);
}

#[test]
fn cogroup_folds_several_streams_into_one_aggregate() {
    #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Activity {
        clicks: i64,
        spent: i64,
    }
    let b = StreamsBuilder::new();
    let clicks = b.stream::<String, String>("clicks").group_by_key(); // key: user
                                                                      // Purchases are keyed by order: re-keyed by user, so repartitioned first.
    let purchases = b
        .stream::<String, (String, i64)>("purchases")
        .group_by(|_, (user, _)| user.clone());
    clicks
        .cogroup(|_, _page: String, mut a: Activity| {
            a.clicks += 1;
            a
        })
        .cogroup(
            &purchases,
            |_, (_, amount): (String, i64), mut a: Activity| {
                a.spent += amount;
                a
            },
        )
        .aggregate_with(Activity::default, Materialized::named("activity"))
        .to_stream()
        .to("activity");
    let topology = b.build().unwrap();
    assert_eq!(
        topology.topology.repartition_topics("app"),
        vec![s("app-activity-1-repartition")]
    );
    let mut d = TestDriver::new(&topology, 2).unwrap();
    d.pipe("clicks", &s("ann"), &s("/home"), 1).unwrap();
    d.pipe("purchases", &s("o1"), &(s("ann"), 30i64), 2)
        .unwrap();
    d.pipe("clicks", &s("bob"), &s("/cart"), 3).unwrap();
    d.pipe("clicks", &s("ann"), &s("/cart"), 4).unwrap();
    d.pipe("purchases", &s("o2"), &(s("bob"), 5i64), 5).unwrap();
    let out: Vec<(String, Activity)> = d
        .read::<String, Activity>("activity")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap()))
        .collect();
    let act = |clicks, spent| Activity { clicks, spent };
    assert_eq!(
        out,
        vec![
            (s("ann"), act(1, 0)),
            (s("ann"), act(1, 30)),
            (s("bob"), act(1, 0)),
            (s("ann"), act(2, 30)),
            (s("bob"), act(1, 5))
        ]
    );
}

/// Between two commits the record cache keeps the latest aggregate per key: a commit
/// forwards each updated key once, in the order of the keys' last updates (Kafka's), with the value
/// forwarded before as the old one (seen through `group_by` re-aggregation subtracting it).
#[test]
fn the_record_cache_forwards_the_latest_update_per_key_at_each_commit() {
    let b = StreamsBuilder::new();
    let clicks = b.stream::<String, String>("clicks");
    let counts = clicks.group_by_key().count();
    counts.to_stream().to("counts");
    counts
        .group_by(|_, n| (n.to_string(), ()))
        .count()
        .to_stream()
        .to("keys-per-count");
    clicks
        .group_by_key()
        .count_with(Materialized::named("uncached").with_caching_disabled())
        .to_stream()
        .to("every-update");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.set_auto_commit(false);
    for (k, ts) in [("a", 1), ("a", 2), ("b", 3), ("a", 4)] {
        d.pipe("clicks", &s(k), &s("x"), ts).unwrap();
    }
    let counts = |d: &mut TestDriver, topic: &str| -> Vec<(String, Option<i64>, i64)> {
        d.read::<String, i64>(topic)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect()
    };
    // Without the cache every update goes on at once.
    assert_eq!(
        counts(&mut d, "every-update"),
        vec![
            (s("a"), Some(1), 1),
            (s("a"), Some(2), 2),
            (s("b"), Some(1), 3),
            (s("a"), Some(3), 4)
        ]
    );
    assert_eq!(counts(&mut d, "counts"), vec![]);
    d.commit().unwrap();
    // "a" was updated first and last: it goes after "b".
    assert_eq!(
        counts(&mut d, "counts"),
        vec![(s("b"), Some(1), 3), (s("a"), Some(3), 4)]
    );
    assert_eq!(
        counts(&mut d, "keys-per-count"),
        vec![(s("1"), Some(1), 3), (s("3"), Some(1), 4)]
    );
    d.pipe("clicks", &s("b"), &s("x"), 5).unwrap();
    d.pipe("clicks", &s("a"), &s("x"), 6).unwrap();
    d.commit().unwrap();
    assert_eq!(
        counts(&mut d, "counts"),
        vec![(s("b"), Some(2), 5), (s("a"), Some(4), 6)]
    );
    // The old values (b: 1, a: 3) left their groups: "1" and "3" drop to zero.
    assert_eq!(
        counts(&mut d, "keys-per-count"),
        vec![
            (s("1"), Some(0), 5),
            (s("2"), Some(1), 5),
            (s("3"), Some(0), 6),
            (s("4"), Some(1), 6)
        ]
    );
    // A commit with nothing new forwards nothing.
    d.commit().unwrap();
    assert_eq!(counts(&mut d, "counts"), vec![]);
}

/// A Processor API processor in a DSL job gets values as bytes (bincode between operators),
/// even where the operator before it kept them in memory.
#[test]
fn a_processor_api_processor_gets_bytes_after_in_memory_operators() {
    use rill_dsl::core::processor::{ProcessError, Processor, ProcessorContext, Record};
    struct Lengths;
    impl Processor for Lengths {
        fn process(
            &mut self,
            ctx: &mut ProcessorContext<'_>,
            r: Record,
        ) -> Result<(), ProcessError> {
            assert!(r.typed.is_none());
            let v: i64 = rill_dsl::serdes::hop::decode(r.value.as_deref().unwrap()).unwrap();
            let out = rill_dsl::serdes::hop::encode(&(v * 10)).unwrap();
            ctx.forward(Record::new(r.key, Some(out), r.timestamp))
        }
    }
    let b = StreamsBuilder::new();
    b.stream::<String, String>("words")
        .map_values(|w| w.len() as i64)
        .process_values::<i64>(|| Box::new(Lengths), &[])
        .to("tenfold");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("words", &s("k"), &s("four"), 1).unwrap();
    let out: Vec<Option<i64>> = d
        .read::<String, i64>("tenfold")
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(out, vec![Some(40)]);
}

/// A join reading an aggregate's store sees every update at once: such a store gets no
/// record cache (whose updates would reach the store only at the commit).
#[test]
fn a_join_reading_an_aggregate_sees_its_latest_value_between_commits() {
    let b = StreamsBuilder::new();
    let counts = b.stream::<String, String>("clicks").group_by_key().count();
    counts.to_stream().to("counts");
    b.stream::<String, String>("views")
        .join_table(&counts, |v, n| format!("{v}:{n}"))
        .to("views-with-clicks");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.set_auto_commit(false);
    d.pipe("clicks", &s("a"), &s("x"), 1).unwrap();
    d.pipe("clicks", &s("a"), &s("x"), 2).unwrap();
    d.pipe("views", &s("a"), &s("home"), 3).unwrap();
    assert_eq!(
        values(&mut d, "views-with-clicks"),
        vec![(s("a"), s("home:2"))]
    );
    // Without the cache, every update of the count went on.
    let counts: Vec<Option<i64>> = d
        .read::<String, i64>("counts")
        .unwrap()
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(counts, vec![Some(1), Some(2)]);
}

/// A bounded suppression buffer emits its oldest entries early when full, or stops the
/// application; `until_window_closes` refuses to emit early.
#[test]
fn a_full_suppression_buffer_emits_its_oldest_early_or_fails() {
    let job = |buffer: BufferConfig| {
        let b = StreamsBuilder::new();
        b.stream::<String, String>("in")
            .group_by_key()
            .count()
            .suppress(Suppressed::until_time_limit(Duration::from_millis(100)).with_buffer(buffer))
            .to_stream()
            .to("out");
        TestDriver::new(&b.build().unwrap(), 1).unwrap()
    };
    let mut d = job(BufferConfig::max_records(2));
    for (k, ts) in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("d", 5)] {
        d.pipe("in", &s(k), &s("v"), ts).unwrap();
    }
    let out = counts_at(&mut d, "out");
    // a keeps its place from its first update at 1 (non-resetting, as Kafka Streams):
    // c made three keys and a went early with its latest count; d pushed b (at 2) out.
    assert_eq!(out, vec![(s("a"), 2, 3), (s("b"), 1, 2)]);

    let mut d = job(BufferConfig::max_bytes(1_000)
        .with_max_records(1)
        .shut_down_when_full());
    d.pipe("in", &s("a"), &s("v"), 1).unwrap();
    d.pipe("in", &s("a"), &s("v"), 2).unwrap();
    let full = d.pipe("in", &s("b"), &s("v"), 3).unwrap_err();
    assert!(full.to_string().contains("is full"), "{full}");

    let b = StreamsBuilder::new();
    b.stream::<String, String>("in")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(Duration::from_millis(10)))
        .count()
        .suppress(Suppressed::until_window_closes().with_buffer(BufferConfig::max_records(5)));
    let err = b.build().unwrap_err();
    assert!(format!("{err:?}").contains("cannot emit early"), "{err:?}");
}

/// `repartition_with` names the topic and fixes its partition count: the tasks after it are
/// as many, whatever the source's width.
#[test]
fn repartitioned_sets_the_topic_name_and_partition_count() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("words")
        .repartition_with(Repartitioned::named("by-word").partitions(3))
        .group_by_key()
        .count()
        .to_stream()
        .to("counts");
    let topology = b.build().unwrap();
    let app = topology.topology.for_application("wc");
    assert_eq!(app.fixed_partitions("wc-by-word-repartition"), Some(3));
    let mut d = TestDriver::new(&topology, 1).unwrap();
    for w in ["a", "b", "c", "d", "e", "a"] {
        d.pipe("words", &s(w), &s(w), 1).unwrap();
    }
    assert!(d.core().task("by-word", 2).is_some());
    assert!(d.core().task("by-word", 3).is_none());
    let mut last = BTreeMap::new();
    for r in d.read::<String, i64>("counts").unwrap() {
        last.insert(r.key, r.value.unwrap());
    }
    assert_eq!(last[&s("a")], 2);
    assert_eq!(last.len(), 5);

    let b = StreamsBuilder::new();
    b.stream::<String, String>("words")
        .repartition_with(Repartitioned::with_partitions(0))
        .to("out");
    assert!(format!("{:?}", b.build().unwrap_err()).contains("at least 1"));
}

/// `Produced::with_partitioner` places records by key and value; `None` leaves a record to
/// the default partitioner.
#[test]
fn a_produced_partitioner_places_records_by_key_and_value() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("amounts").to_with(
        "by-size",
        Produced::default().with_partitioner(|_: &String, v: &i64, n| {
            (*v >= 0).then(|| if *v >= 100 { n - 1 } else { 0 })
        }),
    );
    let topics = BTreeMap::from([(s("by-size"), 4)]);
    let mut d = TestDriver::with_partitions(&b.build().unwrap(), 1, topics).unwrap();
    for (k, v) in [("a", 5i64), ("b", 500), ("c", 99), ("d", -1)] {
        d.pipe("amounts", &s(k), &v, 1).unwrap();
    }
    let placed: Vec<(String, i32)> = d
        .read::<String, i64>("by-size")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.partition))
        .collect();
    assert_eq!(&placed[..3], &[(s("a"), 0), (s("b"), 3), (s("c"), 0)]);
    // d (negative): the default partitioner, murmur2 of the key's bytes.
    let d_bytes = rill_dsl::serdes::auto::<String>()
        .serialize(&s("d"))
        .unwrap()
        .unwrap();
    let default = rill_log::client::partitioner::partition_for_key(&d_bytes, 4);
    assert_eq!(placed[3], (s("d"), default));
}

/// A cogroup over tumbling windows: both inputs fold into one aggregate per key and window,
/// and a window past its grace takes no more updates.
#[test]
fn a_windowed_cogroup_aggregates_per_key_and_window() {
    let b = StreamsBuilder::new();
    let clicks = b.stream::<String, String>("clicks").group_by_key();
    let buys = b.stream::<String, i64>("buys").group_by_key();
    clicks
        .cogroup(|_, _page: String, (c, s): (i64, i64)| (c + 1, s))
        .cogroup(&buys, |_, amount: i64, (c, s): (i64, i64)| (c, s + amount))
        .windowed_by(TimeWindows::of_size_with_grace(
            Duration::from_millis(10),
            Duration::from_millis(2),
        ))
        .aggregate_with(|| (0, 0), Materialized::named("per-window"))
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("clicks", &s("ann"), &s("/home"), 1).unwrap();
    d.pipe("buys", &s("ann"), &30i64, 4).unwrap();
    d.pipe("clicks", &s("ann"), &s("/cart"), 11).unwrap();
    // Late, within grace: [0, 10) closes at stream time 12, whichever input moved it.
    d.pipe("buys", &s("ann"), &5i64, 9).unwrap();
    d.pipe("clicks", &s("ann"), &s("/x"), 15).unwrap();
    d.pipe("buys", &s("ann"), &7i64, 8).unwrap(); // [0, 10) closed: dropped
    type Row = (String, i64, i64, (i64, i64), i64);
    let out: Vec<Row> = d
        .read_windowed::<String, (i64, i64)>("out")
        .unwrap()
        .into_iter()
        .map(|r| {
            let w = r.key;
            (
                w.key,
                w.window.start,
                w.window.end,
                r.value.unwrap(),
                r.timestamp,
            )
        })
        .collect();
    assert_eq!(
        out,
        vec![
            (s("ann"), 0, 10, (1, 0), 1),
            (s("ann"), 0, 10, (1, 30), 4),
            (s("ann"), 10, 20, (1, 0), 11),
            (s("ann"), 0, 10, (1, 35), 9),
            (s("ann"), 10, 20, (2, 0), 15),
        ]
    );
}

/// KIP-904 (Kafka Streams' KTableRepartitionMap): a row whose new value maps to the same
/// group as its old one goes to the aggregation as one change, so the aggregate moves from
/// 5 to 7 with no transient 0 between the subtraction and the addition. A row that changes
/// group still leaves one and joins the other.
#[test]
fn a_table_row_staying_in_its_group_updates_the_aggregate_once() {
    let b = StreamsBuilder::new();
    b.table::<String, i64>("rows")
        .group_by(|_, v| (if *v < 100 { s("small") } else { s("big") }, *v))
        .reduce(|a, v| a + v, |a, v| a - v)
        .to_stream()
        .to("sums");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("rows", &s("k1"), &5i64, 1).unwrap();
    d.pipe("rows", &s("k1"), &7i64, 2).unwrap();
    d.pipe("rows", &s("k1"), &200i64, 3).unwrap();
    let out: Vec<(String, Option<i64>, i64)> = d
        .read::<String, i64>("sums")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(
        out,
        vec![
            (s("small"), Some(5), 1),
            (s("small"), Some(7), 2),
            (s("small"), Some(0), 3),
            (s("big"), Some(200), 3),
        ]
    );
}

/// KTableFilterTest.shouldPassThroughWithoutMaterialization: with nothing downstream reading
/// old values, a filter forwards a deletion for every row it turns away, even one that never
/// passed; grouped downstream (KTableFilterTest.shouldSkipNullToRepartitionWithoutMaterialization),
/// those deletions are skipped.
#[test]
fn kafka_a_table_filter_forwards_deletions_unless_old_values_are_read() {
    let b = StreamsBuilder::new();
    let table = b.table::<String, i64>("topic1");
    table.filter(|_, v| v % 2 == 0).to_stream().to("even");
    table.filter_not(|_, v| v % 2 == 0).to_stream().to("odd");
    table
        .filter(|_, v| v % 2 == 0)
        .group_by(|k, v| (k.clone(), *v))
        .reduce(|a, v| a + v, |a, v| a - v)
        .to_stream()
        .to("grouped");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (k, v, ts) in [("A", 1, 10), ("B", 2, 5), ("C", 3, 8), ("D", 4, 14)] {
        d.pipe("topic1", &s(k), &(v as i64), ts).unwrap();
    }
    d.pipe_tombstone("topic1", &s("A"), 18).unwrap();
    d.pipe_tombstone("topic1", &s("B"), 15).unwrap();
    let mut read = |topic: &str| -> Vec<(String, Option<i64>, i64)> {
        d.read::<String, i64>(topic)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect()
    };
    let kv = |k: &str, v: Option<i64>, ts: i64| (s(k), v, ts);
    assert_eq!(
        read("even"),
        vec![
            kv("A", None, 10),
            kv("B", Some(2), 5),
            kv("C", None, 8),
            kv("D", Some(4), 14),
            kv("A", None, 18),
            kv("B", None, 15),
        ]
    );
    assert_eq!(
        read("odd"),
        vec![
            kv("A", Some(1), 10),
            kv("B", None, 5),
            kv("C", Some(3), 8),
            kv("D", None, 14),
            kv("A", None, 18),
            kv("B", None, 15),
        ]
    );
    assert_eq!(
        read("grouped"),
        // B's row leaves: its sum is reduced to 0 (KTableReduce keeps the aggregate).
        vec![
            kv("B", Some(2), 5),
            kv("D", Some(4), 14),
            kv("B", Some(0), 15)
        ]
    );
}
