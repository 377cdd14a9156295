//! One side of a table-table join: each change of this side joined with the other side's
//! current value, forwarded as a change of the result table.

use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::KeyValueStore;

use crate::ops::records::{decode_timestamped, key_of, value_of, with, Change};
use crate::ops::stream_join::SideJoiner;
use crate::serdes::{Data, SerdeRef};

/// One side of a table-table join: its changes joined with the other side's current value.
pub(crate) struct TableJoinSide<K, A, B, R> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) other_store: String,
    pub(crate) joiner: SideJoiner<K, A, B, R>,
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
