//! Stream-stream and stream-table join semantics (Kafka Streams'), and the stream-stream
//! join's processor, one per side:
//! - stream-stream (inner, left, outer) over [`JoinWindows`]: a left record at `T` matches
//!   right records in `[T - before, T + after]`; the output timestamp is the larger of the
//!   two; a record that found no partner is emitted alone (left / outer) once its window has
//!   closed (`T + after + grace < st` for left records, `T + before + grace < st` for right
//!   ones) — at once if it came after that. `st` is the join's own stream time (the latest
//!   timestamp either side processed); each side's store keeps records for before + after +
//!   grace behind the latest it stored, and only what the stores keep can match;
//! - stream-table (inner, left): each stream record looks up the table's current value;
//! - table-table (inner, left, outer): each side's update is joined with the other side's
//!   current value, as a change of the result table.
//!
//! Both inputs must be co-partitioned (checked at start); a stream whose key changed is
//! repartitioned first.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{framed_key, split_framed, ts_bytes, ts_from, InlineKey, KeyValueStore};

use crate::ops::records::{
    internal, kept_from, key_of, typed_record, value_of, with, ExpiryIndex, Headers, RecordIds,
};
use crate::serdes::{hop, Data, SerdeRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    Inner,
    Left,
    Outer,
}

/// An inner join's joiner: a result only when both sides have a value.
pub(crate) fn inner<K, A, B, R>(
    joiner: impl Fn(&A, &B) -> R + Send + Sync + 'static,
) -> impl Fn(&K, Option<&A>, Option<&B>) -> Option<R> + Send + Sync + 'static {
    move |_, a, b| match (a, b) {
        (Some(a), Some(b)) => Some(joiner(a, b)),
        _ => None,
    }
}

/// `(key, this side's value, the other side's value) -> result`, from one side's view.
pub(crate) type SideJoiner<K, A, B, R> =
    Arc<dyn Fn(&K, Option<&A>, Option<&B>) -> Option<R> + Send + Sync>;

/// What the two sides of one join share in a task (Kafka Streams' `TimeTracker`): the
/// join's own stream time — the latest timestamp either side processed, not the task's,
/// which other sources and records filtered out upstream also move — and each side's store
/// clock.
#[derive(Debug)]
pub(crate) struct JoinTime {
    stream_time: AtomicI64,
    /// Per side (by tag): the latest timestamp put into its store. A store keeps records
    /// above `its clock - retention` (Kafka's window store retention), whatever the other
    /// side has seen.
    stored_max: [AtomicI64; 2],
    /// The earliest timestamp in the outer store, or later (`i64::MAX`: unknown or empty):
    /// no unmatched record can be due before its window from here has closed.
    min_time: AtomicI64,
    /// Per side: its store's clock was read from the store (at the first record either side
    /// processed).
    started: [AtomicBool; 2],
}

impl Default for JoinTime {
    fn default() -> Self {
        JoinTime {
            stream_time: AtomicI64::new(i64::MIN),
            stored_max: [AtomicI64::new(i64::MIN), AtomicI64::new(i64::MIN)],
            min_time: AtomicI64::new(i64::MAX),
            started: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }
}

/// The [`JoinTime`] of each task running a join, shared by the suppliers of its two sides.
/// The first side of a task instance to start makes a fresh one, the second takes it (so a
/// task built again after a crash or a rebalance starts afresh, whatever an earlier instance
/// left); a side gives it back when it closes or is dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinClocks(Arc<Mutex<BTreeMap<TaskId, Pairing>>>);

/// A task's join time, and whether both sides hold it yet.
#[derive(Debug)]
struct Pairing {
    time: Arc<JoinTime>,
    paired: bool,
}

/// (sub-topology, partition).
type TaskId = (usize, i32);

impl JoinClocks {
    fn take(&self, task: TaskId) -> Arc<JoinTime> {
        // Entries are inserted and removed whole: a poisoned lock is safe to use.
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(&task) {
            Some(p) if !p.paired => {
                p.paired = true;
                Arc::clone(&p.time)
            }
            _ => {
                let time = Arc::new(JoinTime::default());
                let pairing = Pairing {
                    time: Arc::clone(&time),
                    paired: false,
                };
                m.insert(task, pairing);
                time
            }
        }
    }

    fn give_back(&self, task: TaskId, time: &Arc<JoinTime>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&task).is_some_and(|p| Arc::ptr_eq(&p.time, time)) {
            m.remove(&task);
        }
    }
}

/// One side of a stream-stream join.
pub(crate) struct StreamJoinSide<K, A, B, R> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) this_store: String,
    pub(crate) other_store: String,
    /// Records that found no partner yet (left / outer joins), shared by both sides:
    /// `ts | outer tag | framed key | id -> value`.
    pub(crate) outer_store: Option<String>,
    /// This side's tag (0 left, 1 right).
    pub(crate) side: u8,
    /// How far back and ahead of this record the other side's records match.
    pub(crate) before_ms: i64,
    pub(crate) after_ms: i64,
    pub(crate) grace_ms: i64,
    /// For each side (by tag), how long after its timestamp a record's window stays open.
    pub(crate) reach_ms: [i64; 2],
    pub(crate) kind: JoinKind,
    pub(crate) joiner: SideJoiner<K, A, B, R>,
    /// What the side has seen so far (`JoinState::new` at start).
    pub(crate) seen: JoinState,
    pub(crate) _t: PhantomData<fn() -> (A, B)>,
}

/// A join side's running state.
#[derive(Debug)]
pub(crate) struct JoinState {
    /// Where the join times of this join's tasks are shared.
    clocks: JoinClocks,
    /// This task's [`JoinTime`] (from `init`).
    time: Option<(Arc<JoinTime>, TaskId)>,
    last_purge: i64,
    expiry: ExpiryIndex,
    ids: RecordIds,
    /// The first record was processed (the store clocks are set).
    started: bool,
}

impl JoinState {
    /// A side at start, sharing its tasks' join times through `clocks`.
    pub(crate) fn new(clocks: JoinClocks) -> Self {
        JoinState {
            clocks,
            time: None,
            last_purge: i64::MIN / 2,
            expiry: ExpiryIndex::default(),
            ids: RecordIds::default(),
            started: false,
        }
    }

    fn give_back(&mut self) {
        if let Some((time, task)) = self.time.take() {
            self.clocks.give_back(task, &time);
        }
    }
}

impl Drop for JoinState {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// The timestamp of a join store key (`framed key | timestamp | ...`).
fn join_record_time(store_key: &[u8]) -> Option<i64> {
    split_framed(store_key).and_then(|(_, rest)| ts_from(rest.get(..8)?))
}

/// A side's tag in the outer store: Kafka Streams orders an instant's unmatched records right
/// side first (its `TimestampedKeyAndJoinSide` writes 1 for left, 0 for right).
/// Its own inverse; a corrupt tag (over 1) stays out of range and is reported as such.
fn outer_tag(side: u8) -> u8 {
    side ^ 1
}

impl<K: Data, A: Data, B: Data, R: Data> StreamJoinSide<K, A, B, R> {
    /// Does this side's record emit alone when unmatched?
    fn this_outer(&self) -> bool {
        self.kind == JoinKind::Outer || (self.kind == JoinKind::Left && self.side == 0)
    }

    /// How long the join's stores keep a record: before + after + grace (Kafka's join window
    /// size plus grace).
    fn retention_spans(&self) -> [i64; 3] {
        [self.before_ms, self.after_ms, self.grace_ms]
    }

    /// Sets the store clocks from what the stores hold, at a side's first record (after any
    /// restore): a store restored from its changelog keeps its clock, as Kafka's window
    /// stores replay theirs. This side's store is indexed for expiry on the way; the other
    /// side's is read for its clock if that side has not started yet.
    fn start_clocks(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        time: &JoinTime,
    ) -> Result<(), ProcessError> {
        let side = self.side as usize;
        let store = ctx.store(&self.this_store)?;
        if let Some(latest) = self.seen.expiry.load(store, join_record_time)? {
            time.stored_max[side].fetch_max(latest, Relaxed);
        }
        time.started[side].store(true, Relaxed);
        if !time.started[1 - side].swap(true, Relaxed) {
            let other = ctx.store(&self.other_store)?;
            let latest = other
                .all()?
                .iter()
                .filter_map(|(k, _)| join_record_time(k))
                .max();
            if let Some(latest) = latest {
                time.stored_max[1 - side].fetch_max(latest, Relaxed);
            }
        }
        Ok(())
    }

    /// Emits the unmatched records whose windows have closed, oldest first (Kafka Streams'
    /// `emitNonJoinedOuterRecords`), with the headers of the record that closed them.
    fn emit_closed(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        time: &JoinTime,
        headers: &Headers,
    ) -> Result<(), ProcessError> {
        let Some(outer) = self.outer_store.clone() else {
            return Ok(());
        };
        let st = time.stream_time.load(Relaxed);
        // Nothing can be due while the earliest unmatched record's window, as this side
        // reaches, is open.
        let min_time = time.min_time.load(Relaxed);
        if min_time
            .saturating_add(self.after_ms)
            .saturating_add(self.grace_ms)
            >= st
        {
            return Ok(());
        }
        let horizon = st
            .saturating_sub(self.grace_ms)
            .saturating_sub(self.reach_ms[0].min(self.reach_ms[1]));
        let store = ctx.store(&outer)?;
        let due = store.range(&ts_bytes(i64::MIN), &ts_bytes(horizon))?;
        let mut out = Vec::new();
        let mut open = [false; 2];
        // The timestamp of the last record looked at.
        let mut earliest = i64::MAX;
        for (k, v) in due {
            let corrupt = || ProcessError::Failed("join buffer: corrupt key".into());
            let ts = ts_from(k.get(..8).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
            earliest = ts;
            if open == [true, true] {
                break; // both sides' windows are open from here on
            }
            let side = outer_tag(*k.get(8).ok_or_else(corrupt)?);
            let reach = *self.reach_ms.get(side as usize).ok_or_else(corrupt)?;
            if ts.saturating_add(reach).saturating_add(self.grace_ms) >= st {
                open[side as usize] = true;
                continue;
            }
            let (key, _) = split_framed(&k[9..]).ok_or_else(corrupt)?;
            let key = key.to_vec();
            store.delete(&k)?;
            let Some(kk) = self.keys.deserialize(Some(&key)).map_err(internal)? else {
                continue;
            };
            let result = if side == self.side {
                let a: A = hop::decode(&v).map_err(internal)?;
                (self.joiner)(&kk, Some(&a), None)
            } else {
                let b: B = hop::decode(&v).map_err(internal)?;
                (self.joiner)(&kk, None, Some(&b))
            };
            if let Some(r) = result {
                out.push(typed_record(
                    Some(Bytes::from(key)),
                    r,
                    ts,
                    headers.to_vec(),
                ));
            }
        }
        // Where the scan stopped, as Kafka's leaves it — or, when it reached the horizon, the
        // earliest any record beyond could be.
        time.min_time
            .store(earliest.min(horizon.saturating_add(1)), Relaxed);
        for o in out {
            ctx.forward(o)?;
        }
        Ok(())
    }
}

impl<K: Data, A: Data, B: Data, R: Data> Processor for StreamJoinSide<K, A, B, R> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        self.seen.give_back();
        let task = ctx.task_id();
        let time = self.seen.clocks.take(task);
        self.seen.time = Some((time, task));
        Ok(())
    }

    fn close(&mut self) {
        self.seen.give_back();
    }

    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let Some((time, _)) = &self.seen.time else {
            return Err(ProcessError::Failed(
                "internal: a join side processed a record before init".into(),
            ));
        };
        let time = Arc::clone(time);
        if !self.seen.started {
            self.seen.started = true;
            self.start_clocks(ctx, &time)?;
        }
        let ts = r.timestamp;
        let st = time.stream_time.fetch_max(ts, Relaxed).max(ts);
        let Some(k) = key_of(&*self.keys, &r)? else {
            ctx.record_dropped(DropReason::NullKey);
            return Ok(());
        };
        if r.key.is_none() {
            // A null key (a key type that holds one) joins nothing: a left or outer side
            // emits it alone at once (Kafka Streams' KStreamKStreamJoin), others drop it.
            if self.this_outer() {
                let a: A = value_of(&r)?;
                if let Some(res) = (self.joiner)(&k, Some(&a), None) {
                    ctx.forward(with(&r, None, res))?;
                }
            } else {
                ctx.record_dropped(DropReason::NullKey);
            }
            return Ok(());
        }
        let key = r.key.clone().unwrap_or_default();
        let a: A = value_of(&r)?;
        if ts == st {
            self.emit_closed(ctx, &time, &r.headers)?;
        }
        let spans = self.retention_spans();
        // This side's store keeps the record unless it is older than the store's retention
        // (Kafka's window store skips such a put, and counts the record as dropped); it is
        // joined all the same with what the other side's store still holds.
        let this_clock = time.stored_max[self.side as usize]
            .fetch_max(ts, Relaxed)
            .max(ts);
        let keep = ts >= kept_from(this_clock, 0, &spans);
        let id = self.seen.ids.next(ctx, ts);
        let value = r.value_bytes()?.unwrap_or_default();
        // The key is this record's own: new to the store, unless the record is processed
        // again over its own committed write (at-least-once).
        let new = ctx.exactly_once();
        if keep {
            let mut this_key = framed_key(&key);
            this_key.extend_from_slice(&id);
            put_unique(ctx.store(&self.this_store)?, &this_key, &value, new)?;
            self.seen.expiry.insert(ts, InlineKey::new(&this_key));
        } else {
            ctx.record_dropped(DropReason::LateJoin);
        }
        // The other side's records in [ts - before, ts + after] (never below 0) that its
        // store still keeps.
        let other_clock = time.stored_max[1 - self.side as usize].load(Relaxed);
        let first = ts
            .saturating_sub(self.before_ms)
            .max(0)
            .max(kept_from(other_clock, 0, &spans));
        let last = ts.saturating_add(self.after_ms).max(0);
        let matches = if first > last {
            Vec::new()
        } else {
            let mut from = framed_key(&key);
            from.extend_from_slice(&ts_bytes(first));
            let mut to = framed_key(&key);
            to.extend_from_slice(&ts_bytes(last));
            to.extend_from_slice(&[0xff; 16]);
            ctx.store(&self.other_store)?.range(&from, &to)?
        };
        let mut out = Vec::with_capacity(matches.len());
        let other_outer =
            self.kind == JoinKind::Outer || (self.kind == JoinKind::Left && self.side == 1);
        for (ok, ov) in &matches {
            let corrupt = || ProcessError::Failed("join store: corrupt key".into());
            let (_, other_id) = split_framed(ok).ok_or_else(corrupt)?;
            let (other_ts, other_rest) = other_id
                .split_first_chunk::<8>()
                .and_then(|(t, rest)| Some((ts_from(t)?, rest)))
                .ok_or_else(corrupt)?;
            let b: B = hop::decode(ov).map_err(internal)?;
            if let (true, Some(outer)) = (other_outer, &self.outer_store) {
                // The partner is joined now: it will not be emitted alone.
                let mut k2 = ts_bytes(other_ts).to_vec();
                k2.push(outer_tag(self.side ^ 1));
                k2.extend_from_slice(&framed_key(&key));
                k2.extend_from_slice(other_rest);
                ctx.store(outer)?.delete(&k2)?;
            }
            if let Some(res) = (self.joiner)(&k, Some(&a), Some(&b)) {
                let mut o = with(&r, r.key.clone(), res);
                o.timestamp = ts.max(other_ts);
                out.push(o);
            }
        }
        if matches.is_empty() && self.this_outer() {
            match self.outer_store.clone() {
                // Its window may still see a partner: wait in the outer store.
                Some(_) if last >= st => {
                    let mut k2 = ts_bytes(ts).to_vec();
                    k2.push(outer_tag(self.side));
                    k2.extend_from_slice(&framed_key(&key));
                    k2.extend_from_slice(&id[8..]);
                    let outer = self.outer_store.as_deref().unwrap_or_default();
                    put_unique(ctx.store(outer)?, &k2, &value, new)?;
                    time.min_time.fetch_min(ts, Relaxed);
                }
                // Its window has closed already (an out-of-order record): alone at once.
                _ => {
                    if let Some(res) = (self.joiner)(&k, Some(&a), None) {
                        out.push(with(&r, r.key.clone(), res));
                    }
                }
            }
        }
        for o in out {
            ctx.forward(o)?;
        }
        // Records past the store's retention leave it.
        let span = spans.iter().fold(0i64, |s, d| s.saturating_add(*d));
        if this_clock.saturating_sub(self.seen.last_purge) > (span / 10).max(1) {
            let store = ctx.store(&self.this_store)?;
            self.seen
                .expiry
                .purge(store, kept_from(this_clock, 0, &spans), join_record_time)?;
            self.seen.last_purge = this_clock;
        }
        Ok(())
    }
}

/// Writes a join record's entry under a key made of its own offset: as new to the store
/// when `new` (see [`ProcessorContext::exactly_once`]).
pub(crate) fn put_unique(
    store: &mut dyn KeyValueStore,
    key: &[u8],
    value: &[u8],
    new: bool,
) -> Result<(), ProcessError> {
    match new {
        true => store.put_new(key, value.to_vec())?,
        false => store.put(key, value)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_sides_of_a_task_instance_share_a_fresh_join_time() {
        let clocks = JoinClocks::default();
        let task = (0, 3);
        let left = clocks.take(task);
        let right = clocks.take(task);
        assert!(Arc::ptr_eq(&left, &right));
        left.stream_time.store(100, Relaxed);
        // The task built again (after a crash, before the old instance is dropped): fresh.
        let left2 = clocks.take(task);
        let right2 = clocks.take(task);
        assert!(Arc::ptr_eq(&left2, &right2));
        assert!(!Arc::ptr_eq(&left, &left2));
        assert_eq!(left2.stream_time.load(Relaxed), i64::MIN);
        // The old instance going away leaves the new one's in place; the new one's going
        // away removes it.
        let held = |clocks: &JoinClocks| {
            let m = clocks.0.lock().unwrap();
            m.get(&task).map(|p| Arc::clone(&p.time))
        };
        clocks.give_back(task, &left);
        assert!(held(&clocks).is_some_and(|t| Arc::ptr_eq(&t, &left2)));
        clocks.give_back(task, &left2);
        assert!(held(&clocks).is_none());
        // Another task has its own.
        assert!(!Arc::ptr_eq(&clocks.take((0, 4)), &left2));
    }
}
