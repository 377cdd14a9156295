//! The session window aggregation, with Kafka Streams' rules: a record joins every session
//! of its key ending at most `gap` before it or starting at most `gap` after it; unless the
//! merged session is the record's own instant `[ts, ts]`, every joined session is retracted
//! with a tombstone before the merged one is put anew. A record is late when the merged
//! session ends before `stream time - grace - gap`; sessions stay in the store (and can be
//! merged with) while their end is not before `stream time - retention`.

use std::sync::Arc;

use rill_core::metrics::{DropReason, DroppedRecords};
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{
    split_framed, ts_from, FastHashMap, InlineKey, KeyValueStore, Session, SessionStore,
};

use crate::ops::aggregate::{read_record, Step, Value};
use crate::ops::records::Headers;
use crate::ops::records::{
    decode_timestamped, kept_from, timestamped_bytes, windowed_key, ExpiryIndex,
};
use crate::ops::windowed::windowed_processor;
use crate::ops::windowed::{
    change_record, read, session_store_key, WindowedAggregation, WindowedProcessor,
};
use crate::options::SessionWindows;
use crate::serdes::Data;

/// Folds a session's aggregate into the merged aggregate so far (`None`: the first session,
/// where Kafka Streams starts from the initializer's value).
pub(crate) type Merger<K, VA> = Arc<dyn Fn(&K, Option<VA>, VA) -> VA + Send + Sync>;

/// The end of a session store key (`framed key | end | start`).
pub(crate) fn session_end_of(store_key: &[u8]) -> Option<i64> {
    split_framed(store_key).and_then(|(_, rest)| ts_from(rest.get(..8)?))
}

/// A key's sessions as the store holds them, in store order (end, then start), with their
/// aggregates.
pub(crate) type KeySessions<VA> = Vec<(i64, i64, VA)>;

/// Session aggregation state, and a read cache of each key's sessions (written through:
/// the store stays the truth, and every update is forwarded at once).
pub(crate) struct SessionAgg<K, V, VA> {
    pub(crate) windows: SessionWindows,
    /// How long a session stays in the store after its end (gap + grace, or longer).
    pub(crate) retention_ms: i64,
    /// Records dropped as late since the processor last counted them.
    pub(crate) dropped: DroppedRecords,
    pub(crate) step: Step<K, V, VA>,
    pub(crate) merger: Merger<K, VA>,
    pub(crate) observed: i64,
    pub(crate) last_purge: i64,
    pub(crate) expiry: ExpiryIndex,
    pub(crate) sessions: FastHashMap<Vec<u8>, KeySessions<VA>>,
    /// Sessions and keys in `sessions`, for its memory bound.
    pub(crate) cached: usize,
}

impl<K: Data, V: Data, VA: Data> SessionAgg<K, V, VA> {
    pub(crate) fn new(
        windows: SessionWindows,
        retention_ms: i64,
        step: Step<K, V, VA>,
        merger: Merger<K, VA>,
    ) -> Self {
        SessionAgg {
            windows,
            retention_ms,
            dropped: DroppedRecords::default(),
            step,
            merger,
            observed: i64::MIN,
            last_purge: i64::MIN / 2,
            expiry: ExpiryIndex::default(),
            sessions: FastHashMap::default(),
            cached: 0,
        }
    }

    /// The earliest end of a live session: sessions ending before `observed - retention`
    /// have expired. (Kafka's in-memory session store also expires one ending exactly there
    /// — a session the processor has just accepted, as it closes at `observed - gap -
    /// grace` — and its RocksDB store keeps whole segments longer: rill keeps what the
    /// processor accepts.)
    fn live_from(&self) -> i64 {
        let SessionWindows { gap_ms, grace_ms } = self.windows;
        kept_from(self.observed, self.retention_ms, &[gap_ms, grace_ms]).saturating_sub(1)
    }

    /// Reads `key`'s sessions from the store, the first time.
    fn load(&mut self, store: &mut dyn KeyValueStore, key: &[u8]) -> Result<(), ProcessError> {
        if !self.sessions.contains_key(key) {
            let stored = SessionStore::new(&mut *store).find_sessions(key, i64::MIN, i64::MAX)?;
            let list = stored
                .into_iter()
                .map(|(s, b)| Ok((s.end, s.start, decode_timestamped::<VA>(&b)?.0)))
                .collect::<Result<KeySessions<VA>, ProcessError>>()?;
            self.cached += list.len() + 1;
            self.sessions.insert(key.to_vec(), list);
        }
        Ok(())
    }
}

impl<K: Data, V: Data, VA: Data> WindowedAggregation<K, V, VA> for SessionAgg<K, V, VA> {
    fn reads_record(&self) -> bool {
        true
    }

    fn update(
        &mut self,
        store: &mut dyn KeyValueStore,
        k: Option<&K>,
        key: &[u8],
        v: Option<V>,
        ts: i64,
        _id: &[u8],
        _headers: &Headers,
        _task_time: i64,
    ) -> Result<Vec<Record>, ProcessError> {
        let (k, v) = read(k, v)?;
        let SessionWindows { gap_ms, grace_ms } = self.windows;
        // Kafka Streams' rules: a session is live while its end is above `observed -
        // retention` — stream time before this record, as the store has seen it — and a
        // record is late when the session it would land in (after merging) ends before
        // `observed - grace - gap`, this record's time included.
        let live_from = self.live_from();
        self.observed = self.observed.max(ts);
        let close = self
            .observed
            .saturating_sub(grace_ms)
            .saturating_sub(gap_ms);
        self.load(store, key)?;
        let (step, merger) = (&self.step, &self.merger);
        let list = self
            .sessions
            .get_mut(key)
            .ok_or_else(|| ProcessError::Failed("session cache lost a key".into()))?;
        // Sessions the store has expired since the cache read them.
        let before = list.len();
        list.retain(|(e, _, _)| *e >= live_from);
        let (from, to) = (ts.saturating_sub(gap_ms), ts.saturating_add(gap_ms));
        let overlaps = |(end, start, _): &(i64, i64, VA)| *end >= from && *start <= to;
        let (start, end) = list
            .iter()
            .filter(|s| overlaps(s))
            .fold((ts, ts), |(lo, hi), s| (lo.min(s.1), hi.max(s.0)));
        if end < close {
            self.cached = (self.cached + list.len()).saturating_sub(before);
            self.dropped.add(DropReason::LateSession, 1);
            return Ok(Vec::new()); // the merged session closed: too late
        }
        let mut ss = SessionStore::new(&mut *store);
        let mut out = Vec::new();
        // Kafka Streams starts from the initializer's aggregate and merges every session the
        // record joins into it, in store order (end, then start).
        let mut acc: Option<VA> = None;
        let mut kept = Vec::with_capacity(list.len());
        // A record inside a session of one instant `[ts, ts]` updates it in place; any
        // other merge removes every session it joins and forwards a tombstone for each,
        // one with the merged bounds included.
        let in_place = start == ts && end == ts;
        for s in list.drain(..) {
            if !overlaps(&s) {
                kept.push(s);
                continue;
            }
            let (s_end, s_start, val) = s;
            let session = Session {
                key: key.to_vec(),
                start: s_start,
                end: s_end,
            };
            ss.remove(&session)?;
            if !in_place {
                out.push(change_record(
                    windowed_key(key, s_start, s_end),
                    None,
                    Some(val.clone()),
                    s_end,
                )?);
            }
            acc = Some(merger(k, acc, val));
        }
        let new = step.bind(Some((k, Value::Owned(v))))?.apply(acc);
        let session = Session {
            key: key.to_vec(),
            start,
            end,
        };
        // Every session of the key overlapping the record (one with these very bounds
        // would) was removed above: the store has none under this key. (The session list is
        // the store's, this being its only writer.)
        ss.put_new(&session, timestamped_bytes(&new, end)?)?;
        let at = kept.partition_point(|(e, s, _)| (*e, *s) < (end, start));
        kept.insert(at, (end, start, new.clone()));
        let after = kept.len();
        *list = kept;
        self.cached = (self.cached + after).saturating_sub(before);
        self.expiry
            .insert(end, InlineKey::new(&session_store_key(key, end, start)));
        // As Kafka Streams with caching off: the new session carries no old value.
        out.push(change_record(
            windowed_key(key, start, end),
            Some(new),
            None,
            end,
        )?);
        // What the store holds is what interactive queries see: the live sessions only.
        let live_from = self.live_from();
        if self.expiry.due(live_from) {
            self.expiry.purge(store, live_from, session_end_of)?;
        }
        if self.observed.saturating_sub(self.last_purge) >= (self.retention_ms / 10).max(1) {
            self.sessions.retain(|_, list| {
                list.retain(|(e, _, _)| *e >= live_from);
                !list.is_empty()
            });
            self.cached = self.sessions.values().map(|l| l.len() + 1).sum();
            self.last_purge = self.observed;
        }
        Ok(out)
    }

    fn take_dropped(&mut self) -> Option<DroppedRecords> {
        self.dropped.take()
    }

    /// Past its share of memory, the cache starts over (it holds no pending writes).
    fn flush(&mut self, ctx: &mut ProcessorContext<'_>, _store: &str) -> Result<(), ProcessError> {
        let per_session = std::mem::size_of::<(i64, i64, VA)>() + 48;
        if self.cached * per_session > ctx.cache_max_bytes() {
            self.sessions.clear();
            self.cached = 0;
        }
        Ok(())
    }
}

windowed_processor!(SessionAgg);
