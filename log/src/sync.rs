//! Lock poisoning, decided once for the crate. A panic while a lock is held may leave what it
//! guards half-updated, so a poisoned lock is never used as if nothing happened:
//!
//! - state with a durable source is rebuilt from it, as a restart would ([`relock`]): the
//!   transaction coordinator and committed offsets from their internal topics, topic metadata
//!   from `metadata/topics.json`, the producer-id block from its file, group membership from
//!   nothing (members rejoin, as after a restart);
//! - a partition's log stops taking writes and fails them with KAFKA_STORAGE_ERROR until the
//!   broker restarts and recovers it from disk (see `storage::log`);
//! - a client whose state was poisoned closes itself (see `client::producer`);
//! - values updated in a single step (a random generator's state, a task handle being taken,
//!   a map entry inserted or removed, a stop flag) cannot be half-updated, and are used as
//!   they are ([`plain`], [`read`], [`write`]).

use std::ops::DerefMut;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`; if a panic poisoned it, `rebuild` restores the state from its durable source
/// first (and the poison is cleared).
pub(crate) fn relock<'a, T>(
    m: &'a Mutex<T>,
    what: &str,
    rebuild: impl FnOnce(&mut T),
) -> MutexGuard<'a, T> {
    m.lock().unwrap_or_else(|poisoned| {
        let g = rebuilt(poisoned, what, rebuild);
        m.clear_poison();
        g
    })
}

/// [`relock`] for reading a `RwLock`: a poisoned one is rebuilt under the write lock first.
pub(crate) fn reread<'a, T>(
    m: &'a RwLock<T>,
    what: &str,
    rebuild: impl FnOnce(&mut T),
) -> RwLockReadGuard<'a, T> {
    if m.is_poisoned() {
        drop(rewrite(m, what, rebuild));
    }
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// [`relock`] for writing a `RwLock`.
pub(crate) fn rewrite<'a, T>(
    m: &'a RwLock<T>,
    what: &str,
    rebuild: impl FnOnce(&mut T),
) -> RwLockWriteGuard<'a, T> {
    m.write().unwrap_or_else(|poisoned| {
        let g = rebuilt(poisoned, what, rebuild);
        m.clear_poison();
        g
    })
}

/// The guard of a poisoned lock, with its state rebuilt.
fn rebuilt<G: DerefMut>(
    poisoned: PoisonError<G>,
    what: &str,
    rebuild: impl FnOnce(&mut G::Target),
) -> G {
    tracing::error!(
        what,
        "a panic poisoned this lock; rebuilding from durable state"
    );
    let mut g = poisoned.into_inner();
    rebuild(&mut g);
    g
}

/// Locks a value that is only ever updated in one step, so a panic cannot leave it
/// half-updated and a poisoned lock is safe to use.
pub(crate) fn plain<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`plain`] for reading a `RwLock` over a value only updated in one step.
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// [`plain`] for writing a `RwLock` over a value only updated in one step.
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// Runs disk work `f` so that it cannot stall the async workers' other tasks. On a
/// multi-threaded runtime it runs right here, this worker handing its other tasks to another
/// (`block_in_place`): no thread hop, which on a virtual machine costs tens of microseconds
/// per wake-up. Elsewhere (a current-thread runtime) on tokio's blocking threads.
pub(crate) async fn off_the_workers<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        Ok(tokio::task::block_in_place(f))
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_rebuilt_once_then_clean() {
        let m = std::sync::Arc::new(Mutex::new(vec![1, 2, 3]));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            g.push(4); // half an update
            panic!("inside the critical section");
        })
        .join();
        assert!(m.is_poisoned());
        let mut rebuilt = 0;
        let g = relock(&m, "test", |v| {
            rebuilt += 1;
            *v = vec![1, 2, 3];
        });
        assert_eq!(*g, vec![1, 2, 3]);
        drop(g);
        assert!(!m.is_poisoned());
        drop(relock(&m, "test", |_| rebuilt += 1));
        assert_eq!(rebuilt, 1);

        let r = std::sync::Arc::new(RwLock::new(7));
        let r2 = std::sync::Arc::clone(&r);
        let _ = std::thread::spawn(move || {
            let _g = r2.write().unwrap();
            panic!("poison");
        })
        .join();
        assert_eq!(*reread(&r, "test", |v| *v = 8), 8);
        assert!(!r.is_poisoned());
    }
}
