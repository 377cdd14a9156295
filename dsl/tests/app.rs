//! The `Streams` handle over an embedded broker: the state listener's transitions,
//! interactive queries on key-value, window and global stores, and a global table filled
//! from every partition of its topic before the first record is joined.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rill_dsl::prelude::*;
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, EmbeddedTransport, IsolationLevel, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, Transport,
};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

fn s(x: &str) -> String {
    x.to_string()
}

async fn broker(dir: &std::path::Path) -> (Arc<Broker>, Arc<dyn Transport>) {
    let mut bc = BrokerConfig::new(dir.join("log"));
    bc.offsets_topic_num_partitions = 1;
    bc.transaction_state_num_partitions = 1;
    bc.group.initial_rebalance_delay_ms = 0;
    bc.group_tick_ms = 20;
    let b = Arc::new(Broker::open(bc, Arc::new(SystemClock)).unwrap());
    let t: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&b), "test"));
    (b, t)
}

async fn produce(t: &Arc<dyn Transport>, topic: &str, records: &[(&str, Option<&str>, i64)]) {
    let p = Producer::new(Arc::clone(t), ProducerConfig::default());
    let mut last = None;
    for (k, v, ts) in records {
        let r = ProducerRecord {
            topic: topic.into(),
            key: Some(Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            timestamp_ms: Some(*ts),
            ..Default::default()
        };
        last = Some(p.send(r).await.unwrap());
    }
    last.unwrap().await.unwrap();
    p.close().await;
}

/// Values of `topic` (read_committed), once there are `n`.
async fn read(
    t: &Arc<dyn Transport>,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<(String, String)> {
    let mut c = Consumer::new(
        Arc::clone(t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: IsolationLevel::ReadCommitted,
            fetch_max_wait_ms: 50,
            ..Default::default()
        },
    );
    c.assign((0..partitions).map(|p| TopicPartition::new(topic, p)));
    let mut out = Vec::new();
    for _ in 0..200 {
        for r in c.poll().await.unwrap() {
            let text =
                |b: Option<Bytes>| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned();
            out.push((text(r.key), text(r.value)));
        }
        if out.len() >= n {
            break;
        }
    }
    out
}

fn config(dir: &std::path::Path, app: &str) -> StreamsConfig {
    let mut c = StreamsConfig::new(app);
    c.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
    c.commit_interval_ms = 100;
    c.poll_ms = 20;
    c.heartbeat_interval_ms = 100;
    c.state_dir = Some(dir.join(app));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_listener_and_interactive_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path()).await;
    let admin = Admin::new(Arc::clone(&t));
    for topic in ["clicks", "totals", "per-window"] {
        admin.create_topic(topic, 2, &[]).await.unwrap();
    }
    let builder = StreamsBuilder::new();
    let clicks = builder.stream::<String, String>("clicks");
    clicks
        .group_by_key()
        // Every update reaches "totals" (no record cache), so the test can wait for all four.
        .count_with(Materialized::named("click-counts").with_caching_disabled())
        .to_stream()
        .to("totals");
    clicks
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(Duration::from_millis(10)))
        // Windows are kept for size + grace unless a retention says longer.
        .count_with(
            Materialized::named("clicks-per-window")
                .in_memory()
                .with_retention(Duration::from_secs(60)),
        )
        .to_stream()
        .to("per-window");
    let mut app = Streams::new(
        builder.build().unwrap(),
        Arc::clone(&t),
        config(dir.path(), "iq"),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    app.set_state_listener(move |from, to| log.lock().unwrap().push((from, to)));
    assert_eq!(app.state(), State::Created);
    // Queries need a running application.
    assert!(app
        .get::<String, i64>("click-counts", &s("a"))
        .await
        .is_err());
    app.start();
    assert_eq!(app.state(), State::Running);
    produce(
        &t,
        "clicks",
        &[
            ("a", Some("x"), 1),
            ("b", Some("x"), 2),
            ("a", Some("x"), 3),
            ("a", Some("x"), 12),
        ],
    )
    .await;
    let totals = read(&t, "totals", 2, 4).await;
    assert_eq!(totals.len(), 4);
    assert_eq!(
        app.get::<String, i64>("click-counts", &s("a"))
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        app.get::<String, i64>("click-counts", &s("zz"))
            .await
            .unwrap(),
        None
    );
    let all: BTreeMap<String, i64> = app
        .all::<String, i64>("click-counts")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(all, BTreeMap::from([(s("a"), 3), (s("b"), 1)]));
    assert_eq!(
        app.fetch_windows::<String, i64>("clicks-per-window", &s("a"), 0, 100)
            .await
            .unwrap(),
        vec![(0, 2), (10, 1)]
    );
    // The wrong kind of store, or the wrong key type, is an error, not garbage.
    assert!(app
        .get::<String, i64>("clicks-per-window", &s("a"))
        .await
        .is_err());
    assert!(app.get::<i64, i64>("click-counts", &1).await.is_err());
    app.close().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Created, State::Running),
            (State::Running, State::PendingShutdown),
            (State::PendingShutdown, State::NotRunning)
        ]
    );
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_table_is_read_in_full_before_the_first_join() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path()).await;
    let admin = Admin::new(Arc::clone(&t));
    admin.create_topic("regions", 3, &[]).await.unwrap();
    admin.create_topic("visits", 2, &[]).await.unwrap();
    admin
        .create_topic("visits-by-region", 2, &[])
        .await
        .unwrap();
    // The table's rows are spread over three partitions, with later timestamps than the
    // visits: only reading the whole table first joins every visit.
    let rows: Vec<(String, Option<&str>, i64)> = (0..30)
        .map(|i| {
            (
                format!("u{i}"),
                Some(if i % 2 == 0 { "eu" } else { "us" }),
                1_000,
            )
        })
        .collect();
    let rows: Vec<(&str, Option<&str>, i64)> = rows
        .iter()
        .map(|(k, v, ts)| (k.as_str(), *v, *ts))
        .collect();
    produce(&t, "regions", &rows).await;
    produce(&t, "regions", &[("u29", None, 1_001)]).await;
    let visits: Vec<(String, Option<String>, i64)> = (0..30)
        .map(|i| (format!("v{i}"), Some(format!("u{i}")), i))
        .collect();
    let visits: Vec<(&str, Option<&str>, i64)> = visits
        .iter()
        .map(|(k, v, ts)| (k.as_str(), v.as_deref(), *ts))
        .collect();
    produce(&t, "visits", &visits).await;

    let builder = StreamsBuilder::new();
    let regions = builder.global_table::<String, String>("regions");
    builder
        .stream::<String, String>("visits") // key: visit, value: user
        .left_join_global(
            &regions,
            |_, user| user.clone(),
            |user, region| {
                format!(
                    "{user}@{}",
                    region.cloned().unwrap_or_else(|| "none".into())
                )
            },
        )
        .to("visits-by-region");
    let mut app = Streams::new(
        builder.build().unwrap(),
        Arc::clone(&t),
        config(dir.path(), "global"),
    );
    app.start();
    let out: BTreeMap<String, String> = read(&t, "visits-by-region", 2, 30)
        .await
        .into_iter()
        .collect();
    assert_eq!(out.len(), 30);
    for i in 0..30 {
        let want = match i {
            29 => "u29@none".to_string(),
            i if i % 2 == 0 => format!("u{i}@eu"),
            i => format!("u{i}@us"),
        };
        assert_eq!(out[&format!("v{i}")], want);
    }
    // The global store answers queries, and follows its topic.
    assert_eq!(
        app.get::<String, String>(regions.store_name(), &s("u4"))
            .await
            .unwrap(),
        Some(s("eu"))
    );
    produce(&t, "regions", &[("u4", Some("apac"), 2_000)]).await;
    let mut moved = None;
    for _ in 0..200 {
        moved = app
            .get::<String, String>(regions.store_name(), &s("u4"))
            .await
            .unwrap();
        if moved.as_deref() == Some("apac") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(moved.as_deref(), Some("apac"));
    app.close().await.unwrap();
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_join_runs_across_tables_of_different_widths() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path()).await;
    let admin = Admin::new(Arc::clone(&t));
    admin.create_topic("orders", 2, &[]).await.unwrap();
    admin.create_topic("products", 3, &[]).await.unwrap();
    admin.create_topic("order-lines", 2, &[]).await.unwrap();
    let products: Vec<(String, Option<String>, i64)> = (0..10)
        .map(|i| (format!("p{i}"), Some(format!("product {i}")), 1))
        .collect();
    let products: Vec<(&str, Option<&str>, i64)> = products
        .iter()
        .map(|(k, v, ts)| (k.as_str(), v.as_deref(), *ts))
        .collect();
    produce(&t, "products", &products).await;
    let orders: Vec<(String, Option<String>, i64)> = (0..40)
        .map(|i| (format!("o{i}"), Some(format!("p{}", i % 10)), 2))
        .collect();
    let orders: Vec<(&str, Option<&str>, i64)> = orders
        .iter()
        .map(|(k, v, ts)| (k.as_str(), v.as_deref(), *ts))
        .collect();
    produce(&t, "orders", &orders).await;
    let builder = StreamsBuilder::new();
    builder
        .table::<String, String>("orders") // value: product id
        .fk_join(
            &builder.table::<String, String>("products"),
            |p| p.clone(),
            |o, p| format!("{o} is {p}"),
        )
        .to_stream()
        .to("order-lines");
    let mut app = Streams::new(
        builder.build().unwrap(),
        Arc::clone(&t),
        config(dir.path(), "fk"),
    );
    app.start();
    let out: BTreeMap<String, String> = read(&t, "order-lines", 2, 40).await.into_iter().collect();
    assert_eq!(out.len(), 40);
    for i in 0..40 {
        assert_eq!(
            out[&format!("o{i}")],
            format!("p{} is product {}", i % 10, i % 10)
        );
    }
    // The internal topics took the partition counts of the tables they meet.
    let topics: BTreeMap<String, i32> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.partitions))
        .collect();
    let count = |suffix: &str| {
        topics
            .iter()
            .find(|(n, _)| n.starts_with("fk-") && n.ends_with(suffix))
            .map(|(_, p)| *p)
    };
    assert_eq!(count("subscription-registration-repartition"), Some(3));
    assert_eq!(count("subscription-response-repartition"), Some(2));
    app.close().await.unwrap();
    b.close().unwrap();
}

/// A windowed count on a persistent store, stopped and started again: the second instance
/// reads the window its store already holds (the count goes on from 2), rather than taking
/// a window missing from its fresh record cache for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_windowed_count_goes_on_from_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path()).await;
    let admin = Admin::new(Arc::clone(&t));
    for topic in ["clicks", "per-minute"] {
        admin.create_topic(topic, 1, &[]).await.unwrap();
    }
    let topology = || {
        let builder = StreamsBuilder::new();
        builder
            .stream::<String, String>("clicks")
            .group_by_key()
            .windowed_by(TimeWindows::of_size_no_grace(Duration::from_secs(60)))
            .count()
            .to_stream()
            .map_values(|n: Option<i64>| n.unwrap_or_default().to_string())
            .to("per-minute");
        builder.build().unwrap()
    };
    let counts =
        |out: &[(String, String)]| -> Vec<String> { out.iter().map(|(_, v)| v.clone()).collect() };
    produce(
        &t,
        "clicks",
        &[("a", Some("x"), 1_000), ("a", Some("x"), 2_000)],
    )
    .await;
    let mut app = Streams::new(topology(), Arc::clone(&t), config(dir.path(), "restart"));
    app.start();
    let mut seen = Vec::new();
    while !counts(&seen).contains(&s("2")) {
        seen = read(&t, "per-minute", 1, seen.len() + 1).await;
    }
    app.close().await.unwrap();
    let before = seen.len();
    produce(&t, "clicks", &[("a", Some("x"), 3_000)]).await;
    let mut app = Streams::new(topology(), Arc::clone(&t), config(dir.path(), "restart"));
    app.start();
    let after = read(&t, "per-minute", 1, before + 1).await;
    assert_eq!(counts(&after).last(), Some(&s("3")), "{after:?}");
    app.close().await.unwrap();
    b.close().unwrap();
}

/// A running application counts the records its operators drop, by reason, in its metrics
/// (Kafka Streams' `dropped-records-total` of the task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_records_show_in_the_metrics_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path()).await;
    let admin = Admin::new(Arc::clone(&t));
    for topic in ["clicks", "per-window"] {
        admin.create_topic(topic, 1, &[]).await.unwrap();
    }
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("clicks")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(Duration::from_millis(10)))
        .count()
        .to_stream()
        .to("per-window");
    let mut app = Streams::new(
        builder.build().unwrap(),
        Arc::clone(&t),
        config(dir.path(), "drops"),
    );
    assert_eq!(app.metrics().dropped(), 0);
    app.start();
    // a@1 comes after stream time 12 closed [0, 10).
    produce(&t, "clicks", &[("a", Some("x"), 12), ("a", Some("x"), 1)]).await;
    for _ in 0..500 {
        if app.metrics().processed() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = app.metrics();
    assert_eq!(m.processed(), 2);
    assert_eq!(m.dropped_by_reason().get(DropReason::LateWindow), 1);
    assert_eq!(m.dropped(), 1);
    app.close().await.unwrap();
    b.close().unwrap();
}

/// A join store restored from its changelog keeps its clock (Kafka's window stores replay
/// theirs): a record past the store's retention before the restart stays out of reach after
/// it, on a new instance that restores the store in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_join_store_keeps_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t) = broker(dir.path()).await;
    let admin = Admin::new(Arc::clone(&t));
    for topic in ["left", "right", "joined"] {
        admin.create_topic(topic, 1, &[]).await.unwrap();
    }
    let topology = || {
        let builder = StreamsBuilder::new();
        let left = builder.stream::<String, String>("left");
        let right = builder.stream::<String, String>("right");
        let w = JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(10));
        left.join(&right, |l, r| format!("{l}+{r}"), w).to("joined");
        builder.build().unwrap()
    };
    let mut app = Streams::new(topology(), Arc::clone(&t), config(dir.path(), "join-clock"));
    app.start();
    let processed = |app: &Streams, n: u64| {
        let done = app.metrics().processed() >= n;
        async move {
            if !done {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done
        }
    };
    // r@0 reaches the store's changelog with a commit of its own (a commit every 100 ms)...
    produce(&t, "right", &[("k", Some("r"), 0)]).await;
    for _ in 0..500 {
        if processed(&app, 1).await {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ... then the right store's clock reaches 20: it keeps records after 20 - (10 + 10 +
    // 0) = 0, and expires r@0 (locally: the changelog still holds it).
    produce(&t, "right", &[("x", Some("z"), 20)]).await;
    for _ in 0..500 {
        if processed(&app, 2).await {
            break;
        }
    }
    app.close().await.unwrap();
    // A new instance (another state directory) restores the store from its changelog.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut app = Streams::new(
        topology(),
        Arc::clone(&t),
        config(elsewhere.path(), "join-clock"),
    );
    app.start();
    produce(&t, "left", &[("k", Some("l"), 10), ("x", Some("q"), 25)]).await;
    let out = read(&t, "joined", 1, 1).await;
    assert_eq!(out, vec![(s("x"), s("q+z"))]);
    app.close().await.unwrap();
    b.close().unwrap();
}
