//! Exact outputs of every join kind: stream-stream inner / left / outer over join windows
//! (unmatched records once their window closes, out-of-order ones at once), stream-table
//! inner / left, and table-table inner / left / outer with tombstones.

use std::collections::BTreeMap;
use std::time::Duration;

use rill_dsl::prelude::*;
use rill_dsl::testing::TestDriver;

fn s(x: &str) -> String {
    x.to_string()
}

fn opt(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| "null".into())
}

#[derive(Clone, Copy)]
enum Kind {
    Inner,
    Left,
    Outer,
}

fn stream_join(kind: Kind) -> TestDriver {
    let b = StreamsBuilder::new();
    let left = b.stream::<String, String>("left");
    let right = b.stream::<String, String>("right");
    let w = JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(10));
    let joined = match kind {
        Kind::Inner => left.join(&right, |l, r| format!("{l}+{r}"), w),
        Kind::Left => left.left_join(&right, |l, r| format!("{l}+{}", opt(r)), w),
        Kind::Outer => left.outer_join(&right, |l, r| format!("{}+{}", opt(l), opt(r)), w),
    };
    joined.to("out");
    TestDriver::new(&b.build().unwrap(), 1).unwrap()
}

fn run_stream_join(kind: Kind) -> Vec<(String, i64)> {
    run_stream_join_with(kind, false)
}

/// `exactly_once`: the join stores take each record's entry as new to them (`put_new`).
fn run_stream_join_with(kind: Kind, exactly_once: bool) -> Vec<(String, i64)> {
    let mut d = stream_join(kind);
    d.set_exactly_once(exactly_once);
    let k = s("k");
    for (topic, v, ts) in [
        ("left", "a", 0),
        ("right", "x", 5),
        ("left", "b", 30),
        ("right", "y", 50),
        ("left", "c", 100),
        // Out of order: its window [10, 30] closed long ago, and its store keeps nothing
        // before 81 (the latest left record, 100, less before + after + grace): not kept for
        // later right records, joined with what the right store still holds (nothing in
        // range) and, in left and outer joins, emitted alone at once (Kafka Streams 4).
        ("left", "d", 20),
        ("right", "z", 95),
    ] {
        d.pipe(topic, &k, &s(v), ts).unwrap();
    }
    d.read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.value.unwrap(), r.timestamp))
        .collect()
}

#[test]
fn stream_stream_inner_join_pairs_records_within_the_window() {
    assert_eq!(
        run_stream_join(Kind::Inner),
        vec![(s("a+x"), 5), (s("c+z"), 100)]
    );
}

#[test]
fn stream_stream_left_join_emits_unmatched_left_records_when_their_window_closes() {
    assert_eq!(
        run_stream_join(Kind::Left),
        vec![
            (s("a+x"), 5),
            (s("b+null"), 30),
            (s("d+null"), 20),
            (s("c+z"), 100)
        ]
    );
}

#[test]
fn stream_stream_outer_join_emits_unmatched_records_of_both_sides() {
    assert_eq!(
        run_stream_join(Kind::Outer),
        vec![
            (s("a+x"), 5),
            (s("b+null"), 30),
            (s("null+y"), 50),
            (s("d+null"), 20),
            (s("c+z"), 100)
        ]
    );
}

#[test]
fn stream_stream_joins_emit_the_same_under_exactly_once() {
    for kind in [Kind::Inner, Kind::Left, Kind::Outer] {
        assert_eq!(run_stream_join_with(kind, true), run_stream_join(kind));
    }
    assert_eq!(
        run_stream_join_with(Kind::Outer, true),
        vec![
            (s("a+x"), 5),
            (s("b+null"), 30),
            (s("null+y"), 50),
            (s("d+null"), 20),
            (s("c+z"), 100)
        ]
    );
}

#[test]
fn asymmetric_join_windows() {
    // Right records up to 5 before and 20 after the left record.
    let b = StreamsBuilder::new();
    let w = JoinWindows::of_time_difference_with_no_grace(Duration::ZERO)
        .before(Duration::from_millis(5))
        .after(Duration::from_millis(20));
    b.stream::<String, String>("left")
        .join(
            &b.stream::<String, String>("right"),
            |l, r| format!("{l}+{r}"),
            w,
        )
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    let k = s("k");
    d.pipe("right", &k, &s("early"), 96).unwrap();
    d.pipe("right", &k, &s("too-early"), 90).unwrap();
    d.pipe("left", &k, &s("L"), 100).unwrap();
    d.pipe("right", &k, &s("late"), 120).unwrap();
    d.pipe("right", &k, &s("too-late"), 121).unwrap();
    let out: Vec<(String, i64)> = d
        .read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.value.unwrap(), r.timestamp))
        .collect();
    assert_eq!(out, vec![(s("L+early"), 100), (s("L+late"), 120)]);
}

#[test]
fn stream_table_joins_look_up_the_current_value() {
    let b = StreamsBuilder::new();
    let table = b.table::<String, String>("table");
    let stream = b.stream::<String, String>("stream");
    stream
        .join_table(&table, |v, t| format!("{v}+{t}"))
        .to("inner");
    stream
        .left_join_table(&table, |v, t| format!("{v}+{}", opt(t)))
        .to("left");
    let mut d = TestDriver::new(&b.build().unwrap(), 2).unwrap();
    d.pipe("table", &s("k1"), &s("A"), 0).unwrap();
    d.pipe("stream", &s("k1"), &s("v1"), 1).unwrap();
    d.pipe("stream", &s("k2"), &s("v2"), 2).unwrap();
    d.pipe_tombstone("table", &s("k1"), 3).unwrap();
    d.pipe("stream", &s("k1"), &s("v3"), 4).unwrap();
    d.pipe("table", &s("k1"), &s("B"), 5).unwrap();
    d.pipe("stream", &s("k1"), &s("v4"), 6).unwrap();
    let read = |d: &mut TestDriver, t: &str| -> Vec<(String, String, i64)> {
        d.read::<String, String>(t)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value.unwrap(), r.timestamp))
            .collect()
    };
    assert_eq!(
        read(&mut d, "inner"),
        vec![(s("k1"), s("v1+A"), 1), (s("k1"), s("v4+B"), 6)]
    );
    assert_eq!(
        read(&mut d, "left"),
        vec![
            (s("k1"), s("v1+A"), 1),
            (s("k2"), s("v2+null"), 2),
            (s("k1"), s("v3+null"), 4),
            (s("k1"), s("v4+B"), 6)
        ]
    );
}

fn table_join(kind: Kind) -> Vec<(Option<String>, i64)> {
    let b = StreamsBuilder::new();
    let left = b.table::<String, String>("left");
    let right = b.table::<String, String>("right");
    let joined = match kind {
        Kind::Inner => left.join(&right, |l, r| format!("{l}+{r}")),
        Kind::Left => left.left_join(&right, |l, r| format!("{l}+{}", opt(r))),
        Kind::Outer => left.outer_join(&right, |l, r| format!("{}+{}", opt(l), opt(r))),
    };
    joined.to_stream().to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    let k = s("k");
    d.pipe("left", &k, &s("a"), 1).unwrap();
    d.pipe("right", &k, &s("x"), 2).unwrap();
    d.pipe("left", &k, &s("b"), 3).unwrap();
    // A repeat is forwarded and joined again, as Kafka Streams forwards every update of a
    // source table.
    d.pipe("left", &k, &s("b"), 3).unwrap();
    d.pipe_tombstone("left", &k, 4).unwrap();
    d.pipe_tombstone("right", &k, 5).unwrap();
    d.read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.value, r.timestamp))
        .collect()
}

#[test]
fn table_table_inner_join() {
    assert_eq!(
        table_join(Kind::Inner),
        vec![
            (Some(s("a+x")), 2),
            (Some(s("b+x")), 3),
            (Some(s("b+x")), 3),
            (None, 4)
        ]
    );
}

#[test]
fn table_table_left_join() {
    assert_eq!(
        table_join(Kind::Left),
        vec![
            (Some(s("a+null")), 1),
            (Some(s("a+x")), 2),
            (Some(s("b+x")), 3),
            (Some(s("b+x")), 3),
            (None, 4)
        ]
    );
}

#[test]
fn table_table_outer_join() {
    assert_eq!(
        table_join(Kind::Outer),
        vec![
            (Some(s("a+null")), 1),
            (Some(s("a+x")), 2),
            (Some(s("b+x")), 3),
            (Some(s("b+x")), 3),
            (Some(s("null+x")), 4),
            (None, 5)
        ]
    );
}

#[test]
fn joined_topics_must_be_copartitioned() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("orders")
        .join_table(&b.table::<String, String>("customers"), |o, c| {
            format!("{o}{c}")
        })
        .to("out");
    let t = b.build().unwrap();
    let counts = BTreeMap::from([(s("orders"), 4), (s("customers"), 2)]);
    let err = t.topology.check_sources(&counts).unwrap_err();
    assert!(err.to_string().contains("orders has 4"), "{err}");
    let ok = BTreeMap::from([(s("orders"), 4), (s("customers"), 4)]);
    t.topology.check_sources(&ok).unwrap();
}

#[test]
fn stream_global_table_joins_by_a_computed_key() {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Order {
        customer: String,
        amount: i64,
    }
    let b = StreamsBuilder::new();
    let customers = b.global_table::<String, String>("customers");
    let orders = b.stream::<String, Order>("orders"); // key: order id
    orders
        .join_global(
            &customers,
            |_, o| o.customer.clone(),
            |o, name| format!("{name}:{}", o.amount),
        )
        .to("inner");
    orders
        .left_join_global(
            &customers,
            |_, o| o.customer.clone(),
            |o, name| format!("{}:{}", opt(name), o.amount),
        )
        .to("left");
    // Orders over 3 partitions, customers over 2: no co-partitioning needed.
    let topics = BTreeMap::from([(s("orders"), 3), (s("customers"), 2)]);
    let mut d = TestDriver::with_partitions(&b.build().unwrap(), 1, topics).unwrap();
    d.pipe("customers", &s("c1"), &s("Ann"), 0).unwrap();
    d.pipe("customers", &s("c2"), &s("Bob"), 0).unwrap();
    let order = |c: &str, amount| Order {
        customer: c.into(),
        amount,
    };
    d.pipe("orders", &s("o1"), &order("c1", 10), 1).unwrap();
    d.pipe("orders", &s("o2"), &order("c3", 20), 2).unwrap();
    d.pipe("customers", &s("c2"), &s("Bobby"), 3).unwrap();
    d.pipe_tombstone("customers", &s("c1"), 3).unwrap();
    d.pipe("orders", &s("o3"), &order("c2", 30), 4).unwrap();
    d.pipe("orders", &s("o4"), &order("c1", 40), 5).unwrap();
    let read = |d: &mut TestDriver, t: &str| -> Vec<(String, String)> {
        d.read::<String, String>(t)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.value.unwrap()))
            .collect()
    };
    assert_eq!(
        read(&mut d, "inner"),
        vec![(s("o1"), s("Ann:10")), (s("o3"), s("Bobby:30"))]
    );
    assert_eq!(
        read(&mut d, "left"),
        vec![
            (s("o1"), s("Ann:10")),
            (s("o2"), s("null:20")),
            (s("o3"), s("Bobby:30")),
            (s("o4"), s("null:40"))
        ]
    );
}

fn fk_join(left_join: bool) -> Vec<(String, Option<String>, i64)> {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Order {
        product: String,
        qty: i64,
    }
    let b = StreamsBuilder::new();
    let orders = b.table::<String, Order>("orders");
    let products = b.table::<String, String>("products");
    let joined = if left_join {
        orders.fk_left_join(
            &products,
            |o| o.product.clone(),
            |o, p| format!("{} x {}", o.qty, opt(p)),
        )
    } else {
        orders.fk_join(
            &products,
            |o| o.product.clone(),
            |o, p| format!("{} x {p}", o.qty),
        )
    };
    joined.to_stream().to("out");
    let topology = b.build().unwrap();
    // The internal topics take the partition counts of the tables they meet.
    let topics = BTreeMap::from([(s("orders"), 2), (s("products"), 3)]);
    let mut d = TestDriver::with_partitions(&topology, 1, topics).unwrap();
    let order = |p: &str, qty| Order {
        product: p.into(),
        qty,
    };
    d.pipe("products", &s("p1"), &s("apple"), 1).unwrap();
    d.pipe("orders", &s("o1"), &order("p1", 2), 2).unwrap();
    d.pipe("orders", &s("o2"), &order("p2", 1), 3).unwrap();
    d.pipe("products", &s("p2"), &s("pear"), 4).unwrap();
    d.pipe("orders", &s("o1"), &order("p2", 5), 5).unwrap();
    d.pipe("products", &s("p1"), &s("green apple"), 6).unwrap();
    d.pipe_tombstone("products", &s("p2"), 7).unwrap();
    d.pipe_tombstone("orders", &s("o2"), 8).unwrap();
    d.read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect()
}

#[test]
fn foreign_key_inner_join() {
    assert_eq!(
        fk_join(false),
        vec![
            (s("o1"), Some(s("2 x apple")), 2),
            (s("o2"), None, 3),
            (s("o2"), Some(s("1 x pear")), 4),
            // o1 moves to p2: it leaves p1, whose later rename reaches nobody.
            (s("o1"), Some(s("5 x pear")), 5),
            (s("o1"), None, 7),
            (s("o2"), None, 7),
            (s("o2"), None, 8),
        ]
    );
}

#[test]
fn foreign_key_left_join() {
    assert_eq!(
        fk_join(true),
        vec![
            (s("o1"), Some(s("2 x apple")), 2),
            (s("o2"), Some(s("1 x null")), 3),
            (s("o2"), Some(s("1 x pear")), 4),
            (s("o1"), Some(s("5 x pear")), 5),
            (s("o1"), Some(s("5 x null")), 7),
            (s("o2"), Some(s("1 x null")), 7),
            (s("o2"), None, 8),
        ]
    );
}

#[test]
fn a_stale_foreign_key_response_is_dropped() {
    let b = StreamsBuilder::new();
    let orders = b.table::<String, String>("orders"); // value: the product id
    let products = b.table::<String, String>("products");
    orders
        .fk_join(&products, |p| p.clone(), |o, p| format!("{o}:{p}"))
        .to_stream()
        .to("out");
    let topology = b.build().unwrap();
    let response = topology
        .topology
        .repartition_topics("app")
        .into_iter()
        .find(|t| t.ends_with("subscription-response-repartition"))
        .unwrap();
    let response = response
        .strip_prefix("app-")
        .unwrap()
        .strip_suffix("-repartition")
        .unwrap()
        .to_string();
    let mut d = TestDriver::new(&topology, 1).unwrap();
    d.pipe("products", &s("p1"), &s("apple"), 1).unwrap();
    d.pipe("orders", &s("o1"), &s("p1"), 2).unwrap();
    assert_eq!(d.read::<String, String>("out").unwrap().len(), 1);
    // A response for a value of o1 that is not its current one (another hash): ignored.
    let stale = rill_dsl::serdes::hop::encode(&(
        12_345u64,
        Some(rill_dsl::serdes::hop::encode(&s("bogus")).unwrap().to_vec()),
    ))
    .unwrap();
    d.pipe_raw(&response, Some("o1".into()), Some(stale), 3)
        .unwrap();
    assert!(d.read::<String, String>("out").unwrap().is_empty());
}

/// One input record fanned out into several (`flat_map_values`) reaches a join as several
/// records: each is kept and joined (Kafka's join stores retain duplicates), none overwrites
/// another — under at-least-once and exactly-once alike.
#[test]
fn records_fanned_out_from_one_input_each_join() {
    for exactly_once in [false, true] {
        let b = StreamsBuilder::new();
        let left = b
            .stream::<String, String>("left")
            .flat_map_values(|v: String| vec![format!("{v}1"), format!("{v}2")]);
        let right = b.stream::<String, String>("right");
        let w = JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(10));
        left.left_join(&right, |l, r| format!("{l}+{}", opt(r)), w)
            .to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        d.set_exactly_once(exactly_once);
        d.pipe("left", &s("k"), &s("a"), 0).unwrap();
        d.pipe("right", &s("k"), &s("b"), 1).unwrap();
        let out: Vec<String> = d
            .read::<String, String>("out")
            .unwrap()
            .into_iter()
            .map(|r| r.value.unwrap())
            .collect();
        assert_eq!(out, ["a1+b", "a2+b"], "exactly once {exactly_once}");
    }
}

/// A foreign-key join result carries the later of the two rows' timestamps (Kafka Streams'
/// SubscriptionJoinProcessorSupplier: `max(left row, right row)`), here the right row's.
#[test]
fn a_foreign_key_join_result_has_the_later_rows_timestamp() {
    let b = StreamsBuilder::new();
    let orders = b.table::<String, String>("orders"); // value: the product id
    let products = b.table::<String, String>("products");
    orders
        .fk_join(&products, |p| p.clone(), |o, p| format!("{o}:{p}"))
        .to_stream()
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("products", &s("p1"), &s("apple"), 100).unwrap();
    d.pipe("orders", &s("o1"), &s("p1"), 50).unwrap();
    let out: Vec<(String, Option<String>, i64)> = d
        .read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(out, vec![(s("o1"), Some(s("p1:apple")), 100)]);
}

/// A left join with windows of `difference` and `grace`, `left` and `right` piped in order.
fn left_join_of(
    difference: u64,
    grace: u64,
    records: &[(&str, &str, &str, i64)],
) -> Vec<(String, String, i64)> {
    let b = StreamsBuilder::new();
    let left = b.stream::<String, String>("left");
    let right = b.stream::<String, String>("right");
    let w = JoinWindows::of_time_difference_and_grace(
        Duration::from_millis(difference),
        Duration::from_millis(grace),
    );
    left.left_join(&right, |l, r| format!("{l}+{}", opt(r)), w)
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    for (topic, k, v, ts) in records {
        d.pipe(topic, &s(k), &s(v), *ts).unwrap();
    }
    d.read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap(), r.timestamp))
        .collect()
}

fn kv(k: &str, v: &str, ts: i64) -> (String, String, i64) {
    (s(k), s(v), ts)
}

/// KStreamKStreamLeftJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheLeftProcessor.
#[test]
fn kafka_left_join_expired_unmatched_records_are_emitted_by_the_left_side() {
    let out = left_join_of(
        100,
        0,
        &[
            ("left", "0", "A0", 1),
            ("left", "1", "A1", 2),
            ("left", "0", "A0-0", 3),
            ("right", "1", "a1", 3),
            ("left", "2", "dummy", 401),
            ("right", "2", "dummy", 401),
        ],
    );
    assert_eq!(
        out,
        vec![
            kv("1", "A1+a1", 3),
            kv("0", "A0+null", 1),
            kv("0", "A0-0+null", 3),
            kv("2", "dummy+dummy", 401),
        ]
    );
}

/// KStreamKStreamLeftJoinTest.testLeftExpiredNonJoinedRecordsAreEmittedByTheRightProcessor.
#[test]
fn kafka_left_join_expired_unmatched_records_are_emitted_by_the_right_side() {
    let out = left_join_of(
        100,
        0,
        &[
            ("left", "0", "A0", 1),
            ("left", "1", "A1", 2),
            ("left", "0", "A0-0", 3),
            ("right", "1", "a1", 3),
            ("right", "2", "dummy", 401),
            ("left", "2", "dummy", 402),
        ],
    );
    assert_eq!(
        out,
        vec![
            kv("1", "A1+a1", 3),
            kv("0", "A0+null", 1),
            kv("0", "A0-0+null", 3),
            kv("2", "dummy+dummy", 402),
        ]
    );
}

/// KStreamKStreamLeftJoinTest.testOrdering: the unmatched record whose window a record
/// closes comes out before that record's own results.
#[test]
fn kafka_left_join_emits_closed_windows_before_the_records_own_results() {
    let out = left_join_of(
        100,
        0,
        &[
            ("left", "0", "A0", 0),
            ("left", "1", "A1", 100),
            ("right", "1", "a1", 110),
        ],
    );
    assert_eq!(out, vec![kv("0", "A0+null", 0), kv("1", "A1+a1", 110)]);
}

/// KStreamKStreamJoin.process: an unmatched record whose window has already closed (it came
/// out of order, within the store's retention) is emitted alone at once — and still joins
/// what comes within its window while the stores keep it.
#[test]
fn kafka_left_join_emits_an_out_of_order_unmatched_record_at_once() {
    let out = left_join_of(
        10,
        20,
        &[
            ("left", "k1", "x", 100),
            ("left", "k2", "y", 85),
            ("right", "k2", "z", 90),
        ],
    );
    assert_eq!(out, vec![kv("k2", "y+null", 85), kv("k2", "y+z", 90)]);
}

/// The join's stream time is the latest timestamp its two sides processed (Kafka Streams'
/// shared TimeTracker), not the task's: a record filtered out before the join moves nothing.
#[test]
fn kafka_a_joins_time_is_its_own_not_the_tasks() {
    let b = StreamsBuilder::new();
    let left = b
        .stream::<String, String>("left")
        .filter(|_, v| v.as_str() != "skip");
    let right = b.stream::<String, String>("right");
    let w = JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(10));
    left.left_join(&right, |l, r| format!("{l}+{}", opt(r)), w)
        .to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("left", &s("k"), &s("a"), 0).unwrap();
    d.pipe("left", &s("x"), &s("skip"), 100).unwrap();
    d.pipe("right", &s("k"), &s("b"), 5).unwrap();
    let out: Vec<(String, i64)> = d
        .read::<String, String>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.value.unwrap(), r.timestamp))
        .collect();
    assert_eq!(out, vec![(s("a+b"), 5)]);
}

/// A join store keeps records for before + after + grace behind the latest it stored (Kafka's
/// window store retention): a record older than that is matched by nothing.
#[test]
fn kafka_join_stores_keep_records_for_their_retention() {
    let b = StreamsBuilder::new();
    let left = b.stream::<String, String>("left");
    let right = b.stream::<String, String>("right");
    let w = JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(10));
    left.join(&right, |l, r| format!("{l}+{r}"), w).to("out");
    let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
    d.pipe("right", &s("k"), &s("r"), 0).unwrap();
    // The right store's clock moves to 20: it keeps records after 20 - 20 = 0.
    d.pipe("right", &s("x"), &s("z"), 20).unwrap();
    d.pipe("left", &s("k"), &s("l"), 10).unwrap();
    assert!(d.read::<String, String>("out").unwrap().is_empty());
    assert_eq!(d.dropped().get(DropReason::LateJoin), 0);
}

/// A stream record with a null key (its key type holds one) joins no table row: a left join
/// gives it alone, an inner join drops it and counts it (Kafka Streams'
/// KStreamKTableJoinProcessor.maybeDropRecord).
#[test]
fn a_null_key_joins_no_table_row() {
    for left in [false, true] {
        let b = StreamsBuilder::new();
        let stream = b.stream::<Option<String>, String>("clicks");
        let table = b.table::<Option<String>, String>("users");
        let joined = if left {
            stream.left_join_table(&table, |v, t| format!("{v}+{}", opt(t)))
        } else {
            stream.join_table(&table, |v, t| format!("{v}+{t}"))
        };
        joined.to("out");
        let mut d = TestDriver::new(&b.build().unwrap(), 1).unwrap();
        d.pipe("users", &Some(s("")), &s("empty-key row"), 0)
            .unwrap();
        d.pipe("clicks", &None::<String>, &s("c"), 1).unwrap();
        let out: Vec<String> = d
            .read::<Option<String>, String>("out")
            .unwrap()
            .into_iter()
            .map(|r| r.value.unwrap())
            .collect();
        if left {
            assert_eq!(out, ["c+null"]);
        } else {
            assert!(out.is_empty());
            assert_eq!(d.dropped().get(DropReason::NullKey), 1);
        }
    }
}
