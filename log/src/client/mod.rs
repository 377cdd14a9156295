//! Rill's Kafka clients — `Producer`, `Consumer`, `Admin` — written once against a transport
//! (embedded: typed requests straight into the in-process `Broker`; TCP: the Kafka protocol).
//!
//! Today: the partitioner, which must place keys exactly where Kafka's Java client does.

pub mod partitioner;
