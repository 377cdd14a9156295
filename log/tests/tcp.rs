//! The broker over TCP on loopback: ApiVersions negotiation (including the v0 fallback for an
//! unsupported ApiVersions version), rill's own Producer / Consumer / Admin over the
//! TcpTransport, and bad input — malformed, oversized, unknown, lying and slow requests — that
//! closes the offending connection while everyone else is still served.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Decodable;
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    Transport,
};
use rill_log::net::{Server, ServerConfig, TcpConfig, TcpTransport};
use rill_log::storage::Compression;
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
            .any(|k| k.api_key == ApiKey::InitProducerId as i16),
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
            frame(ApiKey::InitProducerId as i16, 1, 1, &[0, 0]),
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
