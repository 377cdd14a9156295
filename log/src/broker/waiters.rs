//! Fetches waiting for data, watched by the partitions they read (Kafka's fetch purgatory,
//! keyed by partition): an append wakes only the long polls of its own partition, not every
//! waiting fetch of the broker.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::hash::FastHashMap;
use crate::types::TopicPartition;

/// The waiting fetches by partition. Each waiter is one fetch's [`Notify`]; a fetch watches
/// again (after reading) each time it goes back to waiting, and a wake-up takes a partition's
/// whole list, so lists hold only fetches that are waiting or have just gone.
#[derive(Debug, Default)]
pub(crate) struct FetchWaiters {
    by_partition: Mutex<FastHashMap<TopicPartition, Vec<Weak<Notify>>>>,
}

impl FetchWaiters {
    /// Registers `waiter` for appends to each of `partitions`. Register before reading, then
    /// wait: an append in between leaves a permit on `waiter` (`Notify::notify_one`), so it
    /// is not missed.
    pub(crate) fn watch<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
        waiter: &Arc<Notify>,
    ) {
        let mut map = crate::sync::plain(&self.by_partition);
        for tp in partitions {
            let list = map.entry(tp.clone()).or_default();
            // Fetches that timed out or were answered are gone: drop them as the list grows,
            // so a partition nobody writes to does not collect them forever.
            if list.len() >= 8 && list.len().is_power_of_two() {
                list.retain(|w| w.strong_count() > 0);
            }
            if !list.iter().any(|w| w.as_ptr() == Arc::as_ptr(waiter)) {
                list.push(Arc::downgrade(waiter));
            }
        }
    }

    /// Wakes the fetches waiting on `tp` (after an append, or a marker that moves the last
    /// stable offset).
    pub(crate) fn wake(&self, tp: &TopicPartition) {
        let list = crate::sync::plain(&self.by_partition).remove(tp);
        for w in list.into_iter().flatten() {
            if let Some(n) = w.upgrade() {
                n.notify_one();
            }
        }
    }

    /// How many partitions have a list (for tests).
    #[cfg(test)]
    fn partitions(&self) -> usize {
        crate::sync::plain(&self.by_partition).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_append_wakes_the_fetches_of_its_partition_only() {
        let w = FetchWaiters::default();
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let on_a = Arc::new(Notify::new());
        let on_b = Arc::new(Notify::new());
        w.watch([&a], &on_a);
        w.watch([&b, &a], &on_b);
        w.watch([&b], &on_b);
        w.wake(&b);
        // on_b has a permit, on_a none.
        tokio::time::timeout(std::time::Duration::from_millis(10), on_b.notified())
            .await
            .expect("woken");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), on_a.notified())
                .await
                .is_err()
        );
        // A wake before the wait is kept (registered, then the append, then the wait).
        w.wake(&a);
        tokio::time::timeout(std::time::Duration::from_millis(10), on_a.notified())
            .await
            .expect("the permit was kept");
        assert_eq!(w.partitions(), 0);
    }

    #[test]
    fn gone_fetches_are_dropped_as_a_list_grows() {
        let w = FetchWaiters::default();
        let tp = TopicPartition::new("t", 0);
        for _ in 0..1000 {
            let gone = Arc::new(Notify::new());
            w.watch([&tp], &gone);
        }
        let len = crate::sync::plain(&w.by_partition)[&tp].len();
        assert!(len <= 16, "{len} entries kept for fetches that are gone");
    }
}
