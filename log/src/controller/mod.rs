//! The metadata quorum's logic (KRaft's controller): the records of the metadata log
//! ([`records`]), the image they build ([`image`]), and the active controller's decisions
//! ([`decisions`]: broker registration, heartbeats and fencing, topic creation and
//! placement ([`placement`]), ISR changes and leader election ([`partition_change`])).
//! Sans-IO: the quorum that replicates the records and the RPCs that carry requests live
//! beside this, so the same decisions run under a simulation.

pub mod decisions;
pub mod image;
pub mod partition_change;
pub mod placement;
pub mod quorum;
pub mod raft;
pub mod records;
pub mod rpc;
pub mod service;

pub use decisions::{Controller, ControllerConfig, ControllerError, ElectionType};
pub use image::MetadataImage;
pub use records::{BrokerRegistration, MetadataRecord, PartitionRecord};
