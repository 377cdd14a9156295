//! Joins as a job writes them: stream-stream (windowed), stream-table and table-table. The
//! semantics and processors are in `crate::ops::stream_join` and `crate::ops::table_join`.

use std::marker::PhantomData;
use std::sync::Arc;

use rill_core::metrics::DropReason;
use rill_core::processor::Processor;

use rill_core::topology::ProcessorSupplier;

use crate::api::{KStream, KTable};
use crate::graph::{Shared, StoreKind};
use crate::ops::records::{get_timestamped, rewrap, value_of, StatelessFn};
use crate::ops::stream_join::{inner, JoinClocks, JoinKind, JoinState, StreamJoinSide};
use crate::ops::table_join::TableJoinSide;
use crate::options::{JoinWindows, Materialized};
use crate::serdes::Data;

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
        // Both sides share their task's join time (Kafka Streams' TimeTracker).
        let clocks = JoinClocks::default();
        let (keys, mine, theirs, outer, j) = side(0);
        let left_clocks = clocks.clone();
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
                seen: JoinState::new(left_clocks.clone()),
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
                seen: JoinState::new(clocks.clone()),
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
            let Some(key) = r.key.clone() else {
                // A null key (of a key type that holds one) matches no row: a left join
                // gives the record alone, an inner join drops it (Kafka Streams'
                // KStreamKTableJoinProcessor).
                return match joiner(&v, None) {
                    Some(out) => ctx.forward(rewrap(r, out)),
                    None => {
                        ctx.record_dropped(DropReason::NullKey);
                        Ok(())
                    }
                };
            };
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
            old_values: None,
            _v: PhantomData,
        }
    }
}
