//! The configuration of a `rill broker` process: Kafka's broker property names, from a TOML
//! file (`--config rill.toml`, where dotted keys such as `log.retention.ms = 3600000` are
//! Kafka's names as they are) and from command-line flags, checked with one error per bad key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::broker::{BrokerConfig, ClusterConfig};
use crate::controller::ControllerConfig;
use crate::net::ServerConfig;
use crate::storage::config::{int, invalid};
use crate::storage::ConfigError;

/// Everything a broker process needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `listeners`: the address to listen on, `host:port` (a `PLAINTEXT://` prefix is accepted).
    pub listen: String,
    /// `advertised.listeners`: what clients are told to connect to; defaults to the bound
    /// listener address.
    pub advertised: Option<String>,
    pub broker: BrokerConfig,
    pub server: ServerConfig,
    pub cluster: ClusterSettings,
    /// `cluster.id` was set: a cluster node's unformatted data directory is formatted
    /// with it, a formatted one checked against it.
    pub cluster_id_given: bool,
}

/// What a node of a cluster adds (KRaft's settings). With no `process.roles` the node is a
/// standalone broker, as it always was.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `process.roles`: this node runs a broker.
    pub broker_role: bool,
    /// `process.roles`: this node is a controller (a voter of the metadata quorum).
    pub controller_role: bool,
    /// The `CONTROLLER://host:port` entry of `listeners` (a controller's listener); defaults
    /// to this node's entry in `controller.quorum.voters`.
    pub controller_listen: Option<String>,
    /// `broker.rack`, `controller.quorum.voters`, `replica.*`, `broker.heartbeat.interval.ms`.
    pub broker: ClusterConfig,
    /// `broker.session.timeout.ms`, `default.replication.factor` and the election defaults.
    pub controller: ControllerConfig,
    /// `controller.quorum.election.timeout.ms`: how long a voter goes without hearing from the
    /// leader before it starts an election (see `QuorumConfig::with_election_timeout`).
    pub election_timeout_ms: u64,
}

impl ClusterSettings {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.broker_role || self.controller_role
    }
}

/// `1@host:port,2@host:port,...`.
fn voters(key: &str, v: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| invalid(key, v, "entries are id@host:port"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| invalid(key, v, "ids are non-negative integers"))?;
        let addr = listener(key, addr)?;
        if out.insert(id, addr).is_some() {
            return Err(invalid(key, v, "an id appears twice"));
        }
    }
    if out.is_empty() {
        return Err(invalid(key, v, "no voters"));
    }
    Ok(out)
}

/// Broker-wide `log.*` defaults and the topic config each one sets.
const LOG_DEFAULTS: &[(&str, &str, i64)] = &[
    ("log.retention.ms", "retention.ms", 1),
    ("log.retention.minutes", "retention.ms", 60_000),
    ("log.retention.hours", "retention.ms", 3_600_000),
    ("log.retention.bytes", "retention.bytes", 1),
    ("log.segment.bytes", "segment.bytes", 1),
    ("log.roll.ms", "segment.ms", 1),
    ("log.roll.hours", "segment.ms", 3_600_000),
    ("log.flush.interval.messages", "flush.messages", 1),
    ("log.flush.interval.ms", "flush.ms", 1),
    ("log.index.interval.bytes", "index.interval.bytes", 1),
    ("log.index.size.max.bytes", "segment.index.bytes", 1),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms", 1),
    (
        "log.cleaner.min.compaction.lag.ms",
        "min.compaction.lag.ms",
        1,
    ),
    ("message.max.bytes", "max.message.bytes", 1),
    ("min.insync.replicas", "min.insync.replicas", 1),
    ("log.cleanup.policy", "cleanup.policy", 0),
    ("log.message.timestamp.type", "message.timestamp.type", 0),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
        0,
    ),
    ("log.roll.jitter.ms", "segment.jitter.ms", 1),
    ("log.roll.jitter.hours", "segment.jitter.ms", 3_600_000),
    (
        "log.cleaner.max.compaction.lag.ms",
        "max.compaction.lag.ms",
        1,
    ),
    ("log.segment.delete.delay.ms", "file.delete.delay.ms", 1),
    ("log.preallocate", "preallocate", 0),
    ("compression.type", "compression.type", 0),
    ("compression.gzip.level", "compression.gzip.level", 0),
    ("compression.lz4.level", "compression.lz4.level", 0),
    ("compression.zstd.level", "compression.zstd.level", 0),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        0,
    ),
    (
        "log.message.timestamp.difference.max.ms",
        "message.timestamp.difference.max.ms",
        1,
    ),
    (
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
        1,
    ),
    (
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
        1,
    ),
    (
        "log.message.downconversion.enable",
        "message.downconversion.enable",
        0,
    ),
    ("log.message.format.version", "message.format.version", 0),
    ("log.local.retention.ms", "local.retention.ms", 1),
    ("log.local.retention.bytes", "local.retention.bytes", 1),
];

impl NodeConfig {
    /// Defaults for a broker storing its data in `data_dir`, listening on 127.0.0.1:9092.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            listen: "127.0.0.1:9092".into(),
            advertised: None,
            broker: BrokerConfig::new(data_dir),
            server: ServerConfig::default(),
            cluster: ClusterSettings {
                broker_role: false,
                controller_role: false,
                controller_listen: None,
                broker: ClusterConfig::new(BTreeMap::new()),
                controller: ControllerConfig::default(),
                election_timeout_ms: 1_000,
            },
            cluster_id_given: false,
        }
    }

    /// Applies one Kafka broker property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        const I32: i64 = i32::MAX as i64;
        let v = value.trim();
        let b = &mut self.broker;
        let s = &mut self.server;
        let bool_of = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid(key, value, "must be true or false")),
        };
        if let Some((_, topic_key, scale)) = LOG_DEFAULTS.iter().find(|(k, _, _)| *k == key) {
            let topic_value = if *scale > 1 {
                int(key, v, 0, i64::MAX / scale)?
                    .saturating_mul(*scale)
                    .to_string()
            } else {
                v.to_string()
            };
            return b
                .log
                .defaults
                .set(topic_key, &topic_value)
                .map_err(|e| invalid(key, value, e.to_string()));
        }
        match key {
            "listeners" => {
                // One client listener; a `CONTROLLER://` entry is the controller listener.
                for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    match entry.split_once("://") {
                        Some((name, addr)) if name.eq_ignore_ascii_case("CONTROLLER") => {
                            self.cluster.controller_listen = Some(listener(key, addr)?)
                        }
                        _ => self.listen = listener(key, entry)?,
                    }
                }
            }
            "controller.listener.names" => {
                if !v.eq_ignore_ascii_case("CONTROLLER") {
                    return Err(invalid(
                        key,
                        value,
                        "rill's controller listener is CONTROLLER",
                    ));
                }
            }
            "process.roles" => {
                let (mut broker, mut controller) = (false, false);
                for role in v.split(',').map(str::trim) {
                    match role {
                        "broker" => broker = true,
                        "controller" => controller = true,
                        _ => return Err(invalid(key, value, "roles are broker and controller")),
                    }
                }
                self.cluster.broker_role = broker;
                self.cluster.controller_role = controller;
            }
            "controller.quorum.voters" => self.cluster.broker.voters = voters(key, v)?,
            "broker.rack" => self.cluster.broker.rack = Some(v.to_string()),
            "broker.heartbeat.interval.ms" => {
                self.cluster.broker.heartbeat_interval_ms = int(key, v, 10, I32)? as u64
            }
            "broker.session.timeout.ms" => {
                self.cluster.controller.session_timeout_ms = int(key, v, 100, I32)?
            }
            "default.replication.factor" => {
                self.cluster.controller.default_replication_factor = int(key, v, 1, 32767)? as i32
            }
            "replica.lag.time.max.ms" => {
                self.cluster.broker.replica_lag_time_max_ms = int(key, v, 10, I32)?
            }
            "replica.fetch.max.bytes" => {
                self.cluster.broker.replica_fetch_max_bytes = int(key, v, 1024, I32)? as i32
            }
            "replica.fetch.response.max.bytes" => {
                self.cluster.broker.replica_fetch_response_max_bytes =
                    int(key, v, 1024, I32)? as i32
            }
            "replica.fetch.wait.max.ms" => {
                self.cluster.broker.replica_fetch_wait_max_ms = int(key, v, 0, I32)? as i32
            }
            "auto.leader.rebalance.enable" => {
                self.cluster.controller.auto_leader_rebalance = bool_of(v)?
            }
            "leader.imbalance.check.interval.seconds" => {
                self.cluster.controller.leader_imbalance_check_interval_ms =
                    int(key, v, 1, I32)? as u64 * 1_000
            }
            "controlled.shutdown.enable" => self.cluster.broker.controlled_shutdown = bool_of(v)?,
            "follower.replication.throttled.rate" => {
                // Kafka's default, Long.MAX_VALUE, means no throttle.
                let rate = int(key, v, 1, i64::MAX)?;
                self.cluster.broker.follower_throttled_rate =
                    (rate < i64::MAX).then_some(rate as u64);
            }
            "replica.fetch.min.bytes" => {
                self.cluster.broker.replica_fetch_min_bytes = int(key, v, 0, I32)? as i32
            }
            "replica.fetch.backoff.ms" => {
                self.cluster.broker.replica_fetch_backoff_ms = int(key, v, 0, I32)? as u64
            }
            "controller.quorum.election.timeout.ms" => {
                self.cluster.election_timeout_ms = int(key, v, 50, I32)? as u64
            }
            "advertised.listeners" => self.advertised = Some(listener(key, v)?),
            "log.dirs" | "log.dir" => {
                // Kafka allows a comma-separated list; rill uses one directory per broker.
                if v.is_empty() || v.contains(',') {
                    return Err(invalid(key, value, "must be one directory"));
                }
                b.log.data_dir = PathBuf::from(v);
            }
            "node.id" | "broker.id" => b.node_id = int(key, v, 0, I32)? as i32,
            "cluster.id" => {
                if v.is_empty() {
                    return Err(invalid(key, value, "must not be empty"));
                }
                b.cluster_id = v.to_string();
                self.cluster_id_given = true;
            }
            "auto.create.topics.enable" => b.auto_create_topics_enable = bool_of(v)?,
            "num.partitions" => b.num_partitions = int(key, v, 1, I32)? as i32,
            "offsets.topic.num.partitions" => {
                b.offsets_topic_num_partitions = int(key, v, 1, 10_000)? as i32
            }
            "offsets.retention.minutes" => {
                b.offsets_retention_ms = int(key, v, 1, I32)? * 60_000;
            }
            "offsets.retention.check.interval.ms" => {
                b.offsets_retention_check_interval_ms = int(key, v, 1, i64::MAX)? as u64
            }
            "offset.metadata.max.bytes" => {
                // Offset records hold it behind a 16-bit length.
                b.offset_metadata_max_bytes = int(key, v, 0, i64::from(i16::MAX))? as usize
            }
            "group.min.session.timeout.ms" => {
                b.group.min_session_timeout_ms = int(key, v, 1, I32)? as i32
            }
            "group.max.session.timeout.ms" => {
                b.group.max_session_timeout_ms = int(key, v, 1, I32)? as i32
            }
            "group.initial.rebalance.delay.ms" => {
                b.group.initial_rebalance_delay_ms = int(key, v, 0, I32)?
            }
            "group.max.size" => b.group.max_size = int(key, v, 1, I32)? as usize,
            "fetch.max.bytes" => b.fetch_max_bytes = int(key, v, 1024, I32)? as usize,
            "transaction.state.log.num.partitions" => {
                b.transaction_state_num_partitions = int(key, v, 1, 10_000)? as i32
            }
            "offsets.topic.replication.factor" => {
                b.offsets_topic_replication_factor = int(key, v, 1, 32)? as i32
            }
            "transaction.state.log.replication.factor" => {
                b.transaction_state_replication_factor = int(key, v, 1, 32)? as i32
            }
            "transaction.state.log.min.isr" => {
                b.transaction_state_min_isr = int(key, v, 1, 32)? as i32
            }
            "transactional.id.expiration.ms" => {
                b.transactional_id_expiration_ms = int(key, v, 1, i64::MAX)?
            }
            "transaction.max.timeout.ms" => {
                b.transaction_max_timeout_ms = int(key, v, 1, I32)? as i32
            }
            "log.retention.check.interval.ms" => {
                b.log.retention_check_interval_ms = int(key, v, 1, i64::MAX)? as u64
            }
            "log.flush.scheduler.interval.ms" => {
                b.log.flush_check_interval_ms = int(key, v, 1, i64::MAX)? as u64
            }
            "log.flush.offset.checkpoint.interval.ms" => {
                b.log.checkpoint_interval_ms = int(key, v, 1, i64::MAX)? as u64
            }
            "log.cleaner.enable" => b.log.cleaner_enable = bool_of(v)?,
            "log.cleaner.threads" => b.log.cleaner_threads = int(key, v, 1, 64)? as usize,
            "log.cleaner.backoff.ms" => b.log.cleaner_backoff_ms = int(key, v, 1, i64::MAX)? as u64,
            "producer.id.expiration.ms" => {
                b.log.producer_id_expiration_ms = int(key, v, 1, i64::MAX)?
            }
            "log.cleaner.dedupe.buffer.size" => {
                b.log.cleaner.dedupe_buffer_bytes = int(key, v, 1 << 10, i64::MAX)? as usize
            }
            "socket.request.max.bytes" => {
                s.socket_request_max_bytes = int(key, v, 64, I32)? as usize
            }
            "queued.max.request.bytes" => {
                s.queued_max_request_bytes = int(key, v, 1 << 10, u32::MAX as i64)? as usize
            }
            "connections.max.idle.ms" => {
                s.connections_max_idle_ms = int(key, v, 1, i64::MAX)? as u64
            }
            "max.connections" => s.max_connections = int(key, v, 1, I32)? as usize,
            "request.read.timeout.ms" => {
                s.request_read_timeout_ms = int(key, v, 1, i64::MAX)? as u64
            }
            "max.request.elements" => s.max_request_elements = int(key, v, 1, I32)? as usize,
            "shutdown.grace.ms" => s.shutdown_grace_ms = int(key, v, 0, i64::MAX)? as u64,
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Applies every key of a TOML document; nested tables join their keys with dots, so
    /// `[log]` + `retention.ms = 1` and `log.retention.ms = 1` mean the same.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid("config file", "", e.message().to_string()))?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat)?;
        for (k, v) in flat {
            self.set(&k, &v)?;
        }
        Ok(())
    }
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        toml::Value::Float(f) => out.push((prefix.to_string(), f.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        other => {
            return Err(invalid(
                prefix,
                other.type_str(),
                "must be a string, number or boolean",
            ))
        }
    }
    Ok(())
}

/// `host:port`, with an optional `PLAINTEXT://` (or `NAME://`) prefix.
fn listener(key: &str, v: &str) -> Result<String, ConfigError> {
    let addr = v.split_once("://").map_or(v, |(_, a)| a);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, v, "must be host:port"))?;
    port.parse::<u16>()
        .map_err(|_| invalid(key, v, "the port must be a number from 0 to 65535"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_files_use_kafka_names_nested_or_dotted() {
        let mut c = NodeConfig::new("/tmp/x");
        c.apply_toml(
            r#"
listeners = "PLAINTEXT://127.0.0.1:0"
num.partitions = 3
log.retention.hours = 2
log.segment.bytes = 1048576
auto.create.topics.enable = false

[group]
initial.rebalance.delay.ms = 0

[socket.request]
max.bytes = 1000000
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.broker.num_partitions, 3);
        assert!(!c.broker.auto_create_topics_enable);
        assert_eq!(c.broker.log.defaults.retention_ms, 7_200_000);
        assert_eq!(c.broker.log.defaults.segment_bytes, 1_048_576);
        assert_eq!(c.server.socket_request_max_bytes, 1_000_000);
        assert_eq!(c.broker.group.initial_rebalance_delay_ms, 0);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let mut c = NodeConfig::new("/tmp/x");
        let e = c.apply_toml("num.partition = 3").unwrap_err();
        assert_eq!(e.to_string(), "unknown config `num.partition`");
        let e = c.set("num.partitions", "zero").unwrap_err();
        assert!(e.to_string().contains("`num.partitions`"), "{e}");
        let e = c.set("listeners", "127.0.0.1").unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
        c.set("compression.type", "zstd").unwrap();
        c.set("log.roll.jitter.hours", "1").unwrap();
        assert_eq!(
            c.broker.log.defaults.compression_type,
            Some(crate::record::Compression::Zstd)
        );
        assert_eq!(c.broker.log.defaults.segment_jitter_ms, 3_600_000);
        let e = c.set("log.cleanup.policy", "shred").unwrap_err();
        assert!(e.to_string().contains("`log.cleanup.policy`"), "{e}");
        // As Kafka (no validator), 0 is taken: the leader answers once anything is there.
        c.set("replica.fetch.min.bytes", "0").unwrap();
        assert!(c.set("replica.fetch.min.bytes", "-1").is_err());
        c.set("follower.replication.throttled.rate", "1048576")
            .unwrap();
        assert_eq!(c.cluster.broker.follower_throttled_rate, Some(1_048_576));
        c.set("follower.replication.throttled.rate", &i64::MAX.to_string())
            .unwrap();
        assert_eq!(c.cluster.broker.follower_throttled_rate, None);
        assert!(c.set("follower.replication.throttled.rate", "0").is_err());
        c.set("auto.leader.rebalance.enable", "false").unwrap();
        c.set("leader.imbalance.check.interval.seconds", "5")
            .unwrap();
        assert!(!c.cluster.controller.auto_leader_rebalance);
        assert_eq!(
            c.cluster.controller.leader_imbalance_check_interval_ms,
            5_000
        );
        assert!(c
            .set("leader.imbalance.check.interval.seconds", "0")
            .is_err());
        c.set("replica.fetch.min.bytes", "65536").unwrap();
        assert_eq!(c.cluster.broker.replica_fetch_min_bytes, 65_536);
        assert!(c.apply_toml("x = [1, 2]").is_err());
        assert!(c.apply_toml("this is not toml").is_err());
    }
}
