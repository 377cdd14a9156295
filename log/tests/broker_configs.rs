//! Broker configs through DescribeConfigs, IncrementalAlterConfigs and the legacy
//! AlterConfigs: Kafka's config sources (default, static, dynamic cluster-wide, dynamic
//! per-broker), dynamic topic defaults applied to open logs at once and persisted across a
//! restart, read-only keys refused, AlterConfigs replacing a resource's whole set, and
//! `validate_only` changing nothing.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, BrokerConfig, RequestContext};
use rill_log::time::ManualClock;
use rill_log::types::TopicPartition;

const DEFAULT: i8 = 5;
const STATIC: i8 = 4;
const DYNAMIC_DEFAULT: i8 = 3;
const DYNAMIC: i8 = 2;
const TOPIC: i8 = 1;
const HOUR: i64 = 3_600_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A broker whose config file set `log.retention.hours = 1`.
fn open(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    config.log.defaults.retention_ms = HOUR;
    Broker::open(config, ManualClock::new(1_000_000)).unwrap()
}

async fn call(b: &Broker, r: RequestKind) -> ResponseKind {
    b.handle(&RequestContext::embedded("test"), r)
        .await
        .unwrap()
        .expect("a response")
}

/// Creates a topic; returns the configs the response reports, name -> (value, source).
async fn create(
    b: &Broker,
    topic: &str,
    configs: &[(&str, &str)],
) -> BTreeMap<String, (String, i8)> {
    let t = CreatableTopic::default()
        .with_name(TopicName(s(topic)))
        .with_num_partitions(1)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    match call(
        b,
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![t])),
    )
    .await
    {
        ResponseKind::CreateTopics(r) => {
            assert_eq!(r.topics[0].error_code, 0);
            r.topics[0]
                .configs
                .iter()
                .flatten()
                .map(|c| {
                    (
                        c.name.to_string(),
                        (
                            c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                            c.config_source,
                        ),
                    )
                })
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

/// name -> (value, source, read only)
async fn describe(b: &Broker, ty: i8, name: &str) -> BTreeMap<String, (String, i8, bool)> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(s(name))
            .with_configuration_keys(None)]);
    match call(b, RequestKind::DescribeConfigs(req)).await {
        ResponseKind::DescribeConfigs(r) => {
            assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0]);
            r.results[0]
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        (
                            c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                            c.config_source,
                            c.read_only,
                        ),
                    )
                })
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

fn entry(v: &str, source: i8) -> (String, i8, bool) {
    (v.to_string(), source, false)
}

/// IncrementalAlterConfigs of one resource: (key, op, value); returns (code, message).
async fn alter(
    b: &Broker,
    ty: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(s(name))
            .with_configs(
                ops.iter()
                    .map(|(k, op, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(*op)
                            .with_value(v.map(s))
                    })
                    .collect(),
            )]);
    match call(b, RequestKind::IncrementalAlterConfigs(req)).await {
        ResponseKind::IncrementalAlterConfigs(r) => (
            r.responses[0].error_code,
            r.responses[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
        other => panic!("{other:?}"),
    }
}

/// Legacy AlterConfigs of one resource to exactly `configs`.
async fn replace(
    b: &Broker,
    ty: i8,
    name: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> (i16, String) {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let req = AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(s(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )]);
    match call(b, RequestKind::AlterConfigs(req)).await {
        ResponseKind::AlterConfigs(r) => (
            r.responses[0].error_code,
            r.responses[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn describe_reports_kafkas_sources_for_broker_configs() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let c = describe(&b, 4, "0").await;
    assert_eq!(c["node.id"], ("0".into(), STATIC, true));
    assert!(c["num.partitions"].2);
    assert_eq!(c["log.retention.ms"], entry("3600000", STATIC));
    assert_eq!(c["log.segment.bytes"], entry("1073741824", DEFAULT));
    assert_eq!(c["compression.type"], entry("producer", DEFAULT));
    assert!(describe(&b, 4, "").await.is_empty());

    // Cluster-wide, then for this broker, then the broker's value removed again.
    assert_eq!(
        alter(
            &b,
            4,
            "",
            &[("log.segment.bytes", 0, Some("2000000"))],
            false
        )
        .await,
        (0, String::new())
    );
    assert_eq!(
        describe(&b, 4, "0").await["log.segment.bytes"],
        entry("2000000", DYNAMIC_DEFAULT)
    );
    assert_eq!(
        alter(
            &b,
            4,
            "0",
            &[("log.segment.bytes", 0, Some("3000000"))],
            false
        )
        .await,
        (0, String::new())
    );
    assert_eq!(
        describe(&b, 4, "0").await["log.segment.bytes"],
        entry("3000000", DYNAMIC)
    );
    let cluster = describe(&b, 4, "").await;
    assert_eq!(cluster.len(), 1);
    assert_eq!(
        cluster["log.segment.bytes"],
        entry("2000000", DYNAMIC_DEFAULT)
    );
    assert_eq!(
        alter(&b, 4, "0", &[("log.segment.bytes", 1, None)], false).await,
        (0, String::new())
    );
    assert_eq!(
        describe(&b, 4, "0").await["log.segment.bytes"],
        entry("2000000", DYNAMIC_DEFAULT)
    );
    // A topic's config without an override reports where its default comes from.
    let created = create(&b, "t", &[("segment.ms", "60000")]).await;
    assert_eq!(
        created["segment.bytes"],
        ("2000000".to_string(), DYNAMIC_DEFAULT)
    );
    assert_eq!(created["segment.ms"], ("60000".to_string(), TOPIC));
    let t = describe(&b, 2, "t").await;
    assert_eq!(t["segment.bytes"], entry("2000000", DYNAMIC_DEFAULT));
    assert_eq!(t["retention.ms"], entry("3600000", STATIC));
    assert_eq!(t["segment.ms"], entry("60000", TOPIC));
    assert_eq!(t["flush.ms"], entry("9223372036854775807", DEFAULT));
    b.close().unwrap();
}

#[tokio::test]
async fn dynamic_topic_defaults_apply_at_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "plain", &[]).await;
    create(&b, "own", &[("retention.ms", "5000")]).await;
    let log = |b: &Broker, t: &str| b.logs().get(&TopicPartition::new(t, 0)).unwrap();
    assert_eq!(log(&b, "plain").config().retention_ms, HOUR);
    assert_eq!(
        alter(
            &b,
            4,
            "",
            &[
                ("log.retention.ms", 0, Some("7200000")),
                ("compression.type", 0, Some("lz4")),
                ("log.cleanup.policy", 2, Some("compact")),
            ],
            false
        )
        .await,
        (0, String::new())
    );
    // The open log of a topic without an override runs on the new defaults at once; an
    // override still wins.
    let plain = log(&b, "plain").config();
    assert_eq!(plain.retention_ms, 2 * HOUR);
    assert_eq!(
        plain.compression_type,
        Some(rill_log::record::Compression::Lz4)
    );
    assert!(plain.cleanup_policy.compact && plain.cleanup_policy.delete);
    assert_eq!(log(&b, "own").config().retention_ms, 5000);
    assert_eq!(
        alter(
            &b,
            4,
            "0",
            &[("log.retention.ms", 0, Some("10800000"))],
            false
        )
        .await,
        (0, String::new())
    );
    assert_eq!(log(&b, "plain").config().retention_ms, 3 * HOUR);
    // A topic created now starts on them too.
    create(&b, "new", &[]).await;
    assert_eq!(log(&b, "new").config().retention_ms, 3 * HOUR);
    b.close().unwrap();
    drop(b);

    assert!(dir.path().join("metadata/broker-configs.json").exists());
    let b = open(dir.path());
    assert_eq!(log(&b, "plain").config().retention_ms, 3 * HOUR);
    assert_eq!(log(&b, "own").config().retention_ms, 5000);
    let c = describe(&b, 4, "0").await;
    assert_eq!(c["log.retention.ms"], entry("10800000", DYNAMIC));
    assert_eq!(c["compression.type"], entry("lz4", DYNAMIC_DEFAULT));
    assert_eq!(
        c["log.cleanup.policy"],
        entry("compact,delete", DYNAMIC_DEFAULT)
    );
    // Removing the dynamic values falls back to the config file's, then Kafka's default.
    assert_eq!(
        alter(&b, 4, "0", &[("log.retention.ms", 1, None)], false).await,
        (0, String::new())
    );
    assert_eq!(log(&b, "plain").config().retention_ms, 2 * HOUR);
    assert_eq!(
        alter(&b, 4, "", &[("log.retention.ms", 1, None)], false).await,
        (0, String::new())
    );
    assert_eq!(log(&b, "plain").config().retention_ms, HOUR);
    b.close().unwrap();
}

#[tokio::test]
async fn read_only_and_bad_broker_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "t", &[("min.compaction.lag.ms", "100000")]).await;
    let invalid_request = ResponseError::InvalidRequest.code();
    let (code, message) = alter(&b, 4, "0", &[("num.partitions", 0, Some("3"))], false).await;
    assert_eq!(code, invalid_request);
    assert!(
        message.contains("Cannot update these configs dynamically")
            && message.contains("num.partitions"),
        "{message}"
    );
    let (code, message) = alter(&b, 4, "", &[("log.retention.ms", 0, Some("soon"))], false).await;
    assert_eq!(code, invalid_request);
    assert!(message.contains("log.retention.ms"), "{message}");
    let (code, message) = alter(&b, 4, "7", &[("log.retention.ms", 0, Some("1"))], false).await;
    assert_eq!(code, invalid_request);
    assert!(message.contains("Unexpected broker id"), "{message}");
    let (code, _) = alter(&b, 4, "zero", &[("log.retention.ms", 0, Some("1"))], false).await;
    assert_eq!(code, invalid_request);
    // A default that a topic's override contradicts (min lag > max lag) is refused whole.
    let (code, message) = alter(
        &b,
        4,
        "",
        &[
            ("log.retention.ms", 0, Some("1000")),
            ("log.cleaner.max.compaction.lag.ms", 0, Some("50000")),
        ],
        false,
    )
    .await;
    assert_eq!(code, invalid_request, "{message}");
    assert_eq!(b.logs().topic_config("t").retention_ms, HOUR);
    assert!(describe(&b, 4, "").await.is_empty());
    b.close().unwrap();
}

#[tokio::test]
async fn alter_configs_replaces_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(
        &b,
        "t",
        &[("retention.ms", "5000"), ("segment.ms", "60000")],
    )
    .await;
    assert_eq!(
        replace(&b, 2, "t", &[("segment.bytes", "100000")], false).await,
        (0, String::new())
    );
    let overrides = b.logs().topic_overrides("t");
    assert_eq!(
        overrides.into_iter().collect::<Vec<_>>(),
        vec![("segment.bytes".to_string(), "100000".to_string())]
    );
    let t = describe(&b, 2, "t").await;
    assert_eq!(t["retention.ms"], entry("3600000", STATIC));
    // A bad value refuses the whole replacement with INVALID_CONFIG.
    let (code, message) = replace(&b, 2, "t", &[("compression.type", "none")], false).await;
    assert_eq!(code, ResponseError::InvalidConfig.code());
    assert!(message.contains("compression.type"));
    assert!(b.logs().topic_overrides("t").contains_key("segment.bytes"));

    // Broker resources too: the cluster-wide set becomes exactly what is sent.
    assert_eq!(
        alter(
            &b,
            4,
            "",
            &[
                ("log.retention.ms", 0, Some("7200000")),
                ("log.segment.bytes", 0, Some("2000000"))
            ],
            false
        )
        .await
        .0,
        0
    );
    assert_eq!(
        replace(&b, 4, "", &[("log.roll.ms", "600000")], false).await,
        (0, String::new())
    );
    let cluster = describe(&b, 4, "").await;
    assert_eq!(cluster.keys().collect::<Vec<_>>(), vec!["log.roll.ms"]);
    let d = b.logs().defaults();
    assert_eq!((d.retention_ms, d.segment_ms), (HOUR, 600_000));
    assert_eq!(d.segment_bytes, 1 << 30);
    let (code, _) = replace(&b, 4, "0", &[("node.id", "3")], false).await;
    assert_eq!(code, ResponseError::InvalidRequest.code());
    b.close().unwrap();
}

#[tokio::test]
async fn validate_only_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "t", &[("retention.ms", "5000")]).await;
    let before = b.logs().topic_overrides("t");
    assert_eq!(
        alter(&b, 2, "t", &[("segment.ms", 0, Some("60000"))], true).await,
        (0, String::new())
    );
    assert_eq!(
        replace(&b, 2, "t", &[("segment.ms", "60000")], true).await,
        (0, String::new())
    );
    assert_eq!(b.logs().topic_overrides("t"), before);
    // Still checked.
    assert_eq!(
        alter(&b, 2, "t", &[("segment.ms", 0, Some("0"))], true)
            .await
            .0,
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        alter(
            &b,
            4,
            "0",
            &[("log.retention.ms", 0, Some("7200000"))],
            true
        )
        .await,
        (0, String::new())
    );
    assert_eq!(
        replace(&b, 4, "", &[("log.retention.ms", "7200000")], true).await,
        (0, String::new())
    );
    assert_eq!(
        alter(&b, 4, "0", &[("num.partitions", 0, Some("2"))], true)
            .await
            .0,
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(b.logs().defaults().retention_ms, HOUR);
    assert_eq!(
        describe(&b, 4, "0").await["log.retention.ms"],
        entry("3600000", STATIC)
    );
    assert!(!dir.path().join("metadata/broker-configs.json").exists());
    b.close().unwrap();
}

#[tokio::test]
async fn cleaner_and_producer_expiry_settings_change_at_runtime() {
    use rill_log::record::{encode_idempotent_batch, Compression, NewRecord};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut config = BrokerConfig::new(dir.path());
    config.offsets_topic_num_partitions = 1;
    let b = Broker::open(config.clone(), clock.clone()).unwrap();
    let c = describe(&b, 4, "0").await;
    assert_eq!(c["log.cleaner.threads"], entry("1", DEFAULT));
    assert_eq!(c["producer.id.expiration.ms"], entry("86400000", DEFAULT));
    assert_eq!(c["log.cleaner.backoff.ms"], entry("15000", DEFAULT));

    // producer.id.expiration.ms: an idle producer is forgotten by the next retention run.
    create(&b, "t", &[]).await;
    let log = b.logs().get(&TopicPartition::new("t", 0)).unwrap();
    let recs = [NewRecord::new(Some("k"), Some("v"), 1_000_000)];
    log.append(&mut encode_idempotent_batch(&recs, Compression::None, 7, 0, 0, false).unwrap())
        .unwrap();
    clock.advance_ms(2_000);
    b.logs().run_retention();
    assert_eq!(log.producers().len(), 1, "a day's expiry keeps it");
    assert_eq!(
        alter(
            &b,
            4,
            "",
            &[
                ("producer.id.expiration.ms", 0, Some("1000")),
                ("log.cleaner.threads", 0, Some("2")),
                ("log.cleaner.dedupe.buffer.size", 0, Some("1048576")),
            ],
            false
        )
        .await,
        (0, String::new())
    );
    b.logs().run_retention();
    assert!(log.producers().is_empty());
    let t = b.logs().tunables();
    assert_eq!(
        (
            t.cleaner_threads,
            t.dedupe_buffer_bytes,
            t.producer_id_expiration_ms
        ),
        (2, 1 << 20, 1000)
    );
    // Kafka's bound on a thread count change: at most double, at least half.
    let (code, message) = alter(&b, 4, "0", &[("log.cleaner.threads", 0, Some("5"))], false).await;
    assert_eq!(code, ResponseError::InvalidRequest.code());
    assert!(message.contains("log.cleaner.threads"), "{message}");
    assert_eq!(b.logs().tunables().cleaner_threads, 2);
    b.close().unwrap();
    drop(b);

    let b = Broker::open(config, clock).unwrap();
    assert_eq!(b.logs().tunables(), t);
    let c = describe(&b, 4, "0").await;
    assert_eq!(c["log.cleaner.threads"], entry("2", DYNAMIC_DEFAULT));
    assert_eq!(
        c["producer.id.expiration.ms"],
        entry("1000", DYNAMIC_DEFAULT)
    );
    b.close().unwrap();
}
