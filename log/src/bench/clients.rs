//! `rill bench produce` and `rill bench consume`: the embedded Producer and Consumer against
//! the storage engine's own append and read paths, measured in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{filled_batch, BenchError, BenchRow};
use crate::broker::{Broker, BrokerConfig};
use crate::client::{
    Admin, ClientError, Consumer, ConsumerConfig, EmbeddedTransport, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, Transport,
};
use crate::storage::{LogConfig, PartitionLog, ReadBuf};
use crate::time::SystemClock;
use crate::types::{Offset, TopicPartition};

impl From<ClientError> for BenchError {
    fn from(e: ClientError) -> Self {
        BenchError::Client(e.to_string())
    }
}

fn open_broker(dir: &Path) -> Result<Arc<Broker>, BenchError> {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    Broker::open(config, Arc::new(SystemClock))
        .map(Arc::new)
        .map_err(|e| BenchError::Client(e.to_string()))
}

/// A fresh embedded broker in `dir` with a one-partition `topic`, and a transport to it.
async fn start_broker(
    dir: &Path,
    topic: &str,
) -> Result<(Arc<Broker>, Arc<dyn Transport>), BenchError> {
    let _ = std::fs::remove_dir_all(dir);
    let broker = open_broker(dir)?;
    let transport: Arc<dyn Transport> =
        Arc::new(EmbeddedTransport::new(Arc::clone(&broker), "bench"));
    Admin::new(Arc::clone(&transport))
        .create_topic(topic, 1, &[])
        .await?;
    Ok((broker, transport))
}

/// Records/s of the storage append path for `value_bytes` records in 16 KiB batches.
fn storage_append_rate(
    dir: &Path,
    value_bytes: usize,
    budget: Duration,
) -> Result<f64, BenchError> {
    let _ = std::fs::remove_dir_all(dir);
    let log = PartitionLog::open(
        dir,
        TopicPartition::new("b", 0),
        LogConfig::default(),
        Arc::new(SystemClock),
    )?;
    let (mut batch, per_batch) = filled_batch(value_bytes, 16 * 1024)?;
    let start = Instant::now();
    let mut records = 0u64;
    while start.elapsed() < budget {
        log.append(&mut batch)?;
        records += per_batch;
    }
    let rate = records as f64 / start.elapsed().as_secs_f64();
    log.close()?;
    drop(log);
    std::fs::remove_dir_all(dir)?;
    Ok(rate)
}

/// Which producer `rill bench produce` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerMode {
    Plain,
    Idempotent,
    /// Transactional, committing every 100 ms.
    Transactional,
}

/// Records/s of one embedded producer (acks=all, default batching) sending `value_bytes`
/// records to a fresh one-partition topic for `phase`.
async fn producer_rate(
    work: &Path,
    value_bytes: usize,
    phase: Duration,
    mode: ProducerMode,
) -> Result<f64, BenchError> {
    let dir = work.join("broker");
    let (broker, transport) = start_broker(&dir, "bench").await?;
    let producer = Producer::new(
        transport,
        ProducerConfig {
            acks: -1,
            enable_idempotence: mode != ProducerMode::Plain,
            transactional_id: (mode == ProducerMode::Transactional).then(|| "bench".to_string()),
            ..Default::default()
        },
    );
    let transactional = mode == ProducerMode::Transactional;
    if transactional {
        producer.init_transactions().await?;
        producer.begin_transaction()?;
    }
    let value = bytes::Bytes::from(vec![b'r'; value_bytes]);
    let start = Instant::now();
    let mut txn_started = Instant::now();
    let mut sent = 0u64;
    let mut last = None;
    while start.elapsed() < phase {
        if transactional && txn_started.elapsed() >= Duration::from_millis(100) {
            producer.commit_transaction().await?;
            producer.begin_transaction()?;
            txn_started = Instant::now();
        }
        for _ in 0..1000 {
            let mut r = ProducerRecord::new("bench", None::<bytes::Bytes>, value.clone());
            r.partition = Some(0);
            last = Some(producer.send(r).await?);
            sent += 1;
        }
    }
    if transactional {
        producer.commit_transaction().await?;
    }
    producer.flush().await;
    if let Some(d) = last {
        d.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    producer.close().await;
    broker
        .close()
        .map_err(|e| BenchError::Client(e.to_string()))?;
    drop(broker);
    std::fs::remove_dir_all(&dir)?;
    Ok(sent as f64 / elapsed)
}

/// Producer throughput (acks=all, embedded) for 100 B and 1 KiB: the plain producer against
/// the storage append path, or the idempotent / transactional one against the plain one in
/// the same run.
pub async fn run_produce(
    work: &Path,
    seconds: f64,
    mode: ProducerMode,
) -> Result<Vec<BenchRow>, BenchError> {
    let phase = Duration::from_secs_f64((seconds / 4.0).max(0.05));
    let mut rows = Vec::new();
    for (name, value_bytes) in [("produce-100B", 100usize), ("produce-1KiB", 1024)] {
        let (name, rate, baseline) = match mode {
            ProducerMode::Plain => {
                let baseline = storage_append_rate(&work.join("append"), value_bytes, phase)?;
                let rate = producer_rate(work, value_bytes, phase, mode).await?;
                (name.to_string(), rate, baseline)
            }
            _ => {
                let plain = producer_rate(work, value_bytes, phase, ProducerMode::Plain).await?;
                let rate = producer_rate(work, value_bytes, phase, mode).await?;
                let suffix = if mode == ProducerMode::Idempotent {
                    "idempotent"
                } else {
                    "transactional"
                };
                (format!("{name}-{suffix}"), rate, plain)
            }
        };
        rows.push(BenchRow::new(&name, "records", rate, "records/s", baseline));
        rows.push(BenchRow::new(
            &name,
            "throughput",
            rate * value_bytes as f64 / 1e6,
            "MB/s",
            baseline * value_bytes as f64 / 1e6,
        ));
    }
    Ok(rows)
}

/// Consumer throughput over a prepared backlog vs reading the same log directly.
pub async fn run_consume(work: &Path, seconds: f64) -> Result<Vec<BenchRow>, BenchError> {
    let budget = Duration::from_secs_f64((seconds / 3.0).max(0.05));
    let dir = work.join("broker");
    let (broker, transport) = start_broker(&dir, "bench").await?;
    // The backlog: 100 B records appended straight to the partition for `budget`.
    let log = broker
        .logs()
        .get(&TopicPartition::new("bench", 0))
        .ok_or_else(|| BenchError::Client("bench partition missing".into()))?;
    let (mut batch, per_batch) = filled_batch(100, 16 * 1024)?;
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed() < budget && total < 20_000_000 {
        log.append(&mut batch)?;
        total += per_batch;
    }
    // Baseline: read the whole log directly, 1 MiB at a time.
    let start = Instant::now();
    let mut buf = ReadBuf::default();
    let mut next = 0i64;
    let end = log.log_end_offset().0;
    while next < end {
        log.read_into(Offset(next), 1 << 20, None, &mut buf)?;
        let mut last = next;
        for item in crate::record::batch::FramedIter::new(buf.as_slice()) {
            last = item?.0.next_offset();
        }
        next = last;
    }
    let baseline = total as f64 / start.elapsed().as_secs_f64();
    // The consumer: decodes every record and hands it out.
    let mut consumer = Consumer::new(
        transport,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 10_000,
            fetch_max_wait_ms: 0,
            ..Default::default()
        },
    );
    consumer.assign([TopicPartition::new("bench", 0)]);
    let start = Instant::now();
    let mut consumed = 0u64;
    while consumed < total {
        let n = consumer.poll().await?.len() as u64;
        if n == 0 && start.elapsed() > budget * 20 {
            return Err(BenchError::Client("consumer stalled".into()));
        }
        consumed += n;
    }
    let rate = consumed as f64 / start.elapsed().as_secs_f64();
    drop(log);
    broker
        .close()
        .map_err(|e| BenchError::Client(e.to_string()))?;
    drop(broker);
    std::fs::remove_dir_all(&dir)?;
    Ok(vec![
        BenchRow::new("consume-100B", "records", rate, "records/s", baseline),
        BenchRow::new(
            "consume-100B",
            "throughput",
            rate * 100.0 / 1e6,
            "MB/s",
            baseline * 100.0 / 1e6,
        ),
    ])
}

/// End-to-end latency at a fixed rate: from the intended send time of each record (so a
/// stalled sender counts against rill, no coordinated omission) to the moment the consumer's
/// poll returns it. The baseline is the producer's acknowledgement latency in the same run.
pub async fn run_e2e(
    work: &Path,
    seconds: f64,
    rate: u64,
    value_bytes: usize,
) -> Result<Vec<BenchRow>, BenchError> {
    use hdrhistogram::Histogram;
    use std::sync::Mutex;
    let dir = work.join("broker");
    let (broker, transport) = start_broker(&dir, "e2e").await?;
    let total = ((seconds * rate as f64) as u64).max(1);
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let e2e = Arc::new(Mutex::new(new_hist()));
    let acks = Arc::new(Mutex::new(new_hist()));
    let origin = Instant::now();

    let mut consumer = Consumer::new(
        Arc::clone(&transport),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 100,
            ..Default::default()
        },
    );
    consumer.assign([TopicPartition::new("e2e", 0)]);
    let reader = {
        let e2e = Arc::clone(&e2e);
        tokio::spawn(async move {
            let mut seen = 0u64;
            while seen < total {
                let records = consumer.poll().await?;
                let now = origin.elapsed().as_micros() as u64;
                let mut h = crate::sync::plain(&e2e);
                for r in &records {
                    let v = r.value.as_deref().unwrap_or_default();
                    let intended = u64::from_be_bytes(
                        v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]),
                    );
                    let _ = h.record(now.saturating_sub(intended).max(1));
                }
                seen += records.len() as u64;
            }
            Ok::<(), ClientError>(())
        })
    };
    let producer = Producer::new(
        transport,
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    );
    let mut ack_tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let intended = origin + interval * i as u32;
        // tokio's timers tick in milliseconds: sleep to just before the intended time, then
        // yield until it, so pacing does not add up to a millisecond to every latency.
        if let Some(early) = intended.checked_sub(Duration::from_millis(2)) {
            tokio::time::sleep_until(tokio::time::Instant::from_std(early)).await;
        }
        while Instant::now() < intended {
            tokio::task::yield_now().await;
        }
        let intended_us = intended.duration_since(origin).as_micros() as u64;
        let mut value = intended_us.to_be_bytes().to_vec();
        value.resize(value_bytes.max(8), b'e');
        let mut r = ProducerRecord::new("e2e", None::<bytes::Bytes>, value);
        r.partition = Some(0);
        let delivery = producer.send(r).await?;
        let acks = Arc::clone(&acks);
        ack_tasks.push(tokio::spawn(async move {
            if delivery.await.is_ok() {
                let now = origin.elapsed().as_micros() as u64;
                let _ = crate::sync::plain(&acks).record(now.saturating_sub(intended_us).max(1));
            }
        }));
    }
    for t in ack_tasks {
        let _ = t.await;
    }
    reader
        .await
        .map_err(|e| BenchError::Client(e.to_string()))??;
    producer.close().await;
    broker
        .close()
        .map_err(|e| BenchError::Client(e.to_string()))?;
    drop(broker);
    std::fs::remove_dir_all(&dir)?;
    let (e2e, acks) = (
        crate::sync::plain(&e2e).clone(),
        crate::sync::plain(&acks).clone(),
    );
    let name = format!("e2e-{rate}-per-s-{value_bytes}B");
    Ok([
        ("p50 latency", 50.0),
        ("p99 latency", 99.0),
        ("p99.9 latency", 99.9),
    ]
    .into_iter()
    .map(|(metric, q)| {
        BenchRow::new(
            &name,
            metric,
            e2e.value_at_quantile(q / 100.0) as f64,
            "us",
            acks.value_at_quantile(q / 100.0) as f64,
        )
    })
    .collect())
}
