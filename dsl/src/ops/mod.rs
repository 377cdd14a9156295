//! The processors that the DSL's operators add to a topology: each runs per record inside a
//! task, over its own stores. The user-facing API (`crate::api`) builds them; nothing here
//! imports it.
//!
//! - `aggregate`: the aggregation kernel (`Step`) and per-key stream and table aggregations;
//!   `cache`: the record cache in front of an aggregation's store;
//! - `windowed` (what window aggregations share), `time_window`, `session_window`,
//!   `sliding_window`; `suppress`: the suppression buffer;
//! - `stream_join`, `table_join`, `fk` (foreign-key joins); `table`: source tables and
//!   materialization; `process`: Processor API processors in a DSL job;
//! - `records`: how records travel between operators and sit in stores.

pub(crate) mod aggregate;
pub(crate) mod cache;
pub(crate) mod fk;
pub(crate) mod process;
pub(crate) mod records;
pub(crate) mod session_window;
pub(crate) mod sliding_window;
pub(crate) mod stream_join;
pub(crate) mod suppress;
pub(crate) mod table;
pub(crate) mod table_join;
pub(crate) mod time_window;
pub(crate) mod windowed;
