//! One segment of a partition log: a `.log` file of record batches named by its 20-digit base
//! offset, with its `.index` and `.timeindex`. A segment appends at its end, finds the batch
//! holding an offset, truncates, and recovers itself from its own bytes when its indexes or its
//! tail cannot be trusted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{floor_entry, IndexFile, OffsetEntry, TimeEntry};
use crate::record::batch::{verify_batch, BatchError, BatchHeader, BATCH_HEADER_BYTES};

/// How much of a segment file the scanner reads at a time.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<dir>/<20-digit base offset>.<suffix>`, Kafka's file naming.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Parses `<20 digits>.<rest>` into the base offset and the rest of the name.
pub(crate) fn parse_segment_name(name: &str) -> Option<(i64, &str)> {
    let (digits, rest) = name.split_once('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, rest))
}

/// Why a segment's bytes were found bad.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("batch at offset {found} breaks offset order (expected at least {expected})")]
    OffsetOrder { found: i64, expected: i64 },
    #[error("io: {0}")]
    Io(#[from] io::Error),
}

/// A batch found by [`BatchScanner`]: header, file position, bytes.
pub(crate) type ScannedBatch<'a> = (BatchHeader, u64, &'a [u8]);

/// Reads whole, verified batches from a segment file in large chunks.
pub(crate) struct BatchScanner<'f> {
    file: &'f File,
    /// File position of the next batch.
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

impl<'f> BatchScanner<'f> {
    pub fn new(file: &'f File, pos: u64, end: u64) -> Self {
        BatchScanner {
            file,
            pos,
            end,
            buf: Vec::new(),
            buf_pos: pos,
        }
    }

    /// Makes `buf` hold `[pos, pos + len)`; false if the file ends first.
    fn fill(&mut self, len: usize) -> io::Result<bool> {
        if self.pos + len as u64 > self.end {
            return Ok(false);
        }
        // pos never moves backwards, so pos >= buf_pos always holds.
        let have_from = self.pos - self.buf_pos;
        if have_from as usize + len <= self.buf.len() {
            return Ok(true);
        }
        let want = len
            .max(SCAN_CHUNK_BYTES)
            .min((self.end - self.pos) as usize);
        self.buf.resize(want, 0);
        self.file.read_exact_at(&mut self.buf, self.pos)?;
        self.buf_pos = self.pos;
        Ok(true)
    }

    /// The next verified batch and its file position; `Ok(None)` at a clean end. A batch cut by
    /// the end of the file is an error (a torn write).
    pub fn next_batch(&mut self) -> Result<Option<ScannedBatch<'_>>, ScanError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let header_len = BATCH_HEADER_BYTES.min((self.end - at) as usize);
        self.fill(header_len)?;
        let start = (at - self.buf_pos) as usize;
        let header = BatchHeader::parse(&self.buf[start..start + header_len])?;
        let total = header.total_bytes();
        if !self.fill(total)? {
            return Err(BatchError::Truncated {
                needed: total,
                available: (self.end - at) as usize,
            }
            .into());
        }
        let start = (at - self.buf_pos) as usize;
        let header = verify_batch(&self.buf[start..start + total])?;
        self.pos += total as u64;
        Ok(Some((header, at, &self.buf[start..start + total])))
    }
}

/// A segment: its files and what is known of its contents.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    dir: PathBuf,
    file: Arc<File>,
    size: u64,
    /// One past the last offset held; `base_offset` when empty.
    next_offset: i64,
    index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    bytes_since_index: u64,
    /// The largest record timestamp held (-1 when none), for retention and time lookups.
    max_timestamp_ms: i64,
    /// When the segment was created, by the log's clock; for `segment.ms`.
    pub created_ms: i64,
    /// Every batch in the file has passed its CRC check in this process (written here, or
    /// rescanned at open). Reads verify the CRC of batches in segments that have not.
    pub verified: bool,
}

/// What opening a segment found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OpenReport {
    /// Bytes cut from the end because they did not hold valid batches.
    pub truncated_bytes: u64,
    /// The indexes were rebuilt from the log.
    pub rebuilt_indexes: bool,
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

impl Segment {
    /// Creates an empty segment, replacing any files left at its name.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        let mut seg = Segment::with_file(dir, base_offset, file, now_ms);
        seg.persist_indexes(false)?;
        Ok(seg)
    }

    fn with_file(dir: &Path, base_offset: i64, file: File, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index: IndexFile::empty(segment_path(dir, base_offset, INDEX_SUFFIX)),
            time_index: IndexFile::empty(segment_path(dir, base_offset, TIME_INDEX_SUFFIX)),
            bytes_since_index: 0,
            max_timestamp_ms: -1,
            created_ms: now_ms,
            verified: true,
        }
    }

    /// Opens an existing segment. With `trust_indexes`, loads the indexes, checks them, and
    /// verifies only the batches after the last index entry; otherwise (or when that check
    /// fails) re-verifies every batch and rebuilds both indexes. Invalid bytes at the end are
    /// truncated either way.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        trust_indexes: bool,
        index_interval_bytes: u64,
    ) -> io::Result<(Segment, OpenReport)> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = open_rw(&log_path, false)?;
        let meta = file.metadata()?;
        let created_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut seg = Segment::with_file(dir, base_offset, file, created_ms);
        seg.size = meta.len();
        // segment.ms counts from the first batch's timestamp (Kafka's rolling-based timestamp)
        // when it is older than the file's last write, so a restart does not restart the clock.
        // Live segments count from their first append instead (see `PartitionLog::append`).
        if let Ok(h) = seg.header_at(0) {
            if h.max_timestamp >= 0 {
                seg.created_ms = seg.created_ms.min(h.max_timestamp);
            }
        }
        let mut report = OpenReport::default();
        if trust_indexes && seg.load_indexes()? {
            match seg.rescan_tail(true) {
                Ok(()) => {
                    // Only the tail was checked; the rest is verified as it is read.
                    seg.verified = seg.index.entries().is_empty();
                    return Ok((seg, report));
                }
                Err(e) => tracing::warn!(
                    segment = %log_path.display(),
                    error = %e,
                    "segment tail does not verify; recovering the whole segment"
                ),
            }
        }
        report.rebuilt_indexes = true;
        report.truncated_bytes = seg.recover(index_interval_bytes)?;
        Ok((seg, report))
    }

    /// Loads both index files and checks them against the log; false if they cannot be used.
    fn load_indexes(&mut self) -> io::Result<bool> {
        let Some(index) = IndexFile::<OffsetEntry>::load(self.index.path().to_path_buf())? else {
            return Ok(false);
        };
        let Some(time_index) = IndexFile::<TimeEntry>::load(self.time_index.path().to_path_buf())?
        else {
            return Ok(false);
        };
        let e = index.entries();
        let increasing = e
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        if !increasing || e.last().is_some_and(|l| u64::from(l.position) >= self.size) {
            return Ok(false);
        }
        // The last entry must point at a batch with the offset it claims.
        if let Some(last) = e.last() {
            let mut head = [0u8; BATCH_HEADER_BYTES];
            if u64::from(last.position) + BATCH_HEADER_BYTES as u64 > self.size {
                return Ok(false);
            }
            self.file
                .read_exact_at(&mut head, u64::from(last.position))?;
            match BatchHeader::parse(&head) {
                Ok(h) if h.base_offset == self.base_offset + i64::from(last.relative_offset) => {}
                _ => return Ok(false),
            }
        }
        let t = time_index.entries();
        if !t.windows(2).all(|w| {
            w[0].timestamp_ms <= w[1].timestamp_ms && w[0].relative_offset <= w[1].relative_offset
        }) {
            return Ok(false);
        }
        self.index = index;
        self.time_index = time_index;
        Ok(true)
    }

    /// Re-verifies the batches after the last offset-index entry and recomputes what depends on
    /// them (next offset, max timestamp, bytes since the last index entry). Fails, changing
    /// nothing on disk, if they do not verify to the end of the file.
    fn rescan_tail(&mut self, sealed: bool) -> Result<(), ScanError> {
        let (start_pos, start_offset) = match self.index.last() {
            Some(e) => (
                u64::from(e.position),
                self.base_offset + i64::from(e.relative_offset),
            ),
            None => (0, self.base_offset),
        };
        let mut next = start_offset;
        let mut max_ts = self.time_index.last().map_or(-1, |e| e.timestamp_ms);
        let mut since = 0u64;
        let mut scanner = BatchScanner::new(&self.file, start_pos, self.size);
        while let Some((h, _, _)) = scanner.next_batch()? {
            if h.base_offset < next || h.last_offset() - self.base_offset > i64::from(u32::MAX) {
                return Err(ScanError::OffsetOrder {
                    found: h.base_offset,
                    expected: next,
                });
            }
            next = h.next_offset();
            max_ts = max_ts.max(h.max_timestamp);
            since += h.total_bytes() as u64;
        }
        if let Some(t) = self.time_index.last() {
            if self.base_offset + i64::from(t.relative_offset) >= next {
                return Err(ScanError::OffsetOrder {
                    found: next,
                    expected: next,
                });
            }
        }
        if sealed && next > self.base_offset {
            // See `seal`: the last time entry names the last offset and the max timestamp.
            let ok = self.time_index.last().is_some_and(|t| {
                self.base_offset + i64::from(t.relative_offset) == next - 1
                    && t.timestamp_ms >= max_ts
            });
            if !ok {
                return Err(ScanError::OffsetOrder {
                    found: next,
                    expected: next,
                });
            }
        }
        self.next_offset = next;
        self.max_timestamp_ms = max_ts;
        self.bytes_since_index = since;
        Ok(())
    }

    /// Verifies every batch from the start, rebuilds the indexes, and truncates the file at the
    /// first byte that is not part of a valid, in-order batch. Returns the bytes cut.
    pub fn recover(&mut self, index_interval_bytes: u64) -> io::Result<u64> {
        self.index.clear();
        self.time_index.clear();
        self.next_offset = self.base_offset;
        self.max_timestamp_ms = -1;
        self.bytes_since_index = 0;
        let file = Arc::clone(&self.file);
        let mut scanner = BatchScanner::new(&file, 0, self.size);
        let mut valid_end = 0u64;
        let failure = loop {
            match scanner.next_batch() {
                Ok(None) => break None,
                Ok(Some((h, pos, _))) => {
                    if h.base_offset < self.next_offset
                        || h.last_offset() - self.base_offset > i64::from(u32::MAX)
                    {
                        break Some(ScanError::OffsetOrder {
                            found: h.base_offset,
                            expected: self.next_offset,
                        });
                    }
                    self.index_batch(&h, pos, index_interval_bytes);
                    valid_end = pos + h.total_bytes() as u64;
                }
                Err(e) => break Some(e),
            }
        };
        let cut = self.size - valid_end;
        if let Some(e) = failure {
            if let ScanError::Io(io) = e {
                return Err(io);
            }
            tracing::warn!(
                segment = %segment_path(&self.dir, self.base_offset, LOG_SUFFIX).display(),
                position = valid_end,
                bytes_cut = cut,
                error = %e,
                "truncating invalid bytes at the end of a segment"
            );
            self.file.set_len(valid_end)?;
            self.size = valid_end;
        }
        self.persist_indexes(false)?;
        Ok(cut)
    }

    /// Records a batch just placed at `pos` in the indexes and the segment's summary.
    fn index_batch(&mut self, h: &BatchHeader, pos: u64, index_interval_bytes: u64) {
        let rel = (h.base_offset - self.base_offset) as u32;
        // Kafka's rule: index a batch once more than the interval has passed since the last entry.
        if self.bytes_since_index > index_interval_bytes {
            self.index.push(OffsetEntry {
                relative_offset: rel,
                position: pos as u32,
            });
            self.maybe_time_entry(h.max_timestamp.max(self.max_timestamp_ms), h.last_offset());
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_bytes() as u64;
        self.max_timestamp_ms = self.max_timestamp_ms.max(h.max_timestamp);
        self.next_offset = h.next_offset();
    }

    fn maybe_time_entry(&mut self, max_ts: i64, last_offset: i64) {
        if self
            .time_index
            .last()
            .is_none_or(|t| max_ts > t.timestamp_ms)
        {
            let rel = (last_offset - self.base_offset) as u32;
            self.time_index.push(TimeEntry {
                timestamp_ms: max_ts,
                relative_offset: rel,
            });
        }
    }

    /// Appends verified batches (offsets already assigned) at the end of the file.
    pub fn append(
        &mut self,
        data: &[u8],
        headers: &[(BatchHeader, usize)],
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        let start = self.size;
        self.file.write_all_at(data, start)?;
        self.size += data.len() as u64;
        for (h, at) in headers {
            self.index_batch(h, start + *at as u64, index_interval_bytes);
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn index_bytes(&self) -> u64 {
        (self.index.entries().len() * 8) as u64
    }

    /// Whether offsets up to `last_offset` still fit the 32-bit relative offsets of the indexes.
    pub fn can_hold_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i64::from(u32::MAX)
    }

    /// Fills `buf` from position `pos`.
    pub fn read_into(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    /// Reads and parses the header of the batch at `pos` (no CRC check).
    fn header_at(&self, pos: u64) -> Result<BatchHeader, ScanError> {
        let len = BATCH_HEADER_BYTES.min((self.size - pos) as usize);
        let mut head = [0u8; BATCH_HEADER_BYTES];
        self.file.read_exact_at(&mut head[..len], pos)?;
        Ok(BatchHeader::parse(&head[..len])?)
    }

    /// The position and header of the first batch whose last offset is `>= offset`, or `None`
    /// when every batch here ends before it.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, ScanError> {
        let entry = floor_entry(self.index.entries(), offset - self.base_offset, |e| {
            i64::from(e.relative_offset)
        });
        let mut pos = entry.map_or(0, |e| u64::from(e.position));
        if let Some(e) = entry {
            // An entry that does not point at the batch it names (a damaged index) is ignored:
            // walking from the segment's start is slow but right.
            let ok = pos < self.size
                && self.header_at(pos).is_ok_and(|h| {
                    h.base_offset == self.base_offset + i64::from(e.relative_offset)
                });
            if !ok {
                tracing::warn!(
                    segment = self.base_offset,
                    position = pos,
                    "index entry does not match the log; scanning from the segment start"
                );
                pos = 0;
            }
        }
        let mut prev_next = i64::MIN;
        while pos < self.size {
            let h = self.header_at(pos)?;
            // Headers here may not have been CRC-checked yet: a length past the end or offsets
            // going backwards is damage, not the end of the data.
            if pos + h.total_bytes() as u64 > self.size {
                return Err(BatchError::Truncated {
                    needed: h.total_bytes(),
                    available: (self.size - pos) as usize,
                }
                .into());
            }
            if h.base_offset < prev_next {
                return Err(ScanError::OffsetOrder {
                    found: h.base_offset,
                    expected: prev_next,
                });
            }
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            prev_next = h.next_offset();
            pos += h.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Where to start scanning for the first record with timestamp `>= ts_ms`: the position of
    /// a batch at or before it.
    pub fn time_lookup_position(&self, ts_ms: i64) -> Result<u64, ScanError> {
        // Entries with timestamp < ts cover only records older than ts; start after the last.
        let n = self
            .time_index
            .entries()
            .partition_point(|e| e.timestamp_ms < ts_ms);
        let Some(entry) = n.checked_sub(1).map(|i| self.time_index.entries()[i]) else {
            return Ok(0);
        };
        let after = self.base_offset + i64::from(entry.relative_offset) + 1;
        Ok(self.find_batch(after)?.map_or(self.size, |(pos, _)| pos))
    }

    /// Removes every batch holding an offset `>= offset`. Returns the segment's new next offset.
    pub fn truncate_to(
        &mut self,
        offset: i64,
        index_interval_bytes: u64,
    ) -> Result<i64, ScanError> {
        let Some((pos, h)) = self.find_batch(offset)? else {
            return Ok(self.next_offset);
        };
        self.file.set_len(pos)?;
        self.size = pos;
        let keep = self
            .index
            .entries()
            .partition_point(|e| u64::from(e.position) < pos);
        self.index.truncate(keep);
        let cut_rel = h.base_offset - self.base_offset;
        let keep_t = self
            .time_index
            .entries()
            .partition_point(|e| i64::from(e.relative_offset) < cut_rel);
        self.time_index.truncate(keep_t);
        if let Err(e) = self.rescan_tail(false) {
            // What is left was valid before; if it no longer is, rebuild from scratch.
            tracing::warn!(error = %e, "segment did not verify after truncation; recovering");
            self.recover(index_interval_bytes)?;
        }
        Ok(self.next_offset)
    }

    /// Called when the segment stops being the active one: a final time index entry and the
    /// indexes written; with `sync`, the log and indexes fsynced too.
    pub fn seal(&mut self, sync: bool) -> io::Result<()> {
        // A sealed segment's time index always ends at its last offset with its max timestamp,
        // which lets a trusted open check the index against the log.
        if self.next_offset > self.base_offset {
            let rel = (self.next_offset - 1 - self.base_offset) as u32;
            if self
                .time_index
                .last()
                .is_none_or(|t| t.relative_offset != rel)
            {
                let ts = self
                    .max_timestamp_ms
                    .max(self.time_index.last().map_or(-1, |t| t.timestamp_ms));
                self.time_index.push(TimeEntry {
                    timestamp_ms: ts,
                    relative_offset: rel,
                });
            }
        }
        if sync {
            self.file.sync_data()?;
        }
        self.persist_indexes(sync)
    }

    pub fn persist_indexes(&mut self, sync: bool) -> io::Result<()> {
        self.index.persist(sync)?;
        self.time_index.persist(sync)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Deletes the segment's files. Readers holding the file handle can finish.
    pub fn delete(&self) -> io::Result<()> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            match fs::remove_file(segment_path(&self.dir, self.base_offset, suffix)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Points this segment's index files at its canonical names and rewrites them there.
    pub fn adopt_canonical_names(&mut self) -> io::Result<()> {
        self.index
            .set_path(segment_path(&self.dir, self.base_offset, INDEX_SUFFIX));
        self.time_index
            .set_path(segment_path(&self.dir, self.base_offset, TIME_INDEX_SUFFIX));
        self.index.mark_dirty();
        self.time_index.mark_dirty();
        self.persist_indexes(true)
    }

    /// Builds a segment over a new file at `path` (the cleaner's output), indexing its batches.
    pub fn from_new_file(
        dir: &Path,
        base_offset: i64,
        path: &Path,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let file = open_rw(path, false)?;
        let size = file.metadata()?.len();
        let mut seg = Segment::with_file(dir, base_offset, file, now_ms);
        seg.size = size;
        // Index files are named after the cleaned file until the swap completes.
        seg.index.set_path(path.with_extension("cleaned-index"));
        seg.time_index
            .set_path(path.with_extension("cleaned-timeindex"));
        let cut = seg.recover(index_interval_bytes)?;
        if cut != 0 {
            return Err(io::Error::other("cleaner output does not verify"));
        }
        Ok(seg)
    }
}
