//! Stream-stream and stream-table join semantics (Kafka Streams'), and the stream-stream
//! join's processor, one per side:
//! - stream-stream (inner, left, outer) over [`JoinWindows`]: a left record at `T` matches
//!   right records in `[T - before, T + after]`; the output timestamp is the larger of the
//!   two; a record that found no partner is emitted alone (left / outer) only once its window
//!   has closed (`T + after + grace < st` for left records, `T + before + grace < st` for
//!   right ones), and records arriving after that are dropped;
//! - stream-table (inner, left): each stream record looks up the table's current value;
//! - table-table (inner, left, outer): each side's update is joined with the other side's
//!   current value, as a change of the result table.
//!
//! Both inputs must be co-partitioned (checked at start); a stream whose key changed is
//! repartitioned first.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{framed_key, split_framed, ts_bytes, ts_from, InlineKey, KeyValueStore};

use crate::ops::records::{
    earlier, internal, key_of, typed_record, value_of, with, ExpiryIndex, RecordIds,
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

/// One side of a stream-stream join.
pub(crate) struct StreamJoinSide<K, A, B, R> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) this_store: String,
    pub(crate) other_store: String,
    /// Records that found no partner yet (left / outer joins), shared by both sides:
    /// `ts | side | framed key | id -> value`.
    pub(crate) outer_store: Option<String>,
    /// This side's tag in the outer store (0 left, 1 right).
    pub(crate) side: u8,
    /// How far back and ahead of this record the other side's records match.
    pub(crate) before_ms: i64,
    pub(crate) after_ms: i64,
    pub(crate) grace_ms: i64,
    /// For each side (by tag), how long after its timestamp a record's window stays open.
    pub(crate) reach_ms: [i64; 2],
    pub(crate) kind: JoinKind,
    pub(crate) joiner: SideJoiner<K, A, B, R>,
    /// What the side has seen so far: `JoinState::default()` at start.
    pub(crate) seen: JoinState,
    pub(crate) _t: PhantomData<fn() -> (A, B)>,
}

/// A join side's running state.
#[derive(Debug)]
pub(crate) struct JoinState {
    /// Stream time: the task's, or the latest timestamp this side saw if later.
    observed: i64,
    last_purge: i64,
    expiry: ExpiryIndex,
    ids: RecordIds,
}

impl Default for JoinState {
    fn default() -> Self {
        JoinState {
            observed: i64::MIN,
            last_purge: i64::MIN / 2,
            expiry: ExpiryIndex::default(),
            ids: RecordIds::default(),
        }
    }
}

impl<K: Data, A: Data, B: Data, R: Data> StreamJoinSide<K, A, B, R> {
    /// Does this side's record emit alone when unmatched?
    fn this_outer(&self) -> bool {
        self.kind == JoinKind::Outer || (self.kind == JoinKind::Left && self.side == 0)
    }

    /// Emits the unmatched records whose windows have closed, oldest first.
    fn emit_closed(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let Some(outer) = self.outer_store.clone() else {
            return Ok(());
        };
        let st = self.seen.observed;
        let horizon = st
            .saturating_sub(self.grace_ms)
            .saturating_sub(self.reach_ms[0].min(self.reach_ms[1]));
        let store = ctx.store(&outer)?;
        let due = store.range(&ts_bytes(i64::MIN), &ts_bytes(horizon))?;
        let mut out = Vec::new();
        for (k, v) in due {
            let corrupt = || ProcessError::Failed("join buffer: corrupt key".into());
            let ts = ts_from(k.get(..8).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
            let side = *k.get(8).ok_or_else(corrupt)?;
            let reach = *self.reach_ms.get(side as usize).ok_or_else(corrupt)?;
            if ts.saturating_add(reach).saturating_add(self.grace_ms) >= st {
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
                out.push(typed_record(Some(Bytes::from(key)), r, ts, Vec::new()));
            }
        }
        for o in out {
            ctx.forward(o)?;
        }
        Ok(())
    }
}

impl<K: Data, A: Data, B: Data, R: Data> Processor for StreamJoinSide<K, A, B, R> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let Some(k) = key_of(&*self.keys, &r)? else {
            ctx.record_dropped(DropReason::NullKey);
            return Ok(());
        };
        let key = r.key.clone().unwrap_or_default();
        let a: A = value_of(&r)?;
        let ts = r.timestamp;
        self.seen.observed = self.seen.observed.max(ctx.stream_time()).max(ts);
        if ts == self.seen.observed {
            self.emit_closed(ctx)?;
        }
        let reach = self.reach_ms[self.side as usize];
        if ts.saturating_add(reach).saturating_add(self.grace_ms) < self.seen.observed {
            ctx.record_dropped(DropReason::LateJoin);
            return Ok(()); // its window has closed: too late to join
        }
        let id = self.seen.ids.next(ctx, ts);
        let mut this_key = framed_key(&key);
        this_key.extend_from_slice(&id);
        let value = r.value_bytes()?.unwrap_or_default();
        // The key is this record's own: new to the store, unless the record is processed
        // again over its own committed write (at-least-once).
        let new = ctx.exactly_once();
        put_unique(ctx.store(&self.this_store)?, &this_key, &value, new)?;
        self.seen.expiry.insert(ts, InlineKey::new(&this_key));
        // The other side's records in [ts - before, ts + after].
        let from = {
            let mut b = framed_key(&key);
            b.extend_from_slice(&ts_bytes(ts.saturating_sub(self.before_ms)));
            b
        };
        let to = {
            let mut b = framed_key(&key);
            b.extend_from_slice(&ts_bytes(ts.saturating_add(self.after_ms)));
            b.extend_from_slice(&[0xff; 16]);
            b
        };
        let matches = ctx.store(&self.other_store)?.range(&from, &to)?;
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
                k2.push(1 - self.side);
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
            if let Some(outer) = self.outer_store.clone() {
                let mut k2 = ts_bytes(ts).to_vec();
                k2.push(self.side);
                k2.extend_from_slice(&framed_key(&key));
                k2.extend_from_slice(&id[8..]);
                put_unique(ctx.store(&outer)?, &k2, &value, new)?;
            }
        }
        for o in out {
            ctx.forward(o)?;
        }
        // Records too old to match anything more leave this side's store.
        let spans = [self.before_ms, self.after_ms, self.grace_ms];
        let span = spans.iter().fold(0i64, |s, d| s.saturating_add(*d));
        if self.seen.observed.saturating_sub(self.seen.last_purge) > (span / 10).max(1) {
            let store = ctx.store(&self.this_store)?;
            self.seen
                .expiry
                .purge(store, earlier(self.seen.observed, &spans), |k| {
                    split_framed(k).and_then(|(_, rest)| ts_from(rest.get(..8)?))
                })?;
            self.seen.last_purge = self.seen.observed;
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
