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
use rill_core::state::{framed_key, split_framed, KeyValueStore};
use serde::{Deserialize, Serialize};

use crate::ops::records::{decode_timestamped, encode, typed_record, value_of, Change};
use crate::serdes::{hop, Data};

/// Step 1 -> 2: a left key's subscription to a foreign key (`hash: None`: unsubscribe).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub(crate) key: Vec<u8>,
    pub(crate) hash: Option<u64>,
}

/// Step 2 -> 3: the right row (hop-encoded, none if absent) for a left key's subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Response {
    hash: u64,
    right: Option<Vec<u8>>,
}

/// FNV-1a of a value's encoding: tells a response whether the left row is still the one
/// that subscribed.
pub(crate) fn value_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn record<V: Data>(key: Vec<u8>, value: V, timestamp: i64) -> Record {
    typed_record(Some(Bytes::from(key)), value, timestamp, Vec::new())
}

pub(crate) fn short_row() -> ProcessError {
    ProcessError::Failed("stored row shorter than its timestamp".into())
}

/// Step 2: subscriptions per foreign key (`framed fk | left key -> hash`), answered with
/// the right table's row.
pub(crate) struct SubscriptionProcessor {
    pub(crate) subscriptions: String,
    pub(crate) right_store: String,
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
        // A stored row is `timestamp | value`: the response carries the value, and the
        // later of the two rows' timestamps (Kafka Streams' SubscriptionJoinProcessorSupplier).
        let (right, timestamp) = match right {
            Some(b) => {
                let ts = b.first_chunk::<8>().map(|t| i64::from_be_bytes(*t));
                let ts = ts.ok_or_else(short_row)?;
                let value = b.get(8..).map(<[u8]>::to_vec).ok_or_else(short_row)?;
                (Some(value), r.timestamp.max(ts))
            }
            None => (None, r.timestamp),
        };
        let response = Response { hash, right };
        ctx.forward(record(sub.key, response, timestamp))
    }
}

/// Step 2, the other way: a right row's change answers every left key subscribed to it.
pub(crate) struct RightChangeProcessor<VO> {
    pub(crate) subscriptions: String,
    pub(crate) _v: std::marker::PhantomData<fn() -> VO>,
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
pub(crate) type FkJoiner<V, VO, VR> = Arc<dyn Fn(&V, Option<&VO>) -> Option<VR> + Send + Sync>;

/// Step 3: a response joined with the left row as it is now.
pub(crate) struct ResponseProcessor<V, VO, VR> {
    pub(crate) left_store: String,
    pub(crate) joiner: FkJoiner<V, VO, VR>,
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
            .map_err(crate::ops::records::internal)?;
        let change: Change<VR> = Change {
            new: (self.joiner)(&left, right.as_ref()),
            old: None,
        };
        ctx.forward(record(key.to_vec(), change, r.timestamp))
    }
}
