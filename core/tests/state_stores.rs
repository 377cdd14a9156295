//! Every state store backend passes the conformance suite, agrees with a model under random
//! operations, and the persistent one keeps flushed state across a reopen.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rill_core::state::changelog::LoggedStore;
use rill_core::state::conformance;
use rill_core::state::fjall_store::FjallStore;
use rill_core::state::memory::InMemoryStore;
use rill_core::state::KeyValueStore;
use rill_log::types::TopicPartition;

#[test]
fn in_memory_passes_the_conformance_suite() {
    conformance::run_all(&mut |name| InMemoryStore::new(name));
}

#[test]
fn fjall_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |name| FjallStore::open(&dir.path().join(name), name).unwrap());
}

fn changelog() -> TopicPartition {
    TopicPartition::new("app-m-changelog", 0)
}

/// The logged layer (uncommitted changes in an overlay, read through) answers as a store does,
/// before and after its changes are applied.
#[test]
fn logged_stores_pass_the_conformance_suite() {
    conformance::run_all(&mut |name| LoggedStore::new(InMemoryStore::new(name), changelog()));
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |name| {
        let fjall = FjallStore::open(&dir.path().join(name), name).unwrap();
        let mut s = LoggedStore::new(fjall, changelog());
        // Some state already applied under the overlay.
        s.put(b"zz-applied", b"1").unwrap();
        s.apply_uncommitted().unwrap();
        s.delete(b"zz-applied").unwrap();
        s
    });
    // Writing behind: committed state waits in memory over the store.
    conformance::run_all(&mut |name| {
        let fjall = FjallStore::open(&dir.path().join(format!("{name}-wb")), name).unwrap();
        let mut s = LoggedStore::new(fjall, changelog()).with_write_behind(usize::MAX);
        s.put(b"zz-committed", b"1").unwrap();
        s.apply_uncommitted().unwrap();
        s.delete(b"zz-committed").unwrap();
        s
    });
}

#[cfg(feature = "rocksdb")]
mod rocksdb {
    use super::*;
    use rill_core::state::rocksdb_store::RocksDbStore;

    #[test]
    fn rocksdb_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run_all(&mut |name| RocksDbStore::open(&dir.path().join(name), name).unwrap());
    }

    #[test]
    fn rocksdb_keeps_flushed_state_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = RocksDbStore::open(dir.path(), "counts").unwrap();
            s.put(b"a", b"1").unwrap();
            s.put(b"b", b"2").unwrap();
            s.delete(b"a").unwrap();
            s.flush().unwrap();
        }
        let s = RocksDbStore::open(dir.path(), "counts").unwrap();
        assert_eq!(s.all().unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn rocksdb_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            check_against_model(&mut RocksDbStore::open(dir.path(), "m").unwrap(), &ops, false);
            let dir = tempfile::tempdir().unwrap();
            let db = RocksDbStore::open(dir.path(), "m").unwrap();
            check_against_model(&mut LoggedStore::new(db, changelog()), &ops, true);
        }
    }
}

#[test]
fn fjall_keeps_flushed_state_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FjallStore::open(dir.path(), "counts").unwrap();
        s.put(b"a", b"1").unwrap();
        s.put(b"b", b"2").unwrap();
        s.delete(b"a").unwrap();
        s.flush().unwrap();
    }
    let s = FjallStore::open(dir.path(), "counts").unwrap();
    assert_eq!(s.all().unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
    Prefix(Vec<u8>),
    /// Uncommitted changes reach local state (a commit).
    Apply,
    /// Uncommitted changes are dropped (an aborted transaction).
    Discard,
    /// The key leaves the store without a changelog record (retention).
    Expire(Vec<u8>),
    /// Committed changes held in memory reach the store below; uncommitted ones stay.
    Flush,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct bytes so keys collide, share prefixes and hit 0xff edges.
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(0x7f), Just(0xff)],
        0..4,
    )
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    // Mostly short; now and then past what a changelogged store holds inline (30 bytes).
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..3),
        1 => proptest::collection::vec(any::<u8>(), 29..34),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        1 => (key(), key()).prop_map(|(a, b)| Op::Range(a, b)),
        1 => key().prop_map(Op::Prefix),
        1 => Just(Op::Apply),
        1 => Just(Op::Discard),
        1 => key().prop_map(Op::Expire),
        1 => Just(Op::Flush),
    ]
}

/// With `logged`, the store keeps uncommitted changes apart (`Discard` goes back to the last
/// `Apply`) and logs them: the changelog records since the last commit, laid over the
/// committed state, give the model (but for keys expired since, which are not logged); a
/// plain store writes through and ignores both.
fn check_against_model<S: KeyValueStore>(store: &mut S, ops: &[Op], logged: bool) {
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut committed = model.clone();
    // Keys expired since the last commit and not written since.
    let mut expired = std::collections::BTreeSet::new();
    for op in ops {
        if let Op::Put(k, _) | Op::Delete(k) = op {
            expired.remove(k);
        }
        match op {
            Op::Apply => {
                if logged {
                    // What a commit sends (taken, as `Bytes`) is what the store lists.
                    let listed = store.uncommitted();
                    let taken: Vec<(Vec<u8>, Option<Vec<u8>>)> = store
                        .take_uncommitted()
                        .into_iter()
                        .map(|(k, v)| (k.to_vec(), v.map(|v| v.to_vec())))
                        .collect();
                    assert_eq!(taken, listed, "records taken for the changelog");
                    let mut replayed = committed.clone();
                    for (k, v) in taken {
                        match v {
                            Some(v) => replayed.insert(k, v),
                            None => replayed.remove(&k),
                        };
                    }
                    for k in &expired {
                        replayed.remove(k);
                    }
                    assert_eq!(replayed, model, "changelog records since the commit");
                }
                store.apply_uncommitted().unwrap();
                committed = model.clone();
                expired.clear();
                assert_eq!(store.uncommitted_bytes(), 0);
            }
            Op::Discard => {
                store.discard_uncommitted();
                if logged {
                    model = committed.clone();
                }
                expired.clear();
            }
            Op::Expire(k) => {
                store.expire(k).unwrap();
                model.remove(k);
                expired.insert(k.clone());
                if !logged {
                    committed.remove(k);
                }
            }
            Op::Flush => store.flush().unwrap(),
            Op::Put(k, v) => {
                // Every way of writing: as new (when it is), handing the value over, or
                // by reference.
                if !model.contains_key(k) && v.len() == 1 {
                    store.put_new(k, v.clone()).unwrap();
                } else if v.len() % 2 == 0 {
                    store.put_owned(k, v.clone()).unwrap();
                } else {
                    store.put(k, v).unwrap();
                }
                model.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => assert_eq!(store.delete(k).unwrap(), model.remove(k)),
            Op::Range(a, b) => {
                let want: Vec<(Vec<u8>, Vec<u8>)> = if a > b {
                    Vec::new()
                } else {
                    model
                        .range(a.clone()..=b.clone())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                };
                assert_eq!(store.range(a, b).unwrap(), want);
            }
            Op::Prefix(p) => {
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(p))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(store.prefix_scan(p).unwrap(), want);
            }
        }
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
    assert_eq!(store.all().unwrap(), all);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn backends_agree_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        check_against_model(&mut InMemoryStore::new("m"), &ops, false);
        let dir = tempfile::tempdir().unwrap();
        check_against_model(&mut FjallStore::open(dir.path(), "m").unwrap(), &ops, false);
        let mut logged = LoggedStore::new(InMemoryStore::new("m"), changelog());
        check_against_model(&mut logged, &ops, true);
        let dir = tempfile::tempdir().unwrap();
        let fjall = FjallStore::open(dir.path(), "m").unwrap();
        check_against_model(&mut LoggedStore::new(fjall, changelog()), &ops, true);
        // Writing behind: committed changes held back (all of them, or spilled now and then).
        for bound in [usize::MAX, 150] {
            let dir = tempfile::tempdir().unwrap();
            let fjall = FjallStore::open(dir.path(), "m").unwrap();
            let mut s = LoggedStore::new(fjall, changelog()).with_write_behind(bound);
            check_against_model(&mut s, &ops, true);
            // The same with overlays ordered from the start (a store read by range).
            let dir = tempfile::tempdir().unwrap();
            let fjall = FjallStore::open(dir.path(), "m").unwrap();
            let mut s = read_by_range(LoggedStore::new(fjall, changelog()).with_write_behind(bound));
            check_against_model(&mut s, &ops, true);
        }
    }
}

/// `s` after enough range reads over both of its overlays (holding a key outside the model's
/// alphabet, deleted again) that they are ordered from now on.
fn read_by_range<S: KeyValueStore>(mut s: LoggedStore<S>) -> LoggedStore<S> {
    let outside = [9u8];
    s.put(&outside, b"x").unwrap();
    s.apply_uncommitted().unwrap();
    s.put(&outside, b"y").unwrap();
    for _ in 0..16 {
        assert_eq!(s.all().unwrap(), vec![(outside.to_vec(), b"y".to_vec())]);
    }
    s.delete(&outside).unwrap();
    s.apply_uncommitted().unwrap();
    assert_eq!(s.all().unwrap(), Vec::new());
    s
}

/// Keys in the store on disk after a flush, read back by reopening it.
fn keys_on_disk(s: LoggedStore<FjallStore>, path: &std::path::Path) -> Vec<Vec<u8>> {
    let mut s = s;
    s.flush().unwrap();
    drop(s);
    let reopened = FjallStore::open(path, "w").unwrap();
    reopened
        .all()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// A key put as new and expired before the write-behind wrote it never reaches the store;
/// a key the store still holds below a deletion is removed there, however it was put
/// again afterwards.
#[test]
fn new_keys_expired_before_they_are_written_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w");
    let open = || {
        LoggedStore::new(FjallStore::open(&path, "w").unwrap(), changelog())
            .with_write_behind(usize::MAX)
    };
    let mut s = open();
    s.put_new(b"fresh", b"1".to_vec()).unwrap();
    s.apply_uncommitted().unwrap();
    s.put(b"fresh", b"2").unwrap();
    s.apply_uncommitted().unwrap();
    assert_eq!(s.unwritten(), 1);
    s.expire(b"fresh").unwrap();
    s.apply_uncommitted().unwrap();
    assert_eq!(s.unwritten(), 0, "created and expired: nothing to write");
    assert_eq!(s.get(b"fresh").unwrap(), None);
    // On disk before: deleted, then put as new again, then expired.
    s.put(b"old", b"1").unwrap();
    s.put(b"again", b"1").unwrap();
    s.apply_uncommitted().unwrap();
    s.flush().unwrap();
    s.delete(b"old").unwrap();
    s.put_new(b"old", b"2".to_vec()).unwrap();
    s.apply_uncommitted().unwrap();
    s.expire(b"old").unwrap();
    // Expired, then put as new within one commit: the store below still has the value.
    s.expire(b"again").unwrap();
    s.put_new(b"again", b"2".to_vec()).unwrap();
    s.apply_uncommitted().unwrap();
    s.expire(b"again").unwrap();
    s.apply_uncommitted().unwrap();
    assert_eq!(keys_on_disk(s, &path), Vec::<Vec<u8>>::new());
}

/// A persistent store writes committed changes behind: they stay in memory (and are read
/// there) until they outgrow the bound or the store is flushed; the store on disk never runs
/// ahead of what was committed, and a flush leaves it complete.
#[test]
fn committed_changes_are_written_behind_until_a_flush_or_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w");
    let mut s = LoggedStore::new(FjallStore::open(&path, "w").unwrap(), changelog())
        .with_write_behind(1 << 20);
    for round in 0..3u8 {
        s.put(b"counted", &[round]).unwrap();
        s.put(&[b'k', round], b"v").unwrap();
        s.apply_uncommitted().unwrap();
    }
    s.expire(b"k\x00").unwrap();
    s.apply_uncommitted().unwrap();
    // One entry per key, however many commits wrote it.
    assert_eq!(s.unwritten(), 4);
    assert_eq!(s.get(b"counted").unwrap(), Some(vec![2]));
    assert_eq!(s.get(b"k\x00").unwrap(), None);
    // An abort keeps what was committed before it.
    s.put(b"counted", b"aborted").unwrap();
    s.discard_uncommitted();
    assert_eq!(s.get(b"counted").unwrap(), Some(vec![2]));
    s.flush().unwrap();
    assert_eq!(s.unwritten(), 0);
    drop(s);
    let reopened = FjallStore::open(&path, "w").unwrap();
    let keys: Vec<Vec<u8>> = reopened
        .all()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        vec![b"counted".to_vec(), b"k\x01".to_vec(), b"k\x02".to_vec()]
    );
    assert_eq!(reopened.get(b"counted").unwrap(), Some(vec![2]));
    // Past the bound, a commit writes everything it held.
    let mut s = LoggedStore::new(reopened, changelog()).with_write_behind(100);
    s.put(b"a", b"1").unwrap();
    s.apply_uncommitted().unwrap();
    assert_eq!(s.unwritten(), 1);
    s.put(b"b", &[0; 64]).unwrap();
    s.apply_uncommitted().unwrap();
    assert_eq!(s.unwritten(), 0);
    assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
}

/// Expiring removes an entry from local state at the commit without a changelog record;
/// a write after the expiry wins, and an abort forgets the expiry.
#[test]
fn expired_entries_leave_local_state_at_the_commit_without_changelog_records() {
    let dir = tempfile::tempdir().unwrap();
    let fjall = FjallStore::open(&dir.path().join("w"), "w").unwrap();
    let mut s = LoggedStore::new(fjall, changelog());
    for k in [&b"old"[..], b"rewritten", b"kept"] {
        s.put(k, b"1").unwrap();
    }
    s.apply_uncommitted().unwrap();
    s.put(b"fresh", b"2").unwrap();
    s.expire(b"old").unwrap();
    s.expire(b"fresh").unwrap();
    s.expire(b"rewritten").unwrap();
    s.put(b"rewritten", b"3").unwrap();
    assert_eq!(
        s.uncommitted(),
        vec![(b"rewritten".to_vec(), Some(b"3".to_vec()))],
        "an expiry is never logged, and drops the uncommitted write it expires"
    );
    s.apply_uncommitted().unwrap();
    let keys: Vec<Vec<u8>> = s.all().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"kept".to_vec(), b"rewritten".to_vec()]);
    assert_eq!(s.get(b"rewritten").unwrap(), Some(b"3".to_vec()));
    // An aborted transaction's expiries are forgotten with its writes.
    s.expire(b"kept").unwrap();
    s.discard_uncommitted();
    s.apply_uncommitted().unwrap();
    assert_eq!(s.get(b"kept").unwrap(), Some(b"1".to_vec()));
    // Erasing, unlike expiring, is a logged deletion.
    s.erase(b"kept").unwrap();
    assert_eq!(s.uncommitted(), vec![(b"kept".to_vec(), None)]);
    assert_eq!(s.get(b"kept").unwrap(), None);
}
