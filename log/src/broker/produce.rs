//! Produce: append each partition's record batches, with Kafka's acks semantics (0: no
//! response, 1 and -1: after the local append; on one broker the ISR is this broker, so -1 only
//! adds the `min.insync.replicas` check).

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{storage_error_code, Broker};

/// In-sync replicas of every partition: this broker alone.
const ISR_SIZE: i32 = 1;

impl Broker {
    pub(crate) fn produce(&self, req: ProduceRequest) -> Option<ProduceResponse> {
        let acks = req.acks;
        let mut appended = false;
        let mut responses = Vec::with_capacity(req.topic_data.len());
        for topic in req.topic_data {
            let name = topic.name.0.to_string();
            let known = self.topic_meta(&name);
            let mut partitions = Vec::with_capacity(topic.partition_data.len());
            for p in topic.partition_data {
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
                    _ if name.starts_with("__") => fail(
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
                        if acks == -1 && config.min_insync_replicas > ISR_SIZE {
                            fail(
                                &mut resp,
                                ResponseError::NotEnoughReplicas,
                                format!(
                                    "min.insync.replicas={} but the ISR has {ISR_SIZE} replica",
                                    config.min_insync_replicas
                                ),
                            );
                        } else {
                            // The leader rewrites offsets in place: the request's bytes are ours.
                            let mut bytes = records.to_vec();
                            match log.append(&mut bytes) {
                                Ok(info) => {
                                    appended = true;
                                    resp.base_offset = info.base_offset.0;
                                    resp.log_append_time_ms = info.log_append_time_ms;
                                    resp.log_start_offset = log.log_start_offset().0;
                                }
                                Err(e) => {
                                    tracing::debug!(tp = %log.topic_partition(), error = %e, "produce refused");
                                    fail(&mut resp, storage_error_code(&e), e.to_string())
                                }
                            }
                        }
                    }
                }
                partitions.push(resp);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic.name)
                    .with_topic_id(topic.topic_id)
                    .with_partition_responses(partitions),
            );
        }
        if appended {
            self.appended.notify_waiters();
        }
        (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
    }
}
