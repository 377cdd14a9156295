//! The aggregation kernel every aggregation shares — a [`Step`] folds a record into a
//! key's aggregate, and knows whether it reads the record at all (a count does not) — and the
//! per-key stream and table aggregation processors.

use std::sync::Arc;

use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::InlineKey;

use crate::ops::records::{
    get_timestamped, key_of, put_timestamped, take_value, value_of, with, Change,
};
use crate::serdes::{Data, Serde, SerdeRef};

use crate::ops::cache::RecordCache;

/// One aggregation step: `(key, value, aggregate so far or none) -> aggregate`, or a step
/// that reads neither the key nor the value (a count): for it the aggregating processor
/// does not deserialize the record again, and a hopping record's value is not copied for
/// each of its windows.
#[doc(hidden)]
pub enum Step<K, V, VA> {
    /// Reads the record: its value borrowed while other windows still need it.
    Each(EachFn<K, V, VA>),
    /// Reads only the aggregate.
    Blind(Arc<BlindDyn<VA>>),
}

/// A record's value as a step gets it: its own, or lent while other windows still need it.
#[doc(hidden)]
#[derive(Debug)]
pub enum Value<'a, V> {
    Owned(V),
    Lent(&'a V),
}

impl<V: Clone> Value<'_, V> {
    /// The value itself (a copy when lent).
    pub fn into_owned(self) -> V {
        match self {
            Value::Owned(v) => v,
            Value::Lent(v) => v.clone(),
        }
    }

    pub fn get(&self) -> &V {
        match self {
            Value::Owned(v) => v,
            Value::Lent(v) => v,
        }
    }
}

/// The function of a [`Step::Each`].
pub type EachFn<K, V, VA> = Arc<EachDyn<K, V, VA>>;
#[doc(hidden)]
pub type EachDyn<K, V, VA> = dyn Fn(&K, Value<'_, V>, Option<VA>) -> VA + Send + Sync;
/// The function of a [`Step::Blind`].
pub(crate) type BlindDyn<VA> = dyn Fn(Option<VA>) -> VA + Send + Sync;

impl<K, V, VA> std::fmt::Debug for Step<K, V, VA> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Each(_) => "Step::Each",
            Step::Blind(_) => "Step::Blind",
        })
    }
}

impl<K, V, VA> Clone for Step<K, V, VA> {
    fn clone(&self) -> Self {
        match self {
            Step::Each(f) => Step::Each(Arc::clone(f)),
            Step::Blind(f) => Step::Blind(Arc::clone(f)),
        }
    }
}

impl<K: 'static, V: Data, VA: 'static> Step<K, V, VA> {
    /// A step over each record's key and value, which `f` takes by value.
    pub(crate) fn each(f: impl Fn(&K, V, Option<VA>) -> VA + Send + Sync + 'static) -> Self {
        Step::Each(Arc::new(move |k, v, acc| f(k, v.into_owned(), acc)))
    }

    /// Whether the step reads the record's key and value.
    pub(crate) fn reads_record(&self) -> bool {
        matches!(self, Step::Each(_))
    }

    /// The same step as one that takes the record (for aggregations that keep or merge by
    /// key whatever the step).
    pub(crate) fn reading_record(self) -> Self {
        match self {
            Step::Blind(f) => Step::Each(Arc::new(move |_, _, acc| f(acc))),
            each => each,
        }
    }

    /// The step applied to a record's key and value (`None` when it reads neither, see
    /// [`read_record`]).
    pub(crate) fn bind<'a>(
        &'a self,
        record: Option<(&'a K, Value<'a, V>)>,
    ) -> Result<Bound<'a, K, V, VA>, ProcessError> {
        match (self, record) {
            (Step::Each(f), Some((k, v))) => Ok(Bound::Each(f.as_ref(), k, v)),
            (Step::Blind(f), _) => Ok(Bound::Blind(f.as_ref())),
            (Step::Each(_), None) => Err(ProcessError::Failed(
                "internal: an aggregation step without its record".into(),
            )),
        }
    }
}

impl<K: 'static, V: Data> Step<K, V, i64> {
    /// Kafka Streams' `count`: records per key (or window).
    pub(crate) fn count() -> Self {
        Step::Blind(Arc::new(|n| n.unwrap_or(0) + 1))
    }
}

/// A [`Step`] with the record it applies to.
pub(crate) enum Bound<'a, K, V, VA> {
    Each(&'a EachDyn<K, V, VA>, &'a K, Value<'a, V>),
    Blind(&'a BlindDyn<VA>),
}

impl<K, V: Data, VA> Bound<'_, K, V, VA> {
    /// Folds the record into `acc`, lending its value (more aggregates take it after).
    pub(crate) fn apply_ref(&self, acc: Option<VA>) -> VA {
        match self {
            Bound::Each(f, k, v) => f(k, Value::Lent(v.get()), acc),
            Bound::Blind(f) => f(acc),
        }
    }

    /// Folds the record into `acc`, the last aggregate it goes to: its value moves.
    pub(crate) fn apply(self, acc: Option<VA>) -> VA {
        match self {
            Bound::Each(f, k, v) => f(k, v, acc),
            Bound::Blind(f) => f(acc),
        }
    }
}

/// What an aggregation with a step that reads the record (`reads`) takes of `r`: its key and
/// value, or nothing for a step that reads neither (`Some(None)`); `None` for a record it
/// skips (a null key its type cannot hold). A blind step trusts the key's bytes: they were
/// checked where they entered the task (a source, or an operator that serialized them).
pub(crate) fn read_record<K: Data, V: Data>(
    reads: bool,
    keys: &dyn Serde<K>,
    r: &mut Record,
) -> Result<Option<Option<(K, V)>>, ProcessError> {
    if !reads {
        if r.key.is_none() && key_of(keys, r)?.is_none() {
            return Ok(None);
        }
        if r.typed.is_none() && r.value.is_none() {
            // No value to skip reading: the error reading it gives.
            take_value::<V>(r)?;
        }
        return Ok(Some(None));
    }
    let Some(k) = key_of(keys, r)? else {
        return Ok(None);
    };
    Ok(Some(Some((k, take_value(r)?))))
}

/// The step of a `reduce`: a key's first value is its aggregate, later ones fold in.
pub(crate) fn reduce_step<K: 'static, V: Data>(
    reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
) -> Step<K, V, V> {
    Step::each(move |_, v, acc| match acc {
        None => v,
        Some(a) => reducer(a, v),
    })
}

/// One table aggregation step: a row's change applied to the aggregate (none: no row left).
pub(crate) type TableStep<K, V, VA> =
    Arc<dyn Fn(&K, Change<V>, Option<VA>) -> Option<VA> + Send + Sync>;

/// Aggregates a stream per key into a key-value store, through a record cache that
/// forwards the latest aggregate per key (with the one it replaced) at each flush.
pub(crate) struct StreamAggregate<K, V, VA> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) store: String,
    pub(crate) step: Step<K, V, VA>,
    pub(crate) cache: RecordCache<VA>,
}

impl<K: Data, V: Data, VA: Data> Processor for StreamAggregate<K, V, VA> {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        mut r: Record,
    ) -> Result<(), ProcessError> {
        let Some(record) = read_record::<K, V>(self.step.reads_record(), &*self.keys, &mut r)?
        else {
            ctx.record_dropped(DropReason::NullKey);
            return Ok(());
        };
        let key = r.key.clone().unwrap_or_default();
        let (k, v) = record.map_or((None, None), |(k, v)| (Some(k), Some(v)));
        let bound = self.step.bind(k.as_ref().zip(v.map(Value::Owned)))?;
        let ts = r.timestamp;
        self.cache.update(
            ctx.store(&self.store)?,
            &InlineKey::new(&key),
            None,
            false,
            &r.headers,
            |acc, t| (bound.apply(acc), t.map_or(ts, |t| ts.max(t))),
        )?;
        if self.cache.must_flush(ctx) {
            self.cache.flush(ctx, &self.store)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        self.cache.flush(ctx, &self.store)
    }
}

pub(crate) struct TableAggregate<K, V, VA> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) store: String,
    pub(crate) step: TableStep<K, V, VA>,
}

impl<K: Data, V: Data, VA: Data> Processor for TableAggregate<K, V, VA> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let Some(k) = key_of(&*self.keys, &r)? else {
            ctx.record_dropped(DropReason::NullKey);
            return Ok(());
        };
        let key = r.key.clone().unwrap_or_default();
        let change: Change<V> = value_of(&r)?;
        let store = ctx.store(&self.store)?;
        let old = get_timestamped::<VA>(store, &key)?;
        let (acc, ts) = match &old {
            Some((a, t)) => (Some(a.clone()), r.timestamp.max(*t)),
            None => (None, r.timestamp),
        };
        let acc = (self.step)(&k, change, acc);
        match &acc {
            Some(a) => {
                put_timestamped(store, &key, a, ts)?;
            }
            None => {
                store.delete(&key)?;
            }
        }
        let out = Change {
            new: acc,
            old: old.map(|(a, _)| a),
        };
        let mut rec = with(&r, r.key.clone(), out);
        rec.timestamp = ts;
        ctx.forward(rec)
    }
}
