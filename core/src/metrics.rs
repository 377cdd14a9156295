//! Runtime metrics: what each task and stream thread processed, dropped and how fast, commit
//! latency, and restore progress, read as a [`MetricsSnapshot`] (an exporter comes later).
//!
//! Latencies go into hdrhistogram histograms (3 significant digits, 1 ns to 1 hour), so a
//! snapshot reports exact counts and percentiles within 0.1 %.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use rill_log::types::TopicPartition;

use crate::state::changelog::RestoreReport;
use crate::task::TaskId;

/// The highest latency recorded (longer ones are clamped): one hour, in nanoseconds.
const MAX_NANOS: u64 = 3_600_000_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_NANOS, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(MAX_NANOS);
    h.saturating_record(nanos.clamp(1, MAX_NANOS));
}

/// A latency distribution, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            max_ns: h.max(),
        }
    }
}

/// Why a record was dropped. Kafka Streams counts every one of these in its task metric
/// `dropped-records-total`; rill keeps the reason too, so that a test or an operator can
/// tell a late record from a poison one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A negative timestamp skipped by `InvalidTimestampPolicy::LogAndSkip`.
    InvalidTimestamp,
    /// A null key where the operator needs one (an aggregation, a join, a typed key that
    /// cannot hold null).
    NullKey,
    /// A null value its type cannot hold, or that an aggregation or join cannot use.
    NullValue,
    /// Too late for a time window (one count per closed window the record falls in, as
    /// Kafka Streams counts them).
    LateWindow,
    /// Too late for its session: the merged session had closed.
    LateSession,
    /// Too late for every sliding window it falls in.
    LateSliding,
    /// Older than a stream-stream join store's retention (before + after + grace behind the
    /// latest record it stored): not kept for later records of the other side (it is still
    /// joined with what that side keeps, as in Kafka Streams).
    LateJoin,
    /// Unreadable, and skipped by the deserialization exception handler.
    Deserialization,
    /// Failed in a processor, and skipped by the processing exception handler.
    Processing,
    /// Refused by the broker, and skipped by the production exception handler.
    Production,
}

impl DropReason {
    /// Every reason, in order.
    pub const ALL: [DropReason; 10] = [
        DropReason::InvalidTimestamp,
        DropReason::NullKey,
        DropReason::NullValue,
        DropReason::LateWindow,
        DropReason::LateSession,
        DropReason::LateSliding,
        DropReason::LateJoin,
        DropReason::Deserialization,
        DropReason::Processing,
        DropReason::Production,
    ];
}

/// Dropped records, counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DroppedRecords {
    counts: [u64; DropReason::ALL.len()],
}

impl DroppedRecords {
    /// Every dropped record, whatever the reason (Kafka's `dropped-records-total`).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Records dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    /// The reasons with a count, in order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }

    /// One record dropped for `reason`.
    pub fn one(reason: DropReason) -> DroppedRecords {
        let mut d = DroppedRecords::default();
        d.add(reason, 1);
        d
    }

    /// Counts `n` more for `reason`.
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.counts[reason as usize] += n;
    }

    /// The counts, leaving zeros — or `None` if nothing was counted.
    pub fn take(&mut self) -> Option<DroppedRecords> {
        if self.counts.iter().all(|n| *n == 0) {
            return None;
        }
        Some(std::mem::take(self))
    }
}

impl std::ops::AddAssign for DroppedRecords {
    fn add_assign(&mut self, other: DroppedRecords) {
        for (n, o) in self.counts.iter_mut().zip(other.counts) {
            *n += o;
        }
    }
}

/// One task's figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskMetrics {
    /// Records processed.
    pub processed: u64,
    /// Records dropped, by reason.
    pub dropped: DroppedRecords,
    /// Time to process one record through the sub-topology, measured for one record in
    /// eight (the first, the ninth, ...).
    pub process_latency: Latency,
}

/// One stream thread's figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThreadMetrics {
    pub processed: u64,
    pub dropped: DroppedRecords,
    pub commits: u64,
    pub process_latency: Latency,
    /// Time of a whole commit (changelogs, output, offsets or transaction, checkpoints).
    pub commit_latency: Latency,
    /// Exactly-once commits that failed and were redone from the last commit.
    pub recoveries: u64,
    /// Committed store changes held in memory after the last commit, not yet written to
    /// the persistent stores (write-behind, bounded by `write_behind_max_bytes`).
    pub write_behind_bytes: u64,
}

/// How far restoring a changelog partition has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreProgress {
    /// Where restoring started: the checkpoint, or the log start.
    pub from: i64,
    /// The changelog offset reached.
    pub offset: i64,
    /// The changelog end restoring runs to.
    pub end: i64,
    /// Changelog records applied (set when the restore is done).
    pub records: u64,
    pub done: bool,
}

/// Everything at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// The tasks running now.
    pub tasks: BTreeMap<TaskId, TaskMetrics>,
    /// By thread index.
    pub threads: Vec<ThreadMetrics>,
    /// The latest restore of each changelog partition.
    pub restores: BTreeMap<TopicPartition, RestoreProgress>,
}

impl MetricsSnapshot {
    /// Records processed by every thread.
    pub fn processed(&self) -> u64 {
        self.threads.iter().map(|t| t.processed).sum()
    }

    /// Records dropped by every thread.
    pub fn dropped(&self) -> u64 {
        self.dropped_by_reason().total()
    }

    /// Records dropped by every thread, by reason.
    pub fn dropped_by_reason(&self) -> DroppedRecords {
        let mut all = DroppedRecords::default();
        for t in &self.threads {
            all += t.dropped;
        }
        all
    }
}

struct TaskCounters {
    processed: u64,
    dropped: DroppedRecords,
    latency: Histogram<u64>,
}

struct ThreadCounters {
    processed: u64,
    dropped: DroppedRecords,
    commits: u64,
    recoveries: u64,
    write_behind_bytes: u64,
    latency: Histogram<u64>,
    commit_latency: Histogram<u64>,
}

#[derive(Default)]
struct Inner {
    tasks: BTreeMap<TaskId, TaskCounters>,
    threads: BTreeMap<usize, ThreadCounters>,
    restores: BTreeMap<TopicPartition, RestoreProgress>,
}

/// The shared registry; each thread records into its own entries.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counters and histograms: a panic mid-update skews a figure at worst, so a poisoned
    /// lock is used as it is.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn thread(inner: &mut Inner, thread: usize) -> &mut ThreadCounters {
        inner
            .threads
            .entry(thread)
            .or_insert_with(|| ThreadCounters {
                processed: 0,
                dropped: DroppedRecords::default(),
                commits: 0,
                recoveries: 0,
                write_behind_bytes: 0,
                latency: histogram(),
                commit_latency: histogram(),
            })
    }

    fn task(inner: &mut Inner, task: TaskId) -> &mut TaskCounters {
        inner.tasks.entry(task).or_insert_with(|| TaskCounters {
            processed: 0,
            dropped: DroppedRecords::default(),
            latency: histogram(),
        })
    }

    /// `thread` started: it shows in snapshots from now on.
    pub(crate) fn register_thread(&self, thread: usize) {
        self.with(|m| {
            Self::thread(m, thread);
        })
    }

    /// `n` records went through `task` on `thread`, the last in `took` if it was timed.
    pub(crate) fn record_processed(
        &self,
        thread: usize,
        task: TaskId,
        n: u64,
        took: Option<Duration>,
    ) {
        self.with(|m| {
            let t = Self::task(m, task);
            t.processed += n;
            if let Some(took) = took {
                record(&mut t.latency, took);
            }
            let th = Self::thread(m, thread);
            th.processed += n;
            if let Some(took) = took {
                record(&mut th.latency, took);
            }
        })
    }

    /// `task` dropped `dropped` records.
    pub(crate) fn record_dropped(&self, thread: usize, task: TaskId, dropped: DroppedRecords) {
        if dropped.total() == 0 {
            return;
        }
        self.with(|m| {
            Self::task(m, task).dropped += dropped;
            Self::thread(m, thread).dropped += dropped;
        })
    }

    /// `task` dropped one record for `reason`.
    pub(crate) fn record_dropped_one(&self, thread: usize, task: TaskId, reason: DropReason) {
        self.record_dropped(thread, task, DroppedRecords::one(reason));
    }

    /// A commit of `thread` took `took`, leaving `write_behind_bytes` held in memory.
    pub(crate) fn record_commit(&self, thread: usize, took: Duration, write_behind_bytes: usize) {
        self.with(|m| {
            let th = Self::thread(m, thread);
            th.commits += 1;
            th.write_behind_bytes = write_behind_bytes as u64;
            record(&mut th.commit_latency, took);
        })
    }

    pub(crate) fn record_recovery(&self, thread: usize) {
        self.with(|m| Self::thread(m, thread).recoveries += 1)
    }

    /// Restoring `changelog` reached `offset` of `end`.
    pub(crate) fn record_restore(&self, changelog: &TopicPartition, offset: i64, end: i64) {
        self.with(|m| {
            let p = m.restores.entry(changelog.clone()).or_default();
            *p = RestoreProgress {
                offset,
                end,
                done: false,
                ..*p
            };
        })
    }

    /// Restoring `changelog` is done.
    pub(crate) fn record_restored(&self, changelog: &TopicPartition, report: RestoreReport) {
        self.with(|m| {
            m.restores.insert(
                changelog.clone(),
                RestoreProgress {
                    from: report.from_offset,
                    offset: report.end_offset.max(report.from_offset),
                    end: report.end_offset,
                    records: report.records,
                    done: true,
                },
            );
        })
    }

    /// `task` left this instance: its figures go with it.
    pub(crate) fn remove_task(&self, task: TaskId) {
        self.with(|m| {
            m.tasks.remove(&task);
        })
    }

    /// Records processed by every thread (cheaper than a snapshot).
    pub fn processed(&self) -> u64 {
        self.with(|m| m.threads.values().map(|t| t.processed).sum())
    }

    /// The figures now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.with(|m| MetricsSnapshot {
            tasks: m
                .tasks
                .iter()
                .map(|(id, t)| {
                    let tm = TaskMetrics {
                        processed: t.processed,
                        dropped: t.dropped,
                        process_latency: Latency::of(&t.latency),
                    };
                    (*id, tm)
                })
                .collect(),
            threads: m
                .threads
                .values()
                .map(|t| ThreadMetrics {
                    processed: t.processed,
                    dropped: t.dropped,
                    commits: t.commits,
                    process_latency: Latency::of(&t.latency),
                    commit_latency: Latency::of(&t.commit_latency),
                    recoveries: t.recoveries,
                    write_behind_bytes: t.write_behind_bytes,
                })
                .collect(),
            restores: m.restores.clone(),
        })
    }
}
