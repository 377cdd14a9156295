//! What the time, session and sliding window aggregations share: the [`WindowedAggregation`]
//! a window processor implements, and the processor that runs one per record (reading the
//! record, counting drops, forwarding what the aggregation returns).

use bytes::Bytes;
use rill_core::metrics::DroppedRecords;
use rill_core::processor::{ProcessError, ProcessorContext, Record};
use rill_core::state::{framed_key, ts_bytes, KeyValueStore};

use crate::ops::records::{typed_record, Change, Headers, RecordIds};
use crate::serdes::{Data, SerdeRef};

/// A per-key (windowed) aggregation as a processor over one store.
pub(crate) trait WindowedAggregation<K, V, VA>: Send + 'static {
    /// Whether `update` reads the record's id (`RecordIds`); otherwise it gets none.
    const NEEDS_ID: bool = false;

    /// Whether `update` reads the record's typed key and value (see [`read_record`]);
    /// otherwise it gets none.
    fn reads_record(&self) -> bool;

    /// Updates the store for record (`k`, `key` bytes, `v`, timestamp `ts`, `id` from
    /// `RecordIds`, `headers`) at the task's stream time `task_time`; returns what to
    /// forward now.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        store: &mut dyn KeyValueStore,
        k: Option<&K>,
        key: &[u8],
        v: Option<V>,
        ts: i64,
        id: &[u8],
        headers: &Headers,
        task_time: i64,
    ) -> Result<Vec<Record>, ProcessError>;

    /// Writes and forwards what the aggregation held back (see [`crate::cache`]).
    fn flush(&mut self, _ctx: &mut ProcessorContext<'_>, _store: &str) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Whether to flush after this record rather than at the commit.
    fn must_flush(&self, _ctx: &ProcessorContext<'_>) -> bool {
        false
    }

    /// Records (or window updates) dropped since the last call, if any.
    fn take_dropped(&mut self) -> Option<DroppedRecords>;
}

/// Runs a [`WindowedAggregation`] in a processor.
pub(crate) struct WindowedProcessor<K, W> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) store: String,
    pub(crate) agg: W,
    /// Ids of the records the aggregation keeps (sliding windows).
    pub(crate) ids: RecordIds,
}

macro_rules! windowed_processor {
    ($agg:ident) => {
        impl<K: Data, V: Data, VA: Data> Processor for WindowedProcessor<K, $agg<K, V, VA>> {
            fn process(
                &mut self,
                ctx: &mut ProcessorContext<'_>,
                mut r: Record,
            ) -> Result<(), ProcessError> {
                let Some(record) =
                    read_record::<K, V>(self.agg.reads_record(), &*self.keys, &mut r)?
                else {
                    ctx.record_dropped(DropReason::NullKey);
                    return Ok(());
                };
                let (k, v) = record.map_or((None, None), |(k, v)| (Some(k), Some(v)));
                let key: &[u8] = r.key.as_deref().unwrap_or_default();
                let id = if <$agg<K, V, VA> as WindowedAggregation<K, V, VA>>::NEEDS_ID {
                    self.ids.next(ctx, r.timestamp)
                } else {
                    Vec::new()
                };
                let task_time = ctx.stream_time();
                let store = ctx.store(&self.store)?;
                let out = self.agg.update(
                    store,
                    k.as_ref(),
                    key,
                    v,
                    r.timestamp,
                    &id,
                    &r.headers,
                    task_time,
                )?;
                if let Some(dropped) = self.agg.take_dropped() {
                    ctx.add_dropped(dropped);
                }
                for mut o in out {
                    o.headers = r.headers.clone();
                    ctx.forward(o)?;
                }
                if self.agg.must_flush(ctx) {
                    self.agg.flush(ctx, &self.store)?;
                }
                Ok(())
            }

            fn flush(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
                self.agg.flush(ctx, &self.store)
            }
        }
    };
}
pub(crate) use windowed_processor;

/// The key and value of an aggregation that reads its records (`reads_record`).
pub(crate) fn read<K, V>(k: Option<&K>, v: Option<V>) -> Result<(&K, V), ProcessError> {
    k.zip(v)
        .ok_or_else(|| ProcessError::Failed("internal: an aggregation without its record".into()))
}

/// The session store's key of a session (as `SessionStore` lays it out).
pub(crate) fn session_store_key(key: &[u8], end: i64, start: i64) -> Vec<u8> {
    let mut k = framed_key(key);
    k.extend_from_slice(&ts_bytes(end));
    k.extend_from_slice(&ts_bytes(start));
    k
}

pub(crate) fn change_record<VA: Data>(
    key: Bytes,
    new: Option<VA>,
    old: Option<VA>,
    ts: i64,
) -> Result<Record, ProcessError> {
    Ok(typed_record(Some(key), Change { new, old }, ts, Vec::new()))
}
