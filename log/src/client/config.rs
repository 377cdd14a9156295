//! Client configuration from Kafka's property names (`linger.ms`, `group.id`, ...): the
//! typed [`ProducerConfig`] and [`ConsumerConfig`] built from a string map, refusing unknown
//! keys and bad values with the key in the message.

use std::sync::Arc;

use super::assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor};
use super::consumer::{ConsumerConfig, IsolationLevel, OffsetReset};
use super::producer::ProducerConfig;
use crate::record::Compression;
use crate::storage::config::{int, invalid};
use crate::storage::ConfigError;

const I32: i64 = i32::MAX as i64;

fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "must be true or false")),
    }
}

/// Applies every `(key, value)` to `config` through `set`, then checks the combination.
fn build<C>(
    mut config: C,
    props: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    set: impl Fn(&mut C, &str, &str) -> Result<(), ConfigError>,
    check: impl Fn(&C) -> Result<(), ConfigError>,
) -> Result<C, ConfigError> {
    for (k, v) in props {
        set(&mut config, k.as_ref(), v.as_ref())?;
    }
    check(&config)?;
    Ok(config)
}

impl ProducerConfig {
    /// Applies `key = value` (a Kafka producer property); unchanged on error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let ms = |min| int(key, value, min, I32).map(|v| v as u64);
        match key {
            "acks" => {
                self.acks = match value.trim() {
                    "all" | "-1" => -1,
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(invalid(key, value, "must be all, -1, 0 or 1")),
                }
            }
            "linger.ms" => self.linger_ms = ms(0)?,
            "batch.size" => self.batch_size = int(key, value, 0, I32)? as usize,
            "buffer.memory" => self.buffer_memory = int(key, value, 1, u32::MAX as i64)? as usize,
            "max.block.ms" => self.max_block_ms = ms(0)?,
            "compression.type" => {
                self.compression = match value.trim() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "snappy" => Compression::Snappy,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    _ => {
                        return Err(invalid(
                            key,
                            value,
                            "must be none, gzip, snappy, lz4 or zstd",
                        ))
                    }
                }
            }
            "retries" => self.retries = int(key, value, 0, I32)? as u32,
            "retry.backoff.ms" => self.retry_backoff_ms = ms(0)?,
            "request.timeout.ms" => self.request_timeout_ms = ms(1)?,
            "delivery.timeout.ms" => self.delivery_timeout_ms = ms(1)?,
            "enable.idempotence" => self.enable_idempotence = boolean(key, value)?,
            "max.in.flight.requests.per.connection" => {
                self.max_in_flight_requests_per_connection = int(key, value, 1, I32)? as usize
            }
            "transactional.id" => {
                let v = value.trim();
                if v.is_empty() {
                    return Err(invalid(key, value, "must not be empty"));
                }
                self.transactional_id = Some(v.to_string());
            }
            "transaction.timeout.ms" => {
                self.transaction_timeout_ms = int(key, value, 1, I32)? as i32
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// The defaults with these Kafka producer properties applied. As in Kafka, idempotence
    /// (on by default) turns itself off when `acks` is not `all` and it was not asked for;
    /// asked for with `acks` 0 or 1, it is an error.
    pub fn from_props(
        props: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    ) -> Result<Self, ConfigError> {
        let props: Vec<(String, String)> = props
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let explicit = props.iter().any(|(k, _)| k == "enable.idempotence");
        let mut config = build(Self::default(), props, Self::set, |_| Ok(()))?;
        if config.enable_idempotence && config.acks != -1 {
            if explicit {
                return Err(invalid("enable.idempotence", "true", "needs acks=all"));
            }
            config.enable_idempotence = false;
        }
        // The broker remembers a producer's last 5 batches per partition to spot retried
        // duplicates, so more in flight cannot be deduplicated (Kafka's rule and message).
        if config.enable_idempotence && config.max_in_flight_requests_per_connection > 5 {
            if explicit {
                return Err(invalid(
                    "max.in.flight.requests.per.connection",
                    &config.max_in_flight_requests_per_connection.to_string(),
                    "must be at most 5 to use the idempotent producer",
                ));
            }
            config.enable_idempotence = false;
        }
        build(config, Vec::<(String, String)>::new(), Self::set, |c| {
            // Kafka's own rule: a record must be able to wait out linger and one request.
            if c.delivery_timeout_ms < c.linger_ms + c.request_timeout_ms {
                return Err(invalid(
                    "delivery.timeout.ms",
                    &c.delivery_timeout_ms.to_string(),
                    "must be at least linger.ms + request.timeout.ms",
                ));
            }
            Ok(())
        })
    }
}

/// An assignor by its protocol name or the class name Kafka's Java client uses.
fn assignor(key: &str, name: &str) -> Result<Arc<dyn Assignor>, ConfigError> {
    let short = name.trim().rsplit('.').next().unwrap_or_default();
    Ok(match short {
        "range" | "RangeAssignor" => Arc::new(RangeAssignor),
        "roundrobin" | "RoundRobinAssignor" => Arc::new(RoundRobinAssignor),
        "cooperative-sticky" | "CooperativeStickyAssignor" => Arc::new(CooperativeStickyAssignor),
        _ => {
            return Err(invalid(
                key,
                name,
                "known assignors: range, roundrobin, cooperative-sticky",
            ))
        }
    })
}

impl ConsumerConfig {
    /// Applies `key = value` (a Kafka consumer property); unchanged on error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let non_empty = || {
            let v = value.trim();
            if v.is_empty() {
                Err(invalid(key, value, "must not be empty"))
            } else {
                Ok(v.to_string())
            }
        };
        match key {
            "group.id" => self.group_id = Some(non_empty()?),
            "group.instance.id" => self.group_instance_id = Some(non_empty()?),
            "auto.offset.reset" => {
                self.auto_offset_reset = match value.trim() {
                    "earliest" => OffsetReset::Earliest,
                    "latest" => OffsetReset::Latest,
                    "none" => OffsetReset::None,
                    _ => return Err(invalid(key, value, "must be earliest, latest or none")),
                }
            }
            "fetch.min.bytes" => self.fetch_min_bytes = int(key, value, 0, I32)? as i32,
            "fetch.max.wait.ms" => self.fetch_max_wait_ms = int(key, value, 0, I32)? as i32,
            "fetch.max.bytes" => self.fetch_max_bytes = int(key, value, 0, I32)? as i32,
            "max.partition.fetch.bytes" => {
                self.max_partition_fetch_bytes = int(key, value, 0, I32)? as i32
            }
            "max.poll.records" => self.max_poll_records = int(key, value, 1, I32)? as usize,
            "session.timeout.ms" => self.session_timeout_ms = int(key, value, 1, I32)? as i32,
            "heartbeat.interval.ms" => self.heartbeat_interval_ms = int(key, value, 1, I32)? as u64,
            "max.poll.interval.ms" => self.max_poll_interval_ms = int(key, value, 1, I32)? as i32,
            "enable.auto.commit" => self.enable_auto_commit = boolean(key, value)?,
            "isolation.level" => {
                self.isolation_level = match value.trim() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => {
                        return Err(invalid(
                            key,
                            value,
                            "must be read_uncommitted or read_committed",
                        ))
                    }
                }
            }
            "auto.commit.interval.ms" => {
                self.auto_commit_interval_ms = int(key, value, 0, I32)? as u64
            }
            "partition.assignment.strategy" => {
                let list = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|name| assignor(key, name))
                    .collect::<Result<Vec<_>, _>>()?;
                if list.is_empty() {
                    return Err(invalid(key, value, "must name at least one assignor"));
                }
                self.assignors = list;
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// The defaults with these Kafka consumer properties applied.
    pub fn from_props(
        props: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    ) -> Result<Self, ConfigError> {
        build(Self::default(), props, Self::set, |c| {
            if c.heartbeat_interval_ms >= c.session_timeout_ms as u64 {
                return Err(invalid(
                    "heartbeat.interval.ms",
                    &c.heartbeat_interval_ms.to_string(),
                    "must be lower than session.timeout.ms",
                ));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_property_names_build_typed_configs() {
        let p = ProducerConfig::from_props([
            ("acks", "all"),
            ("linger.ms", "20"),
            ("compression.type", "zstd"),
            ("batch.size", "65536"),
        ])
        .unwrap();
        assert_eq!(
            (p.acks, p.linger_ms, p.compression, p.batch_size),
            (-1, 20, Compression::Zstd, 65536)
        );
        assert!(p.enable_idempotence, "on by default");
        // acks=1 quietly turns idempotence off unless it was asked for.
        assert!(
            !ProducerConfig::from_props([("acks", "1")])
                .unwrap()
                .enable_idempotence
        );
        // So do more than 5 requests in flight (Kafka's ProducerConfig rule).
        let p =
            ProducerConfig::from_props([("max.in.flight.requests.per.connection", "6")]).unwrap();
        assert_eq!(
            (
                p.max_in_flight_requests_per_connection,
                p.enable_idempotence
            ),
            (6, false)
        );
        let e = ProducerConfig::from_props([
            ("max.in.flight.requests.per.connection", "6"),
            ("enable.idempotence", "true"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("at most 5"), "{e}");
        assert!(
            ProducerConfig::from_props([("max.in.flight.requests.per.connection", "0")]).is_err()
        );
        let e = ProducerConfig::from_props([("acks", "1"), ("enable.idempotence", "true")])
            .unwrap_err();
        assert!(e.to_string().contains("needs acks=all"), "{e}");
        let c = ConsumerConfig::from_props([
            ("group.id", "g"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            (
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.RoundRobinAssignor, cooperative-sticky",
            ),
        ])
        .unwrap();
        assert_eq!(c.group_id.as_deref(), Some("g"));
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        assert!(!c.enable_auto_commit);
        let names: Vec<&str> = c.assignors.iter().map(|a| a.name()).collect();
        assert_eq!(names, vec!["roundrobin", "cooperative-sticky"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = ProducerConfig::from_props([("linger.msec", "5")]).unwrap_err();
        assert_eq!(e.to_string(), "unknown config `linger.msec`");
        let e = ProducerConfig::from_props([("acks", "2")]).unwrap_err();
        assert!(e.to_string().contains("`acks`"), "{e}");
        let e = ProducerConfig::from_props([("delivery.timeout.ms", "10")]).unwrap_err();
        assert!(
            e.to_string().contains("linger.ms + request.timeout.ms"),
            "{e}"
        );
        let e = ConsumerConfig::from_props([("max.poll.records", "0")]).unwrap_err();
        assert!(e.to_string().contains("between 1 and"), "{e}");
        let e =
            ConsumerConfig::from_props([("partition.assignment.strategy", "sticky")]).unwrap_err();
        assert!(e.to_string().contains("known assignors"), "{e}");
        let e = ConsumerConfig::from_props([
            ("session.timeout.ms", "1000"),
            ("heartbeat.interval.ms", "1000"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("session.timeout.ms"), "{e}");
        let e = ConsumerConfig::from_props([("group.id", " ")]).unwrap_err();
        assert!(e.to_string().contains("must not be empty"), "{e}");
    }
}
