//! Changelogged stores over an embedded broker: a restore gives back identical state, the
//! write cache logs one record per key per commit, and a checkpoint makes a restart replay
//! only the tail of the changelog.

use std::sync::Arc;

use rill_core::state::changelog::{read_checkpoint, write_checkpoint, LoggedStore};
use rill_core::state::fjall_store::FjallStore;
use rill_core::state::memory::InMemoryStore;
use rill_core::state::KeyValueStore;
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{Admin, EmbeddedTransport, Producer, ProducerConfig, Transport};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

async fn setup(dir: &std::path::Path) -> (Arc<Broker>, Arc<dyn Transport>, TopicPartition) {
    let mut config = BrokerConfig::new(dir.join("broker"));
    config.offsets_topic_num_partitions = 1;
    config.transaction_state_num_partitions = 1;
    let b = Arc::new(Broker::open(config, Arc::new(SystemClock)).unwrap());
    let t: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&b), "app"));
    Admin::new(Arc::clone(&t))
        .create_topic("app-counts-changelog", 1, &[("cleanup.policy", "compact")])
        .await
        .unwrap();
    (b, t, TopicPartition::new("app-counts-changelog", 0))
}

fn producer(t: &Arc<dyn Transport>) -> Producer {
    Producer::new(
        Arc::clone(t),
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_gives_back_identical_state_and_the_cache_logs_one_record_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t, tp) = setup(dir.path()).await;
    let p = producer(&t);
    let mut store = LoggedStore::new(InMemoryStore::new("counts"), tp.clone());
    // 1000 updates of 50 keys, a few deletes: 50 records reach the changelog.
    for i in 0..1000u32 {
        let key = format!("k{}", i % 50);
        store.put(key.as_bytes(), &i.to_be_bytes()).unwrap();
    }
    store.delete(b"k7").unwrap();
    assert_eq!(store.pending(), 50);
    let end = store.commit(&p).await.unwrap();
    assert_eq!(end, Some(50));
    assert_eq!(store.pending(), 0);
    // Another commit round: an update and a delete.
    store.put(b"k1", b"new").unwrap();
    store.delete(b"k2").unwrap();
    assert_eq!(store.commit(&p).await.unwrap(), Some(52));
    // A fresh store restored from the changelog equals the original.
    let mut restored = LoggedStore::new(InMemoryStore::new("counts"), tp.clone());
    let mut progress = Vec::new();
    let report = restored
        .restore(Arc::clone(&t), None, |at, end| progress.push((at, end)))
        .await
        .unwrap();
    assert_eq!(
        (report.from_offset, report.end_offset, report.records),
        (0, 52, 52)
    );
    assert_eq!(progress.last(), Some(&(52, 52)));
    assert_eq!(restored.all().unwrap(), store.all().unwrap());
    assert_eq!(restored.get(b"k7").unwrap(), None);
    assert_eq!(restored.get(b"k1").unwrap(), Some(b"new".to_vec()));
    p.close().await;
    b.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_restores_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (b, t, tp) = setup(dir.path()).await;
    let state = dir.path().join("state");
    let p = producer(&t);
    {
        let mut store = LoggedStore::new(FjallStore::open(&state, "counts").unwrap(), tp.clone());
        for i in 0..30u32 {
            store.put(format!("k{i}").as_bytes(), b"1").unwrap();
        }
        let end = store.commit(&p).await.unwrap().unwrap();
        write_checkpoint(&state, "counts", end).unwrap();
    }
    // Another instance (elsewhere) moved the changelog on: 5 more changes.
    let mut other = LoggedStore::new(InMemoryStore::new("counts"), tp.clone());
    for i in 0..5u32 {
        other.put(format!("k{i}").as_bytes(), b"2").unwrap();
    }
    other.commit(&p).await.unwrap();
    // The restart opens the local state and replays only from the checkpoint.
    let checkpoint = read_checkpoint(&state, "counts");
    assert_eq!(checkpoint, Some(30));
    let mut store = LoggedStore::new(FjallStore::open(&state, "counts").unwrap(), tp.clone());
    let report = store
        .restore(Arc::clone(&t), checkpoint, |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.from_offset, report.records), (30, 5));
    let all = store.all().unwrap();
    assert_eq!(all.len(), 30);
    assert_eq!(store.get(b"k0").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.get(b"k29").unwrap(), Some(b"1".to_vec()));
    // Without the checkpoint everything is replayed, to the same state.
    let mut fresh = LoggedStore::new(InMemoryStore::new("counts"), tp);
    let full = fresh.restore(t, None, |_, _| {}).await.unwrap();
    assert_eq!(full.records, 35);
    assert_eq!(fresh.all().unwrap(), all);
    p.close().await;
    b.close().unwrap();
}

#[test]
fn an_unreadable_checkpoint_means_a_full_restore() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.checkpoint"), "not a number").unwrap();
    assert_eq!(read_checkpoint(dir.path(), "s"), None);
    write_checkpoint(dir.path(), "s", 42).unwrap();
    assert_eq!(read_checkpoint(dir.path(), "s"), Some(42));
    let mut m = InMemoryStore::new("x");
    m.put(b"a", b"b").unwrap();
    assert_eq!(m.approximate_num_entries(), 1);
}
