//! The runtime over an embedded broker: two application instances share a 4-partition
//! topic's tasks; when one closes, its tasks move to the other with their state (restored
//! from the changelogs), and the counts carry on exactly. Under exactly-once, a transaction
//! aborted under the application (past its timeout) or with lost partitions leaves no
//! duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::runtime::{KafkaStreams, StreamsConfig};
use rill_core::topology::{StoreBackend, Topology};

mod common;
use common::{broker, counting_topology, counting_topology_with, Count};
use rill_log::client::{
    Consumer, ConsumerConfig, IsolationLevel, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Transport,
};
use rill_log::types::TopicPartition;

/// Every count output, read_committed, per key in order: until each of the 10 keys has 40
/// (or a bounded number of polls passed).
async fn committed_counts(t: &Arc<dyn Transport>) -> BTreeMap<String, Vec<u64>> {
    let mut c = Consumer::new(
        Arc::clone(t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 20,
            max_poll_records: 10_000,
            isolation_level: IsolationLevel::ReadCommitted,
            ..Default::default()
        },
    );
    c.assign((0..4).map(|p| TopicPartition::new("counts", p)));
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..600 {
        for r in c.poll().await.unwrap() {
            let k = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let v: u64 = String::from_utf8(r.value.unwrap().to_vec())
                .unwrap()
                .parse()
                .unwrap();
            seen.entry(k).or_default().push(v);
        }
        if seen.len() == 10 && seen.values().all(|v| v.len() >= 40) {
            break;
        }
    }
    seen
}

fn topology() -> Topology {
    counting_topology("words", "counts", StoreBackend::InMemory)
}

async fn produce(t: &Arc<dyn Transport>, n: usize) {
    let p = Producer::new(Arc::clone(t), ProducerConfig::default());
    let mut ds = Vec::new();
    for i in 0..n {
        ds.push(
            p.send(ProducerRecord::new(
                "words",
                Some(format!("k{}", i % 10)),
                "x",
            ))
            .await
            .unwrap(),
        );
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await;
}

/// The last count output per key.
async fn latest_counts(t: &Arc<dyn Transport>) -> BTreeMap<String, u64> {
    let mut c = Consumer::new(
        Arc::clone(t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 10,
            max_poll_records: 10_000,
            ..Default::default()
        },
    );
    c.assign((0..4).map(|p| TopicPartition::new("counts", p)));
    let mut out = BTreeMap::new();
    for _ in 0..20 {
        for r in c.poll().await.unwrap() {
            let k = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let v: u64 = String::from_utf8(r.value.unwrap_or_else(Bytes::new).to_vec())
                .unwrap()
                .parse()
                .unwrap();
            let e = out.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    out
}

fn config() -> StreamsConfig {
    let mut c = StreamsConfig::new("wordcount");
    c.commit_interval_ms = 200;
    c.poll_ms = 50;
    c.session_timeout_ms = 6_000;
    c.heartbeat_interval_ms = 100;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_tasks_and_state_follows_a_moved_task() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 4).await;
    produce(&t, 400).await;
    let a = KafkaStreams::start(topology(), Arc::clone(&t), config());
    let b2 = KafkaStreams::start(topology(), Arc::clone(&t), config());
    // Both end up with two of the four tasks.
    let mut shared = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (ta, tb) = (a.tasks().await, b2.tasks().await);
        if ta.len() == 2 && tb.len() == 2 && ta.is_disjoint(&tb) {
            shared = true;
            break;
        }
    }
    assert!(shared, "the instances never split the tasks");
    // Wait until the first 400 are processed, then stop one instance.
    for _ in 0..300 {
        if a.processed() + b2.processed() >= 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await.unwrap();
    // Its tasks move to the other instance, whose restored state continues the counts.
    produce(&t, 400).await;
    for _ in 0..500 {
        if b2.tasks().await.len() == 4 && latest_counts(&t).await.values().all(|n| *n == 80) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b2.tasks().await.len(), 4);
    let counts = latest_counts(&t).await;
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|n| *n == 80), "{counts:?}");
    b2.close().await.unwrap();
    b.close().unwrap();
}

/// Counts like [`Count`], but the first instance to reach its 30th record stalls there once,
/// for `stall`. With `commit_after_stall`, an instance made after the stall (its task created
/// again) asks for a commit after each record.
struct StallingCount {
    seen: u64,
    stall: Duration,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    commit_each: bool,
}

impl Processor for StallingCount {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        self.seen += 1;
        if self.commit_each {
            ctx.request_commit();
        } else if self.seen == 30 && !self.stalled.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(self.stall);
        }
        Count.process(ctx, r)
    }
}

/// The counting topology over [`StallingCount`], and the flag its stall sets.
fn stalling_topology(
    stall: Duration,
    commit_after_stall: bool,
) -> (Topology, Arc<std::sync::atomic::AtomicBool>) {
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = Arc::clone(&stalled);
    let topo = counting_topology_with(
        "words",
        "counts",
        StoreBackend::InMemory,
        Arc::new(move || {
            let after = s2.load(std::sync::atomic::Ordering::SeqCst);
            Box::new(StallingCount {
                seen: 0,
                stall,
                stalled: Arc::clone(&s2),
                commit_each: after && commit_after_stall,
            })
        }),
    );
    (topo, stalled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_an_aborted_transaction_without_duplicates() {
    use rill_core::runtime::ProcessingGuarantee;
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 4).await;
    produce(&t, 400).await;
    // Past the transaction timeout: the coordinator aborts the transaction under the stall.
    let (topo, stalled) = stalling_topology(Duration::from_millis(900), false);
    let mut cfg = config();
    cfg.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
    cfg.commit_interval_ms = 100;
    cfg.transaction_timeout_ms = 400;
    let app = KafkaStreams::start(topo, Arc::clone(&t), cfg);
    let seen = committed_counts(&t).await;
    assert!(
        stalled.load(std::sync::atomic::Ordering::SeqCst),
        "the stall happened"
    );
    // Exactly once: each key's committed counts are 1, 2, ..., 40 with no repeat or gap,
    // although the first transaction was aborted under the application and redone.
    if seen.len() != 10 {
        let recoveries = app.recoveries();
        let outcome = app.close().await;
        panic!("incomplete: {seen:?}, recoveries {recoveries}, app {outcome:?}");
    }
    for (k, v) in &seen {
        assert_eq!(*v, (1..=40).collect::<Vec<u64>>(), "{k}");
    }
    app.close().await.unwrap();
    b.close().unwrap();
}

/// Partitions lost under exactly-once (the thread stalled past `max.poll.interval.ms` and
/// left the group) take the open transaction with them: what their tasks sent since the last
/// commit is aborted, not committed with the next transaction beside the same records
/// processed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_aborts_the_open_transaction_when_partitions_are_lost() {
    use rill_core::runtime::ProcessingGuarantee;
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path(), 4).await;
    // Past max.poll.interval.ms: the thread leaves the group and loses its partitions.
    let (topo, stalled) = stalling_topology(Duration::from_millis(1_000), true);
    let mut cfg = config();
    cfg.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
    // No commit comes on its own between the stall and the next poll.
    cfg.commit_interval_ms = 60_000;
    cfg.max_poll_interval_ms = 300;
    let app = KafkaStreams::start(topo, Arc::clone(&t), cfg);
    // The records come once the thread holds its tasks and heartbeats.
    for _ in 0..300 {
        if app.tasks().await.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce(&t, 400).await;
    let seen = committed_counts(&t).await;
    assert!(stalled.load(std::sync::atomic::Ordering::SeqCst));
    // The loss, not a failed commit, ended the first transaction.
    assert_eq!(app.recoveries(), 0);
    assert_eq!(seen.len(), 10, "{seen:?}");
    for (k, v) in &seen {
        assert_eq!(*v, (1..=40).collect::<Vec<u64>>(), "{k}");
    }
    app.close().await.unwrap();
    b.close().unwrap();
}
