//! The active controller's decisions (Kafka's `QuorumController` and its managers, sans-IO):
//! a request and the current [`MetadataImage`] in, the records to commit (or a Kafka error)
//! out. Broker sessions (the last heartbeat of each broker) are the active controller's own
//! memory, not replicated: a newly active controller gives every broker a fresh session, as
//! KRaft does. Requests are decided one at a time against an image that includes every
//! earlier decision, so two decisions never conflict.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::image::MetadataImage;
use super::partition_change::{ElectionPolicy, PartitionChange};
use super::placement::{place, PlacementError};
use super::records::{BrokerRegistration, MetadataRecord, PartitionRecord, TopicRecord};
use crate::types::{validate_topic_name, NodeId};

/// The controller's settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub session_timeout_ms: i64,
    /// `default.replication.factor`.
    pub default_replication_factor: i32,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `min.insync.replicas`, for topics without their own.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable`, for topics without their own.
    pub unclean_leader_election: bool,
    /// Producer ids handed to a broker at a time (Kafka's block of 1000).
    pub producer_id_block_size: i64,
    /// The most partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// The cluster's id (from the controllers' `meta.properties`): brokers of another
    /// cluster are refused.
    pub cluster_id: Option<String>,
    /// `auto.leader.rebalance.enable`: the active controller moves leaderships back to
    /// their preferred (first) replicas every `leader_imbalance_check_interval_ms`.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            default_replication_factor: 1,
            num_partitions: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
            producer_id_block_size: 1_000,
            max_partitions_per_topic: 10_000,
            cluster_id: None,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}

/// The kind of election an `ElectLeaders` request asks for (its `election_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// 0: the first replica, if it is in the ISR and alive.
    Preferred,
    /// 1: any live replica, for partitions without a leader.
    Unclean,
}

/// The most elections one automatic rebalance makes (Kafka's `maxElectionsPerImbalance`);
/// the next check takes the rest.
pub const MAX_ELECTIONS_PER_BALANCE: usize = 1_000;

/// One partition's reassignment as asked: the target replicas, or `None` to cancel.
pub type ReassignmentTarget = (String, i32, Option<Vec<NodeId>>);

/// One partition's reassignment outcome: `None` when started, completed or cancelled.
pub type ReassignmentResult = (String, i32, Option<ControllerError>);

/// One topic's election results: per partition, `None` when elected, else why not.
pub type TopicElections = (String, Vec<(i32, Option<ControllerError>)>);

/// A refused request, with Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ControllerError {
    pub code: ResponseError,
    pub message: String,
}

fn refuse<T>(code: ResponseError, message: impl Into<String>) -> Result<T, ControllerError> {
    Err(ControllerError {
        code,
        message: message.into(),
    })
}

/// The refusals of ElectLeaders and AlterPartitionReassignments, in Kafka's words; a single
/// broker, which answers these itself, gives the same.
pub(crate) mod refusals {
    use std::collections::BTreeSet;

    use super::ControllerError;
    use crate::types::NodeId;
    use kafka_protocol::ResponseError;

    fn error(code: ResponseError, message: String) -> ControllerError {
        ControllerError { code, message }
    }

    pub(crate) fn no_topic_to_elect(topic: &str) -> ControllerError {
        let m = format!("No such topic as {topic}");
        error(ResponseError::UnknownTopicOrPartition, m)
    }

    pub(crate) fn no_partition_to_elect(topic: &str, partition: i32) -> ControllerError {
        let m = format!("No such partition as {topic}-{partition}");
        error(ResponseError::UnknownTopicOrPartition, m)
    }

    pub(crate) fn election_not_needed() -> ControllerError {
        let m = "Leader election not needed for topic partition.".to_string();
        error(ResponseError::ElectionNotNeeded, m)
    }

    pub(crate) fn no_topic_to_reassign(topic: &str) -> ControllerError {
        let m = format!("Unable to find a topic named {topic}.");
        error(ResponseError::UnknownTopicOrPartition, m)
    }

    pub(crate) fn no_partition_to_reassign(topic: &str, partition: i32) -> ControllerError {
        let m = format!("Unable to find partition {topic}:{partition}.");
        error(ResponseError::UnknownTopicOrPartition, m)
    }

    pub(crate) fn no_reassignment_in_progress() -> ControllerError {
        let m = "No partition reassignment is in progress.".to_string();
        error(ResponseError::NoReassignmentInProgress, m)
    }

    /// A replica list an operator gave (Kafka's `validateManualPartitionAssignment`): not
    /// empty, registered brokers only, none twice.
    pub(crate) fn check_manual_assignment(
        replicas: &[NodeId],
        registered: impl Fn(NodeId) -> bool,
    ) -> Result<(), ControllerError> {
        let invalid = |m: String| Err(error(ResponseError::InvalidReplicaAssignment, m));
        if replicas.is_empty() {
            return invalid(
                "The manual partition assignment includes an empty replica list.".into(),
            );
        }
        if let Some(b) = replicas.iter().find(|b| !registered(**b)) {
            return invalid(format!(
                "The manual partition assignment includes broker {b}, but no such broker \
                 is registered."
            ));
        }
        let distinct: BTreeSet<_> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return invalid(
                "The manual partition assignment includes a broker more than once.".into(),
            );
        }
        Ok(())
    }
}

/// A broker asking to join (Kafka's `BrokerRegistrationRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBroker {
    /// The cluster the broker's data directory was formatted for.
    pub cluster_id: String,
    pub id: NodeId,
    pub incarnation: Uuid,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Whether the broker's logs hold everything it wrote before it stopped: a clean
    /// shutdown, or a crash of its process while the machine stayed up (the page cache kept
    /// the writes). After anything else (a power loss) it leaves every ELR (KIP-966).
    pub clean_shutdown: bool,
}

/// A broker's heartbeat (Kafka's `BrokerHeartbeatRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: NodeId,
    pub epoch: u64,
    /// The last metadata offset the broker applied.
    pub metadata_offset: u64,
    pub want_fence: bool,
    pub want_shutdown: bool,
}

/// The controller's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The broker has applied the metadata up to its registration.
    pub caught_up: bool,
    /// The broker is fenced once the returned records are committed.
    pub fenced: bool,
    /// The broker asked to shut down and leads nothing any more: it may stop.
    pub should_shutdown: bool,
}

/// A leader's ISR change (Kafka's `AlterPartitionRequest`, one partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub broker: NodeId,
    pub broker_epoch: u64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub id: Uuid,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i32,
    /// Explicit replicas per partition (then `partitions` and the factor follow from them).
    pub assignments: Option<Vec<Vec<NodeId>>>,
    pub configs: BTreeMap<String, String>,
}

/// The active controller's memory beside the image.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    /// When each broker was last heard from.
    contacts: BTreeMap<NodeId, i64>,
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Self {
        Controller {
            config,
            contacts: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// This controller just became active: every registered broker gets half a session from
    /// now to reach it (their heartbeats went to the previous controller, and a live broker
    /// finds the new one within a heartbeat interval or two). Kafka's controller grants a
    /// whole session here; half of one fences a broker that died with the previous
    /// controller (one process in combined mode) half a session sooner, which is most of a
    /// failover's time, at the price of fencing a live broker that cannot reach the new
    /// controller within half a session (it is unfenced by its next heartbeat).
    pub fn on_activated(&mut self, image: &MetadataImage, now_ms: i64) {
        let start = now_ms - self.config.session_timeout_ms / 2;
        self.contacts = image.brokers.keys().map(|id| (*id, start)).collect();
    }

    /// The election rules of a topic (its overrides, else the cluster's defaults).
    pub fn policy(&self, image: &MetadataImage, topic_id: Uuid) -> ElectionPolicy {
        let configs = image.topics.get(&topic_id).map(|t| &t.configs);
        let get = |k: &str| configs.and_then(|c| c.get(k));
        ElectionPolicy {
            min_isr: get("min.insync.replicas")
                .and_then(|v| v.parse().ok())
                .unwrap_or(self.config.min_insync_replicas),
            unclean: get("unclean.leader.election.enable")
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(self.config.unclean_leader_election),
        }
    }

    /// Registers a broker. A new incarnation of a registered one takes its place (its old
    /// process is gone: its leaderships and ISR places go, as when fenced) unless the old
    /// one is still alive, which is a duplicate `node.id`.
    pub fn register(
        &mut self,
        image: &MetadataImage,
        req: &RegisterBroker,
        now_ms: i64,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if req.id.0 < 0 {
            return refuse(ResponseError::InvalidRequest, format!("node id {}", req.id));
        }
        if let Some(ours) = self
            .config
            .cluster_id
            .as_ref()
            .filter(|c| **c != req.cluster_id)
        {
            return refuse(
                ResponseError::InconsistentClusterId,
                format!(
                    "broker {} belongs to cluster {}, not {ours}",
                    req.id, req.cluster_id
                ),
            );
        }
        if let Some(old) = image.brokers.get(&req.id) {
            if old.incarnation == req.incarnation {
                // A retry whose first attempt was committed.
                self.contacts.insert(req.id, now_ms);
                return Ok(Vec::new());
            }
            let alive = !old.fenced
                && self
                    .contacts
                    .get(&req.id)
                    .is_some_and(|t| now_ms - t < self.config.session_timeout_ms);
            if alive {
                return refuse(
                    ResponseError::DuplicateBrokerRegistration,
                    format!(
                        "broker {} is registered and alive with another incarnation",
                        req.id
                    ),
                );
            }
        }
        let registration = BrokerRegistration {
            id: req.id,
            incarnation: req.incarnation,
            epoch: 0,
            host: req.host.clone(),
            port: req.port,
            rack: req.rack.clone(),
            fenced: true,
            shutting_down: false,
        };
        let mut records = vec![MetadataRecord::RegisterBroker(registration)];
        let after = preview(image, &records);
        records.extend(self.changes_without(&after, req.id, !req.clean_shutdown));
        self.contacts.insert(req.id, now_ms);
        Ok(records)
    }

    /// A heartbeat: renews the session; unfences a broker that has caught up with the
    /// metadata log (and elects it where partitions were waiting for it); fences one that
    /// asks; begins a controlled shutdown (its leaderships move away).
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        req: &Heartbeat,
        now_ms: i64,
    ) -> Result<(Vec<MetadataRecord>, HeartbeatReply), ControllerError> {
        let Some(reg) = image.brokers.get(&req.id) else {
            return refuse(
                ResponseError::BrokerIdNotRegistered,
                format!("broker {} is not registered", req.id),
            );
        };
        if reg.epoch != req.epoch {
            return refuse(
                ResponseError::StaleBrokerEpoch,
                format!("broker {} epoch {} is not {}", req.id, req.epoch, reg.epoch),
            );
        }
        self.contacts.insert(req.id, now_ms);
        let caught_up = req.metadata_offset >= reg.epoch;
        let mut records = Vec::new();
        let mut fenced = reg.fenced;
        if req.want_shutdown && !reg.shutting_down {
            records.push(MetadataRecord::ShutdownBroker {
                id: req.id,
                epoch: reg.epoch,
            });
            let after = preview(image, &records);
            records.extend(self.changes_without(&after, req.id, false));
        } else if reg.fenced && caught_up && !req.want_fence && !reg.shutting_down {
            records.push(MetadataRecord::FenceBroker {
                id: req.id,
                epoch: reg.epoch,
                fenced: false,
            });
            let after = preview(image, &records);
            records.extend(self.elect_leaderless(&after));
            fenced = false;
        } else if !reg.fenced && req.want_fence {
            records.extend(self.fence(image, req.id));
            fenced = true;
        }
        let after = preview(image, &records);
        let leads_nothing = after.partitions().all(|(_, p)| p.leader != req.id);
        Ok((
            records,
            HeartbeatReply {
                caught_up,
                fenced,
                should_shutdown: req.want_shutdown && leads_nothing,
            },
        ))
    }

    /// Unregisters a broker (Kafka's `unregisterBroker`, for a decommissioned one): it leaves
    /// every ISR, ELR and leadership, then the cluster; partitions still naming it among
    /// their replicas show it offline until a reassignment moves them. A live broker that
    /// heartbeats afterwards registers again, as in Kafka.
    pub fn unregister_broker(
        &mut self,
        image: &MetadataImage,
        id: NodeId,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(reg) = image.brokers.get(&id) else {
            return refuse(
                ResponseError::BrokerIdNotRegistered,
                format!("Broker ID {id} is not currently registered"),
            );
        };
        let mut records = Vec::new();
        if !reg.fenced {
            records.push(MetadataRecord::FenceBroker {
                id,
                epoch: reg.epoch,
                fenced: true,
            });
        }
        let after = preview(image, &records);
        records.extend(self.changes_without(&after, id, true));
        records.push(MetadataRecord::UnregisterBroker {
            id,
            epoch: reg.epoch,
        });
        self.contacts.remove(&id);
        Ok(records)
    }

    /// Fences every unfenced broker whose session expired; returns the records (fences and
    /// the partition changes that follow), empty when all are alive.
    pub fn expire_sessions(&mut self, image: &MetadataImage, now_ms: i64) -> Vec<MetadataRecord> {
        let expired: Vec<NodeId> = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let last = self.contacts.get(&b.id).copied().unwrap_or(i64::MIN / 2);
                now_ms - last >= self.config.session_timeout_ms
            })
            .map(|b| b.id)
            .collect();
        let mut records = Vec::new();
        let mut current = image.clone();
        for id in expired {
            tracing::info!(broker = %id, "broker session expired; fencing it");
            let more = self.fence(&current, id);
            current = preview(&current, &more);
            records.extend(more);
        }
        records
    }

    /// A fence of `id` and the partition changes it brings.
    fn fence(&self, image: &MetadataImage, id: NodeId) -> Vec<MetadataRecord> {
        let Some(reg) = image.brokers.get(&id) else {
            return Vec::new();
        };
        let mut records = vec![MetadataRecord::FenceBroker {
            id,
            epoch: reg.epoch,
            fenced: true,
        }];
        let after = preview(image, &records);
        records.extend(self.changes_without(&after, id, false));
        records
    }

    /// `broker` leaves every ISR and leadership (fenced, shutting down, re-registered); with
    /// `unclean_shutdown` it also leaves every ELR. `image` already shows it unusable.
    fn changes_without(
        &self,
        image: &MetadataImage,
        broker: NodeId,
        unclean_shutdown: bool,
    ) -> Vec<MetadataRecord> {
        image
            .partitions()
            .filter(|(_, p)| {
                p.leader == broker
                    || p.isr.contains(&broker)
                    || (unclean_shutdown && p.elr.contains(&broker))
            })
            .filter_map(|(_, p)| {
                let mut change =
                    PartitionChange::new(p, image, self.policy(image, p.topic_id)).without(broker);
                if unclean_shutdown {
                    change = change.with_unclean_shutdown(broker);
                }
                change.build().map(MetadataRecord::Partition)
            })
            .collect()
    }

    /// Elections for partitions without a leader that now have an eligible live replica.
    fn elect_leaderless(&self, image: &MetadataImage) -> Vec<MetadataRecord> {
        image
            .partitions()
            .filter(|(_, p)| !p.has_leader())
            .filter_map(|(_, p)| {
                PartitionChange::new(p, image, self.policy(image, p.topic_id))
                    .build()
                    .filter(PartitionRecord::has_leader)
                    .map(MetadataRecord::Partition)
            })
            .collect()
    }

    /// A leader's ISR change (Kafka's `AlterPartition` checks, in its order).
    pub fn alter_partition(
        &self,
        image: &MetadataImage,
        req: &AlterPartition,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        match image.brokers.get(&req.broker) {
            Some(b) if b.epoch == req.broker_epoch => {}
            _ => {
                return refuse(
                    ResponseError::StaleBrokerEpoch,
                    format!("broker {} epoch {}", req.broker, req.broker_epoch),
                )
            }
        }
        let Some(current) = image.partition(req.topic_id, req.partition) else {
            return refuse(
                ResponseError::UnknownTopicOrPartition,
                format!("no partition {} of topic {}", req.partition, req.topic_id),
            );
        };
        if current.leader != req.broker {
            return refuse(
                ResponseError::NotLeaderOrFollower,
                format!("broker {} does not lead the partition", req.broker),
            );
        }
        if req.leader_epoch != current.leader_epoch {
            return refuse(
                ResponseError::FencedLeaderEpoch,
                format!(
                    "leader epoch {} is not {}",
                    req.leader_epoch, current.leader_epoch
                ),
            );
        }
        if req.partition_epoch != current.partition_epoch {
            return refuse(
                ResponseError::InvalidUpdateVersion,
                format!(
                    "partition epoch {} is not {}",
                    req.partition_epoch, current.partition_epoch
                ),
            );
        }
        if !req.isr.contains(&req.broker) || req.isr.iter().any(|r| !current.replicas.contains(r)) {
            return refuse(
                ResponseError::InvalidRequest,
                format!(
                    "ISR {:?} is not a set of replicas holding the leader",
                    req.isr
                ),
            );
        }
        if let Some(r) = req
            .isr
            .iter()
            .find(|r| !current.isr.contains(r) && !image.is_usable(**r))
        {
            return refuse(
                ResponseError::IneligibleReplica,
                format!("broker {r} is fenced or shutting down and cannot join the ISR"),
            );
        }
        Ok(
            PartitionChange::new(current, image, self.policy(image, req.topic_id))
                .with_isr(req.isr.clone())
                .build()
                .map(MetadataRecord::Partition)
                .into_iter()
                .collect(),
        )
    }

    /// Creates a topic: its record, its configs, and its partitions placed over the usable
    /// brokers (or as assigned), every replica in the ISR, the first one leading.
    pub fn create_topic(
        &self,
        image: &MetadataImage,
        topic: &NewTopic,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        validate_topic_name(&topic.name)
            .or_else(|e| refuse(ResponseError::InvalidTopicException, e.to_string()))?;
        if image.topic(&topic.name).is_some() {
            return refuse(
                ResponseError::TopicAlreadyExists,
                format!("topic {} exists", topic.name),
            );
        }
        let assignments = match &topic.assignments {
            Some(a) => {
                self.check_assignments(image, a, None)?;
                a.clone()
            }
            None => {
                let partitions = if topic.partitions == -1 {
                    self.config.num_partitions
                } else {
                    topic.partitions
                };
                self.check_partition_count(partitions)?;
                let rf = if topic.replication_factor == -1 {
                    self.config.default_replication_factor
                } else {
                    topic.replication_factor
                };
                let start = image.partitions().count();
                place(&image.usable_brokers(), 0, partitions, rf, start).map_err(placement_error)?
            }
        };
        let mut records = vec![MetadataRecord::Topic(TopicRecord {
            name: topic.name.clone(),
            id: topic.id,
        })];
        if !topic.configs.is_empty() {
            records.push(MetadataRecord::TopicConfig {
                topic_id: topic.id,
                configs: topic.configs.clone(),
            });
        }
        records.extend(new_partitions(topic.id, 0, assignments, image));
        Ok(records)
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        total: i32,
        assignments: Option<&[Vec<NodeId>]>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(topic) = image.topic(name) else {
            return refuse(
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name}"),
            );
        };
        let have = topic.partitions.len() as i32;
        if total <= have {
            return refuse(
                ResponseError::InvalidPartitions,
                format!("topic {name} has {have} partitions; {total} is not more"),
            );
        }
        self.check_partition_count(total)?;
        let rf = topic
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.replicas.len()) as i32;
        let placed = match assignments {
            Some(a) => {
                if a.len() as i32 != total - have {
                    return refuse(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "{} assignments for {} new partitions",
                            a.len(),
                            total - have
                        ),
                    );
                }
                self.check_assignments(image, a, Some(rf as usize))?;
                a.to_vec()
            }
            None => {
                let start = image.partitions().count();
                place(&image.usable_brokers(), have, total - have, rf, start)
                    .map_err(placement_error)?
            }
        };
        Ok(new_partitions(topic.id, have, placed, image).collect())
    }

    pub fn delete_topic(
        &self,
        image: &MetadataImage,
        name: &str,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        match image.topic(name) {
            Some(t) => Ok(vec![MetadataRecord::RemoveTopic { id: t.id }]),
            None => refuse(
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name}"),
            ),
        }
    }

    /// Replaces a topic's configuration overrides (validated by the caller, which knows the
    /// config keys). A lower `min.insync.replicas` or unclean elections turned on may let
    /// offline partitions elect a leader now.
    pub fn set_topic_configs(
        &self,
        image: &MetadataImage,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let Some(topic) = image.topic(name) else {
            return refuse(
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name}"),
            );
        };
        let mut records = vec![MetadataRecord::TopicConfig {
            topic_id: topic.id,
            configs,
        }];
        let after = preview(image, &records);
        records.extend(self.elect_leaderless(&after));
        Ok(records)
    }

    /// Leader elections an operator asked for (Kafka's `ReplicationControlManager.electLeaders`):
    /// for the partitions named, or every partition when `partitions` is `None` (then the
    /// partitions whose election was not needed are left out of the answer, as Kafka does).
    pub fn elect_leaders(
        &self,
        image: &MetadataImage,
        election: ElectionType,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> (Vec<MetadataRecord>, Vec<TopicElections>) {
        let mut records = Vec::new();
        let mut results = Vec::new();
        match partitions {
            None => {
                for t in image.topics.values() {
                    let mut elected = Vec::new();
                    for p in t.partitions.keys() {
                        let outcome = self.elect_leader(image, &t.name, *p, election, &mut records);
                        let not_needed = outcome
                            .as_ref()
                            .is_err_and(|e| e.code == ResponseError::ElectionNotNeeded);
                        if !not_needed {
                            elected.push((*p, outcome.err()));
                        }
                    }
                    results.push((t.name.clone(), elected));
                }
            }
            Some(wanted) => {
                for (topic, ps) in wanted {
                    let elected = ps
                        .iter()
                        .map(|p| {
                            let outcome =
                                self.elect_leader(image, topic, *p, election, &mut records);
                            (*p, outcome.err())
                        })
                        .collect();
                    results.push((topic.clone(), elected));
                }
            }
        }
        (records, results)
    }

    /// One partition's election (Kafka's `electLeader`): ELECTION_NOT_NEEDED when the
    /// preferred replica leads already (or, unclean, when there is a leader);
    /// PREFERRED_LEADER_NOT_AVAILABLE / ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica may
    /// take it.
    fn elect_leader(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        election: ElectionType,
        records: &mut Vec<MetadataRecord>,
    ) -> Result<(), ControllerError> {
        let Some(t) = image.topic(topic) else {
            return Err(refusals::no_topic_to_elect(topic));
        };
        let Some(current) = t.partitions.get(&partition) else {
            return Err(refusals::no_partition_to_elect(topic, partition));
        };
        let needed = match election {
            ElectionType::Preferred => current.replicas.first() != Some(&current.leader),
            ElectionType::Unclean => !current.has_leader(),
        };
        if !needed {
            return Err(refusals::election_not_needed());
        }
        let change = PartitionChange::new(current, image, self.policy(image, t.id));
        let change = match election {
            ElectionType::Preferred => change.preferring_first_replica(),
            ElectionType::Unclean => change.allowing_unclean(),
        };
        // A preferred election that leaves the leader where it is did not happen.
        let built = change.build().filter(|next| match election {
            ElectionType::Preferred => current.replicas.first() == Some(&next.leader),
            ElectionType::Unclean => next.has_leader(),
        });
        match (built, election) {
            (Some(next), _) => {
                records.push(MetadataRecord::Partition(next));
                Ok(())
            }
            // Kafka's messages for these errors.
            (None, ElectionType::Preferred) => refuse(
                ResponseError::PreferredLeaderNotAvailable,
                "The preferred leader was not available.",
            ),
            (None, ElectionType::Unclean) => refuse(
                ResponseError::EligibleLeadersNotAvailable,
                "Eligible topic partition leaders are not available.",
            ),
        }
    }

    /// Partition reassignments (Kafka's `alterPartitionReassignments`): each partition's
    /// own outcome, `None` when started (or completed at once, or cancelled). The records
    /// of the ones that succeed commit together.
    pub fn alter_partition_reassignments(
        &self,
        image: &MetadataImage,
        targets: &[ReassignmentTarget],
    ) -> (Vec<MetadataRecord>, Vec<ReassignmentResult>) {
        let mut records = Vec::new();
        let mut current = image.clone();
        let mut results = Vec::new();
        for (topic, partition, target) in targets {
            let outcome =
                self.alter_partition_reassignment(&current, topic, *partition, target.as_deref());
            match outcome {
                Ok(Some(record)) => {
                    let more = vec![MetadataRecord::Partition(record)];
                    current = preview(&current, &more);
                    records.extend(more);
                    results.push((topic.clone(), *partition, None));
                }
                Ok(None) => results.push((topic.clone(), *partition, None)),
                Err(e) => results.push((topic.clone(), *partition, Some(e))),
            }
        }
        (records, results)
    }

    fn alter_partition_reassignment(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        target: Option<&[NodeId]>,
    ) -> Result<Option<PartitionRecord>, ControllerError> {
        let Some(t) = image.topic(topic) else {
            return Err(refusals::no_topic_to_reassign(topic));
        };
        let Some(current) = t.partitions.get(&partition) else {
            return Err(refusals::no_partition_to_reassign(topic, partition));
        };
        let change = PartitionChange::new(current, image, self.policy(image, t.id));
        let Some(target) = target else {
            if !current.reassigning() {
                return Err(refusals::no_reassignment_in_progress());
            }
            let Some(revert) = change.reverting_reassignment() else {
                return refuse(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "Unable to revert partition assignment for {topic}:{partition} \
                         because it would require an unclean leader election."
                    ),
                );
            };
            return Ok(revert.build());
        };
        refusals::check_manual_assignment(target, |b| image.brokers.contains_key(&b))?;
        Ok(change.reassigning_to(target).build())
    }

    /// The automatic leader rebalance (`auto.leader.rebalance.enable`; Kafka's
    /// `maybeBalancePartitionLeaders`): a preferred-leader election for every partition not
    /// led by its first replica where that replica may lead, at most
    /// [`MAX_ELECTIONS_PER_BALANCE`] at a time.
    pub fn balance_leaders(&self, image: &MetadataImage) -> Vec<MetadataRecord> {
        image
            .partitions()
            .filter(|(_, p)| p.replicas.first().is_some_and(|r| *r != p.leader))
            .filter_map(|(_, p)| {
                PartitionChange::new(p, image, self.policy(image, p.topic_id))
                    .preferring_first_replica()
                    .build()
                    .filter(|next| p.replicas.first() == Some(&next.leader))
                    .map(MetadataRecord::Partition)
            })
            .take(MAX_ELECTIONS_PER_BALANCE)
            .collect()
    }

    /// Hands `broker` the next block of producer ids: the records and the block's first id.
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        broker: NodeId,
        broker_epoch: u64,
    ) -> Result<(Vec<MetadataRecord>, i64), ControllerError> {
        match image.brokers.get(&broker) {
            Some(b) if b.epoch == broker_epoch => {}
            _ => {
                return refuse(
                    ResponseError::StaleBrokerEpoch,
                    format!("broker {broker} epoch {broker_epoch}"),
                )
            }
        }
        let start = image.next_producer_id;
        let next = start + self.config.producer_id_block_size;
        Ok((vec![MetadataRecord::ProducerIds { broker, next }], start))
    }

    fn check_partition_count(&self, partitions: i32) -> Result<(), ControllerError> {
        if partitions < 1 || partitions > self.config.max_partitions_per_topic {
            return refuse(
                ResponseError::InvalidPartitions,
                format!(
                    "{partitions} partitions; a topic has 1 to {}",
                    self.config.max_partitions_per_topic
                ),
            );
        }
        Ok(())
    }

    /// Explicit assignments: each a non-empty set of distinct registered brokers, all of
    /// one size (`rf` when the topic has one already).
    fn check_assignments(
        &self,
        image: &MetadataImage,
        assignments: &[Vec<NodeId>],
        rf: Option<usize>,
    ) -> Result<(), ControllerError> {
        self.check_partition_count(assignments.len() as i32)?;
        let size = rf.unwrap_or_else(|| assignments[0].len());
        for a in assignments {
            let distinct: BTreeSet<_> = a.iter().collect();
            let bad = a.is_empty()
                || a.len() != size
                || distinct.len() != a.len()
                || a.iter().any(|b| !image.brokers.contains_key(b));
            if bad {
                return refuse(
                    ResponseError::InvalidReplicaAssignment,
                    format!("assignment {a:?}: {size} distinct registered brokers expected"),
                );
            }
        }
        Ok(())
    }
}

/// The image after `records`: later steps of one decision see the earlier ones.
fn preview(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
    image.preview(records)
}

/// Partition records for new partitions `first..` with these replicas: all in the ISR, the
/// first usable one leading (or none, if none is usable).
fn new_partitions(
    topic_id: Uuid,
    first: i32,
    assignments: Vec<Vec<NodeId>>,
    image: &MetadataImage,
) -> impl Iterator<Item = MetadataRecord> + '_ {
    assignments
        .into_iter()
        .enumerate()
        .map(move |(i, replicas)| {
            let leader = replicas
                .iter()
                .copied()
                .find(|r| image.is_usable(*r))
                .unwrap_or(NodeId::NONE);
            MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition: first + i as i32,
                isr: replicas.clone(),
                replicas,
                elr: Vec::new(),
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                adding: Vec::new(),
                removing: Vec::new(),
            })
        })
}

fn placement_error(e: PlacementError) -> ControllerError {
    ControllerError {
        code: ResponseError::InvalidReplicationFactor,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller and the image its committed records build.
    struct Quorum {
        controller: Controller,
        image: MetadataImage,
        now: i64,
    }

    impl Quorum {
        fn new() -> Self {
            let config = ControllerConfig {
                min_insync_replicas: 2,
                ..ControllerConfig::default()
            };
            Quorum {
                controller: Controller::new(config),
                image: MetadataImage::default(),
                now: 1_000,
            }
        }

        fn commit(&mut self, records: Vec<MetadataRecord>) {
            let next = self.image.offset + 1;
            self.image.apply(next, &records);
        }

        fn register(
            &mut self,
            id: i32,
            incarnation: u128,
            clean: bool,
        ) -> Result<(), ControllerError> {
            let req = RegisterBroker {
                cluster_id: "c".into(),
                id: NodeId(id),
                incarnation: Uuid::from_u128(incarnation),
                host: "127.0.0.1".into(),
                port: 9000 + id,
                rack: None,
                clean_shutdown: clean,
            };
            let records = self.controller.register(&self.image, &req, self.now)?;
            self.commit(records);
            Ok(())
        }

        fn heartbeat(
            &mut self,
            id: i32,
            want_shutdown: bool,
        ) -> Result<HeartbeatReply, ControllerError> {
            let epoch = self.image.brokers[&NodeId(id)].epoch;
            let req = Heartbeat {
                id: NodeId(id),
                epoch,
                metadata_offset: self.image.offset,
                want_fence: false,
                want_shutdown,
            };
            let (records, reply) = self.controller.heartbeat(&self.image, &req, self.now)?;
            self.commit(records);
            Ok(reply)
        }

        fn cluster(n: i32) -> Self {
            let mut q = Quorum::new();
            for id in 1..=n {
                q.register(id, id as u128, true).unwrap();
            }
            for id in 1..=n {
                assert!(!q.heartbeat(id, false).unwrap().fenced);
            }
            q
        }

        fn create(&mut self, name: &str, partitions: i32, rf: i32) -> Uuid {
            let id = Uuid::from_u128(self.image.topics.len() as u128 + 100);
            let topic = NewTopic {
                name: name.into(),
                id,
                partitions,
                replication_factor: rf,
                assignments: None,
                configs: BTreeMap::new(),
            };
            let records = self.controller.create_topic(&self.image, &topic).unwrap();
            self.commit(records);
            id
        }

        /// `id`'s process restarts once its session has expired (the brokers in `alive`
        /// heartbeat meanwhile), registers as a new incarnation (after a clean shutdown or
        /// not) and catches up.
        fn restart(&mut self, id: i32, incarnation: u128, clean: bool, alive: &[i32]) {
            self.now += self.controller.config.session_timeout_ms;
            for other in alive {
                self.heartbeat(*other, false).unwrap();
            }
            self.register(id, incarnation, clean).unwrap();
            assert!(!self.heartbeat(id, false).unwrap().fenced);
        }

        fn partition(&self, topic: Uuid, p: i32) -> PartitionRecord {
            self.image.partition(topic, p).unwrap().clone()
        }
    }

    fn n(ids: &[i32]) -> Vec<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn brokers_start_fenced_and_are_unfenced_once_caught_up() {
        let mut q = Quorum::new();
        q.register(1, 1, true).unwrap();
        let reg = q.image.brokers[&NodeId(1)].clone();
        assert!(reg.fenced);
        assert_eq!(reg.epoch, 1);
        // A broker behind its own registration stays fenced.
        let behind = Heartbeat {
            id: NodeId(1),
            epoch: 1,
            metadata_offset: 0,
            want_fence: false,
            want_shutdown: false,
        };
        let (records, reply) = q.controller.heartbeat(&q.image, &behind, q.now).unwrap();
        assert!(records.is_empty());
        assert!(reply.fenced && !reply.caught_up);
        assert!(!q.heartbeat(1, false).unwrap().fenced);
        assert!(!q.image.brokers[&NodeId(1)].fenced);
        // A heartbeat from a previous incarnation's epoch is refused.
        let stale = Heartbeat { epoch: 0, ..behind };
        assert_eq!(
            q.controller
                .heartbeat(&q.image, &stale, q.now)
                .unwrap_err()
                .code,
            ResponseError::StaleBrokerEpoch
        );
    }

    #[test]
    fn topics_are_placed_over_the_usable_brokers() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 3, 3);
        let leaders: BTreeSet<NodeId> = (0..3).map(|p| q.partition(t, p).leader).collect();
        assert_eq!(leaders.len(), 3, "leaderships spread");
        for p in 0..3 {
            let rec = q.partition(t, p);
            assert_eq!(rec.isr.len(), 3);
            assert_eq!(rec.leader, rec.replicas[0]);
            assert_eq!((rec.leader_epoch, rec.partition_epoch), (0, 0));
        }
        let too_many = NewTopic {
            name: "u".into(),
            id: Uuid::from_u128(9),
            partitions: 1,
            replication_factor: 4,
            assignments: None,
            configs: BTreeMap::new(),
        };
        assert_eq!(
            q.controller
                .create_topic(&q.image, &too_many)
                .unwrap_err()
                .code,
            ResponseError::InvalidReplicationFactor
        );
        let again = NewTopic {
            name: "t".into(),
            replication_factor: 1,
            ..too_many
        };
        assert_eq!(
            q.controller
                .create_topic(&q.image, &again)
                .unwrap_err()
                .code,
            ResponseError::TopicAlreadyExists
        );
    }

    #[test]
    fn an_expired_session_fences_the_broker_and_moves_its_leaderships() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 3, 3);
        let led_by_1 = (0..3)
            .find(|p| q.partition(t, *p).leader == NodeId(1))
            .unwrap();
        let before = q.partition(t, led_by_1);
        // 2 and 3 keep heartbeating; 1 goes silent.
        q.now += 5_000;
        q.heartbeat(2, false).unwrap();
        q.heartbeat(3, false).unwrap();
        assert!(q.controller.expire_sessions(&q.image, q.now).is_empty());
        q.now += 5_000;
        let records = q.controller.expire_sessions(&q.image, q.now);
        q.commit(records);
        assert!(q.image.brokers[&NodeId(1)].fenced);
        assert!(!q.image.brokers[&NodeId(2)].fenced);
        let after = q.partition(t, led_by_1);
        assert_ne!(after.leader, NodeId(1));
        assert!(before.isr.contains(&after.leader));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        for p in 0..3 {
            assert!(!q.partition(t, p).isr.contains(&NodeId(1)));
        }
        // 1 restarts (new incarnation), catches up, is unfenced; it rejoins ISRs only
        // through its leaders' AlterPartition.
        q.register(1, 11, true).unwrap();
        assert!(!q.heartbeat(1, false).unwrap().fenced);
        assert!(!q.partition(t, led_by_1).isr.contains(&NodeId(1)));
    }

    #[test]
    fn a_new_incarnation_of_a_live_broker_is_a_duplicate_but_a_dead_ones_replaces_it() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 1, 3);
        let leader = q.partition(t, 0).leader;
        assert_eq!(
            q.register(leader.0, 77, true).unwrap_err().code,
            ResponseError::DuplicateBrokerRegistration
        );
        // The same incarnation again is a harmless retry.
        q.register(leader.0, leader.0 as u128, true).unwrap();
        q.now += 10_000;
        for id in 1..=3 {
            if id != leader.0 {
                q.heartbeat(id, false).unwrap();
            }
        }
        // Restarted after a kill -9 before the session expired would be a duplicate; after
        // it, the new incarnation takes over, fenced, and loses its leadership at once.
        q.register(leader.0, 77, false).unwrap();
        let p = q.partition(t, 0);
        assert_ne!(p.leader, leader);
        assert!(!p.isr.contains(&leader));
        assert!(q.image.brokers[&leader].fenced);
    }

    #[test]
    fn alter_partition_is_checked_against_the_current_state() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 1, 3);
        let p = q.partition(t, 0);
        let leader = p.leader;
        let epoch = q.image.brokers[&leader].epoch;
        let shrink = AlterPartition {
            broker: leader,
            broker_epoch: epoch,
            topic_id: t,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![leader, p.replicas[1]],
        };
        let records = q.controller.alter_partition(&q.image, &shrink).unwrap();
        q.commit(records);
        let p1 = q.partition(t, 0);
        assert_eq!(p1.isr.len(), 2);
        assert_eq!(p1.partition_epoch, 1);
        // The same request again names a stale partition epoch.
        assert_eq!(
            q.controller
                .alter_partition(&q.image, &shrink)
                .unwrap_err()
                .code,
            ResponseError::InvalidUpdateVersion
        );
        let wrong_leader_epoch = AlterPartition {
            leader_epoch: 7,
            partition_epoch: 1,
            ..shrink.clone()
        };
        assert_eq!(
            q.controller
                .alter_partition(&q.image, &wrong_leader_epoch)
                .unwrap_err()
                .code,
            ResponseError::FencedLeaderEpoch
        );
        let not_leader = AlterPartition {
            broker: p.replicas[1],
            broker_epoch: q.image.brokers[&p.replicas[1]].epoch,
            partition_epoch: 1,
            ..shrink.clone()
        };
        assert_eq!(
            q.controller
                .alter_partition(&q.image, &not_leader)
                .unwrap_err()
                .code,
            ResponseError::NotLeaderOrFollower
        );
        // A fenced broker cannot join.
        let out = p.replicas[2];
        let records = q.controller.heartbeat(
            &q.image,
            &Heartbeat {
                id: out,
                epoch: q.image.brokers[&out].epoch,
                metadata_offset: q.image.offset,
                want_fence: true,
                want_shutdown: false,
            },
            q.now,
        );
        q.commit(records.unwrap().0);
        let expand = AlterPartition {
            partition_epoch: q.partition(t, 0).partition_epoch,
            isr: p.replicas.clone(),
            ..shrink
        };
        assert_eq!(
            q.controller
                .alter_partition(&q.image, &expand)
                .unwrap_err()
                .code,
            ResponseError::IneligibleReplica
        );
    }

    #[test]
    fn a_controlled_shutdown_moves_leaderships_before_the_broker_may_stop() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 3, 3);
        let reply = q.heartbeat(2, true).unwrap();
        assert!(reply.should_shutdown);
        for p in 0..3 {
            let rec = q.partition(t, p);
            assert_ne!(rec.leader, NodeId(2));
            assert!(!rec.isr.contains(&NodeId(2)));
        }
        assert!(!q.image.is_usable(NodeId(2)));
    }

    /// Kafka's `ReplicationControlManagerTest.testReassignPartitions`: foo-0 {1,2,3} to
    /// {3,2,1} only reorders (complete at once); foo-1 {3,2,1} to {0,2,1} adds 0 and removes
    /// 3; foo-2 does not exist. Cancelling: nothing in progress for foo-0 and bar-0; foo-1
    /// goes back to {2,1,3} with a new leader epoch (0 left the assignment). Then, run to
    /// completion: once 0 is in the ISR, 3 leaves and the leadership moves to 0.
    #[test]
    fn reassignments_start_complete_and_cancel_as_kafka_does() {
        use ResponseError::*;
        let mut q = Quorum::cluster(3);
        q.register(0, 100, true).unwrap();
        q.heartbeat(0, false).unwrap();
        let mut create = |name: &str, id: u128, assignments: Vec<Vec<NodeId>>| {
            let topic = NewTopic {
                name: name.into(),
                id: Uuid::from_u128(id),
                partitions: assignments.len() as i32,
                replication_factor: 3,
                assignments: Some(assignments),
                configs: BTreeMap::new(),
            };
            let records = q.controller.create_topic(&q.image, &topic).unwrap();
            q.commit(records);
            topic.id
        };
        let foo = create("foo", 7, vec![n(&[1, 2, 3]), n(&[3, 2, 1])]);
        create("bar", 8, vec![n(&[1, 2, 3])]);
        let codes = |results: &[ReassignmentResult]| -> Vec<(String, i32, Option<ResponseError>)> {
            results
                .iter()
                .map(|(t, p, e)| (t.clone(), *p, e.as_ref().map(|e| e.code)))
                .collect()
        };
        let foo_at = |p, e| ("foo".to_string(), p, e);
        let target = |p, r: &[i32]| ("foo".to_string(), p, Some(n(r)));
        let (records, results) = q.controller.alter_partition_reassignments(
            &q.image,
            &[
                target(0, &[3, 2, 1]),
                target(1, &[0, 2, 1]),
                target(2, &[0, 2, 1]),
            ],
        );
        assert_eq!(
            codes(&results),
            vec![
                foo_at(0, None),
                foo_at(1, None),
                foo_at(2, Some(UnknownTopicOrPartition))
            ]
        );
        assert_eq!(
            results[2].2.as_ref().unwrap().message,
            "Unable to find partition foo:2."
        );
        q.commit(records);
        let p0 = q.partition(foo, 0);
        assert_eq!(
            (p0.replicas.clone(), p0.reassigning(), p0.leader),
            (n(&[3, 2, 1]), false, NodeId(1))
        );
        let p1 = q.partition(foo, 1);
        assert_eq!(p1.replicas, n(&[0, 2, 1, 3]));
        assert_eq!((p1.adding.clone(), p1.removing.clone()), (n(&[0]), n(&[3])));
        assert_eq!((p1.leader, p1.leader_epoch), (NodeId(3), 0));

        let cancel = |t: &str, p| (t.to_string(), p, None);
        let (records, results) = q.controller.alter_partition_reassignments(
            &q.image,
            &[
                cancel("foo", 0),
                cancel("foo", 1),
                cancel("foo", 2),
                cancel("bar", 0),
            ],
        );
        assert_eq!(
            codes(&results),
            vec![
                foo_at(0, Some(NoReassignmentInProgress)),
                foo_at(1, None),
                foo_at(2, Some(UnknownTopicOrPartition)),
                ("bar".to_string(), 0, Some(NoReassignmentInProgress)),
            ]
        );
        assert_eq!(records.len(), 1);
        let MetadataRecord::Partition(reverted) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(reverted.replicas, n(&[2, 1, 3]));
        assert!(!reverted.reassigning());
        assert_eq!((reverted.leader, reverted.leader_epoch), (NodeId(3), 1));

        // Again, to the end this time: 0 catches up and its leader lets it into the ISR.
        let (records, _) = q
            .controller
            .alter_partition_reassignments(&q.image, &[target(1, &[0, 2, 1])]);
        q.commit(records);
        let p1 = q.partition(foo, 1);
        let alter = AlterPartition {
            broker: NodeId(3),
            broker_epoch: q.image.brokers[&NodeId(3)].epoch,
            topic_id: foo,
            partition: 1,
            leader_epoch: p1.leader_epoch,
            partition_epoch: p1.partition_epoch,
            isr: n(&[0, 2, 1, 3]),
        };
        let records = q.controller.alter_partition(&q.image, &alter).unwrap();
        q.commit(records);
        let done = q.partition(foo, 1);
        assert_eq!(done.replicas, n(&[0, 2, 1]));
        assert_eq!(done.isr, n(&[0, 2, 1]));
        assert!(!done.reassigning());
        assert_eq!(done.leader, NodeId(0));
        assert_eq!(done.leader_epoch, p1.leader_epoch + 1);
    }

    /// Kafka's `ReplicationControlManagerTest.testUnregisterBroker` in short: a broker leaves
    /// every ISR and leadership, then the cluster; an unknown one is BROKER_ID_NOT_REGISTERED.
    #[test]
    fn an_unregistered_broker_leaves_every_isr_and_the_cluster() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 3, 3);
        let records = q.controller.unregister_broker(&q.image, NodeId(2)).unwrap();
        q.commit(records);
        assert!(!q.image.brokers.contains_key(&NodeId(2)));
        for p in 0..3 {
            let rec = q.partition(t, p);
            assert!(rec.has_leader());
            assert_ne!(rec.leader, NodeId(2));
            assert!(!rec.isr.contains(&NodeId(2)) && !rec.elr.contains(&NodeId(2)));
            assert!(rec.replicas.contains(&NodeId(2)), "still assigned, offline");
        }
        assert_eq!(
            q.controller
                .unregister_broker(&q.image, NodeId(2))
                .unwrap_err()
                .code,
            ResponseError::BrokerIdNotRegistered
        );
    }

    /// Kafka's `ReplicationControlManagerTest.testElectPreferredLeaders`: foo's partitions on
    /// {1,2,3}, {2,3,4}, {0,2,1} with broker 0 fenced and 1 shutting down; then both back
    /// in the ISRs. Same answers, partition for partition.
    #[test]
    fn preferred_leader_elections_answer_as_kafka_does() {
        use ResponseError::*;
        let mut q = Quorum::cluster(4);
        q.register(0, 100, true).unwrap();
        let topic = NewTopic {
            name: "foo".into(),
            id: Uuid::from_u128(7),
            partitions: 3,
            replication_factor: 3,
            assignments: Some(vec![n(&[1, 2, 3]), n(&[2, 3, 4]), n(&[0, 2, 1])]),
            configs: BTreeMap::new(),
        };
        let records = q.controller.create_topic(&q.image, &topic).unwrap();
        q.commit(records);
        // Broker 1 shuts down (its leaderships and ISR places go); 0 is still fenced.
        q.heartbeat(1, true).unwrap();
        let wanted = vec![
            ("foo".to_string(), vec![0, 1, 2]),
            ("bar".to_string(), vec![0, 1]),
        ];
        let codes = |results: &[TopicElections]| -> Vec<(String, i32, Option<ResponseError>)> {
            results
                .iter()
                .flat_map(|(t, ps)| {
                    ps.iter()
                        .map(move |(p, e)| (t.clone(), *p, e.as_ref().map(|e| e.code)))
                })
                .collect()
        };
        let (records, results) =
            q.controller
                .elect_leaders(&q.image, ElectionType::Preferred, Some(&wanted));
        assert!(records.is_empty());
        let foo = |p, e| ("foo".to_string(), p, e);
        let bar = |p| ("bar".to_string(), p, Some(UnknownTopicOrPartition));
        assert_eq!(
            codes(&results),
            vec![
                foo(0, Some(PreferredLeaderNotAvailable)),
                foo(1, Some(ElectionNotNeeded)),
                foo(2, Some(PreferredLeaderNotAvailable)),
                bar(0),
                bar(1),
            ]
        );
        assert_eq!(
            results[1].1[0].1.as_ref().unwrap().message,
            "No such topic as bar"
        );

        // Both come back (registered again, unfenced, caught up into the ISRs).
        q.restart(1, 11, true, &[2, 3, 4]);
        q.heartbeat(0, false).unwrap();
        for (p, isr) in [(0, [1, 2, 3]), (2, [0, 2, 1])] {
            let cur = q.partition(topic.id, p);
            let alter = AlterPartition {
                broker: cur.leader,
                broker_epoch: q.image.brokers[&cur.leader].epoch,
                topic_id: topic.id,
                partition: p,
                leader_epoch: cur.leader_epoch,
                partition_epoch: cur.partition_epoch,
                isr: n(&isr),
            };
            let records = q.controller.alter_partition(&q.image, &alter).unwrap();
            q.commit(records);
        }
        let (records, results) =
            q.controller
                .elect_leaders(&q.image, ElectionType::Preferred, Some(&wanted));
        assert_eq!(
            codes(&results),
            vec![
                foo(0, None),
                foo(1, Some(ElectionNotNeeded)),
                foo(2, None),
                bar(0),
                bar(1)
            ]
        );
        q.commit(records);
        assert_eq!(q.partition(topic.id, 0).leader, NodeId(1));
        assert_eq!(q.partition(topic.id, 2).leader, NodeId(0));
        // Every partition asked for by omission: those whose election is not needed are left
        // out of the answer.
        let (records, results) =
            q.controller
                .elect_leaders(&q.image, ElectionType::Preferred, None);
        assert!(records.is_empty());
        assert_eq!(results, vec![("foo".to_string(), vec![])]);
    }

    /// Kafka's `testBalancePartitionLeaders`, in short: after brokers come back, the
    /// automatic rebalance moves each leadership back to its first replica, and once
    /// balanced it has nothing to do.
    #[test]
    fn the_automatic_rebalance_returns_leaderships_to_their_first_replicas() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 3, 3);
        let preferred: Vec<NodeId> = (0..3).map(|p| q.partition(t, p).replicas[0]).collect();
        q.heartbeat(2, true).unwrap();
        q.restart(2, 22, true, &[1, 3]);
        // Broker 2 is back but leads nothing and is in no ISR until its leaders let it in.
        assert!(q.controller.balance_leaders(&q.image).is_empty());
        for p in 0..3 {
            let cur = q.partition(t, p);
            let alter = AlterPartition {
                broker: cur.leader,
                broker_epoch: q.image.brokers[&cur.leader].epoch,
                topic_id: t,
                partition: p,
                leader_epoch: cur.leader_epoch,
                partition_epoch: cur.partition_epoch,
                isr: cur.replicas.clone(),
            };
            let records = q.controller.alter_partition(&q.image, &alter).unwrap();
            q.commit(records);
        }
        let records = q.controller.balance_leaders(&q.image);
        assert_eq!(
            records.len(),
            1,
            "only the partition broker 2 prefers moves"
        );
        q.commit(records);
        let leaders: Vec<NodeId> = (0..3).map(|p| q.partition(t, p).leader).collect();
        assert_eq!(leaders, preferred);
        assert!(q.controller.balance_leaders(&q.image).is_empty());
    }

    /// An unclean election asked for: only for a partition without a leader, and only a
    /// live replica may take it.
    #[test]
    fn an_unclean_election_is_for_leaderless_partitions_only() {
        use ResponseError::*;
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 1, 3);
        let wanted = vec![("t".to_string(), vec![0])];
        let code = |q: &Quorum| {
            q.controller
                .elect_leaders(&q.image, ElectionType::Unclean, Some(&wanted))
                .1[0]
                .1[0]
                .1
                .as_ref()
                .map(|e| e.code)
        };
        assert_eq!(code(&q), Some(ElectionNotNeeded));
        // Every replica fenced in turn: offline, nobody to elect.
        for id in 1..=3 {
            let records = q.controller.fence(&q.image, NodeId(id));
            q.commit(records);
        }
        assert!(!q.partition(t, 0).has_leader());
        assert_eq!(code(&q), Some(EligibleLeadersNotAvailable));
        // One replica back after an unclean shutdown (so out of the ELR, its unflushed tail
        // may be gone): only an unclean election elects it.
        q.restart(3, 33, false, &[]);
        assert!(!q.partition(t, 0).has_leader());
        let (records, results) =
            q.controller
                .elect_leaders(&q.image, ElectionType::Unclean, Some(&wanted));
        assert_eq!(results[0].1[0].1, None);
        q.commit(records);
        assert_eq!(q.partition(t, 0).leader, NodeId(3));
    }

    /// KIP-966 end to end: with min ISR 2, losing two of three replicas one after the other
    /// leaves the partition led by the last ISR member; losing that one too leaves it
    /// offline (not led by a replica that may lack acknowledged records) until a replica
    /// from the ELR returns.
    #[test]
    fn losing_replicas_one_by_one_never_elects_a_replica_without_acknowledged_records() {
        let mut q = Quorum::cluster(3);
        let t = q.create("t", 1, 3);
        let order = q.partition(t, 0).replicas.clone();
        let fence = |q: &mut Quorum, id: NodeId| {
            let req = Heartbeat {
                id,
                epoch: q.image.brokers[&id].epoch,
                metadata_offset: q.image.offset,
                want_fence: true,
                want_shutdown: false,
            };
            let (records, _) = q.controller.heartbeat(&q.image, &req, q.now).unwrap();
            q.commit(records);
        };
        // The last replica dies first: the ISR drops to 2 (= min), no ELR.
        fence(&mut q, order[2]);
        assert!(q.partition(t, 0).elr.is_empty());
        // Then the leader: the ISR drops below min; the leaver becomes eligible.
        fence(&mut q, order[0]);
        let p = q.partition(t, 0);
        assert_eq!(p.leader, order[1]);
        assert_eq!(p.isr, [order[1]]);
        assert_eq!(p.elr, [order[0]]);
        // Then the new leader: offline, two eligible replicas, neither alive.
        fence(&mut q, order[1]);
        let p = q.partition(t, 0);
        assert_eq!(p.leader, NodeId::NONE);
        assert_eq!(p.elr, n(&[order[0].0, order[1].0]));
        // The replica that was out of the ISR before any of this comes back: still offline.
        q.register(order[2].0, 99, true).unwrap();
        q.heartbeat(order[2].0, false).unwrap();
        assert_eq!(q.partition(t, 0).leader, NodeId::NONE);
        // An eligible one comes back cleanly: it leads.
        q.register(order[0].0, 98, true).unwrap();
        q.heartbeat(order[0].0, false).unwrap();
        let p = q.partition(t, 0);
        assert_eq!(p.leader, order[0]);
        assert_eq!(p.isr, [order[0]]);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut q = Quorum::cluster(2);
        let mut starts = Vec::new();
        for id in [1, 2, 1] {
            let epoch = q.image.brokers[&NodeId(id)].epoch;
            let (records, start) = q
                .controller
                .allocate_producer_ids(&q.image, NodeId(id), epoch)
                .unwrap();
            q.commit(records);
            starts.push(start);
        }
        assert_eq!(starts, [0, 1_000, 2_000]);
    }
}
