//! DescribeConfigs, IncrementalAlterConfigs and the legacy AlterConfigs, for topic configs
//! (overrides persisted by the log manager) and broker configs (the dynamic ones of
//! [`super::dynamic`], plus a read-only view of the broker's static settings).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::dynamic::{self, DynamicConfigs, DYNAMIC_LOG_CONFIGS};
use super::{Broker, Refusal};
use crate::storage::LogConfig;

/// A config's name, value and source.
type ConfigEntry = (String, String, i8);

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
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
    // A broker synonym has its topic config's type.
    match dynamic::topic_key(key).unwrap_or(key) {
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
        "log.cleaner.threads" | "producer.id.expiration.ms" => TYPE_INT,
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

/// Which broker-level dynamic map an alter of a broker resource targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Resource name "": every broker's default.
    Cluster,
    /// Resource name = this broker's node id.
    Broker,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// One IncrementalAlterConfigs operation: (key, operation, value).
type Op = (String, i8, Option<String>);

/// Applies incremental operations to `map`; `current` gives a key's value in force, which
/// APPEND and SUBTRACT start from when `map` does not hold it.
fn apply_ops(
    map: &mut BTreeMap<String, String>,
    ops: Vec<Op>,
    current: impl Fn(&str) -> String,
) -> Result<(), Refusal> {
    let mut seen = std::collections::HashSet::new();
    for (key, op, value) in ops {
        if !seen.insert(key.clone()) {
            return Err((
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys: {key}"),
            ));
        }
        match (op, value) {
            (OP_SET, Some(v)) => {
                map.insert(key, v);
            }
            (OP_DELETE, _) => {
                map.remove(&key);
            }
            (OP_APPEND | OP_SUBTRACT, Some(v)) if config_type(&key) == TYPE_LIST => {
                let now = map.get(&key).cloned().unwrap_or_else(|| current(&key));
                let mut items = list(&now);
                for item in list(&v) {
                    if op == OP_APPEND {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    } else {
                        items.retain(|x| *x != item);
                    }
                }
                map.insert(key, items.join(","));
            }
            (OP_SET | OP_APPEND | OP_SUBTRACT, None) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Null value not supported for : {key}"),
                ))
            }
            (OP_APPEND | OP_SUBTRACT, _) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("operation {op} is only allowed on list configs, not {key}"),
                ))
            }
            (op, _) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown operations type {op}"),
                ))
            }
        }
    }
    Ok(())
}

/// The whole new set of a resource's configs from a legacy AlterConfigs resource.
fn replacement(
    configs: Vec<(String, Option<String>)>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut map = BTreeMap::new();
    for (key, value) in configs {
        let Some(value) = value else {
            return Err((
                ResponseError::InvalidRequest,
                format!("Null value not supported for : {key}"),
            ));
        };
        if map.insert(key.clone(), value).is_some() {
            return Err((
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys: {key}"),
            ));
        }
    }
    Ok(map)
}

/// Where a broker config's value comes from: set dynamically for this broker or the cluster,
/// else `statically_set` (the config file gave another value than Kafka's default).
fn source_of(dynamic: &DynamicConfigs, broker_key: Option<&str>, statically_set: bool) -> i8 {
    if broker_key.is_some_and(|k| dynamic.broker.contains_key(k)) {
        SOURCE_DYNAMIC_BROKER
    } else if broker_key.is_some_and(|k| dynamic.cluster.contains_key(k)) {
        SOURCE_DYNAMIC_DEFAULT_BROKER
    } else if statically_set {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    }
}

/// A topic's name and its config overrides, to be committed through the controller.
type TopicConfigs = (String, BTreeMap<String, String>);

impl Broker {
    /// Where the value of a topic config's default comes from (the source of a topic config
    /// without an override, and of its broker synonym).
    pub(super) fn default_source(&self, dynamic: &DynamicConfigs, topic_key: &str) -> i8 {
        let statically_set =
            self.config.log.defaults.get(topic_key) != LogConfig::default().get(topic_key);
        source_of(dynamic, dynamic::broker_key(topic_key), statically_set)
    }

    fn topic_entries(&self, name: &str) -> Result<Vec<ConfigEntry>, Refusal> {
        if self.topics_read().get(name).is_none() {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name}"),
            ));
        }
        let dynamic = crate::sync::plain(&self.dynamic);
        let overrides = self.logs.topic_overrides(name);
        Ok(self
            .logs
            .topic_config(name)
            .to_map()
            .into_iter()
            .map(|(k, v)| {
                let source = if overrides.contains_key(&k) {
                    SOURCE_TOPIC
                } else {
                    self.default_source(&dynamic, &k)
                };
                (k, v, source)
            })
            .collect())
    }

    fn broker_entries(&self, name: &str) -> Result<Vec<ConfigEntry>, Refusal> {
        let dynamic = crate::sync::plain(&self.dynamic);
        // As Kafka: the cluster-wide resource lists only what is set cluster-wide.
        if self.broker_scope(name)? == Scope::Cluster {
            return Ok(dynamic
                .cluster
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER))
                .collect());
        }
        let c = &self.config;
        let mut entries: Vec<ConfigEntry> = vec![
            (
                "node.id".into(),
                c.node_id.to_string(),
                SOURCE_STATIC_BROKER,
            ),
            (
                "log.dirs".into(),
                self.logs.data_dir().display().to_string(),
                SOURCE_STATIC_BROKER,
            ),
            (
                "num.partitions".into(),
                c.num_partitions.to_string(),
                SOURCE_STATIC_BROKER,
            ),
            (
                "auto.create.topics.enable".into(),
                c.auto_create_topics_enable.to_string(),
                SOURCE_STATIC_BROKER,
            ),
        ];
        let defaults = self.logs.defaults();
        for (broker_key, topic_key) in DYNAMIC_LOG_CONFIGS {
            entries.push((
                broker_key.to_string(),
                defaults.get(topic_key).unwrap_or_default(),
                self.default_source(&dynamic, topic_key),
            ));
        }
        let tunables = self.logs.tunables();
        let static_tunables = c.log.tunables();
        let kafka_tunables = crate::storage::ManagerConfig::new(self.logs.data_dir()).tunables();
        for key in dynamic::DYNAMIC_MANAGER_CONFIGS {
            let value = |t| dynamic::tunable_value(t, key).unwrap_or_default();
            let statically_set = value(&static_tunables) != value(&kafka_tunables);
            entries.push((
                key.to_string(),
                value(&tunables),
                source_of(&dynamic, Some(key), statically_set),
            ));
        }
        entries.sort();
        Ok(entries)
    }

    /// The dynamic map a broker resource name refers to (Kafka's checks and messages).
    fn broker_scope(&self, name: &str) -> Result<Scope, Refusal> {
        if name.is_empty() {
            return Ok(Scope::Cluster);
        }
        let id: i32 = name.parse().map_err(|_| {
            (
                ResponseError::InvalidRequest,
                format!("Node id must be an integer, but it is: {name}"),
            )
        })?;
        if id != self.config.node_id {
            return Err((
                ResponseError::InvalidRequest,
                format!(
                    "Unexpected broker id, expected {}, but received {name}",
                    self.config.node_id
                ),
            ));
        }
        Ok(Scope::Broker)
    }

    pub(crate) fn describe_configs(&self, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
        let results = req
            .resources
            .into_iter()
            .map(|r| {
                let mut result = DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                let name = r.resource_name.to_string();
                let entries = match r.resource_type {
                    RESOURCE_TOPIC => self.topic_entries(&name),
                    RESOURCE_BROKER => self.broker_entries(&name),
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
                        let broker = r.resource_type == RESOURCE_BROKER;
                        result.configs = entries
                            .into_iter()
                            .filter(|(k, _, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
                            .map(|(k, v, source)| {
                                DescribeConfigsResourceResult::default()
                                    .with_config_type(config_type(&k))
                                    .with_read_only(broker && !dynamic::is_dynamic(&k))
                                    .with_name(text(k))
                                    .with_value(Some(text(v)))
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

    /// Replaces a topic's overrides with what `change` makes of them (checked whole).
    /// Changes a topic's config overrides with `change`, checked against the defaults. Alone
    /// the change is applied here; in a cluster the checked overrides are returned, to be
    /// committed through the controller ([`commit_topic_configs`](Self::commit_topic_configs)).
    fn alter_topic(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>, &LogConfig) -> Result<(), Refusal>,
        validate_only: bool,
    ) -> Result<Option<TopicConfigs>, Refusal> {
        if self.topics_read().get(name).is_none() {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name}"),
            ));
        }
        // Config changes go one at a time (the dynamic configs' lock serves for all), so two
        // alters of one topic cannot both start from the same overrides and lose one's keys.
        let _serial = crate::sync::plain(&self.dynamic);
        let defaults = self.logs.defaults();
        let mut overrides = self.logs.topic_overrides(name);
        change(&mut overrides, &defaults)?;
        LogConfig::from_overrides(&defaults, &overrides)
            .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(None);
        }
        if self.is_clustered() {
            return Ok(Some((name.to_string(), overrides)));
        }
        self.logs
            .set_topic_config(name, overrides)
            .map_err(|e| (super::storage_error_code(&e), e.to_string()))?;
        Ok(None)
    }

    /// Commits what [`alter_topic`](Self::alter_topic) left to the controller, in order;
    /// each answer's error, if any, replaces the resource's.
    async fn commit_topic_configs(
        &self,
        pending: Vec<(usize, String, BTreeMap<String, String>)>,
        mut fail: impl FnMut(usize, Refusal),
    ) {
        for (i, name, configs) in pending {
            if let Err(e) = self.set_topic_configs_clustered(name, configs).await {
                fail(i, e);
            }
        }
    }

    /// Replaces the dynamic configs of a broker resource with what `change` makes of them,
    /// applies the resulting topic defaults to every log and persists them. Kafka's answers:
    /// a key that is not dynamic, or a bad value, is INVALID_REQUEST.
    fn alter_broker(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>, &LogConfig) -> Result<(), Refusal>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        let scope = self.broker_scope(name)?;
        // Held throughout, so two alters cannot interleave their apply and persist.
        let mut dynamic = crate::sync::plain(&self.dynamic);
        let before = self.logs.defaults();
        let mut map = match scope {
            Scope::Cluster => dynamic.cluster.clone(),
            Scope::Broker => dynamic.broker.clone(),
        };
        change(&mut map, &before)?;
        let fixed: Vec<&String> = map.keys().filter(|k| !dynamic::is_dynamic(k)).collect();
        if !fixed.is_empty() {
            return Err((
                ResponseError::InvalidRequest,
                format!("Cannot update these configs dynamically: {fixed:?}"),
            ));
        }
        let old = match scope {
            Scope::Cluster => std::mem::replace(&mut dynamic.cluster, map),
            Scope::Broker => std::mem::replace(&mut dynamic.broker, map),
        };
        let restore = |dynamic: &mut DynamicConfigs, old| match scope {
            Scope::Cluster => dynamic.cluster = old,
            Scope::Broker => dynamic.broker = old,
        };
        let tunables_before = self.logs.tunables();
        let outcome = (|| {
            let refuse =
                |e: crate::storage::ConfigError| (ResponseError::InvalidRequest, e.to_string());
            let defaults = dynamic
                .effective(&self.config.log.defaults)
                .map_err(refuse)?;
            let tunables = dynamic
                .effective_tunables(self.config.log.tunables())
                .map_err(refuse)?;
            dynamic::check_cleaner_threads(
                tunables_before.cleaner_threads,
                tunables.cleaner_threads,
            )
            .map_err(refuse)?;
            if validate_only {
                return Ok(());
            }
            self.logs
                .set_defaults(defaults)
                .map_err(|e| (ResponseError::InvalidRequest, e.to_string()))?;
            self.logs.set_tunables(tunables);
            dynamic.persist().map_err(|e| {
                // Not on disk: not in force either.
                if let Err(undo) = self.logs.set_defaults(before.clone()) {
                    tracing::error!(error = %undo, "restoring the topic defaults failed");
                }
                self.logs.set_tunables(tunables_before);
                (ResponseError::KafkaStorageError, e.to_string())
            })
        })();
        if validate_only || outcome.is_err() {
            restore(&mut dynamic, old);
        }
        outcome
    }

    pub(crate) async fn incremental_alter_configs(
        &self,
        req: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let validate_only = req.validate_only;
        let mut pending = Vec::new();
        let mut responses: Vec<_> = req
            .resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let name = r.resource_name.to_string();
                let ops: Vec<Op> = r
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            c.config_operation,
                            c.value.as_ref().map(|v| v.to_string()),
                        )
                    })
                    .collect();
                let outcome = match r.resource_type {
                    RESOURCE_TOPIC => self.alter_topic(
                        &name,
                        |overrides, defaults| {
                            apply_ops(overrides, ops, |k| defaults.get(k).unwrap_or_default())
                        },
                        validate_only,
                    ),
                    RESOURCE_BROKER => self
                        .alter_broker(
                            &name,
                            |map, defaults| {
                                apply_ops(map, ops, |k| {
                                    dynamic::topic_key(k)
                                        .and_then(|t| defaults.get(t))
                                        .unwrap_or_default()
                                })
                            },
                            validate_only,
                        )
                        .map(|()| None),
                    other => Err((
                        ResponseError::InvalidRequest,
                        format!("Unknown resource type {other}"),
                    )),
                };
                let mut resp =
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name);
                match outcome {
                    Err((code, message)) => {
                        resp.error_code = code.code();
                        resp.error_message = Some(text(message));
                    }
                    Ok(Some((name, configs))) => pending.push((i, name, configs)),
                    Ok(None) => {}
                }
                resp
            })
            .collect();
        self.commit_topic_configs(pending, |i, (code, message)| {
            responses[i].error_code = code.code();
            responses[i].error_message = Some(text(message));
        })
        .await;
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }

    /// The legacy AlterConfigs: each resource's dynamic configs become exactly the ones sent
    /// (a key left out returns to its default).
    pub(crate) async fn alter_configs(&self, req: AlterConfigsRequest) -> AlterConfigsResponse {
        let validate_only = req.validate_only;
        let mut pending = Vec::new();
        let mut responses: Vec<_> = req
            .resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let name = r.resource_name.to_string();
                let configs: Vec<(String, Option<String>)> = r
                    .configs
                    .iter()
                    .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect();
                let outcome = replacement(configs).and_then(|new| {
                    let replace = |map: &mut BTreeMap<String, String>, _: &LogConfig| {
                        *map = new;
                        Ok(())
                    };
                    match r.resource_type {
                        RESOURCE_TOPIC => self.alter_topic(&name, replace, validate_only),
                        RESOURCE_BROKER => self
                            .alter_broker(&name, replace, validate_only)
                            .map(|()| None),
                        other => Err((
                            ResponseError::InvalidRequest,
                            format!("Unknown resource type {other}"),
                        )),
                    }
                });
                let mut resp = alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name);
                match outcome {
                    Err((code, message)) => {
                        resp.error_code = code.code();
                        resp.error_message = Some(text(message));
                    }
                    Ok(Some((name, configs))) => pending.push((i, name, configs)),
                    Ok(None) => {}
                }
                resp
            })
            .collect();
        self.commit_topic_configs(pending, |i, (code, message)| {
            responses[i].error_code = code.code();
            responses[i].error_message = Some(text(message));
        })
        .await;
        AlterConfigsResponse::default().with_responses(responses)
    }
}
