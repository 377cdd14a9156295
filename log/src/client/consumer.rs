//! `Consumer`: reads records from assigned partitions with Kafka's semantics — positions that
//! start at the committed offset or `auto.offset.reset`, fetches that long-poll with
//! `fetch.min.bytes` / `fetch.max.wait.ms`, `max.poll.records`, seeks, and offsets committed
//! to a group (`group.id`).
//!
//! Partitions are either assigned by hand ([`Consumer::assign`]) or, after
//! [`Consumer::subscribe`], by the group: the consumer joins `group.id` (JoinGroup with the
//! MEMBER_ID_REQUIRED round, SyncGroup), heartbeats from a background task, rejoins when the
//! coordinator rebalances, and as leader runs the group's assignor (`range`, `roundrobin`, or
//! `cooperative-sticky` where partitions stay put and move in two steps). A
//! [`RebalanceListener`] hears of partitions revoked, assigned and lost; a consumer that does
//! not poll within `max.poll.interval.ms` leaves its group and loses its partitions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

use super::assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor, Subscription};
use super::transport::Transport;
use super::{check, ClientError};
use crate::record::batch::BatchIter;
use crate::record::control::control_marker;
use crate::record::control::Marker;
use crate::record::decode_batch_in;
use crate::types::TopicPartition;

/// Where a partition without a committed offset starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail instead.
    None,
}

/// Which records a consumer reads (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Everything written, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Only up to the last stable offset, skipping aborted transactions.
    ReadCommitted,
}

/// What a transactional producer sends with `send_offsets_to_transaction` so the commit is
/// checked against this consumer's generation (KIP-447).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
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
    /// `group.instance.id`: a static member (KIP-345).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `default.api.timeout.ms`: how long an offset lookup (seek to the beginning or end, a
    /// timestamp's offset) retries failures that may pass, a moved leader say.
    pub default_api_timeout_ms: u64,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`, sent as the rebalance timeout.
    pub max_poll_interval_ms: i32,
    /// `partition.assignment.strategy`, in order of preference.
    pub assignors: Vec<Arc<dyn Assignor>>,
    /// `enable.auto.commit`: commit positions every `auto.commit.interval.ms` from `poll`,
    /// before partitions are revoked, and on `close`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
    /// `isolation.level`: read_uncommitted (default) or read_committed.
    pub isolation_level: IsolationLevel,
}

/// A future a [`RebalanceListener`] returns.
pub type ListenerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Hears of a subscribed consumer's partitions changing hands (Kafka's
/// `ConsumerRebalanceListener`). Each callback runs inside `poll` and gets the consumer, so it
/// can commit (`commit_sync`) or seek.
///
/// - `on_partitions_revoked`: partitions this consumer gives up, while it still holds them
///   (their positions are still there to commit). Eager assignors revoke everything before
///   each rejoin; cooperative ones only what moves. Not called with an empty set.
/// - `on_partitions_assigned`: after every completed rebalance, with the newly added
///   partitions (possibly none); positions start at the committed offset on the next fetch.
/// - `on_partitions_lost`: the membership is gone (session expired, fenced, or
///   `max.poll.interval.ms` passed) and the partitions may already belong to someone else, so
///   committing is pointless. Defaults to `on_partitions_revoked`, as in Kafka.
pub trait RebalanceListener: Send + Sync {
    fn on_partitions_revoked<'a>(
        &'a self,
        _consumer: &'a mut Consumer,
        _partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async {})
    }

    fn on_partitions_assigned<'a>(
        &'a self,
        _consumer: &'a mut Consumer,
        _partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async {})
    }

    fn on_partitions_lost<'a>(
        &'a self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        self.on_partitions_revoked(consumer, partitions)
    }
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
            group_instance_id: None,
            session_timeout_ms: 45_000,
            default_api_timeout_ms: 60_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            assignors: vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)],
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }
}

/// A record as the consumer hands it out. The key and value of an uncompressed batch are
/// slices of the fetched buffer (no copy): a record kept alive keeps that buffer (up to
/// `max_partition_fetch_bytes`) alive; copy them to keep a few records for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic's name, one copy shared by the records of a fetch (no allocation per
    /// record).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Fetched records not yet returned, in chunks of at most `max_poll_records` as they were
/// fetched: a poll hands the next chunk over whole, so no record is moved again on its way
/// out.
#[derive(Debug, Default)]
struct Buffered {
    chunks: VecDeque<Vec<ConsumerRecord>>,
    len: usize,
}

impl Buffered {
    /// Adds `record` after the others, in chunks of `chunk` records.
    fn push(&mut self, record: ConsumerRecord, chunk: usize) {
        let chunk = chunk.max(1);
        match self.chunks.back_mut() {
            Some(c) if c.len() < chunk => c.push(record),
            _ => {
                let mut c = Vec::with_capacity(chunk.min(4096));
                c.push(record);
                self.chunks.push_back(c);
            }
        }
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first records, at most `n` (those of the first chunk).
    fn take(&mut self, n: usize) -> Vec<ConsumerRecord> {
        let out = match self.chunks.front_mut() {
            None => Vec::new(),
            Some(c) if c.len() > n => c.drain(..n).collect(),
            Some(_) => self.chunks.pop_front().unwrap_or_default(),
        };
        self.len -= out.len();
        out
    }

    fn iter(&self) -> impl Iterator<Item = &ConsumerRecord> {
        self.chunks.iter().flatten()
    }

    fn retain(&mut self, mut keep: impl FnMut(&ConsumerRecord) -> bool) {
        for c in &mut self.chunks {
            c.retain(&mut keep);
        }
        self.chunks.retain(|c| !c.is_empty());
        self.len = self.chunks.iter().map(Vec::len).sum();
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

/// A Kafka consumer: of manually assigned partitions, or of a group's share of subscribed
/// topics.
pub struct Consumer {
    transport: Arc<dyn Transport>,
    config: ConsumerConfig,
    /// Assigned partitions and their positions: the offset of the next record `poll` returns
    /// (`None` until initialized). This is what `commit_sync` commits.
    positions: BTreeMap<TopicPartition, Option<i64>>,
    /// Fetched records not yet returned by `poll`.
    buffered: Buffered,
    /// Where the last fetch of each partition ended (past control batches and compaction holes),
    /// for the position once its buffered records are all returned.
    fetched_to: BTreeMap<TopicPartition, i64>,
    /// Per partition, the end the last fetch reported: the last stable offset under
    /// read_committed, else the high watermark.
    end_offsets: BTreeMap<TopicPartition, i64>,
    /// Topics of `subscribe`; empty for manual assignment.
    subscription: Vec<String>,
    membership: Option<Membership>,
    /// (revoked, assigned) of every rebalance this consumer went through, oldest first.
    rebalances: Vec<(Vec<TopicPartition>, Vec<TopicPartition>)>,
    last_auto_commit: tokio::time::Instant,
    /// Partitions `poll` neither fetches nor returns until resumed.
    paused: BTreeSet<TopicPartition>,
    listener: Option<Arc<dyn RebalanceListener>>,
    /// Milliseconds since `created` at the last `poll`, for `max.poll.interval.ms`.
    last_poll_ms: Arc<AtomicU64>,
    created: tokio::time::Instant,
    /// The next fetch, sent while the records of the last one are handed out (as Kafka's
    /// consumer pre-fetches): used if the positions it fetched from are still the positions
    /// when it is needed, dropped otherwise (a seek, a pause, a new assignment).
    prefetch: Option<Prefetch>,
}

/// The record bytes a fetch must bring for the next one to be sent ahead of need.
const PREFETCH_AFTER_BYTES: usize = 64 * 1024;

/// A fetch sent ahead of need.
struct Prefetch {
    /// The offset it fetches from, per partition.
    from: BTreeMap<TopicPartition, i64>,
    answer: tokio::task::JoinHandle<Result<Option<ResponseKind>, ClientError>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.answer.abort();
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.config.group_id)
            .field("subscription", &self.subscription)
            .field("positions", &self.positions)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

/// This consumer's place in its group.
#[derive(Debug)]
struct Membership {
    member_id: String,
    generation: i32,
    protocol: String,
    /// Set by the heartbeat task when the coordinator asks for a rejoin.
    rejoin: Arc<AtomicBool>,
    /// Set by the heartbeat task when the membership is gone: the partitions are lost.
    lost: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

const PROTOCOL_TYPE: &str = "consumer";
/// How long `committed` keeps asking while offsets are unstable (an open transaction holds
/// them): a transaction ends by commit, abort or its timeout well within it.
const UNSTABLE_OFFSETS_WAIT: Duration = Duration::from_secs(60);
/// ConsumerProtocolSubscription v1 carries owned partitions (needed by cooperative rebalancing).
const SUBSCRIPTION_VERSION: i16 = 1;
const ASSIGNMENT_VERSION: i16 = 0;

fn encode_versioned<T: kafka_protocol::protocol::Encodable>(m: &T, version: i16) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, version);
    m.encode(&mut buf, version)
        .expect("consumer protocol messages encode");
    buf.freeze()
}

/// Decodes `<int16 version><message>` after checking its layout (see [`Walk`]), so counts
/// in other members' bytes cannot make the decoder reserve more memory than the bytes hold.
fn decode_versioned<T: kafka_protocol::protocol::Decodable>(
    mut b: Bytes,
    assignment: bool,
) -> Option<T> {
    if b.len() < 2 {
        return None;
    }
    let version = bytes::Buf::get_i16(&mut b).clamp(0, 3);
    let mut w = Walk { b: &b, pos: 0 };
    let ok = if assignment {
        w.assignment()
    } else {
        w.subscription(version)
    };
    if !ok? {
        return None;
    }
    T::decode(&mut b, version).ok()
}

/// A bounds-checked walk over the consumer protocol's non-flexible layout.
struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Walk<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|s| i16::from_be_bytes([s[0], s[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self, nullable: bool) -> Option<()> {
        match self.i16()? {
            -1 if nullable => Some(()),
            n if n < 0 => None,
            n => self.take(n as usize).map(|_| ()),
        }
    }
    fn bytes(&mut self) -> Option<()> {
        match self.i32()? {
            -1 => Some(()),
            n if n < 0 => None,
            n => self.take(n as usize).map(|_| ()),
        }
    }
    /// An array count: each element needs at least `min` bytes.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.i32()?;
        let n = usize::try_from(n).ok()?;
        (n.saturating_mul(min) <= self.b.len() - self.pos).then_some(n)
    }
    fn topic_partitions(&mut self) -> Option<()> {
        for _ in 0..self.count(6)? {
            self.string(false)?;
            let n = self.count(4)?;
            self.take(n * 4)?;
        }
        Some(())
    }
    fn subscription(&mut self, version: i16) -> Option<bool> {
        for _ in 0..self.count(2)? {
            self.string(false)?;
        }
        self.bytes()?;
        if version >= 1 {
            self.topic_partitions()?;
        }
        if version >= 2 {
            self.i32()?;
        }
        if version >= 3 {
            self.string(true)?;
        }
        Some(true)
    }
    fn assignment(&mut self) -> Option<bool> {
        self.topic_partitions()?;
        self.bytes()?;
        Some(true)
    }
}

/// The partitions in a consumer group member's assignment bytes (none if they do not parse).
pub(crate) fn decode_assignment(bytes: Bytes) -> Vec<TopicPartition> {
    let assignment: kafka_protocol::messages::ConsumerProtocolAssignment =
        decode_versioned(bytes, true).unwrap_or_default();
    assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| TopicPartition::new(t.topic.0.to_string(), *p))
        })
        .collect()
}

fn to_protocol_partitions(
    tps: &[TopicPartition],
) -> Vec<kafka_protocol::messages::consumer_protocol_subscription::TopicPartition> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        by_topic.entry(&tp.topic).or_default().push(tp.partition.0);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| {
            kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default()
                .with_topic(TopicName(text(t)))
                .with_partitions(ps)
        })
        .collect()
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
            buffered: Buffered::default(),
            fetched_to: BTreeMap::new(),
            end_offsets: BTreeMap::new(),
            prefetch: None,
            subscription: Vec::new(),
            membership: None,
            rebalances: Vec::new(),
            last_auto_commit: tokio::time::Instant::now(),
            paused: BTreeSet::new(),
            listener: None,
            last_poll_ms: Arc::new(AtomicU64::new(0)),
            created: tokio::time::Instant::now(),
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
                .contains_key(&TopicPartition::new(&*r.topic, r.partition))
        });
        self.fetched_to
            .retain(|tp, _| self.positions.contains_key(tp));
        self.end_offsets
            .retain(|tp, _| self.positions.contains_key(tp));
        self.paused.retain(|tp| self.positions.contains_key(tp));
    }

    /// Records of `tp` the broker has that this consumer has not handed out yet, as of the
    /// last fetch (`None`: not fetched yet, or no position). Kafka Streams uses this to know
    /// whether an empty partition is caught up or its records are on their way.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let pos = (*self.positions.get(tp)?)?;
        Some((self.end_offsets.get(tp)? - pos).max(0))
    }

    /// Stops fetching and returning records of these partitions (their positions stay) until
    /// [`Consumer::resume`]. Group membership is unaffected.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        for tp in partitions {
            self.assigned(tp)?;
        }
        for tp in partitions {
            self.paused.insert(tp.clone());
            // Records fetched but not yet returned are fetched again after `resume`.
            self.drop_buffered(tp);
        }
        Ok(())
    }

    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.paused.remove(tp);
        }
    }

    pub fn paused(&self) -> Vec<TopicPartition> {
        self.paused.iter().cloned().collect()
    }

    fn assigned(&self, tp: &TopicPartition) -> Result<(), ClientError> {
        if self.positions.contains_key(tp) {
            Ok(())
        } else {
            Err(ClientError::Kafka {
                error: ResponseError::UnknownTopicOrPartition,
                message: Some(format!("{tp} is not assigned")),
            })
        }
    }

    fn drop_buffered(&mut self, tp: &TopicPartition) {
        self.buffered
            .retain(|r| !(*r.topic == *tp.topic && r.partition == tp.partition.0));
        self.fetched_to.remove(tp);
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// Moves a partition's position; the next poll reads from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClientError> {
        self.assigned(tp)?;
        self.positions.insert(tp.clone(), Some(offset));
        self.drop_buffered(tp);
        Ok(())
    }

    /// Moves these partitions to their log start offset.
    pub async fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<(), ClientError> {
        for tp in tps {
            self.assigned(tp)?;
            let (offset, _) = self.list_offset(tp, -2).await?;
            self.seek(tp, offset)?;
        }
        Ok(())
    }

    /// Moves these partitions to their log end offset (the next record written).
    pub async fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<(), ClientError> {
        for tp in tps {
            self.assigned(tp)?;
            let (offset, _) = self.list_offset(tp, -1).await?;
            self.seek(tp, offset)?;
        }
        Ok(())
    }

    /// For each partition, the first record with a timestamp at or after the given one, as
    /// `(offset, timestamp)`; `None` where no record is that late (Kafka's `offsetsForTimes`).
    /// Any partition may be asked about, assigned or not.
    pub async fn offsets_for_times(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<BTreeMap<TopicPartition, Option<(i64, i64)>>, ClientError> {
        let mut out = BTreeMap::new();
        for (tp, ts) in query {
            if *ts < 0 {
                return Err(ClientError::Kafka {
                    error: ResponseError::InvalidRequest,
                    message: Some(format!("timestamp {ts} for {tp} is negative")),
                });
            }
            let (offset, timestamp) = self.list_offset(tp, *ts).await?;
            out.insert(tp.clone(), (offset >= 0).then_some((offset, timestamp)));
        }
        Ok(out)
    }

    /// The offset of the next record `poll` returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied().flatten()
    }

    /// The offsets committed for these partitions in `group.id` (`None` where none). Under
    /// read_committed, waits (up to a minute) for open transactions holding offsets of
    /// these partitions to complete.
    /// Retriable failures (the group's coordinator moving) are retried for up to
    /// `default.api.timeout.ms`.
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, ClientError> {
        let deadline =
            std::time::Instant::now() + Duration::from_millis(self.config.default_api_timeout_ms);
        loop {
            match self.committed_once(tps).await {
                Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn committed_once(
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
        // read_committed asks for stable offsets (KIP-447): while a transaction holding an
        // offset of this group is open, the broker answers UNSTABLE_OFFSET_COMMIT and we ask
        // again, rather than start from an offset that commit is about to move.
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(&group)))
            .with_require_stable(self.config.isolation_level == IsolationLevel::ReadCommitted)
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
        let unstable = ResponseError::UnstableOffsetCommit.code();
        let started = std::time::Instant::now();
        let response = loop {
            match self.call(RequestKind::OffsetFetch(req.clone())).await? {
                ResponseKind::OffsetFetch(r)
                    if started.elapsed() < UNSTABLE_OFFSETS_WAIT
                        && r.topics
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .any(|p| p.error_code == unstable) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other,
            }
        };
        match response {
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

    /// ListOffsets with one special timestamp (-1 latest, -2 earliest) or a real one:
    /// `(offset, timestamp)`, offset -1 where no record is that late.
    /// [`list_offset_once`](Self::list_offset_once), retrying retriable failures (a moved
    /// leader, a broker restarting) for up to `default.api.timeout.ms`, as Kafka's consumer
    /// does for its offset lookups.
    async fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<(i64, i64), ClientError> {
        let deadline =
            std::time::Instant::now() + Duration::from_millis(self.config.default_api_timeout_ms);
        loop {
            match self.list_offset_once(tp, timestamp).await {
                Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn list_offset_once(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<(i64, i64), ClientError> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_isolation_level(i8::from(
                self.config.isolation_level == IsolationLevel::ReadCommitted,
            ))
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
                Ok((p.offset, p.timestamp))
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
        let (mut offset, _) = self.list_offset(tp, timestamp_ms).await?;
        if offset < 0 {
            offset = self.list_offset(tp, -1).await?.0;
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
            OffsetReset::Earliest => Ok(self.list_offset(tp, -2).await?.0),
            OffsetReset::Latest => Ok(self.list_offset(tp, -1).await?.0),
            OffsetReset::None => Err(ClientError::Kafka {
                error: ResponseError::OffsetOutOfRange,
                message: Some(format!(
                    "no committed offset for {tp} and auto.offset.reset=none"
                )),
            }),
        }
    }

    /// Returns up to `max.poll.records` records from the assigned partitions, waiting at most
    /// `fetch.max.wait.ms` for data to arrive. A subscribed consumer first (re)joins its group
    /// when it must. Failures that may pass (a broker restarting, a moved leader, a lost
    /// connection) are retried by later polls, as Kafka's consumer does: this poll then
    /// returns no records after a short backoff. Other failures are returned.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        match self.poll_once().await {
            Err(e) if e.is_retriable() => {
                tracing::debug!(error = %e, "poll failed; retrying on the next poll");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn poll_once(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        self.last_poll_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::SeqCst);
        if !self.subscription.is_empty() {
            self.ensure_membership().await?;
        }
        if self.config.group_id.is_some() {
            self.maybe_auto_commit().await;
        }
        self.init_positions().await?;
        let fetchable = self.positions.len() > self.paused.len();
        if self.buffered.is_empty() && fetchable {
            self.fetch().await?;
        } else if self.buffered.is_empty() {
            // Nothing assigned: wait as a fetch would, so a polling loop does not spin (and the
            // heartbeat task gets to run).
            tokio::time::sleep(Duration::from_millis(
                self.config.fetch_max_wait_ms.max(1) as u64
            ))
            .await;
        }
        let out = self.buffered.take(self.config.max_poll_records);
        // A partition's records come together: its position moves past the last of each run.
        for run in out.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
            let Some(last) = run.last() else { continue };
            let tp = TopicPartition::new(&*last.topic, last.partition);
            if let Some(pos) = self.positions.get_mut(&tp) {
                *pos = Some(last.offset + 1);
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
                    .any(|r| *r.topic == *tp.topic && r.partition == tp.partition.0)
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

    /// Fetches from the current positions: the answer of the prefetch if it fetched from
    /// exactly these, else a fetch now. Then, if the answer says more is there already,
    /// sends the next fetch ahead, from where this one ended.
    async fn fetch(&mut self) -> Result<(), ClientError> {
        let from: BTreeMap<TopicPartition, i64> = self
            .positions
            .iter()
            .filter(|(tp, _)| !self.paused.contains(*tp))
            .map(|(tp, pos)| (tp.clone(), pos.unwrap_or(0)))
            .collect();
        let answer = match self.prefetch.take() {
            Some(mut p) if p.from == from => (&mut p.answer)
                .await
                .map_err(|e| ClientError::Unexpected(format!("a prefetch failed: {e}")))?,
            // Stale (dropping it aborts it), or none.
            _ => self.transport.send(self.fetch_request(&from)).await,
        };
        let ResponseKind::Fetch(resp) = answer?.ok_or(ClientError::NoResponse)? else {
            return Err(ClientError::NoResponse);
        };
        let fetched: usize = resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum();
        self.absorb(resp).await?;
        // Pre-fetch when catching up: this fetch brought a lot (a trickle gains nothing from
        // it and pays a task's wake-ups in latency), and a partition is known to have more,
        // so the broker answers at once (a fetch it held, long-polling at the end of the log,
        // would hold up this consumer's other requests on the connection, commits included).
        let next: BTreeMap<TopicPartition, i64> = from
            .iter()
            .map(|(tp, o)| (tp.clone(), self.fetched_to.get(tp).copied().unwrap_or(*o)))
            .collect();
        let more = next
            .iter()
            .any(|(tp, o)| self.end_offsets.get(tp).is_some_and(|end| end > o));
        if more && fetched >= PREFETCH_AFTER_BYTES && !self.buffered.is_empty() {
            let req = self.fetch_request(&next);
            let transport = Arc::clone(&self.transport);
            self.prefetch = Some(Prefetch {
                from: next,
                answer: tokio::spawn(async move { transport.send(req).await }),
            });
        }
        Ok(())
    }

    /// A fetch of `from`'s partitions at its offsets.
    fn fetch_request(&self, from: &BTreeMap<TopicPartition, i64>) -> RequestKind {
        let mut by_topic: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, offset) in from {
            by_topic.entry(tp.topic.clone()).or_default().push(
                FetchPartition::default()
                    .with_partition(tp.partition.0)
                    .with_fetch_offset(*offset)
                    .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
            );
        }
        let committed_only = self.config.isolation_level == IsolationLevel::ReadCommitted;
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_isolation_level(i8::from(committed_only))
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
        RequestKind::Fetch(req)
    }

    /// Buffers the records of a fetch answer and notes where each partition's fetch ended.
    async fn absorb(
        &mut self,
        resp: kafka_protocol::messages::FetchResponse,
    ) -> Result<(), ClientError> {
        let committed_only = self.config.isolation_level == IsolationLevel::ReadCommitted;
        check(resp.error_code, None)?;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            // One copy of the name, shared by every record of the topic.
            let shared: Arc<str> = Arc::from(topic.as_str());
            for p in t.partitions {
                let tp = TopicPartition::new(topic.clone(), p.partition_index);
                let Some(Some(pos)) = self.positions.get(&tp).copied() else {
                    continue;
                };
                if p.error_code == ResponseError::OffsetOutOfRange.code() {
                    // Out of range (deleted by retention, say): apply the reset policy.
                    let reset = self.reset_offset(&tp).await?;
                    tracing::warn!(%tp, from = pos, to = reset,
                        "fetch offset out of range: position reset by auto.offset.reset");
                    self.positions.insert(tp, Some(reset));
                    continue;
                }
                check(p.error_code, None)?;
                let end = if committed_only && p.last_stable_offset >= 0 {
                    p.last_stable_offset
                } else {
                    p.high_watermark
                };
                self.end_offsets.insert(tp.clone(), end);
                let records = p.records.unwrap_or_default();
                let mut next = pos;
                // read_committed: records of aborted transactions are skipped. A producer is
                // "aborting" from the first offset the broker lists for it until its abort
                // marker (Kafka's consumer does the same walk).
                let mut aborted: Vec<(i64, i64)> = p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.first_offset, a.producer_id.0))
                    .collect();
                aborted.sort();
                let mut aborted = aborted.into_iter().peekable();
                let mut aborting: BTreeSet<i64> = BTreeSet::new();
                // A broker may cut the last batch at the size limit: the whole ones are read,
                // and the next fetch starts at the cut one (`next` stops before it). With no
                // whole batch at all this is an empty fetch, which a Kafka broker sends itself
                // (fetch v3+) rather than a cut first batch.
                let mut batches = BatchIter::fetched(&records);
                for item in batches.by_ref() {
                    let (h, bytes, _) =
                        item.map_err(|e| ClientError::Unexpected(format!("corrupt batch: {e}")))?;
                    while let Some((_, pid)) = aborted.next_if(|(f, _)| *f <= h.last_offset()) {
                        aborting.insert(pid);
                    }
                    let skip = if h.is_control() {
                        if control_marker(bytes) == Some(Marker::Abort) {
                            aborting.remove(&h.producer_id);
                        }
                        true
                    } else {
                        committed_only && h.is_transactional() && aborting.contains(&h.producer_id)
                    };
                    // Control batches (transaction markers) carry no user records.
                    if !skip {
                        let (_, recs) = decode_batch_in(&records, bytes)
                            .map_err(|e| ClientError::Unexpected(format!("corrupt batch: {e}")))?;
                        let from = next;
                        for r in recs.into_iter().filter(|r| r.offset >= from) {
                            next = r.offset + 1;
                            let record = ConsumerRecord {
                                topic: Arc::clone(&shared),
                                partition: tp.partition.0,
                                offset: r.offset,
                                timestamp_ms: r.timestamp_ms,
                                key: r.key,
                                value: r.value,
                                headers: r.headers,
                            };
                            self.buffered.push(record, self.config.max_poll_records);
                        }
                    }
                    next = next.max(h.next_offset());
                }
                if batches.cut_tail() > 0 {
                    tracing::trace!(%tp, next, bytes = batches.cut_tail(),
                        "fetch ended in a cut batch; it is fetched again");
                }
                self.fetched_to.insert(tp, next);
            }
        }
        Ok(())
    }

    /// Commits the current positions of every assigned partition to `group.id` (as a consumer
    /// outside group membership: generation -1).
    pub async fn commit_sync(&self) -> Result<(), ClientError> {
        self.commit_offsets(&self.current_offsets()).await
    }

    /// Commits the current positions in the background; the handle yields the outcome
    /// (Kafka's `commitAsync`: a failed async commit is not retried, a later one supersedes it).
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<(), ClientError>> {
        let req = self.commit_request(&self.current_offsets());
        let transport = Arc::clone(&self.transport);
        tokio::spawn(async move { send_commit(&*transport, req?).await })
    }

    fn current_offsets(&self) -> Vec<(TopicPartition, i64)> {
        self.positions
            .iter()
            .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
            .collect()
    }

    /// Commits the given offsets (the offset of the next record to read) to `group.id`.
    pub async fn commit_offsets(
        &self,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ClientError> {
        send_commit(&*self.transport, self.commit_request(offsets)?).await
    }

    fn commit_request(
        &self,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<OffsetCommitRequest, ClientError> {
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
        // Inside the group, commits carry this member's generation; outside, -1.
        let (member_id, generation) = match &self.membership {
            Some(m) if m.generation >= 0 => (m.member_id.clone(), m.generation),
            _ => (String::new(), -1),
        };
        Ok(OffsetCommitRequest::default()
            .with_group_id(GroupId(text(&group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(&member_id))
            .with_group_instance_id(self.config.group_instance_id.as_deref().map(text))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(text(&t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            ))
    }
}

async fn send_commit(
    transport: &dyn Transport,
    req: OffsetCommitRequest,
) -> Result<(), ClientError> {
    match transport.send(RequestKind::OffsetCommit(req)).await? {
        Some(ResponseKind::OffsetCommit(r)) => {
            for t in r.topics {
                for p in t.partitions {
                    check(p.error_code, None)?;
                }
            }
            Ok(())
        }
        Some(other) => Err(ClientError::unexpected(&other)),
        None => Err(ClientError::NoResponse),
    }
}

impl Consumer {
    /// Consumes `topics` as a member of `group.id`; the group decides the partitions.
    pub fn subscribe(&mut self, topics: impl IntoIterator<Item = impl Into<String>>) {
        self.subscription = topics.into_iter().map(Into::into).collect();
        self.subscription.sort();
        self.subscription.dedup();
        if let Some(m) = &self.membership {
            m.rejoin.store(true, Ordering::SeqCst);
        }
    }

    /// [`Consumer::subscribe`], with a listener told of every change to the assignment.
    pub fn subscribe_with_listener(
        &mut self,
        topics: impl IntoIterator<Item = impl Into<String>>,
        listener: Arc<dyn RebalanceListener>,
    ) {
        self.listener = Some(listener);
        self.subscribe(topics);
    }

    /// Every rebalance so far: the partitions revoked (or lost) and the partitions assigned.
    pub fn rebalances(&self) -> &[(Vec<TopicPartition>, Vec<TopicPartition>)] {
        &self.rebalances
    }

    /// This consumer's group, generation and member id, for a transactional producer's
    /// `send_offsets_to_transaction`; `None` without a `group.id`.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        let group_id = self.config.group_id.clone()?;
        let (member_id, generation_id) = match &self.membership {
            Some(m) if m.generation >= 0 => (m.member_id.clone(), m.generation),
            _ => (String::new(), -1),
        };
        Some(ConsumerGroupMetadata {
            group_id,
            generation_id,
            member_id,
            group_instance_id: self.config.group_instance_id.clone(),
        })
    }

    /// The generation this consumer is in, once it has joined.
    pub fn generation(&self) -> Option<i32> {
        self.membership.as_ref().map(|m| m.generation)
    }

    fn group_id(&self) -> Result<String, ClientError> {
        self.config.group_id.clone().ok_or(ClientError::Kafka {
            error: ResponseError::InvalidGroupId,
            message: Some("subscribing needs a group.id".into()),
        })
    }

    async fn maybe_auto_commit(&mut self) {
        let every = Duration::from_millis(self.config.auto_commit_interval_ms);
        if self.config.enable_auto_commit && self.last_auto_commit.elapsed() >= every {
            self.last_auto_commit = tokio::time::Instant::now();
            let offsets = self.current_offsets();
            if offsets.is_empty() {
                return;
            }
            if let Err(e) = self.commit_offsets(&offsets).await {
                tracing::debug!(error = %e, "auto-commit failed");
            }
        }
    }

    /// Joins (or rejoins) the group until this consumer holds an assignment for the current
    /// generation.
    async fn ensure_membership(&mut self) -> Result<(), ClientError> {
        let group = self.group_id()?;
        let backoff = Duration::from_millis(100);
        loop {
            let lost = self
                .membership
                .as_ref()
                .is_some_and(|m| m.lost.swap(false, Ordering::SeqCst));
            if lost {
                self.lose_partitions().await;
            }
            if let Some(m) = &self.membership {
                if !m.rejoin.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
            let cooperative_only = self.config.assignors.iter().all(|a| a.cooperative());
            let owned: Vec<TopicPartition> = self.positions.keys().cloned().collect();
            // Eager protocol: give up everything before rejoining (committing first).
            if !cooperative_only && !owned.is_empty() {
                if self.config.enable_auto_commit {
                    let _ = self.commit_sync().await;
                }
                if let Some(l) = self.listener.clone() {
                    l.on_partitions_revoked(self, &owned).await;
                }
                self.positions.clear();
                self.paused.clear();
                self.buffered.clear();
                self.fetched_to.clear();
                self.rebalances.push((owned.clone(), Vec::new()));
            }
            let owned_now: Vec<TopicPartition> = self.positions.keys().cloned().collect();
            let member_id = self
                .membership
                .as_ref()
                .map(|m| m.member_id.clone())
                .unwrap_or_default();
            let subscription = kafka_protocol::messages::ConsumerProtocolSubscription::default()
                .with_topics(self.subscription.iter().map(|t| text(t)).collect())
                .with_owned_partitions(to_protocol_partitions(&owned_now));

            let req = kafka_protocol::messages::JoinGroupRequest::default()
                .with_group_id(GroupId(text(&group)))
                .with_session_timeout_ms(self.config.session_timeout_ms)
                .with_rebalance_timeout_ms(self.config.max_poll_interval_ms)
                .with_member_id(text(&member_id))
                .with_group_instance_id(self.config.group_instance_id.as_deref().map(text))
                .with_protocol_type(text(PROTOCOL_TYPE))
                .with_protocols(
                    self.config
                        .assignors
                        .iter()
                        .map(|a| {
                            let user_data = a.user_data();
                            let subscription = subscription.clone().with_user_data(
                                (!user_data.is_empty()).then(|| Bytes::from(user_data)),
                            );
                            kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                                .with_name(text(a.name()))
                                .with_metadata(encode_versioned(&subscription, SUBSCRIPTION_VERSION))
                        })
                        .collect(),
                );
            let ResponseKind::JoinGroup(join) = self.call(RequestKind::JoinGroup(req)).await?
            else {
                return Err(ClientError::NoResponse);
            };
            match ResponseError::try_from_code(join.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.set_member(join.member_id.to_string(), -1);
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    // The coordinator forgot this member: whatever it held is lost.
                    self.lose_partitions().await;
                    self.set_member(String::new(), -1);
                    continue;
                }
                Some(e) if e.is_retriable() || e == ResponseError::RebalanceInProgress => {
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                Some(_) => check(join.error_code, None)?,
            }
            // The old generation's heartbeats end here: one answered ILLEGAL_GENERATION now
            // would only say the group moved on, which this member is doing.
            if let Some(m) = self.membership.as_mut() {
                if let Some(h) = m.heartbeat.take() {
                    h.abort();
                }
                m.lost.store(false, Ordering::SeqCst);
            }
            let member_id = join.member_id.to_string();
            let protocol = join
                .protocol_name
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let assignments = if join.leader.as_str() == member_id {
                self.lead(&protocol, &join.members).await?
            } else {
                Vec::new()
            };
            let sync = kafka_protocol::messages::SyncGroupRequest::default()
                .with_group_id(GroupId(text(&group)))
                .with_generation_id(join.generation_id)
                .with_member_id(text(&member_id))
                .with_group_instance_id(self.config.group_instance_id.as_deref().map(text))
                .with_protocol_type(Some(text(PROTOCOL_TYPE)))
                .with_protocol_name(Some(text(&protocol)))
                .with_assignments(assignments);
            let ResponseKind::SyncGroup(synced) = self.call(RequestKind::SyncGroup(sync)).await?
            else {
                return Err(ClientError::NoResponse);
            };
            match ResponseError::try_from_code(synced.error_code) {
                None => {}
                Some(ResponseError::UnknownMemberId) => {
                    self.lose_partitions().await;
                    self.set_member(String::new(), -1);
                    continue;
                }
                Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                    self.set_member(member_id, -1);
                    continue;
                }
                Some(_) => check(synced.error_code, None)?,
            }
            let new: BTreeSet<TopicPartition> = decode_assignment(synced.assignment.clone())
                .into_iter()
                .collect();
            let old: BTreeSet<TopicPartition> = self.positions.keys().cloned().collect();
            let revoked: Vec<TopicPartition> = old.difference(&new).cloned().collect();
            let assigned: Vec<TopicPartition> = new.difference(&old).cloned().collect();
            // The member is in the new generation now: commit what it gives up under it.
            self.set_member(member_id.clone(), join.generation_id);
            if !revoked.is_empty() && self.config.enable_auto_commit {
                let _ = self.commit_sync().await;
            }
            if !revoked.is_empty() {
                if let Some(l) = self.listener.clone() {
                    l.on_partitions_revoked(self, &revoked).await;
                }
            }
            for tp in &revoked {
                self.positions.remove(tp);
                self.fetched_to.remove(tp);
                self.paused.remove(tp);
            }
            self.buffered
                .retain(|r| new.contains(&TopicPartition::new(&*r.topic, r.partition)));
            for tp in &assigned {
                self.positions.insert(tp.clone(), None);
            }
            if !revoked.is_empty() || !assigned.is_empty() {
                self.rebalances.push((revoked.clone(), assigned.clone()));
            }
            self.set_member(member_id, join.generation_id);
            if let Some(m) = self.membership.as_mut() {
                m.protocol = protocol;
            }
            self.start_heartbeat(&group);
            // A task spawned from a runtime worker waits in that worker's own slot, where no
            // other worker takes it from; an embedded broker answers without ever making this
            // poll wait, so a caller that then blocks its worker (a slow record) would starve
            // the heartbeat. Yielding once lets it start: from then on its timer wakes it
            // wherever a worker is free.
            tokio::task::yield_now().await;
            if let Some(l) = self.listener.clone() {
                l.on_partitions_assigned(self, &assigned).await;
            }
            // Cooperative: what was revoked may now go elsewhere; rejoin so it can (KIP-429).
            if !revoked.is_empty() && cooperative_only {
                if let Some(m) = &self.membership {
                    m.rejoin.store(true, Ordering::SeqCst);
                }
                continue;
            }
            return Ok(());
        }
    }

    /// The membership is gone: drop every partition without committing (someone else may own
    /// them now) and tell the listener.
    async fn lose_partitions(&mut self) {
        let owned: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        if owned.is_empty() {
            return;
        }
        tracing::info!(
            partitions = owned.len(),
            "group membership lost; partitions dropped"
        );
        if let Some(l) = self.listener.clone() {
            l.on_partitions_lost(self, &owned).await;
        }
        self.positions.clear();
        self.buffered.clear();
        self.fetched_to.clear();
        self.paused.clear();
        self.rebalances.push((owned, Vec::new()));
    }

    fn set_member(&mut self, member_id: String, generation: i32) {
        let rejoin = generation < 0;
        match self.membership.as_mut() {
            Some(m) => {
                m.member_id = member_id;
                m.generation = generation;
                m.rejoin.store(rejoin, Ordering::SeqCst);
            }
            None => {
                self.membership = Some(Membership {
                    member_id,
                    generation,
                    protocol: String::new(),
                    rejoin: Arc::new(AtomicBool::new(rejoin)),
                    lost: Arc::new(AtomicBool::new(false)),
                    heartbeat: None,
                });
            }
        }
    }

    /// As leader: run the chosen assignor over every member's subscription.
    async fn lead(
        &self,
        protocol: &str,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<
        Vec<kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment>,
        ClientError,
    > {
        let assignor = self
            .config
            .assignors
            .iter()
            .find(|a| a.name() == protocol)
            .cloned()
            .ok_or(ClientError::Kafka {
                error: ResponseError::InconsistentGroupProtocol,
                message: Some(protocol.into()),
            })?;
        let mut subs: BTreeMap<String, Subscription> = BTreeMap::new();
        let mut topics: BTreeSet<String> = BTreeSet::new();
        for m in members {
            let s: kafka_protocol::messages::ConsumerProtocolSubscription =
                decode_versioned(m.metadata.clone(), false).unwrap_or_default();
            let sub = Subscription {
                topics: s.topics.iter().map(|t| t.to_string()).collect(),
                owned: s
                    .owned_partitions
                    .iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(move |p| TopicPartition::new(t.topic.0.to_string(), *p))
                    })
                    .collect(),
                user_data: s.user_data.map(|b| b.to_vec()).unwrap_or_default(),
            };
            topics.extend(sub.topics.iter().cloned());
            subs.insert(m.member_id.to_string(), sub);
        }
        // Partition counts of every subscribed topic.
        let req = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(text(t))))
                })
                .collect(),
        ));
        let ResponseKind::Metadata(md) = self.call(RequestKind::Metadata(req)).await? else {
            return Err(ClientError::NoResponse);
        };
        let counts: BTreeMap<String, i32> = md
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| {
                t.name
                    .as_ref()
                    .map(|n| (n.0.to_string(), t.partitions.len() as i32))
            })
            .collect();
        let plan = assignor.assign(&subs, &counts);
        Ok(plan
            .into_iter()
            .map(|(member, tps)| {
                let a = kafka_protocol::messages::ConsumerProtocolAssignment::default()
                    .with_assigned_partitions(
                        to_protocol_partitions(&tps)
                            .into_iter()
                            .map(|t| {
                                kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default()
                                    .with_topic(t.topic)
                                    .with_partitions(t.partitions)
                            })
                            .collect(),
                    );
                kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(text(&member))
                    .with_assignment(encode_versioned(&a, ASSIGNMENT_VERSION))
            })
            .collect())
    }

    /// Heartbeats every `heartbeat.interval.ms` until the coordinator asks for a rejoin.
    fn start_heartbeat(&mut self, group: &str) {
        let Some(m) = self.membership.as_mut() else {
            return;
        };
        if let Some(h) = m.heartbeat.take() {
            h.abort();
        }
        let transport = Arc::clone(&self.transport);
        let rejoin = Arc::clone(&m.rejoin);
        let lost = Arc::clone(&m.lost);
        let last_poll_ms = Arc::clone(&self.last_poll_ms);
        let created = self.created;
        let max_poll_interval = self.config.max_poll_interval_ms.max(0) as u64;
        let leave = kafka_protocol::messages::LeaveGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_member_id(text(&m.member_id))
            .with_members(vec![
                kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                    .with_member_id(text(&m.member_id))
                    .with_group_instance_id(self.config.group_instance_id.as_deref().map(text)),
            ]);
        let every = Duration::from_millis(self.config.heartbeat_interval_ms.max(1));
        let req = kafka_protocol::messages::HeartbeatRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id(m.generation)
            .with_member_id(text(&m.member_id))
            .with_group_instance_id(self.config.group_instance_id.as_deref().map(text));
        m.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let since_poll = (created.elapsed().as_millis() as u64)
                    .saturating_sub(last_poll_ms.load(Ordering::SeqCst));
                if since_poll > max_poll_interval {
                    // The application stopped polling: leave so the group moves on without it
                    // (Kafka's poll-timeout leave); the next poll rejoins as a new member.
                    tracing::warn!(
                        since_poll_ms = since_poll,
                        "max.poll.interval.ms passed without a poll; leaving the group"
                    );
                    let _ = transport.send(RequestKind::LeaveGroup(leave)).await;
                    lost.store(true, Ordering::SeqCst);
                    rejoin.store(true, Ordering::SeqCst);
                    return;
                }
                match transport.send(RequestKind::Heartbeat(req.clone())).await {
                    Ok(Some(ResponseKind::Heartbeat(r))) if r.error_code == 0 => {}
                    // During a rebalance keep heartbeating (the session stays alive until the
                    // member rejoins); stop once this generation or membership is gone.
                    Ok(Some(ResponseKind::Heartbeat(r)))
                        if r.error_code == ResponseError::RebalanceInProgress.code() =>
                    {
                        rejoin.store(true, Ordering::SeqCst);
                    }
                    // Fenced or forgotten: this generation's partitions may be someone else's.
                    Ok(Some(ResponseKind::Heartbeat(r)))
                        if [
                            ResponseError::UnknownMemberId,
                            ResponseError::IllegalGeneration,
                            ResponseError::FencedInstanceId,
                        ]
                        .iter()
                        .any(|e| e.code() == r.error_code) =>
                    {
                        lost.store(true, Ordering::SeqCst);
                        rejoin.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Some(ResponseKind::Heartbeat(_))) => {
                        rejoin.store(true, Ordering::SeqCst);
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }

    /// Commits (with auto-commit on), leaves the group, and stops heartbeating.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.config.enable_auto_commit && self.config.group_id.is_some() {
            let _ = self.commit_sync().await;
        }
        if let (Some(m), Ok(group)) = (self.membership.take(), self.group_id()) {
            let req = kafka_protocol::messages::LeaveGroupRequest::default()
                .with_group_id(GroupId(text(&group)))
                .with_member_id(text(&m.member_id))
                .with_members(vec![
                    kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                        .with_member_id(text(&m.member_id))
                        .with_group_instance_id(self.config.group_instance_id.as_deref().map(text)),
                ]);
            drop(m);
            self.call(RequestKind::LeaveGroup(req)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    /// Records come out in order, at most `n` at a time, whatever was dropped from the
    /// chunks they were fetched in.
    #[test]
    fn buffered_records_come_out_in_order_in_chunks() {
        let mut b = Buffered::default();
        for o in 0..7 {
            b.push(record(o), 3);
        }
        assert_eq!(offsets(&b.take(3)), [0, 1, 2]);
        assert_eq!(
            offsets(&b.take(2)),
            [3, 4],
            "a poll for fewer splits a chunk"
        );
        b.retain(|r| r.offset != 5);
        assert_eq!(b.iter().count(), 1);
        assert_eq!(offsets(&b.take(3)), [6]);
        assert!(b.is_empty());
        assert!(b.take(3).is_empty());
        b.push(record(8), 3);
        b.clear();
        assert!(b.is_empty() && b.iter().next().is_none());
    }
}
