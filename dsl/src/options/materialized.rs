//! `Materialized`: where an operator's store lives, what it is called (and so its changelog),
//! whether it caches, and how long a windowed store keeps its windows.

use rill_core::topology::{StoreBackend, StoreSpec};

use crate::options::millis;

/// Where an operator's store lives and how it is named (Kafka Streams' `Materialized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialized {
    pub(crate) name: Option<String>,
    pub(crate) backend: StoreBackend,
    pub(crate) logged: bool,
    pub(crate) retention_ms: Option<i64>,
    pub(crate) caching: bool,
}

impl Default for Materialized {
    fn default() -> Self {
        Materialized {
            name: None,
            backend: StoreBackend::Fjall,
            logged: true,
            retention_ms: None,
            caching: true,
        }
    }
}

impl Materialized {
    /// A store named `name` (queryable by that name; its changelog is
    /// `<application.id>-<name>-changelog`).
    pub fn named(name: impl Into<String>) -> Self {
        Materialized {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    /// Keep the store in memory (restored from its changelog on start).
    pub fn in_memory(mut self) -> Self {
        self.backend = StoreBackend::InMemory;
        self
    }

    /// A store backend: fjall (the default), in memory, or RocksDB (rill-core's `rocksdb`
    /// feature).
    pub fn with_backend(mut self, backend: StoreBackend) -> Self {
        self.backend = backend;
        self
    }

    /// No changelog: the store is lost with the task's local state.
    pub fn with_logging_disabled(mut self) -> Self {
        self.logged = false;
        self
    }

    /// Forward every update at once instead of the latest per key at each commit (the record
    /// cache, on by default for count / reduce / aggregate over streams and time windows;
    /// see `crate::cache`).
    pub fn with_caching_disabled(mut self) -> Self {
        self.caching = false;
        self
    }

    /// For window and session stores: keep windows this long behind stream time (at least
    /// the window size plus grace, which is the default).
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention_ms = Some(millis(retention));
        self
    }

    pub(crate) fn spec(&self, name: String, window_retention_ms: Option<i64>) -> StoreSpec {
        StoreSpec {
            name,
            backend: self.backend,
            logged: self.logged,
            window_retention_ms,
        }
    }
}
