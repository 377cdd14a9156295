//! The metadata quorum on openraft: the type configuration, the metadata log's storage
//! ([`log_store`]), the state machine that applies committed records to the image and
//! snapshots it ([`state_machine`]), and the controllers' RPCs over TCP ([`network`]).
//! rill follows openraft's storage and network traits: openraft owns elections, replication
//! and commit; rill owns bytes on disk and on the wire.

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::records::MetadataRecord;

/// One entry's worth of records: what one controller decision commits, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

/// What applying an entry answered: the metadata offset it landed at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub offset: u64,
}

openraft::declare_raft_types!(
    /// The metadata quorum's types: node ids are `node.id`s, nodes are reached at their
    /// controller listener.
    pub MetadataRaft:
        D = MetadataBatch,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<MetadataRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// An entry of the metadata log.
pub type LogEntry = openraft::Entry<MetadataRaft>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type Raft = openraft::Raft<MetadataRaft>;
