//! Table processors: a source table's store, and the materialization of a table's changes
//! into a store (so that joins and queries can read it).

use std::marker::PhantomData;

use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::KeyValueStore;

use crate::ops::records::{deser, timestamped_bytes, value_of, with, Change};
use crate::serdes::{Data, SerdeRef};

/// Keeps each change's new value (timestamped) in `store`; forwards the change, unless
/// `drop_absent_deletes` and it deletes an absent key (a source table, as Kafka Streams'
/// cached store drops a change with neither a new nor an old value). An update repeating
/// the stored value is forwarded, as Kafka Streams does since emit-on-change was withdrawn
/// (KAFKA-12508).
pub(crate) struct Materialize {
    pub store: String,
    pub drop_absent_deletes: bool,
}

impl Materialize {
    fn apply<V: Data>(
        &self,
        ctx: &mut ProcessorContext<'_>,
        r: &Record,
        new: Option<V>,
    ) -> Result<(), ProcessError> {
        let key = r.key.clone().unwrap_or_default();
        let store = ctx.store(&self.store)?;
        let old_bytes = store.get(&key)?;
        let old: Option<V> = old_bytes
            .as_deref()
            .map(crate::ops::records::decode_timestamped::<V>)
            .transpose()?
            .map(|(v, _)| v);
        match &new {
            None => {
                if old.is_none() && self.drop_absent_deletes {
                    return Ok(());
                }
                store.delete(&key)?;
            }
            Some(v) => {
                store.put(&key, &timestamped_bytes(v, r.timestamp)?)?;
            }
        }
        let change = Change { new, old };
        ctx.forward(with(r, r.key.clone(), change))
    }
}

/// Materializes the changes of a derived table.
pub(crate) struct MaterializeChanges<V> {
    pub(crate) materialize: Materialize,
    pub(crate) _v: PhantomData<fn() -> V>,
}

impl<V: Data> Processor for MaterializeChanges<V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let c: Change<V> = value_of(&r)?;
        self.materialize.apply(ctx, &r, c.new)
    }
}

/// The source processor of a table read from a topic.
pub(crate) struct TableSource<V> {
    pub(crate) materialize: Materialize,
    pub(crate) values: SerdeRef<V>,
}

impl<V: Data> Processor for TableSource<V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        // A table row needs a key (Kafka Streams drops null-key table records too).
        if r.key.is_none() {
            ctx.record_dropped(DropReason::NullKey);
            return Ok(());
        }
        let bytes = r.value_bytes()?;
        let new = match bytes.as_deref() {
            None => None,
            Some(b) => self.values.deserialize(Some(b)).map_err(deser)?,
        };
        self.materialize.apply(ctx, &r, new)
    }
}
