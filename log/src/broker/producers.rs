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

use super::Broker;

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

    /// WriteTxnMarkers: ends the producer's open transaction in each partition (what a
    /// transaction coordinator on another broker sends, and the tools for hanging
    /// transactions). A partition where the producer has no open transaction is left alone
    /// (nothing to end), a marker older than the producer's epoch there is refused, as Kafka
    /// refuses it, and in a cluster only the partition's leader writes it and answers once
    /// the marker is on the in-sync replicas.
    pub(crate) async fn write_txn_markers(
        &self,
        req: WriteTxnMarkersRequest,
    ) -> WriteTxnMarkersResponse {
        let mut written = Vec::new();
        let mut markers = Vec::with_capacity(req.markers.len());
        for m in req.markers {
            let producer = (m.producer_id.0, m.producer_epoch);
            let mut topics = Vec::with_capacity(m.topics.len());
            for t in m.topics {
                let meta = self.topic_meta(&t.name.0);
                let mut partitions = Vec::with_capacity(t.partition_indexes.len());
                for &p in &t.partition_indexes {
                    let code = match self.log_of(meta.as_ref(), p) {
                        None => ResponseError::UnknownTopicOrPartition.code(),
                        Some(log) => {
                            let tp = log.topic_partition().clone();
                            match self.leader_writes_marker(
                                &tp,
                                producer,
                                m.transaction_result,
                                m.coordinator_epoch,
                            ) {
                                Ok(Some(end)) => {
                                    written.push(((topics.len(), partitions.len()), tp, end));
                                    0
                                }
                                Ok(None) => 0,
                                Err(e) => e.code(),
                            }
                        }
                    };
                    partitions.push(
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code),
                    );
                }
                topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions),
                );
            }
            let wanted = written
                .iter()
                .map(|(_, tp, end)| (tp.clone(), *end))
                .collect();
            let outcomes = self
                .await_replicated(wanted, std::time::Duration::from_secs(30))
                .await;
            for (((t, p), _, _), outcome) in written.drain(..).zip(outcomes) {
                if let Some(code) = outcome {
                    topics[t].partitions[p].error_code = code.code();
                }
            }
            markers.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics),
            );
        }
        WriteTxnMarkersResponse::default().with_markers(markers)
    }
}
