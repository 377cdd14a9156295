//! `buffer.memory` bounds what a producer's queued records cost: pointed at a broker that
//! never answers, a producer with 32 MiB grows the process by less than twice that before
//! `send` gives up waiting for room. Its own test binary, since resident memory is the
//! process's; each record size runs in a child process of its own, so memory one run freed
//! cannot hide the next one's growth.

#![cfg(target_os = "linux")]

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataResponse, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use rill_log::client::transport::BoxFuture;
use rill_log::client::{ClientError, Producer, ProducerConfig, ProducerRecord, Transport};

const BUFFER_MEMORY: usize = 32 << 20;
const CHILD: &str = "RILL_PRODUCER_MEMORY_RECORD_BYTES";
const TEST: &str = "queued_records_stay_within_buffer_memory";

/// A broker that knows topic `t` (one partition) and never answers a produce.
#[derive(Debug)]
struct Stalled;

impl Transport for Stalled {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            match request {
                RequestKind::Metadata(_) => {
                    let partition = MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_leader_id(BrokerId(0));
                    let topic = MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                        .with_partitions(vec![partition]);
                    Ok(Some(ResponseKind::Metadata(
                        MetadataResponse::default().with_topics(vec![topic]),
                    )))
                }
                RequestKind::Produce(_) => std::future::pending().await,
                other => Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        })
    }
}

/// The process's resident memory, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// The value size of record `i`: `size`, or with 0 sizes from 1 byte to 2 KiB in turn (so
/// batches opened for large records grow for small ones).
fn value_size(size: usize, i: usize) -> usize {
    if size > 0 {
        size
    } else {
        (i * 7_919) % 2_048 + 1
    }
}

/// Sends records of `size` value bytes (see [`value_size`]) until `send` times out waiting
/// for room; returns the records queued and the growth of resident memory.
async fn fill(size: usize) -> (usize, usize) {
    let producer = Producer::new(
        Arc::new(Stalled),
        ProducerConfig {
            buffer_memory: BUFFER_MEMORY,
            max_block_ms: 200,
            acks: 1,
            enable_idempotence: false,
            request_timeout_ms: 600_000,
            delivery_timeout_ms: 600_000,
            ..Default::default()
        },
    );
    // The topic's metadata and the sender's first, never-answered, produce.
    let first = producer
        .send(ProducerRecord::new(
            "t",
            None::<Vec<u8>>,
            vec![b'x'; value_size(size, 0)],
        ))
        .await
        .expect("room for one record");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Room for every delivery, reserved before measuring: only the pages touched count.
    let mut deliveries = Vec::with_capacity(BUFFER_MEMORY / 8);
    deliveries.push(first);
    let before = rss();
    loop {
        // A fresh allocation per record, as an application's values are.
        let value = vec![b'x'; value_size(size, deliveries.len())];
        let record = ProducerRecord::new("t", None::<Vec<u8>>, value);
        match producer.send(record).await {
            Ok(d) => deliveries.push(d),
            Err(ClientError::Timeout("buffer.memory")) => break,
            Err(e) => panic!("send failed: {e}"),
        }
        assert!(
            deliveries.len() < deliveries.capacity(),
            "buffer.memory never filled"
        );
    }
    let grown = rss().saturating_sub(before);
    (deliveries.len(), grown)
}

#[test]
fn queued_records_stay_within_buffer_memory() {
    if let Ok(size) = std::env::var(CHILD) {
        let size: usize = size.parse().expect("a record size");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (records, grown) = runtime.block_on(fill(size));
        let what = match size {
            0 => "1-2048-byte values".to_string(),
            n => format!("{n}-byte values"),
        };
        println!(
            "{what}: {records} records queued, resident memory grew {:.1} MiB ({:.2} x buffer.memory)",
            grown as f64 / (1 << 20) as f64,
            grown as f64 / BUFFER_MEMORY as f64
        );
        assert!(
            grown < 2 * BUFFER_MEMORY,
            "{grown} bytes for {BUFFER_MEMORY} of buffer.memory"
        );
        return;
    }
    for size in [10, 1024, 0] {
        let out = std::process::Command::new(std::env::current_exe().expect("this test"))
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, size.to_string())
            .output()
            .expect("the child runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let figure = stdout
            .lines()
            .find(|l| l.contains("records queued"))
            .unwrap_or("no figure");
        println!("{figure}");
        assert!(
            out.status.success(),
            "value size {size}:\n{stdout}\n{stderr}"
        );
    }
}
