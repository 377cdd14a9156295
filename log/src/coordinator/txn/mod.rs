//! The transaction coordinator's state (Kafka's KIP-98 model): per `transactional.id`, the
//! producer id and epoch, the transaction's state and the partitions (and group offsets) it
//! touched. The broker persists every change in the compacted `__transaction_state` topic
//! (one record per transactional id, last one wins) before answering, so a restart finds each
//! transaction where it was and finishes the ones caught between prepare and complete.
//! The decisions are the sans-IO [`engine`]'s; the broker carries out its effects.

pub mod engine;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The internal topic holding transaction metadata.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// Kafka's transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
}

impl TxnState {
    pub const ALL: [TxnState; 7] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
    ];

    /// Kafka's name of the state (DescribeTransactions, ListTransactions' filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }
}

/// An offset sent to a transaction (TxnOffsetCommit), committed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// One transactional id's metadata, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last KIP-360 bump, so a retried bump gets the same answer (-1
    /// when the last bump fenced an earlier producer).
    #[serde(default = "no_epoch")]
    pub last_producer_epoch: i16,
    /// The producer id before the id rotated at epoch exhaustion (-1 if it never did).
    #[serde(default = "no_producer")]
    pub previous_producer_id: i64,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions holding this transaction's records (markers go to each).
    pub partitions: BTreeSet<(String, i32)>,
    /// Consumer groups added with AddOffsetsToTxn. The offsets themselves are the group
    /// coordinator's (pending in `__consumer_offsets` until the marker); the lists stay empty
    /// and are kept for the record format.
    pub offsets: BTreeMap<String, Vec<PendingOffset>>,
    /// When the current transaction started (its timeout counts from here).
    pub started_ms: i64,
    pub updated_ms: i64,
}

fn no_epoch() -> i16 {
    -1
}

fn no_producer() -> i64 {
    -1
}

impl TxnMetadata {
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            previous_producer_id: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            offsets: BTreeMap::new(),
            started_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Whether a transaction is between its first write and its end.
    pub fn in_progress(&self) -> bool {
        matches!(
            self.state,
            TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
        )
    }

    /// The record value persisted for this metadata.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("transaction metadata serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<TxnMetadata> {
        serde_json::from_slice(bytes).ok()
    }
}
