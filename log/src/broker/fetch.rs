//! Fetch (with long-poll: wait up to `max_wait_ms` until `min_bytes` are available; whole
//! batches up to `fetch.max.bytes`; `read_committed` reads stop at the last stable offset and
//! carry the aborted transactions they span) and ListOffsets (earliest, latest, by timestamp,
//! max timestamp).

use std::time::Duration;

use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProducerId, TopicName,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use std::sync::Arc;

use tokio::sync::Notify;

use super::cluster::serve::ClusterFetch;
use super::{storage_error_code, Broker, BrokerError, TopicMeta};
use crate::types::{Offset, TopicPartition};

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// Fetch's `isolation_level` for read_committed.
const READ_COMMITTED: i8 = 1;

impl Broker {
    fn resolve(&self, name: &TopicName, id: Uuid) -> Option<TopicMeta> {
        let topics = self.topics_read();
        if name.0.is_empty() && !id.is_nil() {
            topics.by_id(id).cloned()
        } else {
            topics.get(name.0.as_str()).cloned()
        }
    }

    /// Reads every requested partition once; returns the response and the bytes it carries.
    fn fetch_once(&self, req: &FetchRequest) -> (FetchResponse, usize) {
        // The response holds at most `fetch.max.bytes`, whatever the client asks for.
        let mut budget = (req.max_bytes.max(0) as usize).min(self.config.fetch_max_bytes);
        let mut total = 0usize;
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let meta = self.resolve(&t.topic, t.topic_id);
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let mut data = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1);
                let log = self.log_of(meta.as_ref(), p.partition);
                let Some(log) = log else {
                    data.error_code = if meta.is_none() && t.topic.0.is_empty() {
                        ResponseError::UnknownTopicId.code()
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                    partitions.push(data);
                    continue;
                };
                // In a cluster: only the leader serves, at the epoch the fetcher expects;
                // a follower's fetch may learn that its log diverged instead of records.
                let replica = match self.check_cluster_fetch(&log, p, req.replica_id.0) {
                    Ok(ClusterFetch::Serve { replica }) => replica,
                    Ok(ClusterFetch::Diverged(div)) => {
                        data.diverging_epoch = div;
                        data.high_watermark = log.high_watermark().0;
                        data.last_stable_offset = log.last_stable_offset().0;
                        data.log_start_offset = log.log_start_offset().0;
                        data.records = Some(bytes::Bytes::new());
                        partitions.push(data);
                        continue;
                    }
                    Err(code) => {
                        data.error_code = code.code();
                        data.high_watermark = log.high_watermark().0;
                        data.log_start_offset = log.log_start_offset().0;
                        partitions.push(data);
                        continue;
                    }
                };
                let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
                let first_nonempty = total == 0;
                let committed = req.isolation_level == READ_COMMITTED;
                // The LSO first: it never passes the high watermark read after it.
                let lso = log.last_stable_offset();
                let hw = log.high_watermark();
                let read = if limit == 0 && !first_nonempty {
                    log.read_upto(Offset(p.fetch_offset), 0, Some(Offset(p.fetch_offset)))
                } else if replica.is_some() {
                    // A follower copies everything the leader has.
                    log.read(Offset(p.fetch_offset), limit.max(1))
                } else {
                    // Consumers read up to the high watermark; read_committed ones up to the
                    // last stable offset.
                    let upto = if committed { lso } else { hw };
                    log.read_upto(Offset(p.fetch_offset), limit.max(1), Some(upto))
                };
                if let Some(node) = replica {
                    self.follower_fetched(&log, node, p);
                }
                match read {
                    Ok(r) => {
                        data.high_watermark = hw.0;
                        data.last_stable_offset = lso.0;
                        if committed && !r.records.is_empty() {
                            let end = crate::record::batch::BatchIter::new(&r.records)
                                .filter_map(Result::ok)
                                .map(|(h, _, _)| h.next_offset())
                                .last()
                                .unwrap_or(p.fetch_offset);
                            data.aborted_transactions = Some(
                                log.aborted_transactions(Offset(p.fetch_offset), Offset(end))
                                    .into_iter()
                                    .map(|a| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(a.producer_id))
                                            .with_first_offset(a.first_offset)
                                    })
                                    .collect(),
                            );
                        }
                        data.log_start_offset = r.log_start_offset.0;
                        // Only the first partition with data may exceed the budget (so a
                        // consumer always progresses); later ones wait for another fetch.
                        let records = if r.records.len() > limit && !first_nonempty {
                            bytes::Bytes::new()
                        } else {
                            r.records
                        };
                        total += records.len();
                        budget = budget.saturating_sub(records.len());
                        data.records = Some(records);
                    }
                    Err(e) => {
                        data.error_code = storage_error_code(&e).code();
                        data.last_stable_offset = log.last_stable_offset().0;
                        data.high_watermark = log.high_watermark().0;
                        data.log_start_offset = log.log_start_offset().0;
                    }
                }
                if req.isolation_level == READ_COMMITTED && data.aborted_transactions.is_none() {
                    data.aborted_transactions = Some(Vec::new());
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(partitions),
            );
        }
        // Fetch sessions (KIP-227) are declined: session id 0, every request is full.
        (
            FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics),
            total,
        )
    }

    /// Answers as soon as `min_bytes` are available, or after `max_wait_ms` with what there is.
    pub(crate) async fn fetch(&self, req: FetchRequest) -> FetchResponse {
        let read = |r: &FetchRequest| {
            std::future::ready(Ok::<_, std::convert::Infallible>(self.fetch_once(r)))
        };
        match self.long_poll(&req, read).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// [`fetch`](Self::fetch) with each read that may go to the disk (below an active
    /// segment) kept off the async workers' other tasks ([`super::off_the_workers`]): a cold
    /// read holds up this request only. Tail reads, from the page cache, run in place.
    pub(crate) async fn fetch_off_thread(
        self: &Arc<Self>,
        req: FetchRequest,
    ) -> Result<FetchResponse, BrokerError> {
        let req = Arc::new(req);
        let read = |r: &FetchRequest| {
            let cold = self.fetch_may_read_disk(r);
            let (broker, req) = (Arc::clone(self), Arc::clone(&req));
            async move {
                if cold {
                    super::off_the_workers(move || broker.fetch_once(&req)).await
                } else {
                    Ok(broker.fetch_once(&req))
                }
            }
        };
        self.long_poll(&req, read).await
    }

    /// Reads with `read` until `min_bytes` are there, an error is, or `max_wait_ms` passed,
    /// waiting in between for an append to one of the request's partitions.
    async fn long_poll<E, F, Fut>(&self, req: &FetchRequest, read: F) -> Result<FetchResponse, E>
    where
        F: Fn(&FetchRequest) -> Fut,
        Fut: std::future::Future<Output = Result<(FetchResponse, usize), E>>,
    {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let min_bytes = req.min_bytes.max(0) as usize;
        let waiter = Arc::new(Notify::new());
        let partitions = self.fetch_partitions(req);
        loop {
            // Watch before reading: an append in between leaves a permit, so none is missed.
            if !partitions.is_empty() {
                self.waiting.watch(&partitions, &waiter);
            }
            let (resp, bytes) = read(req).await?;
            let any_error = resp
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code != 0);
            if bytes >= min_bytes.max(1) || any_error || tokio::time::Instant::now() >= deadline {
                return Ok(resp);
            }
            if tokio::time::timeout_at(deadline, waiter.notified())
                .await
                .is_err()
            {
                return Ok(read(req).await?.0);
            }
        }
    }

    /// Whether a fetch reads below some partition's active segment (maybe from the disk).
    fn fetch_may_read_disk(&self, req: &FetchRequest) -> bool {
        req.topics.iter().any(|t| {
            let meta = self.resolve(&t.topic, t.topic_id);
            t.partitions.iter().any(|p| {
                self.log_of(meta.as_ref(), p.partition)
                    .is_some_and(|log| !log.reads_tail(Offset(p.fetch_offset)))
            })
        })
    }

    /// The partitions a fetch reads, by name (topics given by id resolved); unknown ones are
    /// left out (the fetch answers them with an error at once).
    fn fetch_partitions(&self, req: &FetchRequest) -> Vec<TopicPartition> {
        req.topics
            .iter()
            .filter_map(|t| Some((self.resolve(&t.topic, t.topic_id)?, t)))
            .flat_map(|(meta, t)| {
                t.partitions
                    .iter()
                    .map(move |p| TopicPartition::new(meta.name.clone(), p.partition))
            })
            .collect()
    }

    pub(crate) fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let isolation = req.isolation_level;
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let meta = self.resolve(&t.name, Uuid::nil());
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut resp = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1);
                        let log = self.log_of(meta.as_ref(), p.partition_index);
                        let Some(log) = log else {
                            resp.error_code = ResponseError::UnknownTopicOrPartition.code();
                            return resp;
                        };
                        resp.leader_epoch = meta.as_ref().map_or(-1, |m| m.leader_epoch);
                        match self
                            .cluster_leader_epoch(log.topic_partition(), p.current_leader_epoch)
                        {
                            Ok(Some(epoch)) => resp.leader_epoch = epoch,
                            Ok(None) => {}
                            Err(code) => {
                                resp.error_code = code.code();
                                return resp;
                            }
                        }
                        match p.timestamp {
                            // read_committed consumers see the end of the stable part.
                            LATEST if isolation == READ_COMMITTED => {
                                resp.offset = log.last_stable_offset().0
                            }
                            LATEST => resp.offset = log.high_watermark().0,
                            EARLIEST => resp.offset = log.log_start_offset().0,
                            ts if ts >= 0 || ts == MAX_TIMESTAMP => {
                                let found = if ts == MAX_TIMESTAMP {
                                    log.offset_of_max_timestamp()
                                } else {
                                    log.offset_for_timestamp(ts)
                                };
                                // Only what a consumer could fetch is found (Kafka's
                                // `lastFetchableOffset`).
                                let fetchable = if isolation == READ_COMMITTED {
                                    log.last_stable_offset()
                                } else {
                                    log.high_watermark()
                                };
                                match found {
                                    Ok(Some((offset, found_ts))) if offset < fetchable => {
                                        resp.offset = offset.0;
                                        resp.timestamp = found_ts;
                                    }
                                    // No (fetchable) record that recent: offset -1.
                                    Ok(_) => {}
                                    Err(e) => resp.error_code = storage_error_code(&e).code(),
                                }
                            }
                            _ => resp.error_code = ResponseError::InvalidRequest.code(),
                        }
                        resp
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }
}
