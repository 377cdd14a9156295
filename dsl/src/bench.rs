//! `rill bench dsl`: DSL jobs on the embedded log under exactly_once_v2 with persistent
//! (fjall) stores and changelogs, each against pass-through in the same run. The input is
//! one topic of `records` records (`value_bytes` each, `keys` distinct keys, one record
//! every 0.1 ms of event time, so each key sees a record per second); the join's right side
//! is a second topic with a tenth as many. Workloads, each its own application:
//!
//! - `pass`: `stream().to()`;
//! - `tumbling`: count per key in 10 s tumbling windows;
//! - `hopping`: count per key in 10 s windows advancing by 2 s (five windows per record);
//! - `session`: count per key in sessions with a 30 s gap;
//! - `join`: stream-stream inner join with the right topic, records 1 s apart at most.
//!
//! Record caches may hold 64 MiB (`cache_max_bytes`; Kafka's default is 10 MiB).
//!
//! Rows: records/s and records/s per busy core of each, as a ratio to pass-through, and the
//! tumbling and hopping rates per core against their targets (1,000,000 and 300,000).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rill_core::bench::{client, embedded_broker, rate_rows, run_application, Rate};
use rill_core::runtime::{ProcessingGuarantee, StreamsConfig};
use rill_log::bench::{BenchError, BenchRow};
use rill_log::client::{Admin, Producer, ProducerConfig, ProducerRecord, Transport};

use crate::serdes::{auto, RawBytes, SerdeRef};
use crate::{Consumed, JoinWindows, Produced, SessionWindows, StreamsBuilder, TimeWindows};

/// Options of `rill bench dsl`.
#[derive(Debug, Clone)]
pub struct DslBenchOptions {
    pub records: u64,
    pub keys: u64,
    pub value_bytes: usize,
    /// Only these workloads (besides pass-through, the baseline); none: all.
    pub only: Vec<String>,
    /// Every job's `commit.interval.ms` (Kafka's exactly-once default: 100).
    pub commit_interval_ms: u64,
}

impl Default for DslBenchOptions {
    fn default() -> Self {
        DslBenchOptions {
            records: 10_000_000,
            keys: 10_000,
            value_bytes: 100,
            only: Vec::new(),
            commit_interval_ms: 100,
        }
    }
}

const INPUT: &str = "dsl-bench-input";
const RIGHT: &str = "dsl-bench-right";
/// Record caches get 64 MiB rather than Kafka's default 10: the hopping job's working set
/// (10,000 keys x 6 open windows, ~150 bytes each) would not fit in 10.
const CACHE_MAX_BYTES: usize = 64 << 20;
/// Topic configs: no time retention. The records' event time lies in the past (`T0`), where
/// the default 7-day retention would delete the input while a slow job still reads it.
const KEEP: &[(&str, &str)] = &[("retention.ms", "-1")];
/// Event time of the first record.
const T0: i64 = 1_700_000_000_000;

/// The job of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Pass,
    Tumbling,
    Hopping,
    Session,
    Join,
}

fn topology(job: Job, output: &str) -> Result<crate::BuiltTopology, BenchError> {
    let b = StreamsBuilder::new();
    let raw = || Consumed::with(auto::<String>(), Arc::new(RawBytes) as SerdeRef<Vec<u8>>);
    let input = b.stream_with(INPUT, raw());
    let s = Duration::from_secs;
    match job {
        Job::Pass => input.to_with(output, Produced::values(Arc::new(RawBytes))),
        Job::Tumbling => input
            .group_by_key()
            .windowed_by(TimeWindows::of_size_no_grace(s(10)))
            .count()
            .to_stream()
            .to(output),
        Job::Hopping => input
            .group_by_key()
            .windowed_by(TimeWindows::of_size_no_grace(s(10)).advance_by(s(2)))
            .count()
            .to_stream()
            .to(output),
        Job::Session => input
            .group_by_key()
            .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(s(30)))
            .count()
            .to_stream()
            .to(output),
        Job::Join => input
            .join(
                &b.stream_with(RIGHT, raw()),
                |l, r| l.len() + r.len(),
                // The task takes both topics' records in timestamp order.
                JoinWindows::of_time_difference_and_grace(s(1), s(1)),
            )
            .to(output),
    }
    b.build().map_err(client)
}

async fn produce(
    t: &Arc<dyn Transport>,
    topic: &str,
    records: u64,
    step_ms: f64,
    o: &DslBenchOptions,
) -> Result<(), BenchError> {
    Admin::new(Arc::clone(t))
        .create_topic(topic, 1, KEEP)
        .await
        .map_err(client)?;
    let p = Producer::new(
        Arc::clone(t),
        ProducerConfig {
            linger_ms: 5,
            ..Default::default()
        },
    );
    let value = Bytes::from(vec![b'v'; o.value_bytes]);
    let mut last = None;
    for i in 0..records {
        let key = format!("key-{:06}", i % o.keys.max(1));
        let mut r = ProducerRecord::new(topic, Some(key), value.clone());
        r.partition = Some(0);
        r.timestamp_ms = Some(T0 + (i as f64 * step_ms) as i64);
        last = Some(p.send(r).await.map_err(client)?);
    }
    p.flush().await;
    if let Some(d) = last {
        d.await.map_err(client)?;
    }
    p.close().await;
    Ok(())
}

async fn run_job(
    t: &Arc<dyn Transport>,
    work: &Path,
    job: Job,
    records: u64,
    o: &DslBenchOptions,
) -> Result<Rate, BenchError> {
    let name = format!("dsl-{job:?}").to_lowercase();
    let output = format!("{name}-out");
    Admin::new(Arc::clone(t))
        .create_topic(&output, 1, KEEP)
        .await
        .map_err(client)?;
    let mut config = StreamsConfig::new(&name);
    config.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
    config.commit_interval_ms = o.commit_interval_ms;
    config.cache_max_bytes = CACHE_MAX_BYTES;
    config.state_dir = Some(work.join(&name));
    run_application(t, topology(job, &output)?.topology, config, records).await
}

/// Runs every workload in a fresh embedded broker under `work`.
pub async fn run_dsl(work: &Path, o: &DslBenchOptions) -> Result<Vec<BenchRow>, BenchError> {
    let (broker, t) = embedded_broker(work)?;
    let n = o.records;
    let right = (n / 10).max(1);
    produce(&t, INPUT, n, 0.1, o).await?;
    produce(&t, RIGHT, right, 1.0, o).await?;
    let pass = run_job(&t, work, Job::Pass, n, o).await?;
    let mut rows = rate_rows("pass", pass, pass).to_vec();
    let mut per_core = Vec::new();
    for (job, label, records) in [
        (Job::Tumbling, "tumbling/pass", n),
        (Job::Hopping, "hopping/pass", n),
        (Job::Session, "session/pass", n),
        (Job::Join, "join/pass", n + right),
    ] {
        let name = format!("{job:?}").to_lowercase();
        if !o.only.is_empty() && !o.only.contains(&name) {
            continue;
        }
        let r = run_job(&t, work, job, records, o).await?;
        rows.extend(rate_rows(label, r, pass));
        per_core.push((job, r.per_core_second));
    }
    broker.close().map_err(client)?;
    for (job, target, label) in [
        (Job::Tumbling, 1_000_000.0, "tumbling/target"),
        (Job::Hopping, 300_000.0, "hopping/target"),
    ] {
        if let Some((_, v)) = per_core.iter().find(|(j, _)| *j == job) {
            rows.push(BenchRow::new(label, "rec/s/core", *v, "records/s", target));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run completes and reports every workload against pass-through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_reports_every_workload() {
        let dir = tempfile::tempdir().unwrap();
        let o = DslBenchOptions {
            records: 2_000,
            keys: 50,
            value_bytes: 100,
            only: Vec::new(),
            commit_interval_ms: 100,
        };
        let rows = run_dsl(dir.path(), &o).await.unwrap();
        assert_eq!(rows.len(), 12);
        for r in &rows {
            assert!(r.value > 0.0 && r.baseline > 0.0, "{r:?}");
        }
        assert_eq!(
            rows[0].value, rows[2].baseline,
            "pass is every job's baseline"
        );
        assert_eq!(rows[10].workload, "tumbling/target");
        assert_eq!(rows[10].baseline, 1_000_000.0);
    }
}
