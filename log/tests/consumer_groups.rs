//! Consumers sharing a group through the embedded broker: every partition owned by exactly one
//! member, every record consumed once, rebalances when members come and go, cooperative-sticky
//! rebalances that leave unaffected partitions alone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, EmbeddedTransport, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Transport,
};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

type Rebalances = Vec<(Vec<TopicPartition>, Vec<TopicPartition>)>;

#[derive(Debug, Default, Clone)]
struct View {
    assignment: Vec<TopicPartition>,
    rebalances: Rebalances,
    consumed: Vec<(i32, i64)>,
}

type Views = Arc<Mutex<BTreeMap<String, View>>>;

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

/// A member polling in its own task until `stop`, publishing what it holds and consumes.
fn spawn_member(
    b: &Arc<Broker>,
    name: &str,
    assignor: Arc<dyn Assignor>,
    stop: Arc<AtomicBool>,
    views: Views,
) -> tokio::task::JoinHandle<()> {
    let config = ConsumerConfig {
        group_id: Some("g".into()),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 20,
        heartbeat_interval_ms: 30,
        session_timeout_ms: 6_000,
        max_poll_interval_ms: 10_000,
        assignors: vec![assignor],
        auto_commit_interval_ms: 50,
        ..Default::default()
    };
    let mut c = Consumer::new(embedded(b), config);
    c.subscribe(["t"]);
    let name = name.to_string();
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let records = c.poll().await.expect("poll");
            let mut views = views.lock().unwrap();
            let v = views.entry(name.clone()).or_default();
            v.assignment = c.assignment();
            v.rebalances = c.rebalances().to_vec();
            v.consumed
                .extend(records.iter().map(|r| (r.partition, r.offset)));
        }
        c.close().await.expect("close");
        // Keep what it consumed; it holds nothing any more.
        if let Some(v) = views.lock().unwrap().get_mut(&name) {
            v.assignment.clear();
        }
    })
}

/// Waits until the members' assignments cover the topic's partitions exactly once with the
/// given sizes, and stay so for a while.
async fn wait_balanced(
    views: &Views,
    partitions: i32,
    sizes: &[usize],
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut stable_for = 0;
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Members that hold nothing (closed ones, or not yet assigned) are not counted.
        let snapshot: BTreeMap<String, Vec<TopicPartition>> = views
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.assignment.is_empty())
            .map(|(n, v)| (n.clone(), v.assignment.clone()))
            .collect();
        let mut all: Vec<TopicPartition> = snapshot.values().flatten().cloned().collect();
        all.sort();
        let mut got_sizes: Vec<usize> = snapshot.values().map(Vec::len).collect();
        got_sizes.sort();
        let exact = all
            == (0..partitions)
                .map(|p| TopicPartition::new("t", p))
                .collect::<Vec<_>>();
        if exact && got_sizes == sizes {
            stable_for += 1;
            if stable_for >= 10 {
                return snapshot;
            }
        } else {
            stable_for = 0;
        }
    }
    panic!("never balanced: {:?}", views.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_and_rebalance_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 6, &[])
        .await
        .unwrap();
    let views: Views = Arc::default();
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            spawn_member(
                &b,
                &format!("c{i}"),
                Arc::new(RangeAssignor),
                Arc::clone(&stops[i]),
                Arc::clone(&views),
            )
        })
        .collect();
    wait_balanced(&views, 6, &[2, 2, 2]).await;

    // Every record is consumed by exactly one member.
    let producer = Producer::new(
        embedded(&b),
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..60 {
        let mut r = ProducerRecord::new("t", None::<String>, format!("v{i}"));
        r.partition = Some(i % 6);
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await;
    let mut consumed = Vec::new();
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        consumed = views
            .lock()
            .unwrap()
            .values()
            .flat_map(|v| v.consumed.clone())
            .collect();
        if consumed.len() >= 60 {
            break;
        }
    }
    consumed.sort();
    let want: Vec<(i32, i64)> = (0..6).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    assert_eq!(consumed, want, "each record exactly once");

    // One member leaves: the other two take over its partitions.
    stops[2].store(true, Ordering::SeqCst);
    wait_balanced(&views, 6, &[3, 3]).await;
    for s in &stops {
        s.store(true, Ordering::SeqCst);
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_moves_only_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 6, &[])
        .await
        .unwrap();
    let views: Views = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![
        spawn_member(
            &b,
            "a",
            Arc::new(CooperativeStickyAssignor),
            Arc::clone(&stop),
            Arc::clone(&views),
        ),
        spawn_member(
            &b,
            "b",
            Arc::new(CooperativeStickyAssignor),
            Arc::clone(&stop),
            Arc::clone(&views),
        ),
    ];
    let before = wait_balanced(&views, 6, &[3, 3]).await;
    let history_before: BTreeMap<String, usize> = views
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.rebalances.len()))
        .collect();
    tasks.push(spawn_member(
        &b,
        "c",
        Arc::new(CooperativeStickyAssignor),
        Arc::clone(&stop),
        Arc::clone(&views),
    ));
    let after = wait_balanced(&views, 6, &[2, 2, 2]).await;
    for member in ["a", "b"] {
        // What a member still holds, it held before: nothing moved needlessly.
        assert!(
            after[member].iter().all(|tp| before[member].contains(tp)),
            "{member}: {before:?} -> {after:?}"
        );
        // And it gave up exactly one partition, never everything (no eager revocation).
        let views = views.lock().unwrap();
        let revoked: Vec<TopicPartition> = views[member].rebalances[history_before[member]..]
            .iter()
            .flat_map(|(r, _)| r.clone())
            .collect();
        assert_eq!(revoked.len(), 1, "{member} revoked {revoked:?}");
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_while_members_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 4, &[])
        .await
        .unwrap();
    let views: Views = Arc::default();
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut tasks = vec![
        spawn_member(
            &b,
            "m0",
            Arc::new(RangeAssignor),
            Arc::clone(&stops[0]),
            Arc::clone(&views),
        ),
        spawn_member(
            &b,
            "m1",
            Arc::new(RangeAssignor),
            Arc::clone(&stops[1]),
            Arc::clone(&views),
        ),
    ];
    let producer = Producer::new(
        embedded(&b),
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    );
    let total = 400;
    for i in 0..total {
        let mut r = ProducerRecord::new("t", None::<String>, format!("v{i}"));
        r.partition = Some(i % 4);
        producer.send(r).await.unwrap().await.unwrap();
        if i == 100 {
            // A member joins mid-stream...
            tasks.push(spawn_member(
                &b,
                "m2",
                Arc::new(RangeAssignor),
                Arc::clone(&stops[2]),
                Arc::clone(&views),
            ));
        }
        if i == 250 {
            // ...and another leaves.
            stops[0].store(true, Ordering::SeqCst);
        }
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    producer.close().await;
    // Consumed by someone, whoever held the partition: every offset at least once.
    let consumed_all = |views: &Views| {
        let mut seen: std::collections::BTreeSet<(i32, i64)> = std::collections::BTreeSet::new();
        for v in views.lock().unwrap().values() {
            seen.extend(v.consumed.iter().copied());
        }
        seen
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen.extend(consumed_all(&views));
        if seen.len() >= total as usize {
            break;
        }
    }
    let want: std::collections::BTreeSet<(i32, i64)> = (0..4)
        .flat_map(|p| (0..(total / 4) as i64).map(move |o| (p, o)))
        .collect();
    let missing: Vec<_> = want.difference(&seen).collect();
    assert!(missing.is_empty(), "records never consumed: {missing:?}");
    for s in &stops {
        s.store(true, Ordering::SeqCst);
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.close().unwrap();
}
