//! The cluster-wide requests of a clustered broker: Metadata and DescribeCluster answered
//! from its metadata image (every broker, each partition's leader, replicas, ISR and leader
//! epoch), and topic administration (CreateTopics, DeleteTopics, CreatePartitions, Metadata's
//! auto-creation) forwarded to the active controller, answered once the change is in this
//! broker's image, so the client's next request sees it (as KRaft brokers forward them).

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, ElectLeadersRequest, ElectLeadersResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::Cluster;
use crate::broker::Broker;
use crate::controller::image::TopicImage;
use crate::controller::rpc::{ControllerRequest, ControllerResponse, TopicSpec, WireError};
use crate::controller::service::ControllerCallError;
use crate::controller::MetadataImage;
use crate::storage::LogConfig;
use crate::types::{validate_topic_name, NodeId};

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn call_error(e: ControllerCallError) -> (ResponseError, String) {
    match e {
        ControllerCallError::Refused(w) => (
            w.error().unwrap_or(ResponseError::UnknownServerError),
            w.message,
        ),
        ControllerCallError::Unreachable(e) => (
            ResponseError::RequestTimedOut,
            format!("no active controller answered: {e}"),
        ),
    }
}

fn wire(e: &WireError) -> (ResponseError, String) {
    (
        e.error().unwrap_or(ResponseError::UnknownServerError),
        e.message.clone(),
    )
}

impl Cluster {
    /// How long an admin request waits for its change to reach this broker's image.
    fn admin_wait(&self) -> Duration {
        Duration::from_millis(self.config.controller_request_timeout_ms)
    }
}

/// A topic's Metadata entry from the image.
fn topic_entry(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let ids = |v: &[NodeId]| v.iter().map(|n| BrokerId(n.0)).collect::<Vec<_>>();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(text(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(crate::broker::is_internal(&t.name))
        .with_partitions(
            t.partitions
                .values()
                .map(|p| {
                    let offline: Vec<NodeId> = p
                        .replicas
                        .iter()
                        .filter(|r| !image.is_usable(**r))
                        .copied()
                        .collect();
                    let mut entry = MetadataResponsePartition::default()
                        .with_partition_index(p.partition)
                        .with_leader_id(BrokerId(p.leader.0))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.isr))
                        .with_offline_replicas(ids(&offline));
                    if !p.has_leader() {
                        entry.error_code = ResponseError::LeaderNotAvailable.code();
                    }
                    entry
                })
                .collect(),
        )
}

impl Broker {
    /// Metadata from the image; unknown topics may be created through the controller
    /// (`auto.create.topics.enable`).
    pub(crate) async fn metadata_clustered(&self, req: MetadataRequest) -> MetadataResponse {
        let cluster = self.cluster().expect("clustered").clone();
        let wanted: Option<Vec<(Option<String>, Uuid)>> = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
                .collect()
        });
        // Topics to create first (by name, valid, unknown).
        if let Some(list) = &wanted {
            if req.allow_auto_topic_creation && self.config.auto_create_topics_enable {
                let missing: Vec<String> = {
                    let image = cluster.image();
                    list.iter()
                        .filter_map(|(n, _)| n.clone())
                        .filter(|n| image.topic(n).is_none() && validate_topic_name(n).is_ok())
                        .collect()
                };
                if !missing.is_empty() {
                    let specs = missing
                        .into_iter()
                        .map(|name| TopicSpec {
                            name,
                            partitions: self.config.num_partitions,
                            replication_factor: -1,
                            assignments: None,
                            configs: BTreeMap::new(),
                        })
                        .collect();
                    let _ = self.create_through_controller(&cluster, specs, false).await;
                }
            }
        }
        let image = cluster.image();
        let topics = match wanted {
            None => image
                .topics
                .values()
                .map(|t| topic_entry(&image, t))
                .collect(),
            Some(list) => list
                .into_iter()
                .map(|(name, id)| {
                    let found = match &name {
                        Some(n) => image.topic(n),
                        None => image.topics.get(&id),
                    };
                    match (found, name) {
                        (Some(t), _) => topic_entry(&image, t),
                        (None, Some(n)) => {
                            let code = if validate_topic_name(&n).is_err() {
                                ResponseError::InvalidTopicException
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            };
                            MetadataResponseTopic::default()
                                .with_error_code(code.code())
                                .with_name(Some(TopicName(text(n))))
                                .with_topic_id(id)
                        }
                        (None, None) => MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_topic_id(id),
                    }
                })
                .collect(),
        };
        let mut topics: Vec<MetadataResponseTopic> = topics;
        if req.include_topic_authorized_operations {
            for t in &mut topics {
                t.topic_authorized_operations = crate::broker::authorized::TOPIC;
            }
        }
        let brokers = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id.0))
                    .with_host(text(b.host.clone()))
                    .with_port(b.port)
                    .with_rack(b.rack.clone().map(text))
            })
            .collect();
        MetadataResponse::default()
            .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
                crate::broker::authorized::CLUSTER
            } else {
                i32::MIN
            })
            .with_brokers(brokers)
            .with_cluster_id(Some(text(self.config.cluster_id.clone())))
            // KRaft brokers name themselves: admin requests sent here are forwarded.
            .with_controller_id(BrokerId(self.config.node_id))
            .with_topics(topics)
    }

    pub(crate) fn describe_cluster_clustered(
        &self,
        req: DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        let cluster = self.cluster().expect("clustered");
        let mut resp = self.describe_cluster(req);
        if resp.error_code == 0 {
            resp.brokers = cluster
                .image()
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id.0))
                        .with_host(text(b.host.clone()))
                        .with_port(b.port)
                        .with_rack(b.rack.clone().map(text))
                })
                .collect();
        }
        resp
    }

    /// Sends topic creations to the controller and waits until they are in the image.
    async fn create_through_controller(
        &self,
        cluster: &Cluster,
        topics: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Result<Vec<Result<Uuid, WireError>>, (ResponseError, String)> {
        let req = ControllerRequest::CreateTopics {
            topics,
            validate_only,
        };
        match cluster.controller().call(&req).await.map_err(call_error)? {
            ControllerResponse::Topics { results, offset } => {
                if !validate_only {
                    cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                }
                Ok(results)
            }
            other => Err((ResponseError::UnknownServerError, format!("{other:?}"))),
        }
    }

    pub(crate) async fn create_topics_clustered(
        &self,
        req: CreateTopicsRequest,
    ) -> CreateTopicsResponse {
        let cluster = self.cluster().expect("clustered").clone();
        let mut results: Vec<CreatableTopicResult> = Vec::with_capacity(req.topics.len());
        let mut specs = Vec::new();
        // (index in results, partitions, replication factor) of each forwarded topic.
        let mut forwarded = Vec::new();
        for t in &req.topics {
            let name = t.name.0.to_string();
            let mut result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            if let Err(e) = LogConfig::from_overrides(&self.logs.defaults(), &configs) {
                result.error_code = ResponseError::InvalidConfig.code();
                result.error_message = Some(text(e.to_string()));
                results.push(result);
                continue;
            }
            let assignments = (!t.assignments.is_empty()).then(|| {
                let mut a: Vec<_> = t.assignments.iter().collect();
                a.sort_by_key(|a| a.partition_index);
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| NodeId(b.0)).collect())
                    .collect::<Vec<Vec<NodeId>>>()
            });
            let partitions = match &assignments {
                Some(a) => a.len() as i32,
                None if t.num_partitions == -1 => self.config.num_partitions,
                None => t.num_partitions,
            };
            let rf = match &assignments {
                Some(a) => a.first().map_or(0, Vec::len) as i16,
                None => t.replication_factor,
            };
            forwarded.push((results.len(), partitions, rf));
            results.push(result);
            specs.push(TopicSpec {
                name,
                partitions,
                replication_factor: i32::from(rf),
                assignments,
                configs,
            });
        }
        if !specs.is_empty() {
            match self
                .create_through_controller(&cluster, specs, req.validate_only)
                .await
            {
                Ok(outcomes) => {
                    for ((at, partitions, rf), outcome) in forwarded.into_iter().zip(outcomes) {
                        let r = &mut results[at];
                        match outcome {
                            Ok(id) => {
                                r.topic_id = if req.validate_only { Uuid::nil() } else { id };
                                r.num_partitions = partitions;
                                r.replication_factor = if rf == -1 {
                                    cluster
                                        .image()
                                        .topics
                                        .get(&id)
                                        .and_then(|t| t.partitions.values().next())
                                        .map_or(-1, |p| p.replicas.len() as i16)
                                } else {
                                    rf
                                };
                            }
                            Err(e) => {
                                let (code, message) = wire(&e);
                                r.error_code = code.code();
                                r.error_message = Some(text(message));
                            }
                        }
                    }
                }
                Err((code, message)) => {
                    for (at, _, _) in forwarded {
                        results[at].error_code = code.code();
                        results[at].error_message = Some(text(message.clone()));
                    }
                }
            }
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    /// Commits a topic's config overrides through the controller and waits until this
    /// broker applied them (so a DescribeConfigs here right after sees them).
    pub(crate) async fn set_topic_configs_clustered(
        &self,
        topic: String,
        configs: BTreeMap<String, String>,
    ) -> Result<(), (ResponseError, String)> {
        let cluster = self.cluster().expect("clustered").clone();
        let req = ControllerRequest::SetTopicConfigs { topic, configs };
        match cluster.controller().call(&req).await.map_err(call_error)? {
            ControllerResponse::Committed { offset } => {
                cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                Ok(())
            }
            other => Err((ResponseError::UnknownServerError, format!("{other:?}"))),
        }
    }

    pub(crate) async fn delete_topics_clustered(
        &self,
        req: DeleteTopicsRequest,
    ) -> DeleteTopicsResponse {
        let cluster = self.cluster().expect("clustered").clone();
        let wanted = crate::broker::admin::deletion_targets(&req);
        let mut results = Vec::with_capacity(wanted.len());
        for (name, id) in wanted {
            let found = {
                let image = cluster.image();
                match &name {
                    Some(n) => image.topic(n).map(|t| (t.name.clone(), t.id)),
                    None => image.topics.get(&id).map(|t| (t.name.clone(), t.id)),
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
                Some((n, _)) if crate::broker::is_internal(&n) => {
                    result.error_code = ResponseError::InvalidTopicException.code();
                    result.error_message = Some(text(format!("{n} is an internal topic")));
                }
                Some((n, topic_id)) => {
                    result.name = Some(TopicName(text(n.clone())));
                    result.topic_id = topic_id;
                    let req = ControllerRequest::DeleteTopics { names: vec![n] };
                    match cluster.controller().call(&req).await.map_err(call_error) {
                        Ok(ControllerResponse::Topics { results: r, offset }) => {
                            if let Some(Err(e)) = r.first() {
                                let (code, message) = wire(e);
                                result.error_code = code.code();
                                result.error_message = Some(text(message));
                            } else {
                                cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                            }
                        }
                        Ok(other) => {
                            result.error_code = ResponseError::UnknownServerError.code();
                            result.error_message = Some(text(format!("{other:?}")));
                        }
                        Err((code, message)) => {
                            result.error_code = code.code();
                            result.error_message = Some(text(message));
                        }
                    }
                }
            }
            results.push(result);
        }
        DeleteTopicsResponse::default().with_responses(results)
    }

    pub(crate) async fn create_partitions_clustered(
        &self,
        req: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let cluster = self.cluster().expect("clustered").clone();
        let mut results = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if crate::broker::is_internal(&name) {
                result.error_code = ResponseError::InvalidTopicException.code();
                result.error_message = Some(text(format!("{name} is an internal topic")));
                results.push(result);
                continue;
            }
            let assignments = t.assignments.as_ref().filter(|a| !a.is_empty()).map(|a| {
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| NodeId(b.0)).collect())
                    .collect()
            });
            if req.validate_only {
                let image = cluster.image();
                let check = crate::controller::Controller::new(Default::default())
                    .create_partitions(&image, &name, t.count, assignments.as_deref());
                if let Err(e) = check {
                    result.error_code = e.code.code();
                    result.error_message = Some(text(e.message));
                }
                results.push(result);
                continue;
            }
            let call = ControllerRequest::CreatePartitions {
                topic: name,
                total: t.count,
                assignments,
            };
            match cluster.controller().call(&call).await.map_err(call_error) {
                Ok(ControllerResponse::Committed { offset }) => {
                    cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                }
                Ok(other) => {
                    result.error_code = ResponseError::UnknownServerError.code();
                    result.error_message = Some(text(format!("{other:?}")));
                }
                Err((code, message)) => {
                    result.error_code = code.code();
                    result.error_message = Some(text(message));
                }
            }
            results.push(result);
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    /// ElectLeaders: decided and committed by the active controller; answered once this
    /// broker's image has the new leaders (or after the admin wait).
    pub(crate) async fn elect_leaders_clustered(
        &self,
        req: ElectLeadersRequest,
    ) -> ElectLeadersResponse {
        use crate::broker::admin::{elect_leaders_response, election_type, requested_elections};
        let cluster = self.cluster().expect("clustered").clone();
        let election = match election_type(&req) {
            Ok(e) => e,
            Err(refused) => return refused,
        };
        let partitions = requested_elections(&req);
        let call = ControllerRequest::ElectLeaders {
            election,
            partitions: partitions.clone(),
        };
        let (code, message) = match cluster.controller().call(&call).await.map_err(call_error) {
            Ok(ControllerResponse::Elections { results, offset }) => {
                cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                let results = results
                    .into_iter()
                    .map(|(t, ps)| {
                        let ps = ps
                            .into_iter()
                            .map(|(p, e)| (p, e.as_ref().map(wire)))
                            .collect();
                        (t, ps)
                    })
                    .collect();
                return elect_leaders_response(results);
            }
            Ok(other) => (ResponseError::UnknownServerError, format!("{other:?}")),
            Err(e) => e,
        };
        // No answer from the controller: the request's error, on each partition named too
        // (as Kafka's `getErrorResponse`).
        let results = partitions
            .unwrap_or_default()
            .into_iter()
            .map(|(t, ps)| {
                let ps = ps
                    .into_iter()
                    .map(|p| (p, Some((code, message.clone()))))
                    .collect();
                (t, ps)
            })
            .collect();
        elect_leaders_response(results).with_error_code(code.code())
    }

    /// AlterPartitionReassignments: decided and committed by the active controller (the
    /// KIP-860 replication-factor check first, against this broker's image); answered once
    /// this broker's image has the change.
    pub(crate) async fn alter_partition_reassignments_clustered(
        &self,
        req: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        use crate::broker::admin::{
            check_replication_factor, reassignment_targets, reassignments_response,
        };
        let cluster = self.cluster().expect("clustered").clone();
        let targets = reassignment_targets(&req);
        // Each partition's outcome, decided here when the request itself is wrong.
        let mut outcomes: Vec<Option<(ResponseError, String)>> = vec![None; targets.len()];
        let mut asked = Vec::new();
        {
            let image = cluster.image();
            for (i, (topic, p, target)) in targets.iter().enumerate() {
                let current = image.topic(topic).and_then(|t| t.partitions.get(p));
                let rf_change = match (current, target) {
                    (Some(c), Some(t)) => {
                        check_replication_factor(&req, c.original_replicas().len(), t.len()).err()
                    }
                    _ => None,
                };
                match rf_change {
                    Some(e) => outcomes[i] = Some(e),
                    None => asked.push(i),
                }
            }
        }
        if !asked.is_empty() {
            let call = ControllerRequest::AlterReassignments {
                targets: asked.iter().map(|i| targets[*i].clone()).collect(),
            };
            match cluster.controller().call(&call).await.map_err(call_error) {
                Ok(ControllerResponse::Reassignments { results, offset }) => {
                    cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                    for (i, (_, _, e)) in asked.iter().zip(results) {
                        outcomes[*i] = e.as_ref().map(wire);
                    }
                }
                Ok(other) => {
                    let e = (ResponseError::UnknownServerError, format!("{other:?}"));
                    for i in &asked {
                        outcomes[*i] = Some(e.clone());
                    }
                }
                Err(e) => {
                    for i in &asked {
                        outcomes[*i] = Some(e.clone());
                    }
                }
            }
        }
        let outcomes = targets
            .into_iter()
            .zip(outcomes)
            .map(|((t, p, _), e)| (t, p, e))
            .collect();
        reassignments_response(&req, outcomes)
    }

    /// ListPartitionReassignments, from this broker's image: the partitions under
    /// reassignment (of the topics and partitions asked for, or all).
    pub(crate) fn list_partition_reassignments_clustered(
        &self,
        req: ListPartitionReassignmentsRequest,
    ) -> ListPartitionReassignmentsResponse {
        use kafka_protocol::messages::list_partition_reassignments_response::{
            OngoingPartitionReassignment, OngoingTopicReassignment,
        };
        let cluster = self.cluster().expect("clustered").clone();
        let image = cluster.image();
        let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        let ids = |ns: &[NodeId]| ns.iter().map(|n| BrokerId(n.0)).collect::<Vec<_>>();
        let mut topics = Vec::new();
        for t in image.topics.values() {
            let asked = wanted.as_ref().map(|w| w.get(&t.name));
            if matches!(asked, Some(None)) {
                continue;
            }
            let partitions: Vec<OngoingPartitionReassignment> = t
                .partitions
                .values()
                .filter(|p| p.reassigning())
                .filter(|p| asked.flatten().is_none_or(|ps| ps.contains(&p.partition)))
                .map(|p| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p.partition)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            if !partitions.is_empty() {
                topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(text(t.name.clone())))
                        .with_partitions(partitions),
                );
            }
        }
        ListPartitionReassignmentsResponse::default().with_topics(topics)
    }

    /// UnregisterBroker: the active controller takes the broker out of the cluster;
    /// answered once this broker's image has it.
    pub(crate) async fn unregister_broker_clustered(
        &self,
        req: UnregisterBrokerRequest,
    ) -> UnregisterBrokerResponse {
        let cluster = self.cluster().expect("clustered").clone();
        let call = ControllerRequest::UnregisterBroker {
            id: NodeId(req.broker_id.0),
        };
        let (code, message) = match cluster.controller().call(&call).await.map_err(call_error) {
            Ok(ControllerResponse::Committed { offset }) => {
                cluster.wait_for_offset(offset, cluster.admin_wait()).await;
                return UnregisterBrokerResponse::default();
            }
            Ok(other) => (ResponseError::UnknownServerError, format!("{other:?}")),
            Err(e) => e,
        };
        UnregisterBrokerResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(text(message)))
    }
}
