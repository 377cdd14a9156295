//! Produce: append each partition's record batches, with Kafka's acks semantics (0: no
//! response, 1 and -1: after the local append; on one broker the ISR is this broker, so -1 only
//! adds the `min.insync.replicas` check). Idempotent producers' batches are checked by the
//! partition's producer state: a retry already in the log is answered with its original
//! offsets. A partition's first transactional batch of a transaction is checked with the
//! transaction coordinator first (KIP-890). InitProducerId hands out idempotent producers' ids.

use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use std::sync::Arc;

use super::cluster::serve::PendingAck;
use super::{storage_error_code, Broker, BrokerError};
use crate::record::batch::BatchHeader;
use crate::storage::producer_state::ProducerStateError;
use crate::storage::PartitionLog;
use crate::types::Offset;

/// In-sync replicas of every partition: this broker alone.
const ISR_SIZE: i32 = 1;

/// An append of a produce request whose fsync (`flush.messages` / `flush.ms`) is still due:
/// its partition's answer waits for it (see [`Broker::produce_deferring_syncs`]).
#[derive(Debug)]
pub struct PendingSync {
    /// Where its answer is in the response: the topic's index, the partition's index.
    topic: usize,
    partition: usize,
    log: Arc<PartitionLog>,
    /// The log must be durable below this offset.
    upto: Offset,
}

impl Broker {
    pub(crate) fn produce(&self, req: ProduceRequest) -> Option<ProduceResponse> {
        self.produce_with(req, false, &mut Vec::new()).0
    }

    /// Produce on a clustered broker: appended here as leader, answered (for `acks=all`)
    /// once the in-sync replicas have the batches.
    pub(crate) async fn produce_replicated(&self, req: ProduceRequest) -> Option<ProduceResponse> {
        let timeout_ms = req.timeout_ms;
        // An append that may fsync (`flush.messages`, `flush.ms`) holds up only its own
        // request: the worker hands its other tasks on while it waits for the disk.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let (resp, acks) = if multi_thread && self.produce_may_sync(&req) {
            tokio::task::block_in_place(|| self.produce_appending(req))
        } else {
            self.produce_appending(req)
        };
        let mut resp = resp?;
        if !acks.is_empty() {
            self.await_acks(&mut resp, acks, timeout_ms).await;
        }
        Some(resp)
    }

    /// The appends of a produce on a clustered broker, and the `acks=all` ones still to be
    /// acknowledged by the in-sync replicas ([`Broker::await_acks`]).
    pub(crate) fn produce_appending(
        &self,
        req: ProduceRequest,
    ) -> (Option<ProduceResponse>, Vec<PendingAck>) {
        let mut acks = Vec::new();
        let (resp, _) = self.produce_with(req, false, &mut acks);
        (resp, acks)
    }

    /// [`produce`](Self::produce) for the TCP server: the appends go to the page cache and
    /// the fsyncs they make due are handed back, to run ([`finish_syncs`]) while the
    /// connection takes its next request; one fsync then covers every append made meanwhile
    /// (group commit). The response must not leave before `finish_syncs` has run.
    pub fn produce_deferring_syncs(
        &self,
        req: ProduceRequest,
    ) -> (Option<ProduceResponse>, Vec<PendingSync>) {
        self.produce_with(req, true, &mut Vec::new())
    }

    /// Appends a produce request's batches; `acks=all` appends of a clustered broker are
    /// added to `pending_acks` for the caller to wait on.
    fn produce_with(
        &self,
        req: ProduceRequest,
        defer_syncs: bool,
        pending_acks: &mut Vec<PendingAck>,
    ) -> (Option<ProduceResponse>, Vec<PendingSync>) {
        let mut syncs = Vec::new();
        let acks = req.acks;
        let txn_id = req.transactional_id.as_ref().map(|t| t.to_string());
        let mut responses = Vec::with_capacity(req.topic_data.len());
        // Only the record bytes are kept: strings decoded from the same frame would keep it
        // shared (see `owned`).
        let ProduceRequest { topic_data, .. } = req;
        for topic in topic_data {
            let TopicProduceData {
                name: topic_name,
                topic_id,
                partition_data,
                ..
            } = topic;
            let name = topic_name.0.to_string();
            drop(topic_name);
            let known = self.topic_meta(&name);
            let mut partitions = Vec::with_capacity(partition_data.len());
            for p in partition_data {
                let mut resp = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let fail =
                    |resp: &mut PartitionProduceResponse, code: ResponseError, msg: String| {
                        resp.error_code = code.code();
                        resp.error_message = Some(StrBytes::from_string(msg));
                    };
                let log = self.log_of(known.as_ref(), p.index);
                match (log, p.records) {
                    // Internal topics are the broker's own (Kafka: "Cannot append to internal topic").
                    _ if super::is_internal(&name) => fail(
                        &mut resp,
                        ResponseError::InvalidTopicException,
                        format!("{name} is an internal topic"),
                    ),
                    _ if !matches!(acks, -1..=1) => fail(
                        &mut resp,
                        ResponseError::InvalidRequiredAcks,
                        format!("acks={acks}"),
                    ),
                    (None, _) => fail(
                        &mut resp,
                        ResponseError::UnknownTopicOrPartition,
                        format!("{name}-{} is not a partition of this broker", p.index),
                    ),
                    (Some(_), None) => {
                        fail(&mut resp, ResponseError::InvalidRecord, "no records".into())
                    }
                    (Some(log), Some(records)) => {
                        let config = log.config();
                        let clustered = self.cluster().is_some();
                        let refused = self.check_cluster_produce(log.topic_partition(), acks);
                        if let Err((code, message)) = refused {
                            fail(&mut resp, code, message);
                        } else if !clustered && acks == -1 && config.min_insync_replicas > ISR_SIZE
                        {
                            fail(
                                &mut resp,
                                ResponseError::NotEnoughReplicas,
                                format!(
                                    "min.insync.replicas={} but the ISR has {ISR_SIZE} replica",
                                    config.min_insync_replicas
                                ),
                            );
                        } else {
                            // The leader rewrites offsets in place: the request's bytes are
                            // ours (no copy when the request's buffer is not shared).
                            let mut bytes = owned(records);
                            let tp = (name.clone(), p.index);
                            let verify = |h: &BatchHeader| {
                                self.verify_transaction(txn_id.as_deref(), h, &tp)
                            };
                            // One pass validates it all, control batches refused (they are
                            // the transaction coordinator's to write).
                            let appended_or = if defer_syncs {
                                log.append_verified_deferring_sync(&mut bytes, &verify)
                            } else {
                                log.append_verified(&mut bytes, &verify)
                            };
                            match appended_or {
                                Ok(info) => {
                                    if info.record_count > 0 {
                                        self.waiting.wake(log.topic_partition());
                                    }
                                    if clustered {
                                        let tp = log.topic_partition();
                                        self.leader_appended(tp, log.log_end_offset());
                                        if acks == -1 {
                                            pending_acks.push(PendingAck {
                                                topic: responses.len(),
                                                partition: partitions.len(),
                                                tp: tp.clone(),
                                                required: info.last_offset.0 + 1,
                                            });
                                        }
                                    }
                                    if info.sync_due {
                                        syncs.push(PendingSync {
                                            topic: responses.len(),
                                            partition: partitions.len(),
                                            log: Arc::clone(&log),
                                            upto: Offset(info.last_offset.0 + 1),
                                        });
                                    }
                                    resp.base_offset = info.base_offset.0;
                                    resp.log_append_time_ms = info.log_append_time_ms;
                                    resp.log_start_offset = log.log_start_offset().0;
                                }
                                Err(e) => {
                                    tracing::debug!(tp = %log.topic_partition(), error = %e, "produce refused");
                                    fail(&mut resp, storage_error_code(&e), e.to_string());
                                    record_errors(&mut resp, &e, &name, p.index);
                                }
                            }
                        }
                    }
                }
                partitions.push(resp);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_topic_id(topic_id)
                    .with_partition_responses(partitions),
            );
        }
        let resp = (acks != 0).then(|| ProduceResponse::default().with_responses(responses));
        (resp, syncs)
    }
}

/// Runs the fsyncs a produce left due (blocking: call it off the async workers); a
/// partition whose fsync fails answers KAFKA_STORAGE_ERROR instead of its offsets.
pub fn finish_syncs(resp: &mut ProduceResponse, syncs: Vec<PendingSync>) {
    for s in syncs {
        if let Err(e) = s.log.flush_to(s.upto) {
            tracing::warn!(tp = %s.log.topic_partition(), error = %e, "fsync of a produce failed");
            let p = resp
                .responses
                .get_mut(s.topic)
                .and_then(|t| t.partition_responses.get_mut(s.partition));
            if let Some(p) = p {
                p.error_code = storage_error_code(&e).code();
                p.error_message = Some(StrBytes::from_string(e.to_string()));
                p.base_offset = -1;
                p.log_append_time_ms = -1;
            }
        }
    }
}

/// The request's record bytes as a buffer of our own: the same memory when nothing else
/// holds it (the server drops the frame before handling), else a copy.
fn owned(records: bytes::Bytes) -> bytes::BytesMut {
    records
        .try_into_mut()
        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]))
}

/// KIP-467: the records that made the batch fail, each with its index in the batch and why,
/// and Kafka's summary message, so a client fails those records with their reason.
fn record_errors(
    resp: &mut PartitionProduceResponse,
    e: &crate::storage::StorageError,
    topic: &str,
    partition: i32,
) {
    use crate::record::BatchError;
    use crate::storage::StorageError;
    // (index in the batch, why), with Kafka's messages.
    let errors: Vec<(i32, String)> = match e {
        StorageError::InvalidBatch(BatchError::MissingKeys(indexes)) => {
            let why = format!(
                "Compacted topic cannot accept message without key in topic partition \
                 {topic}-{partition}"
            );
            indexes.iter().map(|i| (*i, why.clone())).collect()
        }
        StorageError::InvalidBatch(BatchError::Timestamps {
            records,
            earliest,
            latest,
        }) => records
            .iter()
            .map(|(i, ts)| {
                let why = format!(
                    "Timestamp {ts} of message with offset {i} is out of range. The timestamp \
                     should be within [{earliest}, {latest}]"
                );
                (*i, why)
            })
            .collect(),
        _ => return,
    };
    resp.record_errors = errors
        .iter()
        .map(|(i, why)| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(*i)
                .with_batch_index_error_message(Some(StrBytes::from_string(why.clone())))
        })
        .collect();
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|(i, why)| format!("RecordError(batchIndex={i}, message='{why}')"))
        .collect();
    resp.error_message = Some(StrBytes::from_string(format!(
        "One or more records have been rejected due to {} record errors in total, and only \
         showing the first three errors at most: [{}]",
        errors.len(),
        shown.join(", ")
    )));
}

impl Broker {
    /// KIP-890: asks the transaction coordinator whether `h`'s producer has an ongoing
    /// transaction holding `tp` (called for a partition's first batch of a transaction).
    fn verify_transaction(
        &self,
        txn_id: Option<&str>,
        h: &BatchHeader,
        tp: &(String, i32),
    ) -> Result<(), ProducerStateError> {
        let refuse = |error: ResponseError, reason: String| ProducerStateError::Unverified {
            producer_id: h.producer_id,
            error,
            reason,
        };
        // Kafka refuses transactional records without a transactional id in the request.
        let Some(txn_id) = txn_id else {
            return Err(refuse(
                ResponseError::TransactionalIdAuthorizationFailed,
                "transactional records need the request's transactional id".into(),
            ));
        };
        if !self.txn.coordinates(txn_id) {
            // In a cluster the coordinator may be another broker: Kafka asks it with an
            // inter-broker AddPartitionsToTxn (v4, verify only); rill does not yet, and
            // trusts the batch as Kafka does with `transaction.partition.verification.enable`
            // off. The markers still end exactly the partitions the coordinator added.
            return Ok(());
        }
        self.txn
            .verify(txn_id, (h.producer_id, h.producer_epoch), tp)
            .map_err(|e| {
                refuse(
                    e,
                    format!(
                        "{}-{} is not in an ongoing transaction of {txn_id} at epoch {} ({e:?})",
                        tp.0, tp.1, h.producer_epoch
                    ),
                )
            })
    }

    /// InitProducerId for an idempotent producer (no transactional id): always a fresh
    /// producer id at epoch 0, as Kafka's coordinator answers it. A producer naming its
    /// current id and epoch (KIP-360, after an error) gets a fresh id too: without a
    /// transactional id nothing records which epoch is current, so the request cannot be
    /// checked, and a fresh id fences nothing and conflicts with nothing. A request naming
    /// only one of the two is invalid.
    pub(crate) async fn init_producer_id(
        &self,
        req: InitProducerIdRequest,
    ) -> Result<InitProducerIdResponse, BrokerError> {
        let refused = |e: ResponseError| {
            Ok(InitProducerIdResponse::default()
                .with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1))
        };
        if let Err(e) = super::txn::expected_producer(&req) {
            return refused(e);
        }
        match self.new_producer_id().await? {
            Some(id) => Ok(InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0)),
            None => refused(ResponseError::CoordinatorLoadInProgress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owned;

    /// The server drops a request's frame before handling it, and the produce path drops
    /// the request's strings: the records are then rewritten where they arrived.
    #[test]
    fn records_are_taken_without_a_copy_once_nothing_else_holds_the_frame() {
        let mut buf = bytes::BytesMut::with_capacity(100);
        buf.extend_from_slice(&[7; 100]);
        let frame = buf.freeze();
        let records = frame.slice(10..90);
        let name = frame.slice(0..5);
        drop(frame);
        let at = records.as_ptr();
        // Still shared with the name: a copy.
        assert_ne!(owned(records.clone()).as_ptr(), at);
        drop(name);
        let mine = owned(records);
        assert_eq!((mine.as_ptr(), mine.len()), (at, 80));
    }
}
