//! `Admin`: topics, partitions, configs and records, over any [`Transport`], with Kafka's
//! error codes turned into [`ClientError`]s.

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
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, MetadataRequest, RequestKind,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::transport::Transport;
use super::{check, ClientError};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// What Metadata says of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: i32,
    pub internal: bool,
}

/// How to change one config key (IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
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
