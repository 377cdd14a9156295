//! Topic configs that change what the log does: `compression.type` recompression,
//! `message.timestamp.*.max.ms` bounds, `max.compaction.lag.ms` forcing a cleaning and
//! `segment.jitter.ms` rolling early; and every key Kafka accepts being accepted, checked and
//! reported through CreateTopics, IncrementalAlterConfigs and DescribeConfigs.

mod common;

use std::collections::BTreeMap;

use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, BrokerConfig, RequestContext};
use rill_log::record::batch::BatchIter;
use rill_log::record::{
    decode_batches, encode_idempotent_batch, BatchError, Compression, NewRecord,
};
use rill_log::storage::manager::{LogManager, ManagerConfig};
use rill_log::storage::StorageError;
use rill_log::time::ManualClock;
use rill_log::types::{Offset, TopicPartition};

const NOW: i64 = 1_000_000;

/// Every stored batch's (codec, producer id, producer epoch, base sequence, transactional).
fn stored_batches(buf: &[u8]) -> Vec<(Compression, i64, i16, i32, bool)> {
    BatchIter::new(buf)
        .map(|item| {
            let (h, _, _) = item.unwrap();
            (
                h.compression().unwrap(),
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.is_transactional(),
            )
        })
        .collect()
}

fn values(buf: &[u8]) -> Vec<(i64, Option<String>, i64)> {
    decode_batches(buf)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.offset,
                r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                r.timestamp_ms,
            )
        })
        .collect()
}

#[test]
fn a_topic_codec_recompresses_appended_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), config(&[("compression.type", "zstd")]), clock);
    log.append(&mut simple_batch("a", 3, NOW)).unwrap();
    // An lz4 batch of an idempotent, transactional producer: recompressed too, producer fields
    // and the transactional bit kept.
    let recs: Vec<NewRecord> = (0..2)
        .map(|i| NewRecord::new(Some(format!("k{i}")), Some(format!("b-{i}")), NOW + i))
        .collect();
    let mut idem = encode_idempotent_batch(&recs, Compression::Lz4, 42, 3, 0, false).unwrap();
    log.append(&mut idem).unwrap();
    let read = log.read(Offset(0), 1 << 20).unwrap().records;
    assert_eq!(
        stored_batches(&read),
        vec![
            (Compression::Zstd, -1, -1, -1, false),
            (Compression::Zstd, 42, 3, 0, false),
        ]
    );
    assert_eq!(
        values(&read),
        vec![
            (0, Some("a-0".into()), NOW),
            (1, Some("a-1".into()), NOW),
            (2, Some("a-2".into()), NOW),
            (3, Some("b-0".into()), NOW),
            (4, Some("b-1".into()), NOW + 1),
        ]
    );
    // The producer's retry of the recompressed batch is still recognised as a duplicate.
    let mut again = encode_idempotent_batch(&recs, Compression::Lz4, 42, 3, 0, false).unwrap();
    assert!(log.append(&mut again).unwrap().duplicate);
}

#[test]
fn recompression_to_every_codec_keeps_every_record_byte() {
    // Repeated header keys too (Kafka allows them), which a re-encoding through a map loses.
    let recs = vec![
        NewRecord::new(Some("k"), Some("v"), NOW)
            .with_header("h", Some("1"))
            .with_header("h", Some("2"))
            .with_header("n", None::<&str>),
        NewRecord::new(None::<&str>, Some("w"), NOW - 5),
    ];
    let plain = rill_log::record::encode_batch(&recs, Compression::None).unwrap();
    let expected = decode_batches(&plain).unwrap();
    assert_eq!(expected[0].headers.len(), 3);
    for codec in ["uncompressed", "gzip", "snappy", "lz4", "zstd"] {
        for sent in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let log = open(
                dir.path(),
                config(&[("compression.type", codec)]),
                ManualClock::new(NOW),
            );
            let mut b = if sent == Compression::None {
                plain.clone()
            } else {
                rill_log::record::records::recompress(&plain, sent, None).unwrap()
            };
            log.append(&mut b).unwrap();
            let read = log.read(Offset(0), 1 << 20).unwrap().records;
            assert_eq!(
                Some(stored_batches(&read)[0].0),
                Compression::parse(codec),
                "{codec} from {sent:?}"
            );
            assert_eq!(
                decode_batches(&read).unwrap(),
                expected,
                "{codec} from {sent:?}"
            );
        }
    }
}

#[test]
fn compression_levels_apply_to_recompressed_batches() {
    // Compressible but not trivially: levels find different matches.
    let values: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "value {} of {} with text {}",
                i * 7919 % 1000,
                i % 13,
                i * i
            )
        })
        .collect();
    let recs: Vec<NewRecord> = values
        .iter()
        .map(|v| NewRecord::new(Some("k"), Some(v.clone()), NOW))
        .collect();
    let plain = rill_log::record::encode_batch(&recs, Compression::None).unwrap();
    let stored = |codec: &str, level_key: &str, level: &str| {
        let dir = tempfile::tempdir().unwrap();
        let log = open(
            dir.path(),
            config(&[("compression.type", codec), (level_key, level)]),
            ManualClock::new(NOW),
        );
        log.append(&mut plain.clone()).unwrap();
        let read = log.read(Offset(0), 1 << 20).unwrap().records;
        assert_eq!(decode_batches(&read).unwrap().len(), 400);
        read.len()
    };
    for (codec, key, low, high) in [
        ("gzip", "compression.gzip.level", "1", "9"),
        ("zstd", "compression.zstd.level", "-5", "19"),
        ("lz4", "compression.lz4.level", "1", "17"),
    ] {
        let (fast, small) = (stored(codec, key, low), stored(codec, key, high));
        assert!(
            small < fast,
            "{codec}: level {high} gave {small} bytes, {low} gave {fast}"
        );
    }
}

#[test]
fn a_producer_codec_topic_keeps_the_batch_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("compression.type", "producer")]),
        ManualClock::new(NOW),
    );
    let mut b = batch_with(&[(Some("k"), Some("v"), NOW)], Compression::Lz4);
    let sent = b.clone();
    log.append(&mut b).unwrap();
    let read = log.read(Offset(0), 1 << 20).unwrap().records;
    assert_eq!(stored_batches(&read)[0].0, Compression::Lz4);
    // Byte for byte, but for the offset and leader epoch the log assigns (not in the CRC).
    assert_eq!(read[16..], sent[16..]);
    // `uncompressed` decompresses.
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("compression.type", "uncompressed")]),
        ManualClock::new(NOW),
    );
    log.append(&mut batch_with(
        &[(Some("k"), Some("v"), NOW)],
        Compression::Gzip,
    ))
    .unwrap();
    let read = log.read(Offset(0), 1 << 20).unwrap().records;
    assert_eq!(stored_batches(&read)[0].0, Compression::None);
    assert_eq!(values(&read), vec![(0, Some("v".into()), NOW)]);
}

fn refused_timestamp(r: Result<rill_log::storage::AppendInfo, StorageError>) -> bool {
    matches!(
        r,
        Err(StorageError::InvalidBatch(BatchError::Timestamps { .. }))
    )
}

#[test]
fn create_time_bounds_refuse_records_too_old_or_too_new() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "500"),
        ]),
        ManualClock::new(NOW),
    );
    let one = |ts: i64| simple_batch("v", 1, ts);
    assert!(log.append(&mut one(NOW - 1000)).is_ok());
    assert!(log.append(&mut one(NOW + 500)).is_ok());
    assert!(refused_timestamp(log.append(&mut one(NOW - 1001))));
    assert!(refused_timestamp(log.append(&mut one(NOW + 501))));
    // A record without a timestamp (-1) is not checked, as in Kafka.
    assert!(log.append(&mut one(-1)).is_ok());
    // One bad record refuses its whole (compressed) batch.
    let mixed = [
        (Some("a"), Some("ok"), NOW),
        (Some("b"), Some("old"), NOW - 5000),
    ];
    assert!(refused_timestamp(
        log.append(&mut batch_with(&mixed, Compression::Zstd))
    ));
    assert_eq!(log.log_end_offset(), Offset(3));

    // The deprecated difference bounds both sides while they are at their defaults.
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[
            ("message.timestamp.difference.max.ms", "100"),
            ("message.timestamp.after.max.ms", "10000"),
        ]),
        ManualClock::new(NOW),
    );
    assert!(refused_timestamp(log.append(&mut one(NOW - 101))));
    assert!(log.append(&mut one(NOW - 100)).is_ok());
    assert!(log.append(&mut one(NOW + 10_000)).is_ok());

    // LogAppendTime replaces the producer's timestamps: nothing to refuse.
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[
            ("message.timestamp.before.max.ms", "0"),
            ("message.timestamp.type", "LogAppendTime"),
        ]),
        ManualClock::new(NOW),
    );
    assert!(log.append(&mut one(0)).is_ok());
}

#[test]
fn max_compaction_lag_forces_a_cleaning_below_the_dirty_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let mut mc = ManagerConfig::new(dir.path());
    mc.cleaner_enable = false;
    let logs = LogManager::open(mc, clock.clone()).unwrap();
    let tp = TopicPartition::new("c", 0);
    let log = logs.get_or_create(&tp).unwrap();
    let mut overrides = BTreeMap::new();
    for (k, v) in [
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "1.0"),
    ] {
        overrides.insert(k.to_string(), v.to_string());
    }
    logs.set_topic_config("c", overrides.clone()).unwrap();
    // Everything dirty: the ratio (1.0) reaches the minimum.
    for i in 0..4 {
        log.append(&mut simple_batch(&format!("v{i}"), 4, NOW))
            .unwrap();
    }
    log.force_roll().unwrap();
    assert!(logs.run_cleaner_once());
    // A little more dirt: under the ratio, nothing to do, however old it gets.
    log.append(&mut simple_batch("w", 4, NOW)).unwrap();
    log.force_roll().unwrap();
    clock.advance_ms(10_000);
    assert!(!logs.run_cleaner_once());
    overrides.insert("max.compaction.lag.ms".into(), "20000".into());
    logs.set_topic_config("c", overrides).unwrap();
    assert!(!logs.run_cleaner_once(), "not yet older than the lag");
    clock.advance_ms(10_001);
    assert!(logs.run_cleaner_once(), "older than max.compaction.lag.ms");
    assert!(!logs.run_cleaner_once(), "clean now");
    logs.close().unwrap();
}

#[test]
fn segment_jitter_rolls_segments_before_segment_ms() {
    // How long after its first append the first segment rolls, with `jitter` configured.
    let roll_after = |jitter: &str| {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let log = open(
            dir.path(),
            config(&[("segment.ms", "1000"), ("segment.jitter.ms", jitter)]),
            clock.clone(),
        );
        log.append(&mut simple_batch("v", 1, NOW)).unwrap();
        for waited in 1..=1000 {
            clock.advance_ms(1);
            log.append(&mut simple_batch("v", 1, NOW)).unwrap();
            if log.segment_base_offsets().len() > 1 {
                return waited;
            }
        }
        panic!("never rolled");
    };
    assert_eq!(roll_after("0"), 1000);
    let jittered = roll_after("800");
    assert!((200..1000).contains(&jittered), "{jittered}");
}

// ---- through the broker ----

fn broker(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    Broker::open(config, ManualClock::new(NOW)).unwrap()
}

async fn call(b: &Broker, r: RequestKind) -> ResponseKind {
    b.handle(&RequestContext::embedded("test"), r)
        .await
        .unwrap()
        .expect("a response")
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn create(b: &Broker, topic: &str, configs: &[(&str, &str)]) -> (i16, Option<String>) {
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
        ResponseKind::CreateTopics(r) => (
            r.topics[0].error_code,
            r.topics[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty()),
        ),
        other => panic!("{other:?}"),
    }
}

async fn alter_topic(b: &Broker, topic: &str, set: &[(&str, &str)]) -> (i16, Option<String>) {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(
                set.iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(0)
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            ),
    ]);
    match call(b, RequestKind::IncrementalAlterConfigs(req)).await {
        ResponseKind::IncrementalAlterConfigs(r) => (
            r.responses[0].error_code,
            r.responses[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty()),
        ),
        other => panic!("{other:?}"),
    }
}

/// Every config of a resource as (name, value, source).
pub async fn describe(b: &Broker, resource_type: i8, name: &str) -> Vec<(String, String, i8)> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))]);
    match call(b, RequestKind::DescribeConfigs(req)).await {
        ResponseKind::DescribeConfigs(r) => {
            assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0]);
            r.results[0]
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                        c.config_source,
                    )
                })
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

/// A valid, non-default value for every topic config rill newly accepts.
const NEW_KEYS: &[(&str, &str)] = &[
    ("compression.type", "zstd"),
    ("compression.gzip.level", "5"),
    ("compression.lz4.level", "12"),
    ("compression.zstd.level", "-5"),
    ("file.delete.delay.ms", "1000"),
    ("follower.replication.throttled.replicas", "0:1,1:1"),
    ("leader.replication.throttled.replicas", "*"),
    ("local.retention.bytes", "1000"),
    ("local.retention.ms", "1000"),
    ("max.compaction.lag.ms", "86400000"),
    ("message.downconversion.enable", "false"),
    ("message.format.version", "2.8"),
    ("message.timestamp.after.max.ms", "3600000"),
    ("message.timestamp.before.max.ms", "7200000"),
    ("message.timestamp.difference.max.ms", "9000000"),
    ("preallocate", "true"),
    ("remote.log.copy.disable", "true"),
    ("remote.log.delete.on.disable", "true"),
    ("remote.storage.enable", "false"),
    ("segment.jitter.ms", "100"),
    ("unclean.leader.election.enable", "true"),
];

/// An invalid value for each, refused with INVALID_CONFIG naming the key.
const BAD_VALUES: &[(&str, &str)] = &[
    ("compression.type", "none"),
    ("compression.type", "brotli"),
    ("compression.gzip.level", "0"),
    ("compression.gzip.level", "10"),
    ("compression.lz4.level", "18"),
    ("compression.zstd.level", "23"),
    ("file.delete.delay.ms", "-1"),
    ("follower.replication.throttled.replicas", "0-1"),
    ("leader.replication.throttled.replicas", "x:1"),
    ("local.retention.bytes", "-3"),
    ("local.retention.ms", "soon"),
    ("max.compaction.lag.ms", "0"),
    ("message.downconversion.enable", "yes"),
    ("message.format.version", "latest"),
    ("message.timestamp.after.max.ms", "-1"),
    ("message.timestamp.before.max.ms", "-1"),
    ("message.timestamp.difference.max.ms", "x"),
    ("preallocate", "1"),
    ("remote.log.copy.disable", "maybe"),
    ("remote.log.delete.on.disable", ""),
    ("remote.storage.enable", "true"),
    ("segment.jitter.ms", "-1"),
    ("unclean.leader.election.enable", "no"),
];

#[tokio::test]
async fn create_topics_accepts_and_describes_every_kafka_topic_config() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    assert_eq!(create(&b, "all", NEW_KEYS).await, (0, None));
    let described = describe(&b, 2, "all").await;
    for (k, v) in NEW_KEYS {
        assert!(
            described.contains(&(k.to_string(), v.to_string(), 1)),
            "{k}: {described:?}"
        );
    }
    // An untouched topic reports Kafka's defaults, as defaults.
    assert_eq!(create(&b, "plain", &[]).await, (0, None));
    let plain = describe(&b, 2, "plain").await;
    for (k, v) in [
        ("compression.type", "producer"),
        ("max.compaction.lag.ms", "9223372036854775807"),
        ("message.timestamp.before.max.ms", "9223372036854775807"),
        ("file.delete.delay.ms", "60000"),
        ("remote.storage.enable", "false"),
        ("local.retention.ms", "-2"),
        ("message.format.version", "3.0-IV1"),
        ("compression.zstd.level", "3"),
    ] {
        assert!(
            plain.contains(&(k.to_string(), v.to_string(), 5)),
            "{k}: {plain:?}"
        );
    }
    for (i, (k, v)) in BAD_VALUES.iter().enumerate() {
        let (code, message) = create(&b, &format!("bad{i}"), &[(k, v)]).await;
        assert_eq!(code, ResponseError::InvalidConfig.code(), "{k}={v}");
        assert!(message.unwrap().contains(k), "{k}={v}");
    }
    // Kafka's cross-key check.
    let (code, message) = create(
        &b,
        "lags",
        &[
            ("min.compaction.lag.ms", "100"),
            ("max.compaction.lag.ms", "50"),
        ],
    )
    .await;
    assert_eq!(code, ResponseError::InvalidConfig.code());
    assert!(message.unwrap().contains("max.compaction.lag.ms"));
    b.close().unwrap();
}

#[tokio::test]
async fn incremental_alter_configs_sets_every_kafka_topic_config() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    assert_eq!(create(&b, "t", &[]).await, (0, None));
    for (k, v) in NEW_KEYS {
        assert_eq!(alter_topic(&b, "t", &[(k, v)]).await, (0, None), "{k}");
    }
    let described = describe(&b, 2, "t").await;
    for (k, v) in NEW_KEYS {
        assert!(
            described.contains(&(k.to_string(), v.to_string(), 1)),
            "{k}"
        );
    }
    for (k, v) in BAD_VALUES {
        let (code, message) = alter_topic(&b, "t", &[(k, v)]).await;
        assert_eq!(code, ResponseError::InvalidConfig.code(), "{k}={v}");
        assert!(message.unwrap().contains(k), "{k}={v}");
    }
    // The alter reached the log: records are recompressed and timestamps bounded.
    let c = b.logs().topic_config("t");
    assert_eq!(c.compression_type, Some(Compression::Zstd));
    assert_eq!(c.earliest_timestamp(NOW), Some(NOW - 7_200_000));
    b.close().unwrap();
}

#[tokio::test]
async fn produce_to_a_zstd_topic_stores_zstd_and_refuses_bad_timestamps() {
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    assert_eq!(
        create(
            &b,
            "z",
            &[
                ("compression.type", "zstd"),
                ("message.timestamp.after.max.ms", "0")
            ]
        )
        .await,
        (0, None)
    );
    let produce = |records: Vec<u8>| {
        RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(s("z")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records)))])]),
        )
    };
    let code = |r: ResponseKind| match r {
        ResponseKind::Produce(r) => r.responses[0].partition_responses[0].error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(code(call(&b, produce(simple_batch("v", 3, NOW))).await), 0);
    assert_eq!(
        code(call(&b, produce(simple_batch("v", 1, NOW + 1))).await),
        ResponseError::InvalidTimestamp.code()
    );
    // Every bad record is named (KIP-467), by its index in the batch, with Kafka's message.
    let mixed = batch(&[
        (Some("a"), Some("ok"), NOW),
        (Some("b"), Some("late"), NOW + 5),
        (Some("c"), Some("later"), NOW + 9),
    ]);
    match call(&b, produce(mixed)).await {
        ResponseKind::Produce(r) => {
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, ResponseError::InvalidTimestamp.code());
            let named: Vec<(i32, String)> = p
                .record_errors
                .iter()
                .map(|e| {
                    (
                        e.batch_index,
                        e.batch_index_error_message.as_ref().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(named.len(), 2, "{named:?}");
            assert_eq!((named[0].0, named[1].0), (1, 2));
            assert!(
                named[1].1.contains(&format!(
                    "Timestamp {} of message with offset 2 is out of range",
                    NOW + 9
                )),
                "{named:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let log = b.logs().get(&TopicPartition::new("z", 0)).unwrap();
    let read = log.read(Offset(0), 1 << 20).unwrap().records;
    assert_eq!(stored_batches(&read)[0].0, Compression::Zstd);
    assert_eq!(values(&read).len(), 3);
    b.close().unwrap();
}
