//! Global stores (Kafka Streams' global state): a full copy of a topic, every partition, on
//! every application instance, shared by all of its tasks (the DSL's `GlobalKTable`). The
//! topic is the store's changelog: the store is rebuilt from it at start (the application's
//! tasks wait until it has read to the end) and then kept up to date as the topic grows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_log::client::{Admin, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, Transport};
use rill_log::types::TopicPartition;

use crate::processor::{ProcessError, Record};
use crate::state::memory::InMemoryStore;
use crate::state::KeyValueStore;
use crate::topology::{GlobalStoreSpec, Topology};

/// The global stores of one application instance.
pub struct GlobalStores {
    specs: BTreeMap<String, GlobalStoreSpec>,
    stores: Mutex<BTreeMap<String, Box<dyn KeyValueStore>>>,
}

impl std::fmt::Debug for GlobalStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalStores")
            .field("stores", &self.specs.keys())
            .finish()
    }
}

impl GlobalStores {
    /// An empty in-memory store for each global store of `topology`.
    pub fn for_topology(topology: &Topology) -> Arc<GlobalStores> {
        let specs: BTreeMap<String, GlobalStoreSpec> = topology
            .globals
            .iter()
            .map(|g| (g.name.clone(), g.clone()))
            .collect();
        let stores = specs
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    Box::new(InMemoryStore::new(n.clone())) as Box<dyn KeyValueStore>,
                )
            })
            .collect();
        Arc::new(GlobalStores {
            specs,
            stores: Mutex::new(stores),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The topics the global stores are built from.
    pub fn topics(&self) -> Vec<String> {
        self.specs.values().map(|s| s.topic.clone()).collect()
    }

    /// Whether `topic` feeds a global store.
    pub fn reads(&self, topic: &str) -> bool {
        self.specs.values().any(|s| s.topic == topic)
    }

    /// Applies a record of `topic` to the stores it feeds.
    pub fn apply(&self, topic: &str, record: &Record) -> Result<(), ProcessError> {
        // A store write is one put or delete, and a global store is rebuilt from its topic on
        // every start: a poisoned lock is used as it is.
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        for spec in self.specs.values().filter(|s| s.topic == topic) {
            if let Some(store) = stores.get_mut(&spec.name) {
                (spec.updater)(store.as_mut(), record)?;
            }
        }
        Ok(())
    }

    /// Calls `f` with global store `name` (`None`: no such store).
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&dyn KeyValueStore) -> R) -> Option<R> {
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.get(name).map(|s| f(s.as_ref()))
    }

    /// `key`'s value in global store `name`.
    pub fn get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        self.with(name, |s| s.get(key))
            .ok_or_else(|| ProcessError::UnknownStore(name.to_string()))?
            .map_err(ProcessError::from)
    }
}

/// Keeps the global stores up to date: reads every partition of their topics from the start
/// (read_committed under exactly-once), marks `ready` once it has caught up with all of
/// them, and goes on until `stop`. A record the updater refuses is logged and skipped (the
/// topic is not ours to fix, and one bad record must not stop every task).
pub async fn run_global(
    globals: Arc<GlobalStores>,
    transport: Arc<dyn Transport>,
    read_committed: bool,
    poll_ms: i32,
    ready: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), rill_log::client::ClientError> {
    use std::sync::atomic::Ordering;
    let topics = globals.topics();
    let listed = Admin::new(Arc::clone(&transport)).list_topics().await?;
    let mut partitions = Vec::new();
    for t in &topics {
        let n = listed
            .iter()
            .find(|d| &d.name == t)
            .map(|d| d.partitions)
            .ok_or_else(|| {
                rill_log::client::ClientError::Unexpected(format!(
                    "the topic {t} of a global store does not exist"
                ))
            })?;
        partitions.extend((0..n).map(|p| TopicPartition::new(t.clone(), p)));
    }
    let mut consumer = Consumer::new(
        transport,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            fetch_max_wait_ms: poll_ms,
            isolation_level: if read_committed {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            },
            ..Default::default()
        },
    );
    consumer.assign(partitions.clone());
    while !stop.load(Ordering::SeqCst) {
        for r in consumer.poll().await? {
            let topic = r.topic.clone();
            let record = Record {
                key: r.key,
                value: r.value,
                timestamp: r.timestamp_ms,
                headers: r.headers,
                typed: None,
            };
            if let Err(e) = globals.apply(&topic, &record) {
                tracing::warn!(topic = &*topic, partition = r.partition, offset = r.offset, error = %e,
                    "skipping a record the global store cannot take");
            }
        }
        if !ready.load(Ordering::SeqCst)
            && partitions
                .iter()
                .all(|tp| consumer.lag(tp).is_some_and(|l| l == 0))
        {
            ready.store(true, Ordering::SeqCst);
        }
        if partitions.is_empty() {
            ready.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(poll_ms.max(1) as u64)).await;
        }
    }
    consumer.close().await?;
    Ok(())
}
