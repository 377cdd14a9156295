//! Transactions at the broker (KIP-98): a committed transaction over three partitions and a
//! group's offsets becomes visible to read_committed fetches all at once; an aborted one is
//! listed in the aborted transactions every read_committed fetch returns; read_uncommitted sees
//! both; a second InitProducerId fences the zombie; a stuck transaction aborts after its
//! timeout; a crash between PrepareCommit and CompleteCommit is finished on restart.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, BrokerConfig, RequestContext};
use rill_log::client::{Admin, EmbeddedTransport};
use rill_log::record::{encode_idempotent_batch, Compression, NewRecord};
use rill_log::time::ManualClock;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn open(
    dir: &std::path::Path,
    clock: &Arc<ManualClock>,
    crash_after: Option<usize>,
) -> Arc<Broker> {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    config.transaction_state_num_partitions = 2;
    config.txn_crash_after_markers = crash_after;
    Arc::new(Broker::open(config, clock.clone()).unwrap())
}

async fn call(b: &Broker, r: RequestKind) -> ResponseKind {
    b.handle(&RequestContext::embedded("test"), r)
        .await
        .unwrap()
        .unwrap()
}

async fn init(b: &Broker, txn: &str, timeout_ms: i32) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(txn))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    // A transaction an earlier instance left open is aborted first: CONCURRENT_TRANSACTIONS
    // until that completes, and the client retries (as Kafka's clients do).
    for _ in 0..100 {
        match call(b, RequestKind::InitProducerId(req.clone())).await {
            ResponseKind::InitProducerId(r)
                if r.error_code == ResponseError::ConcurrentTransactions.code() =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            ResponseKind::InitProducerId(r) => {
                assert_eq!(r.error_code, 0, "{r:?}");
                return (r.producer_id.0, r.producer_epoch);
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("InitProducerId stayed busy")
}

async fn add_partitions(b: &Broker, txn: &str, (pid, epoch): (i64, i16), parts: &[i32]) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(txn)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(parts.to_vec())]);
    match call(b, RequestKind::AddPartitionsToTxn(req)).await {
        ResponseKind::AddPartitionsToTxn(r) => {
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
        }
        other => panic!("{other:?}"),
    }
}

async fn produce(b: &Broker, p: (i64, i16), partition: i32, seq: i32, v: &str) -> i16 {
    produce_as(b, Some("tx"), p, partition, seq, v).await
}

/// A transactional batch, sent under `txn` (the request's transactional id).
async fn produce_as(
    b: &Broker,
    txn: Option<&str>,
    (pid, epoch): (i64, i16),
    partition: i32,
    seq: i32,
    v: &str,
) -> i16 {
    let recs = [NewRecord::new(None::<String>, Some(v.to_string()), 1_000)];
    let bytes = encode_idempotent_batch(&recs, Compression::None, pid, epoch, seq, true).unwrap();
    let req = ProduceRequest::default()
        .with_transactional_id(txn.map(|t| TransactionalId(s(t))))
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(bytes)))])]);
    match call(b, RequestKind::Produce(req)).await {
        ResponseKind::Produce(r) => r.responses[0].partition_responses[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn end(b: &Broker, txn: &str, (pid, epoch): (i64, i16), commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(txn)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    match call(b, RequestKind::EndTxn(req)).await {
        ResponseKind::EndTxn(r) => r.error_code,
        other => panic!("{other:?}"),
    }
}

/// Per partition 0..3: (last stable offset, record offsets returned, aborted first offsets).
async fn fetch(b: &Broker, committed: bool) -> Vec<(i64, Vec<i64>, Vec<i64>)> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(if committed { 1 } else { 0 })
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("t")))
            .with_partitions(
                (0..3)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    match call(b, RequestKind::Fetch(req)).await {
        ResponseKind::Fetch(r) => r.responses[0]
            .partitions
            .iter()
            .map(|p| {
                let records = p.records.clone().unwrap_or_default();
                let offsets = rill_log::record::batch::BatchIter::new(&records)
                    .filter_map(Result::ok)
                    .filter(|(h, _, _)| !h.is_control())
                    .map(|(h, _, _)| h.base_offset)
                    .collect();
                let aborted = p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| a.first_offset)
                    .collect();
                (p.last_stable_offset, offsets, aborted)
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

async fn committed_offset(b: &Broker, group: &str) -> i64 {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(None);
    match call(b, RequestKind::OffsetFetch(req)).await {
        ResponseKind::OffsetFetch(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.committed_offset)
            .next()
            .unwrap_or(-1),
        other => panic!("{other:?}"),
    }
}

async fn setup(b: &Arc<Broker>) {
    Admin::new(Arc::new(EmbeddedTransport::new(Arc::clone(b), "t")))
        .create_topic("t", 3, &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn commits_appear_at_once_aborts_never_and_zombies_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let p = init(&b, "tx", 60_000).await;
    assert_eq!(add_partitions(&b, "tx", p, &[0, 1, 2]).await, 0);
    for part in 0..3 {
        assert_eq!(produce(&b, p, part, 0, "one").await, 0);
    }
    // Offsets of a consumer group go with the transaction.
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_producer_id(ProducerId(p.0))
        .with_producer_epoch(p.1)
        .with_group_id(GroupId(s("g")));
    match call(&b, RequestKind::AddOffsetsToTxn(add)).await {
        ResponseKind::AddOffsetsToTxn(r) => assert_eq!(r.error_code, 0),
        other => panic!("{other:?}"),
    }
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(p.0))
        .with_producer_epoch(p.1)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s("in")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)])]);
    match call(&b, RequestKind::TxnOffsetCommit(commit)).await {
        ResponseKind::TxnOffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    // Open: read_committed sees nothing (the stable part ends at offset 0), the offsets are
    // not committed yet; read_uncommitted sees the records.
    assert_eq!(
        fetch(&b, true).await,
        vec![
            (0, vec![], vec![]),
            (0, vec![], vec![]),
            (0, vec![], vec![])
        ]
    );
    assert_eq!(fetch(&b, false).await[1].1, vec![0]);
    assert_eq!(committed_offset(&b, "g").await, -1);
    assert_eq!(end(&b, "tx", p, true).await, 0);
    // Committed: every partition at once, markers at offset 1, the offsets with them.
    assert_eq!(
        fetch(&b, true).await,
        vec![
            (2, vec![0], vec![]),
            (2, vec![0], vec![]),
            (2, vec![0], vec![])
        ]
    );
    assert_eq!(committed_offset(&b, "g").await, 42);
    // An aborted transaction: read_committed fetches list it so consumers skip it.
    assert_eq!(add_partitions(&b, "tx", p, &[0]).await, 0);
    assert_eq!(produce(&b, p, 0, 1, "two").await, 0);
    assert_eq!(end(&b, "tx", p, false).await, 0);
    let after = fetch(&b, true).await;
    assert_eq!(after[0], (4, vec![0, 2], vec![2]));
    assert_eq!(fetch(&b, false).await[0].1, vec![0, 2]);
    // A new instance with the same transactional id fences the old one.
    assert_eq!(add_partitions(&b, "tx", p, &[1]).await, 0);
    assert_eq!(produce(&b, p, 1, 1, "zombie").await, 0);
    let fresh = init(&b, "tx", 60_000).await;
    assert_eq!(fresh.0, p.0);
    assert!(fresh.1 > p.1);
    // The zombie's open transaction was aborted, and it can neither write nor commit.
    assert_eq!(fetch(&b, true).await[1].2, vec![2]);
    assert_eq!(
        produce(&b, p, 1, 2, "late").await,
        ResponseError::InvalidProducerEpoch.code()
    );
    // The coordinator's answer to a fenced producer (KIP-588; the embedded caller speaks the
    // newest versions).
    let fenced = ResponseError::ProducerFenced.code();
    assert_eq!(end(&b, "tx", p, true).await, fenced);
    assert_eq!(add_partitions(&b, "tx", p, &[2]).await, fenced);
    b.close().unwrap();
}

#[tokio::test]
async fn idle_transactional_ids_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut config = BrokerConfig::new(dir.path());
    config.offsets_topic_num_partitions = 1;
    config.transaction_state_num_partitions = 1;
    config.transactional_id_expiration_ms = 10_000;
    let b = Arc::new(Broker::open(config, clock.clone()).unwrap());
    let (first, _) = init(&b, "idle", 5_000).await;
    let (again, epoch) = init(&b, "idle", 5_000).await;
    assert_eq!((again, epoch), (first, 1), "known: same id, next epoch");
    clock.advance_ms(11_000);
    b.tick();
    let (fresh, epoch) = init(&b, "idle", 5_000).await;
    assert!(
        fresh != first && epoch == 0,
        "forgotten: a new id ({fresh}, {epoch})"
    );
    b.close().unwrap();
}

#[tokio::test]
async fn a_stuck_transaction_aborts_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let p = init(&b, "slow", 5_000).await;
    assert_eq!(add_partitions(&b, "slow", p, &[0]).await, 0);
    assert_eq!(produce_as(&b, Some("slow"), p, 0, 0, "stuck").await, 0);
    clock.advance_ms(4_000);
    b.tick();
    assert_eq!(
        fetch(&b, true).await[0].0,
        0,
        "still open within the timeout"
    );
    clock.advance_ms(2_000);
    b.tick();
    assert_eq!(fetch(&b, true).await[0], (2, vec![0], vec![0]));
    assert_eq!(
        end(&b, "slow", p, true).await,
        ResponseError::ProducerFenced.code()
    );
    b.close().unwrap();
}

#[tokio::test]
async fn a_crash_between_prepare_and_complete_is_finished_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    {
        let b = open(dir.path(), &clock, Some(1));
        setup(&b).await;
        let p = init(&b, "tx", 60_000).await;
        assert_eq!(add_partitions(&b, "tx", p, &[0, 1, 2]).await, 0);
        for part in 0..3 {
            assert_eq!(produce(&b, p, part, 0, "v").await, 0);
        }
        // The commit stops after its first marker, as if the broker died there.
        let err = b
            .handle(
                &RequestContext::embedded("test"),
                RequestKind::EndTxn(
                    EndTxnRequest::default()
                        .with_transactional_id(TransactionalId(s("tx")))
                        .with_producer_id(ProducerId(p.0))
                        .with_producer_epoch(p.1)
                        .with_committed(true),
                ),
            )
            .await;
        assert!(err.is_err());
        let half = fetch(&b, true).await;
        assert_eq!(half[0].0, 2, "partition 0 got its marker");
        assert_eq!((half[1].0, half[2].0), (0, 0), "the others did not");
        b.close().unwrap();
    }
    // The restarted coordinator finds PrepareCommit and finishes it: every partition is
    // committed. Partition 0 is not written again: its producer has no transaction open
    // there any more (Kafka would append a second marker, which changes nothing either).
    let b = open(dir.path(), &clock, None);
    assert_eq!(
        fetch(&b, true).await,
        vec![
            (2, vec![0], vec![]),
            (2, vec![0], vec![]),
            (2, vec![0], vec![])
        ]
    );
    b.close().unwrap();
}

/// The log end offset of partition `p` of `t`.
fn log_end(b: &Broker, p: i32) -> i64 {
    b.logs()
        .get(&rill_log::types::TopicPartition::new("t", p))
        .unwrap()
        .log_end_offset()
        .0
}

/// KIP-890 part 1 (Kafka's ReplicaManagerTest.testTransactionVerificationFlow and
/// TransactionCoordinatorTest.shouldRespondWithInvalidTxnStateWhenVerifyOnlyAndPartitionNotPresent):
/// a partition takes a transaction's first batch only if the coordinator has the partition in
/// that producer's ongoing transaction. A batch still in flight after its transaction was
/// aborted, or for a partition never added, is refused, nothing is appended, and the last
/// stable offset is not pinned. Before the fix each of these opened a transaction that no
/// marker would ever close.
#[tokio::test]
async fn transactional_batches_outside_the_coordinators_transaction_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let p = init(&b, "tx", 60_000).await;
    let invalid = ResponseError::InvalidTxnState.code();
    // Before AddPartitionsToTxn: not in any transaction.
    assert_eq!(produce(&b, p, 0, 0, "early").await, invalid);
    assert_eq!(log_end(&b, 0), 0, "nothing appended");
    assert_eq!(add_partitions(&b, "tx", p, &[0]).await, 0);
    // A partition that was never added.
    assert_eq!(produce(&b, p, 1, 0, "stray").await, invalid);
    assert_eq!(log_end(&b, 1), 0);
    assert_eq!(produce(&b, p, 0, 0, "in").await, 0);
    assert_eq!(end(&b, "tx", p, false).await, 0);
    assert_eq!(log_end(&b, 0), 2, "the record and the abort marker");
    // A batch of the aborted transaction arriving late (a retry after a client timeout).
    assert_eq!(produce(&b, p, 0, 1, "late").await, invalid);
    assert_eq!(log_end(&b, 0), 2, "nothing appended");
    let after = fetch(&b, true).await;
    assert_eq!(after[0].0, 2, "the last stable offset is the log end");
    assert_eq!(after[1].0, 0);
    // Without the request's transactional id the batch cannot be checked (Kafka answers
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED); under another id it maps to no producer.
    assert_eq!(add_partitions(&b, "tx", p, &[0]).await, 0);
    assert_eq!(
        produce_as(&b, None, p, 0, 1, "anonymous").await,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    assert_eq!(
        produce_as(&b, Some("other"), p, 0, 1, "wrong id").await,
        ResponseError::InvalidProducerIdMapping.code()
    );
    assert_eq!(
        produce(&b, (p.0, p.1 + 1), 0, 0, "future epoch").await,
        ResponseError::InvalidProducerEpoch.code()
    );
    assert_eq!(log_end(&b, 0), 2);
    // The right batch still goes, and later batches of the open transaction need no check.
    assert_eq!(produce(&b, p, 0, 1, "in").await, 0);
    assert_eq!(produce(&b, p, 0, 2, "more").await, 0);
    assert_eq!(end(&b, "tx", p, true).await, 0);
    assert_eq!(fetch(&b, true).await[0], (5, vec![0, 2, 3], vec![0]));
    b.close().unwrap();
}

/// KIP-664's view of transactions: ListTransactions with its filters (Kafka's
/// TransactionStateManagerTest.testListTransactionsFiltering), DescribeTransactions with the
/// partitions of an open transaction, and TRANSACTIONAL_ID_NOT_FOUND for an unknown id.
#[tokio::test]
async fn list_and_describe_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let a = init(&b, "a", 60_000).await;
    let c = init(&b, "c", 60_000).await;
    assert_eq!(add_partitions(&b, "a", a, &[0, 2]).await, 0);
    clock.advance_ms(5_000);
    let list = |states: &[&str], pids: &[i64], duration: i64| {
        ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|x| s(x)).collect())
            .with_producer_id_filters(pids.iter().map(|p| ProducerId(*p)).collect())
            .with_duration_filter(duration)
    };
    let listed = |r: ResponseKind| match r {
        ResponseKind::ListTransactions(r) => {
            assert_eq!(r.error_code, 0);
            let unknown: Vec<String> = r
                .unknown_state_filters
                .iter()
                .map(|x| x.to_string())
                .collect();
            let states: Vec<(String, i64, String)> = r
                .transaction_states
                .iter()
                .map(|t| {
                    (
                        t.transactional_id.to_string(),
                        t.producer_id.0,
                        t.transaction_state.to_string(),
                    )
                })
                .collect();
            (states, unknown)
        }
        other => panic!("{other:?}"),
    };
    let all = listed(call(&b, RequestKind::ListTransactions(list(&[], &[], -1))).await);
    assert_eq!(
        all.0,
        vec![
            ("a".to_string(), a.0, "Ongoing".to_string()),
            ("c".to_string(), c.0, "Empty".to_string())
        ]
    );
    let ongoing = listed(
        call(
            &b,
            RequestKind::ListTransactions(list(&["Ongoing", "Bogus"], &[], -1)),
        )
        .await,
    );
    assert_eq!(ongoing.0.len(), 1);
    assert_eq!(ongoing.1, vec!["Bogus".to_string()]);
    let by_pid = listed(call(&b, RequestKind::ListTransactions(list(&[], &[c.0], -1))).await);
    assert_eq!(by_pid.0[0].0, "c");
    // Open at least 5 s: "a"; at least 6 s: none.
    let long = listed(call(&b, RequestKind::ListTransactions(list(&[], &[], 5_000))).await);
    assert_eq!(long.0.len(), 1);
    let longer = listed(call(&b, RequestKind::ListTransactions(list(&[], &[], 6_000))).await);
    assert!(longer.0.is_empty());

    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s("a")), TransactionalId(s("nope"))]);
    match call(&b, RequestKind::DescribeTransactions(req)).await {
        ResponseKind::DescribeTransactions(r) => {
            let d = &r.transaction_states[0];
            assert_eq!(d.error_code, 0);
            assert_eq!(d.transaction_state.as_str(), "Ongoing");
            assert_eq!((d.producer_id.0, d.producer_epoch), a);
            assert_eq!(d.transaction_timeout_ms, 60_000);
            assert_eq!(d.transaction_start_time_ms, 1_000_000);
            assert_eq!(d.topics.len(), 1);
            assert_eq!(d.topics[0].partitions, vec![0, 2]);
            assert_eq!(
                r.transaction_states[1].error_code,
                ResponseError::TransactionalIdNotFound.code()
            );
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

/// A hanging transaction (a transactional batch the coordinator never knew of, as a broker
/// before KIP-890's check could take) is found with DescribeProducers and aborted with
/// WriteTxnMarkers, as `kafka-transactions.sh find-hanging` / `abort` do: the last stable
/// offset moves on and read_committed readers skip the batch.
#[tokio::test]
async fn a_hanging_transaction_is_found_and_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let log = b
        .logs()
        .get(&rill_log::types::TopicPartition::new("t", 1))
        .unwrap();
    // Written under the broker's feet, as an older broker would have taken it.
    let recs = [NewRecord::new(
        None::<String>,
        Some("hanging".to_string()),
        1_000,
    )];
    log.append(&mut encode_idempotent_batch(&recs, Compression::None, 777, 3, 0, true).unwrap())
        .unwrap();
    assert_eq!(fetch(&b, true).await[1].0, 0, "pinned");
    let describe = DescribeProducersRequest::default().with_topics(vec![
        kafka_protocol::messages::describe_producers_request::TopicRequest::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![1]),
    ]);
    match call(&b, RequestKind::DescribeProducers(describe)).await {
        ResponseKind::DescribeProducers(r) => {
            let p = &r.topics[0].partitions[0];
            assert_eq!(p.error_code, 0);
            assert_eq!(p.active_producers.len(), 1);
            let producer = &p.active_producers[0];
            assert_eq!((producer.producer_id.0, producer.producer_epoch), (777, 3));
            assert_eq!(producer.current_txn_start_offset, 0);
        }
        other => panic!("{other:?}"),
    }
    let marker = |epoch: i16| {
        WriteTxnMarkersRequest::default().with_markers(vec![
            kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(ProducerId(777))
                .with_producer_epoch(epoch)
                .with_transaction_result(false)
                .with_coordinator_epoch(-1)
                .with_topics(vec![
                    kafka_protocol::messages::write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![1]),
                ]),
        ])
    };
    let code = |r: ResponseKind| match r {
        ResponseKind::WriteTxnMarkers(r) => r.markers[0].topics[0].partitions[0].error_code,
        other => panic!("{other:?}"),
    };
    // An older epoch than the producer's is refused.
    assert_eq!(
        code(call(&b, RequestKind::WriteTxnMarkers(marker(2))).await),
        ResponseError::InvalidProducerEpoch.code()
    );
    assert_eq!(
        code(call(&b, RequestKind::WriteTxnMarkers(marker(3))).await),
        0
    );
    assert_eq!(fetch(&b, true).await[1], (2, vec![0], vec![0]));
    // Nothing left open: a second abort writes nothing.
    assert_eq!(
        code(call(&b, RequestKind::WriteTxnMarkers(marker(3))).await),
        0
    );
    assert_eq!(log_end(&b, 1), 2);
    b.close().unwrap();
}

/// The same through `rill transactions find-hanging` / `abort` (the library behind the
/// commands): the hanging transaction is found, an open transaction the coordinator runs is
/// not, and the abort frees the partition.
#[tokio::test]
async fn the_transactions_commands_find_and_abort_only_hanging_transactions() {
    use rill_log::cli::transactions;
    use rill_log::client::Transport;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let t: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&b), "cli"));
    // A running transaction on partition 0.
    let p = init(&b, "tx", 60_000).await;
    assert_eq!(add_partitions(&b, "tx", p, &[0]).await, 0);
    assert_eq!(produce(&b, p, 0, 0, "running").await, 0);
    // A hanging one on partition 2, written under the broker's feet.
    let tp2 = rill_log::types::TopicPartition::new("t", 2);
    let recs = [NewRecord::new(
        None::<String>,
        Some("hanging".to_string()),
        1_000,
    )];
    b.logs()
        .get(&tp2)
        .unwrap()
        .append(&mut encode_idempotent_batch(&recs, Compression::None, 900, 1, 0, true).unwrap())
        .unwrap();
    let hanging = transactions::find_hanging(Arc::clone(&t), None)
        .await
        .unwrap();
    assert_eq!(hanging.len(), 1, "{hanging:?}");
    assert_eq!(
        (hanging[0].producer_id, hanging[0].partition.clone()),
        (900, tp2.clone())
    );
    let tp0 = rill_log::types::TopicPartition::new("t", 0);
    assert!(transactions::abort(Arc::clone(&t), &tp0, p.0, None)
        .await
        .is_err());
    transactions::abort(Arc::clone(&t), &tp2, 900, None)
        .await
        .unwrap();
    assert!(transactions::find_hanging(Arc::clone(&t), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(fetch(&b, true).await[2], (2, vec![0], vec![0]));
    assert_eq!(
        fetch(&b, true).await[0].0,
        0,
        "the running transaction is untouched"
    );
    b.close().unwrap();
}

mod client {
    use super::*;
    use rill_log::client::{
        Consumer, ConsumerConfig, ConsumerGroupMetadata, IsolationLevel, OffsetReset, Producer,
        ProducerConfig, ProducerRecord, Transport,
    };
    use rill_log::types::TopicPartition;

    fn producer(t: &Arc<dyn Transport>, id: &str) -> Producer {
        Producer::new(
            Arc::clone(t),
            ProducerConfig {
                transactional_id: Some(id.into()),
                linger_ms: 0,
                max_block_ms: 5_000,
                ..Default::default()
            },
        )
    }

    async fn read_all(t: &Arc<dyn Transport>, isolation: IsolationLevel) -> Vec<String> {
        let mut c = Consumer::new(
            Arc::clone(t),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_wait_ms: 0,
                isolation_level: isolation,
                ..Default::default()
            },
        );
        c.assign((0..3).map(|p| TopicPartition::new("t", p)));
        let mut out = Vec::new();
        for _ in 0..5 {
            out.extend(
                c.poll()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
            );
        }
        out.sort();
        out
    }

    /// Fails the `n`th AddPartitionsToTxn it sees (1-based) with a non-retriable error, as a
    /// coordinator refusing a partition would; everything else goes to the broker.
    #[derive(Debug)]
    struct FailAddPartitions {
        inner: EmbeddedTransport,
        seen: std::sync::atomic::AtomicUsize,
        fail: usize,
    }

    impl Transport for FailAddPartitions {
        fn send(
            &self,
            request: RequestKind,
        ) -> rill_log::client::transport::BoxFuture<
            '_,
            Result<Option<ResponseKind>, rill_log::client::ClientError>,
        > {
            use std::sync::atomic::Ordering;
            if let RequestKind::AddPartitionsToTxn(r) = &request {
                if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.fail {
                    let code = ResponseError::TopicAuthorizationFailed.code();
                    let results = r
                        .v3_and_below_topics
                        .iter()
                        .map(|t| {
                            add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                                .with_name(t.name.clone())
                                .with_results_by_partition(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                                .with_partition_index(*p)
                                                .with_partition_error_code(code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    let resp = AddPartitionsToTxnResponse::default()
                        .with_results_by_topic_v3_and_below(results);
                    return Box::pin(
                        async move { Ok(Some(ResponseKind::AddPartitionsToTxn(resp))) },
                    );
                }
            }
            self.inner.send(request)
        }
    }

    /// Item 2 of the hardening review (Kafka's producer after an abortable error, KIP-360):
    /// a batch whose AddPartitionsToTxn failed was dropped with its sequence spent; aborting
    /// must bump the epoch and restart sequences, or every later transaction on that
    /// partition fails with OUT_OF_ORDER_SEQUENCE_NUMBER (it did, before the fix).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aborting_after_an_abortable_error_bumps_the_epoch_and_the_next_transaction_commits() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let b = open(dir.path(), &clock, None);
        setup(&b).await;
        let t: Arc<dyn Transport> = Arc::new(FailAddPartitions {
            inner: EmbeddedTransport::new(Arc::clone(&b), "c"),
            seen: Default::default(),
            fail: 2,
        });
        let p = producer(&t, "bump");
        p.init_transactions().await.unwrap();
        let send = |v: &str| {
            let mut r = ProducerRecord::new("t", None::<String>, v.to_string());
            r.partition = Some(0);
            p.send(r)
        };
        // One committed transaction: the partition knows the producer's sequence.
        p.begin_transaction().unwrap();
        send("one").await.unwrap();
        p.commit_transaction().await.unwrap();
        // The second one's AddPartitionsToTxn fails: its batch is dropped, sequence spent.
        p.begin_transaction().unwrap();
        let lost = send("lost").await.unwrap();
        assert!(lost.wait().await.is_err());
        assert!(
            p.commit_transaction().await.is_err(),
            "a failed record dooms the commit"
        );
        p.abort_transaction().await.unwrap();
        // The third commits.
        p.begin_transaction().unwrap();
        let three = send("three").await.unwrap();
        p.commit_transaction().await.unwrap();
        three.wait().await.unwrap();
        assert_eq!(
            read_all(&t, IsolationLevel::ReadCommitted).await,
            vec!["one", "three"]
        );
        p.close().await;
        b.close().unwrap();
    }

    /// KIP-447: a read_committed consumer asking for the committed offsets of a group waits
    /// while an open transaction holds offsets of those partitions; read_uncommitted does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_committed_offsets_wait_for_the_transaction_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let b = open(dir.path(), &clock, None);
        setup(&b).await;
        let t: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&b), "c"));
        let p = producer(&t, "stable");
        p.init_transactions().await.unwrap();
        p.begin_transaction().unwrap();
        let group = ConsumerGroupMetadata {
            group_id: "g2".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        };
        let tp = TopicPartition::new("in", 0);
        p.send_offsets_to_transaction(&[(tp.clone(), 7)], &group)
            .await
            .unwrap();
        let consumer = |isolation_level| {
            Consumer::new(
                Arc::clone(&t),
                ConsumerConfig {
                    group_id: Some("g2".into()),
                    isolation_level,
                    ..Default::default()
                },
            )
        };
        let uncommitted = consumer(IsolationLevel::ReadUncommitted);
        let now = uncommitted
            .committed(std::slice::from_ref(&tp))
            .await
            .unwrap();
        assert_eq!(now[&tp], None);
        let committed = consumer(IsolationLevel::ReadCommitted);
        let tp2 = tp.clone();
        let waiting = tokio::spawn(async move { committed.committed(&[tp2]).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "answered while the offset was unstable"
        );
        p.commit_transaction().await.unwrap();
        let stable = waiting.await.unwrap().unwrap();
        assert_eq!(stable[&tp], Some(7));
        b.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_transactional_producer_and_a_read_committed_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let b = open(dir.path(), &clock, None);
        setup(&b).await;
        let t: Arc<dyn Transport> = Arc::new(EmbeddedTransport::new(Arc::clone(&b), "c"));
        let p = producer(&t, "pipeline");
        // Sending before a transaction is a usage error.
        assert!(p
            .send(ProducerRecord::new("t", None::<String>, "x"))
            .await
            .is_err());
        p.init_transactions().await.unwrap();
        p.begin_transaction().unwrap();
        for (i, part) in [0, 1, 2].into_iter().enumerate() {
            let mut r = ProducerRecord::new("t", None::<String>, format!("kept-{i}"));
            r.partition = Some(part);
            p.send(r).await.unwrap();
        }
        let group = ConsumerGroupMetadata {
            group_id: "g".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        };
        p.send_offsets_to_transaction(&[(TopicPartition::new("in", 0), 7)], &group)
            .await
            .unwrap();
        // Not yet committed: read_committed sees nothing.
        p.flush().await;
        assert!(read_all(&t, IsolationLevel::ReadCommitted).await.is_empty());
        p.commit_transaction().await.unwrap();
        assert_eq!(
            read_all(&t, IsolationLevel::ReadCommitted).await,
            vec!["kept-0", "kept-1", "kept-2"]
        );
        assert_eq!(committed_offset(&b, "g").await, 7);
        // An aborted transaction: its records and offsets never show.
        p.begin_transaction().unwrap();
        for part in [0, 2] {
            let mut r = ProducerRecord::new("t", None::<String>, format!("dropped-{part}"));
            r.partition = Some(part);
            p.send(r).await.unwrap();
        }
        p.send_offsets_to_transaction(&[(TopicPartition::new("in", 0), 99)], &group)
            .await
            .unwrap();
        p.abort_transaction().await.unwrap();
        assert_eq!(
            read_all(&t, IsolationLevel::ReadCommitted).await,
            vec!["kept-0", "kept-1", "kept-2"]
        );
        assert_eq!(
            read_all(&t, IsolationLevel::ReadUncommitted).await,
            vec!["dropped-0", "dropped-2", "kept-0", "kept-1", "kept-2"]
        );
        assert_eq!(committed_offset(&b, "g").await, 7);
        // A second instance with the same transactional.id fences the first.
        let zombie = p;
        let successor = producer(&t, "pipeline");
        successor.init_transactions().await.unwrap();
        zombie.begin_transaction().unwrap();
        let mut r = ProducerRecord::new("t", None::<String>, "from-the-zombie");
        r.partition = Some(1);
        let d = zombie.send(r).await.unwrap();
        let refused = d.await.unwrap_err();
        assert!(refused.is_fatal_for_transactions(), "{refused}");
        let err = zombie.commit_transaction().await.unwrap_err();
        assert!(err.to_string().contains("abort"), "{err}");
        assert!(!read_all(&t, IsolationLevel::ReadUncommitted)
            .await
            .contains(&"from-the-zombie".to_string()));
        b.close().unwrap();
    }
}

#[test]
fn compaction_removes_aborted_records_and_leaves_open_transactions_alone() {
    use rill_log::record::control::Marker;
    use rill_log::record::{decode_batches, encode_batch};
    use rill_log::storage::cleaner::{clean, CleanerConfig};
    use rill_log::storage::{LogConfig, PartitionLog};
    use rill_log::types::{Offset, TopicPartition};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut config = LogConfig::default();
    for (k, v) in [("cleanup.policy", "compact"), ("segment.bytes", "200")] {
        config.set(k, v).unwrap();
    }
    let log = PartitionLog::open(
        dir.path(),
        TopicPartition::new("c", 0),
        config,
        clock.clone(),
    )
    .unwrap();
    let rec = |v: &str| [NewRecord::new(Some("k"), Some(v.to_string()), 1_000)];
    let txn = |pid: i64, seq: i32, v: &str| {
        encode_idempotent_batch(&rec(v), Compression::None, pid, 0, seq, true).unwrap()
    };
    // k=committed (plain), then k=aborted in a transaction that aborts, then k=open in a
    // transaction still open, each in its own segment (200-byte segments).
    log.append(&mut encode_batch(&rec("committed"), Compression::None).unwrap())
        .unwrap();
    log.append(&mut txn(5, 0, "aborted")).unwrap();
    log.append_marker(5, 0, Marker::Abort, 0).unwrap();
    // The same producer's next (committed) transaction, on another key: the aborted batch is
    // no longer its last one (which cleaning keeps whole for the sequence state).
    let other = [NewRecord::new(Some("j"), Some("later".to_string()), 1_000)];
    log.append(&mut encode_idempotent_batch(&other, Compression::None, 5, 0, 1, true).unwrap())
        .unwrap();
    log.append_marker(5, 0, Marker::Commit, 0).unwrap();
    log.append(&mut txn(6, 0, "open")).unwrap();
    log.append(&mut encode_batch(&rec("filler"), Compression::None).unwrap())
        .unwrap();
    assert_eq!(log.last_stable_offset(), Offset(5));
    clean(&log, &CleanerConfig::default(), 1_000_000).unwrap();
    // Every value left, segment by segment (markers' values start with a zero byte).
    let mut values: Vec<String> = Vec::new();
    let mut next = 0;
    while next < log.log_end_offset().0 {
        let read = log.read(Offset(next), 1 << 20).unwrap();
        let end = rill_log::record::batch::BatchIter::new(&read.records)
            .filter_map(Result::ok)
            .map(|(h, _, _)| h.next_offset())
            .last()
            .unwrap_or(next + 1);
        values.extend(
            decode_batches(&read.records)
                .unwrap()
                .into_iter()
                .filter_map(|r| r.value)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .filter(|v| !v.starts_with('\0')),
        );
        next = end;
    }
    // The aborted value never shadowed "committed" and is gone; the open transaction's
    // segment (from the last stable offset on) was not cleaned.
    assert!(values.contains(&"committed".to_string()), "{values:?}");
    assert!(!values.contains(&"aborted".to_string()), "{values:?}");
    assert!(values.contains(&"open".to_string()), "{values:?}");
    assert!(values.contains(&"later".to_string()), "{values:?}");
    log.close().unwrap();
}

/// Kafka completes a delayed read_committed fetch when the last stable offset moves (the
/// marker's append): a long poll waiting on an open transaction's partition returns the
/// records as soon as the commit's marker lands, not at its `max_wait_ms`. Before fetches
/// were watched per partition, the coordinator's marker woke no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_long_poll_returns_when_the_commit_lands() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let b = open(dir.path(), &clock, None);
    setup(&b).await;
    let p = init(&b, "tx", 60_000).await;
    assert_eq!(add_partitions(&b, "tx", p, &[1]).await, 0);
    assert_eq!(produce(&b, p, 1, 0, "one").await, 0);
    let poll = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let req = FetchRequest::default()
                .with_max_wait_ms(60_000)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_isolation_level(1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(1)
                        .with_partition_max_bytes(1 << 20)])]);
            let started = std::time::Instant::now();
            let resp = match call(&b, RequestKind::Fetch(req)).await {
                ResponseKind::Fetch(r) => r,
                other => panic!("{other:?}"),
            };
            (started.elapsed(), resp)
        })
    };
    // The poll is waiting: nothing is stable yet.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!poll.is_finished());
    assert_eq!(end(&b, "tx", p, true).await, 0);
    let (waited, resp) = tokio::time::timeout(std::time::Duration::from_secs(30), poll)
        .await
        .expect("the commit woke the long poll")
        .unwrap();
    assert!(waited < std::time::Duration::from_secs(30), "{waited:?}");
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert!(part.last_stable_offset >= 2, "{}", part.last_stable_offset);
    let records = part.records.clone().unwrap_or_default();
    let data: Vec<i64> = rill_log::record::batch::BatchIter::new(&records)
        .filter_map(Result::ok)
        .filter(|(h, _, _)| !h.is_control())
        .map(|(h, _, _)| h.base_offset)
        .collect();
    assert_eq!(data, vec![0]);
    b.close().unwrap();
}
