//! Joins, with Kafka Streams' semantics:
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
use std::time::Duration;

use bytes::Bytes;
use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{framed_key, split_framed, ts_bytes, ts_from, InlineKey, KeyValueStore};
use rill_core::topology::ProcessorSupplier;

use crate::graph::{
    decode_timestamped, earlier, get_timestamped, internal, key_of, millis, record_id, rewrap,
    typed_record, value_of, with, Change, ExpiryIndex, Materialized, Shared, StatelessFn,
    StoreKind,
};
use crate::serdes::{hop, Data, SerdeRef};
use crate::stream::KStream;
use crate::table::KTable;

/// How far apart in time two records of a stream-stream join may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    pub before_ms: i64,
    pub after_ms: i64,
    pub grace_ms: i64,
}

impl JoinWindows {
    /// Records at most `difference` apart, either way; late records are dropped at once.
    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }

    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        JoinWindows {
            before_ms: millis(difference),
            after_ms: millis(difference),
            grace_ms: millis(grace),
        }
    }

    /// Right records up to `before` earlier than the left record.
    pub fn before(mut self, before: Duration) -> Self {
        self.before_ms = millis(before);
        self
    }

    /// Right records up to `after` later than the left record.
    pub fn after(mut self, after: Duration) -> Self {
        self.after_ms = millis(after);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Inner,
    Left,
    Outer,
}

/// An inner join's joiner: a result only when both sides have a value.
fn inner<K, A, B, R>(
    joiner: impl Fn(&A, &B) -> R + Send + Sync + 'static,
) -> impl Fn(&K, Option<&A>, Option<&B>) -> Option<R> + Send + Sync + 'static {
    move |_, a, b| match (a, b) {
        (Some(a), Some(b)) => Some(joiner(a, b)),
        _ => None,
    }
}

/// `(key, this side's value, the other side's value) -> result`, from one side's view.
type SideJoiner<K, A, B, R> = Arc<dyn Fn(&K, Option<&A>, Option<&B>) -> Option<R> + Send + Sync>;

/// One side of a stream-stream join.
struct StreamJoinSide<K, A, B, R> {
    keys: SerdeRef<K>,
    this_store: String,
    other_store: String,
    /// Records that found no partner yet (left / outer joins), shared by both sides:
    /// `ts | side | framed key | id -> value`.
    outer_store: Option<String>,
    /// This side's tag in the outer store (0 left, 1 right).
    side: u8,
    /// How far back and ahead of this record the other side's records match.
    before_ms: i64,
    after_ms: i64,
    grace_ms: i64,
    /// For each side (by tag), how long after its timestamp a record's window stays open.
    reach_ms: [i64; 2],
    kind: JoinKind,
    joiner: SideJoiner<K, A, B, R>,
    observed: i64,
    last_purge: i64,
    expiry: ExpiryIndex,
    _t: PhantomData<fn() -> (A, B)>,
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
        let st = self.observed;
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
        self.observed = self.observed.max(ctx.stream_time()).max(ts);
        if ts == self.observed {
            self.emit_closed(ctx)?;
        }
        let reach = self.reach_ms[self.side as usize];
        if ts.saturating_add(reach).saturating_add(self.grace_ms) < self.observed {
            ctx.record_dropped(DropReason::LateJoin);
            return Ok(()); // its window has closed: too late to join
        }
        let id = record_id(ctx, ts);
        let mut this_key = framed_key(&key);
        this_key.extend_from_slice(&id);
        let value = r.value_bytes()?.unwrap_or_default();
        // The key is this record's own: new to the store, unless the record is processed
        // again over its own committed write (at-least-once).
        let new = ctx.exactly_once();
        put_unique(ctx.store(&self.this_store)?, &this_key, &value, new)?;
        self.expiry.insert(ts, InlineKey::new(&this_key));
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
        if self.observed.saturating_sub(self.last_purge) > (span / 10).max(1) {
            let store = ctx.store(&self.this_store)?;
            self.expiry
                .purge(store, earlier(self.observed, &spans), |k| {
                    split_framed(k).and_then(|(_, rest)| ts_from(rest.get(..8)?))
                })?;
            self.last_purge = self.observed;
        }
        Ok(())
    }
}

/// Writes a join record's entry under a key made of its own offset: as new to the store
/// when `new` (see [`ProcessorContext::exactly_once`]).
fn put_unique(
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

impl<K: Data, V: Data> KStream<K, V> {
    /// Stream-stream inner join: each pair of records of a key within `windows`.
    pub fn join<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VR> {
        self.stream_join(other, windows, JoinKind::Inner, inner(joiner))
    }

    /// Stream-stream left join: pairs, and each left record without a partner, alone, once
    /// its window closes.
    pub fn left_join<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VR> {
        self.stream_join(other, windows, JoinKind::Left, move |_, a, b| {
            a.map(|a| joiner(a, b))
        })
    }

    /// Stream-stream outer join: pairs, and records of either side without a partner.
    pub fn outer_join<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VR> {
        self.stream_join(other, windows, JoinKind::Outer, move |_, a, b| {
            Some(joiner(a, b))
        })
    }

    fn stream_join<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        w: JoinWindows,
        kind: JoinKind,
        joiner: impl Fn(&K, Option<&V>, Option<&V2>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let left = self.partitioned(None);
        let right = other.partitioned(None);
        let joiner = Arc::new(joiner);
        let mut g = self.g.borrow_mut();
        let this_store = g.name("KSTREAM-JOINTHIS-STORE");
        let other_store = g.name("KSTREAM-JOINOTHER-STORE");
        let outer_store = (kind != JoinKind::Inner).then(|| g.name("KSTREAM-OUTERSHARED-STORE"));
        let this_node = g.name("KSTREAM-JOINTHIS");
        let other_node = g.name("KSTREAM-JOINOTHER");
        let reach_ms = [w.after_ms, w.before_ms];
        let side = |s: u8| {
            let keys = Arc::clone(&left.keys);
            let (mine, theirs) = if s == 0 {
                (this_store.clone(), other_store.clone())
            } else {
                (other_store.clone(), this_store.clone())
            };
            let outer = outer_store.clone();
            let j = Arc::clone(&joiner);
            (keys, mine, theirs, outer, j)
        };
        let (keys, mine, theirs, outer, j) = side(0);
        let left_supplier: ProcessorSupplier = Arc::new(move || {
            let j = Arc::clone(&j);
            Box::new(StreamJoinSide::<K, V, V2, VR> {
                keys: Arc::clone(&keys),
                this_store: mine.clone(),
                other_store: theirs.clone(),
                outer_store: outer.clone(),
                side: 0,
                before_ms: w.before_ms,
                after_ms: w.after_ms,
                grace_ms: w.grace_ms,
                reach_ms,
                kind,
                joiner: Arc::new(move |k, a, b| j(k, a, b)),
                observed: i64::MIN,
                last_purge: i64::MIN / 2,
                expiry: ExpiryIndex::default(),
                _t: PhantomData,
            }) as Box<dyn Processor>
        });
        let (keys, mine, theirs, outer, j) = side(1);
        let right_supplier: ProcessorSupplier = Arc::new(move || {
            let j = Arc::clone(&j);
            Box::new(StreamJoinSide::<K, V2, V, VR> {
                keys: Arc::clone(&keys),
                this_store: mine.clone(),
                other_store: theirs.clone(),
                outer_store: outer.clone(),
                side: 1,
                before_ms: w.after_ms,
                after_ms: w.before_ms,
                grace_ms: w.grace_ms,
                reach_ms,
                kind,
                joiner: Arc::new(move |k, b, a| j(k, a, b)),
                observed: i64::MIN,
                last_purge: i64::MIN / 2,
                expiry: ExpiryIndex::default(),
                _t: PhantomData,
            }) as Box<dyn Processor>
        });
        g.processor(&this_node, left_supplier, &[&left.node]);
        g.processor(&other_node, right_supplier, &[&right.node]);
        let retention = Some(
            w.before_ms
                .saturating_add(w.after_ms)
                .saturating_add(w.grace_ms),
        );
        let spec = |name: &str| Materialized::default().spec(name.to_string(), retention);
        g.store(
            spec(&this_store),
            StoreKind::Internal,
            Arc::new(()),
            &[&this_node],
        );
        g.store(
            spec(&other_store),
            StoreKind::Internal,
            Arc::new(()),
            &[&other_node],
        );
        g.connect_store(&this_store, &other_node);
        g.connect_store(&other_store, &this_node);
        if let Some(o) = &outer_store {
            g.store(spec(o), StoreKind::Internal, Arc::new(()), &[&this_node]);
            g.connect_store(o, &other_node);
        }
        let merge = g.name("KSTREAM-MERGE");
        let pass: StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
        g.stateless(&merge, pass, &[&this_node, &other_node]);
        let mut sources = left.sources.clone();
        sources.extend(right.sources.iter().cloned());
        g.copartition(&sources);
        drop(g);
        let mut s = left.derive(merge, Arc::clone(&left.keys), false);
        s.sources = sources;
        s
    }

    /// Stream-table inner join: each record with the table's current value for its key
    /// (records whose key is not in the table are dropped).
    pub fn join_table<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, &VT) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.table_join(table, move |v, t| t.map(|t| joiner(v, t)))
    }

    /// Stream-table left join: each record with the table's value, or `None`.
    pub fn left_join_table<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.table_join(table, move |v, t| Some(joiner(v, t)))
    }

    fn table_join<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let stream = self.partitioned(None);
        let table = table.materialized();
        let store = table.store.clone().unwrap_or_default();
        let st = store.clone();
        let f: StatelessFn = Arc::new(move |ctx, r| {
            let v: V = value_of(&r)?;
            let key = r.key.clone().unwrap_or_default();
            let t = get_timestamped::<VT>(ctx.store(&st)?, &key)?;
            match joiner(&v, t.as_ref().map(|(t, _)| t)) {
                Some(out) => ctx.forward(rewrap(r, out)),
                None => Ok(()),
            }
        });
        let mut g = self.g.borrow_mut();
        let node = g.name("KSTREAM-JOIN");
        g.stateless(&node, f, &[&stream.node]);
        g.connect_store(&store, &node);
        let mut sources = stream.sources.clone();
        sources.extend(table.sources.iter().cloned());
        g.copartition(&sources);
        drop(g);
        let mut s = stream.derive(node, Arc::clone(&stream.keys), false);
        s.sources = sources;
        s
    }
}

/// One side of a table-table join: its changes joined with the other side's current value.
struct TableJoinSide<K, A, B, R> {
    keys: SerdeRef<K>,
    other_store: String,
    joiner: SideJoiner<K, A, B, R>,
}

impl<K: Data, A: Data, B: Data, R: Data> Processor for TableJoinSide<K, A, B, R> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let Some(k) = key_of(&*self.keys, &r)? else {
            return Ok(());
        };
        let key = r.key.clone().unwrap_or_default();
        let c: Change<A> = value_of(&r)?;
        let other = ctx
            .store(&self.other_store)?
            .get(&key)?
            .map(|b| decode_timestamped::<B>(&b))
            .transpose()?;
        let (b, other_ts) = match &other {
            Some((b, t)) => (Some(b), *t),
            None => (None, i64::MIN),
        };
        // The joiner encodes the join kind: it gives no row where the kind has none.
        let new = (self.joiner)(&k, c.new.as_ref(), b);
        let old = (self.joiner)(&k, c.old.as_ref(), b);
        if new.is_none() && old.is_none() {
            return Ok(());
        }
        let mut o = with(&r, r.key.clone(), Change { new, old });
        o.timestamp = r.timestamp.max(other_ts);
        ctx.forward(o)
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// Table-table inner join: a row for each key in both tables.
    pub fn join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        self.table_join(other, inner(joiner))
    }

    /// Table-table left join: a row for each key of this table.
    pub fn left_join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        self.table_join(other, move |_, a, b| a.map(|a| joiner(a, b)))
    }

    /// Table-table outer join: a row for each key of either table.
    pub fn outer_join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        self.table_join(other, move |_, a, b| {
            (a.is_some() || b.is_some()).then(|| joiner(a, b))
        })
    }

    fn table_join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&K, Option<&V>, Option<&V2>) -> Option<VR> + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let left = self.materialized();
        let right = other.materialized();
        let joiner = Arc::new(joiner);
        let (ls, rs) = (
            left.store.clone().unwrap_or_default(),
            right.store.clone().unwrap_or_default(),
        );
        let mut g = self.g.borrow_mut();
        let this_node = g.name("KTABLE-JOINTHIS");
        let other_node = g.name("KTABLE-JOINOTHER");
        let (keys, st, j) = (Arc::clone(&left.keys), rs.clone(), Arc::clone(&joiner));
        let left_supplier: ProcessorSupplier = Arc::new(move || {
            let j = Arc::clone(&j);
            Box::new(TableJoinSide::<K, V, V2, VR> {
                keys: Arc::clone(&keys),
                other_store: st.clone(),
                joiner: Arc::new(move |k, a, b| j(k, a, b)),
            }) as Box<dyn Processor>
        });
        let (keys, st, j) = (Arc::clone(&left.keys), ls.clone(), Arc::clone(&joiner));
        let right_supplier: ProcessorSupplier = Arc::new(move || {
            let j = Arc::clone(&j);
            Box::new(TableJoinSide::<K, V2, V, VR> {
                keys: Arc::clone(&keys),
                other_store: st.clone(),
                joiner: Arc::new(move |k, b, a| j(k, a, b)),
            }) as Box<dyn Processor>
        });
        g.processor(&this_node, left_supplier, &[&left.node]);
        g.processor(&other_node, right_supplier, &[&right.node]);
        g.connect_store(&rs, &this_node);
        g.connect_store(&ls, &other_node);
        let merge = g.name("KTABLE-MERGE");
        let pass: StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
        g.stateless(&merge, pass, &[&this_node, &other_node]);
        let mut sources = left.sources.clone();
        sources.extend(right.sources.iter().cloned());
        g.copartition(&sources);
        drop(g);
        KTable {
            g: Shared::clone(&self.g),
            node: merge,
            keys: Arc::clone(&left.keys),
            sources,
            store: None,
            grace_ms: None,
            _v: PhantomData,
        }
    }
}
