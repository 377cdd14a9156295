//! `rill bench`: throughput and latency of rill's own paths measured as ratios against a
//! baseline run in the same process, on the same machine, in the same directory: raw file I/O
//! for the storage engine, the machine's loopback TCP and fdatasync limits for the clients
//! over TCP ([`tcp`]). Ratios, not absolute numbers, are what compare across runs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

mod clients;
pub mod cluster;
pub mod loopback;
pub mod report;
pub mod tcp;
pub use clients::{run_consume, run_e2e, run_produce, ProducerMode};
pub use tcp::{run_tcp_consume, run_tcp_e2e, run_tcp_produce, TcpBenchOptions, TcpReport};

use crate::record::batch::FramedIter;
use crate::record::{encode_batch, Compression, NewRecord};
use crate::storage::{LogConfig, PartitionLog, ReadBuf, StorageError};
use crate::time::SystemClock;
use crate::types::{Offset, TopicPartition};

/// One measured figure: `{"workload", "metric", "value", "unit", "baseline", "ratio"}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchRow {
    pub workload: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub baseline: f64,
    /// `value / baseline`; for latencies, above 1 means slower than the baseline.
    pub ratio: f64,
}

impl BenchRow {
    pub fn new(workload: &str, metric: &str, value: f64, unit: &str, baseline: f64) -> Self {
        BenchRow {
            workload: workload.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline,
            ratio: if baseline > 0.0 {
                value / baseline
            } else {
                0.0
            },
        }
    }
}

/// Bench failures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("i/o error in the bench directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not build the bench's batches: {0}")]
    Batch(#[from] crate::record::BatchError),
    #[error("client: {0}")]
    Client(String),
}

/// Options of `rill bench storage`.
#[derive(Debug, Clone)]
pub struct StorageBenchOptions {
    /// Total time budget; each of the 8 measured phases gets an equal share.
    pub seconds: f64,
    /// Where the logs and baseline files go (removed afterwards).
    pub dir: PathBuf,
}

/// The most bytes one measured append phase writes, so a long run cannot fill the disk.
const PHASE_BYTES_MAX: u64 = 512 << 20;
const BATCH_BYTES: usize = 16 * 1024;
const FSYNC_BATCH_BYTES: usize = 64 * 1024;
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Rounds per append workload, each side measured once per round.
const APPEND_ROUNDS: u32 = 4;

/// A batch of records with `value_bytes`-byte values, as large as fits in `target_bytes`.
pub(crate) fn filled_batch(
    value_bytes: usize,
    target_bytes: usize,
) -> Result<(Vec<u8>, u64), BenchError> {
    let value = vec![b'r'; value_bytes];
    let mut n = (target_bytes / (value_bytes + 8)).max(1);
    loop {
        let recs: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord::new(None::<Vec<u8>>, Some(value.clone()), i as i64))
            .collect();
        let b = encode_batch(&recs, Compression::None)?;
        if b.len() <= target_bytes || n == 1 {
            return Ok((b, n as u64));
        }
        n -= 1;
    }
}

#[derive(Default)]
struct Throughput {
    bytes: u64,
    records: u64,
    elapsed: Duration,
    latencies_us: Vec<f64>,
}

impl Throughput {
    fn add(&mut self, other: Throughput) {
        self.bytes += other.bytes;
        self.records += other.records;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile_us(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_by(f64::total_cmp);
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i]
    }
}

/// Runs `op` (which moves `bytes` bytes and `records` records) until `budget` or
/// `PHASE_BYTES_MAX` is reached, timing each call.
fn timed_loop(
    budget: Duration,
    bytes: usize,
    records: u64,
    mut op: impl FnMut() -> Result<(), BenchError>,
) -> Result<Throughput, BenchError> {
    let mut t = Throughput::default();
    let start = Instant::now();
    while start.elapsed() < budget && t.bytes < PHASE_BYTES_MAX {
        let call = Instant::now();
        op()?;
        t.latencies_us.push(call.elapsed().as_secs_f64() * 1e6);
        t.bytes += bytes as u64;
        t.records += records;
    }
    t.elapsed = start.elapsed();
    Ok(t)
}

fn open_log(dir: &Path, config: LogConfig) -> Result<PartitionLog, BenchError> {
    let _ = fs::remove_dir_all(dir);
    Ok(PartitionLog::open(
        dir,
        TopicPartition::new("bench", 0),
        config,
        Arc::new(SystemClock),
    )?)
}

/// Appends `batch` to a fresh log until the budget runs out.
fn append_phase(
    dir: &Path,
    config: LogConfig,
    batch: &[u8],
    records: u64,
    budget: Duration,
    keep: bool,
) -> Result<(Throughput, Option<PartitionLog>), BenchError> {
    let log = open_log(dir, config)?;
    let mut buf = batch.to_vec();
    // The batch is re-appended as is: offset assignment rewrites only uncovered fields.
    let t = timed_loop(budget, batch.len(), records, || {
        log.append(&mut buf)?;
        Ok(())
    })?;
    if keep {
        Ok((t, Some(log)))
    } else {
        log.close()?;
        drop(log);
        fs::remove_dir_all(dir)?;
        Ok((t, None))
    }
}

/// Writes `batch` to a plain file with `write_all` (and `fdatasync` if `sync`) until the budget
/// runs out: what the log's append is measured against.
fn baseline_write_phase(
    path: &Path,
    batch: &[u8],
    records: u64,
    budget: Duration,
    sync: bool,
) -> Result<Throughput, BenchError> {
    // A new file each phase, synced and deleted afterwards (untimed), exactly as the log's
    // phase creates, closes and deletes its segment: both leave the page cache alike.
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new().create_new(true).write(true).open(path)?;
    let t = timed_loop(budget, batch.len(), records, || {
        f.write_all(batch)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    })?;
    f.sync_all()?;
    drop(f);
    fs::remove_file(path)?;
    Ok(t)
}

/// Reads the whole log front to back in `READ_CHUNK_BYTES` reads.
fn read_log(log: &PartitionLog) -> Result<Throughput, BenchError> {
    let end = log.log_end_offset().0;
    let mut next = log.log_start_offset().0;
    let mut t = Throughput::default();
    let start = Instant::now();
    let mut buf = ReadBuf::default();
    while next < end {
        log.read_into(Offset(next), READ_CHUNK_BYTES, None, &mut buf)?;
        let mut last = next;
        // A consumer needs only the framing to find the next offset.
        for item in FramedIter::new(buf.as_slice()) {
            let (h, _, _) = item?;
            last = h.next_offset();
            t.records += h.record_count as u64;
        }
        t.bytes += buf.as_slice().len() as u64;
        if last == next {
            break;
        }
        next = last;
    }
    t.elapsed = start.elapsed();
    Ok(t)
}

/// Reads a plain file front to back in `READ_CHUNK_BYTES` reads.
fn baseline_read(path: &Path) -> Result<Throughput, BenchError> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut t = Throughput::default();
    let start = Instant::now();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        t.bytes += n as u64;
    }
    t.elapsed = start.elapsed();
    Ok(t)
}

/// Runs one of the client benches in a fresh directory under `dir`, removed afterwards.
pub async fn run_in_dir<F, Fut>(dir: &Path, f: F) -> Result<Vec<BenchRow>, BenchError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<BenchRow>, BenchError>>,
{
    fs::create_dir_all(dir)?;
    let work = dir.join(format!("rill-bench-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = f(work.clone()).await;
    let _ = fs::remove_dir_all(&work);
    result
}

/// Runs `rill bench storage`: append (100 B and 1 KiB records in 16 KiB batches), sequential
/// read, and append with fsync per 64 KiB, each against its raw-file baseline.
pub fn run_storage(opts: &StorageBenchOptions) -> Result<Vec<BenchRow>, BenchError> {
    fs::create_dir_all(&opts.dir)?;
    let work = opts.dir.join(format!("rill-bench-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = run_storage_in(&work, opts.seconds);
    let _ = fs::remove_dir_all(&work);
    result
}

fn run_storage_in(work: &Path, seconds: f64) -> Result<Vec<BenchRow>, BenchError> {
    // Eight phases: two append sizes, fsync append, each with its baseline; read + baseline.
    let phase = Duration::from_secs_f64((seconds / 8.0).max(0.05));
    let mut rows = Vec::new();
    let log_dir = work.join("bench-0");
    let plain = work.join("baseline.bin");

    for (name, value_bytes) in [("append-100B", 100usize), ("append-1KiB", 1024)] {
        let (batch, records) = filled_batch(value_bytes, BATCH_BYTES)?;
        // Several short rounds, alternating which side goes first, spread the machine's noise
        // (writeback, other tenants) over both sides.
        let slice = phase / APPEND_ROUNDS;
        let mut base = Throughput::default();
        let mut ours = Throughput::default();
        let mut kept = None;
        for round in 0..APPEND_ROUNDS {
            let last = round + 1 == APPEND_ROUNDS;
            let keep = last && value_bytes == 1024;
            if round % 2 == 0 {
                base.add(baseline_write_phase(&plain, &batch, records, slice, false)?);
            }
            let (o, k) =
                append_phase(&log_dir, LogConfig::default(), &batch, records, slice, keep)?;
            ours.add(o);
            kept = k;
            if round % 2 == 1 {
                base.add(baseline_write_phase(&plain, &batch, records, slice, false)?);
            }
        }
        rows.push(BenchRow::new(
            name,
            "throughput",
            ours.mb_per_s(),
            "MB/s",
            base.mb_per_s(),
        ));
        rows.push(BenchRow::new(
            name,
            "records",
            ours.records_per_s(),
            "records/s",
            base.records_per_s(),
        ));

        if let Some(log) = kept {
            // The second baseline file holds the same bytes count as the log, roughly; make it
            // exact so both reads move the same volume.
            let log_bytes = log.size_bytes();
            {
                let mut f = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&plain)?;
                let mut written = 0u64;
                while written < log_bytes {
                    let n = batch.len().min((log_bytes - written) as usize);
                    f.write_all(&batch[..n])?;
                    written += n as u64;
                }
            }
            // Warm both into the page cache, then measure each twice, alternating.
            read_log(&log)?;
            baseline_read(&plain)?;
            let mut ours = read_log(&log)?;
            let mut base = baseline_read(&plain)?;
            let o2 = read_log(&log)?;
            let b2 = baseline_read(&plain)?;
            ours.bytes += o2.bytes;
            ours.elapsed += o2.elapsed;
            base.bytes += b2.bytes;
            base.elapsed += b2.elapsed;
            rows.push(BenchRow::new(
                "read-1KiB",
                "throughput",
                ours.mb_per_s(),
                "MB/s",
                base.mb_per_s(),
            ));
            log.close()?;
            drop(log);
            fs::remove_dir_all(&log_dir)?;
        }
    }

    let (batch, records) = filled_batch(1024, FSYNC_BATCH_BYTES)?;
    let synced = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let mut base = baseline_write_phase(&plain, &batch, records, phase, true)?;
    let (mut ours, _) = append_phase(&log_dir, synced, &batch, records, phase, false)?;
    rows.push(BenchRow::new(
        "append-fsync-64KiB",
        "throughput",
        ours.mb_per_s(),
        "MB/s",
        base.mb_per_s(),
    ));
    rows.push(BenchRow::new(
        "append-fsync-64KiB",
        "p50 latency",
        ours.percentile_us(0.5),
        "us",
        base.percentile_us(0.5),
    ));
    rows.push(BenchRow::new(
        "append-fsync-64KiB",
        "p99 latency",
        ours.percentile_us(0.99),
        "us",
        base.percentile_us(0.99),
    ));
    let _ = fs::remove_file(&plain);
    Ok(rows)
}

/// Formats rows as an aligned table.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<20} {:<12} {:>14} {:<10} {:>14} {:>7}\n",
        "workload", "metric", "value", "unit", "baseline", "ratio"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<12} {:>14.1} {:<10} {:>14.1} {:>7.2}\n",
            r.workload, r.metric, r.value, r.unit, r.baseline, r.ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_batches_fit_their_target() {
        let (b, n) = filled_batch(100, BATCH_BYTES).unwrap();
        assert!(
            b.len() <= BATCH_BYTES && b.len() > BATCH_BYTES - 200,
            "{}",
            b.len()
        );
        assert!(n > 100);
        let (b, _) = filled_batch(1024, FSYNC_BATCH_BYTES).unwrap();
        assert!(b.len() <= FSYNC_BATCH_BYTES && b.len() > FSYNC_BATCH_BYTES - 1200);
    }

    #[test]
    fn ratio_is_value_over_baseline() {
        let r = BenchRow::new("w", "m", 50.0, "MB/s", 200.0);
        assert_eq!(r.ratio, 0.25);
        assert!(format_table(&[r]).contains("0.25"));
    }
}
