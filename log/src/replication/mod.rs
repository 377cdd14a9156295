//! Partition replication in Kafka's ISR model, sans-IO: the leader's bookkeeping of its
//! followers, ISR and high watermark ([`leader`]), and where a follower's log diverges from
//! its leader's ([`truncation`]). The broker feeds these with appends, fetches and the
//! controller's decisions, and carries out what they return.

pub mod leader;
pub mod truncation;

pub use leader::{AckState, AlterIsr, FetchOutcome, LeaderAndIsr, LeaderPartition};
pub use truncation::{diverging_epoch, truncation_for, EpochEnd, Truncation};
