//! Topic administration and cluster metadata: CreateTopics, DeleteTopics, Metadata.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{Broker, BrokerError, Refusal, TopicMeta};
use crate::controller::decisions::refusals;
use crate::controller::ElectionType;
use crate::storage::LogConfig;
use crate::types::{validate_topic_name, TopicPartition};

/// Kafka's DescribeConfigs source of a topic override (others: where the default comes from).
const SOURCE_TOPIC: i8 = 1;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

impl Broker {
    /// Creates a topic with `partitions` partitions and config `overrides` (checked first).
    pub(crate) fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicMeta, Refusal> {
        validate_topic_name(name)
            .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
        if partitions < 1 || partitions > self.config.max_partitions_per_topic {
            return Err((
                ResponseError::InvalidPartitions,
                format!(
                    "{partitions} partitions (1 to {} allowed)",
                    self.config.max_partitions_per_topic
                ),
            ));
        }
        LogConfig::from_overrides(&self.logs.defaults(), &overrides)
            .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
        let mut topics = self.topics_write();
        if topics.get(name).is_some() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {name} exists"),
            ));
        }
        let storage =
            |e: crate::storage::StorageError| (super::storage_error_code(&e), e.to_string());
        if !overrides.is_empty() {
            self.logs
                .set_topic_config(name, overrides)
                .map_err(storage)?;
        }
        for p in 0..partitions {
            self.logs
                .get_or_create(&TopicPartition::new(name, p))
                .map_err(storage)?;
        }
        let meta = TopicMeta {
            name: name.to_string(),
            id: uuid::Builder::from_random_bytes(self.random_bytes()).into_uuid(),
            partitions,
            leader_epoch: 0,
        };
        topics
            .put(meta.clone())
            .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(meta)
    }

    /// A manual replica assignment, checked as Kafka's controller checks it
    /// (`ReplicationControlManager.createTopic`): `Some(partitions)` when the request has one,
    /// and on one broker every replica list must be this broker alone.
    fn manual_assignment(
        &self,
        t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    ) -> Result<Option<i32>, Refusal> {
        if t.assignments.is_empty() {
            return Ok(None);
        }
        let invalid = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
        if t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "A manual partition assignment was specified, but replication factor was not \
                 set to -1."
                    .into(),
            ));
        }
        if t.num_partitions != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "A manual partition assignment was specified, but numPartitions was not set \
                 to -1."
                    .into(),
            ));
        }
        let node = self.config.node_id;
        let mut seen = std::collections::BTreeSet::new();
        let mut replicas: Option<usize> = None;
        for a in &t.assignments {
            if !seen.insert(a.partition_index) {
                return invalid(format!(
                    "Found multiple manual partition assignments for partition {}",
                    a.partition_index
                ));
            }
            let mut ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            if ids.is_empty() {
                return invalid(
                    "The manual partition assignment includes an empty replica list.".into(),
                );
            }
            ids.sort_unstable();
            if let Some(unknown) = ids.iter().find(|id| **id != node) {
                return invalid(format!(
                    "The manual partition assignment includes broker {unknown}, but no such \
                     broker is registered."
                ));
            }
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return invalid(format!(
                    "The manual partition assignment includes the broker {node} more than once."
                ));
            }
            if replicas.is_some_and(|r| r != ids.len()) {
                return invalid(format!(
                    "The manual partition assignment includes a partition with {} replica(s), \
                     but this is not consistent with previous partitions, which have {} \
                     replica(s).",
                    ids.len(),
                    replicas.unwrap_or_default()
                ));
            }
            replicas = Some(ids.len());
        }
        let n = seen.len() as i32;
        if !(0..n).all(|i| seen.contains(&i)) {
            return invalid("partitions should be a consecutive 0-based integer sequence".into());
        }
        Ok(Some(n))
    }

    pub(crate) fn create_topics(
        &self,
        req: CreateTopicsRequest,
    ) -> Result<CreateTopicsResponse, BrokerError> {
        let mut results = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut result = CreatableTopicResult::default().with_name(t.name.clone());
            let assigned = self.manual_assignment(&t);
            let partitions = match &assigned {
                Ok(Some(n)) => *n,
                _ if t.num_partitions == -1 => self.config.num_partitions,
                _ => t.num_partitions,
            };
            let overrides: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let checked = if t.replication_factor != -1 && t.replication_factor != 1 {
                Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {} exceeds the 1 available broker",
                        t.replication_factor
                    ),
                ))
            } else if let Err(refused) = assigned {
                Err(refused)
            } else if req.validate_only {
                // Everything create_topic checks, without creating.
                validate_topic_name(&name)
                    .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))
                    .and_then(|_| {
                        if partitions < 1 || partitions > self.config.max_partitions_per_topic {
                            Err((
                                ResponseError::InvalidPartitions,
                                format!("{partitions} partitions"),
                            ))
                        } else if self.topics_read().get(&name).is_some() {
                            Err((
                                ResponseError::TopicAlreadyExists,
                                format!("topic {name} exists"),
                            ))
                        } else {
                            LogConfig::from_overrides(&self.logs.defaults(), &overrides)
                                .map(|_| None)
                                .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))
                        }
                    })
            } else {
                self.create_topic(&name, partitions, overrides.clone())
                    .map(Some)
            };
            match checked {
                Ok(meta) => {
                    let effective = LogConfig::from_overrides(&self.logs.defaults(), &overrides)
                        .unwrap_or_else(|_| self.logs.defaults());
                    result.topic_id = meta.map_or(Uuid::nil(), |m| m.id);
                    result.num_partitions = partitions;
                    result.replication_factor = 1;
                    let dynamic = crate::sync::plain(&self.dynamic);
                    result.configs = Some(
                        effective
                            .to_map()
                            .into_iter()
                            .map(|(k, v)| {
                                let source = if overrides.contains_key(&k) {
                                    SOURCE_TOPIC
                                } else {
                                    self.default_source(&dynamic, &k)
                                };
                                CreatableTopicConfigs::default()
                                    .with_name(text(k))
                                    .with_value(Some(text(v)))
                                    .with_config_source(source)
                            })
                            .collect(),
                    );
                }
                Err((code, message)) => {
                    result.error_code = code.code();
                    result.error_message = Some(text(message));
                    result.num_partitions = -1;
                    result.replication_factor = -1;
                }
            }
            results.push(result);
        }
        Ok(CreateTopicsResponse::default().with_topics(results))
    }

    pub(crate) fn delete_topics(
        &self,
        req: DeleteTopicsRequest,
    ) -> Result<DeleteTopicsResponse, BrokerError> {
        let wanted = deletion_targets(&req);
        let mut responses = Vec::with_capacity(wanted.len());
        for (name, id) in wanted {
            // The topic lock is not held while partitions are deleted (which may wait for a
            // cleaning pass): produce and fetch to other topics go on meanwhile.
            let found = {
                let topics = self.topics_read();
                match &name {
                    Some(n) => topics.get(n).cloned(),
                    None => topics.by_id(id).cloned(),
                }
            };
            let mut result = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(text(n))))
                .with_topic_id(id);
            match found {
                None => {
                    result.error_code = if name.is_some() {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        ResponseError::UnknownTopicId.code()
                    };
                }
                Some(meta) if super::is_internal(&meta.name) => {
                    result.name = Some(TopicName(text(meta.name.clone())));
                    result.topic_id = meta.id;
                    result.error_code = ResponseError::InvalidTopicException.code();
                    result.error_message =
                        Some(text(format!("{} is an internal topic", meta.name)));
                }
                Some(meta) => {
                    result.name = Some(TopicName(text(meta.name.clone())));
                    result.topic_id = meta.id;
                    let deleted = (0..meta.partitions).try_for_each(|p| {
                        match self.logs.delete(&TopicPartition::new(meta.name.clone(), p)) {
                            Err(crate::storage::StorageError::UnknownPartition(_)) => Ok(()),
                            other => other,
                        }
                    });
                    match deleted
                        .map_err(BrokerError::from)
                        .and_then(|()| self.topics_write().remove(&meta.name))
                    {
                        Ok(_) => tracing::info!(topic = %meta.name, "deleted topic"),
                        Err(e) => {
                            result.error_code = ResponseError::KafkaStorageError.code();
                            result.error_message = Some(text(e.to_string()));
                        }
                    }
                }
            }
            responses.push(result);
        }
        Ok(DeleteTopicsResponse::default().with_responses(responses))
    }

    pub(crate) fn metadata(&self, req: MetadataRequest) -> Result<MetadataResponse, BrokerError> {
        let wanted: Option<Vec<(Option<String>, Uuid)>> = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect()
        });
        let mut out = Vec::new();
        match wanted {
            None => {
                let topics = self.topics_read();
                out.extend(topics.all().map(|m| self.topic_metadata(m)));
            }
            Some(list) => {
                for (name, id) in list {
                    let known = {
                        let topics = self.topics_read();
                        match &name {
                            Some(n) => topics.get(n).cloned(),
                            None => topics.by_id(id).cloned(),
                        }
                    };
                    let topic = match (known, name) {
                        (Some(m), _) => self.topic_metadata(&m),
                        (None, Some(n))
                            if req.allow_auto_topic_creation
                                && self.config.auto_create_topics_enable =>
                        {
                            match self.create_topic(&n, self.config.num_partitions, BTreeMap::new())
                            {
                                Ok(m) => self.topic_metadata(&m),
                                // Another request created it meanwhile.
                                Err((ResponseError::TopicAlreadyExists, _)) => {
                                    let topics = self.topics_read();
                                    match topics.get(&n) {
                                        Some(m) => self.topic_metadata(m),
                                        None => error_topic(
                                            Some(n),
                                            id,
                                            ResponseError::UnknownTopicOrPartition,
                                        ),
                                    }
                                }
                                Err((code, _)) => error_topic(Some(n), id, code),
                            }
                        }
                        (None, Some(n)) => {
                            let code = if validate_topic_name(&n).is_err() {
                                ResponseError::InvalidTopicException
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            };
                            error_topic(Some(n), id, code)
                        }
                        (None, None) => error_topic(None, id, ResponseError::UnknownTopicId),
                    };
                    out.push(topic);
                }
            }
        }
        if req.include_topic_authorized_operations {
            for t in &mut out {
                t.topic_authorized_operations = super::authorized::TOPIC;
            }
        }
        let cluster_ops = if req.include_cluster_authorized_operations {
            super::authorized::CLUSTER
        } else {
            i32::MIN
        };
        let node = BrokerId(self.config.node_id);
        Ok(MetadataResponse::default()
            .with_cluster_authorized_operations(cluster_ops)
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(node)
                .with_host(text(self.config.advertised_host.clone()))
                .with_port(self.config.advertised_port)])
            .with_cluster_id(Some(text(self.config.cluster_id.clone())))
            .with_controller_id(node)
            .with_topics(out))
    }

    /// DescribeCluster: this broker, which is also the controller. Only broker endpoints
    /// (type 1) are described; asking for controllers (type 2) is refused as Kafka's brokers do.
    pub(crate) fn describe_cluster(&self, req: DescribeClusterRequest) -> DescribeClusterResponse {
        let resp = DescribeClusterResponse::default()
            .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
                super::authorized::CLUSTER
            } else {
                i32::MIN
            })
            .with_endpoint_type(req.endpoint_type)
            .with_cluster_id(text(self.config.cluster_id.clone()))
            .with_controller_id(BrokerId(self.config.node_id));
        if req.endpoint_type != 1 {
            return resp
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_error_message(Some(text("rill describes broker endpoints only")))
                .with_controller_id(BrokerId(-1));
        }
        resp.with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(self.config.node_id))
            .with_host(text(self.config.advertised_host.clone()))
            .with_port(self.config.advertised_port)])
    }

    /// ElectLeaders on a single broker: every partition has one replica, which leads, so no
    /// election is ever needed (the answer a cluster gives for balanced partitions).
    pub(crate) fn elect_leaders(&self, req: ElectLeadersRequest) -> ElectLeadersResponse {
        // Either kind finds a leader in place.
        if let Err(refused) = election_type(&req) {
            return refused;
        }
        let topics = self.topics_read();
        let results = match requested_elections(&req) {
            // Every partition: those not needing an election are left out, so all are.
            None => topics.all().map(|t| (t.name.clone(), Vec::new())).collect(),
            Some(wanted) => wanted
                .into_iter()
                .map(|(topic, ps)| {
                    let meta = topics.get(&topic);
                    let ps = ps
                        .into_iter()
                        .map(|p| {
                            let refused = match meta {
                                None => refusals::no_topic_to_elect(&topic),
                                Some(m) if p < 0 || p >= m.partitions => {
                                    refusals::no_partition_to_elect(&topic, p)
                                }
                                Some(_) => refusals::election_not_needed(),
                            };
                            (p, Some((refused.code, refused.message)))
                        })
                        .collect();
                    (topic, ps)
                })
                .collect(),
        };
        elect_leaders_response(results)
    }

    /// DescribeLogDirs: this broker's one log directory (`log.dirs`), the size of each
    /// partition's log in it (every partition, or those asked for that are here) and the
    /// volume's total and usable bytes. Offset lag is Kafka's for a current (not future)
    /// log: how far the log end is behind the high watermark (0 but while a follower
    /// catches up after a truncation).
    pub(crate) fn describe_log_dirs(&self, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.topic.0.to_string(), t.partitions))
                .collect()
        });
        let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
        for tp in self.logs.partitions() {
            let asked = wanted.as_ref().is_none_or(|w| {
                w.get(&tp.topic)
                    .is_some_and(|ps| ps.contains(&tp.partition.0))
            });
            let Some(log) = asked.then(|| self.logs.get(&tp)).flatten() else {
                continue;
            };
            let lag = (log.high_watermark().0 - log.log_end_offset().0).max(0);
            by_topic.entry(tp.topic.clone()).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_partition_size(log.size_bytes() as i64)
                    .with_offset_lag(lag)
                    .with_is_future_key(false),
            );
        }
        let dir = self.logs.data_dir();
        let (total, usable) = crate::storage::volume_bytes(dir).unwrap_or((-1, -1));
        let result = DescribeLogDirsResult::default()
            .with_log_dir(text(dir.display().to_string()))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(name, partitions)| {
                        DescribeLogDirsTopic::default()
                            .with_name(TopicName(text(name)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_total_bytes(total)
            .with_usable_bytes(usable);
        DescribeLogDirsResponse::default().with_results(vec![result])
    }

    /// AlterPartitionReassignments on a single broker: the only assignment there is, this
    /// broker alone, is accepted (nothing to move); any other names a broker that is not
    /// registered, and there is never a reassignment to cancel.
    pub(crate) fn alter_partition_reassignments(
        &self,
        req: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let me = crate::types::NodeId(self.config.node_id);
        let topics = self.topics_read();
        let outcomes = reassignment_targets(&req)
            .into_iter()
            .map(|(topic, p, target)| {
                let checked = match (topics.get(&topic), target) {
                    (None, _) => Err(refusals::no_topic_to_reassign(&topic)),
                    (Some(m), _) if p < 0 || p >= m.partitions => {
                        Err(refusals::no_partition_to_reassign(&topic, p))
                    }
                    (Some(_), None) => Err(refusals::no_reassignment_in_progress()),
                    (Some(_), Some(t)) => {
                        refusals::check_manual_assignment(&t, |b| b == me).map(|()| t.len())
                    }
                };
                let error = match checked {
                    Ok(size) => check_replication_factor(&req, 1, size).err(),
                    Err(e) => Some((e.code, e.message)),
                };
                (topic, p, error)
            })
            .collect();
        reassignments_response(&req, outcomes)
    }

    fn topic_metadata(&self, m: &TopicMeta) -> MetadataResponseTopic {
        let node = BrokerId(self.config.node_id);
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(text(m.name.clone()))))
            .with_topic_id(m.id)
            .with_is_internal(super::is_internal(&m.name))
            .with_partitions(
                (0..m.partitions)
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(node)
                            .with_leader_epoch(m.leader_epoch)
                            .with_replica_nodes(vec![node])
                            .with_isr_nodes(vec![node])
                    })
                    .collect(),
            )
    }
}

/// The topics a DeleteTopics request names: v0-5 in `topic_names`; v6+ in `topics`, by name
/// or by id.
pub(crate) fn deletion_targets(req: &DeleteTopicsRequest) -> Vec<(Option<String>, Uuid)> {
    let mut wanted: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    wanted.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    wanted
}

fn error_topic(name: Option<String>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(text(n))))
        .with_topic_id(id)
}

/// One topic's election outcomes for the answer: per partition, `None` when elected.
pub(crate) type ElectionOutcomes = (String, Vec<(i32, Option<(ResponseError, String)>)>);

/// The election an ElectLeaders request asks for, or the answer refusing an unknown type
/// (Kafka: INVALID_REQUEST, on the request and on every partition named).
pub(crate) fn election_type(
    req: &ElectLeadersRequest,
) -> Result<ElectionType, ElectLeadersResponse> {
    match req.election_type {
        0 => Ok(ElectionType::Preferred),
        1 => Ok(ElectionType::Unclean),
        other => {
            let why = format!("Unknown election type {other}");
            let results = requested_elections(req)
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| {
                    let ps = ps
                        .into_iter()
                        .map(|p| (p, Some((ResponseError::InvalidRequest, why.clone()))))
                        .collect();
                    (t, ps)
                })
                .collect();
            Err(elect_leaders_response(results)
                .with_error_code(ResponseError::InvalidRequest.code()))
        }
    }
}

/// The partitions an ElectLeaders request names (`None`: every partition).
pub(crate) fn requested_elections(req: &ElectLeadersRequest) -> Option<Vec<(String, Vec<i32>)>> {
    req.topic_partitions.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect()
    })
}

pub(crate) fn elect_leaders_response(results: Vec<ElectionOutcomes>) -> ElectLeadersResponse {
    ElectLeadersResponse::default().with_replica_election_results(
        results
            .into_iter()
            .map(|(topic, ps)| {
                ReplicaElectionResult::default()
                    .with_topic(TopicName(text(topic)))
                    .with_partition_result(
                        ps.into_iter()
                            .map(|(p, e)| {
                                let (code, message) = match e {
                                    None => (0, None),
                                    Some((code, m)) => (code.code(), Some(text(m))),
                                };
                                PartitionResult::default()
                                    .with_partition_id(p)
                                    .with_error_code(code)
                                    .with_error_message(message)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// One partition's reassignment outcome for the answer: `None` when accepted.
pub(crate) type ReassignmentOutcome = (String, i32, Option<(ResponseError, String)>);

/// The partitions of an AlterPartitionReassignments request with their targets (`None`:
/// cancel).
pub(crate) fn reassignment_targets(
    req: &AlterPartitionReassignmentsRequest,
) -> Vec<crate::controller::decisions::ReassignmentTarget> {
    req.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let target = p
                    .replicas
                    .as_ref()
                    .map(|rs| rs.iter().map(|b| crate::types::NodeId(b.0)).collect());
                (t.name.0.to_string(), p.partition_index, target)
            })
        })
        .collect()
}

/// KIP-860: with `allow_replication_factor_change` off, a target of another size than the
/// partition's replication factor is refused.
pub(crate) fn check_replication_factor(
    req: &AlterPartitionReassignmentsRequest,
    current: usize,
    target: usize,
) -> Result<(), (ResponseError, String)> {
    if req.allow_replication_factor_change || current == target {
        return Ok(());
    }
    Err((
        ResponseError::InvalidReplicationFactor,
        format!("The replication factor is changed from {current} to {target}"),
    ))
}

/// The AlterPartitionReassignments answer: per topic of the request, in its order, each
/// partition's outcome.
pub(crate) fn reassignments_response(
    req: &AlterPartitionReassignmentsRequest,
    outcomes: Vec<ReassignmentOutcome>,
) -> AlterPartitionReassignmentsResponse {
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    let mut outcomes = outcomes.into_iter();
    let responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .filter_map(|_| outcomes.next())
                .map(|(_, p, e)| {
                    let (code, message) = match e {
                        None => (0, None),
                        Some((code, m)) => (code.code(), Some(text(m))),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}
