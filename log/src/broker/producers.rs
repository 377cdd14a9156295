//! The partition leader's side of the tools for hanging transactions (KIP-664):
//! DescribeProducers lists each partition's producers and the first offset of their open
//! transaction, and WriteTxnMarkers ends a transaction in a partition (what
//! `rill transactions abort` and Kafka's `kafka-transactions.sh abort` send for a transaction
//! the coordinator no longer knows).

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::ResponseError;

use super::{storage_error_code, Broker};
use crate::record::control::Marker;

impl Broker {
    pub(crate) fn describe_producers(
        &self,
        req: DescribeProducersRequest,
    ) -> DescribeProducersResponse {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let meta = self.topic_meta(&t.name.0);
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&p| {
                        let resp = PartitionResponse::default().with_partition_index(p);
                        let Some(log) = self.log_of(meta.as_ref(), p) else {
                            return resp
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let producers = log
                            .producers()
                            .into_iter()
                            .map(|(id, e, open)| {
                                let last = e.batches.back();
                                ProducerState::default()
                                    .with_producer_id(ProducerId(id))
                                    .with_producer_epoch(i32::from(e.epoch))
                                    .with_last_sequence(last.map_or(-1, |b| b.last_seq))
                                    .with_last_timestamp(last.map_or(-1, |b| b.max_timestamp))
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(open.unwrap_or(-1))
                            })
                            .collect();
                        resp.with_active_producers(producers)
                    })
                    .collect();
                TopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        DescribeProducersResponse::default().with_topics(topics)
    }

    /// WriteTxnMarkers: ends the producer's open transaction in each partition. A partition
    /// where the producer has no open transaction is left alone (nothing to end), and a marker
    /// older than the producer's epoch there is refused, as Kafka refuses it.
    pub(crate) fn write_txn_markers(&self, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
        let markers = req
            .markers
            .into_iter()
            .map(|m| {
                let marker = if m.transaction_result {
                    Marker::Commit
                } else {
                    Marker::Abort
                };
                let topics = m
                    .topics
                    .into_iter()
                    .map(|t| {
                        let meta = self.topic_meta(&t.name.0);
                        let partitions = t
                            .partition_indexes
                            .iter()
                            .map(|&p| {
                                let code = match self.log_of(meta.as_ref(), p) {
                                    None => ResponseError::UnknownTopicOrPartition.code(),
                                    Some(log) => match log.producer(m.producer_id.0) {
                                        Some(e) if e.epoch > m.producer_epoch => {
                                            ResponseError::InvalidProducerEpoch.code()
                                        }
                                        _ if !log.in_transaction(m.producer_id.0) => 0,
                                        _ => match log.append_marker(
                                            m.producer_id.0,
                                            m.producer_epoch,
                                            marker,
                                            m.coordinator_epoch,
                                        ) {
                                            Ok(_) => {
                                                self.waiting.wake(log.topic_partition());
                                                0
                                            }
                                            Err(e) => storage_error_code(&e).code(),
                                        },
                                    },
                                };
                                WritableTxnMarkerPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_error_code(code)
                            })
                            .collect();
                        WritableTxnMarkerTopicResult::default()
                            .with_name(t.name)
                            .with_partitions(partitions)
                    })
                    .collect();
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics)
            })
            .collect();
        WriteTxnMarkersResponse::default().with_markers(markers)
    }
}
