//! DescribeConfigs and IncrementalAlterConfigs for topic configs (and a read-only view of the
//! broker's own settings).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Broker, Refusal};

/// A config's name, value and source.
type ConfigEntry = (String, String, i8);
use crate::storage::LogConfig;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's config types (DescribeConfigs v3+).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;
const TYPE_BOOLEAN: i8 = 1;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy"
        | "leader.replication.throttled.replicas"
        | "follower.replication.throttled.replicas" => TYPE_LIST,
        "message.timestamp.type" | "compression.type" | "message.format.version" => TYPE_STRING,
        "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
        "index.interval.bytes"
        | "max.message.bytes"
        | "segment.bytes"
        | "segment.index.bytes"
        | "min.insync.replicas"
        | "compression.gzip.level"
        | "compression.lz4.level"
        | "compression.zstd.level"
        | "num.partitions"
        | "node.id" => TYPE_INT,
        "auto.create.topics.enable"
        | "preallocate"
        | "unclean.leader.election.enable"
        | "message.downconversion.enable"
        | "remote.storage.enable"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable" => TYPE_BOOLEAN,
        "log.dirs" => TYPE_STRING,
        _ => TYPE_LONG,
    }
}

impl Broker {
    pub(crate) fn describe_configs(&self, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
        let results = req
            .resources
            .into_iter()
            .map(|r| {
                let mut result = DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                let name = r.resource_name.to_string();
                let entries: Result<Vec<ConfigEntry>, Refusal> = match r.resource_type {
                    RESOURCE_TOPIC => {
                        let exists = self.topics_read().get(&name).is_some();
                        if exists {
                            let overrides = self.logs.topic_overrides(&name);
                            Ok(self
                                .logs
                                .topic_config(&name)
                                .to_map()
                                .into_iter()
                                .map(|(k, v)| {
                                    let source = if overrides.contains_key(&k) {
                                        SOURCE_TOPIC
                                    } else {
                                        SOURCE_DEFAULT
                                    };
                                    (k, v, source)
                                })
                                .collect())
                        } else {
                            Err((
                                ResponseError::UnknownTopicOrPartition,
                                format!("no topic {name}"),
                            ))
                        }
                    }
                    RESOURCE_BROKER
                        if name.is_empty() || name == self.config.node_id.to_string() =>
                    {
                        Ok(vec![
                            (
                                "node.id".into(),
                                self.config.node_id.to_string(),
                                SOURCE_STATIC_BROKER,
                            ),
                            (
                                "log.dirs".into(),
                                self.logs.data_dir().display().to_string(),
                                SOURCE_STATIC_BROKER,
                            ),
                            (
                                "num.partitions".into(),
                                self.config.num_partitions.to_string(),
                                SOURCE_STATIC_BROKER,
                            ),
                            (
                                "auto.create.topics.enable".into(),
                                self.config.auto_create_topics_enable.to_string(),
                                SOURCE_STATIC_BROKER,
                            ),
                        ])
                    }
                    RESOURCE_BROKER => Err((
                        ResponseError::InvalidRequest,
                        format!("this is broker {}", self.config.node_id),
                    )),
                    other => Err((
                        ResponseError::InvalidRequest,
                        format!("config resource type {other} is not supported"),
                    )),
                };
                match entries {
                    Ok(entries) => {
                        // As Kafka's ConfigHelper: null or an empty list both mean every key.
                        let wanted = r
                            .configuration_keys
                            .filter(|ks| !ks.is_empty())
                            .map(|ks| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                        result.configs = entries
                            .into_iter()
                            .filter(|(k, _, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
                            .map(|(k, v, source)| {
                                DescribeConfigsResourceResult::default()
                                    .with_config_type(config_type(&k))
                                    .with_name(text(k))
                                    .with_value(Some(text(v)))
                                    .with_read_only(source == SOURCE_STATIC_BROKER)
                                    .with_config_source(source)
                            })
                            .collect();
                    }
                    Err((code, message)) => {
                        result.error_code = code.code();
                        result.error_message = Some(text(message));
                    }
                }
                result
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    pub(crate) fn incremental_alter_configs(
        &self,
        req: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let responses = req
            .resources
            .into_iter()
            .map(|r| {
                let name = r.resource_name.to_string();
                let outcome = (|| -> Result<(), Refusal> {
                    if r.resource_type != RESOURCE_TOPIC {
                        return Err((
                            ResponseError::InvalidRequest,
                            "only topic configs can be altered".into(),
                        ));
                    }
                    if self.topics_read().get(&name).is_none() {
                        return Err((
                            ResponseError::UnknownTopicOrPartition,
                            format!("no topic {name}"),
                        ));
                    }
                    let defaults = LogConfig::default();
                    let mut overrides: BTreeMap<String, String> = self.logs.topic_overrides(&name);
                    for c in &r.configs {
                        let key = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string());
                        let current = || {
                            overrides
                                .get(&key)
                                .cloned()
                                .or_else(|| defaults.get(&key))
                                .unwrap_or_default()
                        };
                        let list = |s: &str| {
                            s.split(',')
                                .map(str::trim)
                                .filter(|x| !x.is_empty())
                                .map(String::from)
                                .collect::<Vec<_>>()
                        };
                        match (c.config_operation, value) {
                            (OP_SET, Some(v)) => {
                                overrides.insert(key, v);
                            }
                            (OP_DELETE, _) => {
                                overrides.remove(&key);
                            }
                            (OP_APPEND | OP_SUBTRACT, Some(v))
                                if config_type(&key) == TYPE_LIST =>
                            {
                                let mut items = list(&current());
                                for item in list(&v) {
                                    if c.config_operation == OP_APPEND {
                                        if !items.contains(&item) {
                                            items.push(item);
                                        }
                                    } else {
                                        items.retain(|x| *x != item);
                                    }
                                }
                                overrides.insert(key, items.join(","));
                            }
                            (op, _) => {
                                return Err((
                                    ResponseError::InvalidConfig,
                                    format!("operation {op} on {key} is not valid"),
                                ))
                            }
                        }
                    }
                    LogConfig::from_overrides(&self.config.log.defaults, &overrides)
                        .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                    if !req.validate_only {
                        self.logs
                            .set_topic_config(&name, overrides)
                            .map_err(|e| (super::storage_error_code(&e), e.to_string()))?;
                    }
                    Ok(())
                })();
                let mut resp = AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name);
                if let Err((code, message)) = outcome {
                    resp.error_code = code.code();
                    resp.error_message = Some(text(message));
                }
                resp
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}
