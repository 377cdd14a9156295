//! One controller's membership in the metadata quorum: openraft running over rill's log
//! store, state machine and network. [`Quorum::write`] commits records (on the leader); [`Quorum::shared`] is the image
//! every committed record has been applied to.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};

use super::raft::log_store::LogStore;
use super::raft::network::Network;
use super::raft::state_machine::{SharedImage, StateMachine};
use super::raft::{MetadataBatch, Raft};
use super::records::MetadataRecord;

/// The quorum's settings.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This controller's `node.id`.
    pub node_id: u64,
    /// Every voter's `node.id` and controller listener (`controller.quorum.voters`), this
    /// one included.
    pub voters: BTreeMap<u64, String>,
    /// Where the metadata log, its meta file and its snapshot live.
    pub dir: PathBuf,
    /// Raft's heartbeat and election timeouts, in ms (KRaft's `controller.quorum.*`).
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries (`metadata.log.max.snapshot.interval`,
    /// counted in entries), and the log before it purged.
    pub snapshot_every_entries: u64,
    /// Entries kept after a snapshot, so a briefly absent peer catches up from entries
    /// rather than a whole snapshot.
    pub entries_kept_after_snapshot: u64,
    /// Brokers more than this many entries behind get the whole image instead.
    pub broker_window_entries: usize,
}

impl QuorumConfig {
    pub fn new(node_id: u64, voters: BTreeMap<u64, String>, dir: impl Into<PathBuf>) -> Self {
        QuorumConfig {
            node_id,
            voters,
            dir: dir.into(),
            heartbeat_interval_ms: 0,
            election_timeout_min_ms: 0,
            election_timeout_max_ms: 0,
            snapshot_every_entries: 10_000,
            entries_kept_after_snapshot: 1_000,
            broker_window_entries: 20_000,
        }
        .with_election_timeout(1_000)
    }

    /// Sets Raft's timers from KRaft's `controller.quorum.election.timeout.ms`: a voter that
    /// hears nothing from the leader for about `ms` starts an election. openraft waits its
    /// leader lease (`election_timeout_max`) plus the node's election timeout (drawn once
    /// in `[min, max)`) after the last heartbeat, so max is half of `ms` and min a quarter:
    /// an election starts between 3/4 of `ms` and `ms` (plus a tick, 3/2 of a heartbeat)
    /// after the leader's death. Heartbeats go at a tenth of `ms`, well inside the lease.
    pub fn with_election_timeout(mut self, ms: u64) -> Self {
        let ms = ms.max(40);
        self.election_timeout_min_ms = ms / 4;
        self.election_timeout_max_ms = ms / 2;
        self.heartbeat_interval_ms = (ms / 10).max(1);
        self
    }
}

/// Why a write was not committed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Only the leader commits; it is `leader` (if known).
    #[error("not the active controller (the leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("metadata quorum: {0}")]
    Raft(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A running member of the quorum.
pub struct Quorum {
    raft: Raft,
    shared: Arc<SharedImage>,
    addr: SocketAddr,
    node_id: u64,
    voters: BTreeMap<u64, String>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum").field("addr", &self.addr).finish()
    }
}

impl Quorum {
    /// Starts this controller (its controller listener at `addr` is served by the caller):
    /// opens the metadata log and snapshot and joins the quorum, initialising it on first
    /// start (every voter does so with the same membership, which openraft makes
    /// idempotent).
    pub async fn start(config: QuorumConfig, addr: SocketAddr) -> Result<Quorum, QuorumError> {
        let dir = config.dir.clone();
        let log_store = LogStore::open(&dir)?;
        let state_machine = StateMachine::open(&dir, config.broker_window_entries)?;
        let shared = state_machine.shared();
        let raft_config = openraft::Config {
            cluster_name: "rill-metadata".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.entries_kept_after_snapshot,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<u64, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(_)) => {}
                Err(e) => return Err(QuorumError::Raft(e.to_string())),
            }
        }
        Ok(Quorum {
            raft,
            shared,
            addr,
            node_id: config.node_id,
            voters: config.voters,
        })
    }

    /// The controller listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shared(&self) -> &Arc<SharedImage> {
        &self.shared
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The current leader, as this controller knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.raft.metrics().borrow().id)
    }

    /// Commits `records` as one entry; returns its offset once applied here.
    pub async fn write(&self, records: Vec<MetadataRecord>) -> Result<u64, QuorumError> {
        match self.raft.client_write(MetadataBatch { records }).await {
            Ok(resp) => Ok(resp.data.offset),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(QuorumError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(QuorumError::Raft(e.to_string())),
        }
    }

    /// Waits until this controller, as leader, has applied everything committed before now
    /// (so a decision sees every earlier one).
    pub async fn linearize(&self) -> Result<(), QuorumError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(QuorumError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(QuorumError::Raft(e.to_string())),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn voters(&self) -> &BTreeMap<u64, String> {
        &self.voters
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Stops Raft on this controller.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
