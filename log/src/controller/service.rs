//! The controller role of a `rill broker` process (KRaft's controller): the controller
//! listener serving the quorum's Raft RPCs and the brokers' requests, the active
//! controller's decisions made one at a time against the committed image and committed
//! through the quorum, and the session timer that fences silent brokers. Also
//! [`ControllerClient`], the brokers' way to the active controller.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::decisions::{Controller, ControllerConfig, ControllerError, NewTopic};
use super::image::MetadataImage;
use super::quorum::{Quorum, QuorumConfig, QuorumError};
use super::raft::network::{Peer, RaftRequest, RaftResponse};
use super::records::MetadataRecord;
use super::rpc::{
    read_frame, write_frame, ControllerRequest, ControllerResponse, QuorumInfo, WireError,
};
use crate::random::SplitMix64;
use crate::time::SharedClock;

/// The active controller's own state beside the image.
#[derive(Debug)]
struct Active {
    controller: Controller,
    /// The Raft term this controller last became active in: a new term means new sessions
    /// for every broker.
    term: Option<u64>,
}

/// A running controller.
#[derive(Debug)]
pub struct ControllerService {
    quorum: Quorum,
    active: tokio::sync::Mutex<Active>,
    clock: SharedClock,
    rng: Mutex<SplitMix64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl From<QuorumError> for WireError {
    fn from(e: QuorumError) -> Self {
        match e {
            QuorumError::NotLeader { leader } => WireError::not_controller(leader),
            other => WireError::new(ResponseError::UnknownServerError, other.to_string()),
        }
    }
}

impl ControllerService {
    /// Starts the controller on `listener` (its controller listener).
    pub async fn start(
        quorum: QuorumConfig,
        config: ControllerConfig,
        listener: TcpListener,
        clock: SharedClock,
        seed: u64,
    ) -> Result<Arc<ControllerService>, QuorumError> {
        let addr = listener.local_addr()?;
        let session_ms = config.session_timeout_ms;
        let balance_every = config
            .auto_leader_rebalance
            .then_some(Duration::from_millis(
                config.leader_imbalance_check_interval_ms.max(1),
            ));
        let quorum = Quorum::start(quorum, addr).await?;
        let service = Arc::new(ControllerService {
            quorum,
            active: tokio::sync::Mutex::new(Active {
                controller: Controller::new(config),
                term: None,
            }),
            clock,
            rng: Mutex::new(SplitMix64::new(seed)),
            tasks: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(serve(listener, Arc::downgrade(&service)));
        let sessions = tokio::spawn(expire_sessions(Arc::downgrade(&service), session_ms));
        crate::sync::plain(&service.tasks).extend([server, sessions]);
        if let Some(every) = balance_every {
            let balance = tokio::spawn(balance_leaders(Arc::downgrade(&service), every));
            crate::sync::plain(&service.tasks).push(balance);
        }
        Ok(service)
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// Stops serving and leaves the quorum.
    pub async fn shutdown(&self) {
        for t in crate::sync::plain(&self.tasks).drain(..) {
            t.abort();
        }
        self.quorum.shutdown().await;
    }

    /// Decides with the active controller's logic against the committed image and commits
    /// what it decided (unless `commit` is false: a validation). Returns the offset of the
    /// commit (or of the image decided on) and the decision's own answer.
    async fn decide<T>(
        &self,
        commit: bool,
        f: impl FnOnce(
            &mut Controller,
            &MetadataImage,
            i64,
        ) -> Result<(Vec<MetadataRecord>, T), ControllerError>,
    ) -> Result<(u64, T), WireError> {
        let mut active = self.active.lock().await;
        if !self.quorum.is_leader() {
            return Err(WireError::not_controller(self.quorum.leader()));
        }
        // Everything committed before is applied here before deciding.
        self.quorum.linearize().await?;
        let now = self.clock.now_ms();
        let image = self.quorum.shared().image();
        let term = self.quorum.term();
        if active.term != Some(term) {
            tracing::info!(
                node = self.quorum.node_id(),
                term,
                "this controller is active"
            );
            active.controller.on_activated(&image, now);
            active.term = Some(term);
        }
        let (records, out) = f(&mut active.controller, &image, now)?;
        let offset = if records.is_empty() || !commit {
            image.offset
        } else {
            self.quorum.write(records).await?
        };
        Ok((offset, out))
    }

    async fn handle(&self, req: ControllerRequest) -> ControllerResponse {
        let result = match req {
            ControllerRequest::Raft(r) => return ControllerResponse::Raft(self.raft(r).await),
            ControllerRequest::FetchMetadata {
                offset,
                max_wait_ms,
            } => {
                return ControllerResponse::Metadata(self.fetch_metadata(offset, max_wait_ms).await)
            }
            ControllerRequest::DescribeQuorum => {
                return ControllerResponse::Quorum(self.describe())
            }
            ControllerRequest::Register(reg) => {
                let id = reg.id;
                self.decide(true, |c, image, now| {
                    let records = c.register(image, &reg, now)?;
                    let existing = image.brokers.get(&id).map(|b| b.epoch);
                    Ok((records, existing))
                })
                .await
                .map(|(offset, existing)| {
                    // A retry of a committed registration keeps its epoch.
                    let fresh = self
                        .quorum
                        .shared()
                        .with_image(|i| i.brokers.get(&id).map(|b| b.epoch));
                    ControllerResponse::Registered {
                        epoch: fresh.or(existing).unwrap_or(offset),
                    }
                })
            }
            ControllerRequest::Heartbeat(hb) => self
                .decide(true, |c, image, now| c.heartbeat(image, &hb, now))
                .await
                .map(|(_, reply)| ControllerResponse::Heartbeat(reply)),
            ControllerRequest::AlterPartition(alter) => self
                .decide(true, |c, image, _| {
                    Ok((c.alter_partition(image, &alter)?, ()))
                })
                .await
                .map(|(offset, ())| ControllerResponse::Committed { offset }),
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut results = Vec::with_capacity(topics.len());
                let mut last = self.quorum.shared().offset();
                for spec in topics {
                    let id = crate::sync::plain(&self.rng).next_uuid();
                    let topic = NewTopic {
                        name: spec.name,
                        id,
                        partitions: spec.partitions,
                        replication_factor: spec.replication_factor,
                        assignments: spec.assignments,
                        configs: spec.configs,
                    };
                    let r = self
                        .decide(!validate_only, |c, image, _| {
                            Ok((c.create_topic(image, &topic)?, ()))
                        })
                        .await;
                    if let Err(e) = &r {
                        if e.is_not_controller() && results.is_empty() {
                            // Nothing done yet: the broker asks the active controller.
                            return ControllerResponse::Error(e.clone());
                        }
                    }
                    results.push(r.map(|(offset, ())| {
                        last = last.max(offset);
                        id
                    }));
                }
                Ok(ControllerResponse::Topics {
                    results,
                    offset: last,
                })
            }
            ControllerRequest::DeleteTopics { names } => {
                let mut results = Vec::with_capacity(names.len());
                let mut last = self.quorum.shared().offset();
                for name in names {
                    let r = self
                        .decide(true, |c, image, _| {
                            let id = image.topic(&name).map(|t| t.id).unwrap_or_default();
                            Ok((c.delete_topic(image, &name)?, id))
                        })
                        .await;
                    if let Err(e) = &r {
                        if e.is_not_controller() && results.is_empty() {
                            // Nothing done yet: the broker asks the active controller.
                            return ControllerResponse::Error(e.clone());
                        }
                    }
                    results.push(r.map(|(offset, id)| {
                        last = last.max(offset);
                        id
                    }));
                }
                Ok(ControllerResponse::Topics {
                    results,
                    offset: last,
                })
            }
            ControllerRequest::CreatePartitions {
                topic,
                total,
                assignments,
            } => self
                .decide(true, |c, image, _| {
                    Ok((
                        c.create_partitions(image, &topic, total, assignments.as_deref())?,
                        (),
                    ))
                })
                .await
                .map(|(offset, ())| ControllerResponse::Committed { offset }),
            ControllerRequest::SetTopicConfigs { topic, configs } => self
                .decide(true, |c, image, _| {
                    Ok((c.set_topic_configs(image, &topic, configs)?, ()))
                })
                .await
                .map(|(offset, ())| ControllerResponse::Committed { offset }),
            ControllerRequest::AllocateProducerIds {
                broker,
                broker_epoch,
            } => self
                .decide(true, |c, image, _| {
                    c.allocate_producer_ids(image, broker, broker_epoch)
                })
                .await
                .map(|(_, start)| {
                    let len = self
                        .active
                        .try_lock()
                        .map_or(1_000, |a| a.controller.config().producer_id_block_size);
                    ControllerResponse::ProducerIds { start, len }
                }),
            ControllerRequest::UnregisterBroker { id } => self
                .decide(true, |c, image, _| {
                    Ok((c.unregister_broker(image, id)?, ()))
                })
                .await
                .map(|(offset, ())| ControllerResponse::Committed { offset }),
            ControllerRequest::AlterReassignments { targets } => self
                .decide(true, |c, image, _| {
                    Ok(c.alter_partition_reassignments(image, &targets))
                })
                .await
                .map(|(offset, results)| ControllerResponse::Reassignments {
                    results: results
                        .into_iter()
                        .map(|(t, p, e)| (t, p, e.map(WireError::from)))
                        .collect(),
                    offset,
                }),
            ControllerRequest::ElectLeaders {
                election,
                partitions,
            } => self
                .decide(true, |c, image, _| {
                    Ok(c.elect_leaders(image, election, partitions.as_deref()))
                })
                .await
                .map(|(offset, results)| ControllerResponse::Elections {
                    results: results
                        .into_iter()
                        .map(|(topic, ps)| {
                            let ps = ps
                                .into_iter()
                                .map(|(p, e)| (p, e.map(WireError::from)))
                                .collect();
                            (topic, ps)
                        })
                        .collect(),
                    offset,
                }),
        };
        result.unwrap_or_else(ControllerResponse::Error)
    }

    async fn raft(&self, req: RaftRequest) -> RaftResponse {
        let raft = self.quorum.raft();
        match req {
            RaftRequest::AppendEntries(r) => {
                RaftResponse::AppendEntries(raft.append_entries(r).await)
            }
            RaftRequest::Vote(r) => RaftResponse::Vote(raft.vote(r).await),
            RaftRequest::InstallSnapshot(r) => {
                RaftResponse::InstallSnapshot(raft.install_snapshot(r).await)
            }
        }
    }

    /// The metadata log after `offset`, served by any controller from what it has applied
    /// (a follower of the quorum may be a little behind; the broker then simply waits).
    async fn fetch_metadata(
        &self,
        offset: u64,
        max_wait_ms: u64,
    ) -> super::raft::state_machine::MetadataDelta {
        let shared = self.quorum.shared();
        if shared.offset() <= offset && max_wait_ms > 0 {
            let mut applied = shared.subscribe();
            let wait = applied.wait_for(|o| *o > offset);
            let _ =
                tokio::time::timeout(Duration::from_millis(max_wait_ms.min(10_000)), wait).await;
        }
        shared.delta_since(offset)
    }

    fn describe(&self) -> QuorumInfo {
        QuorumInfo {
            node_id: self.quorum.node_id(),
            leader: self.quorum.leader(),
            term: self.quorum.term(),
            voters: self.quorum.voters().clone(),
            applied: self.quorum.shared().offset(),
        }
    }
}

/// Serves the controller listener while the service lives.
async fn serve(listener: TcpListener, service: std::sync::Weak<ControllerService>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, service.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(mut stream: TcpStream, service: std::sync::Weak<ControllerService>) {
    loop {
        let req: ControllerRequest = match read_frame(&mut stream).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "controller connection dropped");
                return;
            }
        };
        let Some(service) = service.upgrade() else {
            return;
        };
        let resp = service.handle(req).await;
        drop(service);
        if write_frame(&mut stream, &resp).await.is_err() {
            return;
        }
    }
}

/// Fences brokers whose sessions expired, checking sixteen times per session timeout (a
/// fence comes at most a sixteenth of a session late; a check with nothing to fence costs
/// one quorum round trip).
async fn expire_sessions(service: std::sync::Weak<ControllerService>, session_ms: i64) {
    let period = Duration::from_millis((session_ms / 16).clamp(20, 1_000) as u64);
    loop {
        tokio::time::sleep(period).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if service.quorum.is_leader() {
            let result = service
                .decide(true, |c, image, now| {
                    Ok((c.expire_sessions(image, now), ()))
                })
                .await;
            if let Err(e) = result {
                if !e.is_not_controller() {
                    tracing::warn!(error = %e, "fencing expired brokers failed");
                }
            }
        }
    }
}

/// The automatic leader rebalance (`auto.leader.rebalance.enable`): every `every`
/// (`leader.imbalance.check.interval.seconds`), the active controller moves leaderships
/// back to their preferred replicas where those are in the ISR.
async fn balance_leaders(service: std::sync::Weak<ControllerService>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if service.quorum.is_leader() {
            let result = service
                .decide(true, |c, image, _| Ok((c.balance_leaders(image), ())))
                .await;
            if let Err(e) = result {
                if !e.is_not_controller() {
                    tracing::warn!(error = %e, "the leader rebalance failed");
                }
            }
        }
    }
}

/// A broker's connection to the active controller: it finds the leader among the voters
/// and follows it when it moves.
#[derive(Debug)]
pub struct ControllerClient {
    voters: BTreeMap<u64, String>,
    peers: BTreeMap<u64, Peer>,
    leader: Option<u64>,
    next: usize,
    timeout: Duration,
}

/// Why a controller request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControllerCallError {
    /// The controller answered with a refusal.
    #[error(transparent)]
    Refused(WireError),
    #[error("no controller answered: {0}")]
    Unreachable(io::Error),
}

impl ControllerClient {
    pub fn new(voters: BTreeMap<u64, String>, timeout: Duration) -> Self {
        let peers = voters
            .iter()
            .map(|(id, addr)| (*id, Peer::new(*id, addr.clone())))
            .collect();
        ControllerClient {
            voters,
            peers,
            leader: None,
            next: 0,
            timeout,
        }
    }

    /// Sends `req` to the active controller, following NOT_CONTROLLER answers and trying
    /// the voters in turn (an election takes a moment) until the client's timeout.
    pub async fn call(
        &mut self,
        req: &ControllerRequest,
    ) -> Result<ControllerResponse, ControllerCallError> {
        let ids: Vec<u64> = self.voters.keys().copied().collect();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last = io::Error::other("no voters");
        while tokio::time::Instant::now() < deadline {
            let target = self.leader.unwrap_or_else(|| {
                self.next = (self.next + 1) % ids.len();
                ids[self.next]
            });
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let peer = self.peers.get_mut(&target).expect("a voter");
            match peer.call::<_, ControllerResponse>(req, left).await {
                Ok(ControllerResponse::Error(e)) if e.is_not_controller() => {
                    self.leader = e.leader.filter(|l| self.voters.contains_key(l));
                    if self.leader.is_none_or(|l| l == target) {
                        // An election is under way, or the new leader is not ready yet:
                        // give it a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(ControllerResponse::Error(e)) => return Err(ControllerCallError::Refused(e)),
                Ok(resp) => {
                    self.leader = Some(target);
                    return Ok(resp);
                }
                Err(e) => {
                    self.leader = None;
                    last = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(ControllerCallError::Unreachable(last))
    }
}
