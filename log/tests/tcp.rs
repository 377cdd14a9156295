//! The broker over TCP on loopback: ApiVersions negotiation (including the v0 fallback for an
//! unsupported ApiVersions version), rill's own Producer / Consumer / Admin over the
//! TcpTransport, and bad input — malformed, oversized, unknown, lying and slow requests — that
//! closes the offending connection while everyone else is still served.

use std::sync::Arc;
use std::time::Duration;

mod common;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Decodable;
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    Transport,
};
use rill_log::net::{Server, ServerConfig, TcpConfig, TcpTransport};
use rill_log::record::Compression;
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Node {
    broker: Arc<Broker>,
    server: Server,
    addr: String,
}

async fn start(dir: &std::path::Path, server: ServerConfig) -> Node {
    start_at(dir, "127.0.0.1:0", server).await
}

/// A broker on `dir` served at `addr` (port 0: a free one).
async fn start_at(dir: &std::path::Path, addr: &str, server: ServerConfig) -> Node {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    config.group.initial_rebalance_delay_ms = 0;
    config.group_tick_ms = 20;
    config.advertised_host = "127.0.0.1".into();
    config.advertised_port = i32::from(addr.port());
    let broker = Arc::new(Broker::open(config, Arc::new(SystemClock)).unwrap());
    let server = Server::start(listener, Arc::clone(&broker), server);
    Node {
        broker,
        server,
        addr: addr.to_string(),
    }
}

async fn transport(addr: &str) -> Arc<dyn Transport> {
    Arc::new(TcpTransport::connect(TcpConfig::new(addr)).await.unwrap())
}

/// A raw request frame: header v1 (client id "raw") and `body`.
fn frame(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(correlation);
    b.put_i16(3);
    b.put_slice(b"raw");
    if ApiKey::try_from(api_key).is_ok_and(|k| k.request_header_version(version) >= 2) {
        b.put_u8(0);
    }
    b.put_slice(body);
    let len = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.to_vec()
}

async fn read_frame(s: &mut TcpStream) -> Option<bytes::Bytes> {
    let len = tokio::time::timeout(Duration::from_secs(5), s.read_i32())
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf.into())
}

/// Whether the server closed `s` (EOF) within a few seconds.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn api_versions_answers_our_ranges_and_falls_back_to_v0() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    let mut s = TcpStream::connect(&node.addr).await.unwrap();
    // v3 (flexible): client software name and version, then the tagged section.
    s.write_all(&frame(18, 3, 7, &[5, b'r', b'a', b'w', b'!', 2, b'1', 0]))
        .await
        .unwrap();
    let mut resp = read_frame(&mut s).await.unwrap();
    assert_eq!(resp.get_i32(), 7);
    let v = ApiVersionsResponse::decode(&mut resp, 3).unwrap();
    assert_eq!(v.error_code, 0);
    let produce = v.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 10));
    assert!(
        !v.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::CreateAcls as i16),
        "only handled APIs are advertised"
    );
    // A version we do not speak: error 35 in the v0 layout, with our ranges.
    s.write_all(&frame(18, 99, 8, &[0])).await.unwrap();
    let mut resp = read_frame(&mut s).await.unwrap();
    assert_eq!(resp.get_i32(), 8);
    let v = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(v.error_code, 35);
    assert!(v
        .api_keys
        .iter()
        .any(|k| k.api_key == 3 && k.max_version == 12));
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rill_clients_produce_consume_and_administer_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    let t = transport(&node.addr).await;
    let admin = Admin::new(Arc::clone(&t));
    admin
        .create_topic("orders", 3, &[("retention.ms", "3600000")])
        .await
        .unwrap();
    assert_eq!(
        admin.describe_topic_configs("orders").await.unwrap()["retention.ms"],
        "3600000"
    );
    for (i, codec) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let producer = Producer::new(
            Arc::clone(&t),
            ProducerConfig {
                compression: codec,
                linger_ms: 1,
                ..Default::default()
            },
        );
        let mut ds = Vec::new();
        for j in 0..20 {
            let mut r = ProducerRecord::new("orders", Some(format!("k{j}")), format!("{i}-{j}"));
            r.headers = vec![("codec".into(), Some(format!("{codec:?}").into()))];
            ds.push(producer.send(r).await.unwrap());
        }
        for d in ds {
            d.await.unwrap();
        }
        producer.close().await;
    }
    let mut c = Consumer::new(
        Arc::clone(&t),
        ConsumerConfig {
            group_id: Some("g".into()),
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 50,
            heartbeat_interval_ms: 100,
            ..Default::default()
        },
    );
    c.subscribe(["orders"]);
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(c.poll().await.unwrap());
        if got.len() >= 100 {
            break;
        }
    }
    assert_eq!(got.len(), 100);
    // Same key, same partition, in order; headers survive every codec.
    for j in 0..20 {
        let mine: Vec<&rill_log::client::ConsumerRecord> = got
            .iter()
            .filter(|r| r.key.as_deref() == Some(format!("k{j}").as_bytes()))
            .collect();
        assert_eq!(mine.len(), 5);
        assert!(mine.iter().all(|r| r.partition == mine[0].partition));
        let values: Vec<String> = mine
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(
            values,
            (0..5).map(|i| format!("{i}-{j}")).collect::<Vec<_>>()
        );
        assert!(mine.iter().all(|r| r.headers.len() == 1));
    }
    c.commit_sync().await.unwrap();
    let lag = admin.consumer_lag("g").await.unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 0);
    assert_eq!(lag.iter().map(|l| l.committed).sum::<i64>(), 100);
    let described = admin.describe_groups(&["g"]).await.unwrap();
    assert_eq!(described[0].members.len(), 1);
    assert_eq!(described[0].members[0].client_host, "127.0.0.1");
    c.close().await.unwrap();
    admin.delete_topic("orders").await.unwrap();
    assert!(admin
        .list_topics()
        .await
        .unwrap()
        .iter()
        .all(|d| d.name != "orders"));
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

#[tokio::test]
async fn a_pipelined_answer_does_not_wait_behind_a_held_request() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    Admin::new(transport(&node.addr).await)
        .create_topic("quiet", 1, &[])
        .await
        .unwrap();
    // ApiVersions, then a Fetch of an empty partition that may wait 3 s, in one write.
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(3_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("quiet")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let mut body = BytesMut::new();
    fetch.encode(&mut body, 4).unwrap();
    let mut both = frame(18, 0, 1, &[]);
    both.extend(frame(1, 4, 2, &body));
    let mut s = TcpStream::connect(&node.addr).await.unwrap();
    s.write_all(&both).await.unwrap();
    let started = std::time::Instant::now();
    let mut first = read_frame(&mut s).await.unwrap();
    assert_eq!(first.get_i32(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "the ApiVersions answer waited for the held Fetch"
    );
    let mut second = read_frame(&mut s).await.unwrap();
    assert_eq!(second.get_i32(), 2);
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        ServerConfig {
            socket_request_max_bytes: 1 << 20,
            request_read_timeout_ms: 300,
            ..Default::default()
        },
    )
    .await;
    let good = transport(&node.addr).await;
    Admin::new(Arc::clone(&good))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    // Bytes after a request are ignored, as Kafka does: librdkafka's Metadata v9+ for all
    // topics carries three (a 4-byte null count where a 1-byte varint belongs).
    let metadata_v12_all = frame(3, 12, 1, &[0, 0, 0, 0, 1, 0, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("oversized frame", (2i32 << 20).to_be_bytes().to_vec()),
        ("unknown API key", frame(999, 0, 1, &[])),
        (
            "unadvertised API",
            frame(ApiKey::CreateAcls as i16, 1, 1, &[0, 0]),
        ),
        ("unsupported version", frame(0, 1, 1, &[])),
        // Metadata v1 claiming two billion topics in a 4-byte array.
        (
            "lying array count",
            frame(3, 1, 1, &[0x7f, 0xff, 0xff, 0xff]),
        ),
        ("truncated body", frame(3, 1, 1, &[0, 0, 0, 2, 0, 1])),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(&node.addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        assert!(closed(&mut s).await, "{what}: the connection stays open");
    }
    // A slow client: a length, then nothing. It is cut after request_read_timeout_ms.
    let mut slow = TcpStream::connect(&node.addr).await.unwrap();
    slow.write_all(&100i32.to_be_bytes()).await.unwrap();
    slow.write_all(&[0, 3]).await.unwrap();
    assert!(
        closed(&mut slow).await,
        "a slow client keeps its connection"
    );
    // A well-formed request on a fresh connection still works, and so does the good client.
    let mut s = TcpStream::connect(&node.addr).await.unwrap();
    s.write_all(&metadata_v12_all).await.unwrap();
    let mut resp = read_frame(&mut s).await.expect("metadata answer");
    assert_eq!(resp.get_i32(), 1);
    let topics = Admin::new(good).list_topics().await.unwrap();
    assert!(topics.iter().any(|d| d.name == "t"));
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    let t = transport(&node.addr).await;
    Admin::new(Arc::clone(&t))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let p = Producer::new(Arc::clone(&t), ProducerConfig::default());
    let mut r = ProducerRecord::new("t", None::<String>, "kept");
    r.partition = Some(0);
    p.send(r).await.unwrap().await.unwrap();
    p.close().await;
    // A long-poll fetch is in flight when shutdown starts; it is answered, not cut.
    let mut c = Consumer::new(
        Arc::clone(&t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait_ms: 1_000,
            ..Default::default()
        },
    );
    c.assign([TopicPartition::new("t", 0)]);
    let poll = tokio::spawn(async move { c.poll().await.map(|r| r.len()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.server.shutdown().await;
    assert_eq!(poll.await.unwrap().unwrap(), 0);
    // New connections are refused now.
    assert!(TcpStream::connect(&node.addr).await.is_err());
    node.broker.close().unwrap();
    drop(node.broker);
    let again = start(dir.path(), ServerConfig::default()).await;
    let t = transport(&again.addr).await;
    let mut c = Consumer::new(
        t,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 50,
            ..Default::default()
        },
    );
    c.assign([TopicPartition::new("t", 0)]);
    let mut values = Vec::new();
    for _ in 0..20 {
        values.extend(
            c.poll()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.value.unwrap()),
        );
        if !values.is_empty() {
            break;
        }
    }
    assert_eq!(values, vec![bytes::Bytes::from("kept")]);
    again.server.shutdown().await;
    again.broker.close().unwrap();
}

/// A request of every API rill serves, filled so each version has something to say.
fn sample_request(key: ApiKey, version: i16) -> kafka_protocol::messages::RequestKind {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let s = |x: &str| StrBytes::from_string(x.to_string());
    let topic = || TopicName(s("sweep"));
    match key {
        ApiKey::Produce => RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5_000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(topic())
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(bytes::Bytes::from(common::simple_batch(
                                "sweep", 2, 1_000,
                            )))),
                    ])]),
        ),
        ApiKey::Fetch => RequestKind::Fetch(
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20)])]),
        ),
        ApiKey::ListOffsets => RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ])]),
        ),
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
            ])))
        }
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("sweep-g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch if version >= 8 => {
            RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("sweep-g")))
                    .with_topics(None),
            ]))
        }
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("sweep-g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0]),
                ])),
        ),
        ApiKey::FindCoordinator => {
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("sweep-g")))
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(&format!("sweep-join-{version}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))]),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("sweep-g")))
                .with_member_id(s("nobody")),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("sweep-g")))
                .with_member_id(s("nobody")),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("sweep-g")))
                .with_member_id(s("nobody")),
        ),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("sweep-g"))]),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s(&format!("sweep-create-{version}"))))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(TopicName(s(&format!(
                        "sweep-create-{}",
                        version + 1
                    )))))]),
        ),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(
            DeleteRecordsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0),
                    ])]),
        ),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_leader_epoch(0),
                        ]),
                ]),
        ),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("sweep")),
            ]))
        }
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(TopicName(s("sweep-absent")))
                        .with_count(2),
                ]),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("sweep-absent"))]),
        ),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("sweep"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("3600000")))])]),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("sweep"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("3600000"))),
                    ]),
            ]),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("sweep-tx")))
                .with_v3_and_below_producer_id(ProducerId(1))
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![0]),
                ]),
        ),
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("sweep-tx")))
                .with_producer_id(ProducerId(1))
                .with_group_id(GroupId(s("sweep-g"))),
        ),
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("sweep-tx")))
                .with_producer_id(ProducerId(1))
                .with_committed(true),
        ),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("sweep-tx")))
                .with_group_id(GroupId(s("sweep-g")))
                .with_producer_id(ProducerId(1))
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("sweep-g")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]),
        ),
        ApiKey::WriteTxnMarkers => {
            RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(1))
                    .with_topics(vec![
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(topic())
                            .with_partition_indexes(vec![0]),
                    ]),
            ]))
        }
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0]),
            ]))
        }
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("sweep-tx"))]),
        ),
        ApiKey::ListTransactions => RequestKind::ListTransactions(
            ListTransactionsRequest::default().with_duration_filter(-1),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(topic())
                    .with_partitions(vec![0]),
            ])),
        ),
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
        }
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(0),
                    ]),
            ]),
        ),
        ApiKey::UnregisterBroker => RequestKind::UnregisterBroker(
            UnregisterBrokerRequest::default().with_broker_id(BrokerId(42)),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default().with_topics(None),
        ),
        other => panic!("no sample for {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_of_every_api_is_answered_in_that_version() {
    use kafka_protocol::messages::ResponseKind;
    use rill_log::net::versions::{fit_request, SUPPORTED};
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    Admin::new(transport(&node.addr).await)
        .create_topic("sweep", 1, &[])
        .await
        .unwrap();
    let mut s = TcpStream::connect(&node.addr).await.unwrap();
    let mut correlation = 100;
    for (key, min, max) in SUPPORTED {
        for version in *min..=*max {
            correlation += 1;
            let mut req = sample_request(*key, version);
            fit_request(&mut req, version);
            let mut body = BytesMut::new();
            req.encode(&mut body, version)
                .unwrap_or_else(|e| panic!("{key:?} v{version} does not encode: {e}"));
            s.write_all(&frame(*key as i16, version, correlation, &body))
                .await
                .unwrap();
            let mut resp = read_frame(&mut s)
                .await
                .unwrap_or_else(|| panic!("{key:?} v{version}: the connection closed"));
            assert_eq!(resp.get_i32(), correlation, "{key:?} v{version}");
            // What rill's TcpTransport reads: walked against the response schema first.
            rill_log::net::decode_response(*key, version, resp.clone())
                .unwrap_or_else(|e| panic!("{key:?} v{version}: the client refuses it: {e}"));
            if key.response_header_version(version) >= 1 {
                assert_eq!(resp.get_u8(), 0, "{key:?} v{version}: response tags");
            }
            let decoded = ResponseKind::decode(*key, &mut resp, version)
                .unwrap_or_else(|e| panic!("{key:?} v{version}: the answer does not decode: {e}"));
            assert!(
                !resp.has_remaining(),
                "{key:?} v{version}: bytes after the answer"
            );
            if let ResponseKind::Produce(p) = &decoded {
                let part = &p.responses[0].partition_responses[0];
                assert_eq!(part.error_code, 0, "{key:?} v{version}: {part:?}");
            }
        }
    }
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_when_the_broker_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    let addr = node.addr.clone();
    let t = transport(&addr).await;
    Admin::new(Arc::clone(&t))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let producer = Producer::new(
        Arc::clone(&t),
        ProducerConfig {
            linger_ms: 0,
            retry_backoff_ms: 50,
            ..Default::default()
        },
    );
    let send = |v: &'static str| {
        let mut r = ProducerRecord::new("t", None::<String>, v);
        r.partition = Some(0);
        r
    };
    producer.send(send("before")).await.unwrap().await.unwrap();
    let mut c = Consumer::new(
        Arc::clone(&t),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 50,
            ..Default::default()
        },
    );
    c.assign([TopicPartition::new("t", 0)]);
    let mut seen = Vec::new();
    while seen.is_empty() {
        seen.extend(
            c.poll()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.value.unwrap()),
        );
    }
    // The broker goes away: polls report nothing (no error) while it is gone.
    node.server.shutdown().await;
    node.broker.close().unwrap();
    drop(node.broker);
    assert!(c.poll().await.unwrap().is_empty());
    // It comes back on the same address; a send issued now is retried until it lands.
    let pending = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(send("after")).await.unwrap().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = start_at(dir.path(), &addr, ServerConfig::default()).await;
    let delivered = pending.await.unwrap().unwrap();
    assert_eq!(delivered.offset, 1);
    for _ in 0..100 {
        seen.extend(
            c.poll()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.value.unwrap()),
        );
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![bytes::Bytes::from("before"), bytes::Bytes::from("after")]
    );
    producer.close().await;
    again.server.shutdown().await;
    again.broker.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_over_tcp_rebalances_when_one_leaves_and_seeks_by_time() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    let t = transport(&node.addr).await;
    Admin::new(Arc::clone(&t))
        .create_topic("g3", 6, &[])
        .await
        .unwrap();
    let producer = Producer::new(Arc::clone(&t), ProducerConfig::default());
    let mut ds = Vec::new();
    for i in 0..600i64 {
        let mut r = ProducerRecord::new("g3", None::<String>, format!("v{i}"));
        r.partition = Some((i % 6) as i32);
        r.timestamp_ms = Some(10_000 + i);
        ds.push(producer.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    producer.close().await;
    let member = |t: &Arc<dyn Transport>| {
        let mut c = Consumer::new(
            Arc::clone(t),
            ConsumerConfig {
                group_id: Some("three".into()),
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_wait_ms: 20,
                heartbeat_interval_ms: 50,
                session_timeout_ms: 6_000,
                max_poll_records: 50,
                ..Default::default()
            },
        );
        c.subscribe(["g3"]);
        c
    };
    // Each member on its own connection and task, as separate processes would be.
    type Shared = Arc<std::sync::Mutex<(Vec<Vec<TopicPartition>>, BTreeSet<(i32, i64)>)>>;
    let shared: Shared = Arc::new(std::sync::Mutex::new((
        vec![Vec::new(); 3],
        BTreeSet::new(),
    )));
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut c = member(&transport(&node.addr).await);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        stops.push(Arc::clone(&stop));
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let records = c.poll().await.unwrap();
                c.commit_sync().await.ok();
                let mut s = shared.lock().unwrap();
                s.0[i] = c.assignment();
                s.1.extend(records.iter().map(|r| (r.partition, r.offset)));
            }
            c.close().await.unwrap();
            shared.lock().unwrap().0[i].clear();
        }));
    }
    let wait_for = |want: Vec<usize>, all_seen: bool| {
        let shared = Arc::clone(&shared);
        async move {
            for _ in 0..1000 {
                {
                    let s = shared.lock().unwrap();
                    let mut owned: Vec<&TopicPartition> = s.0.iter().flatten().collect();
                    owned.sort();
                    owned.dedup();
                    let mut sizes: Vec<usize> =
                        s.0.iter().map(Vec::len).filter(|n| *n > 0).collect();
                    sizes.sort();
                    if owned.len() == 6 && sizes == want && (!all_seen || s.1.len() == 600) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("never reached {want:?}: {:?}", shared.lock().unwrap().0);
        }
    };
    wait_for(vec![2, 2, 2], false).await;
    stops[2].store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(vec![3, 3], true).await;
    for s in &stops {
        s.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    for task in tasks {
        task.await.unwrap();
    }
    let lag = Admin::new(Arc::clone(&t))
        .consumer_lag("three")
        .await
        .unwrap();
    assert_eq!(lag.iter().map(|l| l.committed).sum::<i64>(), 600, "{lag:?}");
    // Seek by time over TCP: partition 2 holds timestamps 10002, 10008, ... (offset k has
    // 10002 + 6k), so 10047 lands on offset 8 (10050).
    let mut c = Consumer::new(
        t,
        ConsumerConfig {
            fetch_max_wait_ms: 20,
            ..Default::default()
        },
    );
    let tp = TopicPartition::new("g3", 2);
    c.assign([tp.clone()]);
    c.seek_to_timestamp(&tp, 10_047).await.unwrap();
    let first = loop {
        if let Some(r) = c.poll().await.unwrap().into_iter().next() {
            break r;
        }
    };
    assert_eq!((first.offset, first.timestamp_ms), (8, 10_050));
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

/// A Fetch v4 body: `t`-0 from offset 0, waiting up to `max_wait_ms` for a byte.
fn fetch_body(max_wait_ms: i32) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)])]);
    let mut body = BytesMut::new();
    req.encode(&mut body, 4).unwrap();
    body.to_vec()
}

/// The server reads requests ahead of the one it handles: a connection whose long poll
/// outlasts `connections.max.idle.ms` is not idle (it is answered), and the request sent
/// behind it waits its turn (answers in request order, as Kafka's muting guarantees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_outlasting_the_idle_timeout_is_answered_and_answers_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        ServerConfig {
            connections_max_idle_ms: 300,
            ..Default::default()
        },
    )
    .await;
    Admin::new(transport(&node.addr).await)
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let mut s = TcpStream::connect(&node.addr).await.unwrap();
    let mut both = frame(ApiKey::Fetch as i16, 4, 1, &fetch_body(1_200));
    both.extend_from_slice(&frame(ApiKey::Metadata as i16, 1, 2, &[0, 0, 0, 0]));
    let sent = std::time::Instant::now();
    s.write_all(&both).await.unwrap();
    let mut first = read_frame(&mut s).await.expect("the long poll is answered");
    assert_eq!(first.get_i32(), 1);
    assert!(
        sent.elapsed() >= Duration::from_millis(1_000),
        "no data, so it waited"
    );
    let mut second = read_frame(&mut s)
        .await
        .expect("the metadata request behind it");
    assert_eq!(second.get_i32(), 2);
    // The connection was busy, not idle, all along: it still takes requests.
    s.write_all(&frame(ApiKey::Metadata as i16, 1, 3, &[0, 0, 0, 0]))
        .await
        .unwrap();
    let mut third = read_frame(&mut s)
        .await
        .expect("still open after the long poll");
    assert_eq!(third.get_i32(), 3);
    // Now idle for real: closed after connections.max.idle.ms.
    assert!(closed(&mut s).await);
    node.server.shutdown().await;
    node.broker.close().unwrap();
}

/// A produce v3 body: one batch of `n` records to `topic`-0, acks=-1.
fn produce_body(topic: &str, n: usize) -> Vec<u8> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(common::simple_batch(
                    "d", n, 1_000,
                ))))])]);
    let mut body = BytesMut::new();
    req.encode(&mut body, 3).unwrap();
    body.to_vec()
}

/// (error code, base offset) of a produce v3 response frame (after its correlation id).
fn produce_answer(mut frame: bytes::Bytes) -> (i16, i64) {
    use kafka_protocol::messages::ProduceResponse;
    let r = ProduceResponse::decode(&mut frame, 3).unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Under `flush.messages=1` an acknowledged record is on disk: the server answers a produce
/// only once the fsync covering its append is done (the fsync runs while the connection
/// takes its next request, and one covers the appends made meanwhile), and answers keep
/// request order around requests answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_topics_produce_is_answered_after_its_fsync_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), ServerConfig::default()).await;
    Admin::new(transport(&node.addr).await)
        .create_topic("d", 1, &[("flush.messages", "1")])
        .await
        .unwrap();
    let log = node
        .broker
        .logs()
        .get(&TopicPartition::new("d", 0))
        .unwrap();
    let mut s = TcpStream::connect(&node.addr).await.unwrap();
    for round in 0..20 {
        // Two produces with a metadata request between them, written at once.
        let mut three = frame(ApiKey::Produce as i16, 3, 1, &produce_body("d", 3));
        three.extend_from_slice(&frame(ApiKey::Metadata as i16, 1, 2, &[0, 0, 0, 0]));
        three.extend_from_slice(&frame(ApiKey::Produce as i16, 3, 3, &produce_body("d", 2)));
        s.write_all(&three).await.unwrap();
        let mut first = read_frame(&mut s).await.expect("first produce answered");
        assert_eq!(first.get_i32(), 1);
        let (code, base) = produce_answer(first);
        assert_eq!((code, base), (0, round * 5));
        // Acknowledged means fsynced.
        assert!(
            log.recovery_point().0 >= base + 3,
            "acknowledged before its fsync"
        );
        let mut second = read_frame(&mut s).await.expect("metadata answered");
        assert_eq!(second.get_i32(), 2);
        let mut third = read_frame(&mut s).await.expect("second produce answered");
        assert_eq!(third.get_i32(), 3);
        let (code, base) = produce_answer(third);
        assert_eq!((code, base), (0, round * 5 + 3));
        assert!(log.recovery_point().0 >= base + 2);
    }
    node.server.shutdown().await;
    node.broker.close().unwrap();
}
