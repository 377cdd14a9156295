//! `KTable`: a changelog stream read as a table, one current value per key. Updates travel
//! between operators as (new, old) changes; a null value (tombstone) deletes the key; a
//! source table's tombstone for an absent key is not forwarded.
//!
//! `suppress` holds a table's updates back (the buffer is `ops::suppress`).

use std::marker::PhantomData;
use std::sync::Arc;

use rill_core::processor::{ProcessError, Processor};

use rill_core::topology::ProcessorSupplier;

use crate::api::{KGroupedTable, KStream};
use crate::graph::{OldValues, Shared, StoreKind};
use crate::ops::records::{key_of, rewrap, ser, take_value, value_of, with, Change, StatelessFn};
use crate::ops::suppress::Suppress;
use crate::ops::table::{Materialize, MaterializeChanges, TableSource};
use crate::options::SuppressUntil;
use crate::options::{Consumed, Grouped, Materialized, Suppressed};
use crate::serdes::{auto, to_bytes, Data, SerdeRef};

impl<K: Data, V: Data> KTable<K, V> {
    /// Holds updates back: until windows close (windowed tables only), or for a time limit.
    pub fn suppress(&self, suppressed: Suppressed) -> KTable<K, V> {
        self.suppress_closing(suppressed, 0)
    }

    /// [`KTable::suppress`], a window closing `after_end_ms` past its end + grace
    /// (`EmitStrategy::OnWindowClose` over sliding windows, whose ends are inclusive: 1).
    pub(crate) fn suppress_closing(
        &self,
        suppressed: Suppressed,
        after_end_ms: i64,
    ) -> KTable<K, V> {
        // The buffer keeps a key's latest change (Kafka Streams' suppression asks its table
        // for old values).
        self.request_old_values();
        if suppressed.limit == SuppressUntil::WindowCloses && suppressed.buffer.emit_early {
            self.g.borrow_mut().errors.push(format!(
                "suppress(until_window_closes) after {}: a full buffer cannot emit early (its \
                 results are final); use BufferConfig::shut_down_when_full",
                self.node
            ));
        }
        let buffer = suppressed.buffer;
        let (windowed, wait_ms) = match (suppressed.limit, self.grace_ms) {
            (SuppressUntil::WindowCloses, Some(grace)) => {
                (true, grace.saturating_add(after_end_ms))
            }
            (SuppressUntil::WindowCloses, None) => {
                self.g.borrow_mut().errors.push(format!(
                    "suppress(until_window_closes) after {}: the table is not windowed",
                    self.node
                ));
                (true, 0)
            }
            (SuppressUntil::TimeLimit(ms), _) => (false, ms),
        };
        let mut g = self.g.borrow_mut();
        let store = suppressed
            .name
            .clone()
            .unwrap_or_else(|| g.name("KTABLE-SUPPRESS-STATE-STORE"));
        let node = g.name("KTABLE-SUPPRESS");
        let st = store.clone();
        let supplier: ProcessorSupplier = Arc::new(move || {
            Box::new(Suppress::new(st.clone(), windowed, wait_ms, buffer)) as Box<dyn Processor>
        });
        g.processor(&node, supplier, &[&self.node]);
        g.store(
            Materialized::default().spec(store, None),
            StoreKind::Internal,
            Arc::new(()),
            &[&node],
        );
        drop(g);
        let mut t = self.clone();
        t.node = node;
        t.store = None;
        t
    }
}

/// A table with keys `K` and values `V`.
pub struct KTable<K, V> {
    pub(crate) g: Shared,
    pub(crate) node: String,
    pub(crate) keys: SerdeRef<K>,
    pub(crate) sources: Vec<String>,
    /// The store holding the table's current values (timestamped), if it is materialized.
    pub(crate) store: Option<String>,
    /// For a windowed table: the grace period of its windows (what `suppress` waits for).
    pub(crate) grace_ms: Option<i64>,
    /// For a table a filter or a mapping made (no store of its own): whether anything
    /// downstream reads its old values.
    pub(crate) old_values: Option<Arc<OldValues>>,
    pub(crate) _v: PhantomData<fn() -> V>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            g: Shared::clone(&self.g),
            node: self.node.clone(),
            keys: Arc::clone(&self.keys),
            sources: self.sources.clone(),
            store: self.store.clone(),
            grace_ms: self.grace_ms,
            old_values: self.old_values.clone(),
            _v: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for KTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KTable")
            .field("node", &self.node)
            .field("store", &self.store)
            .finish()
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    pub(crate) fn from_parts<A, B>(
        from: &KStream<A, B>,
        node: String,
        keys: SerdeRef<K>,
        store: Option<String>,
    ) -> Self {
        KTable {
            g: Shared::clone(&from.g),
            node,
            keys,
            sources: from.sources.clone(),
            store,
            grace_ms: None,
            old_values: None,
            _v: PhantomData,
        }
    }

    fn derive<V2>(&self, node: String, store: Option<String>) -> KTable<K, V2> {
        KTable {
            g: Shared::clone(&self.g),
            node,
            keys: Arc::clone(&self.keys),
            sources: self.sources.clone(),
            store,
            grace_ms: self.grace_ms,
            old_values: None,
            _v: PhantomData,
        }
    }

    /// The name of the store holding this table, if it is materialized (for interactive
    /// queries).
    pub fn store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// A table of each change mapped by `f` (a filter or a value mapping). As Kafka Streams'
    /// KTableFilter, a `filter` forwards a change that leaves neither a new nor an old value
    /// (a deletion of a row that never passed) unless something downstream reads old values;
    /// a mapping forwards every change.
    fn map_changes<V2: Data>(
        &self,
        op: &str,
        filter: bool,
        f: impl Fn(&K, Option<V>) -> Option<V2> + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let keys = Arc::clone(&self.keys);
        let old_values = OldValues::below(self.old_values.clone());
        let read_old = Arc::clone(&old_values);
        let f: StatelessFn = Arc::new(move |ctx, r| {
            let Some(k) = key_of(&*keys, &r)? else {
                return Ok(());
            };
            let c: Change<V> = value_of(&r)?;
            let out = Change {
                new: f(&k, c.new),
                old: f(&k, c.old),
            };
            if filter && out.new.is_none() && out.old.is_none() && read_old.read() {
                return Ok(());
            }
            ctx.forward(rewrap(r, out))
        });
        let mut g = self.g.borrow_mut();
        let name = g.name(op);
        g.stateless(&name, f, &[&self.node]);
        drop(g);
        let mut t = self.derive(name, None);
        t.old_values = Some(old_values);
        t
    }

    /// Something downstream reads this table's old values (see [`OldValues`]).
    pub(crate) fn request_old_values(&self) {
        if let Some(o) = &self.old_values {
            o.request();
        }
    }

    /// Rows for which `predicate` holds; a row that stops matching is deleted downstream.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.map_changes("KTABLE-FILTER", true, move |k, v| {
            v.filter(|v| predicate(k, v))
        })
    }

    pub fn filter_not(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.map_changes("KTABLE-FILTER", true, move |k, v| {
            v.filter(|v| !predicate(k, v))
        })
    }

    /// Each row's value mapped.
    pub fn map_values<VR: Data>(
        &self,
        mapper: impl Fn(V) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        self.map_changes("KTABLE-MAPVALUES", false, move |_, v| v.map(&mapper))
    }

    /// The table's updates as a stream; a deletion is a `None` value (a tombstone when
    /// written to a topic).
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        let f: StatelessFn = Arc::new(|ctx, mut r| {
            let c: Change<V> = take_value(&mut r)?;
            ctx.forward(rewrap(r, c.new))
        });
        let mut g = self.g.borrow_mut();
        let name = g.name("KTABLE-TOSTREAM");
        g.stateless(&name, f, &[&self.node]);
        drop(g);
        KStream {
            g: Shared::clone(&self.g),
            node: name,
            keys: Arc::clone(&self.keys),
            sources: self.sources.clone(),
            key_changed: false,
            _v: PhantomData,
        }
    }

    /// Groups rows by a new key and value (always through a repartition topic), to
    /// aggregate with an adder and a subtractor.
    pub fn group_by<KR: Data, VR: Data>(
        &self,
        selector: impl Fn(&K, &V) -> (KR, VR) + Send + Sync + 'static,
    ) -> KGroupedTable<KR, VR> {
        self.group_by_with(selector, Grouped::default())
    }

    pub fn group_by_with<KR: Data, VR: Data>(
        &self,
        selector: impl Fn(&K, &V) -> (KR, VR) + Send + Sync + 'static,
        grouped: Grouped,
    ) -> KGroupedTable<KR, VR> {
        // The aggregation subtracts the old values.
        self.request_old_values();
        let keys = Arc::clone(&self.keys);
        let out_keys: SerdeRef<KR> = auto();
        let ok = Arc::clone(&out_keys);
        // The old value leaves its group and the new one joins its own, as two records (the
        // aggregation subtracts the first and adds the second) — or, when both map to the
        // same key, as one change carrying both (Kafka Streams' KIP-904: no transient
        // aggregate between the subtraction and the addition).
        let f: StatelessFn = Arc::new(move |ctx, r| {
            let Some(k) = key_of(&*keys, &r)? else {
                return Ok(());
            };
            let c: Change<V> = value_of(&r)?;
            let mapped = |v: Option<V>| -> Result<_, ProcessError> {
                let Some(v) = v else { return Ok(None) };
                let (k2, v2) = selector(&k, &v);
                Ok(Some((to_bytes(&*ok, &k2).map_err(ser)?, v2)))
            };
            match (mapped(c.old)?, mapped(c.new)?) {
                (Some((old_key, old)), Some((new_key, new))) if old_key == new_key => {
                    let change = Change {
                        new: Some(new),
                        old: Some(old),
                    };
                    ctx.forward(with(&r, new_key, change))
                }
                (old, new) => {
                    if let Some((key, old)) = old {
                        let change = Change {
                            new: None,
                            old: Some(old),
                        };
                        ctx.forward(with(&r, key, change))?;
                    }
                    if let Some((key, new)) = new {
                        let change = Change {
                            new: Some(new),
                            old: None,
                        };
                        ctx.forward(with(&r, key, change))?;
                    }
                    Ok(())
                }
            }
        });
        let mut g = self.g.borrow_mut();
        let name = g.name("KTABLE-SELECT");
        g.stateless(&name, f, &[&self.node]);
        drop(g);
        let stream = KStream {
            g: Shared::clone(&self.g),
            node: name,
            keys: out_keys,
            sources: self.sources.clone(),
            key_changed: true,
            _v: PhantomData,
        };
        KGroupedTable { stream, grouped }
    }

    /// This table with its current values in a store (materializing it if it has none): what
    /// joins look values up in.
    pub(crate) fn materialized(&self) -> Self {
        if self.store.is_some() {
            return self.clone();
        }
        let mut g = self.g.borrow_mut();
        let store = g.name("KTABLE-MATERIALIZED-STATE-STORE");
        drop(g);
        self.materialize_as(Materialized::named(store))
    }

    /// Writes every change into a store named by `materialized` and passes it on — but the
    /// deletion of an absent row, which a cached store drops in Kafka Streams (caching is on
    /// unless `materialized` turns it off).
    fn materialize_as(&self, materialized: Materialized) -> Self {
        let store = materialized.name.clone().unwrap_or_default();
        let st = store.clone();
        let drop_absent_deletes = materialized.caching;
        let supplier: ProcessorSupplier = Arc::new(move || {
            Box::new(MaterializeChanges::<V> {
                materialize: Materialize {
                    store: st.clone(),
                    drop_absent_deletes,
                },
                _v: PhantomData,
            }) as Box<dyn Processor>
        });
        let mut g = self.g.borrow_mut();
        let node = g.name("KTABLE-MATERIALIZE");
        g.processor(&node, supplier, &[&self.node]);
        g.store(
            materialized.spec(store.clone(), None),
            StoreKind::KeyValue,
            Arc::new(Arc::clone(&self.keys)),
            &[&node],
        );
        drop(g);
        self.derive(node, Some(store))
    }
}

/// A table read from `topic`: every record is an upsert, null values delete.
pub(crate) fn source_table<K: Data, V: Data>(
    g: &Shared,
    topic: &str,
    consumed: Consumed<K, V>,
    materialized: Materialized,
) -> KTable<K, V> {
    let stream = crate::api::raw_source(g, topic, &consumed);
    let mut gr = g.borrow_mut();
    let store = materialized
        .name
        .clone()
        .unwrap_or_else(|| gr.name("KTABLE-SOURCE-STATE-STORE"));
    let values = consumed.values;
    let st = store.clone();
    let supplier: ProcessorSupplier = Arc::new(move || {
        Box::new(TableSource {
            materialize: Materialize {
                store: st.clone(),
                drop_absent_deletes: true,
            },
            values: Arc::clone(&values),
        }) as Box<dyn Processor>
    });
    let node = gr.name("KTABLE-SOURCE");
    gr.processor(&node, supplier, &[&stream]);
    gr.store(
        materialized.spec(store.clone(), None),
        StoreKind::KeyValue,
        Arc::new(Arc::clone(&consumed.keys)),
        &[&node],
    );
    drop(gr);
    KTable {
        g: Shared::clone(g),
        node,
        keys: consumed.keys,
        sources: vec![topic.to_string()],
        store: Some(store),
        grace_ms: None,
        old_values: None,
        _v: PhantomData,
    }
}
