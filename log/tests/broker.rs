//! The broker's handlers, called in-process with typed requests: topics, metadata, produce
//! with acks, fetch with long-poll, list offsets, restart; exact responses and error codes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::simple_batch;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, BrokerConfig, BrokerError, RequestContext};
use rill_log::record::decode_batches;
use rill_log::time::ManualClock;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn broker(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.seed = 7;
    config.offsets_topic_num_partitions = 2;
    Broker::open(config, ManualClock::new(1_000_000)).unwrap()
}

async fn call(b: &Broker, r: RequestKind) -> ResponseKind {
    b.handle(&RequestContext::embedded("test"), r)
        .await
        .unwrap()
        .expect("a response")
}

async fn create(
    b: &Broker,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreateTopicsResponse {
    let t = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
    match call(
        b,
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![t])),
    )
    .await
    {
        ResponseKind::CreateTopics(r) => r,
        other => panic!("{other:?}"),
    }
}

fn produce_req(topic: &str, partition: i32, acks: i16, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

async fn produce(
    b: &Broker,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Vec<u8>,
) -> Option<ProduceResponse> {
    match b
        .handle(
            &RequestContext::embedded("test"),
            RequestKind::Produce(produce_req(topic, partition, acks, records)),
        )
        .await
        .unwrap()
    {
        Some(ResponseKind::Produce(r)) => Some(r),
        None => None,
        other => panic!("{other:?}"),
    }
}

fn fetch_req(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

async fn fetch(b: &Broker, req: FetchRequest) -> FetchResponse {
    match call(b, RequestKind::Fetch(req)).await {
        ResponseKind::Fetch(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn create_then_metadata_then_delete() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let r = create(&b, "orders", 3, &[("retention.ms", "1000")]).await;
    let t = &r.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!((t.num_partitions, t.replication_factor), (3, 1));
    assert!(!t.topic_id.is_nil());
    let retention = t
        .configs
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_deref(), Some("1000"));
    assert_eq!(retention.config_source, 1);
    // Errors: exists, bad name, bad partitions, bad config, replication factor.
    assert_eq!(
        create(&b, "orders", 1, &[]).await.topics[0].error_code,
        ResponseError::TopicAlreadyExists.code()
    );
    assert_eq!(
        create(&b, "bad/name", 1, &[]).await.topics[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    assert_eq!(
        create(&b, "zero", 0, &[]).await.topics[0].error_code,
        ResponseError::InvalidPartitions.code()
    );
    assert_eq!(
        create(&b, "cfg", 1, &[("retention.ms", "soon")])
            .await
            .topics[0]
            .error_code,
        ResponseError::InvalidConfig.code()
    );
    let rf = CreatableTopic::default()
        .with_name(name("rf"))
        .with_num_partitions(1)
        .with_replication_factor(3);
    match call(
        &b,
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![rf])),
    )
    .await
    {
        ResponseKind::CreateTopics(r) => assert_eq!(
            r.topics[0].error_code,
            ResponseError::InvalidReplicationFactor.code()
        ),
        other => panic!("{other:?}"),
    }

    let md = match call(
        &b,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    )
    .await
    {
        ResponseKind::Metadata(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].port, 9092);
    // The created topic, and the internal one of committed offsets.
    let names: Vec<_> = md
        .topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.is_internal))
        .collect();
    assert_eq!(
        names,
        vec![
            ("__consumer_offsets".to_string(), true),
            ("__transaction_state".to_string(), true),
            ("orders".to_string(), false)
        ]
    );
    let topic = &md.topics[2];
    assert_eq!(topic.name.as_ref().unwrap().0.as_str(), "orders");
    assert_eq!(topic.topic_id, t.topic_id);
    assert_eq!(topic.partitions.len(), 3);
    for (i, p) in topic.partitions.iter().enumerate() {
        assert_eq!(p.partition_index, i as i32);
        assert_eq!(p.leader_id.0, 0);
        assert_eq!(p.isr_nodes.iter().map(|n| n.0).collect::<Vec<_>>(), vec![0]);
    }

    let del = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default().with_name(Some(name("orders"))),
        DeleteTopicState::default().with_name(Some(name("missing"))),
    ]);
    match call(&b, RequestKind::DeleteTopics(del)).await {
        ResponseKind::DeleteTopics(r) => {
            assert_eq!(r.responses[0].error_code, 0);
            assert_eq!(r.responses[0].topic_id, t.topic_id);
            assert_eq!(
                r.responses[1].error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("orders-0").exists());
    b.close().unwrap();
}

#[tokio::test]
async fn metadata_auto_creates_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let req = |allow| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("auto")))
            ]))
            .with_allow_auto_topic_creation(allow)
    };
    match call(&b, RequestKind::Metadata(req(false))).await {
        ResponseKind::Metadata(m) => assert_eq!(
            m.topics[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        ),
        other => panic!("{other:?}"),
    }
    match call(&b, RequestKind::Metadata(req(true))).await {
        ResponseKind::Metadata(m) => {
            assert_eq!(m.topics[0].error_code, 0);
            assert_eq!(m.topics[0].partitions.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

#[tokio::test]
async fn produce_then_fetch_exact_records_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 2, &[]).await;
    let r = produce(&b, "t", 1, 1, simple_batch("a", 3, 10))
        .await
        .unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(
        (
            p.error_code,
            p.base_offset,
            p.log_append_time_ms,
            p.log_start_offset
        ),
        (0, 0, -1, 0)
    );
    let r = produce(&b, "t", 1, -1, simple_batch("b", 2, 20))
        .await
        .unwrap();
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 3);
    // acks=0: no response, but the data is there.
    assert!(produce(&b, "t", 1, 0, simple_batch("c", 1, 30))
        .await
        .is_none());

    let f = fetch(&b, fetch_req("t", 1, 1, 0, 0)).await;
    let part = &f.responses[0].partitions[0];
    assert_eq!(
        (
            part.error_code,
            part.high_watermark,
            part.last_stable_offset,
            part.log_start_offset
        ),
        (0, 6, 6, 0)
    );
    let recs = decode_batches(part.records.as_ref().unwrap()).unwrap();
    let got: Vec<(i64, String)> = recs
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    // The batch holding offset 1 starts at 0: Kafka returns it whole.
    assert_eq!(
        got,
        vec![
            (0, "a-0".into()),
            (1, "a-1".into()),
            (2, "a-2".into()),
            (3, "b-0".into()),
            (4, "b-1".into()),
            (5, "c-0".into())
        ]
    );
    // Partition 0 is empty; offset 7 is out of range.
    let f = fetch(&b, fetch_req("t", 0, 0, 0, 0)).await;
    assert_eq!(
        f.responses[0].partitions[0]
            .records
            .as_ref()
            .map(|r| r.len()),
        Some(0)
    );
    let f = fetch(&b, fetch_req("t", 1, 7, 0, 0)).await;
    assert_eq!(
        f.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    assert_eq!(f.responses[0].partitions[0].high_watermark, 6);
    b.close().unwrap();
}

#[tokio::test]
async fn produce_errors_are_per_partition_codes() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 1, &[("max.message.bytes", "200")]).await;
    create(&b, "isr", 1, &[("min.insync.replicas", "2")]).await;
    let code =
        |r: Option<ProduceResponse>| r.unwrap().responses[0].partition_responses[0].error_code;
    assert_eq!(
        code(produce(&b, "nope", 0, 1, simple_batch("a", 1, 0)).await),
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        code(produce(&b, "t", 5, 1, simple_batch("a", 1, 0)).await),
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        code(produce(&b, "t", 0, 2, simple_batch("a", 1, 0)).await),
        ResponseError::InvalidRequiredAcks.code()
    );
    let mut corrupt = simple_batch("a", 1, 0);
    *corrupt.last_mut().unwrap() ^= 1;
    assert_eq!(
        code(produce(&b, "t", 0, 1, corrupt).await),
        ResponseError::CorruptMessage.code()
    );
    assert_eq!(
        code(produce(&b, "t", 0, 1, simple_batch(&"x".repeat(300), 1, 0)).await),
        ResponseError::MessageTooLarge.code()
    );
    assert_eq!(
        code(produce(&b, "isr", 0, -1, simple_batch("a", 1, 0)).await),
        ResponseError::NotEnoughReplicas.code()
    );
    // acks=1 does not need the ISR.
    assert_eq!(
        code(produce(&b, "isr", 0, 1, simple_batch("a", 1, 0)).await),
        0
    );
    // Nothing was appended by the failures.
    let f = fetch(&b, fetch_req("t", 0, 0, 0, 0)).await;
    assert_eq!(f.responses[0].partitions[0].high_watermark, 0);
    b.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn fetch_long_polls_until_min_bytes_or_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(broker(dir.path()));
    create(&b, "t", 1, &[]).await;
    // Nothing arrives: the fetch returns empty after max_wait (virtual time).
    let start = tokio::time::Instant::now();
    let f = fetch(&b, fetch_req("t", 0, 0, 500, 1)).await;
    assert!(f.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    // Data arrives 100 ms into a 10 s wait: the fetch returns then, with it.
    let waiting = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { fetch(&b, fetch_req("t", 0, 0, 10_000, 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = tokio::time::Instant::now();
    produce(&b, "t", 0, 1, simple_batch("x", 2, 0)).await;
    let f = waiting.await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(10));
    assert_eq!(
        decode_batches(f.responses[0].partitions[0].records.as_ref().unwrap())
            .unwrap()
            .len(),
        2
    );
    // min_bytes larger than what is there: waits the whole max_wait, then returns what exists.
    let start = tokio::time::Instant::now();
    let f = fetch(&b, fetch_req("t", 0, 0, 300, 1 << 20)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(
        decode_batches(f.responses[0].partitions[0].records.as_ref().unwrap())
            .unwrap()
            .len(),
        2
    );
    b.close().unwrap();
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 1, &[]).await;
    for ts in [100, 200, 300] {
        produce(&b, "t", 0, 1, simple_batch("v", 2, ts)).await;
    }
    let req = |timestamps: &[i64]| {
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(
                timestamps
                    .iter()
                    .map(|ts| {
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(*ts)
                    })
                    .collect(),
            )])
    };
    match call(&b, RequestKind::ListOffsets(req(&[-2, -1, 150, 300, 301]))).await {
        ResponseKind::ListOffsets(r) => {
            let got: Vec<(i16, i64, i64)> = r.topics[0]
                .partitions
                .iter()
                .map(|p| (p.error_code, p.offset, p.timestamp))
                .collect();
            assert_eq!(
                got,
                vec![
                    (0, 0, -1),
                    (0, 6, -1),
                    (0, 2, 200),
                    (0, 4, 300),
                    (0, -1, -1)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // -3 (KIP-734): the first record with the largest timestamp, even when later records are
    // older; -4 is not a thing.
    produce(&b, "t", 0, 1, simple_batch("v", 2, 50)).await;
    match call(&b, RequestKind::ListOffsets(req(&[-3, -1, -4]))).await {
        ResponseKind::ListOffsets(r) => {
            let got: Vec<(i16, i64, i64)> = r.topics[0]
                .partitions
                .iter()
                .map(|p| (p.error_code, p.offset, p.timestamp))
                .collect();
            let invalid = ResponseError::InvalidRequest.code();
            assert_eq!(got, vec![(0, 4, 300), (0, 8, -1), (invalid, -1, -1)]);
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

#[tokio::test]
async fn topics_and_data_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let b = broker(dir.path());
        let id = create(&b, "kept", 2, &[("cleanup.policy", "compact")])
            .await
            .topics[0]
            .topic_id;
        produce(&b, "kept", 1, 1, simple_batch("v", 4, 0)).await;
        b.close().unwrap();
        id
    };
    let b = broker(dir.path());
    match call(
        &b,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    )
    .await
    {
        ResponseKind::Metadata(m) => {
            let kept = m
                .topics
                .iter()
                .find(|t| t.name.as_ref().unwrap().0.as_str() == "kept")
                .unwrap();
            assert_eq!(kept.topic_id, id);
            assert_eq!(kept.partitions.len(), 2);
            // kept, __consumer_offsets, __transaction_state.
            assert_eq!(m.topics.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    let f = fetch(&b, fetch_req("kept", 1, 0, 0, 0)).await;
    assert_eq!(f.responses[0].partitions[0].high_watermark, 4);
    assert!(b.logs().topic_config("kept").cleanup_policy.compact);
    b.close().unwrap();
}

#[tokio::test]
async fn unhandled_apis_are_refused_not_faked() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let err = b
        .handle(
            &RequestContext::embedded("test"),
            RequestKind::DescribeAcls(DescribeAclsRequest::default()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Unsupported("DescribeAcls")));
    b.close().unwrap();
}

#[tokio::test]
async fn describe_cluster_lists_this_broker_as_broker_and_controller() {
    use kafka_protocol::messages::DescribeClusterRequest;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    match call(
        &b,
        RequestKind::DescribeCluster(DescribeClusterRequest::default().with_endpoint_type(1)),
    )
    .await
    {
        ResponseKind::DescribeCluster(r) => {
            assert_eq!(r.error_code, 0);
            assert_eq!(r.cluster_id.as_str(), "rill-cluster");
            assert_eq!(r.controller_id.0, 0);
            let ids: Vec<(i32, String, i32)> = r
                .brokers
                .iter()
                .map(|x| (x.broker_id.0, x.host.to_string(), x.port))
                .collect();
            assert_eq!(ids, vec![(0, "localhost".to_string(), 9092)]);
        }
        other => panic!("{other:?}"),
    }
    // Controller endpoints (type 2) are refused with Kafka's code.
    match call(
        &b,
        RequestKind::DescribeCluster(DescribeClusterRequest::default().with_endpoint_type(2)),
    )
    .await
    {
        ResponseKind::DescribeCluster(r) => {
            assert_eq!(r.error_code, ResponseError::UnsupportedEndpointType.code());
            assert!(r.brokers.is_empty());
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

#[tokio::test]
async fn create_partitions_grows_a_topic_and_refuses_shrinking() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 2, &[]).await;
    let req = |count| {
        RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(
            vec![CreatePartitionsTopic::default().with_name(name("t")).with_count(count)],
        ))
    };
    match call(&b, req(2)).await {
        ResponseKind::CreatePartitions(r) => assert_eq!(
            r.results[0].error_code,
            ResponseError::InvalidPartitions.code()
        ),
        other => panic!("{other:?}"),
    }
    match call(&b, req(5)).await {
        ResponseKind::CreatePartitions(r) => assert_eq!(r.results[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    let p4 = produce(&b, "t", 4, 1, simple_batch("v", 1, 0))
        .await
        .unwrap();
    assert_eq!(p4.responses[0].partition_responses[0].error_code, 0);
    match call(
        &b,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    )
    .await
    {
        ResponseKind::Metadata(m) => {
            let t = m
                .topics
                .iter()
                .find(|t| t.name.as_ref().unwrap().0.as_str() == "t")
                .unwrap();
            assert_eq!(t.partitions.len(), 5);
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 1, &[]).await;
    produce(&b, "t", 0, 1, simple_batch("v", 5, 0)).await;
    let req = |offset| {
        RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(
            vec![DeleteRecordsTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(offset)])],
        ))
    };
    let low = |r: ResponseKind| match r {
        ResponseKind::DeleteRecords(r) => (
            r.topics[0].partitions[0].error_code,
            r.topics[0].partitions[0].low_watermark,
        ),
        other => panic!("{other:?}"),
    };
    assert_eq!(low(call(&b, req(3)).await), (0, 3));
    assert_eq!(
        low(call(&b, req(9)).await).0,
        ResponseError::OffsetOutOfRange.code()
    );
    assert_eq!(low(call(&b, req(-1)).await), (0, 5));
    let f = fetch(&b, fetch_req("t", 0, 2, 0, 0)).await;
    assert_eq!(
        f.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    assert_eq!(f.responses[0].partitions[0].log_start_offset, 5);
    b.close().unwrap();
}

#[tokio::test]
async fn describe_and_incrementally_alter_topic_configs() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 1, &[("retention.ms", "5000")]).await;
    let describe = |keys: Option<Vec<&str>>| {
        RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configuration_keys(keys.map(|ks| {
                        ks.into_iter()
                            .map(|k| StrBytes::from_string(k.into()))
                            .collect()
                    })),
            ]))
    };
    let configs = |r: ResponseKind| match r {
        ResponseKind::DescribeConfigs(r) => {
            assert_eq!(r.results[0].error_code, 0);
            r.results[0]
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_ref().unwrap().to_string(),
                        c.config_source,
                    )
                })
                .collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let all = configs(call(&b, describe(None)).await);
    assert!(all.contains(&("retention.ms".into(), "5000".into(), 1)));
    assert!(all.contains(&("segment.bytes".into(), "1073741824".into(), 5)));
    assert_eq!(
        configs(call(&b, describe(Some(vec!["cleanup.policy"]))).await),
        vec![("cleanup.policy".into(), "delete".into(), 5)]
    );

    let alter = |ops: Vec<(&str, i8, Option<&str>)>| {
        RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(
                        ops.into_iter()
                            .map(|(k, op, v)| {
                                AlterableConfig::default()
                                    .with_name(StrBytes::from_string(k.into()))
                                    .with_config_operation(op)
                                    .with_value(v.map(|v| StrBytes::from_string(v.into())))
                            })
                            .collect(),
                    ),
            ]),
        )
    };
    let code = |r: ResponseKind| match r {
        ResponseKind::IncrementalAlterConfigs(r) => r.responses[0].error_code,
        other => panic!("{other:?}"),
    };
    // SET, APPEND to a list, DELETE an override.
    assert_eq!(
        code(
            call(
                &b,
                alter(vec![
                    ("segment.ms", 0, Some("60000")),
                    ("cleanup.policy", 2, Some("compact")),
                    ("retention.ms", 1, None)
                ])
            )
            .await
        ),
        0
    );
    let c = b.logs().topic_config("t");
    assert_eq!(c.segment_ms, 60000);
    assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
    assert_eq!(c.retention_ms, 7 * 24 * 3600 * 1000);
    // SUBTRACT from the list; a bad value is refused whole.
    assert_eq!(
        code(call(&b, alter(vec![("cleanup.policy", 3, Some("delete"))])).await),
        0
    );
    assert!(!b.logs().topic_config("t").cleanup_policy.delete);
    assert_eq!(
        code(
            call(
                &b,
                alter(vec![
                    ("segment.ms", 0, Some("60001")),
                    ("retention.ms", 0, Some("x"))
                ])
            )
            .await
        ),
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(b.logs().topic_config("t").segment_ms, 60000);
    b.close().unwrap();
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_the_current_epoch() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 1, &[]).await;
    produce(&b, "t", 0, 1, simple_batch("v", 4, 0)).await;
    let req = |current, epoch| {
        RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default().with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name("t"))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch)]),
            ]))
    };
    let got = |r: ResponseKind| match r {
        ResponseKind::OffsetForLeaderEpoch(r) => {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.leader_epoch, p.end_offset)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(got(call(&b, req(0, 0)).await), (0, 0, 4));
    assert_eq!(got(call(&b, req(-1, 3)).await), (0, -1, -1));
    assert_eq!(
        got(call(&b, req(2, 0)).await).0,
        ResponseError::UnknownLeaderEpoch.code()
    );
    b.close().unwrap();
}

#[tokio::test]
async fn the_internal_offsets_topic_is_protected_and_partition_counts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let r = produce(&b, "__consumer_offsets", 0, 1, simple_batch("v", 1, 0))
        .await
        .unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    let del = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default().with_name(Some(name("__consumer_offsets")))
    ]);
    match call(&b, RequestKind::DeleteTopics(del)).await {
        ResponseKind::DeleteTopics(r) => {
            assert_eq!(
                r.responses[0].error_code,
                ResponseError::InvalidTopicException.code()
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        create(&b, "huge", 2_000_000_000, &[]).await.topics[0].error_code,
        ResponseError::InvalidPartitions.code()
    );
    b.close().unwrap();
}

#[tokio::test]
async fn fetch_max_bytes_spans_partitions_but_the_first_batch_always_comes() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 2, &[]).await;
    let big = simple_batch(&"x".repeat(900), 1, 0);
    let size = big.len();
    produce(&b, "t", 0, 1, big.clone()).await;
    produce(&b, "t", 1, 1, big).await;
    let req = |max_bytes: i32| {
        FetchRequest::default()
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("t"))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )])
    };
    let lens = |f: FetchResponse| -> Vec<usize> {
        f.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .collect()
    };
    // Room for both.
    assert_eq!(
        lens(fetch(&b, req(4 * size as i32)).await),
        vec![size, size]
    );
    // Room for one and a bit: the second partition waits for the next fetch.
    assert_eq!(lens(fetch(&b, req(size as i32 + 100)).await), vec![size, 0]);
    // Room for less than one batch: the first still comes whole, so consumers progress.
    assert_eq!(lens(fetch(&b, req(10)).await), vec![size, 0]);
    b.close().unwrap();
    drop(b);
    // The broker's fetch.max.bytes caps what a client may ask for.
    let mut config = BrokerConfig::new(dir.path());
    config.offsets_topic_num_partitions = 1;
    config.fetch_max_bytes = size + 100;
    let b = Broker::open(config, ManualClock::new(1_000_000)).unwrap();
    assert_eq!(lens(fetch(&b, req(i32::MAX)).await), vec![size, 0]);
    b.close().unwrap();
}

/// Manual replica assignments in CreateTopics and CreatePartitions, checked as Kafka's
/// controller checks them (`ReplicationControlManagerTest.testValidateGoodManualPartitionAssignments`
/// and `testValidateBadManualPartitionAssignments`, one broker here): a valid one (every replica list is this broker alone)
/// creates the topic with as many partitions as it lists; a replication factor or partition
/// count beside it is INVALID_REQUEST; duplicates, gaps, empty lists and unknown brokers are
/// INVALID_REPLICA_ASSIGNMENT, and nothing is created.
#[tokio::test]
async fn manual_replica_assignments_are_checked_like_kafkas() {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    let create_assigned = |topic: &str, parts: &[(i32, &[i32])], partitions: i32, rf: i16| {
        let t = CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_assignments(
                parts
                    .iter()
                    .map(|(p, ids)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(*p)
                            .with_broker_ids(ids.iter().map(|i| BrokerId(*i)).collect())
                    })
                    .collect(),
            );
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![t]))
    };
    let code = |r: ResponseKind| match r {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        other => panic!("{other:?}"),
    };
    let ok = call(
        &b,
        create_assigned("a", &[(0, &[0]), (1, &[0]), (2, &[0])], -1, -1),
    )
    .await;
    match ok {
        ResponseKind::CreateTopics(r) => {
            assert_eq!(r.topics[0].error_code, 0);
            assert_eq!(r.topics[0].num_partitions, 3);
        }
        other => panic!("{other:?}"),
    }
    let invalid_request = ResponseError::InvalidRequest.code();
    let invalid = ResponseError::InvalidReplicaAssignment.code();
    /// (topic, assignments, partition count, replication factor, expected error).
    type Case<'a> = (&'a str, Vec<(i32, &'a [i32])>, i32, i16, i16);
    let cases: Vec<Case> = vec![
        ("rf-set", vec![(0, &[0])], -1, 1, invalid_request),
        ("count-set", vec![(0, &[0])], 1, -1, invalid_request),
        ("twice", vec![(0, &[0]), (0, &[0])], -1, -1, invalid),
        ("gap", vec![(0, &[0]), (2, &[0])], -1, -1, invalid),
        ("empty", vec![(0, &[])], -1, -1, invalid),
        ("unknown", vec![(0, &[5])], -1, -1, invalid),
        ("dup-broker", vec![(0, &[0, 0])], -1, -1, invalid),
    ];
    for (topic, parts, count, rf, expected) in cases {
        assert_eq!(
            code(call(&b, create_assigned(topic, &parts, count, rf)).await),
            expected,
            "{topic}"
        );
        assert!(b
            .logs()
            .get(&rill_log::TopicPartition::new(topic, 0))
            .is_none());
    }
    // CreatePartitions: this broker alone is valid, another broker is not.
    let grow = |ids: &[i32]| {
        RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name("a"))
                .with_count(4)
                .with_assignments(Some(vec![CreatePartitionsAssignment::default()
                    .with_broker_ids(ids.iter().map(|i| BrokerId(*i)).collect())])),
        ]))
    };
    let result = |r: ResponseKind| match r {
        ResponseKind::CreatePartitions(r) => r.results[0].error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(result(call(&b, grow(&[3])).await), invalid);
    assert_eq!(result(call(&b, grow(&[0])).await), 0);
    b.close().unwrap();
}

/// KIP-430's authorized operations, when a client asks for them: with no authorizer, Kafka
/// answers every operation the resource type supports (`AuthHelper.authorizedOperations`):
/// 3576 for a topic, 3400 for a group, 8096 for the cluster; unasked, the schema's default.
#[tokio::test]
async fn authorized_operations_are_kafkas_without_an_authorizer() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "t", 1, &[]).await;
    let meta = |asked: bool| {
        RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("t")))
                ]))
                .with_include_topic_authorized_operations(asked)
                .with_include_cluster_authorized_operations(asked),
        )
    };
    for (asked, topic_ops, cluster_ops) in [(true, 3576, 8096), (false, i32::MIN, i32::MIN)] {
        match call(&b, meta(asked)).await {
            ResponseKind::Metadata(m) => {
                assert_eq!(m.topics[0].topic_authorized_operations, topic_ops);
                assert_eq!(m.cluster_authorized_operations, cluster_ops);
            }
            other => panic!("{other:?}"),
        }
    }
    let cluster = DescribeClusterRequest::default()
        .with_endpoint_type(1)
        .with_include_cluster_authorized_operations(true);
    match call(&b, RequestKind::DescribeCluster(cluster)).await {
        ResponseKind::DescribeCluster(r) => assert_eq!(r.cluster_authorized_operations, 8096),
        other => panic!("{other:?}"),
    }
    let groups = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str("g"))])
        .with_include_authorized_operations(true);
    match call(&b, RequestKind::DescribeGroups(groups)).await {
        ResponseKind::DescribeGroups(r) => assert_eq!(r.groups[0].authorized_operations, 3400),
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

/// DescribeLogDirs: the broker's one log directory with every partition it holds and each
/// one's size in bytes (exactly what was appended: one batch here, none there), or only the
/// partitions asked for (those not held are left out, as Kafka does), and the volume's
/// bytes.
#[tokio::test]
async fn describe_log_dirs_reports_each_partitions_size() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    create(&b, "sized", 2, &[]).await;
    let batch = simple_batch("v", 3, 1_000);
    let batch_len = batch.len() as i64;
    produce(&b, "sized", 0, 1, batch).await.unwrap();
    let describe = |topics| {
        let req = DescribeLogDirsRequest::default().with_topics(topics);
        let b = &b;
        async move {
            match call(b, RequestKind::DescribeLogDirs(req)).await {
                ResponseKind::DescribeLogDirs(r) => r,
                other => panic!("{other:?}"),
            }
        }
    };
    let all = describe(None).await;
    assert_eq!(all.results.len(), 1);
    let d = &all.results[0];
    assert_eq!(d.error_code, 0);
    assert_eq!(d.log_dir.as_str(), dir.path().display().to_string());
    assert!(
        d.total_bytes >= d.usable_bytes && d.usable_bytes > 0,
        "{d:?}"
    );
    let sized = d.topics.iter().find(|t| t.name == name("sized")).unwrap();
    let sizes: Vec<(i32, i64, i64)> = sized
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size, p.offset_lag))
        .collect();
    assert_eq!(sizes, vec![(0, batch_len, 0), (1, 0, 0)]);

    let asked = describe(Some(vec![
        DescribableLogDirTopic::default()
            .with_topic(name("sized"))
            .with_partitions(vec![1, 7]),
        DescribableLogDirTopic::default()
            .with_topic(name("nope"))
            .with_partitions(vec![0]),
    ]))
    .await;
    let topics: Vec<(String, Vec<i32>)> = asked.results[0]
        .topics
        .iter()
        .map(|t| {
            let ps = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), ps)
        })
        .collect();
    assert_eq!(topics, vec![("sized".to_string(), vec![1])]);
}
