//! Partition-level administration: CreatePartitions, DeleteRecords, OffsetForLeaderEpoch.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{storage_error_code, Broker, Refusal};
use crate::types::{Offset, TopicPartition};

/// DeleteRecords' "up to the high watermark".
const DELETE_TO_HIGH_WATERMARK: i64 = -1;
/// The request's "no epoch given".
const NO_EPOCH: i32 = -1;

impl Broker {
    pub(crate) fn create_partitions(
        &self,
        req: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let node = self.config.node_id;
        let results = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let outcome = (|| -> Result<(), Refusal> {
                    let mut topics = self.topics_write();
                    let mut meta = topics.get(&name).cloned().ok_or_else(|| {
                        (
                            ResponseError::UnknownTopicOrPartition,
                            format!("no topic {name}"),
                        )
                    })?;
                    if super::is_internal(&name) {
                        // Groups are placed by partition count: it must not change.
                        return Err((
                            ResponseError::InvalidTopicException,
                            format!("{name} is an internal topic"),
                        ));
                    }
                    if t.count > self.config.max_partitions_per_topic {
                        return Err((
                            ResponseError::InvalidPartitions,
                            format!(
                                "at most {} partitions",
                                self.config.max_partitions_per_topic
                            ),
                        ));
                    }
                    if t.count <= meta.partitions {
                        return Err((
                            ResponseError::InvalidPartitions,
                            format!(
                                "topic {name} has {} partitions; {} is not more",
                                meta.partitions, t.count
                            ),
                        ));
                    }
                    if let Some(assignments) = t.assignments.as_ref().filter(|a| !a.is_empty()) {
                        let ok = assignments.len() == (t.count - meta.partitions) as usize
                            && assignments
                                .iter()
                                .all(|a| a.broker_ids.iter().map(|b| b.0).eq([node]));
                        if !ok {
                            return Err((
                                ResponseError::InvalidReplicaAssignment,
                                format!(
                                    "each new partition must be assigned to broker {node} alone"
                                ),
                            ));
                        }
                    }
                    if req.validate_only {
                        return Ok(());
                    }
                    for p in meta.partitions..t.count {
                        self.logs
                            .get_or_create(&TopicPartition::new(name.clone(), p))
                            .map_err(|e| (storage_error_code(&e), e.to_string()))?;
                    }
                    meta.partitions = t.count;
                    topics
                        .put(meta)
                        .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))
                })();
                let mut result = CreatePartitionsTopicResult::default().with_name(t.name);
                if let Err((code, message)) = outcome {
                    result.error_code = code.code();
                    result.error_message = Some(StrBytes::from_string(message));
                }
                result
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }

    pub(crate) fn delete_records(&self, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let meta = self.topic_meta(t.name.0.as_str());
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut result = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        let log = self.log_of(meta.as_ref(), p.partition_index);
                        let Some(log) = log else {
                            result.error_code = ResponseError::UnknownTopicOrPartition.code();
                            return result;
                        };
                        if super::is_internal(&log.topic_partition().topic) {
                            // The broker's own committed offsets are not a client's to delete.
                            result.error_code = ResponseError::InvalidTopicException.code();
                            return result;
                        }
                        let before = if p.offset == DELETE_TO_HIGH_WATERMARK {
                            log.high_watermark()
                        } else {
                            Offset(p.offset)
                        };
                        match log.delete_records(before) {
                            Ok(low) => result.low_watermark = low.0,
                            Err(e) => result.error_code = storage_error_code(&e).code(),
                        }
                        result
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    }

    /// Answered from the partition's leader-epoch cache (Kafka's
    /// `Partition.lastOffsetForLeaderEpoch`): the largest epoch at or below the one asked
    /// and the offset where it ended, or `(-1, -1)` when the log knows no such epoch.
    pub(crate) fn offset_for_leader_epoch(
        &self,
        req: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let meta = self.topic_meta(t.topic.0.as_str());
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut result = EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let found = self
                            .log_of(meta.as_ref(), p.partition)
                            .zip(meta.as_ref().map(|m| m.leader_epoch))
                            .map(|(l, e)| (e, l));
                        let Some((epoch, log)) = found else {
                            result.error_code = ResponseError::UnknownTopicOrPartition.code();
                            return result;
                        };
                        // In a cluster only the leader answers, at its own epoch.
                        let epoch = match self
                            .cluster_leader_epoch(log.topic_partition(), p.current_leader_epoch)
                        {
                            Ok(Some(e)) => e,
                            Ok(None) => epoch,
                            Err(code) => {
                                result.error_code = code.code();
                                return result;
                            }
                        };
                        if p.current_leader_epoch != NO_EPOCH && p.current_leader_epoch < epoch {
                            result.error_code = ResponseError::FencedLeaderEpoch.code();
                        } else if p.current_leader_epoch > epoch {
                            result.error_code = ResponseError::UnknownLeaderEpoch.code();
                        } else {
                            let (epoch, end) = log.end_offset_for_epoch(p.leader_epoch);
                            result.leader_epoch = epoch;
                            result.end_offset = end;
                        }
                        result
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}
