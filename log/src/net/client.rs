//! `TcpTransport`: rill's clients over the Kafka wire protocol, to rill or any Kafka-compatible
//! cluster.
//!
//! It bootstraps from a list of `host:port`, learns the brokers and partition leaders from
//! Metadata, and keeps one connection per broker. Each connection negotiates versions with
//! ApiVersions (KIP-511: an UNSUPPORTED_VERSION answer carries the broker's ranges), pipelines
//! requests matched to responses by correlation id, and fails them all if it breaks; the next
//! request reconnects, with backoff. Requests are routed like Kafka's clients do: partition
//! requests (Produce, Fetch, ListOffsets, DeleteRecords, OffsetForLeaderEpoch) to each
//! partition's leader, split and merged when the partitions have different leaders; group
//! requests to the group's coordinator (FindCoordinator, cached); the rest to any broker.
//! Responses saying the metadata or the coordinator moved (NOT_LEADER_OR_FOLLOWER,
//! UNKNOWN_TOPIC_OR_PARTITION, NOT_COORDINATOR, ...) mark the caches stale, and the client's
//! own retry then goes to the right broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::frame::{finish_frame, read_body, set_aside, split_frame};
use super::schema::{response_schema, walk, WalkError, MAX_TAGGED_FIELDS};
use super::versions::{client_max, fit_request};
use crate::client::transport::{BoxFuture, Transport};
use crate::client::ClientError;

/// Connection settings, under Kafka's client property names.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// `bootstrap.servers`: `host:port` of one or more brokers.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`.
    pub client_id: String,
    /// `request.timeout.ms`: how long a request may wait for its response. Requests that the
    /// broker may hold (Fetch long-polls, JoinGroup) get their own wait added.
    pub request_timeout_ms: u64,
    /// `socket.connection.setup.timeout.ms`.
    pub connect_timeout_ms: u64,
    /// `reconnect.backoff.ms`: the first wait before reconnecting to a broker that failed.
    pub reconnect_backoff_ms: u64,
    /// `reconnect.backoff.max.ms`: the backoff doubles up to this.
    pub reconnect_backoff_max_ms: u64,
    /// `metadata.max.age.ms`: metadata older than this is refreshed before routing.
    pub metadata_max_age_ms: u64,
    /// The largest response frame accepted (rill's guard against a broken peer).
    pub max_response_bytes: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "rill".into(),
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            reconnect_backoff_ms: 50,
            reconnect_backoff_max_ms: 1_000,
            metadata_max_age_ms: 300_000,
            max_response_bytes: 512 << 20,
        }
    }
}

impl TcpConfig {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        TcpConfig {
            bootstrap_servers: bootstrap
                .into()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            ..Default::default()
        }
    }
}

/// The Kafka protocol over TCP. Cheap to clone.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("bootstrap", &self.inner.config.bootstrap_servers)
            .finish()
    }
}

struct Inner {
    config: TcpConfig,
    /// Live connections by address.
    conns: tokio::sync::Mutex<HashMap<String, Arc<Conn>>>,
    /// Per address: consecutive failures and when a retry is allowed.
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
    meta: Mutex<Meta>,
    /// (key type, key) -> coordinator node id.
    coordinators: Mutex<HashMap<(i8, String), i32>>,
}

#[derive(Default)]
struct Meta {
    brokers: BTreeMap<i32, String>,
    leaders: HashMap<(String, i32), i32>,
    fetched: Option<Instant>,
    stale: bool,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Any,
    Node(i32),
}

impl TcpTransport {
    /// A transport to the cluster behind `config.bootstrap_servers`. Connects lazily; use
    /// [`TcpTransport::connect`] to fail fast when no broker answers.
    pub fn new(config: TcpConfig) -> Self {
        TcpTransport {
            inner: Arc::new(Inner {
                config,
                conns: tokio::sync::Mutex::new(HashMap::new()),
                backoff: Mutex::new(HashMap::new()),
                meta: Mutex::new(Meta::default()),
                coordinators: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// [`TcpTransport::new`], then fetches the cluster's metadata once.
    pub async fn connect(config: TcpConfig) -> Result<Self, ClientError> {
        let t = Self::new(config);
        t.refresh_metadata(&[]).await?;
        Ok(t)
    }

    /// The brokers the last Metadata listed: node id -> `host:port`.
    pub fn brokers(&self) -> BTreeMap<i32, String> {
        lock(&self.inner.meta).brokers.clone()
    }

    /// The connection to `addr`, opened if there is none. A broker that failed recently is
    /// tried again only after its backoff: waited for (`wait_backoff`), or refused at once so
    /// the caller can try another broker. No lock is held while connecting or waiting, so
    /// a dead broker never holds up requests to the live ones.
    async fn conn_with(&self, addr: &str, wait_backoff: bool) -> Result<Arc<Conn>, ClientError> {
        {
            let mut conns = self.inner.conns.lock().await;
            if let Some(c) = conns.get(addr) {
                if !c.dead.load(Ordering::SeqCst) {
                    return Ok(Arc::clone(c));
                }
                conns.remove(addr);
            }
        }
        let wait = lock(&self.inner.backoff)
            .get(addr)
            .map(|(_, until)| *until)
            .filter(|until| *until > Instant::now());
        if let Some(until) = wait {
            if !wait_backoff {
                return Err(ClientError::Network(format!(
                    "{addr} failed recently; not retried before its backoff"
                )));
            }
            tokio::time::sleep_until(until).await;
        }
        match Conn::open(addr, &self.inner.config).await {
            Ok(c) => {
                lock(&self.inner.backoff).remove(addr);
                let mut conns = self.inner.conns.lock().await;
                // Another request may have connected meanwhile: one connection is kept.
                if let Some(existing) = conns.get(addr) {
                    if !existing.dead.load(Ordering::SeqCst) {
                        return Ok(Arc::clone(existing));
                    }
                }
                let c = Arc::new(c);
                conns.insert(addr.to_string(), Arc::clone(&c));
                Ok(c)
            }
            Err(e) => {
                let cfg = &self.inner.config;
                let mut backoff = lock(&self.inner.backoff);
                let failures = backoff.get(addr).map_or(0, |(n, _)| *n) + 1;
                let ms = cfg
                    .reconnect_backoff_ms
                    .saturating_mul(1 << failures.min(16).saturating_sub(1))
                    .min(cfg.reconnect_backoff_max_ms);
                backoff.insert(
                    addr.to_string(),
                    (failures, Instant::now() + Duration::from_millis(ms)),
                );
                Err(e)
            }
        }
    }

    /// A connection to `target`: a known broker, else any broker or bootstrap server that
    /// answers, those not backing off from a failure first (a dead broker's backoff must
    /// not delay a metadata refresh that another broker can answer).
    async fn conn_for(&self, target: &Target) -> Result<Arc<Conn>, ClientError> {
        if let Target::Node(id) = target {
            let addr = lock(&self.inner.meta).brokers.get(id).cloned();
            if let Some(addr) = addr {
                // A broker backing off from a failure is not waited for: the request fails
                // at once (retriable), the metadata is looked at again, and the caller's
                // retry finds a new leader or coordinator as soon as there is one, as
                // Kafka's clients do with a node that is not ready.
                return self.conn_with(&addr, false).await;
            }
        }
        let mut candidates: Vec<String> =
            lock(&self.inner.meta).brokers.values().cloned().collect();
        candidates.extend(self.inner.config.bootstrap_servers.iter().cloned());
        let mut last = ClientError::Network("no bootstrap servers".into());
        for wait_backoff in [false, true] {
            for addr in &candidates {
                match self.conn_with(addr, wait_backoff).await {
                    Ok(c) => return Ok(c),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    async fn refresh_metadata(&self, topics: &[String]) -> Result<(), ClientError> {
        let req = MetadataRequest::default()
            .with_topics(if topics.is_empty() {
                None
            } else {
                Some(
                    topics
                        .iter()
                        .map(|t| {
                            MetadataRequestTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                        })
                        .collect(),
                )
            })
            .with_allow_auto_topic_creation(false);
        let conn = self.conn_for(&Target::Any).await?;
        let resp = conn
            .call(RequestKind::Metadata(req), &self.inner.config, None)
            .await?;
        let Some(ResponseKind::Metadata(m)) = resp else {
            return Err(ClientError::NoResponse);
        };
        let mut meta = lock(&self.inner.meta);
        meta.brokers = m
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        for t in &m.topics {
            let Some(name) = &t.name else { continue };
            for p in &t.partitions {
                meta.leaders
                    .insert((name.0.to_string(), p.partition_index), p.leader_id.0);
            }
        }
        meta.fetched = Some(Instant::now());
        meta.stale = false;
        Ok(())
    }

    /// The leader of each partition, refreshing metadata when it is stale or missing one.
    async fn leaders(&self, tps: &[(String, i32)]) -> HashMap<(String, i32), i32> {
        let max_age = Duration::from_millis(self.inner.config.metadata_max_age_ms);
        let needs_refresh = {
            let meta = lock(&self.inner.meta);
            meta.stale
                || meta.fetched.is_none_or(|t| t.elapsed() > max_age)
                || tps.iter().any(|tp| !meta.leaders.contains_key(tp))
        };
        if needs_refresh {
            let mut topics: Vec<String> = tps.iter().map(|(t, _)| t.clone()).collect();
            topics.sort();
            topics.dedup();
            if let Err(e) = self.refresh_metadata(&topics).await {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
        }
        let meta = lock(&self.inner.meta);
        tps.iter()
            .filter_map(|tp| meta.leaders.get(tp).map(|l| (tp.clone(), *l)))
            .collect()
    }

    /// The broker coordinating `key` (cached). Retriable failures (no coordinator yet: a
    /// cluster creating its internal topic or electing a leader for its partition; a broker
    /// that cannot be reached) are retried for up to `request.timeout.ms`, as Kafka's
    /// clients wait for their coordinator.
    async fn coordinator(&self, key_type: i8, key: &str) -> Result<Target, ClientError> {
        if let Some(id) = lock(&self.inner.coordinators).get(&(key_type, key.to_string())) {
            return Ok(Target::Node(*id));
        }
        let deadline =
            std::time::Instant::now() + Duration::from_millis(self.inner.config.request_timeout_ms);
        loop {
            match self.find_coordinator(key_type, key).await {
                Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                    lock(&self.inner.meta).stale = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn find_coordinator(&self, key_type: i8, key: &str) -> Result<Target, ClientError> {
        let req = FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_key(StrBytes::from_string(key.to_string()));
        let conn = self.conn_for(&Target::Any).await?;
        let Some(ResponseKind::FindCoordinator(r)) = conn
            .call(RequestKind::FindCoordinator(req), &self.inner.config, None)
            .await?
        else {
            return Err(ClientError::NoResponse);
        };
        // v4 answers per key; older versions at the top level.
        let (code, node, host, port) = match r.coordinators.first() {
            Some(c) => (c.error_code, c.node_id.0, c.host.to_string(), c.port),
            None => (r.error_code, r.node_id.0, r.host.to_string(), r.port),
        };
        crate::client::check(code, None)?;
        lock(&self.inner.meta)
            .brokers
            .insert(node, format!("{host}:{port}"));
        lock(&self.inner.coordinators).insert((key_type, key.to_string()), node);
        Ok(Target::Node(node))
    }

    async fn send_to(
        &self,
        target: Target,
        request: RequestKind,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Option<ResponseKind>, ClientError> {
        let conn = match self.conn_for(&target).await {
            Ok(conn) => conn,
            Err(e) => {
                // The broker may be gone (a leader killed): its partitions may have moved.
                lock(&self.inner.meta).stale = true;
                return Err(e);
            }
        };
        let resp = conn.call(request, &self.inner.config, written).await;
        if resp.is_err() {
            // The broker may be gone: look again before the next request to it.
            lock(&self.inner.meta).stale = true;
        }
        resp
    }

    /// Routes and sends `request`; `written` is told once it is written (see
    /// [`Transport::send_ordered`]), or dropped when it cannot be.
    async fn dispatch(
        &self,
        request: RequestKind,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Option<ResponseKind>, ClientError> {
        if let Some(txn) = transactional_id_of(&request) {
            let target = self.coordinator(1, &txn).await?;
            let resp = self.send_to(target, request, written).await;
            // A coordinator that cannot be reached may have moved (its broker died).
            if resp
                .as_ref()
                .map_or(true, |r| r.as_ref().is_some_and(coordinator_moved))
            {
                lock(&self.inner.coordinators).remove(&(1, txn));
            }
            return resp;
        }
        if let Some(group) = group_of(&request) {
            let target = self.coordinator(0, &group).await?;
            let resp = self.send_to(target, request, written).await;
            if resp
                .as_ref()
                .map_or(true, |r| r.as_ref().is_some_and(coordinator_moved))
            {
                lock(&self.inner.coordinators).remove(&(0, group));
            }
            return resp;
        }
        let partitions = partitions_of(&request);
        if partitions.is_empty() {
            return self.send_to(Target::Any, request, written).await;
        }
        let leaders = self.leaders(&partitions).await;
        let mut by_node: BTreeMap<Option<i32>, Vec<(String, i32)>> = BTreeMap::new();
        for tp in partitions {
            by_node
                .entry(leaders.get(&tp).copied())
                .or_default()
                .push(tp);
        }
        let resp = if by_node.len() == 1 {
            let node = by_node.into_keys().next().flatten();
            self.send_to(node.map_or(Target::Any, Target::Node), request, written)
                .await?
        } else {
            // Partitions led by different brokers: one request each, answers merged (and
            // `written` told once all are in).
            let mut merged: Option<ResponseKind> = None;
            for (node, tps) in by_node {
                let part = restrict(&request, &tps);
                let resp = self
                    .send_to(node.map_or(Target::Any, Target::Node), part, None)
                    .await?;
                merged = merge(merged, resp);
            }
            drop(written);
            merged
        };
        if resp.as_ref().is_some_and(metadata_moved) {
            lock(&self.inner.meta).stale = true;
        }
        Ok(resp)
    }
}

impl Transport for TcpTransport {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(self.dispatch(request, None))
    }

    /// To that broker only: its address from metadata (fetched again if it is not known);
    /// a broker the cluster does not list is an error, not some other broker's answer.
    fn send_to_broker(
        &self,
        broker: i32,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            if !lock(&self.inner.meta).brokers.contains_key(&broker) {
                self.refresh_metadata(&[]).await?;
            }
            if !lock(&self.inner.meta).brokers.contains_key(&broker) {
                return Err(ClientError::Network(format!(
                    "broker {broker} is not in the cluster's metadata"
                )));
            }
            self.send_to(Target::Node(broker), request, None).await
        })
    }

    /// Requests to one broker go out on one connection, in the order they are written, and
    /// the broker answers a connection's requests in order: `written` is told as soon as
    /// the request's bytes are in the socket.
    fn send_ordered(
        &self,
        request: RequestKind,
        written: oneshot::Sender<()>,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(self.dispatch(request, Some(written)))
    }
}

/// The transport's caches (connections, leaders, coordinators) are replaced entry by entry,
/// never half-updated: a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    crate::sync::plain(m)
}

/// The transactional id a request is about, for routing to its transaction coordinator.
fn transactional_id_of(req: &RequestKind) -> Option<String> {
    let id = match req {
        RequestKind::InitProducerId(r) => r.transactional_id.as_ref()?,
        RequestKind::AddPartitionsToTxn(r) => &r.v3_and_below_transactional_id,
        RequestKind::AddOffsetsToTxn(r) => &r.transactional_id,
        RequestKind::EndTxn(r) => &r.transactional_id,
        _ => return None,
    };
    (!id.is_empty()).then(|| id.0.to_string())
}

/// The consumer group a request is about, for routing to its coordinator.
fn group_of(req: &RequestKind) -> Option<String> {
    let g = match req {
        RequestKind::JoinGroup(r) => &r.group_id,
        RequestKind::SyncGroup(r) => &r.group_id,
        RequestKind::Heartbeat(r) => &r.group_id,
        RequestKind::LeaveGroup(r) => &r.group_id,
        RequestKind::OffsetCommit(r) => &r.group_id,
        RequestKind::OffsetFetch(r) => &r.group_id,
        RequestKind::TxnOffsetCommit(r) => &r.group_id,
        RequestKind::DescribeGroups(r) if r.groups.len() == 1 => &r.groups[0],
        RequestKind::DeleteGroups(r) if r.groups_names.len() == 1 => &r.groups_names[0],
        RequestKind::OffsetDelete(r) => &r.group_id,
        _ => return None,
    };
    Some(g.0.to_string())
}

/// The partitions of a partition-scoped request.
fn partitions_of(req: &RequestKind) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    match req {
        RequestKind::Produce(r) => {
            for t in &r.topic_data {
                out.extend(
                    t.partition_data
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.index)),
                );
            }
        }
        RequestKind::Fetch(r) => {
            for t in &r.topics {
                out.extend(
                    t.partitions
                        .iter()
                        .map(|p| (t.topic.0.to_string(), p.partition)),
                );
            }
        }
        RequestKind::ListOffsets(r) => {
            for t in &r.topics {
                out.extend(
                    t.partitions
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.partition_index)),
                );
            }
        }
        RequestKind::DeleteRecords(r) => {
            for t in &r.topics {
                out.extend(
                    t.partitions
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.partition_index)),
                );
            }
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            for t in &r.topics {
                out.extend(
                    t.partitions
                        .iter()
                        .map(|p| (t.topic.0.to_string(), p.partition)),
                );
            }
        }
        _ => {}
    }
    out
}

/// The request with only `tps` left in it.
fn restrict(req: &RequestKind, tps: &[(String, i32)]) -> RequestKind {
    let keep = |t: &str, p: i32| tps.iter().any(|(tt, pp)| tt == t && *pp == p);
    let mut req = req.clone();
    match &mut req {
        RequestKind::Produce(r) => {
            for t in &mut r.topic_data {
                let name = t.name.0.to_string();
                t.partition_data.retain(|p| keep(&name, p.index));
            }
            r.topic_data.retain(|t| !t.partition_data.is_empty());
        }
        RequestKind::Fetch(r) => {
            for t in &mut r.topics {
                let name = t.topic.0.to_string();
                t.partitions.retain(|p| keep(&name, p.partition));
            }
            r.topics.retain(|t| !t.partitions.is_empty());
        }
        RequestKind::ListOffsets(r) => {
            for t in &mut r.topics {
                let name = t.name.0.to_string();
                t.partitions.retain(|p| keep(&name, p.partition_index));
            }
            r.topics.retain(|t| !t.partitions.is_empty());
        }
        RequestKind::DeleteRecords(r) => {
            for t in &mut r.topics {
                let name = t.name.0.to_string();
                t.partitions.retain(|p| keep(&name, p.partition_index));
            }
            r.topics.retain(|t| !t.partitions.is_empty());
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            for t in &mut r.topics {
                let name = t.topic.0.to_string();
                t.partitions.retain(|p| keep(&name, p.partition));
            }
            r.topics.retain(|t| !t.partitions.is_empty());
        }
        _ => {}
    }
    req
}

/// Joins the answers of a split request.
fn merge(acc: Option<ResponseKind>, next: Option<ResponseKind>) -> Option<ResponseKind> {
    match (acc, next) {
        (None, n) => n,
        (a, None) => a,
        (Some(a), Some(b)) => Some(match (a, b) {
            (ResponseKind::Produce(mut a), ResponseKind::Produce(b)) => {
                a.responses.extend(b.responses);
                ResponseKind::Produce(a)
            }
            (ResponseKind::Fetch(mut a), ResponseKind::Fetch(b)) => {
                a.responses.extend(b.responses);
                ResponseKind::Fetch(a)
            }
            (ResponseKind::ListOffsets(mut a), ResponseKind::ListOffsets(b)) => {
                a.topics.extend(b.topics);
                ResponseKind::ListOffsets(a)
            }
            (ResponseKind::DeleteRecords(mut a), ResponseKind::DeleteRecords(b)) => {
                a.topics.extend(b.topics);
                ResponseKind::DeleteRecords(a)
            }
            (ResponseKind::OffsetForLeaderEpoch(mut a), ResponseKind::OffsetForLeaderEpoch(b)) => {
                a.topics.extend(b.topics);
                ResponseKind::OffsetForLeaderEpoch(a)
            }
            (a, _) => a,
        }),
    }
}

fn moved(code: i16) -> bool {
    [
        ResponseError::NotLeaderOrFollower,
        ResponseError::UnknownTopicOrPartition,
        ResponseError::LeaderNotAvailable,
        ResponseError::FencedLeaderEpoch,
        ResponseError::UnknownLeaderEpoch,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// Whether a partition answer says the routing was wrong.
fn metadata_moved(resp: &ResponseKind) -> bool {
    match resp {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| moved(p.error_code)),
        ResponseKind::Fetch(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| moved(p.error_code)),
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| moved(p.error_code)),
        _ => false,
    }
}

/// Whether a group answer says the coordinator is elsewhere now.
fn coordinator_moved(resp: &ResponseKind) -> bool {
    let code = match resp {
        ResponseKind::JoinGroup(r) => r.error_code,
        ResponseKind::SyncGroup(r) => r.error_code,
        ResponseKind::Heartbeat(r) => r.error_code,
        ResponseKind::LeaveGroup(r) => r.error_code,
        ResponseKind::OffsetFetch(r) => r.error_code,
        ResponseKind::EndTxn(r) => r.error_code,
        ResponseKind::AddOffsetsToTxn(r) => r.error_code,
        ResponseKind::InitProducerId(r) => r.error_code,
        ResponseKind::OffsetCommit(r) => first_error(
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code),
        ),
        ResponseKind::TxnOffsetCommit(r) => first_error(
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code),
        ),
        ResponseKind::AddPartitionsToTxn(r) => first_error(
            r.results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code),
        ),
        ResponseKind::DescribeGroups(r) => first_error(r.groups.iter().map(|g| g.error_code)),
        ResponseKind::DeleteGroups(r) => first_error(r.results.iter().map(|g| g.error_code)),
        ResponseKind::OffsetDelete(r) => r.error_code,
        _ => 0,
    };
    [
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorNotAvailable,
    ]
    .iter()
    .any(|e| e.code() == code)
}

fn first_error(mut codes: impl Iterator<Item = i16>) -> i16 {
    codes.find(|c| *c != 0).unwrap_or(0)
}

type Pending = oneshot::Sender<Result<Bytes, ClientError>>;

/// One connection to one broker, for the broker's own requests to another (a follower's
/// replica fetches): versions negotiated, requests pipelined, no routing.
pub(crate) struct BrokerLink {
    conn: Conn,
    config: TcpConfig,
}

impl BrokerLink {
    pub(crate) async fn open(addr: &str, config: TcpConfig) -> Result<BrokerLink, ClientError> {
        let conn = Conn::open(addr, &config).await?;
        Ok(BrokerLink { conn, config })
    }

    pub(crate) async fn call(
        &self,
        request: RequestKind,
    ) -> Result<Option<ResponseKind>, ClientError> {
        self.conn.call(request, &self.config, None).await
    }

    /// The connection broke: open another.
    pub(crate) fn is_dead(&self) -> bool {
        self.conn.dead.load(Ordering::Relaxed)
    }
}

/// One connection to one broker.
struct Conn {
    addr: String,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<HashMap<i32, Pending>>>,
    next_correlation: AtomicI32,
    /// The broker's version range per API key.
    versions: HashMap<i16, (i16, i16)>,
    client_id: String,
    dead: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    async fn open(addr: &str, config: &TcpConfig) -> Result<Conn, ClientError> {
        let connect = Duration::from_millis(config.connect_timeout_ms);
        let stream = tokio::time::timeout(connect, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Network(format!("connecting to {addr} timed out")))?
            .map_err(|e| ClientError::Network(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let pending: Arc<Mutex<HashMap<i32, Pending>>> = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_responses(
            rd,
            Arc::clone(&pending),
            Arc::clone(&dead),
            config.max_response_bytes,
            addr.to_string(),
        ));
        let mut conn = Conn {
            addr: addr.to_string(),
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_correlation: AtomicI32::new(0),
            versions: HashMap::new(),
            client_id: config.client_id.clone(),
            dead,
            reader,
        };
        conn.versions = conn.negotiate(config).await?;
        Ok(conn)
    }

    /// ApiVersions: ask in v3; a broker that does not speak v3 answers in v0 with
    /// UNSUPPORTED_VERSION and its ranges, which is all we need.
    async fn negotiate(&self, config: &TcpConfig) -> Result<HashMap<i16, (i16, i16)>, ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("rill"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let body = self
            .round_trip(
                ApiKey::ApiVersions,
                3,
                &RequestKind::ApiVersions(req),
                timeout,
                None,
            )
            .await?
            .ok_or(ClientError::NoResponse)?;
        // (The response header of ApiVersions is v0 at every version: no tagged fields.)
        let decode = |version| match decode_response(ApiKey::ApiVersions, version, body.clone()) {
            Ok(ResponseKind::ApiVersions(r)) => Ok(r),
            Ok(_) => Err(ClientError::NoResponse),
            Err(e) => Err(ClientError::Network(format!("{}: {e}", self.addr))),
        };
        let resp: ApiVersionsResponse = match decode(3) {
            Ok(r) if r.error_code != ResponseError::UnsupportedVersion.code() => r,
            _ => decode(0)?,
        };
        if resp.error_code != 0 && resp.error_code != ResponseError::UnsupportedVersion.code() {
            crate::client::check(resp.error_code, None)?;
        }
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The version to send `key` in: the newest both sides speak.
    fn version_for(&self, key: ApiKey) -> Result<i16, ClientError> {
        let ours = client_max(key).ok_or(ClientError::Kafka {
            error: ResponseError::UnsupportedVersion,
            message: Some(format!("rill's clients do not send {key:?}")),
        })?;
        let (min, max) =
            self.versions
                .get(&(key as i16))
                .copied()
                .ok_or_else(|| ClientError::Kafka {
                    error: ResponseError::UnsupportedVersion,
                    message: Some(format!("{} does not support {key:?}", self.addr)),
                })?;
        let v = ours.min(max);
        if v < min {
            return Err(ClientError::Kafka {
                error: ResponseError::UnsupportedVersion,
                message: Some(format!(
                    "{} speaks {key:?} v{min}-v{max}, rill's clients at most v{ours}",
                    self.addr
                )),
            });
        }
        Ok(v)
    }

    async fn call(
        &self,
        mut request: RequestKind,
        config: &TcpConfig,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Option<ResponseKind>, ClientError> {
        let key = api_key(&request).ok_or_else(|| {
            ClientError::Unexpected("rill's clients do not send this request".into())
        })?;
        let version = self.version_for(key)?;
        fit_request(&mut request, version);
        // Requests the broker may hold get that time on top of the request timeout.
        let held_ms = match &request {
            RequestKind::Fetch(r) => r.max_wait_ms.max(0) as u64,
            RequestKind::JoinGroup(r) => {
                r.rebalance_timeout_ms.max(r.session_timeout_ms).max(0) as u64
            }
            RequestKind::SyncGroup(_) => 300_000,
            _ => 0,
        };
        let timeout = Duration::from_millis(config.request_timeout_ms + held_ms);
        let Some(body) = self
            .round_trip(key, version, &request, timeout, written)
            .await?
        else {
            return Ok(None);
        };
        let resp = decode_response(key, version, body)
            .map_err(|e| ClientError::Network(format!("{}: {e}", self.addr)))?;
        Ok(Some(resp))
    }

    /// Sends one request; returns the response body after the correlation id, or `None` for
    /// a produce with acks=0.
    async fn round_trip(
        &self,
        key: ApiKey,
        version: i16,
        request: &RequestKind,
        timeout: Duration,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Option<Bytes>, ClientError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(ClientError::Network(format!(
                "connection to {} is closed",
                self.addr
            )));
        }
        let correlation = self.next_correlation.fetch_add(1, Ordering::SeqCst);
        // A produce's large record batches are written beside the frame, not copied into it.
        let mut taken = Vec::new();
        let aside;
        let request = match request {
            RequestKind::Produce(p) => {
                let mut p = p.clone();
                for d in p
                    .topic_data
                    .iter_mut()
                    .flat_map(|t| t.partition_data.iter_mut())
                {
                    set_aside(&mut d.records, &mut taken);
                }
                aside = RequestKind::Produce(p);
                &aside
            }
            other => other,
        };
        // Room for the small records copied in: the buffer is not regrown on the way.
        let mut buf = BytesMut::with_capacity(256 + records_len(request));
        buf.extend_from_slice(&[0; 4]);
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        kafka_protocol::protocol::Encodable::encode(
            &header,
            &mut buf,
            key.request_header_version(version),
        )
        .map_err(|e| ClientError::Unexpected(format!("cannot encode a request header: {e}")))?;
        request.encode(&mut buf, version).map_err(|e| {
            ClientError::Unexpected(format!("cannot encode {key:?} v{version}: {e}"))
        })?;
        finish_frame(&mut buf);
        let flexible = key.request_header_version(version) >= 2;
        let chunks = split_frame(buf, taken, flexible).map_err(|e| {
            ClientError::Unexpected(format!("cannot encode {key:?} v{version}: {e}"))
        })?;
        let no_response = matches!(request, RequestKind::Produce(p) if p.acks == 0);
        let rx = if no_response {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            lock(&self.pending).insert(correlation, tx);
            Some(rx)
        };
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = write_all_vectored(&mut *w, &chunks).await {
                self.dead.store(true, Ordering::SeqCst);
                lock(&self.pending).remove(&correlation);
                return Err(ClientError::Network(format!(
                    "writing to {}: {e}",
                    self.addr
                )));
            }
        }
        if let Some(w) = written {
            let _ = w.send(());
        }
        let Some(rx) = rx else { return Ok(None) };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r.map(Some),
            Ok(Err(_)) => Err(ClientError::Network(format!(
                "connection to {} closed",
                self.addr
            ))),
            Err(_) => {
                lock(&self.pending).remove(&correlation);
                Err(ClientError::Kafka {
                    error: ResponseError::RequestTimedOut,
                    message: Some(format!("{key:?} to {} got no answer in time", self.addr)),
                })
            }
        }
    }
}

/// Writes `chunks` in order with as few (vectored) writes as the socket takes.
async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    let mut skip = 0;
    loop {
        // Past what is written (and empty chunks).
        while first < chunks.len() && skip >= chunks[first].len() {
            skip -= chunks[first].len();
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&chunks[first][skip..])
            .chain(chunks[first + 1..].iter().map(|c| &c[..]))
            .map(std::io::IoSlice::new)
            .collect();
        let n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        skip += n;
    }
}

/// The record bytes a request carries (a Produce's), to size its frame.
fn records_len(request: &RequestKind) -> usize {
    match request {
        RequestKind::Produce(p) => p
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .map(|d| d.records.as_ref().map_or(0, |r| r.len()) + 64)
            .sum(),
        _ => 0,
    }
}

/// Reads response frames and hands each to the request with its correlation id; when the
/// connection breaks, fails every waiting request.
async fn read_responses(
    rd: tokio::net::tcp::OwnedReadHalf,
    pending: Arc<Mutex<HashMap<i32, Pending>>>,
    dead: Arc<AtomicBool>,
    max_bytes: usize,
    addr: String,
) {
    // Buffered: a length and a small response in one read, not a syscall for each.
    let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
    let reason = loop {
        let len = match rd.read_i32().await {
            Ok(len) => len,
            Err(e) => break format!("{addr} closed the connection ({e})"),
        };
        if len < 4 || len as usize > max_bytes {
            break format!("{addr} sent a {len}-byte frame");
        }
        let mut frame = match read_body(&mut rd, len as usize).await {
            Ok(f) => f,
            Err(e) => break format!("{addr} closed the connection mid-response ({e})"),
        };
        let correlation = frame.get_i32();
        if let Some(tx) = lock(&pending).remove(&correlation) {
            let _ = tx.send(Ok(frame));
        }
    };
    dead.store(true, Ordering::SeqCst);
    tracing::debug!(%reason, "connection ended");
    for (_, tx) in lock(&pending).drain() {
        let _ = tx.send(Err(ClientError::Network(reason.clone())));
    }
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed {0:?} response header")]
    Header(ApiKey),
    #[error("no schema for {0:?} v{1} responses")]
    NoSchema(ApiKey, i16),
    #[error("{0:?} v{1} response refused: {2}")]
    Malformed(ApiKey, i16, WalkError),
    #[error("{0:?} v{1} response does not decode: {2}")]
    Undecodable(ApiKey, i16, String),
}

/// Reads the response to a `key` request sent in `version`, from the frame after the
/// correlation id: the rest of the response header, the bounded schema walk, then
/// kafka-protocol's decoder. As [`super::decode_request`] does for requests, so a buggy or
/// hostile broker can make the client refuse an answer but never panic nor abort on a huge
/// allocation (the `response_decoding` fuzz target drives it with arbitrary bytes).
pub fn decode_response(
    key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<ResponseKind, BadResponse> {
    let schema = response_schema(key as i16, version).ok_or(BadResponse::NoSchema(key, version))?;
    if key.response_header_version(version) >= 1 {
        skip_tagged(&mut body).ok_or(BadResponse::Header(key))?;
    }
    // A response takes at most one element per byte, so the total is bounded by the frame
    // (`max_response_bytes`); the per-array and tagged-field limits still apply.
    walk(schema, version, &body, usize::MAX)
        .map_err(|e| BadResponse::Malformed(key, version, e))?;
    ResponseKind::decode(key, &mut body, version)
        .map_err(|e| BadResponse::Undecodable(key, version, e.to_string()))
}

/// Skips a response header v1's tagged-field section (`None` if it is malformed or holds more
/// than Kafka's limit of tagged fields).
fn skip_tagged(body: &mut Bytes) -> Option<()> {
    let varint = |b: &mut Bytes| -> Option<u32> {
        let mut v = 0u32;
        for i in 0..5 {
            let byte = b.try_get_u8().ok()?;
            v |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let count = varint(body)?;
    if count as usize > MAX_TAGGED_FIELDS {
        return None;
    }
    for _ in 0..count {
        varint(body)?;
        let size = varint(body)? as usize;
        if size > body.remaining() {
            return None;
        }
        body.advance(size);
    }
    Some(())
}

/// The API key of a request rill's clients send.
fn api_key(req: &RequestKind) -> Option<ApiKey> {
    Some(match req {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::Heartbeat(_) => ApiKey::Heartbeat,
        RequestKind::LeaveGroup(_) => ApiKey::LeaveGroup,
        RequestKind::SyncGroup(_) => ApiKey::SyncGroup,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::DeleteRecords(_) => ApiKey::DeleteRecords,
        RequestKind::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::DeleteGroups(_) => ApiKey::DeleteGroups,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::DescribeCluster(_) => ApiKey::DescribeCluster,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::AddPartitionsToTxn(_) => ApiKey::AddPartitionsToTxn,
        RequestKind::AddOffsetsToTxn(_) => ApiKey::AddOffsetsToTxn,
        RequestKind::EndTxn(_) => ApiKey::EndTxn,
        RequestKind::TxnOffsetCommit(_) => ApiKey::TxnOffsetCommit,
        RequestKind::WriteTxnMarkers(_) => ApiKey::WriteTxnMarkers,
        RequestKind::DescribeProducers(_) => ApiKey::DescribeProducers,
        RequestKind::DescribeTransactions(_) => ApiKey::DescribeTransactions,
        RequestKind::ListTransactions(_) => ApiKey::ListTransactions,
        RequestKind::OffsetDelete(_) => ApiKey::OffsetDelete,
        RequestKind::ElectLeaders(_) => ApiKey::ElectLeaders,
        RequestKind::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
        RequestKind::AlterPartitionReassignments(_) => ApiKey::AlterPartitionReassignments,
        RequestKind::ListPartitionReassignments(_) => ApiKey::ListPartitionReassignments,
        RequestKind::UnregisterBroker(_) => ApiKey::UnregisterBroker,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvarint(out: &mut Vec<u8>, mut n: u32) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn refusal(key: ApiKey, version: i16, body: Vec<u8>) -> String {
        match decode_response(key, version, Bytes::from(body)) {
            Ok(r) => panic!("decoded: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// An array count of 2^31 (compact) or 2^31 - 1 (classic) in a few bytes is refused before
    /// kafka-protocol would reserve room for that many brokers (hundreds of gigabytes: an
    /// abort, not an error).
    #[test]
    fn a_response_claiming_two_billion_elements_is_refused_before_allocating() {
        // Metadata v1: the broker count first.
        let mut classic = i32::MAX.to_be_bytes().to_vec();
        classic.extend_from_slice(&[0; 16]);
        let e = refusal(ApiKey::Metadata, 1, classic);
        assert!(e.contains("more than 1,000,000 elements"), "{e}");
        // Metadata v12: header tags, throttle time, then the compact broker count + 1.
        let mut compact = vec![0, 0, 0, 0, 0];
        uvarint(&mut compact, (1 << 31) + 1);
        compact.extend_from_slice(&[0; 16]);
        let e = refusal(ApiKey::Metadata, 12, compact);
        assert!(e.contains("more than 1,000,000 elements"), "{e}");
    }

    /// Heartbeat v4 with `n` unknown tagged fields (empty) in its body.
    fn heartbeat_with_tags(n: u32) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0, 7, 0, 0];
        uvarint(&mut b, n);
        for tag in 0..n {
            uvarint(&mut b, 100 + tag);
            b.push(0);
        }
        b
    }

    #[test]
    fn more_than_ten_thousand_tagged_fields_are_refused() {
        let e = refusal(ApiKey::Heartbeat, 4, heartbeat_with_tags(10_001));
        assert!(e.contains("more than 10,000 tagged fields"), "{e}");
        let Ok(ResponseKind::Heartbeat(r)) = decode_response(
            ApiKey::Heartbeat,
            4,
            Bytes::from(heartbeat_with_tags(10_000)),
        ) else {
            panic!("10,000 tagged fields are allowed");
        };
        assert_eq!(
            (r.throttle_time_ms, r.unknown_tagged_fields.len()),
            (7, 10_000)
        );
        // In the response header too.
        let mut header = vec![];
        uvarint(&mut header, 10_001);
        for tag in 0..10_001 {
            uvarint(&mut header, tag);
            header.push(0);
        }
        header.extend_from_slice(&heartbeat_with_tags(0)[1..]);
        let e = refusal(ApiKey::Heartbeat, 4, header);
        assert!(e.contains("header"), "{e}");
    }

    /// A response the walk cannot place (a string longer than the frame) is an error naming
    /// the API and version, not a panic.
    /// Partial writes (a 7-byte pipe) and empty chunks: every byte goes, in order.
    #[tokio::test]
    async fn vectored_writes_send_every_chunk_in_order() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let chunks: Vec<Bytes> = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![b'x'; 50]),
            Bytes::from_static(b"z"),
            Bytes::new(),
        ];
        let expected = chunks.concat();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        write_all_vectored(&mut a, &chunks).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[test]
    fn malformed_responses_are_errors() {
        let e = refusal(
            ApiKey::FindCoordinator,
            0,
            vec![0, 0, 0, 0, 0, 1, 0x7f, 0xff],
        );
        assert!(e.starts_with("FindCoordinator v0 response refused"), "{e}");
        let e = refusal(ApiKey::Heartbeat, 99, vec![]);
        assert!(e.contains("no schema"), "{e}");
    }
}
