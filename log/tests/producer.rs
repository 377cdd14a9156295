//! The Producer over the embedded transport: Kafka's key placement, per-partition order,
//! batching by batch.size and linger.ms, retries that keep order, flush, backpressure
//! bounded by buffer.memory (all of it given back as batches complete), and waiting for a
//! topic's metadata (not for an invalid name).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{broker, embedded};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, RequestContext};
use rill_log::client::partitioner::partition_for_key;
use rill_log::client::transport::BoxFuture;
use rill_log::client::{Admin, ClientError, Producer, ProducerConfig, ProducerRecord, Transport};
use rill_log::record::batch::BatchIter;
use rill_log::record::{decode_batches, NewRecord};

/// A producer with little room: records of 124 bytes toward batch.size (a 1-byte key, a
/// 99-byte value) go 8 to a batch, and about one batch of them (with what their memory
/// costs: their values as allocated, slots, deliveries) fills buffer.memory.
fn small_producer(b: &Arc<Broker>) -> Producer {
    let config = ProducerConfig {
        linger_ms: 0,
        batch_size: 1_000,
        buffer_memory: 3_000,
        ..Default::default()
    };
    Producer::new(embedded(b), config)
}

/// The Kafka error code a client error carries, if any.
fn kafka_error(e: &ClientError) -> Option<ResponseError> {
    match e {
        ClientError::Kafka { error, .. } => Some(*error),
        _ => None,
    }
}

/// The values of a partition's records, in order.
async fn values(b: &Broker, topic: &str, partition: i32) -> Vec<String> {
    batches(b, topic, partition)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every batch of a partition: (record count, values).
async fn batches(b: &Broker, topic: &str, partition: i32) -> Vec<Vec<String>> {
    let req = FetchRequest::default()
        .with_max_bytes(64 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_partition_max_bytes(64 << 20)])]);
    let Some(ResponseKind::Fetch(f)) = b
        .handle(&RequestContext::embedded("t"), RequestKind::Fetch(req))
        .await
        .unwrap()
    else {
        panic!()
    };
    let records = f.responses[0].partitions[0].records.clone().unwrap();
    BatchIter::new(&records)
        .map(|b| {
            let (_, bytes, _) = b.unwrap();
            decode_batches(bytes)
                .unwrap()
                .iter()
                .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn keys_land_where_kafka_puts_them_in_send_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 3, &[])
        .await
        .unwrap();
    let producer = Producer::new(
        embedded(&b),
        ProducerConfig {
            linger_ms: 1,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..300 {
        let key = format!("k{}", i % 30);
        let d = producer
            .send(ProducerRecord::new("t", Some(key.clone()), format!("v{i}")))
            .await
            .unwrap();
        deliveries.push((key, i, d));
    }
    let mut next_offset = [0i64; 3];
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); 3];
    for (key, i, d) in deliveries {
        let md = d.await.unwrap();
        assert_eq!(
            md.partition,
            partition_for_key(key.as_bytes(), 3),
            "key {key}"
        );
        // Offsets within a partition follow the order of send.
        assert_eq!(md.offset, next_offset[md.partition as usize]);
        next_offset[md.partition as usize] += 1;
        sent[md.partition as usize].push(format!("v{i}"));
    }
    for p in 0..3 {
        let stored: Vec<String> = values(&b, "t", p).await;
        assert_eq!(stored, sent[p as usize]);
    }
    producer.close().await;
    b.close().unwrap();
}

/// Topic "t" with `partitions`, and a producer of batches of 1000 bytes with a long linger
/// (only batch.size or flush can send) that has sent `records` keyless 100-byte values and
/// flushed; returns where each record went.
async fn send_keyless(b: &Arc<Broker>, partitions: i32, records: usize) -> (Producer, Vec<i32>) {
    Admin::new(embedded(b))
        .create_topic("t", partitions, &[])
        .await
        .unwrap();
    let config = ProducerConfig {
        linger_ms: 3_600_000,
        batch_size: 1_000,
        ..Default::default()
    };
    let producer = Producer::new(embedded(b), config);
    let mut deliveries = Vec::new();
    for i in 0..records {
        let record = ProducerRecord::new("t", None::<String>, format!("{i:0>100}"));
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    let mut placed = Vec::new();
    for d in deliveries {
        placed.push(d.await.unwrap().partition);
    }
    (producer, placed)
}

#[tokio::test]
async fn batches_close_at_batch_size_and_flush_sends_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let (producer, _) = send_keyless(&b, 1, 25).await;
    let sizes: Vec<usize> = batches(&b, "t", 0).await.iter().map(Vec::len).collect();
    // Each record costs 100 + 24 bytes: 8 fit in 1000 (992), a 9th starts the next batch,
    // as Kafka's accumulator does.
    assert_eq!(sizes, vec![8, 8, 8, 1]);
    producer.close().await;
    b.close().unwrap();
}

/// Records without a key stick to one partition until its batch is full, then move to
/// another (KIP-480's sticky partitioner, Kafka's `StickyPartitionCacheTest`), also when
/// the records do not add up to `batch.size` exactly: 124-byte records leave a 1000-byte
/// batch 8 bytes short, and that is full.
#[tokio::test]
async fn keyless_records_move_to_another_partition_when_their_batch_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let (producer, partitions) = send_keyless(&b, 3, 32).await;
    // Eight records to a batch, and each next batch on another partition.
    for (n, chunk) in partitions.chunks(8).enumerate() {
        assert!(
            chunk.iter().all(|p| *p == chunk[0]),
            "batch {n}: {partitions:?}"
        );
    }
    for pair in partitions.chunks(8).collect::<Vec<_>>().windows(2) {
        assert_ne!(pair[0][0], pair[1][0], "{partitions:?}");
    }
    let mut sizes = Vec::new();
    for p in 0..3 {
        sizes.extend(batches(&b, "t", p).await.iter().map(Vec::len));
    }
    assert_eq!(sizes, vec![8; 4], "{partitions:?}");
    producer.close().await;
    b.close().unwrap();
}

#[tokio::test]
async fn linger_groups_records_into_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let config = ProducerConfig {
        linger_ms: 200,
        ..Default::default()
    };
    let producer = Producer::new(embedded(&b), config);
    let mut deliveries = Vec::new();
    for i in 0..40 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", Some("k"), format!("v{i}")))
                .await
                .unwrap(),
        );
    }
    assert!(deliveries.windows(2).all(|w| w[0].same_batch(&w[1])));
    for d in deliveries {
        d.await.unwrap();
    }
    let sizes: Vec<usize> = batches(&b, "t", 0).await.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![40]);
    // A record sent after the batch went out is in another.
    let first = producer
        .send(ProducerRecord::new("t", Some("k"), "a"))
        .await
        .unwrap();
    producer.flush().await;
    let second = producer
        .send(ProducerRecord::new("t", Some("k"), "b"))
        .await
        .unwrap();
    assert!(!first.same_batch(&second));
    producer.close().await;
    b.close().unwrap();
}

/// Fails every other produce request with a retriable error before it reaches the broker.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Transport>,
    calls: AtomicUsize,
}

impl Transport for Flaky {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            if let RequestKind::Produce(p) = &request {
                if self.calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                    let t = &p.topic_data[0];
                    let resp = ProduceResponse::default().with_responses(vec![
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(vec![PartitionProduceResponse::default()
                                .with_index(t.partition_data[0].index)
                                .with_error_code(ResponseError::NotLeaderOrFollower.code())]),
                    ]);
                    return Ok(Some(ResponseKind::Produce(resp)));
                }
            }
            self.inner.send(request).await
        })
    }
}

/// `send_to_partition` queues many records under one lock: they land in order, in batches
/// as `send` would make them, and the deliveries it returns (the last of each batch) cover
/// them all; past buffer.memory it waits for room rather than failing.
#[tokio::test]
async fn send_to_partition_queues_in_order_and_returns_each_batchs_last_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    // 25 records: the call has to wait for the first batches to complete.
    let producer = small_producer(&b);
    let record = |i: usize| NewRecord {
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from(format!("{i:0>99}"))),
        timestamp_ms: 1_000 + i as i64,
        headers: Vec::new(),
    };
    let last = producer
        .send_to_partition("t", 1, (0..25).map(record))
        .await
        .unwrap();
    let mut offsets = Vec::new();
    for d in last {
        let md = d.await.unwrap();
        assert_eq!(md.partition, 1);
        offsets.push(md.offset);
    }
    assert_eq!(
        offsets.last(),
        Some(&24),
        "the last record's delivery is there"
    );
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    let sent: Vec<String> = values(&b, "t", 1).await;
    let expect: Vec<String> = (0..25).map(|i| format!("{i:0>99}")).collect();
    assert_eq!(sent, expect);
    assert!(batches(&b, "t", 0).await.is_empty());
    // What `send` refuses, it refuses too.
    let err = producer
        .send_to_partition("t", 2, [record(0)])
        .await
        .unwrap_err();
    assert_eq!(
        kafka_error(&err),
        Some(ResponseError::UnknownTopicOrPartition),
        "{err:?}"
    );
    let huge = NewRecord {
        value: Some(Bytes::from(vec![b'x'; 4_000])),
        ..record(0)
    };
    // Records before a refused one are queued, as sending them one by one would.
    let err = producer
        .send_to_partition("t", 0, [record(7), huge, record(8)])
        .await
        .unwrap_err();
    assert_eq!(
        kafka_error(&err),
        Some(ResponseError::MessageTooLarge),
        "{err:?}"
    );
    producer.flush().await;
    let sent: Vec<String> = values(&b, "t", 0).await;
    assert_eq!(sent, vec![format!("{:0>99}", 7)]);
    producer.close().await;
    b.close().unwrap();
}

/// `send_all` queues records of any topics and partitions in order under one lock per run:
/// a topic the producer has not seen yet and a full buffer.memory make it wait as `send`
/// does, and a refused record stops it with the records after it left to the caller.
#[tokio::test]
async fn send_all_queues_in_order_and_stops_at_a_refused_record() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let admin = Admin::new(embedded(&b));
    admin.create_topic("t", 2, &[]).await.unwrap();
    admin.create_topic("u", 1, &[]).await.unwrap();
    // 30 records: the call has to wait for room.
    let producer = small_producer(&b);
    let record = |topic: &str, partition: i32, i: usize| {
        let mut r = ProducerRecord::new(topic, Some("k"), format!("{i:0>99}"));
        r.partition = Some(partition);
        r.timestamp_ms = Some(1_000 + i as i64);
        r
    };
    // Topic `u` comes first after 10 records of `t`: its metadata is fetched on the way.
    let records = (0..30).map(|i| match i {
        10..=14 => record("u", 0, i),
        _ => record("t", (i % 2) as i32, i),
    });
    let mut deliveries = Vec::new();
    producer
        .send_all(&mut records.into_iter(), &mut deliveries)
        .await
        .unwrap();
    let mut acked = Vec::new();
    for d in deliveries {
        let md = d.await.unwrap();
        acked.push((md.partition, md.offset));
    }
    let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..30)
            .filter(|i| keep(*i))
            .map(|i| format!("{i:0>99}"))
            .collect()
    };
    let in_u = |i: usize| (10..=14).contains(&i);
    assert_eq!(
        values(&b, "t", 0).await,
        expect(&|i| !in_u(i) && i % 2 == 0)
    );
    assert_eq!(
        values(&b, "t", 1).await,
        expect(&|i| !in_u(i) && i % 2 == 1)
    );
    assert_eq!(values(&b, "u", 0).await, expect(&in_u));
    // The deliveries kept include each partition's last record (12 and 13 records on t's,
    // 5 on u's).
    for last in [(0, 11), (1, 12), (0, 4)] {
        assert!(acked.contains(&last), "{acked:?}");
    }
    // A record `send` refuses stops the call; the ones after it are left.
    let mut huge = record("t", 0, 0);
    huge.value = Some(Bytes::from(vec![b'x'; 4_000]));
    let mut records = vec![record("t", 0, 40), huge, record("t", 0, 41)].into_iter();
    let err = producer
        .send_all(&mut records, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(
        kafka_error(&err),
        Some(ResponseError::MessageTooLarge),
        "{err:?}"
    );
    let left: Vec<_> = records.map(|r| r.value).collect();
    assert_eq!(left, vec![Some(Bytes::from(format!("{:0>99}", 41)))]);
    producer.flush().await;
    let sent = values(&b, "t", 0).await;
    assert_eq!(sent.last(), Some(&format!("{:0>99}", 40)));
    producer.close().await;
    b.close().unwrap();
}

#[tokio::test]
async fn retries_keep_each_partitions_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    let flaky: Arc<dyn Transport> = Arc::new(Flaky {
        inner: embedded(&b),
        calls: AtomicUsize::new(0),
    });
    let config = ProducerConfig {
        linger_ms: 0,
        batch_size: 300,
        retry_backoff_ms: 1,
        ..Default::default()
    };
    let producer = Producer::new(flaky, config);
    let mut deliveries = Vec::new();
    for i in 0..200 {
        deliveries.push(
            producer
                .send(ProducerRecord::new(
                    "t",
                    Some(format!("{}", i % 2)),
                    format!("v{i:03}"),
                ))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
    for p in 0..2 {
        let stored: Vec<String> = values(&b, "t", p).await;
        let mut sorted = stored.clone();
        sorted.sort();
        assert_eq!(stored, sorted, "partition {p} out of order");
        assert_eq!(stored.len(), 100);
    }
    producer.close().await;
    b.close().unwrap();
}

/// Answers Metadata, never answers Produce: a stalled broker.
#[derive(Debug)]
struct Stalled {
    inner: Arc<dyn Transport>,
}

impl Transport for Stalled {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            if matches!(request, RequestKind::Produce(_)) {
                std::future::pending::<()>().await;
            }
            self.inner.send(request).await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_broker_blocks_send_within_buffer_memory_then_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let config = ProducerConfig {
        buffer_memory: 10_000,
        max_block_ms: 500,
        linger_ms: 0,
        request_timeout_ms: 3_600_000,
        ..Default::default()
    };
    let producer = Producer::new(
        Arc::new(Stalled {
            inner: embedded(&b),
        }),
        config,
    );
    let mut accepted = 0usize;
    let mut held = Vec::new();
    let err = loop {
        match producer
            .send(ProducerRecord::new("t", Some("k"), vec![b'x'; 975]))
            .await
        {
            Ok(d) => {
                accepted += 1;
                held.push(d);
            }
            Err(e) => break e,
        }
        assert!(accepted < 10, "more than buffer.memory was accepted");
    };
    // Each record holds over 1 000 bytes (its 975-byte value as allocated, its slot in the
    // batch, its delivery) and the batch has its own: 7 fill the 10 000 bytes; the next waits
    // max.block.ms, then fails.
    assert!((6..10).contains(&accepted), "{accepted} records accepted");
    assert!(
        matches!(err, ClientError::Timeout("buffer.memory")),
        "{err:?}"
    );
    b.close().unwrap();
}

#[tokio::test]
async fn a_batch_that_keeps_failing_fails_after_the_delivery_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    // acks=all can never succeed: min.insync.replicas exceeds the one broker (retriable).
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    let config = ProducerConfig {
        linger_ms: 0,
        retry_backoff_ms: 5,
        delivery_timeout_ms: 200,
        ..Default::default()
    };
    let producer = Producer::new(embedded(&b), config);
    let d = producer
        .send(ProducerRecord::new("t", Some("k"), "v"))
        .await
        .unwrap();
    let err = d.await.unwrap_err();
    assert_eq!(err.kafka_error(), Some(ResponseError::NotEnoughReplicas));
    // Nothing is left pending: flush and close return.
    producer.close().await;
    b.close().unwrap();
}

/// Counts the Metadata requests it passes on.
#[derive(Debug)]
struct CountingMetadata {
    inner: Arc<dyn Transport>,
    metadata: AtomicUsize,
}

impl Transport for CountingMetadata {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        if matches!(request, RequestKind::Metadata(_)) {
            self.metadata.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.send(request)
    }
}

/// A topic name the broker refuses fails the send at its first metadata answer; an unknown
/// (valid) name is asked about again until `max.block.ms`, as it may yet be created.
#[tokio::test(start_paused = true)]
async fn an_invalid_topic_name_fails_at_once_and_an_unknown_topic_waits_for_max_block_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut bc = rill_log::broker::BrokerConfig::new(dir.path());
    bc.offsets_topic_num_partitions = 1;
    bc.auto_create_topics_enable = false;
    let b = Arc::new(Broker::open(bc, Arc::new(rill_log::time::SystemClock)).unwrap());
    let counting = Arc::new(CountingMetadata {
        inner: embedded(&b),
        metadata: AtomicUsize::new(0),
    });
    let config = ProducerConfig {
        max_block_ms: 5_000,
        retry_backoff_ms: 100,
        ..Default::default()
    };
    let producer = Producer::new(counting.clone(), config);
    let err = producer
        .send(ProducerRecord::new("no/slashes", Some("k"), "v"))
        .await
        .unwrap_err();
    assert_eq!(
        kafka_error(&err),
        Some(ResponseError::InvalidTopicException)
    );
    assert_eq!(counting.metadata.swap(0, Ordering::SeqCst), 1);
    let err = producer
        .send(ProducerRecord::new("missing", Some("k"), "v"))
        .await
        .unwrap_err();
    assert_eq!(
        kafka_error(&err),
        Some(ResponseError::UnknownTopicOrPartition)
    );
    // Asked every retry.backoff.ms for max.block.ms (the clock is paused: no real wait).
    assert!(
        counting.metadata.load(Ordering::SeqCst) >= 40,
        "{counting:?}"
    );
    producer.close().await;
    b.close().unwrap();
}

/// Holds Produce requests until opened.
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn Transport>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Transport for Gated {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            if matches!(request, RequestKind::Produce(_)) {
                let _ = self.open.subscribe().wait_for(|open| *open).await;
            }
            self.inner.send(request).await
        })
    }
}

/// What a queued record takes of buffer.memory all comes back when its batch is done: with
/// the broker held, the same records (of sizes from 1 byte to 2 KiB, so batches opened for
/// large records grow for small ones) fill buffer.memory to the same count twice.
#[tokio::test]
async fn buffer_memory_comes_back_whole_after_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let gate = Arc::new(Gated {
        inner: embedded(&b),
        open: tokio::sync::watch::channel(false).0,
    });
    let config = ProducerConfig {
        buffer_memory: 256 << 10,
        max_block_ms: 50,
        // Batches go when full, or when another is behind them.
        linger_ms: 60_000,
        ..Default::default()
    };
    let producer = Producer::new(gate.clone(), config);
    let mut filled = Vec::new();
    for _ in 0..2 {
        gate.open.send_replace(false);
        let mut deliveries = Vec::new();
        let err = loop {
            let size = (deliveries.len() * 7_919) % 2_048 + 1;
            match producer
                .send(ProducerRecord::new("t", None::<Vec<u8>>, vec![b'x'; size]))
                .await
            {
                Ok(d) => deliveries.push(d),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, ClientError::Timeout("buffer.memory")),
            "{err:?}"
        );
        filled.push(deliveries.len());
        gate.open.send_replace(true);
        producer.flush().await;
        for d in deliveries {
            d.await.unwrap();
        }
    }
    assert!(filled[0] > 100, "{filled:?}");
    assert_eq!(filled[0], filled[1]);
    producer.close().await;
    b.close().unwrap();
}

/// KIP-467 (Kafka's `LogValidatorTest.testCompactedTopicWithoutKey` and the producer's
/// per-record errors): keyless records in a batch for a compacted topic fail the batch with
/// INVALID_RECORD, and the answer names each bad record by its index with Kafka's message.
/// The producer fails exactly those records with that message; the others of the batch fail
/// with `BatchRejected` naming the bad ones, so they can be told apart and sent again.
#[tokio::test]
async fn per_record_errors_name_the_bad_records_of_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("compacted", 1, &[("cleanup.policy", "compact")])
        .await
        .unwrap();
    // On the wire: record_errors and Kafka's summary message.
    let recs = [
        NewRecord::new(Some("k0"), Some("v"), 1),
        NewRecord::new(None::<&str>, Some("v"), 1),
        NewRecord::new(Some("k2"), Some("v"), 1),
        NewRecord::new(None::<&str>, Some("v"), 1),
    ];
    let bytes = rill_log::record::encode_batch(&recs, rill_log::record::Compression::None).unwrap();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("compacted")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(bytes))),
            ])]);
    let resp = match b
        .handle(&RequestContext::embedded("t"), RequestKind::Produce(req))
        .await
        .unwrap()
        .unwrap()
    {
        ResponseKind::Produce(r) => r.responses[0].partition_responses[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(resp.error_code, ResponseError::InvalidRecord.code());
    let named: Vec<i32> = resp.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(named, vec![1, 3]);
    assert_eq!(
        resp.record_errors[0].batch_index_error_message.as_deref(),
        Some("Compacted topic cannot accept message without key in topic partition compacted-0")
    );
    assert!(resp
        .error_message
        .as_deref()
        .unwrap()
        .starts_with("One or more records have been rejected due to 2 record errors in total"));
    // Through the producer: one batch of four, two of them keyless.
    let p = Producer::new(
        embedded(&b),
        ProducerConfig {
            linger_ms: 50,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for (i, key) in [Some("k0"), None, Some("k2"), None].into_iter().enumerate() {
        let mut r = ProducerRecord::new("compacted", key, format!("v{i}"));
        r.partition = Some(0);
        deliveries.push(p.send(r).await.unwrap());
    }
    let mut outcomes = Vec::new();
    for d in deliveries {
        outcomes.push(d.wait().await);
    }
    for i in [1, 3] {
        match &outcomes[i] {
            Err(ClientError::Kafka { error, message }) => {
                assert_eq!(*error, ResponseError::InvalidRecord);
                assert!(
                    message.as_deref().unwrap().contains("without key"),
                    "{message:?}"
                );
            }
            other => panic!("record {i}: {other:?}"),
        }
    }
    for i in [0, 2] {
        match &outcomes[i] {
            Err(ClientError::BatchRejected(bad)) => assert_eq!(bad, &vec![1, 3]),
            other => panic!("record {i}: {other:?}"),
        }
    }
    assert!(
        values(&b, "compacted", 0).await.is_empty(),
        "nothing written"
    );
    p.close().await;
    b.close().unwrap();
}

/// What [`Pipe`] does to the produce request with a given number (counting from 0).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Answer NOT_LEADER_OR_FOLLOWER without writing anything.
    NotLeader,
    /// Write it, then lose the answer (the connection "breaks").
    LostAnswer,
}

/// A request written to a [`Pipe`], with where its answer goes.
type Written = (
    RequestKind,
    tokio::sync::oneshot::Sender<Result<Option<ResponseKind>, ClientError>>,
);

/// A connection to the embedded broker that keeps requests in the order they were written
/// and answers them one at a time, a little later, so several of a partition's batches are
/// in flight at once (as over TCP); injects `faults` into chosen produce requests.
#[derive(Debug)]
struct Pipe {
    queue: tokio::sync::mpsc::UnboundedSender<Written>,
    /// Produce requests written and not yet answered, and the most seen at once.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Pipe {
    fn new(inner: Arc<dyn Transport>, faults: Vec<(usize, Fault)>) -> Pipe {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<Written>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&in_flight);
        tokio::spawn(async move {
            let mut produced = 0usize;
            while let Some((req, tx)) = rx.recv().await {
                let produce = matches!(req, RequestKind::Produce(_));
                if produce {
                    // Time for the requests behind this one to be written.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                let fault = produce
                    .then(|| faults.iter().find(|(n, _)| *n == produced).map(|(_, f)| *f))
                    .flatten();
                if produce {
                    produced += 1;
                }
                let resp = match (fault, &req) {
                    (Some(Fault::NotLeader), RequestKind::Produce(p)) => {
                        let t = &p.topic_data[0];
                        Ok(Some(ResponseKind::Produce(
                            ProduceResponse::default().with_responses(vec![
                                TopicProduceResponse::default()
                                    .with_name(t.name.clone())
                                    .with_partition_responses(vec![
                                        PartitionProduceResponse::default()
                                            .with_index(t.partition_data[0].index)
                                            .with_error_code(
                                                ResponseError::NotLeaderOrFollower.code(),
                                            ),
                                    ]),
                            ]),
                        )))
                    }
                    (Some(Fault::LostAnswer), _) => {
                        let _ = inner.send(req).await;
                        Err(ClientError::Network("connection reset".into()))
                    }
                    _ => inner.send(req).await,
                };
                if produce {
                    counter.fetch_sub(1, Ordering::SeqCst);
                }
                let _ = tx.send(resp);
            }
        });
        Pipe {
            queue,
            in_flight,
            max_in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Transport for Pipe {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        let (tx, _) = tokio::sync::oneshot::channel();
        self.send_ordered(request, tx)
    }

    fn send_ordered(
        &self,
        request: RequestKind,
        written: tokio::sync::oneshot::Sender<()>,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if matches!(request, RequestKind::Produce(_)) {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            }
            self.queue
                .send((request, tx))
                .map_err(|_| ClientError::Closed)?;
            let _ = written.send(());
            rx.await.map_err(|_| ClientError::Closed)?
        })
    }
}

/// 60 records in batches of 3 (by batch.size) through a pipelining connection with `faults`;
/// returns the partition's values and the most produce requests seen in flight at once.
async fn pipelined(
    idempotent: bool,
    max_in_flight: usize,
    faults: Vec<(usize, Fault)>,
) -> (Vec<String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let pipe = Arc::new(Pipe::new(embedded(&b), faults));
    let config = ProducerConfig {
        linger_ms: 0,
        batch_size: 3 * (24 + 4),
        retry_backoff_ms: 1,
        enable_idempotence: idempotent,
        acks: -1,
        max_in_flight_requests_per_connection: max_in_flight,
        ..Default::default()
    };
    let producer = Producer::new(Arc::clone(&pipe) as Arc<dyn Transport>, config);
    let mut deliveries = Vec::new();
    for i in 0..60 {
        let mut r = ProducerRecord::new("t", None::<String>, format!("v{i:02}"));
        r.partition = Some(0);
        deliveries.push(producer.send(r).await.unwrap());
    }
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await;
    let stored = values(&b, "t", 0).await;
    b.close().unwrap();
    (stored, pipe.max_in_flight.load(Ordering::SeqCst))
}

fn in_order(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("v{i:02}")).collect()
}

/// Kafka pipelines up to `max.in.flight.requests.per.connection` requests; rill does the
/// same per partition, and a partition's batches still land in order.
#[tokio::test]
async fn a_partitions_batches_are_pipelined_up_to_max_in_flight_and_land_in_order() {
    let (stored, most) = pipelined(true, 5, vec![]).await;
    assert_eq!(stored, in_order(60));
    assert!((2..=5).contains(&most), "{most} in flight at once");
    let (stored, most) = pipelined(false, 1, vec![]).await;
    assert_eq!(stored, in_order(60));
    assert_eq!(most, 1);
}

/// Kafka's `SenderTest.testRetryWhenProducerIdChanges`-style scenario, from the client's
/// side (Kafka's `TransactionManager` re-enqueues in sequence order): a batch in the middle
/// of a pipeline fails retriably, the broker refuses the batches behind it as out of order
/// (a gap), and all of them are resent in order: every record once, in order.
#[tokio::test]
async fn an_idempotent_producer_resends_a_failed_batch_and_those_behind_it_in_order() {
    let (stored, most) = pipelined(true, 5, vec![(4, Fault::NotLeader)]).await;
    assert_eq!(stored, in_order(60));
    assert!(most >= 2, "{most}");
    // The answer to a written batch lost: its retry is a duplicate, recognised as one.
    let (stored, _) = pipelined(true, 5, vec![(2, Fault::LostAnswer), (9, Fault::NotLeader)]).await;
    assert_eq!(stored, in_order(60));
}
