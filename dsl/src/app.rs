//! The application handle (Kafka Streams' `KafkaStreams`): starts a built topology on a
//! transport (an embedded log or a broker over TCP), reports its state to a listener,
//! answers interactive queries against its local stores, and closes it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_core::runtime::{KafkaStreams, StreamsConfig, StreamsError};
use rill_core::state::{framed_key, split_framed, ts_bytes, ts_from, KeyValueStore};
use rill_log::client::Transport;

use crate::graph::{StoreInfo, StoreKind};
use crate::ops::records::decode_timestamped;
use crate::serdes::{Data, SerdeRef};
use crate::BuiltTopology;

/// An application's state (Kafka Streams' `KafkaStreams.State`, without REBALANCING: rill's
/// runtime rebalances inside RUNNING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    PendingShutdown,
    NotRunning,
    /// A stream thread stopped with an error (`close` returns it).
    Error,
}

type Listener = Arc<dyn Fn(State, State) + Send + Sync>;

/// Why an interactive query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no store named {0}")]
    UnknownStore(String),
    #[error("store {store} is a {actual:?} store, not {wanted:?}")]
    WrongKind {
        store: String,
        actual: StoreKind,
        wanted: StoreKind,
    },
    #[error("store {0} was queried with another key type than it holds")]
    WrongKeyType(String),
    #[error("the application is not running")]
    NotRunning,
    #[error(transparent)]
    Process(#[from] rill_core::processor::ProcessError),
    #[error(transparent)]
    Store(#[from] rill_core::state::StoreError),
    #[error("key: {0}")]
    Serde(#[from] crate::serdes::SerdeError),
}

/// A DSL application: create, `start`, query, `close`.
pub struct Streams {
    topology: BuiltTopology,
    transport: Arc<dyn Transport>,
    config: StreamsConfig,
    running: Option<KafkaStreams>,
    state: Arc<Mutex<State>>,
    listener: Option<Listener>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("application_id", &self.config.application_id)
            .field("state", &self.state())
            .finish()
    }
}

fn transition(state: &Mutex<State>, listener: &Option<Listener>, to: State) {
    let from = {
        // The state is replaced in one step: a poisoned lock is safe to use.
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *s, to)
    };
    if from != to {
        if let Some(l) = listener {
            l(from, to);
        }
    }
}

impl Streams {
    pub fn new(
        topology: BuiltTopology,
        transport: Arc<dyn Transport>,
        config: StreamsConfig,
    ) -> Self {
        Streams {
            topology,
            transport,
            config,
            running: None,
            state: Arc::new(Mutex::new(State::Created)),
            listener: None,
        }
    }

    /// Called with (old, new) at every state change.
    pub fn set_state_listener(&mut self, listener: impl Fn(State, State) + Send + Sync + 'static) {
        self.listener = Some(Arc::new(listener));
    }

    pub fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topology's description.
    pub fn describe(&self) -> String {
        self.topology.describe()
    }

    /// Starts processing (needs a tokio runtime). Calling it twice does nothing.
    pub fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let ks = KafkaStreams::start(
            self.topology.topology.clone(),
            Arc::clone(&self.transport),
            self.config.clone(),
        );
        self.running = Some(ks);
        transition(&self.state, &self.listener, State::Running);
    }

    /// Waits until a stream thread fails (state ERROR) or `timeout` passes; true on failure.
    pub async fn wait_for_error(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.check() == State::Error {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Updates the state from the runtime (RUNNING -> ERROR when a thread stopped).
    pub fn check(&mut self) -> State {
        if let Some(ks) = &self.running {
            if !ks.is_running() && self.state() == State::Running {
                transition(&self.state, &self.listener, State::Error);
            }
        }
        self.state()
    }

    /// The running runtime (metrics, tasks).
    pub fn runtime(&self) -> Option<&KafkaStreams> {
        self.running.as_ref()
    }

    /// The runtime's metrics now: records processed and dropped (by reason) per task and
    /// thread, latencies, restores. Empty before [`Streams::start`].
    pub fn metrics(&self) -> rill_core::metrics::MetricsSnapshot {
        self.running
            .as_ref()
            .map(KafkaStreams::metrics)
            .unwrap_or_default()
    }

    /// Stops at once without committing, as a crash would (see `KafkaStreams::abort`).
    pub fn abort(mut self) {
        if let Some(ks) = self.running.take() {
            ks.abort();
        }
        transition(&self.state, &self.listener, State::NotRunning);
    }

    /// Commits, closes every task, leaves the group.
    pub async fn close(mut self) -> Result<(), StreamsError> {
        let Some(ks) = self.running.take() else {
            transition(&self.state, &self.listener, State::NotRunning);
            return Ok(());
        };
        let failed = !ks.is_running();
        transition(&self.state, &self.listener, State::PendingShutdown);
        let r = ks.close().await;
        let end = if r.is_err() || failed {
            State::Error
        } else {
            State::NotRunning
        };
        transition(&self.state, &self.listener, end);
        r
    }

    fn info(&self, store: &str, wanted: StoreKind) -> Result<&StoreInfo, QueryError> {
        let info = self
            .topology
            .stores
            .get(store)
            .ok_or_else(|| QueryError::UnknownStore(store.to_string()))?;
        if info.kind != wanted {
            return Err(QueryError::WrongKind {
                store: store.to_string(),
                actual: info.kind,
                wanted,
            });
        }
        Ok(info)
    }

    fn keys<K: Data>(&self, store: &str, wanted: StoreKind) -> Result<SerdeRef<K>, QueryError> {
        self.info(store, wanted)?
            .keys
            .downcast_ref::<SerdeRef<K>>()
            .cloned()
            .ok_or_else(|| QueryError::WrongKeyType(store.to_string()))
    }

    async fn query<R>(
        &self,
        store: &str,
        f: impl FnMut(&dyn KeyValueStore) -> Result<R, QueryError>,
    ) -> Result<Vec<R>, QueryError> {
        let ks = self.running.as_ref().ok_or(QueryError::NotRunning)?;
        let mut f = f;
        ks.query_store(store, |_, s| f(s))
            .await
            .into_iter()
            .collect()
    }

    /// Interactive query: `key`'s value in key-value store `store` on this instance (its
    /// partition's task must run here), or in a global table's store.
    pub async fn get<K: Data, V: Data>(
        &self,
        store: &str,
        key: &K,
    ) -> Result<Option<V>, QueryError> {
        if self.topology.stores.get(store).map(|i| i.kind) == Some(StoreKind::Global) {
            let keys = self.keys::<K>(store, StoreKind::Global)?;
            let k = keys.serialize(key)?.unwrap_or_default();
            let ks = self.running.as_ref().ok_or(QueryError::NotRunning)?;
            let found = ks
                .query_global(store, |s| s.get(&k))
                .ok_or_else(|| QueryError::UnknownStore(store.to_string()))??;
            return Ok(found
                .map(|b| decode_timestamped::<V>(&b).map(|(v, _)| v))
                .transpose()?);
        }
        let keys = self.keys::<K>(store, StoreKind::KeyValue)?;
        let k = keys.serialize(key)?.unwrap_or_default();
        let found = self
            .query(store, |s| {
                s.get(&k)?
                    .map(|b| decode_timestamped::<V>(&b).map(|(v, _)| v))
                    .transpose()
                    .map_err(QueryError::from)
            })
            .await?;
        Ok(found.into_iter().flatten().next())
    }

    /// Interactive query: every entry of key-value store `store` on this instance, by key
    /// bytes.
    pub async fn all<K: Data, V: Data>(&self, store: &str) -> Result<Vec<(K, V)>, QueryError> {
        let keys = self.keys::<K>(store, StoreKind::KeyValue)?;
        let parts = self
            .query(store, |s| {
                let mut out = Vec::new();
                for (k, b) in s.all()? {
                    if let Some(key) = keys.deserialize(Some(&k))? {
                        out.push((key, decode_timestamped::<V>(&b)?.0));
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// Interactive query: `key`'s windows starting in `[from, to]` in window store `store`,
    /// as (window start, value), oldest first.
    pub async fn fetch_windows<K: Data, V: Data>(
        &self,
        store: &str,
        key: &K,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, V)>, QueryError> {
        let keys = self.keys::<K>(store, StoreKind::Window)?;
        let k = keys.serialize(key)?.unwrap_or_default();
        let bound = |t: i64| {
            let mut b = framed_key(&k);
            b.extend_from_slice(&ts_bytes(t));
            b
        };
        let parts = self
            .query(store, |s| {
                let mut out = Vec::new();
                for (sk, b) in s.range(&bound(from), &bound(to))? {
                    let start = split_framed(&sk).and_then(|(_, rest)| ts_from(rest));
                    if let Some(start) = start {
                        out.push((start, decode_timestamped::<V>(&b)?.0));
                    }
                }
                Ok(out)
            })
            .await?;
        let mut all: Vec<(i64, V)> = parts.into_iter().flatten().collect();
        all.sort_by_key(|(s, _)| *s);
        Ok(all)
    }
}
