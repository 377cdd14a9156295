//! Validating a request's batches before they are appended: framing, CRC, sizes, record
//! counts, the records themselves, and who may write what (Kafka's `LogValidator`).

use super::batch::{BatchError, BatchHeader, BatchIter};
use super::records::validate_records;

/// Who is appending, as Kafka's `AppendOrigin`: clients may not write control batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer's request.
    Client,
    /// The broker's own coordinators (transaction markers, group offsets).
    Coordinator,
    /// A follower copying its leader's batches: they were validated when the leader appended
    /// them, so only their framing and CRC are checked (Kafka's `AppendOrigin.REPLICATION`,
    /// which skips the size limit and the records' validation too).
    Replication,
}

/// Checks every batch of a request before anything is written, in one pass (the CRC once,
/// the records once): what the broker's produce path and the log's append share. Returns
/// each header (its max timestamp recomputed from the records) and its position in
/// `records`.
pub fn validate_batches(
    records: &[u8],
    max_message_bytes: u64,
    keys_required: bool,
    origin: AppendOrigin,
) -> Result<Vec<(BatchHeader, usize)>, BatchError> {
    let mut out = Vec::new();
    for item in BatchIter::new(records) {
        let (h, bytes, at) = item?;
        // Transaction markers are the coordinator's to write (Kafka's LogValidator refuses
        // control batches from clients too).
        if h.is_control() && origin == AppendOrigin::Client {
            return Err(BatchError::Records(
                "control batches come from the transaction coordinator only".into(),
            ));
        }
        if origin == AppendOrigin::Replication {
            if h.record_count < 1 || h.last_offset_delta < 0 {
                return Err(BatchError::BadRecordCount(h.record_count));
            }
            out.push((h, at));
            continue;
        }
        if h.total_bytes() as u64 > max_message_bytes {
            return Err(BatchError::TooLarge {
                size: h.total_bytes(),
                max: max_message_bytes as usize,
            });
        }
        if h.record_count < 1 {
            return Err(BatchError::BadRecordCount(h.record_count));
        }
        if h.last_offset_delta != h.record_count - 1 {
            return Err(BatchError::LastOffsetDelta {
                last_offset_delta: h.last_offset_delta,
                record_count: h.record_count,
            });
        }
        // Like Kafka, look inside every batch, compressed ones included (bounded decompression):
        // a batch whose records disagree with its header never reaches the log.
        let max_timestamp = validate_records(&h, bytes, keys_required)?;
        // The header's max timestamp drives retention and time lookups: take the records'
        // word for it, not the producer's (the append re-seals a batch whose header differs).
        let mut h = h;
        h.max_timestamp = max_timestamp;
        out.push((h, at));
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::control::{encode_marker, Marker};
    use crate::record::{encode_batch, Compression, NewRecord};

    /// Kafka's `LogValidatorTest.testControlRecordsNotAllowedFromClients` /
    /// `testControlRecordsAllowedFromCoordinator`, in one pass with the rest.
    #[test]
    fn control_batches_pass_from_the_coordinator_only() {
        let marker = encode_marker(1, 0, Marker::Commit, 0, 1_000).unwrap();
        let e = validate_batches(&marker, 1 << 20, false, AppendOrigin::Client).unwrap_err();
        assert!(
            e.to_string().contains("transaction coordinator only"),
            "{e}"
        );
        let ok = validate_batches(&marker, 1 << 20, false, AppendOrigin::Coordinator).unwrap();
        assert!(ok[0].0.is_control());
        // A data batch passes from either, with its position.
        let data = encode_batch(
            &[NewRecord::new(None::<Vec<u8>>, Some(b"v".to_vec()), 5)],
            Compression::None,
        )
        .unwrap();
        let mut both = data.clone();
        both.extend_from_slice(&data);
        let got = validate_batches(&both, 1 << 20, false, AppendOrigin::Client).unwrap();
        assert_eq!(
            got.iter().map(|(_, at)| *at).collect::<Vec<_>>(),
            [0, data.len()]
        );
    }
}
