//! `GlobalKTable`: a table with every partition of its topic on every instance, so a stream
//! can join it by any key it computes (no co-partitioning, no repartition). Kafka Streams'
//! global tables, kept in memory and rebuilt from the topic at start.

use std::marker::PhantomData;
use std::sync::Arc;

use rill_core::processor::ProcessError;
use rill_core::topology::GlobalUpdater;

use crate::api::KStream;
use crate::graph::{Shared, StoreKind};
use crate::ops::records::{deser, key_of, rewrap, ser, timestamped_bytes, value_of, StatelessFn};
use crate::options::Consumed;
use crate::serdes::{Data, SerdeRef};

/// A table replicated in full to every instance.
pub struct GlobalKTable<K, V> {
    pub(crate) store: String,
    pub(crate) keys: SerdeRef<K>,
    pub(crate) _v: PhantomData<fn() -> V>,
}

impl<K, V> Clone for GlobalKTable<K, V> {
    fn clone(&self) -> Self {
        GlobalKTable {
            store: self.store.clone(),
            keys: Arc::clone(&self.keys),
            _v: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for GlobalKTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalKTable")
            .field("store", &self.store)
            .finish()
    }
}

impl<K, V> GlobalKTable<K, V> {
    /// The global store's name (for interactive queries).
    pub fn store_name(&self) -> &str {
        &self.store
    }
}

pub(crate) fn global_table<K: Data, V: Data>(
    g: &Shared,
    topic: &str,
    consumed: Consumed<K, V>,
) -> GlobalKTable<K, V> {
    let mut gr = g.borrow_mut();
    let store = consumed
        .name
        .clone()
        .unwrap_or_else(|| gr.name("GLOBALKTABLE-STATE-STORE"));
    let values = Arc::clone(&consumed.values);
    // Each record upserts its key; a null value deletes it; a null key is skipped.
    let updater: GlobalUpdater = Arc::new(move |s, r| {
        let Some(key) = r.key.as_deref() else {
            return Ok(());
        };
        match r.value.as_deref() {
            None => {
                s.delete(key)?;
            }
            Some(b) => {
                if let Some(v) = values.deserialize(Some(b)).map_err(deser)? {
                    s.put(key, &timestamped_bytes(&v, r.timestamp)?)?;
                }
            }
        }
        Ok(())
    });
    if let Err(e) = gr.topology.add_global_store(&store, topic, updater) {
        gr.errors.push(e.to_string());
    }
    gr.stores.insert(
        store.clone(),
        crate::graph::StoreInfo {
            kind: StoreKind::Global,
            keys: Arc::new(Arc::clone(&consumed.keys)),
        },
    );
    GlobalKTable {
        store,
        keys: consumed.keys,
        _v: PhantomData,
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Stream-global-table inner join: each record joined with the global table's row for
    /// the key `key_selector` computes (records without one are dropped).
    pub fn join_global<GK: Data, GV: Data, VR: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key_selector: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, &GV) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.global_join(table, key_selector, move |v, g| g.map(|g| joiner(v, g)))
    }

    /// Stream-global-table left join: each record with its row, or `None`.
    pub fn left_join_global<GK: Data, GV: Data, VR: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key_selector: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.global_join(table, key_selector, move |v, g| Some(joiner(v, g)))
    }

    fn global_join<GK: Data, GV: Data, VR: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key_selector: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let keys = Arc::clone(&self.keys);
        let table_keys = Arc::clone(&table.keys);
        let store = table.store.clone();
        let f: StatelessFn = Arc::new(move |ctx, r| {
            let Some(k) = key_of(&*keys, &r)? else {
                return Ok(());
            };
            let v: V = value_of(&r)?;
            let gk = key_selector(&k, &v);
            let Some(gk) = table_keys.serialize(&gk).map_err(ser)? else {
                return Ok(());
            };
            let row = ctx
                .global_get(&store, &gk)?
                .map(|b| crate::ops::records::decode_timestamped::<GV>(&b))
                .transpose()?;
            match joiner(&v, row.as_ref().map(|(g, _)| g)) {
                Some(out) => ctx.forward(rewrap(r, out)),
                None => Ok::<(), ProcessError>(()),
            }
        });
        let mut g = self.g.borrow_mut();
        let node = g.name("KSTREAM-GLOBALJOIN");
        g.stateless(&node, f, &[&self.node]);
        drop(g);
        self.derive(node, Arc::clone(&self.keys), self.key_changed)
    }
}
