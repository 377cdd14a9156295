//! `Consumer`: reads records from assigned partitions with Kafka's semantics — positions that
//! start at the committed offset or `auto.offset.reset`, fetches that long-poll with
//! `fetch.min.bytes` / `fetch.max.wait.ms`, `max.poll.records`, seeks, and offsets committed
//! to a group (`group.id`).
//!
//! Today the assignment is manual ([`Consumer::assign`]); subscription with group membership
//! and rebalancing (JoinGroup / SyncGroup / Heartbeat, range and cooperative-sticky assignors)
//! comes next on the same broker APIs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    FetchRequest, GroupId, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::transport::Transport;
use super::{check, ClientError};
use crate::storage::batch::BatchIter;
use crate::storage::decode_batch;
use crate::types::TopicPartition;

/// Where a partition without a committed offset starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail instead.
    None,
}

/// Consumer settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `group.id`: where offsets are committed; `None` for a consumer that never commits.
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait_ms: i32,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `max.poll.records`.
    pub max_poll_records: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            max_poll_records: 500,
        }
    }
}

/// A record as the consumer hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A consumer of manually assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    transport: Arc<dyn Transport>,
    config: ConsumerConfig,
    /// Assigned partitions and their positions: the offset of the next record `poll` returns
    /// (`None` until initialized). This is what `commit_sync` commits.
    positions: BTreeMap<TopicPartition, Option<i64>>,
    /// Fetched records not yet returned by `poll`.
    buffered: VecDeque<ConsumerRecord>,
    /// Where the last fetch of each partition ended (past control batches and compaction holes),
    /// for the position once its buffered records are all returned.
    fetched_to: BTreeMap<TopicPartition, i64>,
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Consumer {
    pub fn new(transport: Arc<dyn Transport>, config: ConsumerConfig) -> Self {
        Consumer {
            transport,
            config,
            positions: BTreeMap::new(),
            buffered: VecDeque::new(),
            fetched_to: BTreeMap::new(),
        }
    }

    async fn call(&self, req: RequestKind) -> Result<ResponseKind, ClientError> {
        self.transport
            .send(req)
            .await?
            .ok_or(ClientError::NoResponse)
    }

    /// Reads exactly these partitions from now on (positions of partitions kept are kept).
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let wanted: Vec<TopicPartition> = partitions.into_iter().collect();
        self.positions.retain(|tp, _| wanted.contains(tp));
        for tp in wanted {
            self.positions.entry(tp).or_insert(None);
        }
        self.buffered.retain(|r| {
            self.positions
                .contains_key(&TopicPartition::new(r.topic.clone(), r.partition))
        });
        self.fetched_to
            .retain(|tp, _| self.positions.contains_key(tp));
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// Moves a partition's position; the next poll reads from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClientError> {
        let pos = self.positions.get_mut(tp).ok_or(ClientError::Kafka {
            error: ResponseError::UnknownTopicOrPartition,
            message: Some(format!("{tp} is not assigned")),
        })?;
        *pos = Some(offset);
        self.buffered
            .retain(|r| !(r.topic == tp.topic && r.partition == tp.partition.0));
        self.fetched_to.remove(tp);
        Ok(())
    }

    /// The offset of the next record `poll` returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied().flatten()
    }

    /// The offsets committed for these partitions in `group.id` (`None` where none).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
        let group = self.config.group_id.clone().ok_or(ClientError::Kafka {
            error: ResponseError::InvalidGroupId,
            message: Some("no group.id".into()),
        })?;
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            by_topic
                .entry(tp.topic.clone())
                .or_default()
                .push(tp.partition.0);
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(&group)))
            .with_topics(Some(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(text(&t)))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ));
        match self.call(RequestKind::OffsetFetch(req)).await? {
            ResponseKind::OffsetFetch(r) => {
                check(r.error_code, None)?;
                let mut out = BTreeMap::new();
                for t in r.topics {
                    for p in t.partitions {
                        check(p.error_code, None)?;
                        let o = (p.committed_offset >= 0).then_some(p.committed_offset);
                        out.insert(
                            TopicPartition::new(t.name.0.to_string(), p.partition_index),
                            o,
                        );
                    }
                }
                Ok(out)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// ListOffsets with one special timestamp (-1 latest, -2 earliest) or a real one.
    async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<i64, ClientError> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(text(&tp.topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_timestamp(timestamp)])]);
        match self.call(RequestKind::ListOffsets(req)).await? {
            ResponseKind::ListOffsets(r) => {
                let p = r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .ok_or(ClientError::NoResponse)?;
                check(p.error_code, None)?;
                Ok(p.offset)
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }

    /// Seeks `tp` to the first record with a timestamp at or after `timestamp_ms` (or to the
    /// end if there is none), Kafka's `offsetsForTimes` followed by `seek`.
    pub async fn seek_to_timestamp(
        &mut self,
        tp: &TopicPartition,
        timestamp_ms: i64,
    ) -> Result<(), ClientError> {
        let mut offset = self.list_offset(tp, timestamp_ms).await?;
        if offset < 0 {
            offset = self.list_offset(tp, -1).await?;
        }
        self.seek(tp, offset)
    }

    /// Gives every assigned partition a position: its committed offset, else the reset policy.
    async fn init_positions(&mut self) -> Result<(), ClientError> {
        let missing: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = if self.config.group_id.is_some() {
            self.committed(&missing).await?
        } else {
            BTreeMap::new()
        };
        for tp in missing {
            let pos = match committed.get(&tp).copied().flatten() {
                Some(o) => o,
                None => self.reset_offset(&tp).await?,
            };
            self.positions.insert(tp, Some(pos));
        }
        Ok(())
    }

    async fn reset_offset(&self, tp: &TopicPartition) -> Result<i64, ClientError> {
        match self.config.auto_offset_reset {
            OffsetReset::Earliest => self.list_offset(tp, -2).await,
            OffsetReset::Latest => self.list_offset(tp, -1).await,
            OffsetReset::None => Err(ClientError::Kafka {
                error: ResponseError::OffsetOutOfRange,
                message: Some(format!(
                    "no committed offset for {tp} and auto.offset.reset=none"
                )),
            }),
        }
    }

    /// Returns up to `max.poll.records` records from the assigned partitions, waiting at most
    /// `fetch.max.wait.ms` for data to arrive.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        self.init_positions().await?;
        if self.buffered.is_empty() && !self.positions.is_empty() {
            self.fetch().await?;
        }
        let n = self.buffered.len().min(self.config.max_poll_records);
        let out: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
        for r in &out {
            let tp = TopicPartition::new(r.topic.clone(), r.partition);
            if let Some(pos) = self.positions.get_mut(&tp) {
                *pos = Some(r.offset + 1);
            }
        }
        // Partitions with nothing left buffered move to where their fetch ended.
        let done: Vec<(TopicPartition, i64)> = self
            .fetched_to
            .iter()
            .filter(|(tp, _)| {
                !self
                    .buffered
                    .iter()
                    .any(|r| r.topic == tp.topic && r.partition == tp.partition.0)
            })
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        for (tp, end) in done {
            self.fetched_to.remove(&tp);
            if let Some(pos) = self.positions.get_mut(&tp) {
                *pos = Some(pos.map_or(end, |p| p.max(end)));
            }
        }
        Ok(out)
    }

    async fn fetch(&mut self) -> Result<(), ClientError> {
        let mut by_topic: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, pos) in &self.positions {
            by_topic.entry(tp.topic.clone()).or_default().push(
                FetchPartition::default()
                    .with_partition(tp.partition.0)
                    .with_fetch_offset(pos.unwrap_or(0))
                    .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
            );
        }
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(self.config.fetch_max_wait_ms)
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(TopicName(text(&t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let ResponseKind::Fetch(resp) = self.call(RequestKind::Fetch(req)).await? else {
            return Err(ClientError::NoResponse);
        };
        check(resp.error_code, None)?;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let tp = TopicPartition::new(topic.clone(), p.partition_index);
                let Some(Some(pos)) = self.positions.get(&tp).copied() else {
                    continue;
                };
                if p.error_code == ResponseError::OffsetOutOfRange.code() {
                    // Out of range (deleted by retention, say): apply the reset policy.
                    let reset = self.reset_offset(&tp).await?;
                    self.positions.insert(tp, Some(reset));
                    continue;
                }
                check(p.error_code, None)?;
                let records = p.records.unwrap_or_default();
                let mut next = pos;
                for item in BatchIter::new(&records) {
                    let (h, bytes, _) =
                        item.map_err(|e| ClientError::Unexpected(format!("corrupt batch: {e}")))?;
                    // Control batches (transaction markers) carry no user records.
                    if !h.is_control() {
                        let (_, recs) = decode_batch(bytes)
                            .map_err(|e| ClientError::Unexpected(format!("corrupt batch: {e}")))?;
                        let from = next;
                        for r in recs.into_iter().filter(|r| r.offset >= from) {
                            next = r.offset + 1;
                            self.buffered.push_back(ConsumerRecord {
                                topic: topic.clone(),
                                partition: tp.partition.0,
                                offset: r.offset,
                                timestamp_ms: r.timestamp_ms,
                                key: r.key,
                                value: r.value,
                                headers: r.headers,
                            });
                        }
                    }
                    next = next.max(h.next_offset());
                }
                self.fetched_to.insert(tp, next);
            }
        }
        Ok(())
    }

    /// Commits the current positions of every assigned partition to `group.id` (as a consumer
    /// outside group membership: generation -1).
    pub async fn commit_sync(&self) -> Result<(), ClientError> {
        let offsets: Vec<(TopicPartition, i64)> = self
            .positions
            .iter()
            .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits the given offsets (the offset of the next record to read) to `group.id`.
    pub async fn commit_offsets(
        &self,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ClientError> {
        let group = self.config.group_id.clone().ok_or(ClientError::Kafka {
            error: ResponseError::InvalidGroupId,
            message: Some("no group.id".into()),
        })?;
        let mut by_topic: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, o) in offsets {
            by_topic.entry(tp.topic.clone()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_committed_offset(*o)
                    .with_committed_metadata(Some(text(""))),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(text(&group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(text(&t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        match self.call(RequestKind::OffsetCommit(req)).await? {
            ResponseKind::OffsetCommit(r) => {
                for t in r.topics {
                    for p in t.partitions {
                        check(p.error_code, None)?;
                    }
                }
                Ok(())
            }
            other => Err(ClientError::unexpected(&other)),
        }
    }
}
