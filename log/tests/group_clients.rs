//! Group-facing client APIs over the embedded broker: the rebalance listener (revoked before
//! the rejoin with positions still committable, assigned after, lost when the membership is
//! gone), leaving the group when `max.poll.interval.ms` passes without a poll (even while the
//! polling task blocks its runtime worker), and the Admin views of groups: listing, members
//! and assignments, committed offsets, lag, deletion.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, EmbeddedTransport, ListedOffset, ListenerFuture, OffsetReset,
    OffsetSpec, PartitionLag, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    RoundRobinAssignor, Transport,
};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    config.group.initial_rebalance_delay_ms = 0;
    config.group_tick_ms = 20;
    Arc::new(Broker::open(config, Arc::new(SystemClock)).unwrap())
}

fn embedded(b: &Arc<Broker>) -> Arc<dyn Transport> {
    Arc::new(EmbeddedTransport::new(Arc::clone(b), "test"))
}

fn member_config(max_poll_interval_ms: i32) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some("g".into()),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 20,
        heartbeat_interval_ms: 30,
        session_timeout_ms: 6_000,
        max_poll_interval_ms,
        enable_auto_commit: false,
        assignors: vec![Arc::new(RoundRobinAssignor)],
        ..Default::default()
    }
}

/// Records every callback as text; commits in `revoked`, as Kafka applications do.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, what: &str, tps: &[TopicPartition]) {
        let tps: Vec<String> = tps.iter().map(|tp| tp.to_string()).collect();
        self.events
            .lock()
            .unwrap()
            .push(format!("{what} [{}]", tps.join(" ")));
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl RebalanceListener for Recorder {
    fn on_partitions_revoked<'a>(
        &'a self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            // The revoked partitions are still held: their positions can be committed.
            let held = partitions.iter().all(|tp| consumer.position(tp).is_some());
            consumer.commit_sync().await.unwrap();
            self.push(if held { "revoked" } else { "revoked-unheld" }, partitions);
        })
    }

    fn on_partitions_assigned<'a>(
        &'a self,
        _consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move { self.push("assigned", partitions) })
    }

    fn on_partitions_lost<'a>(
        &'a self,
        _consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move { self.push("lost", partitions) })
    }
}

async fn produce(b: &Arc<Broker>, partitions: i32, per_partition: usize) {
    let p = Producer::new(
        embedded(b),
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    );
    let mut ds = Vec::new();
    for partition in 0..partitions {
        for i in 0..per_partition {
            let mut r = ProducerRecord::new("t", Some("k"), format!("v{i}"));
            r.partition = Some(partition);
            r.timestamp_ms = Some(1_000 + i as i64);
            ds.push(p.send(r).await.unwrap());
        }
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await;
}

/// Polls until `c` holds `n` partitions (bounded).
async fn poll_until_holding(c: &mut Consumer, n: usize) {
    for _ in 0..300 {
        c.poll().await.unwrap();
        if c.assignment().len() == n {
            return;
        }
    }
    panic!("never held {n} partitions: {:?}", c.assignment());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_hears_revocations_before_the_rejoin_and_assignments_after() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 4, &[])
        .await
        .unwrap();
    produce(&b, 4, 3).await;
    let first = Arc::new(Recorder::default());
    let mut a = Consumer::new(embedded(&b), member_config(10_000));
    a.subscribe_with_listener(["t"], first.clone());
    poll_until_holding(&mut a, 4).await;
    assert_eq!(first.take(), vec!["assigned [t-0 t-1 t-2 t-3]"]);
    // A second member joins; `a` keeps polling so it can rejoin.
    let mut c = Consumer::new(embedded(&b), member_config(10_000));
    c.subscribe(["t"]);
    let joiner = tokio::spawn(async move {
        poll_until_holding(&mut c, 2).await;
        c
    });
    poll_until_holding(&mut a, 2).await;
    let c = joiner.await.unwrap();
    // Eager protocol: everything is revoked (and committed) before the rejoin, then the
    // round-robin half comes back. Which half depends on the member ids' order.
    let events = first.take();
    assert_eq!(events[0], "revoked [t-0 t-1 t-2 t-3]");
    assert!(
        events[1] == "assigned [t-0 t-2]" || events[1] == "assigned [t-1 t-3]",
        "{events:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    // The commit made in `revoked` is stored: positions at the end of what `a` read.
    let lag = Admin::new(embedded(&b)).consumer_lag("g").await.unwrap();
    assert_eq!(lag.len(), 4, "{lag:?}");
    assert!(lag.iter().all(|l| l.log_end == 3), "{lag:?}");
    c.close().await.unwrap();
    a.close().await.unwrap();
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_polling_leaves_and_loses_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let admin = Admin::new(embedded(&b));
    admin.create_topic("t", 2, &[]).await.unwrap();
    let events = Arc::new(Recorder::default());
    let mut a = Consumer::new(embedded(&b), member_config(300));
    a.subscribe_with_listener(["t"], events.clone());
    poll_until_holding(&mut a, 2).await;
    assert_eq!(
        admin.describe_groups(&["g"]).await.unwrap()[0]
            .members
            .len(),
        1
    );
    // No poll for well over max.poll.interval.ms: the heartbeat task leaves the group.
    let mut left = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let g = &admin.describe_groups(&["g"]).await.unwrap()[0];
        if g.members.is_empty() {
            assert_eq!(g.state, "Empty");
            left = true;
            break;
        }
    }
    assert!(left, "the member never left");
    // The next poll reports the loss (no commit: someone else may own them) and rejoins.
    poll_until_holding(&mut a, 2).await;
    assert_eq!(
        events.take(),
        vec!["assigned [t-0 t-1]", "lost [t-0 t-1]", "assigned [t-0 t-1]"]
    );
    a.close().await.unwrap();
    b.close().unwrap();
}

/// A consumer polled from a task on a runtime worker, whose records were all there when it
/// joined (so its first poll never waited), and that then blocks its worker past
/// `max.poll.interval.ms`: the heartbeat task it started must still run (on the other worker)
/// and leave the group, so that the next poll reports the partitions lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_runs_while_the_polling_task_blocks_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 2, 10).await;
    let events = Arc::new(Recorder::default());
    let mut a = Consumer::new(embedded(&b), member_config(300));
    a.subscribe_with_listener(["t"], events.clone());
    let polled = tokio::spawn(async move {
        poll_until_holding(&mut a, 2).await;
        // Processing that blocks the worker, as a slow processor would.
        std::thread::sleep(Duration::from_millis(1_000));
        poll_until_holding(&mut a, 2).await;
        a
    });
    let a = polled.await.unwrap();
    assert_eq!(
        events.take(),
        vec!["assigned [t-0 t-1]", "lost [t-0 t-1]", "assigned [t-0 t-1]"]
    );
    a.close().await.unwrap();
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_describes_measures_lag_and_deletes_groups() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let admin = Admin::new(embedded(&b));
    admin.create_topic("t", 2, &[]).await.unwrap();
    produce(&b, 2, 10).await;
    let mut a = Consumer::new(
        embedded(&b),
        ConsumerConfig {
            max_poll_records: 4,
            ..member_config(10_000)
        },
    );
    a.subscribe(["t"]);
    poll_until_holding(&mut a, 2).await;
    while a.position(&TopicPartition::new("t", 0)).unwrap_or(0) < 4 {
        a.poll().await.unwrap();
    }
    a.commit_offsets(&[
        (TopicPartition::new("t", 0), 4),
        (TopicPartition::new("t", 1), 10),
    ])
    .await
    .unwrap();
    let listed = admin.list_groups().await.unwrap();
    assert!(listed
        .iter()
        .any(|g| g.group_id == "g" && g.protocol_type == "consumer" && g.state == "Stable"));
    let described = admin.describe_groups(&["g"]).await.unwrap();
    assert_eq!(described[0].state, "Stable");
    assert_eq!(described[0].protocol, "roundrobin");
    assert_eq!(
        described[0].members[0].assignment,
        vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)]
    );
    let lag = admin.consumer_lag("g").await.unwrap();
    assert_eq!(
        lag,
        vec![
            PartitionLag {
                partition: TopicPartition::new("t", 0),
                committed: 4,
                log_end: 10,
                lag: 6
            },
            PartitionLag {
                partition: TopicPartition::new("t", 1),
                committed: 10,
                log_end: 10,
                lag: 0
            },
        ]
    );
    let offsets = admin
        .list_offsets(&[
            (TopicPartition::new("t", 0), OffsetSpec::Earliest),
            (TopicPartition::new("t", 1), OffsetSpec::MaxTimestamp),
        ])
        .await
        .unwrap();
    assert_eq!(
        offsets[&TopicPartition::new("t", 1)],
        ListedOffset {
            offset: 9,
            timestamp_ms: 1_009
        }
    );
    assert_eq!(offsets[&TopicPartition::new("t", 0)].offset, 0);
    // A group with a member cannot be deleted; once empty it can, offsets and all.
    let err = admin.delete_groups(&["g"]).await.unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(kafka_protocol::ResponseError::NonEmptyGroup)
    );
    a.close().await.unwrap();
    admin.delete_groups(&["g"]).await.unwrap();
    assert!(admin.list_group_offsets("g").await.unwrap().is_empty());
    assert!(!admin
        .list_groups()
        .await
        .unwrap()
        .iter()
        .any(|g| g.group_id == "g"));
    b.close().unwrap();
}
