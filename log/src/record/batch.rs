//! Kafka's RecordBatch v2 header: parsing, CRC32C verification and the in-place rewrites the
//! leader makes (base offset, partition leader epoch, log-append time). The layout is drawn in
//! `docs/storage-format.md`. Nothing here trusts its input: every length is checked before use.

use crate::types::{LeaderEpoch, Offset};

/// Bytes before the CRC-covered part that frame a batch: base offset (8) and batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The whole v2 batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The smallest legal value of the batch length field (a header with no records).
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;
/// The only batch format rill stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC32C covers everything from the attributes to the end of the batch.
const CRC_FROM: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Why a batch was refused. Each names what was wrong so an operator can tell a torn write from
/// a buggy client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("no record batch in the input")]
    Empty,
    #[error("batch is truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported batch magic {0}; only v2 (magic 2) is stored")]
    BadMagic(i8),
    #[error("batch length {0} is below the v2 header size or above the limit")]
    BadLength(i32),
    #[error("batch CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch record count {0} is invalid")]
    BadRecordCount(i32),
    #[error(
        "batch last offset delta {last_offset_delta} does not match record count {record_count}"
    )]
    LastOffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed records inside the batch: {0}")]
    Records(String),
    /// Every keyless record of the batch (by index), so the producer learns which records
    /// were bad (KIP-467's per-record errors).
    #[error("records {0:?} of the batch have no key, which a compacted topic requires")]
    MissingKeys(Vec<i32>),
    /// Records whose CreateTime lies outside the topic's bounds, as (index in the batch,
    /// timestamp).
    #[error(
        "record timestamps out of range (the topic takes [{earliest}, {latest}]): {records:?} \
         as (index, timestamp)"
    )]
    Timestamps {
        records: Vec<(i32, i64)>,
        earliest: i64,
        latest: i64,
    },
}

/// The codec of a batch's records (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        Ok(match attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other)),
        })
    }

    /// The codec as kafka-protocol names it.
    pub fn to_protocol(self) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression as P;
        match self {
            Compression::None => P::None,
            Compression::Gzip => P::Gzip,
            Compression::Snappy => P::Snappy,
            Compression::Lz4 => P::Lz4,
            Compression::Zstd => P::Zstd,
        }
    }

    /// Parses Kafka's `compression.type` names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// What a record's timestamp means (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A parsed v2 batch header. Fields keep Kafka's names and widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf` without checking the CRC. Fails on a short
    /// buffer, a magic other than 2, or a length field below the header size.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            // Report the magic first when we have it: "v0/v1 batch" is a clearer error than a length.
            if buf.len() > MAGIC_AT && buf[MAGIC_AT] as i8 != MAGIC_V2 {
                return Err(BatchError::BadMagic(buf[MAGIC_AT] as i8));
            }
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = be_i32(buf, LENGTH_AT);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length,
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            record_count: be_i32(buf, RECORD_COUNT_AT),
        })
    }

    /// Bytes the whole batch occupies, framing included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The offset of the batch's last record (holes left by compaction included).
    pub fn last_offset(&self) -> i64 {
        // Saturating: a header from disk may hold any base offset; callers range-check after.
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// One past the last offset: where the next batch starts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Computes the CRC32C the header should carry for `batch` (one whole batch).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_FROM..])
}

/// Checks the batch at the start of `buf`: header, length within `buf`, CRC32C. Returns the
/// header; the batch occupies `header.total_bytes()` bytes of `buf`.
pub fn verify_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if total > buf.len() {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let computed = compute_crc(&buf[..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.record_count < 0 {
        return Err(BatchError::BadRecordCount(header.record_count));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::LastOffsetDelta {
            last_offset_delta: header.last_offset_delta,
            record_count: header.record_count,
        });
    }
    header.compression()?;
    Ok(header)
}

/// Whether `rest` (bytes from a batch boundary on) holds only the start of a batch: fewer
/// bytes than its framing, or than the length the framing declares. A length or magic no v2
/// batch can have is an error whether or not the bytes were cut: they are not a batch.
fn cut_short(rest: &[u8]) -> Result<bool, BatchError> {
    if rest.len() < LOG_OVERHEAD {
        return Ok(true);
    }
    let batch_length = be_i32(rest, LENGTH_AT);
    if batch_length < BATCH_LENGTH_MIN {
        return Err(BatchError::BadLength(batch_length));
    }
    if rest.len() > MAGIC_AT && rest[MAGIC_AT] as i8 != MAGIC_V2 {
        return Err(BatchError::BadMagic(rest[MAGIC_AT] as i8));
    }
    Ok(rest.len() < LOG_OVERHEAD + batch_length as usize)
}

/// Iterates over the verified batches of a buffer holding whole batches back to back. Stops at
/// the first error, which it yields once.
#[derive(Debug)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
    /// A trailing incomplete batch ends the iteration instead of failing it.
    tail_may_be_cut: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
            tail_may_be_cut: false,
        }
    }

    /// For the records of a fetch response, whose last batch a broker may have cut at the
    /// fetch's size limit (Kafka's brokers do; clients read the whole batches before it and
    /// fetch the cut one again from its offset). Such a trailing incomplete batch ends the
    /// iteration quietly; see [`BatchIter::cut_tail`]. Every complete batch is still verified,
    /// and bytes that cannot start a batch (a bad length or magic) are still an error.
    pub fn fetched(buf: &'a [u8]) -> Self {
        BatchIter {
            tail_may_be_cut: true,
            ..Self::new(buf)
        }
    }

    /// Where in the buffer the next batch starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes of an incomplete batch left at the end (0 if none), once the iteration ended.
    pub fn cut_tail(&self) -> usize {
        if self.failed {
            0
        } else {
            self.buf.len() - self.pos
        }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    /// The header, the batch's bytes, and its position in the buffer.
    type Item = Result<(BatchHeader, &'a [u8], usize), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        if self.tail_may_be_cut {
            match cut_short(&self.buf[self.pos..]) {
                Ok(false) => {}
                // Left for `cut_tail`: the iteration stops here, `pos` at the cut batch.
                Ok(true) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        match verify_batch(&self.buf[self.pos..]) {
            Ok(h) => {
                let at = self.pos;
                let bytes = &self.buf[at..at + h.total_bytes()];
                self.pos += h.total_bytes();
                Some(Ok((h, bytes, at)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Like [`BatchIter`] but checks only each batch's framing (header, length within the
/// buffer), not its CRC: for data whose CRCs were already checked.
#[derive(Debug)]
pub struct FramedIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> FramedIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        FramedIter {
            buf,
            pos: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for FramedIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8], usize), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let framed = BatchHeader::parse(rest).and_then(|h| {
            if h.total_bytes() > rest.len() {
                Err(BatchError::Truncated {
                    needed: h.total_bytes(),
                    available: rest.len(),
                })
            } else {
                Ok(h)
            }
        });
        match framed {
            Ok(h) => {
                let at = self.pos;
                self.pos += h.total_bytes();
                Some(Ok((h, &self.buf[at..self.pos], at)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Rewrites the fields the leader owns, which the CRC does not cover: base offset and partition
/// leader epoch. `batch` must start with a parsed batch.
pub fn assign_offset(batch: &mut [u8], base_offset: Offset, epoch: LeaderEpoch) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.0.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.0.to_be_bytes());
}

/// Marks a batch as log-append-time stamped at `now_ms` (Kafka's `message.timestamp.type =
/// LogAppendTime`): sets attribute bit 3 and the max timestamp, then re-seals the CRC, which
/// covers both.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    reseal(batch);
}

/// Sets the header's max timestamp (to what the records hold, as Kafka's validator does) and
/// re-seals the CRC.
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) {
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    reseal(batch);
}

/// Sets the last offset delta (the cleaner keeps a batch's last offset when it drops records)
/// and re-seals the CRC.
pub fn set_last_offset_delta(batch: &mut [u8], delta: i32) {
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&delta.to_be_bytes());
    reseal(batch);
}

/// Copies the timestamp-type bit from an original batch's attributes and re-seals the CRC.
pub fn set_timestamp_type(batch: &mut [u8], ts_type: TimestampType) {
    let mut attributes = be_i16(batch, ATTRIBUTES_AT) & !TIMESTAMP_TYPE_BIT;
    if ts_type == TimestampType::LogAppendTime {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    reseal(batch);
}

/// Makes `batch` (a header followed by a new records payload) say it holds `compression`:
/// the codec bits of the attributes and the batch length are set, then the CRC re-sealed.
pub fn set_compression(batch: &mut [u8], compression: Compression) -> Result<(), BatchError> {
    let codec: i16 = match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    let length = i32::try_from(batch.len() - LOG_OVERHEAD).map_err(|_| BatchError::TooLarge {
        size: batch.len(),
        max: i32::MAX as usize,
    })?;
    batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = (be_i16(batch, ATTRIBUTES_AT) & !COMPRESSION_MASK) | codec;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    reseal(batch);
    Ok(())
}

fn reseal(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::records::{encode_batch, NewRecord};

    fn sample() -> Vec<u8> {
        let recs: Vec<NewRecord> = (0..3)
            .map(|i| NewRecord::new(Some(format!("k{i}")), Some("v"), 1_000 + i))
            .collect();
        encode_batch(&recs, Compression::None).unwrap()
    }

    #[test]
    fn parses_header_written_by_kafka_protocol_encoder() {
        let b = sample();
        let h = verify_batch(&b).unwrap();
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(h.total_bytes(), b.len());
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
    }

    #[test]
    fn offset_rewrite_keeps_crc_valid() {
        let mut b = sample();
        assign_offset(&mut b, Offset(77), LeaderEpoch(5));
        let h = verify_batch(&b).unwrap();
        assert_eq!(h.base_offset, 77);
        assert_eq!(h.partition_leader_epoch, 5);
        assert_eq!(h.last_offset(), 79);
    }

    #[test]
    fn every_single_byte_flip_in_crc_range_is_caught() {
        let b = sample();
        for i in CRC_AT..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(verify_batch(&c).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn short_and_wrong_inputs_are_typed_errors() {
        let b = sample();
        assert!(matches!(
            verify_batch(&b[..10]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            verify_batch(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut m = b.clone();
        m[MAGIC_AT] = 1;
        assert_eq!(verify_batch(&m), Err(BatchError::BadMagic(1)));
        let mut l = b.clone();
        l[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(verify_batch(&l), Err(BatchError::BadLength(-5)));
        assert!(matches!(
            verify_batch(&[]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn log_append_time_stamp_is_sealed() {
        let mut b = sample();
        stamp_log_append_time(&mut b, 42_000);
        let h = verify_batch(&b).unwrap();
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 42_000);
    }

    #[test]
    fn iterator_walks_back_to_back_batches_and_stops_at_garbage() {
        let mut buf = sample();
        buf.extend(sample());
        buf.extend([0xAB; 30]);
        let items: Vec<_> = BatchIter::new(&buf).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(items[2].is_err());
    }

    /// A fetch cut anywhere (in the framing, the header, the records, or exactly between two
    /// batches) yields the whole batches before the cut and no error; `new` still refuses it.
    #[test]
    fn fetched_records_end_quietly_at_a_cut_batch() {
        let first = sample().len();
        let mut buf = sample();
        buf.extend(sample());
        for cut in 0..=buf.len() {
            let mut it = BatchIter::fetched(&buf[..cut]);
            let whole: Vec<usize> = it.by_ref().map(|b| b.unwrap().2).collect();
            let expect: Vec<usize> = [0, first]
                .into_iter()
                .filter(|at| at + first <= cut)
                .collect();
            assert_eq!(whole, expect, "cut at {cut}");
            assert_eq!(it.cut_tail(), cut - first * expect.len(), "cut at {cut}");
            let strict_fails = BatchIter::new(&buf[..cut]).any(|b| b.is_err());
            assert_eq!(strict_fails, cut % first != 0, "cut at {cut}");
        }
    }

    /// Cut or not, a complete batch must verify, and bytes that cannot start a batch are not a
    /// cut one.
    #[test]
    fn fetched_records_still_refuse_corrupt_batches() {
        let b = sample();
        let mut crc = b.clone();
        crc[CRC_FROM + 3] ^= 1;
        crc.extend(&b[..30]);
        let items: Vec<_> = BatchIter::fetched(&crc).collect();
        assert!(matches!(items[..], [Err(BatchError::CrcMismatch { .. })]));

        // A bad length or magic in a trailing fragment, even one shorter than a header.
        let mut tail = b.clone();
        tail.extend(&b[..20]);
        let mut length = tail.clone();
        length[b.len() + LENGTH_AT..][..4].copy_from_slice(&7i32.to_be_bytes());
        let mut magic = tail.clone();
        magic[b.len() + MAGIC_AT] = 1;
        for (bad, want) in [
            (length, BatchError::BadLength(7)),
            (magic, BatchError::BadMagic(1)),
        ] {
            let mut it = BatchIter::fetched(&bad);
            assert!(it.next().unwrap().is_ok());
            assert_eq!(it.next(), Some(Err(want)));
            assert_eq!(it.next(), None);
            assert_eq!(it.cut_tail(), 0);
        }
    }
}
