//! `rill bench streams`: the runtime's throughput on the embedded log, as ratios measured in
//! the same run. One input topic of `records` records (`value_bytes` each, `keys` distinct
//! keys) is produced once; then each workload runs as its own application over it until every
//! record is processed and the instance has closed (its last commit included):
//!
//! - `pipe`: a plain consumer feeding a producer, no runtime (the baseline of pass-through);
//! - `passthrough`: source -> sink, under at_least_once and exactly_once_v2;
//! - `count`: count per key in a persistent (fjall) store with a changelog, under both.
//!
//! Rows: records/s (wall clock) and records/s per busy core (process CPU time), with
//! `exactly_once_v2 / at_least_once` and `count / passthrough` as ratios.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_log::bench::{BenchError, BenchRow};
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, EmbeddedTransport, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Transport,
};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

use crate::processor::{ProcessError, Processor, ProcessorContext, Record};
use crate::runtime::{KafkaStreams, ProcessingGuarantee, StreamsConfig};
use crate::topology::{StoreBackend, StoreSpec, Topology};

/// Options of `rill bench streams`.
#[derive(Debug, Clone)]
pub struct StreamsBenchOptions {
    pub records: u64,
    pub keys: u64,
    pub value_bytes: usize,
}

impl Default for StreamsBenchOptions {
    fn default() -> Self {
        StreamsBenchOptions {
            records: 1_000_000,
            keys: 10_000,
            value_bytes: 100,
        }
    }
}

const INPUT: &str = "bench-input";
/// No run may take longer than this (a stuck run is an error, not a hang).
const RUN_LIMIT: Duration = Duration::from_secs(3_600);

/// A client or runtime failure as a bench error.
pub fn client(e: impl std::fmt::Display) -> BenchError {
    BenchError::Client(e.to_string())
}

/// Counts per key (a big-endian u64 per key) and forwards the count.
struct Count;

impl Processor for Count {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let key = r.key.clone().unwrap_or_default();
        let store = ctx.store("counts")?;
        let n = store
            .get(&key)?
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
            + 1;
        store.put(&key, &n.to_be_bytes())?;
        ctx.forward(Record::new(
            Some(key),
            Some(n.to_be_bytes().to_vec()),
            r.timestamp,
        ))
    }
}

fn topology(stateful: bool, output: &str) -> Result<Topology, BenchError> {
    let mut t = Topology::new();
    t.add_source("in", &[INPUT]).map_err(client)?;
    if stateful {
        t.add_processor("count", Arc::new(|| Box::new(Count)), &["in"])
            .map_err(client)?
            .add_sink("out", output, &["count"])
            .map_err(client)?
            .add_state_store(
                StoreSpec {
                    name: "counts".into(),
                    backend: StoreBackend::Fjall,
                    logged: true,
                    window_retention_ms: None,
                },
                &["count"],
            )
            .map_err(client)?;
    } else {
        t.add_sink("out", output, &["in"]).map_err(client)?;
    }
    Ok(t)
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (none elsewhere).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports in USER_HZ, which is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// A run's figures: wall-clock and CPU-time rates.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_second: f64,
    pub per_core_second: f64,
    /// The median commit's duration (runtime workloads).
    pub commit_p50_ms: f64,
}

/// `records` over `wall` time and `cpu` time.
pub fn rate(records: u64, wall: Duration, cpu: Option<Duration>) -> Rate {
    let per_second = records as f64 / wall.as_secs_f64().max(1e-9);
    let per_core_second = cpu
        .filter(|c| !c.is_zero())
        .map_or(per_second, |c| records as f64 / c.as_secs_f64());
    Rate {
        per_second,
        per_core_second,
        commit_p50_ms: 0.0,
    }
}

async fn produce_input(t: &Arc<dyn Transport>, o: &StreamsBenchOptions) -> Result<(), BenchError> {
    Admin::new(Arc::clone(t))
        .create_topic(INPUT, 1, &[])
        .await
        .map_err(client)?;
    let p = Producer::new(
        Arc::clone(t),
        ProducerConfig {
            linger_ms: 5,
            ..Default::default()
        },
    );
    let value = bytes::Bytes::from(vec![b'v'; o.value_bytes]);
    let mut last = None;
    for i in 0..o.records {
        let key = format!("key-{:06}", i % o.keys.max(1));
        let mut r = ProducerRecord::new(INPUT, Some(key), value.clone());
        r.partition = Some(0);
        last = Some(p.send(r).await.map_err(client)?);
    }
    p.flush().await;
    if let Some(d) = last {
        d.await.map_err(client)?;
    }
    p.close().await;
    Ok(())
}

/// The baseline: consume every input record and produce it again, with the plain clients.
async fn pipe(t: &Arc<dyn Transport>, records: u64) -> Result<Rate, BenchError> {
    let (started, cpu) = (Instant::now(), cpu_time());
    let mut c = Consumer::new(
        Arc::clone(t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            max_poll_records: 2_000,
            ..Default::default()
        },
    );
    c.assign([TopicPartition::new(INPUT, 0)]);
    let p = Producer::new(
        Arc::clone(t),
        ProducerConfig {
            linger_ms: 5,
            ..Default::default()
        },
    );
    let mut seen = 0;
    let mut last = None;
    while seen < records && started.elapsed() < RUN_LIMIT {
        for r in c.poll().await.map_err(client)? {
            let mut out = ProducerRecord::new("bench-pipe-out", r.key, Vec::<u8>::new());
            out.value = r.value;
            last = Some(p.send(out).await.map_err(client)?);
            seen += 1;
        }
    }
    p.flush().await;
    if let Some(d) = last {
        d.await.map_err(client)?;
    }
    p.close().await;
    let cpu = cpu.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    Ok(rate(seen, started.elapsed(), cpu))
}

/// Runs one application over the whole input until it has processed every record and
/// closed.
async fn run_app(
    t: &Arc<dyn Transport>,
    work: &Path,
    name: &str,
    stateful: bool,
    guarantee: ProcessingGuarantee,
    records: u64,
) -> Result<Rate, BenchError> {
    let output = format!("{name}-out");
    Admin::new(Arc::clone(t))
        .create_topic(&output, 1, &[])
        .await
        .map_err(client)?;
    let mut config = StreamsConfig::new(name);
    config.processing_guarantee = guarantee;
    if guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        config.commit_interval_ms = 100;
    }
    config.state_dir = Some(work.join(name));
    run_application(t, topology(stateful, &output)?, config, records).await
}

/// Runs `topology` as an application until it has processed `records` records and closed
/// (its last commit included); its rates, and its median commit.
pub async fn run_application(
    t: &Arc<dyn Transport>,
    topology: Topology,
    config: StreamsConfig,
    records: u64,
) -> Result<Rate, BenchError> {
    let name = config.application_id.clone();
    let (started, cpu) = (Instant::now(), cpu_time());
    let app = KafkaStreams::start(topology, Arc::clone(t), config);
    // Progress on stderr every 10 s (long runs show where they are, or that they stalled).
    let mut report = Instant::now();
    while app.processed() < records && app.is_running() && started.elapsed() < RUN_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if report.elapsed() >= Duration::from_secs(10) {
            report = Instant::now();
            eprintln!("{name}: {} of {records} records", app.processed());
        }
    }
    let processed = app.processed();
    let commit_p50_ms = app
        .metrics()
        .threads
        .first()
        .map_or(0.0, |t| t.commit_latency.p50_ns as f64 / 1e6);
    app.close().await.map_err(client)?;
    if processed < records {
        return Err(BenchError::Client(format!(
            "{name} processed {processed} of {records} records"
        )));
    }
    let cpu = cpu.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    Ok(Rate {
        commit_p50_ms,
        ..rate(records, started.elapsed(), cpu)
    })
}

/// The `rec/s` and `rec/s/core` rows of `value` against `baseline`.
pub fn rate_rows(workload: &str, value: Rate, baseline: Rate) -> [BenchRow; 2] {
    [
        BenchRow::new(
            workload,
            "rec/s",
            value.per_second,
            "records/s",
            baseline.per_second,
        ),
        BenchRow::new(
            workload,
            "rec/s/core",
            value.per_core_second,
            "records/s",
            baseline.per_core_second,
        ),
    ]
}

/// A fresh embedded broker under `work` (one partition for the internal topics, no
/// rebalance delay), and a transport to it.
pub fn embedded_broker(work: &Path) -> Result<(Arc<Broker>, Arc<dyn Transport>), BenchError> {
    let mut config = BrokerConfig::new(work.join("broker"));
    config.offsets_topic_num_partitions = 1;
    config.transaction_state_num_partitions = 1;
    config.group.initial_rebalance_delay_ms = 0;
    let broker = Arc::new(Broker::open(config, Arc::new(SystemClock)).map_err(client)?);
    let t: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&broker), "bench"));
    Ok((broker, t))
}

/// Runs every workload in a fresh embedded broker under `work`.
pub async fn run_streams(
    work: &Path,
    o: &StreamsBenchOptions,
) -> Result<Vec<BenchRow>, BenchError> {
    let (broker, t) = embedded_broker(work)?;
    produce_input(&t, o).await?;
    let n = o.records;
    let pipe = pipe(&t, n).await?;
    let alo = ProcessingGuarantee::AtLeastOnce;
    let eos = ProcessingGuarantee::ExactlyOnceV2;
    let pass_alo = run_app(&t, work, "pass-alo", false, alo, n).await?;
    let pass_eos = run_app(&t, work, "pass-eos", false, eos, n).await?;
    let count_alo = run_app(&t, work, "count-alo", true, alo, n).await?;
    let count_eos = run_app(&t, work, "count-eos", true, eos, n).await?;
    broker.close().map_err(client)?;
    let mut rows = Vec::new();
    let mut both = |workload: &str, value: Rate, baseline: Rate| {
        rows.extend(rate_rows(workload, value, baseline));
    };
    // Baselines: pass-through against the plain pipe; EOS against at-least-once; count
    // against pass-through under the same guarantee.
    both("pass-alo/pipe", pass_alo, pipe);
    both("pass-eos/pass-alo", pass_eos, pass_alo);
    both("count-alo/pass-alo", count_alo, pass_alo);
    both("count-eos/count-alo", count_eos, count_alo);
    both("count-eos/pass-eos", count_eos, pass_eos);
    // The share of each 100 ms exactly-once commit interval spent committing (processing
    // waits meanwhile).
    for (workload, r) in [("pass-eos", pass_eos), ("count-eos", count_eos)] {
        rows.push(BenchRow::new(
            workload,
            "commit-p50",
            r.commit_p50_ms,
            "ms",
            100.0,
        ));
    }
    Ok(rows)
}

/// What a bench program does after parsing its flags: runs `bench` in a work directory under
/// `dir` (the temp directory by default) on a multi-threaded runtime, and prints its rows as
/// a table or JSON lines. Shared by `rill-bench-streams` and rill-dsl's `rill-bench-dsl`.
pub fn bench_program<F, Fut>(
    dir: Option<std::path::PathBuf>,
    json: bool,
    bench: F,
) -> std::process::ExitCode
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<BenchRow>, BenchError>>,
{
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    match runtime.block_on(rill_log::bench::run_in_dir(&dir, bench)) {
        Ok(rows) if json => {
            for r in &rows {
                match serde_json::to_string(r) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            print!("{}", rill_log::bench::format_table(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run completes and reports every workload with consistent ratios.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_reports_every_workload() {
        let dir = tempfile::tempdir().unwrap();
        let o = StreamsBenchOptions {
            records: 2_000,
            keys: 50,
            value_bytes: 100,
        };
        let rows = run_streams(dir.path(), &o).await.unwrap();
        assert_eq!(rows.len(), 12);
        for r in &rows[..10] {
            assert!(r.value > 0.0 && r.baseline > 0.0, "{r:?}");
            assert!((r.ratio - r.value / r.baseline).abs() < 1e-9);
        }
        assert_eq!(
            rows[0].value, rows[2].baseline,
            "pass-alo is pass-eos's baseline"
        );
        assert_eq!(
            rows[4].value, rows[6].baseline,
            "count-alo is count-eos's baseline"
        );
    }
}
