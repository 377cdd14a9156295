//! `Admin`: topics, partitions, configs, records, offsets, consumer groups (members,
//! assignments, committed offsets, lag) and transactions (listing, describing, finding and
//! aborting hanging ones, KIP-664), over any [`Transport`], with Kafka's error codes turned
//! into [`ClientError`]s.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, OffsetFetchRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, ProducerId,
    TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::consumer::decode_assignment;
use super::transport::Transport;
use super::{check, ClientError};
use crate::types::TopicPartition;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One transactional id, as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// One transactional id, as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the open transaction started (-1 when none is open).
    pub start_time_ms: i64,
    /// Partitions of the open transaction.
    pub partitions: Vec<TopicPartition>,
}

/// A producer a partition knows (DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDescription {
    pub partition: TopicPartition,
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    /// The first offset of the producer's open transaction here (-1 when none).
    pub txn_start_offset: i64,
}

/// What Metadata says of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: i32,
    pub internal: bool,
    /// The leader's node id of each partition, by partition index.
    pub leaders: Vec<i32>,
    /// Each partition's replication state, by partition index.
    pub partition_states: Vec<PartitionDescription>,
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    /// -1 while the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on brokers that are down.
    pub offline: Vec<i32>,
}

/// A partition under reassignment (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReassignment {
    pub partition: TopicPartition,
    /// The assignment meanwhile: the target replicas, then those being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// One broker's log directory (DescribeLogDirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    pub log_dir: String,
    /// The volume's total and usable bytes (-1 when the broker cannot tell).
    pub total_bytes: i64,
    pub usable_bytes: i64,
    /// Each partition's log here: its size in bytes, and how far its end is behind the high
    /// watermark.
    pub partitions: Vec<(TopicPartition, i64, i64)>,
}

impl PartitionDescription {
    /// Fewer in-sync replicas than replicas.
    pub fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

/// How to change one config key (IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// Which offset [`Admin::list_offsets`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first record with the largest timestamp (KIP-734).
    MaxTimestamp,
    /// The first record with a timestamp at or after this one.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(ts) => ts,
        }
    }
}

/// A listed offset: `offset` -1 where no record matched; `timestamp_ms` -1 for earliest/latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// A group member as DescribeGroups shows it; `assignment` is decoded for consumer groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor, for consumer groups.
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A partition's committed offset against its log end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: TopicPartition,
    pub committed: i64,
    pub log_end: i64,
    /// `log_end - committed`, never below 0.
    pub lag: i64,
}

/// Administrative operations.
#[derive(Debug, Clone)]
pub struct Admin {
    transport: Arc<dyn Transport>,
}

impl Admin {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Admin { transport }
    }

    async fn call(&self, req: RequestKind) -> Result<ResponseKind, ClientError> {
        self.transport
            .send(req)
            .await?
            .ok_or(ClientError::NoResponse)
    }

    /// Creates a topic with `partitions` partitions and config overrides.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        self.create_replicated_topic(name, partitions, -1, configs)
            .await
    }

    /// [`create_topic`](Self::create_topic) with a replication factor (-1: the cluster's
    /// `default.replication.factor`).
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(text(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(text(k))
                            .with_value(Some(text(v)))
                    })
                    .collect(),
            );
        match self
            .call(RequestKind::CreateTopics(
                CreateTopicsRequest::default().with_topics(vec![topic]),
            ))
            .await?
        {
            ResponseKind::CreateTopics(r) => {
                let t = r.topics.first().ok_or(ClientError::NoResponse)?;
                check(t.error_code, t.error_message.as_deref())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = DeleteTopicsRequest::default()
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(TopicName(text(name))))
            ])
            .with_topic_names(vec![TopicName(text(name))]);
        match self.call(RequestKind::DeleteTopics(req)).await? {
            ResponseKind::DeleteTopics(r) => {
                // Either list may carry the answer, depending on the version.
                let res = r.responses.first().ok_or(ClientError::NoResponse)?;
                check(res.error_code, res.error_message.as_deref())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Every topic, with its partition count.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        match self
            .call(RequestKind::Metadata(
                MetadataRequest::default().with_topics(None),
            ))
            .await?
        {
            ResponseKind::Metadata(m) => Ok(m
                .topics
                .iter()
                .filter(|t| t.error_code == 0)
                .map(|t| TopicDescription {
                    name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                    partitions: t.partitions.len() as i32,
                    internal: t.is_internal,
                    leaders: {
                        let mut ps: Vec<(i32, i32)> = t
                            .partitions
                            .iter()
                            .map(|p| (p.partition_index, p.leader_id.0))
                            .collect();
                        ps.sort();
                        ps.into_iter().map(|(_, l)| l).collect()
                    },
                    partition_states: {
                        let ids = |v: &[kafka_protocol::messages::BrokerId]| {
                            v.iter().map(|b| b.0).collect::<Vec<i32>>()
                        };
                        let mut ps: Vec<PartitionDescription> = t
                            .partitions
                            .iter()
                            .map(|p| PartitionDescription {
                                partition: p.partition_index,
                                leader: p.leader_id.0,
                                leader_epoch: p.leader_epoch,
                                replicas: ids(&p.replica_nodes),
                                isr: ids(&p.isr_nodes),
                                offline: ids(&p.offline_replicas),
                            })
                            .collect();
                        ps.sort_by_key(|p| p.partition);
                        ps
                    },
                })
                .collect()),
            other => Err(ClientError::unexpected(&other)),
        }
    }

    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), ClientError> {
        let req =
            CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_count(total)
                .with_assignments(None)]);
        match self.call(RequestKind::CreatePartitions(req)).await? {
            ResponseKind::CreatePartitions(r) => {
                let res = r.results.first().ok_or(ClientError::NoResponse)?;
                check(res.error_code, res.error_message.as_deref())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// A topic's configs (every key, with its effective value).
    pub async fn describe_topic_configs(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text(topic))
                .with_configuration_keys(None),
        ]);
        match self.call(RequestKind::DescribeConfigs(req)).await? {
            ResponseKind::DescribeConfigs(r) => {
                let res = r.results.first().ok_or(ClientError::NoResponse)?;
                check(res.error_code, res.error_message.as_deref())?;
                Ok(res
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            c.value.as_deref().unwrap_or_default().to_string(),
                        )
                    })
                    .collect())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Changes topic configs; all or nothing.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        ops: &[(&str, ConfigOp)],
    ) -> Result<(), ClientError> {
        let configs = ops
            .iter()
            .map(|(k, op)| {
                let (code, value) = match op {
                    ConfigOp::Set(v) => (0, Some(text(v))),
                    ConfigOp::Delete => (1, None),
                    ConfigOp::Append(v) => (2, Some(text(v))),
                    ConfigOp::Subtract(v) => (3, Some(text(v))),
                };
                AlterableConfig::default()
                    .with_name(text(k))
                    .with_config_operation(code)
                    .with_value(value)
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text(topic))
                .with_configs(configs),
        ]);
        match self.call(RequestKind::IncrementalAlterConfigs(req)).await? {
            ResponseKind::IncrementalAlterConfigs(r) => {
                let res = r.responses.first().ok_or(ClientError::NoResponse)?;
                check(res.error_code, res.error_message.as_deref())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// ListOffsets for each partition.
    pub async fn list_offsets(
        &self,
        query: &[(TopicPartition, OffsetSpec)],
    ) -> Result<BTreeMap<TopicPartition, ListedOffset>, ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for (tp, spec) in query {
            by_topic.entry(&tp.topic).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_timestamp(spec.wire()),
            );
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(text(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        match self.call(RequestKind::ListOffsets(req)).await? {
            ResponseKind::ListOffsets(r) => {
                let mut out = BTreeMap::new();
                for t in r.topics {
                    for p in t.partitions {
                        check(p.error_code, None)?;
                        out.insert(
                            TopicPartition::new(t.name.0.to_string(), p.partition_index),
                            ListedOffset {
                                offset: p.offset,
                                timestamp_ms: p.timestamp,
                            },
                        );
                    }
                }
                Ok(out)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Every group the coordinator knows.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        match self
            .call(RequestKind::ListGroups(ListGroupsRequest::default()))
            .await?
        {
            ResponseKind::ListGroups(r) => {
                check(r.error_code, None)?;
                Ok(r.groups
                    .into_iter()
                    .map(|g| GroupListing {
                        group_id: g.group_id.0.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        state: g.group_state.to_string(),
                    })
                    .collect())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// State, protocol and members (with decoded assignments) of each group.
    pub async fn describe_groups(
        &self,
        groups: &[&str],
    ) -> Result<Vec<GroupDescription>, ClientError> {
        let req = DescribeGroupsRequest::default()
            .with_groups(groups.iter().map(|g| GroupId(text(g))).collect());
        match self.call(RequestKind::DescribeGroups(req)).await? {
            ResponseKind::DescribeGroups(r) => r
                .groups
                .into_iter()
                .map(|g| {
                    check(g.error_code, g.error_message.as_deref())?;
                    let consumer = g.protocol_type.as_str() == "consumer";
                    Ok(GroupDescription {
                        group_id: g.group_id.0.to_string(),
                        state: g.group_state.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        protocol: g.protocol_data.to_string(),
                        members: g
                            .members
                            .into_iter()
                            .map(|m| MemberDescription {
                                member_id: m.member_id.to_string(),
                                group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                                client_id: m.client_id.to_string(),
                                client_host: m.client_host.to_string(),
                                assignment: if consumer {
                                    decode_assignment(m.member_assignment)
                                } else {
                                    Vec::new()
                                },
                            })
                            .collect(),
                    })
                })
                .collect(),
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Deletes empty groups and their committed offsets; fails on the first group that could
    /// not be deleted (NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND, ...).
    pub async fn delete_groups(&self, groups: &[&str]) -> Result<(), ClientError> {
        let req = DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(text(g))).collect());
        match self.call(RequestKind::DeleteGroups(req)).await? {
            ResponseKind::DeleteGroups(r) => {
                for g in r.results {
                    check(g.error_code, Some(g.group_id.as_str()))?;
                }
                Ok(())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Every offset committed by `group`, with its metadata string.
    pub async fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, (i64, String)>, ClientError> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(None);
        match self.call(RequestKind::OffsetFetch(req)).await? {
            ResponseKind::OffsetFetch(r) => {
                check(r.error_code, None)?;
                let mut out = BTreeMap::new();
                for t in r.topics {
                    for p in t.partitions {
                        check(p.error_code, None)?;
                        if p.committed_offset >= 0 {
                            out.insert(
                                TopicPartition::new(t.name.0.to_string(), p.partition_index),
                                (
                                    p.committed_offset,
                                    p.metadata.map(|m| m.to_string()).unwrap_or_default(),
                                ),
                            );
                        }
                    }
                }
                Ok(out)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Consumer lag of `group`: for each partition it committed to, the committed offset
    /// against the partition's log end.
    pub async fn consumer_lag(&self, group: &str) -> Result<Vec<PartitionLag>, ClientError> {
        let committed = self.list_group_offsets(group).await?;
        let query: Vec<(TopicPartition, OffsetSpec)> = committed
            .keys()
            .map(|tp| (tp.clone(), OffsetSpec::Latest))
            .collect();
        let ends = self.list_offsets(&query).await?;
        Ok(committed
            .into_iter()
            .map(|(tp, (committed, _))| {
                let log_end = ends.get(&tp).map_or(-1, |o| o.offset);
                PartitionLag {
                    lag: (log_end - committed).max(0),
                    partition: tp,
                    committed,
                    log_end,
                }
            })
            .collect())
    }

    /// Deletes the records of a partition below `before`; returns the new low watermark.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        before: i64,
    ) -> Result<i64, ClientError> {
        let req = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(before)])]);
        match self.call(RequestKind::DeleteRecords(req)).await? {
            ResponseKind::DeleteRecords(r) => {
                let p = r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .ok_or(ClientError::NoResponse)?;
                check(p.error_code, None)?;
                Ok(p.low_watermark)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }
}

impl Admin {
    /// Deletes `group`'s committed offsets of `partitions` (OffsetDelete, KIP-496): per
    /// partition, `None` when deleted (or there was none), else why not
    /// (GROUP_SUBSCRIBED_TO_TOPIC while members subscribe to its topic,
    /// UNKNOWN_TOPIC_OR_PARTITION). A group-level refusal (GROUP_ID_NOT_FOUND,
    /// NON_EMPTY_GROUP) is the error.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<kafka_protocol::ResponseError>)>, ClientError> {
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition.0);
        }
        let req = kafka_protocol::messages::OffsetDeleteRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(text(t)))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|p| {
                                        OffsetDeleteRequestPartition::default()
                                            .with_partition_index(p)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        match self.call(RequestKind::OffsetDelete(req)).await? {
            ResponseKind::OffsetDelete(r) => {
                check(r.error_code, Some(group))?;
                Ok(r.topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| {
                            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                            let error = (p.error_code != 0).then(|| {
                                kafka_protocol::ResponseError::try_from_code(p.error_code)
                                    .unwrap_or(kafka_protocol::ResponseError::UnknownServerError)
                            });
                            (tp, error)
                        })
                    })
                    .collect())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Leader elections (ElectLeaders, KIP-460): `preferred` moves each partition's
    /// leadership to its first replica where that replica is in the ISR; otherwise an unclean
    /// election gives leaderless partitions any live replica. `partitions` `None` means every
    /// partition (the answer then leaves out those that needed no election). Per partition,
    /// `None` when elected, else why not (ELECTION_NOT_NEEDED,
    /// PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
    /// UNKNOWN_TOPIC_OR_PARTITION).
    pub async fn elect_leaders(
        &self,
        preferred: bool,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<Vec<(TopicPartition, Option<kafka_protocol::ResponseError>)>, ClientError> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let topic_partitions = partitions.map(|ps| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in ps {
                by_topic.entry(&tp.topic).or_default().push(tp.partition.0);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(text(t)))
                        .with_partitions(ps)
                })
                .collect()
        });
        let req = kafka_protocol::messages::ElectLeadersRequest::default()
            .with_election_type(if preferred { 0 } else { 1 })
            .with_topic_partitions(topic_partitions)
            .with_timeout_ms(30_000);
        match self.call(RequestKind::ElectLeaders(req)).await? {
            ResponseKind::ElectLeaders(r) => {
                check(r.error_code, None)?;
                Ok(r.replica_election_results
                    .iter()
                    .flat_map(|t| {
                        t.partition_result.iter().map(|p| {
                            let tp = TopicPartition::new(t.topic.0.to_string(), p.partition_id);
                            let error = kafka_protocol::ResponseError::try_from_code(p.error_code);
                            (tp, error)
                        })
                    })
                    .collect())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Starts partition reassignments (AlterPartitionReassignments, KIP-455): each
    /// partition to its target replicas (the first the preferred leader), or, with `None`,
    /// cancels the one under way. The new replicas catch up, join the ISR, then the ones
    /// left out go. Per partition, `None` when accepted, else why not.
    pub async fn alter_partition_reassignments(
        &self,
        targets: &[(TopicPartition, Option<Vec<i32>>)],
    ) -> Result<Vec<(TopicPartition, Option<kafka_protocol::ResponseError>)>, ClientError> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for (tp, replicas) in targets {
            by_topic.entry(&tp.topic).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_replicas(
                        replicas
                            .as_ref()
                            .map(|rs| rs.iter().map(|b| BrokerId(*b)).collect()),
                    ),
            );
        }
        let req = kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        ReassignableTopic::default()
                            .with_name(TopicName(text(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        match self
            .call(RequestKind::AlterPartitionReassignments(req))
            .await?
        {
            ResponseKind::AlterPartitionReassignments(r) => {
                check(r.error_code, r.error_message.as_deref())?;
                Ok(r.responses
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| {
                            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                            (
                                tp,
                                kafka_protocol::ResponseError::try_from_code(p.error_code),
                            )
                        })
                    })
                    .collect())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Takes broker `broker` out of the cluster (UnregisterBroker, for a decommissioned
    /// broker: drain it with a reassignment and stop it first). A live broker that comes
    /// back registers again.
    pub async fn unregister_broker(&self, broker: i32) -> Result<(), ClientError> {
        let req = kafka_protocol::messages::UnregisterBrokerRequest::default()
            .with_broker_id(BrokerId(broker));
        match self.call(RequestKind::UnregisterBroker(req)).await? {
            ResponseKind::UnregisterBroker(r) => check(r.error_code, r.error_message.as_deref()),
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// The partitions under reassignment (ListPartitionReassignments), in topic and
    /// partition order.
    pub async fn list_partition_reassignments(
        &self,
    ) -> Result<Vec<PartitionReassignment>, ClientError> {
        let req = kafka_protocol::messages::ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(None);
        match self
            .call(RequestKind::ListPartitionReassignments(req))
            .await?
        {
            ResponseKind::ListPartitionReassignments(r) => {
                check(r.error_code, r.error_message.as_deref())?;
                let ids = |bs: &[BrokerId]| bs.iter().map(|b| b.0).collect::<Vec<_>>();
                let mut out: Vec<PartitionReassignment> = r
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| PartitionReassignment {
                            partition: TopicPartition::new(t.name.0.to_string(), p.partition_index),
                            replicas: ids(&p.replicas),
                            adding: ids(&p.adding_replicas),
                            removing: ids(&p.removing_replicas),
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.partition.cmp(&b.partition));
                Ok(out)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// The log directories of broker `broker` (DescribeLogDirs, sent to that broker): every
    /// partition it holds and the size of each.
    pub async fn describe_log_dirs(
        &self,
        broker: i32,
    ) -> Result<Vec<LogDirDescription>, ClientError> {
        let req = kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None);
        let resp = self
            .transport
            .send_to_broker(broker, RequestKind::DescribeLogDirs(req))
            .await?
            .ok_or(ClientError::NoResponse)?;
        match resp {
            ResponseKind::DescribeLogDirs(r) => {
                check(r.error_code, None)?;
                r.results
                    .into_iter()
                    .map(|d| {
                        check(d.error_code, Some(&d.log_dir))?;
                        let partitions = d
                            .topics
                            .iter()
                            .flat_map(|t| {
                                t.partitions.iter().map(|p| {
                                    let tp = TopicPartition::new(
                                        t.name.0.to_string(),
                                        p.partition_index,
                                    );
                                    (tp, p.partition_size, p.offset_lag)
                                })
                            })
                            .collect();
                        Ok(LogDirDescription {
                            log_dir: d.log_dir.to_string(),
                            total_bytes: d.total_bytes,
                            usable_bytes: d.usable_bytes,
                            partitions,
                        })
                    })
                    .collect()
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Every transactional id the coordinator knows (ListTransactions), in id order.
    pub async fn list_transactions(&self) -> Result<Vec<TransactionListing>, ClientError> {
        let req = ListTransactionsRequest::default().with_duration_filter(-1);
        match self.call(RequestKind::ListTransactions(req)).await? {
            ResponseKind::ListTransactions(r) => {
                check(r.error_code, None)?;
                let mut out: Vec<TransactionListing> = r
                    .transaction_states
                    .into_iter()
                    .map(|t| TransactionListing {
                        transactional_id: t.transactional_id.to_string(),
                        producer_id: t.producer_id.0,
                        state: t.transaction_state.to_string(),
                    })
                    .collect();
                out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                Ok(out)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// State, producer and partitions of each transactional id (DescribeTransactions).
    pub async fn describe_transactions(
        &self,
        ids: &[&str],
    ) -> Result<Vec<TransactionDescription>, ClientError> {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(ids.iter().map(|i| TransactionalId(text(i))).collect());
        match self.call(RequestKind::DescribeTransactions(req)).await? {
            ResponseKind::DescribeTransactions(r) => r
                .transaction_states
                .into_iter()
                .map(|t| {
                    check(t.error_code, Some(t.transactional_id.as_str()))?;
                    Ok(TransactionDescription {
                        transactional_id: t.transactional_id.to_string(),
                        state: t.transaction_state.to_string(),
                        producer_id: t.producer_id.0,
                        producer_epoch: t.producer_epoch,
                        timeout_ms: t.transaction_timeout_ms,
                        start_time_ms: t.transaction_start_time_ms,
                        partitions: t
                            .topics
                            .iter()
                            .flat_map(|topic| {
                                topic
                                    .partitions
                                    .iter()
                                    .map(|p| TopicPartition::new(topic.topic.0.to_string(), *p))
                            })
                            .collect(),
                    })
                })
                .collect(),
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// The producers each of `partitions` knows (DescribeProducers).
    pub async fn describe_producers(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<ProducerDescription>, ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition.0);
        }
        let req = DescribeProducersRequest::default().with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                        .with_name(TopicName(text(t)))
                        .with_partition_indexes(ps)
                })
                .collect(),
        );
        match self.call(RequestKind::DescribeProducers(req)).await? {
            ResponseKind::DescribeProducers(r) => {
                let mut out = Vec::new();
                for t in r.topics {
                    for p in t.partitions {
                        check(p.error_code, p.error_message.as_deref())?;
                        let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                        out.extend(p.active_producers.into_iter().map(|a| ProducerDescription {
                            partition: tp.clone(),
                            producer_id: a.producer_id.0,
                            producer_epoch: a.producer_epoch,
                            last_sequence: a.last_sequence,
                            last_timestamp_ms: a.last_timestamp,
                            txn_start_offset: a.current_txn_start_offset,
                        }));
                    }
                }
                Ok(out)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Aborts producer `producer_id`'s open transaction in `partition` by writing an abort
    /// marker there (WriteTxnMarkers), as Kafka's `Admin.abortTransaction` does: the remedy
    /// for a hanging transaction the coordinator does not know. Aborting a transaction the
    /// coordinator still runs breaks its atomicity: find hanging ones first.
    pub async fn abort_transaction(
        &self,
        partition: &TopicPartition,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::write_txn_markers_request::{
            WritableTxnMarker, WritableTxnMarkerTopic,
        };
        let req =
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_transaction_result(false)
                .with_coordinator_epoch(-1)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(TopicName(text(&partition.topic)))
                    .with_partition_indexes(vec![partition.partition.0])])]);
        match self.call(RequestKind::WriteTxnMarkers(req)).await? {
            ResponseKind::WriteTxnMarkers(r) => {
                for p in r
                    .markers
                    .iter()
                    .flat_map(|m| &m.topics)
                    .flat_map(|t| &t.partitions)
                {
                    check(p.error_code, None)?;
                }
                Ok(())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }
}
