//! Foreign-key table-table joins (Kafka Streams' KIP-213): each row of the left table joins
//! the right table's row whose key the left value names. Three steps, through two internal
//! topics:
//! 1. a left row's change subscribes it to its foreign key (and unsubscribes it from the
//!    old one), through `<application.id>-<name>-subscription-registration-repartition`,
//!    partitioned like the right table;
//! 2. there, subscriptions are kept per foreign key; a subscription, or a change of the
//!    right row, sends a response to every subscribed left key, through
//!    `<application.id>-<name>-subscription-response-repartition`, partitioned like the left
//!    table;
//! 3. a response is joined with the left row as it is now, unless the row changed since the
//!    subscription (a hash of its value tells), which makes the response stale.
//!
//! A deleted left row deletes its result at once. Results carry no old value.

use std::sync::Arc;

use bytes::Bytes;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{framed_key, split_framed};
use rill_core::topology::ProcessorSupplier;
use serde::{Deserialize, Serialize};

use crate::graph::{
    decode_timestamped, encode, ser, typed_record, value_of, Change, Materialized, Shared,
    StatelessFn, StoreKind,
};
use crate::serdes::{hop, Data, SerdeRef};
use crate::table::KTable;

/// Step 1 -> 2: a left key's subscription to a foreign key (`hash: None`: unsubscribe).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Subscription {
    key: Vec<u8>,
    hash: Option<u64>,
}

/// Step 2 -> 3: the right row (hop-encoded, none if absent) for a left key's subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Response {
    hash: u64,
    right: Option<Vec<u8>>,
}

/// FNV-1a of a value's encoding: tells a response whether the left row is still the one
/// that subscribed.
fn value_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn record<V: Data>(key: Vec<u8>, value: V, timestamp: i64) -> Record {
    typed_record(Some(Bytes::from(key)), value, timestamp, Vec::new())
}

fn short_row() -> ProcessError {
    ProcessError::Failed("stored row shorter than its timestamp".into())
}

/// Step 2: subscriptions per foreign key (`framed fk | left key -> hash`), answered with
/// the right table's row.
struct SubscriptionProcessor {
    subscriptions: String,
    right_store: String,
}

impl Processor for SubscriptionProcessor {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let fk = r.key.clone().unwrap_or_default();
        let sub: Subscription = value_of(&r)?;
        let mut k = framed_key(&fk);
        k.extend_from_slice(&sub.key);
        let Some(hash) = sub.hash else {
            ctx.store(&self.subscriptions)?.delete(&k)?;
            return Ok(());
        };
        ctx.store(&self.subscriptions)?
            .put(&k, &hash.to_be_bytes())?;
        let right = ctx.store(&self.right_store)?.get(&fk)?;
        // A stored row is `timestamp | value`: the response carries the value.
        let right = match right {
            Some(b) => Some(b.get(8..).map(<[u8]>::to_vec).ok_or_else(short_row)?),
            None => None,
        };
        let response = Response { hash, right };
        ctx.forward(record(sub.key, response, r.timestamp))
    }
}

/// Step 2, the other way: a right row's change answers every left key subscribed to it.
struct RightChangeProcessor<VO> {
    subscriptions: String,
    _v: std::marker::PhantomData<fn() -> VO>,
}

impl<VO: Data> Processor for RightChangeProcessor<VO> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let fk = r.key.clone().unwrap_or_default();
        let change: Change<VO> = value_of(&r)?;
        let new = change
            .new
            .as_ref()
            .map(encode)
            .transpose()?
            .map(|b| b.to_vec());
        let subscribed = ctx
            .store(&self.subscriptions)?
            .prefix_scan(&framed_key(&fk))?;
        for (k, hash) in subscribed {
            let Some((_, left_key)) = split_framed(&k) else {
                continue;
            };
            let hash = u64::from_be_bytes(hash.as_slice().try_into().unwrap_or([0; 8]));
            let response = Response {
                hash,
                right: new.clone(),
            };
            ctx.forward(record(left_key.to_vec(), response, r.timestamp))?;
        }
        Ok(())
    }
}

/// `(left value, right value or none) -> result or none` (the join kind decides).
type FkJoiner<V, VO, VR> = Arc<dyn Fn(&V, Option<&VO>) -> Option<VR> + Send + Sync>;

/// Step 3: a response joined with the left row as it is now.
struct ResponseProcessor<V, VO, VR> {
    left_store: String,
    joiner: FkJoiner<V, VO, VR>,
}

impl<V: Data, VO: Data, VR: Data> Processor for ResponseProcessor<V, VO, VR> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let key = r.key.clone().unwrap_or_default();
        let response: Response = value_of(&r)?;
        let Some(stored) = ctx.store(&self.left_store)?.get(&key)? else {
            return Ok(()); // the left row is gone: its result was deleted then
        };
        if value_hash(stored.get(8..).ok_or_else(short_row)?) != response.hash {
            return Ok(()); // the row changed since it subscribed: a newer response follows
        }
        let (left, _) = decode_timestamped::<V>(&stored)?;
        let right: Option<VO> = response
            .right
            .as_deref()
            .map(hop::decode)
            .transpose()
            .map_err(crate::graph::internal)?;
        let change: Change<VR> = Change {
            new: (self.joiner)(&left, right.as_ref()),
            old: None,
        };
        ctx.forward(record(key.to_vec(), change, r.timestamp))
    }
}

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
            _v: std::marker::PhantomData,
        }
    }
}
