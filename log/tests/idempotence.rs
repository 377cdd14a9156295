//! Idempotent producers: producer ids that are never reused, retried batches answered with
//! their original offsets instead of being written twice, sequence gaps and stale epochs
//! refused with Kafka's codes, the state surviving clean restarts and crashes, idle producers
//! forgotten after `producer.id.expiration.ms`, and the Producer that never duplicates a
//! record when an acknowledgement is lost.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, BrokerConfig, RequestContext};
use rill_log::client::transport::BoxFuture;
use rill_log::client::{
    Admin, ClientError, EmbeddedTransport, Producer, ProducerConfig, ProducerRecord, Transport,
};
use rill_log::record::{decode_batches, encode_idempotent_batch, Compression, NewRecord};
use rill_log::storage::{LogConfig, PartitionLog};
use rill_log::time::ManualClock;
use rill_log::types::{Offset, TopicPartition};

fn broker(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Arc<Broker> {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    config.log.producer_id_expiration_ms = 60_000;
    Arc::new(Broker::open(config, clock.clone()).unwrap())
}

async fn call(b: &Broker, r: RequestKind) -> ResponseKind {
    b.handle(&RequestContext::embedded("test"), r)
        .await
        .unwrap()
        .unwrap()
}

async fn init(b: &Broker, bump: Option<(i64, i16)>) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id(ProducerId(bump.map_or(-1, |(p, _)| p)))
        .with_producer_epoch(bump.map_or(-1, |(_, e)| e));
    match call(b, RequestKind::InitProducerId(req)).await {
        ResponseKind::InitProducerId(r) => {
            assert_eq!(r.error_code, 0);
            (r.producer_id.0, r.producer_epoch)
        }
        other => panic!("{other:?}"),
    }
}

fn batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
    let recs: Vec<NewRecord> = values
        .iter()
        .map(|v| NewRecord::new(None::<String>, Some(v.to_string()), 1_000))
        .collect();
    encode_idempotent_batch(&recs, Compression::None, pid, epoch, seq, false).unwrap()
}

/// (error code, base offset) of a produce of `bytes` to t-0.
async fn produce(b: &Broker, bytes: Vec<u8>) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(bytes)))])]);
    match call(b, RequestKind::Produce(req)).await {
        ResponseKind::Produce(r) => {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        }
        other => panic!("{other:?}"),
    }
}

fn log_end(b: &Broker) -> i64 {
    b.logs()
        .get(&TopicPartition::new("t", 0))
        .unwrap()
        .log_end_offset()
        .0
}

#[tokio::test]
async fn retries_are_deduplicated_gaps_and_stale_epochs_refused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let (pid, epoch) = {
        let b = broker(dir.path(), &clock);
        Admin::new(Arc::new(EmbeddedTransport::new(Arc::clone(&b), "t")))
            .create_topic("t", 1, &[])
            .await
            .unwrap();
        let (pid, epoch) = init(&b, None).await;
        let (other, _) = init(&b, None).await;
        assert_ne!(pid, other, "every InitProducerId gets its own id");
        assert_eq!(produce(&b, batch(pid, epoch, 0, &["a", "b"])).await, (0, 0));
        assert_eq!(produce(&b, batch(pid, epoch, 2, &["c"])).await, (0, 2));
        // The retry of either batch gets its first offset back; nothing is written.
        assert_eq!(produce(&b, batch(pid, epoch, 0, &["a", "b"])).await, (0, 0));
        assert_eq!(produce(&b, batch(pid, epoch, 2, &["c"])).await, (0, 2));
        assert_eq!(log_end(&b), 3);
        // A gap is refused.
        let oos = ResponseError::OutOfOrderSequenceNumber.code();
        assert_eq!(produce(&b, batch(pid, epoch, 5, &["x"])).await.0, oos);
        b.close().unwrap();
        (pid, epoch)
    };
    // A clean restart keeps the state (snapshot), and new ids never reuse old ones.
    let b = broker(dir.path(), &clock);
    assert_eq!(produce(&b, batch(pid, epoch, 2, &["c"])).await, (0, 2));
    let (fresh, _) = init(&b, None).await;
    assert!(
        fresh > pid + 1,
        "ids are not reused after a restart: {fresh} vs {pid}"
    );
    // Without a transactional id, a producer naming its id and epoch after an error (KIP-360)
    // gets a fresh id, as from Kafka's coordinator: nothing records which epoch of an
    // idempotent id is current, so the broker must not bump whatever id a request names
    // (before, it handed out `pid` at epoch + 1 to anyone who asked).
    let (renewed, renewed_epoch) = init(&b, Some((pid, epoch))).await;
    assert!(
        renewed > fresh && renewed_epoch == 0,
        "{renewed}/{renewed_epoch}"
    );
    // Naming only one of the two is refused (KafkaApis.handleInitProducerIdRequest).
    let half = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(-1);
    match call(&b, RequestKind::InitProducerId(half)).await {
        ResponseKind::InitProducerId(r) => {
            assert_eq!(r.error_code, ResponseError::InvalidRequest.code())
        }
        other => panic!("{other:?}"),
    }
    // A newer epoch of an id (as a transaction coordinator's fencing marker brings) starts
    // again at sequence 0 and makes the old epoch stale.
    let bumped = epoch + 1;
    assert_eq!(produce(&b, batch(pid, bumped, 0, &["d"])).await, (0, 3));
    let stale = ResponseError::InvalidProducerEpoch.code();
    assert_eq!(produce(&b, batch(pid, epoch, 3, &["e"])).await.0, stale);
    assert_eq!(log_end(&b), 4);
    // An idle producer is forgotten after producer.id.expiration.ms: any sequence goes.
    clock.advance_ms(61_000);
    b.logs().run_retention();
    assert_eq!(produce(&b, batch(pid, bumped, 40, &["f"])).await, (0, 4));
    b.close().unwrap();
}

#[test]
fn a_crash_rebuilds_the_state_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 0);
    let clock = ManualClock::new(1_000);
    let open = || PartitionLog::open(dir.path(), tp.clone(), LogConfig::default(), clock.clone());
    {
        let log = open().unwrap();
        for (seq, v) in [(0, "a"), (1, "b"), (2, "c")] {
            log.append(&mut batch(9, 0, seq, &[v])).unwrap();
        }
        // No close: no snapshot, no clean checkpoint, as after kill -9.
    }
    let log = open().unwrap();
    let dup = log.append(&mut batch(9, 0, 1, &["b"])).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, Offset(1));
    assert!(log.append(&mut batch(9, 0, 7, &["z"])).is_err());
    assert_eq!(log.log_end_offset(), Offset(3));
    // A damaged snapshot is ignored: the log is replayed instead.
    log.close().unwrap();
    drop(log);
    let snap = dir.path().join("producer.snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    let log = open().unwrap();
    assert!(log.append(&mut batch(9, 0, 2, &["c"])).unwrap().duplicate);
    assert_eq!(log.producer(9).unwrap().batches.len(), 3);
    log.close().unwrap();
}

/// Delivers the first produce request to the broker but loses its answer, as a dropped
/// connection would after the write.
#[derive(Debug)]
struct LostAck {
    inner: Arc<dyn Transport>,
    lost: AtomicBool,
}

impl Transport for LostAck {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            let is_produce = matches!(request, RequestKind::Produce(_));
            let resp = self.inner.send(request).await;
            if is_produce && !self.lost.swap(true, Ordering::SeqCst) {
                return Err(ClientError::Network("connection reset".into()));
            }
            resp
        })
    }
}

#[tokio::test]
async fn a_lost_acknowledgement_never_writes_a_record_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let b = broker(dir.path(), &clock);
    let embedded: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&b), "t"));
    Admin::new(Arc::clone(&embedded))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    for idempotent in [true, false] {
        let before = log_end(&b);
        let producer = Producer::new(
            Arc::new(LostAck {
                inner: Arc::clone(&embedded),
                lost: AtomicBool::new(false),
            }),
            ProducerConfig {
                enable_idempotence: idempotent,
                linger_ms: 0,
                retry_backoff_ms: 1,
                ..Default::default()
            },
        );
        let mut ds = Vec::new();
        for i in 0..3 {
            let mut r = ProducerRecord::new("t", None::<String>, format!("r{i}"));
            r.partition = Some(0);
            ds.push(producer.send(r).await.unwrap());
        }
        let mut offsets = Vec::new();
        for d in ds {
            offsets.push(d.await.unwrap().offset);
        }
        producer.close().await;
        let log = b.logs().get(&TopicPartition::new("t", 0)).unwrap();
        let read = log.read(Offset(before), 1 << 20).unwrap();
        let values: Vec<String> = decode_batches(&read.records)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect();
        if idempotent {
            // The retry of the first batch was recognised: each record once, offsets right.
            assert_eq!(values.len(), 3, "{values:?}");
            assert_eq!(offsets, vec![before, before + 1, before + 2]);
        } else {
            // Without idempotence the same loss writes the first batch twice: what the
            // feature is for.
            assert!(values.len() > 3, "{values:?}");
        }
    }
    b.close().unwrap();
}

#[test]
fn compaction_keeps_each_producers_last_batch_so_a_crash_replay_knows_its_sequence() {
    use rill_log::record::encode_batch;
    use rill_log::storage::cleaner::{clean, CleanerConfig};
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("c", 0);
    let clock = ManualClock::new(1_000_000);
    let mut config = LogConfig::default();
    // One batch per segment.
    for (k, v) in [("cleanup.policy", "compact"), ("segment.bytes", "100")] {
        config.set(k, v).unwrap();
    }
    let open = || PartitionLog::open(dir.path(), tp.clone(), config.clone(), clock.clone());
    let keyed = |v: &str| [NewRecord::new(Some("k"), Some(v.to_string()), 1_000)];
    {
        let log = open().unwrap();
        // Producer 3's only batch (k=a), then a plain write superseding key k.
        log.append(
            &mut encode_idempotent_batch(&keyed("a"), Compression::None, 3, 0, 0, false).unwrap(),
        )
        .unwrap();
        for v in ["b", "c", "d"] {
            log.append(&mut encode_batch(&keyed(v), Compression::None).unwrap())
                .unwrap();
        }
        let stats = clean(&log, &CleanerConfig::default(), 1_000_000)
            .unwrap()
            .expect("a cleaning pass ran");
        // Of the closed segments (a, b, c; d is active), "b" went as "c" is newer; producer
        // 3's superseded "a" stayed: it is that producer's last batch.
        assert_eq!(stats.records_removed, 1);
        // A crash: no close, no snapshot.
    }
    let _ = std::fs::remove_file(dir.path().join("producer.snapshot"));
    let log = open().unwrap();
    // Replay still finds producer 3's batch: its next sequence goes on, a retry is a
    // duplicate, a gap is refused.
    assert_eq!(log.producer(3).map(|e| e.batches.len()), Some(1));
    let retry = log
        .append(
            &mut encode_idempotent_batch(&keyed("a"), Compression::None, 3, 0, 0, false).unwrap(),
        )
        .unwrap();
    assert!(retry.duplicate);
    assert!(log
        .append(
            &mut encode_idempotent_batch(&keyed("z"), Compression::None, 3, 0, 5, false).unwrap()
        )
        .is_err());
    log.append(
        &mut encode_idempotent_batch(&keyed("e"), Compression::None, 3, 0, 1, false).unwrap(),
    )
    .unwrap();
    log.close().unwrap();
}
