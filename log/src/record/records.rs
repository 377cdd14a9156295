//! Records inside a v2 batch: bounded decompression, a strict record parser, and batch encoding
//! (through the `kafka-protocol` crate's encoder) for clients, tests and the cleaner.
//!
//! Decoding is written here rather than taken from `kafka-protocol` because every count and
//! length in a batch comes from the network or the disk: the parser checks each one against the
//! bytes actually present before allocating, and decompression stops at
//! [`DECOMPRESSED_BATCH_BYTES_MAX`] so a compression bomb cannot exhaust memory.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record as PRecord, RecordBatchEncoder, RecordEncodeOptions};

use super::batch::{
    self, verify_batch, BatchError, BatchHeader, Compression, TimestampType, BATCH_HEADER_BYTES,
};

/// The most bytes one batch may decompress to. Kafka's default `max.message.bytes` is about
/// 1 MiB compressed; 64 MiB leaves room for 64:1 compression and bounds a bomb.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

/// A record to put into a new batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    /// `None` is a tombstone on a compacted topic.
    pub value: Option<Bytes>,
    pub timestamp_ms: i64,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl NewRecord {
    pub fn new(
        key: Option<impl Into<Bytes>>,
        value: Option<impl Into<Bytes>>,
        timestamp_ms: i64,
    ) -> Self {
        NewRecord {
            key: key.map(Into::into),
            value: value.map(Into::into),
            timestamp_ms,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, key: impl Into<String>, value: Option<impl Into<Bytes>>) -> Self {
        self.headers.push((key.into(), value.map(Into::into)));
        self
    }
}

/// A record read back from the log, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A record as it sits in a decompressed payload, borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The encoded headers (count already checked); see [`parse_headers`].
    pub header_count: usize,
    pub headers_raw: &'a [u8],
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed(what: &str) -> BatchError {
    BatchError::Records(what.to_string())
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| malformed("record ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn unsigned_varint(&mut self, max_bytes: u32) -> Result<u64, BatchError> {
        let start = self.pos;
        uvarint_at(self.buf, &mut self.pos, max_bytes).ok_or_else(|| {
            if self.pos - start >= max_bytes as usize {
                malformed("varint too long")
            } else {
                malformed("record ends early")
            }
        })
    }

    /// Kafka's zigzag varint (32-bit).
    fn varint(&mut self) -> Result<i32, BatchError> {
        let v = self.unsigned_varint(5)?;
        let v = u32::try_from(v).map_err(|_| malformed("varint overflows 32 bits"))?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// Kafka's zigzag varlong (64-bit).
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let v = self.unsigned_varint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], BatchError> {
        if len > self.remaining() {
            return Err(malformed("field longer than its record"));
        }
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// A varint length then that many bytes; length -1 is null.
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < -1 => Err(malformed("negative length")),
            n => Ok(Some(self.bytes(n as usize)?)),
        }
    }
}

/// Parses `count` records from a decompressed payload, calling `visit` for each; the records
/// must fill the payload exactly.
pub fn parse_records<'a>(
    payload: &'a [u8],
    count: i32,
    mut visit: impl FnMut(RecordView<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    if count < 0 || count as usize > payload.len() / RECORD_BYTES_MIN {
        return Err(BatchError::BadRecordCount(count));
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    for _ in 0..count {
        let len = r.varint()?;
        if len < (RECORD_BYTES_MIN - 1) as i32 {
            return Err(malformed("record length too small"));
        }
        let body = r.bytes(len as usize)?;
        let mut b = Reader { buf: body, pos: 0 };
        let attributes = b.u8()? as i8;
        let timestamp_delta = b.varlong()?;
        let offset_delta = b.varint()?;
        let key = b.nullable_bytes()?;
        let value = b.nullable_bytes()?;
        let header_count = b.varint()?;
        // Each header needs at least two bytes (key length, value length).
        if header_count < 0 || header_count as usize > b.remaining() / 2 {
            return Err(malformed("bad header count"));
        }
        let headers_raw = &body[b.pos..];
        // Walk the headers now so a malformed one fails here, not in a later consumer.
        parse_headers(headers_raw, header_count as usize, |_, _| Ok(()))?;
        visit(RecordView {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count: header_count as usize,
            headers_raw,
        })?;
    }
    if r.remaining() != 0 {
        return Err(malformed("bytes left after the last record"));
    }
    Ok(())
}

/// Parses `count` headers, which must fill `raw` exactly.
pub fn parse_headers<'a>(
    raw: &'a [u8],
    count: usize,
    mut visit: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut r = Reader { buf: raw, pos: 0 };
    for _ in 0..count {
        let key = r
            .nullable_bytes()?
            .ok_or_else(|| malformed("null header key"))?;
        let value = r.nullable_bytes()?;
        visit(key, value)?;
    }
    if r.remaining() != 0 {
        return Err(malformed("bytes left after the last header"));
    }
    Ok(())
}

fn read_bounded(mut reader: impl Read, codec: &str) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    reader
        .by_ref()
        .take(DECOMPRESSED_BATCH_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Records(format!("{codec} decompression failed: {e}")))?;
    if out.len() > DECOMPRESSED_BATCH_BYTES_MAX {
        return Err(BatchError::Records(format!(
            "{codec} payload decompresses beyond {DECOMPRESSED_BATCH_BYTES_MAX} bytes"
        )));
    }
    Ok(out)
}

/// xerial snappy-java's stream header, which Kafka's Java client writes before snappy blocks.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

fn snappy_raw(block: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let len = snap::raw::decompress_len(block)
        .map_err(|e| BatchError::Records(format!("snappy: {e}")))?;
    if out.len() + len > DECOMPRESSED_BATCH_BYTES_MAX {
        return Err(malformed("snappy payload decompresses beyond the limit"));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| BatchError::Records(format!("snappy: {e}")))?;
    Ok(())
}

fn snappy(data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER_BYTES && data.starts_with(XERIAL_MAGIC) {
        let mut r = Reader {
            buf: &data[XERIAL_HEADER_BYTES..],
            pos: 0,
        };
        while r.remaining() > 0 {
            let len = u32::from_be_bytes(r.bytes(4)?.try_into().expect("4 bytes")) as usize;
            snappy_raw(r.bytes(len)?, &mut out)?;
        }
    } else {
        // librdkafka and others send raw snappy; Java reads both, so do we.
        snappy_raw(data, &mut out)?;
    }
    Ok(out)
}

/// Decompresses a batch's record payload (the bytes after the 61-byte header).
pub fn decompress(compression: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), "gzip"),
        Compression::Snappy => snappy(data),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(data)
                .map_err(|e| BatchError::Records(format!("lz4 decompression failed: {e}")))?;
            read_bounded(decoder, "lz4")
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data)
                .map_err(|e| BatchError::Records(format!("zstd decompression failed: {e}")))?;
            read_bounded(decoder, "zstd")
        }
    }
}

/// Reads an unsigned varint of at most `max_bytes` bytes at `*pos`, never past `buf`'s end
/// (`None`: it runs past the end, or past `max_bytes`, where `*pos` is then left). A one-byte
/// value (the common case for lengths, deltas and counts) takes the first branch.
#[inline(always)]
fn uvarint_at(buf: &[u8], pos: &mut usize, max_bytes: u32) -> Option<u64> {
    let first = *buf.get(*pos)?;
    *pos += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut value = u64::from(first & 0x7f);
    let mut shift = 7;
    loop {
        if shift >= 7 * max_bytes {
            return None;
        }
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
        shift += 7;
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes at `*pos` (see [`uvarint_at`]).
#[inline(always)]
fn zigzag_at(buf: &[u8], pos: &mut usize, max_bytes: u32) -> Option<i64> {
    let raw = uvarint_at(buf, pos, max_bytes)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// A 32-bit zigzag varint, range-checked.
#[inline(always)]
fn int_at(buf: &[u8], pos: &mut usize) -> Option<i32> {
    zigzag_at(buf, pos, 5).and_then(|v| i32::try_from(v).ok())
}

/// Skips a varint-length-prefixed field; `nullable` allows length -1. Returns whether it was null.
#[inline(always)]
fn skip_field(buf: &[u8], pos: &mut usize, nullable: bool) -> Option<bool> {
    match int_at(buf, pos)? {
        -1 if nullable => Some(true),
        n if n < 0 => None,
        n => {
            *pos = pos.checked_add(n as usize).filter(|p| *p <= buf.len())?;
            Some(false)
        }
    }
}

/// The structure check of the append path, without allocating: exactly `count` records fill
/// `payload`, each record's fields fill exactly its length, offset deltas run 0, 1, 2, ..., and
/// every key is present when `keys_required`.
/// Returns the largest record timestamp (`base_timestamp` + delta).
fn walk_records(
    payload: &[u8],
    count: i32,
    keys_required: bool,
    base_timestamp: i64,
) -> Result<i64, BatchError> {
    if count < 0 || count as usize > payload.len() / RECORD_BYTES_MIN {
        return Err(BatchError::BadRecordCount(count));
    }
    let bad = |i: i32| BatchError::Records(format!("record {i} is malformed"));
    let mut pos = 0usize;
    let mut max_timestamp = i64::MIN;
    // Every keyless record is named, not only the first (Kafka's LogValidator does the same).
    let mut keyless = Vec::new();
    for i in 0..count {
        let len = int_at(payload, &mut pos).ok_or_else(|| bad(i))?;
        if len < (RECORD_BYTES_MIN - 1) as i32 {
            return Err(bad(i));
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|e| *e <= payload.len())
            .ok_or_else(|| bad(i))?;
        let body = &payload[..end];
        pos += 1; // attributes
        let delta = zigzag_at(body, &mut pos, 10).ok_or_else(|| bad(i))?;
        let timestamp = base_timestamp
            .checked_add(delta)
            .ok_or_else(|| BatchError::Records(format!("record {i}'s timestamp overflows")))?;
        max_timestamp = max_timestamp.max(timestamp);
        let offset_delta = int_at(body, &mut pos).ok_or_else(|| bad(i))?;
        if offset_delta != i {
            return Err(BatchError::Records(format!(
                "record {i} has offset delta {offset_delta}"
            )));
        }
        let key_null = skip_field(body, &mut pos, true).ok_or_else(|| bad(i))?;
        if keys_required && key_null {
            keyless.push(i);
        }
        skip_field(body, &mut pos, true).ok_or_else(|| bad(i))?; // value
        let headers = int_at(body, &mut pos).ok_or_else(|| bad(i))?;
        if headers < 0 {
            return Err(bad(i));
        }
        for _ in 0..headers {
            skip_field(body, &mut pos, false).ok_or_else(|| bad(i))?;
            skip_field(body, &mut pos, true).ok_or_else(|| bad(i))?;
        }
        if pos != end {
            return Err(bad(i));
        }
    }
    if pos != payload.len() {
        return Err(malformed("bytes left after the last record"));
    }
    if !keyless.is_empty() {
        return Err(BatchError::MissingKeys(keyless));
    }
    Ok(max_timestamp)
}

/// Checks the records of a batch whose header already verified: exactly `record_count` records,
/// offset deltas 0, 1, 2, ... as a producer writes them, and keys present when `keys_required`.
/// Compressed batches are decompressed (bounded) to check them. Returns the largest record
/// timestamp, which the header's max timestamp should equal.
pub fn validate_records(
    header: &BatchHeader,
    batch: &[u8],
    keys_required: bool,
) -> Result<i64, BatchError> {
    let payload = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let (count, base_ts) = (header.record_count, header.base_timestamp);
    match header.compression()? {
        Compression::None => walk_records(payload, count, keys_required, base_ts),
        c => walk_records(&decompress(c, payload)?, count, keys_required, base_ts),
    }
}

/// Decodes every record of one verified batch (the first batch in `batch`).
pub fn decode_batch(batch: &[u8]) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let header = verify_batch(batch)?;
    let payload = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let payload = Bytes::from(decompress(header.compression()?, payload)?);
    decode_records(header, payload)
}

/// [`decode_batch`] of `batch`, a slice of `buf` (a fetched buffer): the keys and values of
/// an uncompressed batch are slices of `buf` rather than of a copy of the batch.
pub fn decode_batch_in(
    buf: &Bytes,
    batch: &[u8],
) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let header = verify_batch(batch)?;
    let raw = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    let compression = header.compression()?;
    // Where `raw` lies in `buf`, if it does.
    let at = (raw.as_ptr() as usize).checked_sub(buf.as_ptr() as usize);
    let payload = match at {
        Some(at) if compression == Compression::None && at + raw.len() <= buf.len() => {
            buf.slice(at..at + raw.len())
        }
        _ => Bytes::from(decompress(compression, raw)?),
    };
    decode_records(header, payload)
}

/// The records of a batch with `header`, from its (decompressed) `payload`.
fn decode_records(
    header: BatchHeader,
    payload: Bytes,
) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    // parse_records checks the count against the payload; allocate no more than that allows.
    let mut records = Vec::with_capacity(
        (header.record_count.max(0) as usize).min(payload.len() / RECORD_BYTES_MIN),
    );
    let log_append = header.timestamp_type() == TimestampType::LogAppendTime;
    let slice = |s: &[u8]| payload.slice_ref(s);
    parse_records(&payload, header.record_count, |r| {
        // Offsets stay inside the range the header claims, whatever the bytes inside say.
        if r.offset_delta < 0 || r.offset_delta > header.last_offset_delta {
            return Err(BatchError::Records(format!(
                "record offset delta {} outside the batch's 0..={}",
                r.offset_delta, header.last_offset_delta
            )));
        }
        let mut headers = Vec::with_capacity(r.header_count);
        parse_headers(r.headers_raw, r.header_count, |k, v| {
            // Header keys are strings in Kafka's clients, which decode them leniently too.
            // Values are copied: headers travel far (a record cache keeps the latest ones
            // of each key), and a slice would keep the whole fetched buffer alive.
            headers.push((
                String::from_utf8_lossy(k).into_owned(),
                v.map(Bytes::copy_from_slice),
            ));
            Ok(())
        })?;
        records.push(Record {
            offset: header.base_offset.saturating_add(r.offset_delta as i64),
            // Kafka: under LogAppendTime every record carries the batch's max timestamp.
            timestamp_ms: if log_append {
                header.max_timestamp
            } else {
                header.base_timestamp.wrapping_add(r.timestamp_delta)
            },
            key: r.key.map(slice),
            value: r.value.map(slice),
            headers,
        });
        Ok(())
    })?;
    Ok((header, records))
}

/// Decodes every record of every batch in a buffer of whole batches.
pub fn decode_batches(buf: &[u8]) -> Result<Vec<Record>, BatchError> {
    let mut out = Vec::new();
    for item in batch::BatchIter::new(buf) {
        let (_, bytes, _) = item?;
        out.extend(decode_batch(bytes)?.1);
    }
    Ok(out)
}

fn protocol_record(
    offset: i64,
    timestamp_ms: i64,
    key: &Option<Bytes>,
    value: &Option<Bytes>,
    headers: &[(String, Option<Bytes>)],
    template: Option<&BatchHeader>,
) -> PRecord {
    let mut hs = IndexMap::with_capacity(headers.len());
    for (k, v) in headers {
        hs.insert(StrBytes::from_string(k.clone()), v.clone());
    }
    let (pid, pepoch, leader_epoch, txn, base_seq, base_off) = match template {
        Some(h) => (
            h.producer_id,
            h.producer_epoch,
            h.partition_leader_epoch,
            h.is_transactional(),
            h.base_sequence,
            h.base_offset,
        ),
        None => (-1, -1, -1, false, -1, 0),
    };
    // The encoder keeps records in one batch only while offset - sequence is constant, so the
    // sequence must advance with the offset even when there is no producer id.
    let delta = (offset - base_off) as i32;
    PRecord {
        transactional: txn,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: leader_epoch,
        producer_id: pid,
        producer_epoch: pepoch,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: base_seq.wrapping_add(delta),
        timestamp: timestamp_ms,
        key: key.clone(),
        value: value.clone(),
        headers: hs,
    }
}

pub(super) fn encode(records: &[PRecord], compression: Compression) -> Result<Vec<u8>, BatchError> {
    let mut buf = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: compression.to_protocol(),
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| BatchError::Records(format!("encoding failed: {e}")))?;
    Ok(buf)
}

/// The producer fields of a batch (none: -1 everywhere).
#[derive(Debug, Clone, Copy)]
struct Producer {
    id: i64,
    epoch: i16,
    base_sequence: i32,
    transactional: bool,
}

const NO_PRODUCER: Producer = Producer {
    id: -1,
    epoch: -1,
    base_sequence: -1,
    transactional: false,
};

/// Kafka's zigzag varint.
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

/// A nullable byte field: its length as a varint (-1 for null), then the bytes.
fn put_nullable(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    b.map_or(1, |b| varint_len(b.len() as i64) + b.len())
}

/// An uncompressed v2 batch written directly (the producer's hot path: no intermediate
/// records, one buffer). Timestamps are stored as deltas from the smallest, which is the
/// base timestamp, as Kafka does.
fn encode_plain(records: &[NewRecord], p: Producer) -> Result<Vec<u8>, BatchError> {
    let base_ts = records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    if max_ts.checked_sub(base_ts).is_none() {
        return Err(malformed("record timestamps span more than an i64"));
    }
    let count = i32::try_from(records.len()).map_err(|_| malformed("too many records"))?;
    let body: usize = records
        .iter()
        .map(|r| {
            r.key.as_ref().map_or(0, |b| b.len())
                + r.value.as_ref().map_or(0, |b| b.len())
                + 24
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, |b| b.len()) + 10)
                    .sum::<usize>()
        })
        .sum();
    let mut buf = Vec::with_capacity(61 + body);
    buf.extend_from_slice(&0i64.to_be_bytes()); // base offset
    buf.extend_from_slice(&0i32.to_be_bytes()); // batch length, set below
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    buf.push(2); // magic
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    let attributes: i16 = if p.transactional { 0x10 } else { 0 };
    buf.extend_from_slice(&attributes.to_be_bytes());
    buf.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    buf.extend_from_slice(&base_ts.to_be_bytes());
    buf.extend_from_slice(&max_ts.to_be_bytes());
    buf.extend_from_slice(&p.id.to_be_bytes());
    buf.extend_from_slice(&p.epoch.to_be_bytes());
    buf.extend_from_slice(&p.base_sequence.to_be_bytes());
    buf.extend_from_slice(&count.to_be_bytes());
    for (i, r) in records.iter().enumerate() {
        let ts_delta = r.timestamp_ms - base_ts;
        let key = r.key.as_deref();
        let value = r.value.as_deref();
        let headers_len: usize = r
            .headers
            .iter()
            .map(|(k, v)| varint_len(k.len() as i64) + k.len() + nullable_len(v.as_deref()))
            .sum();
        let len = 1
            + varint_len(ts_delta)
            + varint_len(i as i64)
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(r.headers.len() as i64)
            + headers_len;
        put_varint(&mut buf, len as i64);
        buf.push(0); // record attributes
        put_varint(&mut buf, ts_delta);
        put_varint(&mut buf, i as i64);
        put_nullable(&mut buf, key);
        put_nullable(&mut buf, value);
        put_varint(&mut buf, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_nullable(&mut buf, Some(k.as_bytes()));
            put_nullable(&mut buf, v.as_deref());
        }
    }
    let batch_length =
        i32::try_from(buf.len() - 12).map_err(|_| malformed("batch larger than 2 GiB"))?;
    buf[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(buf)
}

/// Encodes records into one v2 batch with base offset 0 and no producer id, as a client would
/// before sending it. Compressed batches go through `kafka-protocol`'s encoder, which keeps
/// one header per key (the last).
pub fn encode_batch(
    records: &[NewRecord],
    compression: Compression,
) -> Result<Vec<u8>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    match compression {
        Compression::None => encode_plain(records, NO_PRODUCER),
        c => encode_via_protocol(records, c, NO_PRODUCER),
    }
}

/// [`encode_batch`] for an idempotent producer: the batch carries the producer id, epoch and
/// the sequence of its first record, and with `transactional` the transactional flag.
pub fn encode_idempotent_batch(
    records: &[NewRecord],
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
) -> Result<Vec<u8>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let p = Producer {
        id: producer_id,
        epoch: producer_epoch,
        base_sequence,
        transactional,
    };
    match compression {
        Compression::None => encode_plain(records, p),
        c => encode_via_protocol(records, c, p),
    }
}

/// A batch through `kafka-protocol`'s encoder (compressed batches), which keeps one header
/// per key (the last).
fn encode_via_protocol(
    records: &[NewRecord],
    compression: Compression,
    p: Producer,
) -> Result<Vec<u8>, BatchError> {
    let template = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: if p.transactional { 0x10 } else { 0 },
        last_offset_delta: 0,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: p.id,
        producer_epoch: p.epoch,
        base_sequence: p.base_sequence,
        record_count: 0,
    };
    let recs: Vec<PRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            protocol_record(
                i as i64,
                r.timestamp_ms,
                &r.key,
                &r.value,
                &r.headers,
                Some(&template),
            )
        })
        .collect();
    encode(&recs, compression)
}

/// The batch at the start of `batch` with its records stored under `codec` at `level` (a
/// topic's `compression.type` and `compression.<codec>.level`, as Kafka's LogValidator
/// recompresses; `None` is the codec's default). Only the payload's compression
/// changes: the records inside are the producer's bytes (every header, even repeated keys),
/// and the header keeps offsets, timestamps, producer id / epoch / sequence and the other
/// attribute bits; its length, codec bits and CRC are the new bytes'.
pub fn recompress(
    batch: &[u8],
    codec: Compression,
    level: Option<i32>,
) -> Result<Vec<u8>, BatchError> {
    let header = verify_batch(batch)?;
    let raw = decompress(
        header.compression()?,
        &batch[BATCH_HEADER_BYTES..header.total_bytes()],
    )?;
    let payload = compress(codec, level, &raw)
        .map_err(|e| BatchError::Records(format!("compression failed: {e}")))?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + payload.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&payload);
    batch::set_compression(&mut out, codec)?;
    Ok(out)
}

/// `raw` (a records payload) compressed as Kafka frames each codec: a gzip stream, xerial-
/// framed snappy (kafka-protocol's, no level), an LZ4 frame of independent blocks, a zstd frame.
fn compress(codec: Compression, level: Option<i32>, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    match codec {
        Compression::None => out.extend_from_slice(raw),
        Compression::Gzip => {
            // -1 is zlib's default level.
            let level = match level {
                Some(l @ 1..=9) => flate2::Compression::new(l as u32),
                _ => flate2::Compression::default(),
            };
            let mut e = flate2::write::GzEncoder::new(&mut out, level);
            e.write_all(raw)?;
            e.finish()?;
        }
        Compression::Snappy => {
            use kafka_protocol::compression::{Compressor, Snappy};
            let mut b = bytes::BytesMut::new();
            Snappy::compress(&mut b, |b: &mut bytes::BytesMut| {
                b.extend_from_slice(raw);
                Ok(())
            })
            .map_err(std::io::Error::other)?;
            out.extend_from_slice(&b);
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(level.unwrap_or(9).clamp(0, 16) as u32)
                .block_mode(lz4::BlockMode::Independent)
                .build(&mut out)?;
            e.write_all(raw)?;
            let (_, done) = e.finish();
            done?;
        }
        Compression::Zstd => {
            out = zstd::stream::encode_all(raw, level.unwrap_or(3))?;
        }
    }
    Ok(out)
}

/// Re-encodes the surviving records of a batch for the cleaner: offsets, timestamps, producer
/// fields, compression, timestamp type and the batch's last offset stay as they were.
pub fn reencode_retained(original: &BatchHeader, kept: &[Record]) -> Result<Vec<u8>, BatchError> {
    // The encoder stores timestamp deltas from the smallest; refuse a span it cannot hold.
    let min = kept.iter().map(|r| r.timestamp_ms).min().unwrap_or(0);
    let max = kept.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    if max.checked_sub(min).is_none() {
        return Err(malformed("record timestamps span more than an i64"));
    }
    let recs: Vec<PRecord> = kept
        .iter()
        .map(|r| {
            protocol_record(
                r.offset,
                r.timestamp_ms,
                &r.key,
                &r.value,
                &r.headers,
                Some(original),
            )
        })
        .collect();
    let mut out = encode(&recs, original.compression()?)?;
    let h = BatchHeader::parse(&out)?;
    if h.total_bytes() != out.len() {
        return Err(malformed("re-encoding produced more than one batch"));
    }
    batch::set_timestamp_type(&mut out, original.timestamp_type());
    let delta = (original.last_offset() - h.base_offset) as i32;
    batch::set_last_offset_delta(&mut out, delta);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> Vec<NewRecord> {
        (0..50)
            .map(|i| {
                NewRecord::new(
                    Some(format!("key-{i}")),
                    Some(format!("value-{i}").repeat(3)),
                    5_000 + i,
                )
                .with_header("h", Some(format!("{i}")))
            })
            .collect()
    }

    /// Decoding in place gives what decoding a copy gives; an uncompressed batch's values
    /// are slices of the fetched buffer itself, a compressed one's of its decompression.
    #[test]
    fn decoding_in_a_buffer_slices_uncompressed_batches_from_it() {
        let mut joined = encode_batch(&recs(), Compression::None).unwrap();
        let first = joined.len();
        joined.extend(encode_batch(&recs(), Compression::Lz4).unwrap());
        let buf = Bytes::from(joined);
        let inside = |b: &Bytes| {
            let at = b.as_ptr() as usize;
            at >= buf.as_ptr() as usize && at < buf.as_ptr() as usize + buf.len()
        };
        for (batch, in_buf) in [(&buf[..first], true), (&buf[first..], false)] {
            let (h, out) = decode_batch_in(&buf, batch).unwrap();
            let (h2, copied) = decode_batch(batch).unwrap();
            assert_eq!(h.compression().unwrap(), h2.compression().unwrap());
            assert_eq!(out, copied);
            assert!(out
                .iter()
                .all(|r| r.value.as_ref().is_some_and(inside) == in_buf));
        }
        // A batch that is not a slice of the buffer is decoded from a copy.
        let other = encode_batch(&recs(), Compression::None).unwrap();
        let (_, out) = decode_batch_in(&buf, &other).unwrap();
        assert_eq!(out, decode_batch(&other).unwrap().1);
        assert!(out.iter().all(|r| !r.value.as_ref().is_some_and(inside)));
    }

    #[test]
    fn every_codec_round_trips() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode_batch(&recs(), c).unwrap();
            let (h, out) = decode_batch(&b).unwrap();
            assert_eq!(h.compression().unwrap(), c);
            assert_eq!(out.len(), 50);
            for (i, r) in out.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp_ms, 5_000 + i as i64);
                assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_bytes()));
                assert_eq!(
                    r.value.as_deref(),
                    Some(format!("value-{i}").repeat(3).as_bytes())
                );
                assert_eq!(
                    r.headers,
                    vec![("h".to_string(), Some(Bytes::from(format!("{i}"))))]
                );
            }
            validate_records(&h, &b, true).unwrap();
        }
    }

    #[test]
    fn raw_snappy_without_xerial_framing_decodes() {
        let plain = b"hello hello hello hello".to_vec();
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), plain);
    }

    #[test]
    fn decompression_is_bounded() {
        // 80 MiB of zeros compress to a few KiB; decoding must refuse rather than allocate.
        let zeros = vec![0u8; 80 << 20];
        let bomb = zstd::encode_all(&zeros[..], 3).unwrap();
        assert!(bomb.len() < 1 << 20);
        let err = decompress(Compression::Zstd, &bomb).unwrap_err();
        assert!(matches!(err, BatchError::Records(_)));
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        assert!(matches!(
            parse_records(&[0u8; 10], i32::MAX, |_| Ok(())),
            Err(BatchError::BadRecordCount(_))
        ));
        // One record claiming 1e9 headers.
        let body = [0u8, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x07];
        let mut payload = vec![body.len() as u8 * 2];
        payload.extend(body);
        assert!(parse_records(&payload, 1, |_| Ok(())).is_err());
    }

    #[test]
    fn validation_catches_missing_keys_and_bad_deltas() {
        let b = encode_batch(
            &[NewRecord::new(None::<Bytes>, Some("v"), 1)],
            Compression::None,
        )
        .unwrap();
        let h = verify_batch(&b).unwrap();
        assert_eq!(
            validate_records(&h, &b, true),
            Err(BatchError::MissingKeys(vec![0]))
        );
        validate_records(&h, &b, false).unwrap();
        let mut h2 = h;
        h2.record_count = 2;
        assert!(validate_records(&h2, &b, false).is_err());
    }

    #[test]
    fn reencode_keeps_offsets_and_last_offset() {
        let mut b = encode_batch(&recs(), Compression::Lz4).unwrap();
        batch::assign_offset(
            &mut b,
            crate::types::Offset(1000),
            crate::types::LeaderEpoch(3),
        );
        let (h, all) = decode_batch(&b).unwrap();
        let kept: Vec<Record> = all.into_iter().filter(|r| r.offset % 7 == 3).collect();
        let out = reencode_retained(&h, &kept).unwrap();
        let (h2, back) = decode_batch(&out).unwrap();
        assert_eq!(back, kept);
        assert_eq!(h2.last_offset(), 1049);
        assert_eq!(h2.partition_leader_epoch, 3);
        assert_eq!(h2.compression().unwrap(), Compression::Lz4);
    }

    fn arb_record() -> impl proptest::strategy::Strategy<Value = NewRecord> {
        use proptest::prelude::*;
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300));
        (
            bytes(),
            bytes(),
            -1_000_000i64..10_000_000_000_000,
            proptest::collection::btree_map("[a-z]{1,8}", bytes(), 0..4),
        )
            .prop_map(|(k, v, ts, hs)| NewRecord {
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                timestamp_ms: ts,
                headers: hs
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Bytes::from)))
                    .collect(),
            })
    }

    proptest::proptest! {
        /// The direct encoder writes exactly the bytes of `kafka-protocol`'s (header keys
        /// unique, where that one dedupes), and they decode back to the records.
        #[test]
        fn the_direct_encoder_matches_kafka_protocols(
            records in proptest::collection::vec(arb_record(), 1..40),
            id in -1i64..1000,
            epoch in -1i16..10,
            base_sequence in -1i32..100_000,
            transactional in proptest::bool::ANY,
        ) {
            let p = Producer { id, epoch, base_sequence, transactional };
            let ours = encode_plain(&records, p).unwrap();
            proptest::prop_assert_eq!(
                &ours,
                &encode_via_protocol(&records, Compression::None, p).unwrap()
            );
            let (h, back) = decode_batch(&ours).unwrap();
            proptest::prop_assert_eq!(h.producer_id, id);
            proptest::prop_assert_eq!(back.len(), records.len());
            for (a, b) in records.iter().zip(&back) {
                proptest::prop_assert_eq!(&a.key, &b.key);
                proptest::prop_assert_eq!(&a.value, &b.value);
                proptest::prop_assert_eq!(a.timestamp_ms, b.timestamp_ms);
                proptest::prop_assert_eq!(&a.headers, &b.headers);
            }
        }
    }

    #[test]
    fn varints_are_kafkas_zigzag() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![126]),
            (64, vec![128, 1]),
            (-65, vec![129, 1]),
            (
                i64::MIN,
                vec![255, 255, 255, 255, 255, 255, 255, 255, 255, 1],
            ),
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
    }
}
