//! The handles a job is written with: streams, tables, grouped, windowed and cogrouped
//! streams, global tables. Each operator method adds nodes to the builder's graph — the
//! processors of `crate::ops` and their stores — and returns the handle to go on from; no
//! record ever passes through this code.

mod fk;
mod global;
mod grouped;
mod joins;
mod stream;
mod table;
mod windowed;

pub(crate) use global::global_table;
pub use global::GlobalKTable;
pub use grouped::{CogroupedKStream, KGroupedStream, KGroupedTable, TimeWindowedCogroupedKStream};
pub(crate) use stream::{raw_source, source_stream};
pub use stream::{KStream, Splitter};
pub(crate) use table::source_table;
pub use table::KTable;
pub use windowed::{
    SessionWindowedKStream, SlidingWindowedKStream, TimeWindowedKStream, WindowAggregator,
    WindowedKStream, Windowing,
};
