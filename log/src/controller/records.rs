//! The records of the replicated metadata log (KRaft's `__cluster_metadata` records, in
//! rill's own encoding): what the controllers agree on and every broker follows. Each record
//! is a whole fact (a partition record carries the partition's full state, not a delta), so
//! applying one is a replacement and a snapshot is just the image those records built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::NodeId;

/// A broker's registration (Kafka's `RegisterBrokerRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: NodeId,
    /// Changes on every start of the broker process: a new incarnation replaces the old
    /// registration.
    pub incarnation: Uuid,
    /// The metadata offset of the registration (set when applied): requests carrying an
    /// older broker epoch come from a previous incarnation and are refused.
    pub epoch: u64,
    /// The listener clients connect to (`advertised.listeners`).
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and join no ISR: new registrations start fenced and are
    /// unfenced once caught up with the metadata log; missed heartbeats fence them again.
    pub fenced: bool,
    /// In controlled shutdown: leaderships are moved away and it joins no ISR.
    pub shutting_down: bool,
}

/// A topic's identity (Kafka's `TopicRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
}

/// One partition's whole replication state (Kafka's `PartitionRecord`, written again on
/// every change instead of `PartitionChangeRecord` deltas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The assignment, in preference order (the first is the preferred leader).
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// Eligible leader replicas (KIP-966): out of the ISR since it fell below
    /// `min.insync.replicas`, so the high watermark has not moved without them and they
    /// hold every acknowledged record; a leader may come from here when the ISR is empty.
    pub elr: Vec<NodeId>,
    /// `NodeId::NONE` while no replica can lead (the partition is offline).
    pub leader: NodeId,
    /// Bumped on every leader change; stamped into the leader's batches.
    pub leader_epoch: i32,
    /// Bumped on every change; `AlterPartition` must name the current one.
    pub partition_epoch: i32,
    /// Replicas a reassignment adds (Kafka's `addingReplicas`): already in `replicas`,
    /// catching up; the reassignment completes once all of them are in the ISR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<NodeId>,
    /// Replicas a reassignment removes when it completes (Kafka's `removingReplicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<NodeId>,
}

impl PartitionRecord {
    pub fn has_leader(&self) -> bool {
        self.leader != NodeId::NONE
    }

    /// A reassignment is under way.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas before the reassignment under way (Kafka's `originalReplicas`).
    pub fn original_replicas(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|r| !self.adding.contains(r))
            .copied()
            .collect()
    }
}

/// One fact of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker registers (or re-registers with a new incarnation), fenced.
    RegisterBroker(BrokerRegistration),
    /// The broker with this epoch is fenced (`true`) or unfenced (`false`).
    FenceBroker {
        id: NodeId,
        epoch: u64,
        fenced: bool,
    },
    /// The broker with this epoch began a controlled shutdown.
    ShutdownBroker {
        id: NodeId,
        epoch: u64,
    },
    /// The broker with this epoch leaves the cluster (Kafka's `UnregisterBrokerRecord`): an
    /// operator decommissioned it.
    UnregisterBroker {
        id: NodeId,
        epoch: u64,
    },
    Topic(TopicRecord),
    /// A topic's configuration overrides, replaced whole.
    TopicConfig {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A partition is created or changes.
    Partition(PartitionRecord),
    RemoveTopic {
        id: Uuid,
    },
    /// Producer ids below `next` are handed out (a block went to `broker`).
    ProducerIds {
        broker: NodeId,
        next: i64,
    },
}
