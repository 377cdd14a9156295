//! Transaction control markers: the commit / abort record a transaction's end leaves in each
//! of its partitions (Kafka's `EndTransactionMarker`), encoded and recognised.

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::Record as PRecord;

use super::batch::{BatchError, Compression};
use super::records::{decode_batch, encode};

/// A transaction marker: the end of a producer's transaction in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// The marker a control batch carries (its first record's key: version, then type 0 = abort,
/// 1 = commit); `None` for anything else.
pub fn control_marker(batch: &[u8]) -> Option<Marker> {
    let (h, records) = decode_batch(batch).ok()?;
    if !h.is_control() {
        return None;
    }
    marker_of_key(records.first()?.key.as_deref()?)
}

/// The marker a control record's key says (version, then type 0 = abort, 1 = commit).
pub fn marker_of_key(key: &[u8]) -> Option<Marker> {
    match key.get(2..4)? {
        [0, 0] => Some(Marker::Abort),
        [0, 1] => Some(Marker::Commit),
        _ => None,
    }
}

/// A transaction marker batch of `producer_id`: one control record whose key says commit or
/// abort and whose value carries the coordinator epoch (Kafka's `EndTransactionMarker`).
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Result<Vec<u8>, BatchError> {
    let kind: i16 = match marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = PRecord {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: IndexMap::new(),
    };
    encode(std::slice::from_ref(&record), Compression::None)
}
