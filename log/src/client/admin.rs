//! `Admin`: topics, partitions, configs, records, offsets and consumer groups (members,
//! assignments, committed offsets, lag), over any [`Transport`], with Kafka's error codes
//! turned into [`ClientError`]s.

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
use kafka_protocol::protocol::StrBytes;

use super::consumer::decode_assignment;
use super::transport::Transport;
use super::{check, ClientError};
use crate::types::TopicPartition;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// What Metadata says of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: i32,
    pub internal: bool,
    /// The leader's node id of each partition, by partition index.
    pub leaders: Vec<i32>,
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
        let topic = CreatableTopic::default()
            .with_name(TopicName(text(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
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
