//! Helpers shared by the fuzz targets.

use rill_log::record::batch::{compute_crc, BATCH_HEADER_BYTES};

/// Writes the right CRC32C into every batch found by its length framing, so mutated inputs get
/// past the checksum and reach the parsers behind it.
pub fn reseal_all(buf: &mut [u8]) {
    let mut pos = 0usize;
    while buf.len() - pos >= BATCH_HEADER_BYTES {
        let len = i32::from_be_bytes([buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]]);
        let Some(end) = usize::try_from(len).ok().and_then(|l| (pos + 12).checked_add(l)) else {
            return;
        };
        if len < 49 || end > buf.len() {
            return;
        }
        let crc = compute_crc(&buf[pos..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}
