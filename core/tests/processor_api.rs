//! The Processor API through the test driver: depth-first forwarding (to all children or one
//! by name), state stores per task, several partitions with their own tasks and stream times,
//! punctuation on stream time and wall-clock time with Kafka Streams' exact firing times,
//! invalid timestamps, per-record topics, and the topology's descriptions.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rill_core::processor::{
    ProcessError, Processor, ProcessorContext, PunctuationType, Record, Typed,
};
use rill_core::task::InvalidTimestampPolicy;
use rill_core::testing::{TestDriver, TestDriverConfig};
use rill_core::topology::{StoreBackend, Topology, TopologyError};

mod common;
use common::{counting_topology, rec, rekeyed_count, text, LastPartition};

/// Routes even values to "evens", odd ones to "odds".
struct Split;

impl Processor for Split {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let v: i64 = text(&r.value).parse().unwrap_or(0);
        ctx.forward_to(if v % 2 == 0 { "evens" } else { "odds" }, r)
    }
}

#[test]
fn counts_per_key_with_a_store_per_partition_task() {
    let backends = [
        StoreBackend::InMemory,
        StoreBackend::Fjall,
        #[cfg(feature = "rocksdb")]
        StoreBackend::RocksDb,
    ];
    for backend in backends {
        let dir = tempfile::tempdir().unwrap();
        let mut d = TestDriver::new(
            &counting_topology("words", "counts", backend),
            TestDriverConfig {
                default_partitions: 2,
                state_dir: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
        )
        .unwrap();
        for (i, w) in ["a", "b", "a", "c", "a", "b"].iter().enumerate() {
            d.pipe("words", rec(w, "x", i as i64)).unwrap();
        }
        let out: Vec<(String, String)> = d
            .read_output("counts")
            .into_iter()
            .map(|o| (text(&o.record.key), text(&o.record.value)))
            .collect();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            out,
            pairs(&[
                ("a", "1"),
                ("b", "1"),
                ("a", "2"),
                ("c", "1"),
                ("a", "3"),
                ("b", "2")
            ])
        );
        // Each key's count lives in the store of its partition's task only.
        let pa = rill_log::client::partitioner::partition_for_key(b"a", 2);
        let count_of = |d: &mut TestDriver, p: i32| {
            d.store("words", p, "counts")
                .unwrap()
                .get(b"a")
                .unwrap()
                .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        };
        assert_eq!(count_of(&mut d, pa), Some(3));
        assert_eq!(count_of(&mut d, 1 - pa), None);
        d.close().unwrap();
    }
}

#[test]
fn forwarding_is_depth_first_and_can_name_a_child() {
    let mut t = Topology::new();
    t.add_source("in", &["numbers"])
        .unwrap()
        .add_processor("split", Arc::new(|| Box::new(Split)), &["in"])
        .unwrap()
        .add_sink("evens", "even-numbers", &["split"])
        .unwrap()
        .add_sink("odds", "odd-numbers", &["split"])
        .unwrap()
        .add_sink("all", "all-numbers", &["in"])
        .unwrap();
    let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
    for v in 1..=5 {
        d.pipe(
            "numbers",
            Record::new(None::<Bytes>, Some(v.to_string()), v),
        )
        .unwrap();
    }
    let values = |d: &mut TestDriver, topic: &str| -> Vec<String> {
        d.read_output(topic)
            .iter()
            .map(|o| text(&o.record.value))
            .collect()
    };
    assert_eq!(values(&mut d, "even-numbers"), vec!["2", "4"]);
    assert_eq!(values(&mut d, "odd-numbers"), vec!["1", "3", "5"]);
    assert_eq!(values(&mut d, "all-numbers"), vec!["1", "2", "3", "4", "5"]);
}

/// Records each punctuation's timestamp.
struct Ticker {
    kind: PunctuationType,
    fired: Arc<Mutex<Vec<i64>>>,
}

impl Processor for Ticker {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let fired = Arc::clone(&self.fired);
        ctx.schedule(
            10,
            self.kind,
            Box::new(move |ctx, ts| {
                fired.lock().unwrap().push(ts);
                ctx.forward(Record::new(None::<Bytes>, Some(format!("tick@{ts}")), ts))
            }),
        );
        Ok(())
    }

    fn process(&mut self, _ctx: &mut ProcessorContext<'_>, _r: Record) -> Result<(), ProcessError> {
        Ok(())
    }
}

fn ticker(kind: PunctuationType) -> (Topology, Arc<Mutex<Vec<i64>>>) {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&fired);
    let mut t = Topology::new();
    t.add_source("in", &["events"])
        .unwrap()
        .add_processor(
            "tick",
            Arc::new(move || {
                Box::new(Ticker {
                    kind,
                    fired: Arc::clone(&f),
                })
            }),
            &["in"],
        )
        .unwrap()
        .add_sink("out", "ticks", &["tick"])
        .unwrap();
    (t, fired)
}

#[test]
fn stream_time_punctuation_fires_at_kafkas_times() {
    let (t, fired) = ticker(PunctuationType::StreamTime);
    let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
    // Stream time only moves forward: the late record at 100 fires nothing.
    for ts in [20, 142, 100, 155, 160] {
        d.pipe("events", rec("k", "v", ts)).unwrap();
    }
    assert_eq!(*fired.lock().unwrap(), vec![20, 142, 155, 160]);
    // Punctuations forward like process does.
    let ticks: Vec<String> = d
        .read_output("ticks")
        .iter()
        .map(|o| text(&o.record.value))
        .collect();
    assert_eq!(ticks, vec!["tick@20", "tick@142", "tick@155", "tick@160"]);
    // Wall-clock time does not drive stream-time punctuation.
    d.advance_wall_clock(1_000).unwrap();
    assert_eq!(fired.lock().unwrap().len(), 4);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Punctuation at the edges of time (Kafka Streams shipped a stream-thread hang from an
    /// overflow in punctuation scheduling): whatever the timestamps — near 0, near
    /// `i64::MAX`, out of order — each interval fires at most once, in order, never more
    /// often than records come, and nothing panics.
    #[test]
    fn punctuation_fires_once_per_interval_whatever_the_timestamps(
        stamps in proptest::collection::vec(
            proptest::prop_oneof![0i64..100, (i64::MAX - 100)..=i64::MAX, 0..=i64::MAX],
            1..40,
        ),
        wall in proptest::collection::vec(0i64..=i64::MAX, 1..10),
    ) {
        let (t, fired) = ticker(PunctuationType::StreamTime);
        let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
        for ts in &stamps {
            d.pipe("events", rec("k", "v", *ts)).unwrap();
        }
        let fired = fired.lock().unwrap().clone();
        proptest::prop_assert!(fired.len() <= stamps.len());
        proptest::prop_assert!(fired.windows(2).all(|w| w[0] / 10 < w[1] / 10), "{fired:?}");
        let (t, fired) = ticker(PunctuationType::WallClockTime);
        let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
        for ms in &wall {
            d.advance_wall_clock(*ms).unwrap();
        }
        let fired = fired.lock().unwrap().clone();
        proptest::prop_assert!(fired.len() <= wall.len());
        proptest::prop_assert!(fired.windows(2).all(|w| w[0] / 10 < w[1] / 10), "{fired:?}");
    }
}

#[test]
fn wall_clock_punctuation_follows_the_injected_clock() {
    let (t, fired) = ticker(PunctuationType::WallClockTime);
    let mut d = TestDriver::new(
        &t,
        TestDriverConfig {
            wall_clock_start_ms: 1_000,
            ..Default::default()
        },
    )
    .unwrap();
    d.advance_wall_clock(5).unwrap();
    assert!(fired.lock().unwrap().is_empty(), "not before one interval");
    d.advance_wall_clock(20).unwrap();
    d.advance_wall_clock(4).unwrap();
    d.advance_wall_clock(1).unwrap();
    // At 1025 once (not once per missed interval), then at the next multiple, 1030.
    assert_eq!(*fired.lock().unwrap(), vec![1_025, 1_030]);
    // Records do not drive wall-clock punctuation.
    d.pipe("events", rec("k", "v", 99_999)).unwrap();
    assert_eq!(fired.lock().unwrap().len(), 2);
}

#[test]
fn invalid_timestamps_follow_the_policy() {
    let t = counting_topology("words", "counts", StoreBackend::InMemory);
    let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
    assert!(
        d.pipe("words", rec("a", "x", -1)).is_err(),
        "fail by default"
    );
    let mut d = TestDriver::new(
        &t,
        TestDriverConfig {
            invalid_timestamps: InvalidTimestampPolicy::LogAndSkip,
            ..Default::default()
        },
    )
    .unwrap();
    d.pipe("words", rec("a", "x", -1)).unwrap();
    d.pipe("words", rec("a", "x", 5)).unwrap();
    assert_eq!(d.read_output("counts").len(), 1);
    assert_eq!(d.task("words", 0).unwrap().dropped().total(), 1);
    assert_eq!(d.task("words", 0).unwrap().stream_time(), 5);
}

#[test]
fn topologies_refuse_bad_wiring_and_describe_themselves() {
    let mut t = Topology::new();
    t.add_source("in", &["a"]).unwrap();
    assert_eq!(
        t.add_sink("out", "b", &["nope"]).err(),
        Some(TopologyError::UnknownParent {
            node: "out".into(),
            parent: "nope".into()
        })
    );
    assert!(matches!(
        t.add_source("in", &["c"]),
        Err(TopologyError::DuplicateName(_))
    ));
    assert!(matches!(
        t.add_source("again", &["a"]),
        Err(TopologyError::TopicReadTwice(_))
    ));
    t.add_sink("out", "b", &["in"]).unwrap();
    assert!(matches!(
        t.add_sink("after", "c", &["out"]),
        Err(TopologyError::SinkAsParent { .. })
    ));
    // A second, unconnected part is its own sub-topology.
    let c = counting_topology("words", "counts", StoreBackend::InMemory);
    let subs = c.sub_topologies();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].source_topics, vec!["words".to_string()]);
    let text = c.describe();
    assert_eq!(
        text,
        "Topologies:\n   Sub-topology: 0\n    Source: in (topics: [words])\n      --> count\n    \
         Processor: count (stores: [counts])\n      --> out\n      <-- in\n    Sink: out (topic: \
         counts)\n      <-- count\n"
    );
    assert!(c.to_dot().contains("\"in\" -> \"count\";"));
    assert!(c.to_mermaid().contains("count[\"count\"] --> out[\"out\"]"));
    assert_eq!(
        Topology::changelog_topic("app", "counts"),
        "app-counts-changelog"
    );
}

#[cfg(not(feature = "rocksdb"))]
#[test]
fn a_rocksdb_store_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = TestDriver::new(
        &counting_topology("words", "counts", StoreBackend::RocksDb),
        TestDriverConfig {
            state_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .and_then(|mut d| d.pipe("words", rec("a", "x", 0)))
    .unwrap_err();
    assert!(err.to_string().contains("`rocksdb` feature"), "{err}");
}

#[test]
fn a_repartition_topic_splits_the_topology_and_regroups_by_the_new_key() {
    let t = rekeyed_count("clicks", "user-counts");
    let subs = t.sub_topologies();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1].source_topics, ["users"]);
    let app = t.for_application("app");
    assert_eq!(
        app.sub_topologies()[1].source_topics,
        ["app-users-repartition"]
    );
    assert_eq!(t.repartition_topics("app"), ["app-users-repartition"]);
    assert!(
        app.describe().contains("app-users-repartition"),
        "{}",
        app.describe()
    );
    // Clicks of one user on pages in different partitions are counted in one place.
    let mut d = TestDriver::new(
        &t,
        TestDriverConfig {
            default_partitions: 3,
            ..Default::default()
        },
    )
    .unwrap();
    for (i, (page, user)) in [("p1", "ann"), ("p2", "bob"), ("p3", "ann"), ("p4", "ann")]
        .iter()
        .enumerate()
    {
        d.pipe("clicks", rec(page, user, i as i64)).unwrap();
    }
    let out: Vec<(String, String)> = d
        .read_output("user-counts")
        .into_iter()
        .map(|o| (text(&o.record.key), text(&o.record.value)))
        .collect();
    let want: Vec<(String, String)> = [("ann", "1"), ("bob", "1"), ("ann", "2"), ("ann", "3")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(out, want);
}

#[test]
fn a_timestamp_extractor_sets_record_time_and_stream_time() {
    let mut t = Topology::new();
    t.add_source_with_extractor(
        "in",
        &["events"],
        Arc::new(|r: &Record, _stream_time| text(&r.value).parse::<i64>().unwrap_or(-1)),
    )
    .unwrap()
    .add_sink("out", "timed", &["in"])
    .unwrap();
    let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
    d.pipe("events", rec("k", "500", 1)).unwrap();
    d.pipe("events", rec("k", "300", 2)).unwrap();
    let ts: Vec<i64> = d
        .read_output("timed")
        .iter()
        .map(|o| o.record.timestamp)
        .collect();
    assert_eq!(ts, [500, 300]);
    assert_eq!(d.task("events", 0).unwrap().stream_time(), 500);
    // An unparsable value extracts -1: the default policy refuses it.
    assert!(d.pipe("events", rec("k", "soon", 3)).is_err());
}

#[test]
fn a_pattern_source_reads_every_matching_topic() {
    let mut t = Topology::new();
    t.add_source_pattern("clicks", "clicks-.*")
        .unwrap()
        .add_sink("out", "all-clicks", &["clicks"])
        .unwrap();
    assert!(
        t.describe().contains("topic pattern: ^(?:clicks-.*)$"),
        "{}",
        t.describe()
    );
    let resolved = t.with_pattern_topics(["clicks-eu", "clicks-us", "views", "clicks-x-changelog"]);
    assert_eq!(
        resolved.sub_topologies()[0].source_topics,
        ["clicks-eu", "clicks-us"]
    );
    let topics = [("clicks-eu", 1), ("clicks-us", 1), ("views", 1)]
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .collect();
    let mut d = TestDriver::new(
        &t,
        TestDriverConfig {
            topic_partitions: topics,
            ..Default::default()
        },
    )
    .unwrap();
    d.pipe("clicks-eu", rec("a", "1", 1)).unwrap();
    d.pipe("clicks-us", rec("b", "2", 2)).unwrap();
    assert!(d.pipe("views", rec("c", "3", 3)).is_err());
    let out: Vec<String> = d
        .read_output("all-clicks")
        .iter()
        .map(|o| text(&o.record.value))
        .collect();
    assert_eq!(out, ["1", "2"]);
    assert!(matches!(
        Topology::new()
            .add_source_pattern("bad", "clicks-(")
            .map(|_| ()),
        Err(TopologyError::BadPattern { .. })
    ));
}

#[test]
fn a_sink_partitioner_places_records() {
    let mut t = Topology::new();
    t.add_source("in", &["words"])
        .unwrap()
        .add_sink_with_partitioner("out", "placed", Arc::new(LastPartition), &["in"])
        .unwrap();
    let mut d = TestDriver::new(
        &t,
        TestDriverConfig {
            default_partitions: 3,
            ..Default::default()
        },
    )
    .unwrap();
    for k in ["a", "b", "c", "d"] {
        d.pipe("words", rec(k, "x", 0)).unwrap();
    }
    let partitions: Vec<i32> = d
        .read_output("placed")
        .iter()
        .map(|o| o.partition)
        .collect();
    assert_eq!(partitions, [2, 2, 2, 2]);
}

/// Doubles a typed `u32` value and forwards it in memory, serialized as decimal text.
struct TypedDoubler;

fn decimal(v: &(dyn std::any::Any + Send + Sync)) -> Result<Bytes, String> {
    v.downcast_ref::<u32>()
        .map(|n| Bytes::from(n.to_string()))
        .ok_or_else(|| "not a u32".to_string())
}

impl Processor for TypedDoubler {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let n: u32 = text(&r.value).parse().unwrap_or(0);
        let mut out = Record::new(r.key, None::<Bytes>, r.timestamp);
        out.typed = Some(Typed::new(Arc::new(n * 2), decimal));
        ctx.forward(out)
    }
}

/// Reads the typed value it gets, moving it out (it is the only holder).
struct TypedReader(Arc<Mutex<Vec<u32>>>);

impl Processor for TypedReader {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let t = r.typed.clone().expect("a typed value");
        assert!(t.clone().take::<String>().is_err(), "wrong type is refused");
        self.0.lock().unwrap().push(t.take::<u32>().unwrap());
        ctx.forward(r)
    }
}

#[test]
fn typed_values_travel_in_memory_and_sinks_serialize_them() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut t = Topology::new();
    t.add_source("in", &["numbers"]).unwrap();
    t.add_processor("double", Arc::new(|| Box::new(TypedDoubler)), &["in"])
        .unwrap();
    t.add_processor(
        "read",
        Arc::new(move || Box::new(TypedReader(Arc::clone(&s)))),
        &["double"],
    )
    .unwrap();
    t.add_sink("out", "doubled", &["read"]).unwrap();
    let mut d = TestDriver::new(&t, TestDriverConfig::default()).unwrap();
    d.pipe("numbers", rec("k", "21", 1)).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![42]);
    let out = d.read_output("doubled");
    assert_eq!(out.len(), 1);
    assert_eq!(text(&out[0].record.value), "42");
    assert!(out[0].record.typed.is_none(), "a sink writes bytes only");
}
