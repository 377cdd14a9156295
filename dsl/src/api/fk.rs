//! Foreign-key table-table joins as a job writes them (`fk_join`, `fk_left_join`): the two
//! internal topics and the processors on each side (`crate::ops::fk` says how it works).

use std::sync::Arc;

use rill_core::processor::Processor;

use rill_core::topology::ProcessorSupplier;

use crate::api::KTable;
use crate::graph::{Shared, StoreKind};
use crate::ops::fk::{
    record, value_hash, ResponseProcessor, RightChangeProcessor, Subscription,
    SubscriptionProcessor,
};
use crate::ops::records::{encode, ser, value_of, Change, StatelessFn};
use crate::options::Materialized;
use crate::serdes::{Data, SerdeRef};

impl<K: Data, V: Data> KTable<K, V> {
    /// Foreign-key inner join: each row joined with the row of `other` whose key
    /// `foreign_key` takes from its value (rows without one have no result).
    pub fn fk_join<KO: Data, VO: Data, VR: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> KO + Send + Sync + 'static,
        joiner: impl Fn(&V, &VO) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        self.foreign_key_join(other, foreign_key, move |v, o| o.map(|o| joiner(v, o)))
    }

    /// Foreign-key left join: each row with its foreign row, or `None`.
    pub fn fk_left_join<KO: Data, VO: Data, VR: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> KO + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        self.foreign_key_join(other, foreign_key, move |v, o| Some(joiner(v, o)))
    }

    fn foreign_key_join<KO: Data, VO: Data, VR: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> KO + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VO>) -> Option<VR> + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let left = self.materialized();
        let right = other.materialized();
        let (left_store, right_store) = (
            left.store.clone().unwrap_or_default(),
            right.store.clone().unwrap_or_default(),
        );
        let fk_keys: SerdeRef<KO> = Arc::clone(&right.keys);
        let mut g = self.g.borrow_mut();
        let base = g.name("KTABLE-FK-JOIN");
        let registration = format!("{base}-subscription-registration");
        let response = format!("{base}-subscription-response");
        let subscriptions = format!("{base}-subscription-store");
        let subscribe = format!("{base}-subscribe");
        let output = format!("{base}-output");
        // Step 1: subscribe (and unsubscribe) per left change; a deletion deletes the result.
        let sink = format!("{registration}-repartition-sink");
        let (to_sink, to_output) = (sink.clone(), output.clone());
        let foreign_key = Arc::new(foreign_key);
        let step1: StatelessFn = Arc::new(move |ctx, r| {
            let key = r.key.clone().unwrap_or_default();
            let c: Change<V> = value_of(&r)?;
            let fk_of = |v: &V| fk_keys.serialize(&foreign_key(v)).map_err(ser);
            let old_fk = c.old.as_ref().map(fk_of).transpose()?.flatten();
            let new_fk = c.new.as_ref().map(fk_of).transpose()?.flatten();
            if let Some(old) = old_fk.filter(|o| Some(o) != new_fk.as_ref()) {
                let sub = Subscription {
                    key: key.to_vec(),
                    hash: None,
                };
                ctx.forward_to(&to_sink, record(old, sub, r.timestamp))?;
            }
            match (&c.new, new_fk) {
                (Some(v), Some(fk)) => {
                    let sub = Subscription {
                        key: key.to_vec(),
                        hash: Some(value_hash(&encode(v)?)),
                    };
                    ctx.forward_to(&to_sink, record(fk, sub, r.timestamp))?;
                }
                _ => {
                    // No row, or no foreign key: no result.
                    let gone: Change<VR> = Change {
                        new: None,
                        old: None,
                    };
                    ctx.forward_to(&to_output, record(key.to_vec(), gone, r.timestamp))?;
                }
            }
            Ok(())
        });
        g.stateless(&subscribe, step1, &[&left.node]);
        if let Err(e) = g.topology.add_repartition(&registration, &[&subscribe]) {
            g.errors.push(e.to_string());
        }
        // Step 2: where the right table lives.
        let answer = format!("{base}-subscription-processor");
        let (subs, rs) = (subscriptions.clone(), right_store.clone());
        let answer_supplier: ProcessorSupplier = Arc::new(move || {
            Box::new(SubscriptionProcessor {
                subscriptions: subs.clone(),
                right_store: rs.clone(),
            }) as Box<dyn Processor>
        });
        g.processor(&answer, answer_supplier, &[&registration]);
        let changes = format!("{base}-right-changes");
        let subs = subscriptions.clone();
        let changes_supplier: ProcessorSupplier = Arc::new(move || {
            Box::new(RightChangeProcessor::<VO> {
                subscriptions: subs.clone(),
                _v: std::marker::PhantomData,
            }) as Box<dyn Processor>
        });
        g.processor(&changes, changes_supplier, &[&right.node]);
        g.store(
            Materialized::default().spec(subscriptions.clone(), None),
            StoreKind::Internal,
            Arc::new(()),
            &[&answer],
        );
        g.connect_store(&subscriptions, &changes);
        g.connect_store(&right_store, &answer);
        if let Err(e) = g.topology.add_repartition(&response, &[&answer, &changes]) {
            g.errors.push(e.to_string());
        }
        // Step 3: back where the left table lives.
        let join = format!("{base}-response-processor");
        let (ls, joiner) = (left_store.clone(), Arc::new(joiner));
        let join_supplier: ProcessorSupplier = Arc::new(move || {
            let j = Arc::clone(&joiner);
            Box::new(ResponseProcessor::<V, VO, VR> {
                left_store: ls.clone(),
                joiner: Arc::new(move |v, o| j(v, o)),
            }) as Box<dyn Processor>
        });
        g.processor(&join, join_supplier, &[&response]);
        g.connect_store(&left_store, &join);
        let pass: StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
        g.stateless(&output, pass, &[&join, &subscribe]);
        let mut registration_group = vec![registration.clone()];
        registration_group.extend(right.sources.iter().cloned());
        g.copartition(&registration_group);
        let mut response_group = vec![response.clone()];
        response_group.extend(left.sources.iter().cloned());
        g.copartition(&response_group);
        drop(g);
        KTable {
            g: Shared::clone(&self.g),
            node: output,
            keys: Arc::clone(&left.keys),
            sources: left.sources.clone(),
            store: None,
            grace_ms: None,
            old_values: None,
            _v: std::marker::PhantomData,
        }
    }
}
