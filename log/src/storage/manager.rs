//! The `LogManager`: every partition log under one data directory (`<dir>/<topic>-<partition>/`),
//! per-topic configuration persisted beside them, and the background work (retention, flush.ms,
//! checkpoints, compaction) on a fixed, small set of threads.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cleaner::{self, CleanerConfig};
use super::config::{format_properties, parse_properties, LogConfig};
use super::error::{io_at, StorageError};
use super::log::{write_atomically, PartitionLog};
use crate::time::SharedClock;
use crate::types::{validate_topic_name, TopicPartition};

/// Where per-topic config overrides live, one `<topic>.properties` file each.
const TOPIC_CONFIG_DIR: &str = "topic-configs";
const LOCK_FILE: &str = ".lock";
/// A partition directory being deleted is renamed to `<topic>-<partition>.deleting` first.
const DELETING_SUFFIX: &str = ".deleting";

/// The manager's settings (Kafka's broker-level `log.*` configs).
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `log.dirs`: the data directory.
    pub data_dir: PathBuf,
    /// Topic defaults (`log.segment.bytes`, `log.retention.ms`, ...) under topic config names.
    pub defaults: LogConfig,
    /// `log.retention.check.interval.ms`: how often retention runs.
    pub retention_check_interval_ms: u64,
    /// `log.flush.scheduler.interval.ms`: how often `flush.ms` is checked.
    pub flush_check_interval_ms: u64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often recovery points are checkpointed.
    pub checkpoint_interval_ms: u64,
    /// `log.cleaner.enable`: run compaction in the background.
    pub cleaner_enable: bool,
    /// `log.cleaner.threads`: cleaner threads (at least 1 when enabled).
    pub cleaner_threads: usize,
    /// `log.cleaner.backoff.ms`: how long a cleaner thread sleeps when nothing is dirty enough.
    pub cleaner_backoff_ms: u64,
    pub cleaner: CleanerConfig,
    /// `producer.id.expiration.ms`: an idempotent producer silent this long is forgotten by
    /// each partition (checked with retention).
    pub producer_id_expiration_ms: i64,
}

/// The manager settings that may change while it runs (Kafka's dynamic `log.cleaner.*` and
/// `producer.id.expiration.ms`); they start as the [`ManagerConfig`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// `log.cleaner.threads`.
    pub cleaner_threads: usize,
    /// `log.cleaner.backoff.ms`.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`.
    pub dedupe_buffer_bytes: usize,
    /// `producer.id.expiration.ms`.
    pub producer_id_expiration_ms: i64,
}

impl ManagerConfig {
    /// The runtime-changeable part of this config.
    pub fn tunables(&self) -> Tunables {
        Tunables {
            cleaner_threads: self.cleaner_threads.max(1),
            cleaner_backoff_ms: self.cleaner_backoff_ms.max(1),
            dedupe_buffer_bytes: self.cleaner.dedupe_buffer_bytes,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
        }
    }

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ManagerConfig {
            data_dir: data_dir.into(),
            defaults: LogConfig::default(),
            retention_check_interval_ms: 300_000,
            flush_check_interval_ms: 1_000,
            checkpoint_interval_ms: 60_000,
            cleaner_enable: true,
            cleaner_threads: 1,
            cleaner_backoff_ms: 15_000,
            producer_id_expiration_ms: 86_400_000,
            cleaner: CleanerConfig::default(),
        }
    }
}

/// What the manager and its background threads share. The threads hold only this, so dropping
/// the `LogManager` can stop them.
struct Shared {
    config: ManagerConfig,
    clock: SharedClock,
    logs: RwLock<HashMap<TopicPartition, Arc<PartitionLog>>>,
    topic_overrides: RwLock<HashMap<String, BTreeMap<String, String>>>,
    /// The topic defaults in force: `config.defaults` until dynamic broker configs change them.
    defaults: RwLock<LogConfig>,
    /// Serialises config changes, so a topic's logs never keep a config computed from
    /// defaults or overrides that a concurrent change has replaced.
    config_change: Mutex<()>,
    /// `config.tunables()` until changed at runtime.
    tunables: RwLock<Tunables>,
    /// Set to true to stop the background threads; the condvar wakes them.
    stop: Mutex<bool>,
    wake: Condvar,
    /// Held for the manager's life: a second process on the same directory fails to open it.
    _lock: File,
}

impl Shared {
    fn tunables(&self) -> Tunables {
        *crate::sync::read(&self.tunables)
    }

    fn all_logs(&self) -> Vec<Arc<PartitionLog>> {
        crate::sync::read(&self.logs).values().cloned().collect()
    }

    /// One retention pass over every log. Errors on one log are logged and do not stop the rest.
    pub fn run_retention(&self) -> usize {
        let now = self.clock.now_ms();
        let mut deleted = 0;
        for log in self.all_logs() {
            let expired = log.expire_producers(now, self.tunables().producer_id_expiration_ms);
            if expired > 0 {
                tracing::debug!(tp = %log.topic_partition(), expired, "forgot idle producers");
            }
            match log.enforce_retention(now) {
                Ok(r) => deleted += r.segments_deleted,
                Err(e) => {
                    tracing::error!(tp = %log.topic_partition(), error = %e, "retention failed")
                }
            }
        }
        deleted
    }

    /// Flushes every log whose `flush.ms` is due.
    pub fn run_flush(&self) {
        let now = self.clock.now_ms();
        for log in self.all_logs() {
            if let Err(e) = log.flush_if_due(now) {
                tracing::error!(tp = %log.topic_partition(), error = %e, "scheduled flush failed");
            }
        }
    }

    /// Writes every log's checkpoint.
    pub fn run_checkpoint(&self) {
        for log in self.all_logs() {
            if let Err(e) = log.checkpoint() {
                tracing::error!(tp = %log.topic_partition(), error = %e, "checkpoint failed");
            }
        }
    }

    /// Cleans the compacted log with the highest dirty ratio above its
    /// `min.cleanable.dirty.ratio`. Returns whether a log was cleaned.
    pub fn run_cleaner_once(&self) -> bool {
        let now = self.clock.now_ms();
        // (overdue under max.compaction.lag.ms, dirty ratio, log)
        let mut candidates: Vec<(bool, f64, Arc<PartitionLog>)> = self
            .all_logs()
            .into_iter()
            .filter_map(|log| {
                let config = log.config();
                if !config.cleanup_policy.compact {
                    return None;
                }
                let ratio = cleaner::dirty_ratio(&log);
                if ratio <= 0.0 {
                    return None;
                }
                let overdue = cleaner::compaction_overdue(&log, now);
                (overdue || ratio >= config.min_cleanable_dirty_ratio)
                    .then_some((overdue, ratio, log))
            })
            .collect();
        // As Kafka's cleaner: logs past their max compaction lag first, then the dirtiest.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
        for (_, _, log) in candidates {
            let cleaner_config = CleanerConfig {
                dedupe_buffer_bytes: self.tunables().dedupe_buffer_bytes,
            };
            match cleaner::clean(&log, &cleaner_config, now) {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(tp = %log.topic_partition(), error = %e, "cleaning failed")
                }
            }
        }
        false
    }

    fn stopped(&self) -> bool {
        *crate::sync::plain(&self.stop)
    }

    /// Sleeps up to `ms`; false if the manager is stopping.
    fn sleep(&self, ms: u64) -> bool {
        let stop = crate::sync::plain(&self.stop);
        let (stop, _) = self
            .wake
            .wait_timeout_while(stop, Duration::from_millis(ms), |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        !*stop
    }
}

/// Many partition logs under one data directory.
pub struct LogManager {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Cleaner threads spawned so far (the most `log.cleaner.threads` has been).
    cleaners: Mutex<usize>,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager")
            .field("data_dir", &self.shared.config.data_dir)
            .finish()
    }
}

impl LogManager {
    /// Opens the data directory, recovering every partition log found in it and loading the
    /// persisted topic configs. Does not start background work; see [`start`](Self::start).
    pub fn open(config: ManagerConfig, clock: SharedClock) -> Result<LogManager, StorageError> {
        let dir = config.data_dir.clone();
        fs::create_dir_all(dir.join(TOPIC_CONFIG_DIR)).map_err(io_at(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io_at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StorageError::DirLocked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
        }

        let mut overrides = HashMap::new();
        let cfg_dir = dir.join(TOPIC_CONFIG_DIR);
        for entry in fs::read_dir(&cfg_dir).map_err(io_at(&cfg_dir))? {
            let entry = entry.map_err(io_at(&cfg_dir))?;
            let path = entry.path();
            let Some(topic) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".properties"))
            else {
                continue;
            };
            let text = fs::read_to_string(&path).map_err(io_at(&path))?;
            let map = parse_properties(&text)?;
            LogConfig::from_overrides(&config.defaults, &map)?;
            overrides.insert(topic.to_string(), map);
        }

        let mut logs = HashMap::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            // A partition whose deletion a crash interrupted.
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(DELETING_SUFFIX))
            {
                let path = entry.path();
                tracing::info!(dir = %path.display(), "finishing an interrupted partition deletion");
                fs::remove_dir_all(&path).map_err(io_at(&path))?;
                continue;
            }
            let Some(tp) = entry
                .file_name()
                .to_str()
                .and_then(TopicPartition::from_dir_name)
            else {
                continue;
            };
            if !entry.path().is_dir() {
                continue;
            }
            let log_config = LogConfig::from_overrides(
                &config.defaults,
                overrides.get(&tp.topic).unwrap_or(&BTreeMap::new()),
            )?;
            let log = PartitionLog::open(entry.path(), tp.clone(), log_config, clock.clone())?;
            logs.insert(tp, Arc::new(log));
        }
        tracing::info!(dir = %dir.display(), partitions = logs.len(), "opened data directory");
        Ok(LogManager {
            shared: Arc::new(Shared {
                defaults: RwLock::new(config.defaults.clone()),
                tunables: RwLock::new(config.tunables()),
                config_change: Mutex::new(()),
                config,
                clock,
                logs: RwLock::new(logs),
                topic_overrides: RwLock::new(overrides),
                stop: Mutex::new(false),
                wake: Condvar::new(),
                _lock: lock,
            }),
            workers: Mutex::new(Vec::new()),
            cleaners: Mutex::new(0),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.config.data_dir
    }

    /// The effective config of `topic`: the defaults with its overrides applied.
    pub fn topic_config(&self, topic: &str) -> LogConfig {
        let defaults = self.defaults();
        let overrides = crate::sync::read(&self.shared.topic_overrides);
        overrides
            .get(topic)
            .and_then(|o| LogConfig::from_overrides(&defaults, o).ok())
            .unwrap_or(defaults)
    }

    /// The topic defaults in force (the config of a topic without overrides).
    pub fn defaults(&self) -> LogConfig {
        crate::sync::read(&self.shared.defaults).clone()
    }

    /// Replaces the topic defaults at runtime (dynamic broker configs) and applies them to every
    /// open log, each with its topic's overrides. Refused, changing nothing, if some topic's
    /// overrides would conflict with the new defaults. Not persisted here: the broker keeps the
    /// dynamic configs the defaults come from.
    pub fn set_defaults(&self, defaults: LogConfig) -> Result<(), StorageError> {
        let _change = crate::sync::plain(&self.shared.config_change);
        let overrides = crate::sync::read(&self.shared.topic_overrides).clone();
        let mut configs = HashMap::new();
        for (topic, o) in &overrides {
            configs.insert(topic.clone(), LogConfig::from_overrides(&defaults, o)?);
        }
        *crate::sync::write(&self.shared.defaults) = defaults.clone();
        for log in self.shared.all_logs() {
            let topic = &log.topic_partition().topic;
            log.set_config(
                configs
                    .get(topic)
                    .cloned()
                    .unwrap_or_else(|| defaults.clone()),
            );
        }
        Ok(())
    }

    /// The overrides set on `topic`.
    pub fn topic_overrides(&self, topic: &str) -> BTreeMap<String, String> {
        let overrides = crate::sync::read(&self.shared.topic_overrides);
        overrides.get(topic).cloned().unwrap_or_default()
    }

    /// Replaces `topic`'s overrides, persists them, and applies them to its open logs. Refused
    /// whole if any key or value is invalid.
    pub fn set_topic_config(
        &self,
        topic: &str,
        overrides: BTreeMap<String, String>,
    ) -> Result<LogConfig, StorageError> {
        validate_topic_name(topic)?;
        let _change = crate::sync::plain(&self.shared.config_change);
        let config = LogConfig::from_overrides(&self.defaults(), &overrides)?;
        let cfg_dir = self.data_dir().join(TOPIC_CONFIG_DIR);
        let name = format!("{topic}.properties");
        write_atomically(&cfg_dir, &name, format_properties(&overrides).as_bytes())
            .map_err(io_at(cfg_dir.join(&name)))?;
        crate::sync::write(&self.shared.topic_overrides).insert(topic.to_string(), overrides);
        for log in self.logs_of(topic) {
            log.set_config(config.clone());
        }
        Ok(config)
    }

    fn logs_of(&self, topic: &str) -> Vec<Arc<PartitionLog>> {
        let logs = crate::sync::read(&self.shared.logs);
        logs.iter()
            .filter(|(tp, _)| tp.topic == topic)
            .map(|(_, l)| Arc::clone(l))
            .collect()
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<PartitionLog>> {
        crate::sync::read(&self.shared.logs).get(tp).cloned()
    }

    /// The log of `tp`, created empty (with the topic's config) if it does not exist.
    pub fn get_or_create(&self, tp: &TopicPartition) -> Result<Arc<PartitionLog>, StorageError> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        validate_topic_name(&tp.topic)?;
        if tp.partition.0 < 0 {
            return Err(StorageError::UnknownPartition(tp.clone()));
        }
        let mut logs = crate::sync::write(&self.shared.logs);
        if let Some(log) = logs.get(tp) {
            return Ok(Arc::clone(log));
        }
        let dir = self.data_dir().join(tp.dir_name());
        let log = Arc::new(PartitionLog::open(
            dir,
            tp.clone(),
            self.topic_config(&tp.topic),
            self.shared.clock.clone(),
        )?);
        logs.insert(tp.clone(), Arc::clone(&log));
        Ok(log)
    }

    /// Every open partition, sorted.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let logs = crate::sync::read(&self.shared.logs);
        let mut v: Vec<_> = logs.keys().cloned().collect();
        v.sort();
        v
    }

    /// Closes and deletes a partition's log and its directory.
    pub fn delete(&self, tp: &TopicPartition) -> Result<(), StorageError> {
        let log = self
            .get(tp)
            .ok_or_else(|| StorageError::UnknownPartition(tp.clone()))?;
        // Wait for a cleaning pass on this log to end *before* locking the map, so every other
        // partition stays usable meanwhile; holding the cleaning lock keeps a new pass out.
        let _cleaning = crate::sync::plain(&log.cleaning);
        // The map stays locked until the directory is renamed away, so no concurrent
        // `get_or_create` can open a second log on the directory being deleted.
        let mut logs = crate::sync::write(&self.shared.logs);
        if !logs.get(tp).is_some_and(|l| Arc::ptr_eq(l, &log)) {
            // Deleted (or replaced) by someone else meanwhile.
            return Err(StorageError::UnknownPartition(tp.clone()));
        }
        let doomed = self
            .data_dir()
            .join(format!("{}{DELETING_SUFFIX}", tp.dir_name()));
        {
            log.close()?;
            // Rename first so a crash mid-delete never leaves a half-deleted log that reopens.
            fs::rename(log.dir(), &doomed).map_err(io_at(log.dir()))?;
        }
        logs.remove(tp);
        drop(logs);
        fs::remove_dir_all(&doomed).map_err(io_at(&doomed))?;
        if self.logs_of(&tp.topic).is_empty() {
            let path = self
                .data_dir()
                .join(TOPIC_CONFIG_DIR)
                .join(format!("{}.properties", tp.topic));
            let _ = fs::remove_file(path);
            crate::sync::write(&self.shared.topic_overrides).remove(&tp.topic);
        }
        Ok(())
    }

    /// One retention pass over every log. Errors on one log are logged and do not stop the rest.
    /// Returns the number of segments deleted.
    pub fn run_retention(&self) -> usize {
        self.shared.run_retention()
    }

    /// Flushes every log whose `flush.ms` is due.
    pub fn run_flush(&self) {
        self.shared.run_flush()
    }

    /// Writes every log's checkpoint.
    pub fn run_checkpoint(&self) {
        self.shared.run_checkpoint()
    }

    /// Cleans the compacted log with the highest dirty ratio above its
    /// `min.cleanable.dirty.ratio`. Returns whether a log was cleaned.
    pub fn run_cleaner_once(&self) -> bool {
        self.shared.run_cleaner_once()
    }

    /// Starts the background threads: one for retention, flush.ms and checkpoints, and
    /// `log.cleaner.threads` cleaners. They run until [`close`](Self::close).
    pub fn start(&self) {
        let mut workers = crate::sync::plain(&self.workers);
        if !workers.is_empty() {
            return;
        }
        let c = &self.shared.config;
        let tick_ms = c
            .flush_check_interval_ms
            .min(c.retention_check_interval_ms)
            .max(1);
        let me = Arc::clone(&self.shared);
        let (retention_every, checkpoint_every) =
            (c.retention_check_interval_ms, c.checkpoint_interval_ms);
        workers.push(
            std::thread::Builder::new()
                .name("rill-log-maintenance".into())
                .spawn(move || {
                    let (mut since_retention, mut since_checkpoint) = (0u64, 0u64);
                    while me.sleep(tick_ms) {
                        me.run_flush();
                        since_retention += tick_ms;
                        since_checkpoint += tick_ms;
                        if since_retention >= retention_every {
                            since_retention = 0;
                            me.run_retention();
                        }
                        if since_checkpoint >= checkpoint_every {
                            since_checkpoint = 0;
                            me.run_checkpoint();
                        }
                    }
                })
                .expect("spawning a thread"),
        );
        if c.cleaner_enable {
            let threads = self.shared.tunables().cleaner_threads;
            for i in 0..threads {
                workers.push(self.spawn_cleaner(i));
            }
            *crate::sync::plain(&self.cleaners) = threads;
        }
    }

    /// Cleaner thread `i`: it cleans while `i` is below `log.cleaner.threads`, and idles
    /// (checking every backoff) while the count is lower, so the count can change at runtime.
    fn spawn_cleaner(&self, i: usize) -> JoinHandle<()> {
        let me = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name(format!("rill-log-cleaner-{i}"))
            .spawn(move || loop {
                let t = me.tunables();
                let cleaned = i < t.cleaner_threads
                    // A bug in one pass must not end compaction for every log.
                    && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        me.run_cleaner_once()
                    }))
                    .unwrap_or_else(|_| {
                        tracing::error!("a cleaning pass panicked; backing off");
                        false
                    });
                if !cleaned && !me.sleep(t.cleaner_backoff_ms.max(1)) {
                    break;
                }
                if me.stopped() {
                    break;
                }
            })
            .expect("spawning a thread")
    }

    /// The settings that may change at runtime, as in force.
    pub fn tunables(&self) -> Tunables {
        self.shared.tunables()
    }

    /// Changes them at runtime: cleaner threads are started up to the new count (surplus ones
    /// idle once their current backoff ends), and the rest take effect at the next cleaning
    /// pass or retention run.
    pub fn set_tunables(&self, t: Tunables) {
        *crate::sync::write(&self.shared.tunables) = t;
        let mut workers = crate::sync::plain(&self.workers);
        let mut cleaners = crate::sync::plain(&self.cleaners);
        // Only once started (with the cleaner enabled): start() spawns the count in force.
        if !workers.is_empty() && self.shared.config.cleaner_enable && *cleaners < t.cleaner_threads
        {
            for i in *cleaners..t.cleaner_threads {
                workers.push(self.spawn_cleaner(i));
            }
            *cleaners = t.cleaner_threads;
        }
    }

    /// Stops the background threads, then flushes and closes every log cleanly.
    pub fn close(&self) -> Result<(), StorageError> {
        self.stop_workers();
        let mut first_err = None;
        for log in self.shared.all_logs() {
            if let Err(e) = log.close() {
                tracing::error!(tp = %log.topic_partition(), error = %e, "closing log failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl LogManager {
    fn stop_workers(&self) {
        *crate::sync::plain(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        let workers: Vec<_> = crate::sync::plain(&self.workers).drain(..).collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for LogManager {
    /// Stops the background threads. The logs are not closed: without [`close`](Self::close)
    /// the next open recovers them as after a crash.
    fn drop(&mut self) {
        self.stop_workers();
    }
}
