//! Dynamic broker configs (Kafka's DynamicBrokerConfig, for the settings rill has): the
//! broker-wide topic defaults (`log.retention.ms`, `compression.type`, ...) that Kafka lets
//! change without a restart, set cluster-wide (resource name "") or for this broker (its node
//! id), applied to the log manager at once and persisted in
//! `<data dir>/metadata/broker-configs.json`. Precedence, as in Kafka: this broker's dynamic
//! value, then the cluster-wide dynamic default, then the config file, then Kafka's default.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BrokerError;
use crate::storage::config::{int, invalid};
use crate::storage::manager::Tunables;
use crate::storage::{write_atomically, ConfigError, LogConfig};

const DIR: &str = "metadata";
const FILE: &str = "broker-configs.json";

/// The broker configs Kafka marks dynamic that rill applies: each topic config's primary
/// broker synonym (Kafka's `ServerTopicConfigSynonyms`, less `log.message.format.version`,
/// which Kafka does not reconfigure) and the topic config it sets.
pub(crate) const DYNAMIC_LOG_CONFIGS: &[(&str, &str)] = &[
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.type", "compression.type"),
    ("compression.zstd.level", "compression.zstd.level"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.index.size.max.bytes", "segment.index.bytes"),
    ("log.local.retention.bytes", "local.retention.bytes"),
    ("log.local.retention.ms", "local.retention.ms"),
    (
        "log.message.downconversion.enable",
        "message.downconversion.enable",
    ),
    (
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
    ),
    (
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
    ),
    (
        "log.message.timestamp.difference.max.ms",
        "message.timestamp.difference.max.ms",
    ),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.preallocate", "preallocate"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.roll.jitter.ms", "segment.jitter.ms"),
    ("log.roll.ms", "segment.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.segment.delete.delay.ms", "file.delete.delay.ms"),
    ("message.max.bytes", "max.message.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// The log manager's settings Kafka changes at runtime (its LogCleaner's reconfigurable
/// configs that rill has, and the producer state's `producer.id.expiration.ms`).
pub(crate) const DYNAMIC_MANAGER_CONFIGS: &[&str] = &[
    "log.cleaner.backoff.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.threads",
    "producer.id.expiration.ms",
];

/// Whether Kafka (and rill) change `key` without a restart.
pub(crate) fn is_dynamic(key: &str) -> bool {
    topic_key(key).is_some() || DYNAMIC_MANAGER_CONFIGS.contains(&key)
}

/// Sets one of [`DYNAMIC_MANAGER_CONFIGS`], with the config file's checks.
fn set_tunable(t: &mut Tunables, key: &str, value: &str) -> Result<(), ConfigError> {
    match key {
        "log.cleaner.backoff.ms" => t.cleaner_backoff_ms = int(key, value, 1, i64::MAX)? as u64,
        "log.cleaner.dedupe.buffer.size" => {
            t.dedupe_buffer_bytes = int(key, value, 1 << 10, i64::MAX)? as usize
        }
        "log.cleaner.threads" => t.cleaner_threads = int(key, value, 1, 64)? as usize,
        "producer.id.expiration.ms" => {
            t.producer_id_expiration_ms = int(key, value, 1, i32::MAX as i64)?
        }
        _ => return Err(ConfigError::UnknownKey(key.to_string())),
    }
    Ok(())
}

/// The value of one of [`DYNAMIC_MANAGER_CONFIGS`].
pub(crate) fn tunable_value(t: &Tunables, key: &str) -> Option<String> {
    Some(match key {
        "log.cleaner.backoff.ms" => t.cleaner_backoff_ms.to_string(),
        "log.cleaner.dedupe.buffer.size" => t.dedupe_buffer_bytes.to_string(),
        "log.cleaner.threads" => t.cleaner_threads.to_string(),
        "producer.id.expiration.ms" => t.producer_id_expiration_ms.to_string(),
        _ => return None,
    })
}

/// Kafka's check of a new `log.cleaner.threads`: at least half and at most double the count
/// in force.
pub(crate) fn check_cleaner_threads(current: usize, new: usize) -> Result<(), ConfigError> {
    if new < current / 2 || new > current * 2 {
        return Err(invalid(
            "log.cleaner.threads",
            &new.to_string(),
            format!("may change only to between half and double the current {current} threads"),
        ));
    }
    Ok(())
}

/// The topic config a dynamic broker config sets.
pub(crate) fn topic_key(broker_key: &str) -> Option<&'static str> {
    DYNAMIC_LOG_CONFIGS
        .iter()
        .find(|(b, _)| *b == broker_key)
        .map(|(_, t)| *t)
}

/// The broker config that sets a topic config's default, if it is dynamic.
pub(crate) fn broker_key(topic_key: &str) -> Option<&'static str> {
    DYNAMIC_LOG_CONFIGS
        .iter()
        .find(|(_, t)| *t == topic_key)
        .map(|(b, _)| *b)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    /// Set for every broker (DescribeConfigs source DYNAMIC_DEFAULT_BROKER_CONFIG).
    cluster: BTreeMap<String, String>,
    /// Set for this broker (DYNAMIC_BROKER_CONFIG).
    broker: BTreeMap<String, String>,
}

/// The dynamic broker configs in force, mirrored to disk on every change.
#[derive(Debug)]
pub(crate) struct DynamicConfigs {
    dir: PathBuf,
    pub cluster: BTreeMap<String, String>,
    pub broker: BTreeMap<String, String>,
}

impl DynamicConfigs {
    /// Reads the persisted dynamic configs of `data_dir` (none if never set).
    pub fn load(data_dir: &Path) -> Result<DynamicConfigs, BrokerError> {
        let dir = data_dir.join(DIR);
        let err = |reason: String| BrokerError::Metadata {
            path: dir.join(FILE),
            reason,
        };
        let file = match fs::read(dir.join(FILE)) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
                if file.version != 1 {
                    return Err(err(format!("unknown version {}", file.version)));
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        let configs = DynamicConfigs {
            dir: dir.clone(),
            cluster: file.cluster,
            broker: file.broker,
        };
        // A file that no longer parses (edited by hand, or from a newer rill) stops the
        // broker with the key named, rather than starting on other defaults than it had.
        configs
            .effective(&LogConfig::default())
            .map_err(|e| err(e.to_string()))?;
        let base = crate::storage::ManagerConfig::new(data_dir).tunables();
        configs
            .effective_tunables(base)
            .map_err(|e| err(e.to_string()))?;
        Ok(configs)
    }

    /// Writes the configs atomically (temporary file, fsync, rename, directory fsync).
    pub fn persist(&self) -> Result<(), BrokerError> {
        let file = File {
            version: 1,
            cluster: self.cluster.clone(),
            broker: self.broker.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("broker configs serialize");
        write_atomically(&self.dir, FILE, &bytes).map_err(|e| BrokerError::Metadata {
            path: self.dir.join(FILE),
            reason: e.to_string(),
        })
    }

    /// The topic defaults: `static_defaults` (the config file's) with the cluster-wide dynamic
    /// configs applied, then this broker's.
    pub fn effective(&self, static_defaults: &LogConfig) -> Result<LogConfig, ConfigError> {
        let mut config = static_defaults.clone();
        for map in [&self.cluster, &self.broker] {
            for (k, v) in map {
                if DYNAMIC_MANAGER_CONFIGS.contains(&k.as_str()) {
                    continue;
                }
                let t = topic_key(k).ok_or_else(|| ConfigError::UnknownKey(k.clone()))?;
                config.set(t, v).map_err(|e| rename(e, t, k))?;
            }
        }
        config.check()?;
        Ok(config)
    }

    /// The manager's runtime settings: `base` (the config file's) with the cluster-wide
    /// dynamic configs applied, then this broker's.
    pub fn effective_tunables(&self, base: Tunables) -> Result<Tunables, ConfigError> {
        let mut t = base;
        for map in [&self.cluster, &self.broker] {
            for (k, v) in map {
                if DYNAMIC_MANAGER_CONFIGS.contains(&k.as_str()) {
                    set_tunable(&mut t, k, v)?;
                }
            }
        }
        Ok(t)
    }
}

/// An error about topic config `topic_key` retold under its broker name.
pub(crate) fn rename(e: ConfigError, topic_key: &str, broker_key: &str) -> ConfigError {
    match e {
        ConfigError::InvalidValue { value, reason, .. } => ConfigError::InvalidValue {
            key: broker_key.to_string(),
            value,
            reason,
        },
        ConfigError::UnknownKey(k) if k == topic_key => ConfigError::UnknownKey(broker_key.into()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dynamic_key_sets_a_known_topic_key_and_is_documented() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("#### Dynamic broker configs")
            .expect("a section");
        let section = &readme[start..start + readme[start..].find("\n### ").unwrap_or(0)];
        for (broker_key, topic_key) in DYNAMIC_LOG_CONFIGS {
            assert!(crate::storage::config::TOPIC_CONFIG_KEYS.contains(topic_key));
            assert!(section.contains(&format!("`{broker_key}`")), "{broker_key}");
        }
        for key in DYNAMIC_MANAGER_CONFIGS {
            assert!(section.contains(&format!("`{key}`")), "{key}");
        }
    }
}
