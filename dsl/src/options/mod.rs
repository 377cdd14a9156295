//! What a job hands to operators: how topics are read, written and regrouped, where stores
//! live, window and join specifications, what suppression holds back. Plain values: nothing
//! here builds a graph or touches a record.

mod io;
mod materialized;
mod suppressed;
mod windows;

pub use io::{Consumed, Grouped, Produced, Repartitioned};
pub use materialized::Materialized;
pub(crate) use suppressed::SuppressUntil;
pub use suppressed::{BufferConfig, Suppressed};
pub use windows::{EmitStrategy, JoinWindows, SessionWindows, SlidingWindows, TimeWindows};

/// A duration in milliseconds, saturating.
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
