//! What travels on the controller listener: the controllers' Raft RPCs and the brokers'
//! requests to the active controller (registration, heartbeats, ISR changes, topic
//! administration, producer-id blocks) and to any controller (the metadata log since an
//! offset). KRaft carries these as Kafka APIs (`BrokerRegistration`, `BrokerHeartbeat`,
//! `AlterPartition`, a Fetch of `__cluster_metadata`); rill keeps its controller protocol
//! its own, as only rill brokers speak it: each message is one frame
//! `[length u32, big-endian][JSON]`, bounded in size.

use std::collections::BTreeMap;
use std::io;

use kafka_protocol::ResponseError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::decisions::{
    AlterPartition, ControllerError, ElectionType, Heartbeat, HeartbeatReply, ReassignmentTarget,
    RegisterBroker,
};
use super::raft::network::{RaftRequest, RaftResponse};
use super::raft::state_machine::MetadataDelta;
use crate::types::NodeId;

/// The largest frame either side accepts (snapshots travel in chunks far below it).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// A topic to create, as a broker forwards it (the controller picks its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub assignments: Option<Vec<Vec<NodeId>>>,
    pub configs: BTreeMap<String, String>,
}

/// A request on the controller listener.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControllerRequest {
    Raft(RaftRequest),
    Register(RegisterBroker),
    Heartbeat(Heartbeat),
    AlterPartition(AlterPartition),
    CreateTopics {
        topics: Vec<TopicSpec>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topic: String,
        total: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
    },
    SetTopicConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    AllocateProducerIds {
        broker: NodeId,
        broker_epoch: u64,
    },
    /// Leader elections (Kafka's `ElectLeaders`): of the partitions named, or of every
    /// partition.
    ElectLeaders {
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// A decommissioned broker leaves the cluster (Kafka's `UnregisterBroker`).
    UnregisterBroker {
        id: NodeId,
    },
    /// Partition reassignments (Kafka's `AlterPartitionReassignments`): per partition, the
    /// target replicas, or `None` to cancel.
    AlterReassignments {
        targets: Vec<ReassignmentTarget>,
    },
    /// The metadata log after `offset`; waits up to `max_wait_ms` when there is nothing new.
    FetchMetadata {
        offset: u64,
        max_wait_ms: u64,
    },
    DescribeQuorum,
}

/// The quorum as one controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumInfo {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub voters: BTreeMap<u64, String>,
    /// The metadata offset applied here.
    pub applied: u64,
}

/// A refusal on the wire: Kafka's error code, a message, and where the active controller
/// is when this one is not it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (error {code})")]
pub struct WireError {
    pub code: i16,
    pub message: String,
    pub leader: Option<u64>,
}

impl WireError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        WireError {
            code: code.code(),
            message: message.into(),
            leader: None,
        }
    }

    pub fn not_controller(leader: Option<u64>) -> Self {
        WireError {
            code: ResponseError::NotController.code(),
            message: format!("not the active controller (the leader is {leader:?})"),
            leader,
        }
    }

    pub fn is_not_controller(&self) -> bool {
        self.code == ResponseError::NotController.code()
    }

    pub fn error(&self) -> Option<ResponseError> {
        ResponseError::try_from_code(self.code)
    }
}

impl From<ControllerError> for WireError {
    fn from(e: ControllerError) -> Self {
        WireError::new(e.code, e.message)
    }
}

/// One topic's election results on the wire: per partition, `None` when elected.
pub type WireElections = (String, Vec<(i32, Option<WireError>)>);

/// The answer to a [`ControllerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ControllerResponse {
    Raft(RaftResponse),
    /// A registration: the broker's epoch.
    Registered {
        epoch: u64,
    },
    Heartbeat(HeartbeatReply),
    /// Committed at this metadata offset (or, with nothing to commit, the offset it was
    /// decided at).
    Committed {
        offset: u64,
    },
    /// Per topic: its id, or why not; and the offset the creations were committed by.
    Topics {
        results: Vec<Result<Uuid, WireError>>,
        offset: u64,
    },
    ProducerIds {
        start: i64,
        len: i64,
    },
    /// Per topic and partition: elected (`None`) or why not; and the offset the elections
    /// were committed by.
    Elections {
        results: Vec<WireElections>,
        offset: u64,
    },
    /// Per partition: started (`None`) or why not; and the commit's offset.
    Reassignments {
        results: Vec<(String, i32, Option<WireError>)>,
        offset: u64,
    },
    Metadata(MetadataDelta),
    Quorum(QuorumInfo),
    Error(WireError),
}

/// Writes `value` as one frame.
pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    if json.len() > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!("frame of {} bytes", json.len())));
    }
    let mut buf = Vec::with_capacity(json.len() + 4);
    buf.extend_from_slice(&(json.len() as u32).to_be_bytes());
    buf.extend_from_slice(&json);
    stream.write_all(&buf).await
}

/// Reads one frame; `None` at a clean end of the stream. A frame too large or not the
/// expected message is an error (the caller drops the connection).
pub async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
