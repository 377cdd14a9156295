//! Coordinators: the group coordinator (consumer groups, committed offsets) and, later, the
//! transaction coordinator. Each is a state machine driven by requests and by an injected
//! clock (`tick`), with no I/O of its own beyond what the broker hands it.

pub mod group;
