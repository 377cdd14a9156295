//! Per-topic log configuration under Kafka's names and defaults (`segment.bytes`,
//! `retention.ms`, `cleanup.policy`, ...), parsed from string maps so topic configs can come from
//! files, the admin API or the command line with one set of checks.

use std::collections::BTreeMap;

use crate::record::batch::Compression;

/// A config key or value that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config `{0}`")]
    UnknownKey(String),
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// Two keys whose values contradict each other (Kafka's `validateValues`).
    #[error("conflicting configs: {0}")]
    Conflict(String),
}

/// What happens to old data: deleted by retention, compacted by key, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// Whether a batch keeps the producer's timestamps or is stamped by the log on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTimestampType {
    CreateTime,
    LogAppendTime,
}

/// One partition log's configuration. Field names are Kafka's with units last.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll a new segment when the active one would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment this long after it was created.
    pub segment_ms: i64,
    /// `segment.index.bytes`: roll when the offset index reaches this size.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between two offset / time index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete segments whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger; -1 is no limit.
    pub retention_bytes: i64,
    /// `cleanup.policy`: `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long a tombstone outlives its timestamp before compaction drops it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of uncleaned bytes that triggers compaction.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment is compacted only once its newest record is this old.
    pub min_compaction_lag_ms: i64,
    /// `flush.messages`: fsync after this many records; 1 means fsync before every ack.
    pub flush_messages: u64,
    /// `flush.ms`: fsync when the oldest unflushed append is this old.
    pub flush_ms: i64,
    /// `max.message.bytes`: the largest batch accepted, framing included.
    pub max_message_bytes: u64,
    /// `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub message_timestamp_type: MessageTimestampType,
    /// `min.insync.replicas`: in-sync replicas an `acks=all` produce needs (the broker's check).
    pub min_insync_replicas: i32,
    /// `compression.type`: the codec batches are stored with; `None` is `producer` (kept as sent).
    pub compression_type: Option<Compression>,
    /// `segment.jitter.ms`: up to this much (a per-segment pseudo-random share) is taken off
    /// `segment.ms`, so segments created together do not all roll at once.
    pub segment_jitter_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment whose first batch is this old is compacted even
    /// under `min.cleanable.dirty.ratio`.
    pub max_compaction_lag_ms: i64,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime record may be.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime record may be.
    pub message_timestamp_after_max_ms: i64,
    /// `compression.gzip.level`: -1 (zlib's default, 6) or 1-9, for batches the log recompresses.
    pub compression_gzip_level: i32,
    /// `compression.lz4.level`: 1-17.
    pub compression_lz4_level: i32,
    /// `compression.zstd.level`: -131072-22.
    pub compression_zstd_level: i32,
    /// `message.timestamp.difference.max.ms` (deprecated): stands in for either bound above
    /// that is left at its default, as in Kafka.
    pub message_timestamp_difference_max_ms: i64,
    /// Keys Kafka accepts whose features rill lacks: validated, stored and reported only
    /// (see [`STORED_ONLY`]). Holds only keys that were set.
    pub stored: BTreeMap<String, String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy {
                delete: true,
                compact: false,
            },
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            message_timestamp_type: MessageTimestampType::CreateTime,
            min_insync_replicas: 1,
            compression_type: None,
            segment_jitter_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: i64::MAX,
            message_timestamp_difference_max_ms: i64::MAX,
            compression_gzip_level: -1,
            compression_lz4_level: 9,
            compression_zstd_level: 3,
            stored: BTreeMap::new(),
        }
    }
}

/// A check of a stored-only key's value.
type Check = fn(&str, &str) -> Result<(), ConfigError>;

/// Topic configs Kafka accepts that change nothing in rill yet: key, Kafka's default, check.
/// Why each has no effect is in the README's topic config table.
pub const STORED_ONLY: &[(&str, &str, Check)] = &[
    ("file.delete.delay.ms", "60000", |k, v| {
        int(k, v, 0, i64::MAX).map(drop)
    }),
    (
        "follower.replication.throttled.replicas",
        "",
        throttled_replicas,
    ),
    (
        "leader.replication.throttled.replicas",
        "",
        throttled_replicas,
    ),
    ("local.retention.bytes", "-2", |k, v| {
        int(k, v, -2, i64::MAX).map(drop)
    }),
    ("local.retention.ms", "-2", |k, v| {
        int(k, v, -2, i64::MAX).map(drop)
    }),
    ("message.downconversion.enable", "true", |k, v| {
        boolean(k, v).map(drop)
    }),
    ("message.format.version", "3.0-IV1", message_format_version),
    ("preallocate", "false", |k, v| boolean(k, v).map(drop)),
    ("remote.log.copy.disable", "false", |k, v| {
        boolean(k, v).map(drop)
    }),
    ("remote.log.delete.on.disable", "false", |k, v| {
        boolean(k, v).map(drop)
    }),
    ("remote.storage.enable", "false", |k, v| {
        // Kafka refuses this when the broker's tiered storage is off, which in rill it always is.
        if boolean(k, v)? {
            return Err(invalid(
                k,
                v,
                "tiered storage is not available on this broker",
            ));
        }
        Ok(())
    }),
    ("unclean.leader.election.enable", "false", |k, v| {
        boolean(k, v).map(drop)
    }),
];

/// Kafka's boolean parsing: `true` / `false`, any case.
pub(crate) fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

/// `*` or a list of `partition:broker` pairs (Kafka's ThrottledReplicaListValidator).
fn throttled_replicas(key: &str, value: &str) -> Result<(), ConfigError> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items == ["*"] {
        return Ok(());
    }
    let pair = |s: &str| {
        s.split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<i32>().is_ok() && b.trim().parse::<i32>().is_ok()
        })
    };
    if items.iter().all(|s| pair(s)) {
        Ok(())
    } else {
        Err(invalid(
            key,
            value,
            "must be * or a list of partitionId:brokerId pairs",
        ))
    }
}

/// A Kafka version as `message.format.version` takes it (`2.8`, `3.0-IV1`, `0.10.2`).
fn message_format_version(key: &str, value: &str) -> Result<(), ConfigError> {
    let v = value.trim();
    let (version, iv) = match v.split_once("-IV") {
        Some((ver, iv)) => (ver, Some(iv)),
        None => (v, None),
    };
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Kafka keys a version by its first three parts for 0.x ("0.10.0.0" is 0.10.0) and its
    // first two otherwise ("3.0.1" is 3.0), ignoring the rest (`MetadataVersion`).
    let significant = if version.starts_with("0.") { 3 } else { 2 };
    let ok = (significant..=4).contains(&parts.len())
        && parts.iter().all(|p| numeric(p))
        && iv.is_none_or(numeric);
    if ok {
        Ok(())
    } else {
        Err(invalid(key, value, "not a Kafka version"))
    }
}

/// Every topic config key rill understands, in the order `describe` lists them.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.type",
    "compression.zstd.level",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

pub(crate) fn int(key: &str, value: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not an integer"))?;
    if v < min || v > max {
        return Err(invalid(
            key,
            value,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

impl LogConfig {
    /// Whether appends fsync under this config (`flush.messages` or `flush.ms` set).
    pub fn syncs_on_append(&self) -> bool {
        self.flush_messages < i64::MAX as u64 || self.flush_ms < i64::MAX
    }

    /// Applies `key = value`, checking the value; the config is unchanged on error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        const MAX: i64 = i64::MAX;
        match key {
            // A segment must hold at least one batch header.
            "segment.bytes" => self.segment_bytes = int(key, value, 64, i32::MAX as i64)? as u64,
            "segment.ms" => self.segment_ms = int(key, value, 1, MAX)?,
            "segment.index.bytes" => {
                self.segment_index_bytes = int(key, value, 8, i32::MAX as i64)? as u64
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = int(key, value, 0, i32::MAX as i64)? as u64
            }
            "retention.ms" => self.retention_ms = int(key, value, -1, MAX)?,
            "retention.bytes" => self.retention_bytes = int(key, value, -1, MAX)?,
            "cleanup.policy" => {
                let mut policy = CleanupPolicy {
                    delete: false,
                    compact: false,
                };
                for part in value.split(',').map(str::trim) {
                    match part {
                        "delete" => policy.delete = true,
                        "compact" => policy.compact = true,
                        _ => return Err(invalid(key, value, "expected delete, compact or both")),
                    }
                }
                self.cleanup_policy = policy;
            }
            "delete.retention.ms" => self.delete_retention_ms = int(key, value, 0, MAX)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(key, value, "not a number"))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(invalid(key, value, "must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = int(key, value, 0, MAX)?,
            "min.insync.replicas" => {
                self.min_insync_replicas = int(key, value, 1, i32::MAX as i64)? as i32
            }
            "flush.messages" => self.flush_messages = int(key, value, 1, MAX)? as u64,
            "flush.ms" => self.flush_ms = int(key, value, 0, MAX)?,
            "max.message.bytes" => {
                self.max_message_bytes = int(key, value, 0, i32::MAX as i64)? as u64
            }
            "message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => MessageTimestampType::CreateTime,
                    "LogAppendTime" => MessageTimestampType::LogAppendTime,
                    _ => return Err(invalid(key, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "compression.type" => {
                self.compression_type = match value.trim() {
                    "producer" => None,
                    // Kafka's broker-side names: `uncompressed`, not the producer's `none`.
                    v @ ("uncompressed" | "gzip" | "snappy" | "lz4" | "zstd") => {
                        Compression::parse(v)
                    }
                    _ => {
                        return Err(invalid(
                            key,
                            value,
                            "expected uncompressed, zstd, lz4, snappy, gzip or producer",
                        ))
                    }
                }
            }
            "segment.jitter.ms" => self.segment_jitter_ms = int(key, value, 0, MAX)?,
            "compression.gzip.level" => {
                let level = int(key, value, -1, 9)?;
                if level == 0 {
                    return Err(invalid(
                        key,
                        value,
                        "must be between 1 and 9 or equal to -1",
                    ));
                }
                self.compression_gzip_level = level as i32;
            }
            "compression.lz4.level" => self.compression_lz4_level = int(key, value, 1, 17)? as i32,
            "compression.zstd.level" => {
                self.compression_zstd_level = int(key, value, -131_072, 22)? as i32
            }
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = int(key, value, 1, MAX)?,
            "message.timestamp.before.max.ms" => {
                self.message_timestamp_before_max_ms = int(key, value, 0, MAX)?
            }
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = int(key, value, 0, MAX)?
            }
            "message.timestamp.difference.max.ms" => {
                self.message_timestamp_difference_max_ms = int(key, value, 0, MAX)?
            }
            _ => match STORED_ONLY.iter().find(|(k, _, _)| *k == key) {
                Some((k, default, check)) => {
                    check(k, value)?;
                    // Booleans in Kafka's spelling; a default is not kept, so configs compare equal.
                    let v = match boolean(k, value) {
                        Ok(b) => b.to_string(),
                        Err(_) => value.trim().to_string(),
                    };
                    if v == *default {
                        self.stored.remove(*k);
                    } else {
                        self.stored.insert(k.to_string(), v);
                    }
                }
                None => return Err(ConfigError::UnknownKey(key.to_string())),
            },
        }
        Ok(())
    }

    /// The defaults with `overrides` applied; fails on the first unknown key or bad value.
    pub fn from_overrides(
        base: &LogConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig, ConfigError> {
        let mut config = base.clone();
        for (k, v) in overrides {
            config.set(k, v)?;
        }
        config.check()?;
        Ok(config)
    }

    /// Checks across keys, as Kafka's `LogConfig.validateValues`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            return Err(ConfigError::Conflict(format!(
                "min.compaction.lag.ms ({}) > max.compaction.lag.ms ({})",
                self.min_compaction_lag_ms, self.max_compaction_lag_ms
            )));
        }
        Ok(())
    }

    /// The level the log compresses `codec` at (`compression.<codec>.level`); snappy and
    /// uncompressed have none.
    pub fn compression_level(&self, codec: Compression) -> Option<i32> {
        match codec {
            Compression::Gzip => Some(self.compression_gzip_level),
            Compression::Lz4 => Some(self.compression_lz4_level),
            Compression::Zstd => Some(self.compression_zstd_level),
            Compression::None | Compression::Snappy => None,
        }
    }

    /// The oldest CreateTime a record may carry at `now_ms` (`message.timestamp.before.max.ms`,
    /// or the deprecated difference while that is at its default), if bounded.
    pub fn earliest_timestamp(&self, now_ms: i64) -> Option<i64> {
        let before = match self.message_timestamp_before_max_ms {
            i64::MAX => self.message_timestamp_difference_max_ms,
            v => v,
        };
        (before != i64::MAX).then(|| now_ms.saturating_sub(before))
    }

    /// The newest CreateTime a record may carry at `now_ms`, if bounded.
    pub fn latest_timestamp(&self, now_ms: i64) -> Option<i64> {
        let after = match self.message_timestamp_after_max_ms {
            i64::MAX => self.message_timestamp_difference_max_ms,
            v => v,
        };
        (after != i64::MAX).then(|| now_ms.saturating_add(after))
    }

    /// The value of a key as Kafka would print it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "cleanup.policy" => match (self.cleanup_policy.compact, self.cleanup_policy.delete) {
                (true, true) => "compact,delete".into(),
                (true, false) => "compact".into(),
                (false, true) => "delete".into(),
                (false, false) => "".into(),
            },
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.message_timestamp_type {
                MessageTimestampType::CreateTime => "CreateTime".into(),
                MessageTimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            "compression.type" => match self.compression_type {
                None => "producer".into(),
                Some(Compression::None) => "uncompressed".into(),
                Some(Compression::Gzip) => "gzip".into(),
                Some(Compression::Snappy) => "snappy".into(),
                Some(Compression::Lz4) => "lz4".into(),
                Some(Compression::Zstd) => "zstd".into(),
            },
            "segment.jitter.ms" => self.segment_jitter_ms.to_string(),
            "compression.gzip.level" => self.compression_gzip_level.to_string(),
            "compression.lz4.level" => self.compression_lz4_level.to_string(),
            "compression.zstd.level" => self.compression_zstd_level.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "message.timestamp.difference.max.ms" => {
                self.message_timestamp_difference_max_ms.to_string()
            }
            _ => {
                let (k, default, _) = STORED_ONLY.iter().find(|(k, _, _)| *k == key)?;
                self.stored
                    .get(*k)
                    .cloned()
                    .unwrap_or_else(|| default.to_string())
            }
        })
    }

    /// Every key with its current value.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|k| {
                (
                    k.to_string(),
                    self.get(k).expect("every listed key has a value"),
                )
            })
            .collect()
    }
}

/// Parses Java-properties-style `key=value` lines (`#` comments, blank lines ignored).
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| invalid(line, "", "expected key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Writes `key=value` lines that [`parse_properties`] reads back.
pub fn format_properties(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests {

    /// Versions as Kafka reads them (librdkafka's test 0092 sets `0.10.0.0`): the first three
    /// parts for 0.x, two otherwise, any trailing part ignored; anything else refused.
    #[test]
    fn message_format_versions_are_read_as_kafka_reads_them() {
        for ok in [
            "0.10.0.0",
            "0.10.2",
            "0.11.0-IV2",
            "2.8",
            "3.0-IV1",
            "3.0.1",
        ] {
            assert!(super::message_format_version("k", ok).is_ok(), "{ok}");
        }
        for bad in ["0.10", "3", "x.1", "1.2.3.4.5", "3.0-IVx", ""] {
            assert!(super::message_format_version("k", bad).is_err(), "{bad}");
        }
    }
    use super::*;

    #[test]
    fn every_key_round_trips_through_get_and_set() {
        let c = LogConfig::default();
        let mut d = LogConfig::default();
        for (k, v) in c.to_map() {
            d.set(&k, &v).unwrap();
        }
        assert_eq!(c, d);
    }

    #[test]
    fn bad_values_are_refused_and_leave_config_unchanged() {
        let mut c = LogConfig::default();
        assert!(matches!(
            c.set("segment.bytes", "12"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set("retention.ms", "soon"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set("cleanup.policy", "shred"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set("min.cleanable.dirty.ratio", "1.5"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set("no.such.key", "1"),
            Err(ConfigError::UnknownKey(_))
        ));
        assert_eq!(c, LogConfig::default());
        c.set("cleanup.policy", "compact, delete").unwrap();
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
    }

    #[test]
    fn the_readme_documents_every_topic_key() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("### Topic configs")
            .expect("a topic config section");
        let end = readme
            .find("### Broker configs")
            .expect("a broker config section");
        for key in TOPIC_CONFIG_KEYS {
            assert!(
                readme[start..end].contains(&format!("`{key}`")),
                "{key} is not in the README's topic config table"
            );
        }
    }

    #[test]
    fn every_listed_key_is_accepted_and_nothing_else() {
        let mut c = LogConfig::default();
        for key in TOPIC_CONFIG_KEYS {
            let v = c.get(key).expect("a value");
            c.set(key, &v).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        assert_eq!(TOPIC_CONFIG_KEYS.len(), 36);
        assert!(c.get("no.such.key").is_none());
    }

    #[test]
    fn properties_round_trip() {
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), "1000".to_string());
        m.insert("cleanup.policy".to_string(), "compact".to_string());
        assert_eq!(parse_properties(&format_properties(&m)).unwrap(), m);
        assert!(parse_properties("# c\n\nsegment.bytes = 100\n")
            .unwrap()
            .contains_key("segment.bytes"));
        assert!(parse_properties("garbage").is_err());
    }
}
