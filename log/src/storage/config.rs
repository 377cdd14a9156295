//! Per-topic log configuration under Kafka's names and defaults (`segment.bytes`,
//! `retention.ms`, `cleanup.policy`, ...), parsed from string maps so topic configs can come from
//! files, the admin API or the command line with one set of checks.

use std::collections::BTreeMap;

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
        }
    }
}

/// Every topic config key rill understands, in the order `describe` lists them.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.ms",
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
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
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
        Ok(config)
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
            _ => return None,
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
