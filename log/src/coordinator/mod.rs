//! Coordinators: the group coordinator (consumer groups, committed offsets) and the
//! transaction coordinator's state. Each is a state machine driven by requests and by an injected
//! clock (`tick`), with no I/O of its own beyond what the broker hands it.

pub mod group;
pub mod txn;
