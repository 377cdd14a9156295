//! The runtime's options over an embedded broker: exception handlers (log-and-continue,
//! dead-letter topic), checkpoints on a clean restart (only the changelog tail is restored; no
//! checkpoint means wipe and full restore), stream threads, metrics, and the start-up checks
//! on source topics (missing, not co-partitioned).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::runtime::{ExceptionHandler, KafkaStreams, StreamsConfig};
use rill_core::topology::{StoreBackend, Topology};
use rill_log::broker::Broker;
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Transport,
};
use rill_log::types::TopicPartition;

mod common;
use common::{
    broker, counting_topology_to, counting_topology_with, rekeyed_count, text, Count, LastPartition,
};

/// Counts per key (the count as text); fails on the value `poison`, cannot deserialize
/// `garbage`, and writes a record larger than a producer's whole buffer for `huge`.
struct PickyCount;

impl Processor for PickyCount {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        match r.value.as_deref() {
            Some(b"poison") => Err(ProcessError::Failed("cannot count poison".into())),
            Some(b"garbage") => Err(ProcessError::Deserialization("not a word".into())),
            Some(b"huge") => {
                ctx.forward(Record::new(r.key, Some(vec![0u8; 33 << 20]), r.timestamp))
            }
            _ => Count.process(ctx, r),
        }
    }
}

fn topology(backend: StoreBackend) -> Topology {
    counting_topology_with(
        "words",
        "counts",
        backend,
        Arc::new(|| Box::new(PickyCount)),
    )
}

/// [`broker`] with one partition and a topic `dlq`.
async fn broker_with_dlq(dir: &Path) -> (Arc<Broker>, Arc<dyn Transport>) {
    let (b, t) = broker(dir, 1).await;
    Admin::new(Arc::clone(&t))
        .create_topic("dlq", 1, &[])
        .await
        .unwrap();
    (b, t)
}

/// A record's headers as text.
fn header_map(r: &ConsumerRecord) -> BTreeMap<String, String> {
    r.headers
        .iter()
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect()
}

async fn produce(t: &Arc<dyn Transport>, records: &[(&str, &str)]) {
    let p = Producer::new(Arc::clone(t), ProducerConfig::default());
    let mut ds = Vec::new();
    for (k, v) in records {
        let r = ProducerRecord::new("words", Some(k.to_string()), v.to_string());
        ds.push(p.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await;
}

/// Every record of `topic` (all partitions) until `enough` of them or 10 s.
async fn read_all(t: &Arc<dyn Transport>, topic: &str, enough: usize) -> Vec<ConsumerRecord> {
    let partitions = Admin::new(Arc::clone(t))
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == topic)
        .map_or(1, |d| d.partitions);
    let mut c = Consumer::new(
        Arc::clone(t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 20,
            max_poll_records: 10_000,
            ..Default::default()
        },
    );
    c.assign((0..partitions).map(|p| TopicPartition::new(topic, p)));
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    while out.len() < enough && started.elapsed() < Duration::from_secs(10) {
        out.extend(c.poll().await.unwrap());
    }
    out
}

fn config() -> StreamsConfig {
    let mut c = StreamsConfig::new("app");
    c.commit_interval_ms = 100;
    c.poll_ms = 20;
    c.heartbeat_interval_ms = 100;
    c
}

/// Waits until `app` has processed `n` records (10 s at most).
async fn wait_processed(app: &KafkaStreams, n: u64) {
    for _ in 0..500 {
        if app.processed() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("processed {} of {n}", app.processed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_continue_skips_a_poison_record_and_counts_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 1).await;
    produce(&t, &[("a", "x"), ("a", "poison"), ("a", "x")]).await;
    let mut cfg = config();
    cfg.processing_exception_handler = ExceptionHandler::LogAndContinue;
    let app = KafkaStreams::start(topology(StoreBackend::InMemory), Arc::clone(&t), cfg);
    wait_processed(&app, 3).await;
    let m = app.metrics();
    assert_eq!((m.processed(), m.dropped()), (3, 1));
    // Counted by reason, per task and per thread.
    let by_reason = m.dropped_by_reason();
    assert_eq!(by_reason.get(DropReason::Processing), 1);
    assert_eq!(by_reason.iter().count(), 1);
    assert_eq!(m.tasks.values().map(|t| t.dropped.total()).sum::<u64>(), 1);
    app.close().await.unwrap();
    let out: Vec<String> = read_all(&t, "counts", 2)
        .await
        .iter()
        .map(|r| text(&r.value))
        .collect();
    assert_eq!(out, ["1", "2"]);
    b.close().unwrap();
}

/// A send the producer refuses (a record over buffer.memory) goes to the production
/// exception handler under at-least-once; the records around it are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_is_skipped_by_log_and_continue_and_the_rest_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 1).await;
    produce(&t, &[("a", "x"), ("b", "huge"), ("a", "x"), ("c", "x")]).await;
    let mut cfg = config();
    cfg.production_exception_handler = ExceptionHandler::LogAndContinue;
    let app = KafkaStreams::start(topology(StoreBackend::InMemory), Arc::clone(&t), cfg);
    wait_processed(&app, 4).await;
    // The send happens after the record counts as processed: wait for it to be dropped.
    for _ in 0..500 {
        if app.metrics().dropped() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.metrics().dropped(), 1);
    let by_reason = app.metrics().dropped_by_reason();
    assert_eq!(by_reason.get(DropReason::Production), 1);
    app.close().await.unwrap();
    let out: Vec<(String, String)> = read_all(&t, "counts", 3)
        .await
        .iter()
        .map(|r| (text(&r.key), text(&r.value)))
        .collect();
    let expect = [("a", "1"), ("a", "2"), ("c", "1")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(out, expect);
    b.close().unwrap();
}

/// Under at-least-once, an output the producer refuses (its topic name is invalid) goes to
/// the dead-letter topic as it was, with the input record it came from and the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_goes_to_the_dead_letter_topic_with_its_origin() {
    use rill_core::topology::{SinkSpec, TopicChoice};
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker_with_dlq(dir.path()).await;
    produce(&t, &[("a", "x"), ("bad", "x"), ("a", "x")]).await;
    // The counts of key "bad" go to a topic no broker accepts.
    let sink = SinkSpec {
        topic: TopicChoice::PerRecord(Arc::new(|r: &Record| {
            match r.key.as_deref() {
                Some(b"bad") => "no/slashes",
                _ => "counts",
            }
            .to_string()
        })),
        partitioner: None,
    };
    let topo = counting_topology_to(
        "words",
        sink,
        StoreBackend::InMemory,
        Arc::new(|| Box::new(Count)),
    );
    let mut cfg = config();
    cfg.production_exception_handler = ExceptionHandler::DeadLetter {
        topic: "dlq".into(),
    };
    let app = KafkaStreams::start(topo, Arc::clone(&t), cfg);
    wait_processed(&app, 3).await;
    let dead = read_all(&t, "dlq", 1).await;
    assert_eq!(app.metrics().dropped(), 1);
    app.close().await.unwrap();
    assert_eq!(dead.len(), 1);
    let r = &dead[0];
    assert_eq!((text(&r.key), text(&r.value)), ("bad".into(), "1".into()));
    let headers = header_map(r);
    assert_eq!(headers["__streams.errors.exception"], "production");
    assert!(
        headers["__streams.errors.message"].contains("InvalidTopic"),
        "{headers:?}"
    );
    assert_eq!(headers["__streams.errors.topic"], "words");
    assert_eq!(headers["__streams.errors.partition"], "0");
    assert_eq!(headers["__streams.errors.offset"], "1");
    let out: Vec<(String, String)> = read_all(&t, "counts", 2)
        .await
        .iter()
        .map(|r| (text(&r.key), text(&r.value)))
        .collect();
    assert_eq!(out, [("a".into(), "1".into()), ("a".into(), "2".into())]);
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_fails_the_application_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 1).await;
    produce(&t, &[("a", "poison")]).await;
    let app = KafkaStreams::start(topology(StoreBackend::InMemory), Arc::clone(&t), config());
    for _ in 0..500 {
        if !app.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!app.is_running());
    let err = app.close().await.unwrap_err();
    assert!(err.to_string().contains("cannot count poison"), "{err}");
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_topic_gets_the_record_its_origin_and_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker_with_dlq(dir.path()).await;
    produce(
        &t,
        &[("a", "x"), ("b", "poison"), ("a", "x"), ("c", "garbage")],
    )
    .await;
    let mut cfg = config();
    let dlq = ExceptionHandler::DeadLetter {
        topic: "dlq".into(),
    };
    cfg.processing_exception_handler = dlq.clone();
    cfg.deserialization_exception_handler = dlq;
    let app = KafkaStreams::start(topology(StoreBackend::InMemory), Arc::clone(&t), cfg);
    wait_processed(&app, 4).await;
    assert_eq!(app.metrics().dropped(), 2);
    let by_reason = app.metrics().dropped_by_reason();
    assert_eq!(by_reason.get(DropReason::Processing), 1);
    assert_eq!(by_reason.get(DropReason::Deserialization), 1);
    app.close().await.unwrap();
    let dead = read_all(&t, "dlq", 2).await;
    assert_eq!(dead.len(), 2);
    let garbage = &dead[1];
    assert_eq!(text(&garbage.value), "garbage");
    let exception = garbage
        .headers
        .iter()
        .find(|(k, _)| k.as_str() == "__streams.errors.exception")
        .map(|(_, v)| text(v));
    assert_eq!(exception.as_deref(), Some("deserialization"));
    let r = &dead[0];
    assert_eq!(
        (text(&r.key), text(&r.value)),
        ("b".into(), "poison".into())
    );
    let headers = header_map(r);
    assert_eq!(headers["__streams.errors.exception"], "processing");
    assert!(headers["__streams.errors.message"].contains("cannot count poison"));
    assert_eq!(headers["__streams.errors.topic"], "words");
    assert_eq!(headers["__streams.errors.partition"], "0");
    assert_eq!(headers["__streams.errors.offset"], "1");
    let out: Vec<String> = read_all(&t, "counts", 2)
        .await
        .iter()
        .map(|r| text(&r.value))
        .collect();
    assert_eq!(out, ["1", "2"]);
    b.close().unwrap();
}

/// The restore of the `counts` changelog (partition 0) in the app's metrics.
fn restore_of(app: &KafkaStreams) -> rill_core::metrics::RestoreProgress {
    let tp = TopicPartition::new("app-counts-changelog", 0);
    *app.metrics().restores.get(&tp).expect("restored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_restores_only_the_tail_and_no_checkpoint_means_a_full_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(&dir.path().join("broker"), 1).await;
    let state = dir.path().join("state");
    let mut cfg = config();
    cfg.state_dir = Some(state.clone());
    let ten: Vec<(&str, &str)> = ["a", "b", "c", "d", "e"]
        .iter()
        .flat_map(|k| [(*k, "x"), (*k, "x")])
        .collect();
    produce(&t, &ten).await;
    let app = KafkaStreams::start(topology(StoreBackend::Fjall), Arc::clone(&t), cfg.clone());
    wait_processed(&app, 10).await;
    app.close().await.unwrap();
    let checkpoint = std::fs::read_to_string(state.join("0_0/counts.checkpoint")).unwrap();
    let checkpoint: i64 = checkpoint.trim().parse().unwrap();
    assert!(checkpoint >= 5, "five keys were logged: {checkpoint}");
    // Restart: local state is good up to the checkpoint, nothing to replay.
    produce(&t, &[("a", "x")]).await;
    let app = KafkaStreams::start(topology(StoreBackend::Fjall), Arc::clone(&t), cfg.clone());
    wait_processed(&app, 1).await;
    let r = restore_of(&app);
    assert_eq!((r.from, r.records, r.done), (checkpoint, 0, true));
    app.close().await.unwrap();
    // Without a checkpoint the local state is wiped and the whole changelog replayed.
    std::fs::remove_file(state.join("0_0/counts.checkpoint")).unwrap();
    produce(&t, &[("a", "x")]).await;
    let app = KafkaStreams::start(topology(StoreBackend::Fjall), Arc::clone(&t), cfg);
    wait_processed(&app, 1).await;
    let r = restore_of(&app);
    assert_eq!(r.from, 0);
    assert!(r.records > checkpoint as u64, "{r:?}");
    app.close().await.unwrap();
    // The counts carried on exactly: a was seen 2 + 1 + 1 times.
    let out = read_all(&t, "counts", 12).await;
    let last_a = out.iter().rev().find(|r| text(&r.key) == "a").unwrap();
    assert_eq!(text(&last_a.value), "4");
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stream_threads_share_the_tasks_and_report_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 4).await;
    let mut cfg = config();
    cfg.num_stream_threads = 2;
    let app = KafkaStreams::start(topology(StoreBackend::InMemory), Arc::clone(&t), cfg);
    // The assignor gives each thread two of the four tasks (the second thread's arrive in
    // the cooperative second round).
    let mut split = Vec::new();
    for _ in 0..500 {
        split = app.thread_tasks().await;
        if split.iter().all(|t| t.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(split.iter().all(|t| t.len() == 2), "{split:?}");
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let records: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "x")).collect();
    produce(&t, &records).await;
    wait_processed(&app, 40).await;
    let m = app.metrics();
    assert_eq!(m.threads.len(), 2);
    assert_eq!(m.tasks.len(), 4);
    assert!(
        m.threads.iter().all(|th| th.processed > 0),
        "both threads work: {:?}",
        m.threads
    );
    let by_task: u64 = m.tasks.values().map(|t| t.processed).sum();
    assert_eq!(by_task, 40);
    for task in m.tasks.values() {
        // One record in 64 is timed, starting with the first.
        assert_eq!(task.process_latency.count, task.processed.div_ceil(64));
        assert!(task.process_latency.p50_ns <= task.process_latency.max_ns);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = app.metrics();
    assert!(m
        .threads
        .iter()
        .all(|th| th.commits > 0 && th.commit_latency.count == th.commits));
    app.close().await.unwrap();
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_not_copartitioned_sources_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 2).await;
    Admin::new(Arc::clone(&t))
        .create_topic("clicks", 3, &[])
        .await
        .unwrap();
    let stopped = |app: KafkaStreams| async move {
        for _ in 0..500 {
            if !app.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.close().await.unwrap_err().to_string()
    };
    let mut joined = Topology::new();
    joined
        .add_source("words-in", &["words"])
        .unwrap()
        .add_source("clicks-in", &["clicks"])
        .unwrap()
        .add_sink("out", "counts", &["words-in", "clicks-in"])
        .unwrap()
        .copartition(&["words", "clicks"])
        .unwrap();
    let err = stopped(KafkaStreams::start(joined, Arc::clone(&t), config())).await;
    assert!(
        err.contains("clicks has 3") && err.contains("words has 2"),
        "{err}"
    );
    let mut missing = Topology::new();
    missing
        .add_source("in", &["nowhere"])
        .unwrap()
        .add_sink("out", "counts", &["in"])
        .unwrap();
    let err = stopped(KafkaStreams::start(missing, Arc::clone(&t), config())).await;
    assert_eq!(err, "source topic nowhere does not exist");
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repartition_topic_is_created_regroups_records_and_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 3).await;
    // words: key = page, value = user. Count per user after re-keying.
    let topo = rekeyed_count("words", "counts");
    let clicks: Vec<(String, &str)> = (0..30)
        .map(|i| (format!("page{i}"), if i % 3 == 0 { "bob" } else { "ann" }))
        .collect();
    let records: Vec<(&str, &str)> = clicks.iter().map(|(p, u)| (p.as_str(), *u)).collect();
    produce(&t, &records).await;
    let mut cfg = config();
    cfg.repartition_purge_interval_ms = 0;
    let app = KafkaStreams::start(topo, Arc::clone(&t), cfg);
    // 30 clicks, each processed twice: before and after the repartition topic.
    wait_processed(&app, 60).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.close().await.unwrap();
    let topics = Admin::new(Arc::clone(&t)).list_topics().await.unwrap();
    let repartition = topics
        .iter()
        .find(|d| d.name == "app-users-repartition")
        .expect("the repartition topic exists");
    assert_eq!(repartition.partitions, 3);
    let out = read_all(&t, "counts", 30).await;
    let last = |user: &str| {
        out.iter()
            .rev()
            .find(|r| text(&r.key) == user)
            .map(|r| text(&r.value))
    };
    assert_eq!(
        (last("ann"), last("bob")),
        (Some("20".into()), Some("10".into()))
    );
    // What was consumed and committed is gone from the repartition topic.
    let earliest = Admin::new(Arc::clone(&t))
        .list_offsets(
            &(0..3)
                .map(|p| {
                    (
                        TopicPartition::new("app-users-repartition", p),
                        rill_log::client::OffsetSpec::Earliest,
                    )
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let purged: i64 = earliest.values().map(|o| o.offset).sum();
    assert!(purged > 0, "{earliest:?}");
    b.close().unwrap();
}

/// A repartition topic given a partition count is created that wide, whatever its source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repartition_topic_with_a_partition_count_is_created_that_wide() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 3).await;
    let mut topo = Topology::new();
    topo.add_source("in", &["words"])
        .unwrap()
        .add_repartition_with_partitions("spread", 5, &["in"])
        .unwrap()
        .add_sink("out", "counts", &["spread"])
        .unwrap();
    produce(&t, &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    let app = KafkaStreams::start(topo, Arc::clone(&t), config());
    // Each record twice: before and after the repartition topic.
    wait_processed(&app, 6).await;
    app.close().await.unwrap();
    let topics = Admin::new(Arc::clone(&t)).list_topics().await.unwrap();
    let spread = topics
        .iter()
        .find(|d| d.name == "app-spread-repartition")
        .expect("the repartition topic exists");
    assert_eq!(spread.partitions, 5);
    assert_eq!(read_all(&t, "counts", 3).await.len(), 3);
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_source_subscribes_to_the_matching_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 1).await;
    produce(&t, &[("a", "x"), ("b", "x")]).await;
    let mut topo = Topology::new();
    topo.add_source_pattern("in", "wor.s")
        .unwrap()
        .add_sink("out", "copies", &["in"])
        .unwrap();
    Admin::new(Arc::clone(&t))
        .create_topic("copies", 1, &[])
        .await
        .unwrap();
    let app = KafkaStreams::start(topo, Arc::clone(&t), config());
    wait_processed(&app, 2).await;
    app.close().await.unwrap();
    assert_eq!(read_all(&t, "copies", 2).await.len(), 2);
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_partitioner_places_output_records() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 3).await;
    produce(&t, &[("a", "x"), ("b", "x"), ("c", "x"), ("d", "x")]).await;
    let mut topo = Topology::new();
    topo.add_source("in", &["words"])
        .unwrap()
        .add_sink_with_partitioner("out", "counts", Arc::new(LastPartition), &["in"])
        .unwrap();
    let app = KafkaStreams::start(topo, Arc::clone(&t), config());
    wait_processed(&app, 4).await;
    app.close().await.unwrap();
    let out = read_all(&t, "counts", 4).await;
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|r| r.partition == 2), "{out:?}");
    b.close().unwrap();
}

/// Forwards each record with its timestamp as the value, so the output shows the order in
/// which the task processed them.
struct Stamp;

impl Processor for Stamp {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let ts = r.timestamp;
        ctx.forward(Record::new(r.key, Some(ts.to_string()), ts))
    }
}

/// The order in which one task processed the records of `left` and `right`.
async fn processing_order(max_task_idle_ms: i64) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 1).await;
    let admin = Admin::new(Arc::clone(&t));
    for topic in ["left", "right", "order"] {
        admin.create_topic(topic, 1, &[]).await.unwrap();
    }
    // Everything is in the log before the application starts: the left topic's records
    // (even timestamps) first, then the right topic's (odd ones).
    let p = Producer::new(Arc::clone(&t), ProducerConfig::default());
    let mut last = None;
    for (topic, first) in [("left", 0), ("right", 1)] {
        for i in 0..300 {
            let mut r = ProducerRecord::new(topic, Some("k"), "v");
            r.timestamp_ms = Some(first + 2 * i);
            last = Some(p.send(r).await.unwrap());
        }
    }
    last.unwrap().await.unwrap();
    let mut topology = Topology::new();
    topology
        .add_source("in", &["left", "right"])
        .unwrap()
        .add_processor("stamp", Arc::new(|| Box::new(Stamp)), &["in"])
        .unwrap()
        .add_sink("out", "order", &["stamp"])
        .unwrap();
    let mut c = config();
    c.max_task_idle_ms = max_task_idle_ms;
    // Small polls: without synchronization, the left topic would be processed well ahead.
    let app = KafkaStreams::start(topology, Arc::clone(&t), c);
    wait_processed(&app, 600).await;
    app.close().await.unwrap();
    let out = read_all(&t, "order", 600).await;
    b.close().unwrap();
    out.iter()
        .map(|r| text(&r.value).parse::<i64>().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_takes_its_partitions_records_in_timestamp_order() {
    let order = processing_order(0).await;
    assert_eq!(order, (0..600).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_task_idling_off_records_are_processed_as_fetched() {
    // -1 processes whatever is buffered at once: still merged by timestamp within what each
    // poll brought, but not waiting for the other topic; every record is processed once.
    let mut order = processing_order(-1).await;
    assert_eq!(order.len(), 600);
    order.sort_unstable();
    assert_eq!(order, (0..600).collect::<Vec<i64>>());
}

/// Committed changes of persistent stores wait in memory within `write_behind_max_bytes`
/// (the metrics show what a commit left held), and a budget of nothing writes them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_stores_write_behind_within_their_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(&dir.path().join("broker"), 1).await;
    let records: Vec<(&str, &str)> = ["a", "b", "c", "d"].iter().map(|k| (*k, "x")).collect();
    produce(&t, &records).await;
    let mut held = Vec::new();
    for (app_id, budget) in [("behind", 1 << 20), ("at-once", 0)] {
        let mut cfg = config();
        cfg.application_id = app_id.to_string();
        cfg.state_dir = Some(dir.path().join(app_id));
        cfg.write_behind_max_bytes = budget;
        let app = KafkaStreams::start(topology(StoreBackend::Fjall), Arc::clone(&t), cfg);
        wait_processed(&app, 4).await;
        // A few commits after the last record: what they left held.
        let commits = |app: &KafkaStreams| app.metrics().threads[0].commits;
        let after = commits(&app) + 3;
        for _ in 0..500 {
            if commits(&app) >= after {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held.push(app.metrics().threads[0].write_behind_bytes);
        app.close().await.unwrap();
    }
    assert!(held[0] > 0, "four counts held back: {held:?}");
    assert_eq!(held[1], 0, "nothing held with no budget: {held:?}");
    b.close().unwrap();
}
