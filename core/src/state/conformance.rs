//! The conformance suite every state store backend must pass: exact answers for key-value,
//! window, session and timestamped operations. A backend's tests call [`run_all`] with a
//! function that opens a fresh, empty store (and the persistent ones also check reopening).
//! Panics (as a test does) on the first difference.

use super::{
    KeyValueStore, Session, SessionStore, TimestampedKeyValueStore, ValueAndTimestamp, WindowStore,
};

fn kv(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Runs every check, each on a fresh store from `open(name)`.
pub fn run_all<S: KeyValueStore>(open: &mut dyn FnMut(&str) -> S) {
    key_value(open("kv"));
    ordering_is_unsigned_bytes(open("order"));
    window(open("window"));
    session(open("session"));
    timestamped(open("ts"));
    batch_writes(open("batch"));
}

/// `write_all` applies puts and deletes together, as single writes would.
pub fn batch_writes<S: KeyValueStore>(mut s: S) {
    s.put(b"gone", b"1").unwrap();
    s.put(b"kept", b"1").unwrap();
    s.write_all(vec![
        (b"gone".to_vec(), None),
        (b"new".to_vec(), Some(b"2".to_vec())),
        (b"kept".to_vec(), Some(b"3".to_vec())),
        (b"never".to_vec(), None),
        (Vec::new(), Some(b"empty key".to_vec())),
    ])
    .unwrap();
    assert_eq!(
        s.all().unwrap(),
        kv(&[("", "empty key"), ("kept", "3"), ("new", "2")])
    );
}

pub fn key_value<S: KeyValueStore>(mut s: S) {
    assert_eq!(s.get(b"a").unwrap(), None);
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "3"), ("ab", "12"), ("d", "4")] {
        s.put(k.as_bytes(), v.as_bytes()).unwrap();
    }
    s.put(b"c", b"33").unwrap();
    assert_eq!(s.get(b"c").unwrap(), Some(b"33".to_vec()), "overwrite");
    assert_eq!(
        s.delete(b"d").unwrap(),
        Some(b"4".to_vec()),
        "delete returns the old value"
    );
    assert_eq!(s.delete(b"d").unwrap(), None);
    assert_eq!(s.get(b"d").unwrap(), None);
    assert_eq!(
        s.all().unwrap(),
        kv(&[("a", "1"), ("ab", "12"), ("b", "2"), ("c", "33")])
    );
    assert_eq!(
        s.range(b"ab", b"c").unwrap(),
        kv(&[("ab", "12"), ("b", "2"), ("c", "33")]),
        "range is inclusive at both ends"
    );
    assert!(
        s.range(b"c", b"a").unwrap().is_empty(),
        "from > to is empty"
    );
    assert_eq!(
        s.prefix_scan(b"a").unwrap(),
        kv(&[("a", "1"), ("ab", "12")])
    );
    assert!(s.prefix_scan(b"z").unwrap().is_empty());
    s.put(b"", b"empty key").unwrap();
    assert_eq!(s.get(b"").unwrap(), Some(b"empty key".to_vec()));
    s.put(b"e", b"").unwrap();
    assert_eq!(
        s.get(b"e").unwrap(),
        Some(Vec::new()),
        "an empty value is a value"
    );
    // A key too large for the backend is an error, never a panic.
    let huge = vec![b'x'; 70_000];
    if s.put(&huge, b"v").is_ok() {
        assert_eq!(s.get(&huge).unwrap(), Some(b"v".to_vec()));
        s.delete(&huge).unwrap();
    }
    s.flush().unwrap();
    assert!(s.approximate_num_entries() > 0);
}

pub fn ordering_is_unsigned_bytes<S: KeyValueStore>(mut s: S) {
    for k in [
        vec![0x80u8],
        vec![0x7f],
        vec![0xff, 0xff],
        vec![0xff],
        vec![0x00],
    ] {
        s.put(&k, b"x").unwrap();
    }
    let keys: Vec<Vec<u8>> = s.all().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![
            vec![0x00],
            vec![0x7f],
            vec![0x80],
            vec![0xff],
            vec![0xff, 0xff]
        ]
    );
    // A prefix of only 0xff bytes has no successor: the scan runs to the end.
    assert_eq!(s.prefix_scan(&[0xff]).unwrap().len(), 2);
}

pub fn window<S: KeyValueStore>(s: S) {
    let mut w = WindowStore::new(s, 100);
    w.put(b"k", Some(b"w0"), 0).unwrap();
    w.put(b"k", Some(b"w10"), 10).unwrap();
    w.put(b"k", Some(b"w20"), 20).unwrap();
    // A key that is a prefix of another does not see its windows.
    w.put(b"kk", Some(b"other"), 10).unwrap();
    w.put(b"j", Some(b"j-5"), -5).unwrap();
    assert_eq!(
        w.fetch(b"k", 5, 20).unwrap(),
        vec![(10, b"w10".to_vec()), (20, b"w20".to_vec())]
    );
    assert_eq!(w.fetch_one(b"k", 0).unwrap(), Some(b"w0".to_vec()));
    assert_eq!(
        w.fetch(b"j", -10, 0).unwrap(),
        vec![(-5, b"j-5".to_vec())],
        "negative window starts sort before positive ones"
    );
    let all: Vec<(Vec<u8>, i64)> = w
        .fetch_all(0, 10)
        .unwrap()
        .into_iter()
        .map(|(kw, _)| kw)
        .collect();
    assert_eq!(
        all,
        vec![
            (b"k".to_vec(), 0),
            (b"k".to_vec(), 10),
            (b"kk".to_vec(), 10)
        ]
    );
    w.put(b"k", None, 10).unwrap();
    assert_eq!(w.fetch_one(b"k", 10).unwrap(), None, "a null value deletes");
    // Retention 100: once a window at 150 is seen, windows at or before 50 are gone, and
    // writes to them are ignored.
    w.put(b"k", Some(b"w150"), 150).unwrap();
    assert_eq!(
        w.fetch(b"k", 0, 200).unwrap(),
        vec![(150, b"w150".to_vec())]
    );
    w.put(b"k", Some(b"late"), 40).unwrap();
    assert_eq!(w.fetch_one(b"k", 40).unwrap(), None);
    assert_eq!(w.purge_expired().unwrap(), 4);
    w.flush().unwrap();
}

pub fn session<S: KeyValueStore>(s: S) {
    let mut st = SessionStore::new(s);
    let sess = |start, end| Session {
        key: b"u".to_vec(),
        start,
        end,
    };
    st.put(&sess(0, 10), b"a").unwrap();
    st.put(&sess(20, 30), b"b").unwrap();
    st.put(&sess(50, 50), b"c").unwrap();
    st.put(
        &Session {
            key: b"uu".to_vec(),
            start: 0,
            end: 100,
        },
        b"other",
    )
    .unwrap();
    // Sessions a record at 25 with gap 5 merges with: end >= 20 and start <= 30.
    let found: Vec<(i64, i64)> = st
        .find_sessions(b"u", 20, 30)
        .unwrap()
        .into_iter()
        .map(|(s, _)| (s.start, s.end))
        .collect();
    assert_eq!(found, vec![(20, 30)]);
    let found: Vec<(i64, i64)> = st
        .find_sessions(b"u", 0, 100)
        .unwrap()
        .into_iter()
        .map(|(s, _)| (s.start, s.end))
        .collect();
    assert_eq!(found, vec![(0, 10), (20, 30), (50, 50)], "ordered by end");
    st.remove(&sess(20, 30)).unwrap();
    assert_eq!(st.find_sessions(b"u", 11, 49).unwrap().len(), 0);
    st.flush().unwrap();
}

pub fn timestamped<S: KeyValueStore>(s: S) {
    let mut t = TimestampedKeyValueStore::new(s);
    let v = ValueAndTimestamp {
        value: b"v".to_vec(),
        timestamp: -7,
    };
    t.put(b"k", &v).unwrap();
    assert_eq!(t.get(b"k").unwrap(), Some(v.clone()));
    assert_eq!(
        t.range(b"a", b"z").unwrap(),
        vec![(b"k".to_vec(), v.clone())]
    );
    assert_eq!(t.delete(b"k").unwrap(), Some(v));
    assert_eq!(t.get(b"k").unwrap(), None);
    t.flush().unwrap();
}
