//! Coordinators in a cluster, as in Kafka: a group is coordinated by the leader of its
//! `__consumer_offsets` partition and a transactional id by the leader of its
//! `__transaction_state` partition. Both topics are the cluster's (replicated, created
//! through the controller when first needed); a broker loads a partition's groups or
//! transactions when it comes to lead it and forgets them when it stops, and a request for
//! a key led elsewhere answers NOT_COORDINATOR, so clients find the new coordinator.
//! Whatever a coordinator writes is acted on (answered, or followed by markers) only once it
//! is on the partition's in-sync replicas, so a new coordinator finds every decision its
//! predecessor made known. Transaction markers go to partition leaders over the inter-broker
//! path (Kafka's WriteTxnMarkers).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ProducerId, RequestKind, ResponseKind, TopicName, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Cluster, Role};
use crate::broker::txn::{ClusterWrites, NotReplicated};
use crate::broker::Broker;
use crate::controller::rpc::{ControllerRequest, TopicSpec};
use crate::coordinator::group::offsets::{partition_for, OFFSETS_TOPIC};
use crate::coordinator::txn::engine::MarkerJob;
use crate::coordinator::txn::TRANSACTION_TOPIC;
use crate::net::client::BrokerLink;
use crate::net::TcpConfig;
use crate::replication::AckState;
use crate::types::{NodeId, Offset, TopicPartition};

/// How long a coordinator waits for its write to reach the in-sync replicas before it
/// answers COORDINATOR_NOT_AVAILABLE (the client retries).
const REPLICATION_WAIT: Duration = Duration::from_secs(10);

/// Which coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coordinated {
    Group,
    Transaction,
}

impl Coordinated {
    pub(crate) fn topic(self) -> &'static str {
        match self {
            Coordinated::Group => OFFSETS_TOPIC,
            Coordinated::Transaction => TRANSACTION_TOPIC,
        }
    }
}

/// A coordinator's address, for FindCoordinator.
pub(crate) struct Location {
    pub node: i32,
    pub host: String,
    pub port: i32,
}

impl Broker {
    /// The internal partition holding `key`, by the cluster's partition count of the topic.
    fn coordinator_partition(
        &self,
        cluster: &Cluster,
        kind: Coordinated,
        key: &str,
    ) -> Option<TopicPartition> {
        let image = cluster.image();
        let n = image.topic(kind.topic())?.partitions.len() as i32;
        Some(TopicPartition::new(kind.topic(), partition_for(key, n)))
    }

    /// The partition count of an internal topic; in a cluster, `None` until it exists
    /// (its creation is asked for then).
    pub(crate) fn internal_partitions(&self, kind: Coordinated) -> Option<i32> {
        let Some(cluster) = self.cluster() else {
            return self.topic_partitions(kind.topic());
        };
        let n = cluster
            .image()
            .topic(kind.topic())
            .map(|t| t.partitions.len() as i32);
        if n.is_none() {
            self.create_internal_topic(cluster, kind);
        }
        n
    }

    /// Where `key` is coordinated in the cluster: its partition's leader. The internal topic
    /// is created on first use (COORDINATOR_NOT_AVAILABLE meanwhile, and the client retries).
    pub(crate) fn locate_coordinator(
        &self,
        cluster: &Arc<Cluster>,
        kind: Coordinated,
        key: &str,
    ) -> Result<Location, ResponseError> {
        let Some(tp) = self.coordinator_partition(cluster, kind, key) else {
            self.create_internal_topic(cluster, kind);
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        let image = cluster.image();
        let leader = image
            .topic(&tp.topic)
            .and_then(|t| t.partitions.get(&tp.partition.0))
            .filter(|p| p.has_leader())
            .map(|p| p.leader)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let b = image
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        Ok(Location {
            node: b.id.0,
            host: b.host.clone(),
            port: b.port,
        })
    }

    /// In a cluster, the cluster and the internal partition holding `key`
    /// (COORDINATOR_NOT_AVAILABLE before the topic exists); `None` alone.
    fn clustered_coordinator_partition(
        &self,
        kind: Coordinated,
        key: &str,
    ) -> Result<Option<(&Arc<Cluster>, TopicPartition)>, ResponseError> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let tp = self
            .coordinator_partition(cluster, kind, key)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        Ok(Some((cluster, tp)))
    }

    /// Whether this broker coordinates `key` now: NOT_COORDINATOR if another broker leads
    /// its partition, COORDINATOR_LOAD_IN_PROGRESS never (loading happens as leadership is
    /// taken, before requests see it). Always true without a cluster.
    pub(crate) fn check_coordinator(
        &self,
        kind: Coordinated,
        key: &str,
    ) -> Result<(), ResponseError> {
        let Some((cluster, tp)) = self.clustered_coordinator_partition(kind, key)? else {
            return Ok(());
        };
        if crate::sync::plain(&cluster.coordinating).contains_key(&tp) {
            Ok(())
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// After a coordinator changed `key`'s state: waits until its internal partition is on
    /// the in-sync replicas through the log end (everything written before, this write
    /// included), as Kafka's coordinators append with `acks=all`. Immediate without a cluster.
    pub(crate) async fn coordinator_replicated(
        &self,
        kind: Coordinated,
        key: &str,
    ) -> Result<(), ResponseError> {
        let Some((_, tp)) = self.clustered_coordinator_partition(kind, key)? else {
            return Ok(());
        };
        let Some(end) = self.logs.get(&tp).map(|l| l.log_end_offset()) else {
            return Err(ResponseError::NotCoordinator);
        };
        self.leader_appended(&tp, end);
        let outcome = self
            .await_replicated(vec![(tp, end.0)], REPLICATION_WAIT)
            .await;
        match outcome.into_iter().next().flatten() {
            None => Ok(()),
            Some(ResponseError::NotLeaderOrFollower) => Err(ResponseError::NotCoordinator),
            Some(_) => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Asks the controller (once at a time) to create an internal topic: its configured
    /// partitions, compacted, with as many replicas as configured and brokers are up.
    fn create_internal_topic(&self, cluster: &Arc<Cluster>, kind: Coordinated) {
        if !crate::sync::plain(&cluster.creating).insert(kind.topic()) {
            return;
        }
        let live = cluster
            .image()
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .count() as i32;
        let (partitions, wanted_rf) = match kind {
            Coordinated::Group => (
                self.config.offsets_topic_num_partitions,
                self.config.offsets_topic_replication_factor,
            ),
            Coordinated::Transaction => (
                self.config.transaction_state_num_partitions,
                self.config.transaction_state_replication_factor,
            ),
        };
        let rf = wanted_rf.min(live).max(1);
        let mut configs: BTreeMap<String, String> = [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "104857600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if kind == Coordinated::Transaction {
            let min_isr = self.config.transaction_state_min_isr.min(rf).max(1);
            configs.insert("min.insync.replicas".into(), min_isr.to_string());
        }
        let req = ControllerRequest::CreateTopics {
            topics: vec![TopicSpec {
                name: kind.topic().to_string(),
                partitions,
                replication_factor: rf,
                assignments: None,
                configs,
            }],
            validate_only: false,
        };
        let cluster = Arc::clone(cluster);
        tokio::spawn(async move {
            let result = cluster.controller().call(&req).await;
            tracing::info!(
                topic = kind.topic(),
                rf,
                ?result,
                "created an internal topic"
            );
            crate::sync::plain(&cluster.creating).remove(kind.topic());
        });
    }

    /// Brings the coordinators here in line with the internal partitions this broker leads:
    /// loads those it just came to lead (or leads under a new epoch), unloads the rest.
    pub(super) fn sync_coordinators(&self, cluster: &Cluster) {
        let led: BTreeMap<TopicPartition, i32> = crate::sync::plain(&cluster.roles)
            .iter()
            .filter(|(tp, _)| tp.topic == OFFSETS_TOPIC || tp.topic == TRANSACTION_TOPIC)
            .filter_map(|(tp, r)| match r {
                Role::Leader(l) => Some((tp.clone(), l.leader_epoch())),
                _ => None,
            })
            .collect();
        let counts: BTreeMap<&str, i32> = {
            let image = cluster.image();
            [OFFSETS_TOPIC, TRANSACTION_TOPIC]
                .into_iter()
                .filter_map(|t| image.topic(t).map(|i| (t, i.partitions.len() as i32)))
                .collect()
        };
        // One reconciliation at a time; `coordinating` itself is held only for moments, so
        // requests checking it never wait behind a load.
        let _one = crate::sync::plain(&cluster.syncing_coordinators);
        let gone: Vec<TopicPartition> = crate::sync::plain(&cluster.coordinating)
            .iter()
            .filter(|(tp, epoch)| led.get(*tp) != Some(*epoch))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in gone {
            crate::sync::plain(&cluster.coordinating).remove(&tp);
            tracing::info!(%tp, "no longer coordinating");
            self.unload_coordinator(&tp);
        }
        for (tp, epoch) in led {
            if crate::sync::plain(&cluster.coordinating).contains_key(&tp) {
                continue;
            }
            let Some(&n) = counts.get(tp.topic.as_str()) else {
                continue;
            };
            match self.load_coordinator(&tp, n) {
                Ok(()) => {
                    tracing::info!(%tp, epoch, "coordinating");
                    crate::sync::plain(&cluster.coordinating).insert(tp, epoch);
                }
                Err(e) => tracing::error!(%tp, error = %e, "loading the coordinator failed"),
            }
        }
    }

    fn load_coordinator(
        &self,
        tp: &TopicPartition,
        partitions: i32,
    ) -> Result<(), crate::storage::StorageError> {
        let p = tp.partition.0;
        if tp.topic == OFFSETS_TOPIC {
            let mut offsets = crate::broker::lock_offsets(&self.offsets, &self.logs);
            offsets.set_partitions(partitions);
            offsets.load_partition(&self.logs, p)
        } else {
            self.txn.load_partition(p, partitions)
        }
    }

    fn unload_coordinator(&self, tp: &TopicPartition) {
        let p = tp.partition.0;
        if tp.topic == OFFSETS_TOPIC {
            let mut offsets = crate::broker::lock_offsets(&self.offsets, &self.logs);
            let n = offsets.partitions();
            offsets.unload_partition(p);
            drop(offsets);
            crate::broker::lock_groups(&self.groups, &self.config.group)
                .forget_where(|g| partition_for(g, n) == p);
        } else {
            self.txn.unload_partition(p);
        }
    }

    /// Whether `tp`'s log through `required` is on its in-sync replicas: `None` while
    /// waiting, else the outcome (NOT_LEADER_OR_FOLLOWER if this broker stopped leading it,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR fell below its minimum).
    pub(crate) fn replication_of(
        &self,
        tp: &TopicPartition,
        required: i64,
    ) -> Option<Option<ResponseError>> {
        let cluster = self.cluster()?;
        match crate::sync::plain(&cluster.roles).get(tp) {
            Some(Role::Leader(l)) => match l.ack_state(required) {
                AckState::Waiting => None,
                AckState::Done => Some(None),
                AckState::NotEnoughReplicasAfterAppend => {
                    Some(Some(ResponseError::NotEnoughReplicasAfterAppend))
                }
            },
            _ => Some(Some(ResponseError::NotLeaderOrFollower)),
        }
    }
}

/// The cluster side of the transaction coordinator's marker thread.
#[derive(Debug)]
pub(crate) struct MarkerWrites {
    pub(super) broker: Weak<Broker>,
    pub(super) runtime: tokio::runtime::Handle,
}

impl MarkerWrites {
    /// Sends one broker the markers it leads partitions of, and waits for its answer.
    async fn send(
        broker: &Broker,
        node: NodeId,
        job: &MarkerJob,
        partitions: &[TopicPartition],
    ) -> Result<(), String> {
        let addr = broker
            .cluster()
            .and_then(|c| {
                c.image()
                    .brokers
                    .get(&node)
                    .map(|b| format!("{}:{}", b.host, b.port))
            })
            .ok_or_else(|| format!("broker {node} is not registered"))?;
        let mut config = TcpConfig::new(addr.clone());
        config.client_id = format!("rill-txn-markers-{}", broker.config.node_id);
        config.request_timeout_ms = 30_000;
        let link = BrokerLink::open(&addr, config)
            .await
            .map_err(|e| format!("cannot reach broker {node}: {e}"))?;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            topics
                .entry(tp.topic.as_str())
                .or_default()
                .push(tp.partition.0);
        }
        let marker = WritableTxnMarker::default()
            .with_producer_id(ProducerId(job.producer_id))
            .with_producer_epoch(job.producer_epoch)
            .with_transaction_result(job.commit)
            .with_coordinator_epoch(0)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            );
        let req = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        let resp = match link.call(RequestKind::WriteTxnMarkers(req)).await {
            Ok(Some(ResponseKind::WriteTxnMarkers(r))) => r,
            Ok(other) => return Err(format!("unexpected answer from broker {node}: {other:?}")),
            Err(e) => return Err(format!("broker {node}: {e}")),
        };
        for m in &resp.markers {
            for t in &m.topics {
                for p in &t.partitions {
                    let ok = p.error_code == 0
                        || p.error_code == ResponseError::UnknownTopicOrPartition.code()
                        || p.error_code == ResponseError::InvalidProducerEpoch.code();
                    if !ok {
                        return Err(format!(
                            "broker {node}: {}-{}: error {}",
                            t.name.0, p.partition_index, p.error_code
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ClusterWrites for MarkerWrites {
    fn leads(&self, tp: &TopicPartition) -> bool {
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let Some(cluster) = broker.cluster() else {
            return false;
        };
        let leads = matches!(
            crate::sync::plain(&cluster.roles).get(tp),
            Some(Role::Leader(_))
        );
        leads
    }

    fn appended(&self, tp: &TopicPartition, log_end: i64) {
        if let Some(broker) = self.broker.upgrade() {
            broker.leader_appended(tp, Offset(log_end));
        }
    }

    /// Waits (on the marker thread) for the partition's high watermark to pass `end`, woken
    /// by its advances as a produce's wait is; a second at a time, so that a broker shutting
    /// down is not held up by this thread's reference to it.
    fn await_replicated(&self, tp: &TopicPartition, end: i64) -> Result<(), NotReplicated> {
        let deadline = tokio::time::Instant::now() + REPLICATION_WAIT;
        self.runtime.block_on(async {
            loop {
                let broker = self.broker.upgrade().ok_or(NotReplicated::NotLeader)?;
                let slice = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(Duration::from_secs(1));
                let outcome = broker
                    .await_replicated(vec![(tp.clone(), end)], slice)
                    .await
                    .pop()
                    .flatten();
                drop(broker);
                match outcome {
                    None => return Ok(()),
                    Some(ResponseError::NotLeaderOrFollower) => {
                        return Err(NotReplicated::NotLeader)
                    }
                    _ if tokio::time::Instant::now() >= deadline => {
                        return Err(NotReplicated::TimedOut)
                    }
                    Some(ResponseError::RequestTimedOut) => {}
                    // The ISR is below its minimum for now, which is answered at once: look
                    // again shortly.
                    Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    }

    fn write_markers(&self, job: &MarkerJob) -> Result<(), String> {
        let broker = self.broker.upgrade().ok_or("the broker is gone")?;
        let cluster = broker.cluster().ok_or("not in a cluster")?;
        let mut by_leader: BTreeMap<NodeId, Vec<TopicPartition>> = BTreeMap::new();
        {
            let image = cluster.image();
            for (topic, p) in &job.partitions {
                // A topic deleted since has nothing left to end.
                let Some(record) = image.topic(topic).and_then(|t| t.partitions.get(p)) else {
                    continue;
                };
                if !record.has_leader() {
                    return Err(format!("{topic}-{p} has no leader"));
                }
                by_leader
                    .entry(record.leader)
                    .or_default()
                    .push(TopicPartition::new(topic.clone(), *p));
            }
        }
        let me = cluster.node;
        let mine = by_leader.remove(&me).unwrap_or_default();
        let producer = (job.producer_id, job.producer_epoch);
        let mut written = Vec::new();
        for tp in &mine {
            match broker.leader_writes_marker(tp, producer, job.commit, 0) {
                Ok(Some(end)) => written.push((tp.clone(), end)),
                Ok(None)
                | Err(
                    ResponseError::UnknownTopicOrPartition | ResponseError::InvalidProducerEpoch,
                ) => {}
                Err(e) => return Err(format!("{tp}: {e:?}")),
            }
        }
        for (tp, end) in written {
            self.await_replicated(&tp, end)
                .map_err(|e| format!("{tp}: marker not replicated ({e:?})"))?;
        }
        // Leaders elsewhere, one after another (a transaction rarely spans many brokers).
        self.runtime.block_on(async {
            for (node, tps) in &by_leader {
                MarkerWrites::send(&broker, *node, job, tps).await?;
            }
            Ok(())
        })
    }
}

impl Broker {
    /// Writes a transaction marker to `tp` as its leader (for this broker's coordinator or a
    /// WriteTxnMarkers request): NOT_LEADER_OR_FOLLOWER elsewhere.
    pub(crate) fn leader_writes_marker(
        &self,
        tp: &TopicPartition,
        producer: (i64, i16),
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<Option<i64>, ResponseError> {
        if let Some(cluster) = self.cluster() {
            if !matches!(
                crate::sync::plain(&cluster.roles).get(tp),
                Some(Role::Leader(_))
            ) {
                return Err(ResponseError::NotLeaderOrFollower);
            }
        }
        let written = crate::broker::txn::write_marker(
            &self.logs,
            &self.offsets,
            &self.waiting,
            tp,
            producer,
            commit,
            coordinator_epoch,
        )?;
        if let Some(end) = written {
            self.leader_appended(tp, Offset(end));
        }
        Ok(written)
    }
}
