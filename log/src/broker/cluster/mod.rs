//! A broker in a cluster (KRaft's broker role): it registers with the active controller,
//! heartbeats to keep its session, follows the committed metadata log into its own
//! [`MetadataImage`], and turns each partition's record into its role here: leader (a
//! [`LeaderPartition`] tracking followers, the ISR and the high watermark), follower (a
//! replica fetcher copies the leader's batches, see [`fetcher`]), or neither. ISR changes
//! the leaders decide go to the controller as `AlterPartition`.
//!
//! Without a cluster configuration none of this runs: the broker is the single node it has
//! always been.

mod admin;
pub(crate) mod coordinators;
pub(crate) mod fetcher;
pub(crate) mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{Broker, BrokerError, TopicMeta};
use crate::controller::decisions::{AlterPartition, Heartbeat, RegisterBroker};
use crate::controller::raft::state_machine::MetadataDelta;
use crate::controller::rpc::{ControllerRequest, ControllerResponse};
use crate::controller::service::{ControllerCallError, ControllerClient};
use crate::controller::{MetadataImage, PartitionRecord};
use crate::replication::{AlterIsr, LeaderAndIsr, LeaderPartition};
use crate::types::{LeaderEpoch, NodeId, Offset, TopicPartition};

/// A broker's cluster settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `controller.quorum.voters`: each controller's `node.id` and controller listener.
    pub voters: BTreeMap<u64, String>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the
    /// ISR.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.max.bytes`: bytes per partition in a follower's fetch.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub replica_fetch_response_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits on the leader for data.
    pub replica_fetch_wait_max_ms: i32,
    /// `replica.fetch.min.bytes`: the bytes a follower's fetch waits for (up to
    /// `replica.fetch.wait.max.ms`) before the leader answers.
    pub replica_fetch_min_bytes: i32,
    /// `follower.replication.throttled.rate` (bytes per second): how fast this broker copies
    /// the partitions a reassignment is adding it to (`None`: as fast as it can). Kafka
    /// applies it to the replicas its reassignment tool lists in the topic's
    /// `follower.replication.throttled.replicas`; rill to every adding replica.
    pub follower_throttled_rate: Option<u64>,
    /// `replica.fetch.backoff.ms`: the pause after a failed fetch.
    pub replica_fetch_backoff_ms: u64,
    /// How long a request to the controller may take before it is tried again.
    pub controller_request_timeout_ms: u64,
    /// `controlled.shutdown.enable`: a stopping broker first asks the controller to move
    /// its leaderships away (and waits up to [`CONTROLLED_SHUTDOWN_WAIT`] for that).
    pub controlled_shutdown: bool,
}

/// The longest a controlled shutdown waits for the controller's approval; past it the
/// broker stops anyway (its partitions then fail over as after a crash).
pub const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

impl ClusterConfig {
    pub fn new(voters: BTreeMap<u64, String>) -> Self {
        ClusterConfig {
            voters,
            rack: None,
            heartbeat_interval_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_min_bytes: 1,
            follower_throttled_rate: None,
            replica_fetch_backoff_ms: 1_000,
            controller_request_timeout_ms: 10_000,
            controlled_shutdown: true,
        }
    }
}

/// This broker's role for one partition it holds a replica of.
#[derive(Debug)]
pub(crate) enum Role {
    Leader(LeaderPartition),
    Follower {
        leader: NodeId,
        leader_epoch: i32,
    },
    /// A replica with no leader to follow (the partition is offline).
    Idle,
}

/// The cluster side of a broker.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: ClusterConfig,
    pub(crate) node: NodeId,
    incarnation: Uuid,
    /// The broker epoch the controller gave this incarnation (0 until registered).
    epoch: AtomicU64,
    pub(crate) image: RwLock<MetadataImage>,
    pub(crate) roles: Mutex<BTreeMap<TopicPartition, Role>>,
    /// Wakes the replica fetchers when the partitions they follow change.
    pub(crate) fetchers_changed: tokio::sync::Notify,
    fetchers: Mutex<BTreeMap<NodeId, JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The image changed (for requests waiting until their own change is visible here).
    applied: tokio::sync::watch::Sender<u64>,
    fenced: AtomicBool,
    /// A controlled shutdown began: heartbeats ask the controller to move leaderships away.
    shutting_down: AtomicBool,
    /// Wakes the heartbeat task to send one at once.
    heartbeat_now: tokio::sync::Notify,
    /// The controller answered that this broker leads nothing any more and may stop.
    may_stop: tokio::sync::watch::Sender<bool>,
    /// Leaderships the image gave this broker while it was fenced (a new incarnation
    /// catching up with the metadata log, where an image older than its registration may
    /// still name it leader): taken up only once unfenced.
    deferred: Mutex<BTreeSet<TopicPartition>>,
    /// Internal partitions whose coordinator runs here, with the leader epoch it loaded at.
    pub(crate) coordinating: Mutex<BTreeMap<TopicPartition, i32>>,
    /// Held while the coordinators are brought in line with leadership (one at a time).
    pub(crate) syncing_coordinators: Mutex<()>,
    /// Held while a producer-id block is asked of the controller (one request at a time).
    refilling_producer_ids: tokio::sync::Mutex<()>,
    /// Internal topics whose creation was asked of the controller and not yet answered.
    pub(crate) creating: Mutex<BTreeSet<&'static str>>,
}

impl Cluster {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn image(&self) -> std::sync::RwLockReadGuard<'_, MetadataImage> {
        crate::sync::read(&self.image)
    }

    /// A client for one request to the active controller.
    pub(crate) fn controller(&self) -> ControllerClient {
        ControllerClient::new(
            self.config.voters.clone(),
            Duration::from_millis(self.config.controller_request_timeout_ms),
        )
    }

    /// Waits (up to `timeout`) until this broker has applied the metadata log through
    /// `offset`: an admin request answers once its change is visible here.
    pub(crate) async fn wait_for_offset(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|o| *o >= offset)).await;
        reached.is_ok()
    }
}

impl Broker {
    /// The cluster side, when this broker is part of one.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Whether this broker runs in a cluster (with controllers) rather than alone.
    pub fn is_clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// Joins the cluster whose controllers are `config.voters`: registers (with the
    /// advertised listener in the broker's config), then keeps a session with heartbeats,
    /// follows the metadata log and serves and replicates partitions as it says. Returns
    /// once registered; the rest runs in the background until the broker is dropped.
    pub async fn join_cluster(
        self: &Arc<Self>,
        config: ClusterConfig,
        clean_shutdown: bool,
    ) -> Result<(), ControllerCallError> {
        let incarnation = crate::sync::plain(&self.rng).next_uuid();
        let _ = self.me.set(Arc::downgrade(self));
        let cluster = Arc::new(Cluster {
            node: NodeId(self.config.node_id),
            incarnation,
            epoch: AtomicU64::new(0),
            image: RwLock::new(MetadataImage::default()),
            roles: Mutex::new(BTreeMap::new()),
            fetchers_changed: tokio::sync::Notify::new(),
            fetchers: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
            applied: tokio::sync::watch::channel(0).0,
            fenced: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            heartbeat_now: tokio::sync::Notify::new(),
            may_stop: tokio::sync::watch::channel(false).0,
            deferred: Mutex::new(BTreeSet::new()),
            coordinating: Mutex::new(BTreeMap::new()),
            syncing_coordinators: Mutex::new(()),
            refilling_producer_ids: tokio::sync::Mutex::new(()),
            creating: Mutex::new(BTreeSet::new()),
            config,
        });
        if self.cluster.set(Arc::clone(&cluster)).is_err() {
            return Ok(());
        }
        self.register(&cluster, clean_shutdown).await?;
        self.producer_ids().use_controller();
        self.txn.use_cluster(Arc::new(coordinators::MarkerWrites {
            broker: Arc::downgrade(self),
            runtime: tokio::runtime::Handle::current(),
        }));
        let weak = Arc::downgrade(self);
        let tasks = [
            tokio::spawn(follow_metadata(weak.clone())),
            tokio::spawn(heartbeat(weak.clone(), clean_shutdown)),
            tokio::spawn(check_isr(weak)),
        ];
        crate::sync::plain(&cluster.tasks).extend(tasks);
        Ok(())
    }

    async fn register(
        &self,
        cluster: &Cluster,
        clean_shutdown: bool,
    ) -> Result<(), ControllerCallError> {
        let req = ControllerRequest::Register(RegisterBroker {
            cluster_id: self.config.cluster_id.clone(),
            id: cluster.node,
            incarnation: cluster.incarnation,
            host: self.config.advertised_host.clone(),
            port: self.config.advertised_port,
            rack: cluster.config.rack.clone(),
            clean_shutdown,
        });
        let mut controller = cluster.controller();
        loop {
            match controller.call(&req).await {
                Ok(ControllerResponse::Registered { epoch }) => {
                    cluster.epoch.store(epoch, Ordering::Release);
                    tracing::info!(node = %cluster.node, epoch, "registered with the controller");
                    return Ok(());
                }
                Ok(other) => tracing::warn!(?other, "unexpected registration answer"),
                Err(ControllerCallError::Refused(e))
                    if e.error() == Some(ResponseError::DuplicateBrokerRegistration) =>
                {
                    // The previous incarnation's session has not expired yet.
                    tracing::info!("waiting for the previous registration's session to end");
                }
                Err(ControllerCallError::Refused(e)) => {
                    return Err(ControllerCallError::Refused(e));
                }
                Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Applies what the metadata log says since this broker's offset, then acts on it.
    fn apply_metadata(&self, cluster: &Cluster, delta: MetadataDelta) {
        let before = cluster.image().clone();
        {
            let mut image = crate::sync::write(&cluster.image);
            match delta {
                MetadataDelta::Entries(entries) => {
                    for (offset, records) in entries {
                        if offset > image.offset {
                            image.apply(offset, &records);
                        }
                    }
                }
                MetadataDelta::Image(full) => {
                    if full.offset > image.offset {
                        *image = *full;
                    }
                }
            }
        }
        let after = cluster.image().clone();
        if after.offset == before.offset {
            return;
        }
        self.reconcile(cluster, &before, &after);
        self.sync_coordinators(cluster);
        cluster.applied.send_replace(after.offset);
    }

    /// A partition this broker holds a log of but is no longer a replica of (a
    /// reassignment moved it away, maybe while this broker was down): its log is deleted,
    /// as Kafka's StopReplica with delete does. Only once this broker has caught up with the
    /// metadata log: an older image, read on the way, may not name it as a replica yet.
    fn drop_stray_replica(&self, tp: &TopicPartition) {
        if self.logs.get(tp).is_none() {
            return;
        }
        tracing::info!(%tp, "no longer a replica here; deleting the local log");
        if let Err(e) = self.logs.delete(tp) {
            tracing::error!(%tp, error = %e, "deleting the partition's log failed");
        }
    }

    /// This broker was unfenced: it takes up the leaderships it had to defer, and drops the
    /// logs of partitions it stopped being a replica of while it was away.
    fn unfenced(&self, cluster: &Cluster) {
        let deferred = std::mem::take(&mut *crate::sync::plain(&cluster.deferred));
        let image = cluster.image().clone();
        for tp in self.logs.partitions() {
            let record = image
                .topic(&tp.topic)
                .and_then(|t| t.partitions.get(&tp.partition.0));
            if record.is_some_and(|p| !p.replicas.contains(&cluster.node)) {
                crate::sync::plain(&cluster.roles).remove(&tp);
                self.waiting.wake(&tp);
                self.drop_stray_replica(&tp);
            }
        }
        let now = self.clock.now_ms();
        let mut changed = false;
        for tp in deferred {
            let record = image
                .topic(&tp.topic)
                .and_then(|t| t.partitions.get(&tp.partition.0));
            if let Some(p) = record {
                changed |= self.apply_partition(cluster, &tp, p, now);
            }
        }
        if changed {
            self.ensure_fetchers(cluster);
            cluster.fetchers_changed.notify_waiters();
        }
        self.sync_coordinators(cluster);
    }

    /// Brings topics, logs and roles here in line with the image.
    fn reconcile(&self, cluster: &Cluster, before: &MetadataImage, after: &MetadataImage) {
        let me = cluster.node;
        // Topics gone from the image: their logs go too.
        for (id, t) in &before.topics {
            if !after.topics.contains_key(id) {
                self.drop_topic_locally(&t.name);
            }
        }
        let now = self.clock.now_ms();
        let mut fetchers_changed = false;
        for topic in after.topics.values() {
            let meta = TopicMeta {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions.len() as i32,
                leader_epoch: 0,
            };
            let config_changed = before
                .topics
                .get(&topic.id)
                .is_none_or(|b| b.configs != topic.configs);
            if config_changed {
                if let Err(e) = self
                    .logs
                    .set_topic_config(&topic.name, topic.configs.clone())
                {
                    tracing::error!(topic = %topic.name, error = %e, "applying topic configs failed");
                }
                self.min_isr_changed(cluster, &topic.name, now);
            }
            if self.topic_meta(&topic.name).as_ref() != Some(&meta) {
                if let Err(e) = self.topics_write().put(meta) {
                    tracing::error!(topic = %topic.name, error = %e, "recording topic failed");
                }
            }
            for p in topic.partitions.values() {
                let old = before.partition(topic.id, p.partition);
                if old == Some(p) {
                    continue;
                }
                let tp = TopicPartition::new(topic.name.clone(), p.partition);
                if !p.replicas.contains(&me) {
                    fetchers_changed |= crate::sync::plain(&cluster.roles).remove(&tp).is_some();
                    // Produces waiting on its replication here answer NOT_LEADER_OR_FOLLOWER
                    // now, not at their timeout.
                    self.waiting.wake(&tp);
                    if !cluster.fenced.load(Ordering::Acquire) {
                        self.drop_stray_replica(&tp);
                    }
                    continue;
                }
                fetchers_changed |= self.apply_partition(cluster, &tp, p, now);
            }
        }
        if fetchers_changed {
            self.ensure_fetchers(cluster);
            cluster.fetchers_changed.notify_waiters();
        }
    }

    /// Takes up this broker's role for one partition; returns whether the set of partitions
    /// it follows changed.
    fn apply_partition(
        &self,
        cluster: &Cluster,
        tp: &TopicPartition,
        p: &PartitionRecord,
        now: i64,
    ) -> bool {
        let me = cluster.node;
        let log = match self.logs.get_or_create(tp) {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(%tp, error = %e, "cannot open the partition's log");
                return false;
            }
        };
        log.set_replicated(true);
        let mut roles = crate::sync::plain(&cluster.roles);
        let current = roles.get_mut(tp);
        let state = LeaderAndIsr {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        };
        if p.leader == me && cluster.fenced.load(Ordering::Acquire) {
            // Not before this incarnation is caught up (see `Cluster::deferred`).
            crate::sync::plain(&cluster.deferred).insert(tp.clone());
            let was = roles.insert(tp.clone(), Role::Idle);
            drop(roles);
            self.wake_if_led(tp, was.as_ref());
            return matches!(was, Some(Role::Follower { .. }));
        }
        if p.leader == me {
            if let Some(Role::Leader(l)) = current {
                if l.leader_epoch() == p.leader_epoch {
                    if let Some(hw) = l.on_committed(&state, now) {
                        drop(roles);
                        self.advance_hw(tp, hw);
                    }
                    return false;
                }
            }
            if let Err(e) = log.set_leader_epoch(LeaderEpoch(p.leader_epoch)) {
                tracing::error!(%tp, error = %e, "cannot begin the leader epoch");
                return false;
            }
            let min_isr = log.config().min_insync_replicas.max(1) as usize;
            let leader = LeaderPartition::new(
                me,
                &state,
                log.log_end_offset().0,
                log.high_watermark().0,
                min_isr,
                cluster.config.replica_lag_time_max_ms,
                now,
            );
            tracing::info!(%tp, epoch = p.leader_epoch, isr = ?p.isr, "leading");
            let was_following = matches!(
                roles.insert(tp.clone(), Role::Leader(leader)),
                Some(Role::Follower { .. })
            );
            drop(roles);
            // A sole in-sync replica moves the high watermark to its log end at once.
            self.leader_appended(tp, log.log_end_offset());
            was_following
        } else if p.has_leader() {
            if let Some(Role::Follower {
                leader,
                leader_epoch,
            }) = current
            {
                if *leader == p.leader && *leader_epoch == p.leader_epoch {
                    return false;
                }
            }
            tracing::info!(%tp, leader = %p.leader, epoch = p.leader_epoch, "following");
            let was = roles.insert(
                tp.clone(),
                Role::Follower {
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                },
            );
            drop(roles);
            self.wake_if_led(tp, was.as_ref());
            true
        } else {
            let was = roles.insert(tp.clone(), Role::Idle);
            drop(roles);
            self.wake_if_led(tp, was.as_ref());
            matches!(was, Some(Role::Follower { .. }))
        }
    }

    /// Leadership of `tp` left this broker (its role was `was`): produces waiting on its
    /// replication answer NOT_LEADER_OR_FOLLOWER now rather than at their timeout, and
    /// clients go to the new leader.
    fn wake_if_led(&self, tp: &TopicPartition, was: Option<&Role>) {
        if matches!(was, Some(Role::Leader(_))) {
            self.waiting.wake(tp);
        }
    }

    /// A topic's configs changed: the partitions led here gate their high watermark and
    /// `acks=all` on its `min.insync.replicas` from now on.
    fn min_isr_changed(&self, cluster: &Cluster, topic: &str, now: i64) {
        let mut advanced = Vec::new();
        for (tp, role) in crate::sync::plain(&cluster.roles).iter_mut() {
            let Role::Leader(l) = role else { continue };
            if tp.topic != topic {
                continue;
            }
            let Some(log) = self.logs.get(tp) else {
                continue;
            };
            let min_isr = log.config().min_insync_replicas.max(1) as usize;
            if let Some(hw) = l.set_min_isr(min_isr, now) {
                advanced.push((tp.clone(), hw));
            }
        }
        for (tp, hw) in advanced {
            self.advance_hw(&tp, hw);
        }
    }

    fn drop_topic_locally(&self, name: &str) {
        let Some(meta) = self.topic_meta(name) else {
            return;
        };
        if let Some(cluster) = self.cluster() {
            crate::sync::plain(&cluster.roles).retain(|tp, _| tp.topic != name);
        }
        for p in 0..meta.partitions {
            self.waiting.wake(&TopicPartition::new(name, p));
        }
        for p in 0..meta.partitions {
            let tp = TopicPartition::new(name, p);
            if let Err(e) = self.logs.delete(&tp) {
                tracing::error!(%tp, error = %e, "deleting the partition's log failed");
            }
        }
        if let Err(e) = self.topics_write().remove(name) {
            tracing::error!(topic = name, error = %e, "forgetting the topic failed");
        }
    }

    /// The high watermark of a partition this broker leads moved to `hw`: consumers and
    /// `acks=all` producers waiting on it go on.
    pub(crate) fn advance_hw(&self, tp: &TopicPartition, hw: i64) {
        if let Some(log) = self.logs.get(tp) {
            log.set_high_watermark(Offset(hw));
        }
        self.waiting.wake(tp);
    }

    /// After an append to a partition this broker leads: the leader's log end moved.
    pub(crate) fn leader_appended(&self, tp: &TopicPartition, log_end: Offset) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let now = self.clock.now_ms();
        let hw = match crate::sync::plain(&cluster.roles).get_mut(tp) {
            Some(Role::Leader(l)) if log_end.0 >= l.log_end_offset() => l.on_append(log_end.0, now),
            _ => None,
        };
        if let Some(hw) = hw {
            self.advance_hw(tp, hw);
        }
    }

    /// Sends a leader's ISR change to the controller, in the background; a refusal drops
    /// the change (the next check proposes again), a commit arrives through the metadata log.
    pub(crate) fn send_alter_isr(self: &Arc<Self>, tp: TopicPartition, alter: AlterIsr) {
        let Some(cluster) = self.cluster().cloned() else {
            return;
        };
        let topic_id = cluster.image().topic(&tp.topic).map(|t| t.id);
        let Some(topic_id) = topic_id else {
            return;
        };
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let req = ControllerRequest::AlterPartition(AlterPartition {
                broker: cluster.node,
                broker_epoch: cluster.epoch(),
                topic_id,
                partition: tp.partition.0,
                leader_epoch: alter.leader_epoch,
                partition_epoch: alter.partition_epoch,
                isr: alter.isr.clone(),
            });
            let result = cluster.controller().call(&req).await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            match result {
                Ok(ControllerResponse::Committed { offset }) => {
                    tracing::info!(%tp, isr = ?alter.isr, offset, "ISR change committed");
                    // The change reaches this broker through the metadata log.
                    broker.wait_for_offset(&cluster, offset).await;
                }
                Ok(_) | Err(_) => {
                    tracing::info!(%tp, isr = ?alter.isr, ?result, "ISR change not committed");
                    if let Some(Role::Leader(l)) = crate::sync::plain(&cluster.roles).get_mut(&tp) {
                        if l.leader_epoch() == alter.leader_epoch {
                            l.on_alter_failed();
                        }
                    }
                }
            }
        });
    }

    async fn wait_for_offset(&self, cluster: &Cluster, offset: u64) {
        cluster
            .wait_for_offset(
                offset,
                Duration::from_millis(cluster.config.controller_request_timeout_ms),
            )
            .await;
    }

    /// Starts a replica fetcher for each leader this broker follows a partition of.
    fn ensure_fetchers(&self, cluster: &Cluster) {
        let leaders: BTreeSet<NodeId> = crate::sync::plain(&cluster.roles)
            .values()
            .filter_map(|r| match r {
                Role::Follower { leader, .. } => Some(*leader),
                _ => None,
            })
            .collect();
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut fetchers = crate::sync::plain(&cluster.fetchers);
        // A fetcher stays (idle) once started: one per leader ever followed, at most one per
        // broker of the cluster.
        fetchers.retain(|_, task| !task.is_finished());
        for leader in leaders {
            fetchers
                .entry(leader)
                .or_insert_with(|| tokio::spawn(fetcher::run(Arc::downgrade(&me), leader)));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in crate::sync::plain(&self.tasks).drain(..) {
            t.abort();
        }
        for (_, t) in std::mem::take(&mut *crate::sync::plain(&self.fetchers)) {
            t.abort();
        }
    }
}

impl Broker {
    /// A fresh producer id; `None` when the controller could not grant a block (answered
    /// COORDINATOR_LOAD_IN_PROGRESS, which clients retry, as Kafka's coordinator answers
    /// when its next block has not come). In a cluster a used-up block is replaced by the
    /// controller's next one, asked for without holding the allocator — its callers run on
    /// the async workers, and a worker blocked on the allocator could hold up the very
    /// controller call it waits for — and one request at a time.
    pub(crate) async fn new_producer_id(&self) -> Result<Option<i64>, BrokerError> {
        if let Some(id) = self.producer_ids().take()? {
            return Ok(Some(id));
        }
        let Some(cluster) = self.cluster().cloned() else {
            return Ok(None);
        };
        let _one_at_a_time = cluster.refilling_producer_ids.lock().await;
        if let Some(id) = self.producer_ids().take()? {
            return Ok(Some(id));
        }
        let req = ControllerRequest::AllocateProducerIds {
            broker: cluster.node,
            broker_epoch: cluster.epoch(),
        };
        match cluster.controller().call(&req).await {
            Ok(ControllerResponse::ProducerIds { start, len }) => {
                let mut ids = self.producer_ids();
                ids.add_block(start, len);
                ids.take()
            }
            Ok(other) => {
                tracing::warn!(?other, "unexpected answer to a producer-id allocation");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "allocating producer ids failed");
                Ok(None)
            }
        }
    }
}

impl Broker {
    /// A controlled shutdown (Kafka's, with `controlled.shutdown.enable`): heartbeats ask
    /// the controller to take this broker out of every ISR and leadership, and this waits
    /// until the controller answers that it leads nothing (up to
    /// [`CONTROLLED_SHUTDOWN_WAIT`]), while the broker goes on serving, so clients move to
    /// the new leaders without a failed request. True when approved (or nothing to do).
    pub async fn controlled_shutdown(&self) -> bool {
        let Some(cluster) = self.cluster().cloned() else {
            return true;
        };
        if !cluster.config.controlled_shutdown || cluster.epoch() == 0 {
            return true;
        }
        tracing::info!("controlled shutdown: moving leaderships away");
        let mut approved = cluster.may_stop.subscribe();
        cluster.shutting_down.store(true, Ordering::Release);
        cluster.heartbeat_now.notify_one();
        let approval = tokio::time::timeout(CONTROLLED_SHUTDOWN_WAIT, async {
            approved.wait_for(|may| *may).await.is_ok()
        });
        match approval.await {
            Ok(true) => {
                tracing::info!("controlled shutdown approved");
                true
            }
            _ => {
                tracing::warn!("the controller did not approve the controlled shutdown in time");
                false
            }
        }
    }
}

/// Follows the metadata log: a long-polling fetch from the controllers, applied as it comes.
async fn follow_metadata(broker: Weak<Broker>) {
    let Some(cluster) = broker.upgrade().and_then(|b| b.cluster().cloned()) else {
        return;
    };
    let mut controller = cluster.controller();
    loop {
        let offset = cluster.image().offset;
        let req = ControllerRequest::FetchMetadata {
            offset,
            max_wait_ms: 500,
        };
        let result = controller.call(&req).await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        match result {
            Ok(ControllerResponse::Metadata(delta)) => broker.apply_metadata(&cluster, delta),
            Ok(other) => tracing::warn!(?other, "unexpected metadata answer"),
            Err(e) => {
                tracing::warn!(error = %e, "fetching metadata failed");
                drop(broker);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Keeps the broker's session: a heartbeat every `broker.heartbeat.interval.ms` with the
/// metadata offset applied here; a lost registration (the controller forgot this epoch) is
/// made again.
async fn heartbeat(broker: Weak<Broker>, clean_shutdown: bool) {
    let Some(cluster) = broker.upgrade().and_then(|b| b.cluster().cloned()) else {
        return;
    };
    let mut controller = cluster.controller();
    let every = Duration::from_millis(cluster.config.heartbeat_interval_ms.max(10));
    loop {
        let req = ControllerRequest::Heartbeat(Heartbeat {
            id: cluster.node,
            epoch: cluster.epoch(),
            metadata_offset: cluster.image().offset,
            want_fence: false,
            want_shutdown: cluster.shutting_down.load(Ordering::Acquire),
        });
        match controller.call(&req).await {
            Ok(ControllerResponse::Heartbeat(reply)) => {
                if reply.should_shutdown {
                    cluster.may_stop.send_replace(true);
                }
                let was = cluster.fenced.swap(reply.fenced, Ordering::AcqRel);
                if was != reply.fenced {
                    tracing::info!(fenced = reply.fenced, "broker fencing changed");
                    if !reply.fenced {
                        if let Some(b) = broker.upgrade() {
                            b.unfenced(&cluster);
                        }
                    }
                }
            }
            Err(ControllerCallError::Refused(e))
                if matches!(
                    e.error(),
                    Some(ResponseError::StaleBrokerEpoch | ResponseError::BrokerIdNotRegistered)
                ) =>
            {
                let Some(b) = broker.upgrade() else {
                    return;
                };
                tracing::warn!(error = %e, "registration lost; registering again");
                if let Err(e) = b.register(&cluster, clean_shutdown).await {
                    tracing::error!(error = %e, "registering again failed");
                }
            }
            Ok(other) => tracing::warn!(?other, "unexpected heartbeat answer"),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        if broker.strong_count() == 0 {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cluster.heartbeat_now.notified() => {}
        }
    }
}

/// Checks the ISR of every partition this broker leads for followers that fell behind.
async fn check_isr(broker: Weak<Broker>) {
    let Some(cluster) = broker.upgrade().and_then(|b| b.cluster().cloned()) else {
        return;
    };
    let every =
        Duration::from_millis((cluster.config.replica_lag_time_max_ms / 2).clamp(50, 5_000) as u64);
    loop {
        tokio::time::sleep(every).await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let now = broker.clock.now_ms();
        let shrinks: Vec<(TopicPartition, AlterIsr)> = crate::sync::plain(&cluster.roles)
            .iter_mut()
            .filter_map(|(tp, role)| match role {
                Role::Leader(l) => l.shrink_check(now).map(|a| (tp.clone(), a)),
                _ => None,
            })
            .collect();
        for (tp, alter) in shrinks {
            tracing::info!(%tp, isr = ?alter.isr, "shrinking the ISR");
            broker.send_alter_isr(tp, alter);
        }
    }
}
