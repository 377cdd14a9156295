//! The metadata quorum on real TCP over loopback, three controllers in one process: records
//! committed on the leader reach every controller's image; the leader stops and another
//! takes over with nothing lost; a controller that was down catches up (from a snapshot when
//! the log it missed was purged) after a restart from its own directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rill_log::controller::quorum::{QuorumConfig, QuorumError};
use rill_log::controller::records::{MetadataRecord, TopicRecord};
use rill_log::controller::service::ControllerService;
use rill_log::controller::ControllerConfig;
use rill_log::controller::MetadataImage;
use tokio::net::TcpListener;
use uuid::Uuid;

fn topic(i: u128) -> MetadataRecord {
    MetadataRecord::Topic(TopicRecord {
        name: format!("t{i}"),
        id: Uuid::from_u128(i + 1),
    })
}

async fn start(
    id: u64,
    voters: &BTreeMap<u64, String>,
    dir: &Path,
    listener: TcpListener,
) -> Arc<ControllerService> {
    let mut config = QuorumConfig::new(id, voters.clone(), dir.join(format!("c{id}")));
    config.heartbeat_interval_ms = 50;
    config.election_timeout_min_ms = 300;
    config.election_timeout_max_ms = 600;
    config.snapshot_every_entries = 20;
    // Nothing kept after a snapshot: a controller that missed entries must install one.
    config.entries_kept_after_snapshot = 0;
    config.broker_window_entries = 10;
    let clock = Arc::new(rill_log::time::SystemClock);
    ControllerService::start(config, ControllerConfig::default(), listener, clock, id)
        .await
        .expect("controller starts")
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes through whichever controller leads, retrying while leadership settles.
async fn write(nodes: &[Option<Arc<ControllerService>>], records: Vec<MetadataRecord>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for q in nodes.iter().flatten() {
            match q.quorum().write(records.clone()).await {
                Ok(offset) => return offset,
                Err(QuorumError::NotLeader { .. }) => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "no leader accepted the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn topics(image: &MetadataImage) -> Vec<String> {
    image.topic_ids.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_leader_loss_and_a_restarted_controller_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        voters.insert(id, l.local_addr().unwrap().to_string());
        listeners.push((id, l));
    }
    let mut nodes: Vec<Option<Arc<ControllerService>>> = Vec::new();
    for (id, l) in listeners {
        nodes.push(Some(start(id, &voters, dir.path(), l).await));
    }
    wait_for("a leader", || nodes[0].as_ref().unwrap().quorum().leader()).await;

    for i in 0..5 {
        write(&nodes, vec![topic(i)]).await;
    }
    let expected: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    for q in nodes.iter().flatten() {
        let shared = q.quorum().shared().clone();
        wait_for("the records everywhere", || {
            (topics(&shared.image()) == expected).then_some(())
        })
        .await;
    }

    // The leader stops; the other two elect one of themselves and go on.
    let leader = nodes[0].as_ref().unwrap().quorum().leader().unwrap();
    let leader_at = (leader - 1) as usize;
    let stopped = nodes[leader_at].take().unwrap();
    let stopped_addr = stopped.quorum().addr();
    stopped.shutdown().await;
    for i in 5..40 {
        write(&nodes, vec![topic(i)]).await;
    }
    let survivor = nodes.iter().flatten().next().unwrap();
    let new_leader = survivor.quorum().leader().unwrap();
    assert_ne!(new_leader, leader);
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        v.sort();
        v
    };
    // A write returns once the leader applied it; a follower survivor applies it a
    // heartbeat later.
    let survivor_image = survivor.quorum().shared().clone();
    wait_for("every record on the survivor", || {
        (topics(&survivor_image.image()) == expected).then_some(())
    })
    .await;

    // The old leader restarts from its directory on its old address: it catches up with
    // the 35 records it missed, past a snapshot (every 20 entries) that purged them.
    let listener = TcpListener::bind(stopped_addr).await.unwrap();
    let restarted = start(leader, &voters, dir.path(), listener).await;
    let shared = restarted.quorum().shared().clone();
    wait_for("the restarted controller to catch up", || {
        (topics(&shared.image()) == expected).then_some(())
    })
    .await;
    assert!(
        restarted
            .quorum()
            .raft()
            .metrics()
            .borrow()
            .snapshot
            .is_some(),
        "caught up through a snapshot"
    );
    // A broker following the log this far behind gets the whole image; one at the tip gets
    // nothing.
    use rill_log::controller::raft::state_machine::MetadataDelta;
    assert!(matches!(shared.delta_since(0), MetadataDelta::Image(_)));
    assert_eq!(
        shared.delta_since(shared.offset()),
        MetadataDelta::Entries(vec![])
    );
    nodes[leader_at] = Some(restarted);
    assert!(dir
        .path()
        .join(format!("c{new_leader}/snapshot.json"))
        .exists());
    for q in nodes.into_iter().flatten() {
        q.shutdown().await;
    }
}

/// Brokers' requests through `ControllerClient`: registration, heartbeats that unfence,
/// topic creation placed over the brokers, a silent broker fenced and its leaderships
/// moved, and all of it carrying on after the active controller stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_register_heartbeat_and_are_fenced_through_a_controller_failover() {
    use rill_log::controller::decisions::{Heartbeat, RegisterBroker};
    use rill_log::controller::rpc::{ControllerRequest, ControllerResponse, TopicSpec};
    use rill_log::controller::service::ControllerClient;
    use rill_log::types::NodeId;

    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        voters.insert(id, l.local_addr().unwrap().to_string());
        listeners.push((id, l));
    }
    let mut nodes: Vec<Option<Arc<ControllerService>>> = Vec::new();
    for (id, l) in listeners {
        let mut config = QuorumConfig::new(id, voters.clone(), dir.path().join(format!("c{id}")));
        config.heartbeat_interval_ms = 50;
        config.election_timeout_min_ms = 300;
        config.election_timeout_max_ms = 600;
        let controller = ControllerConfig {
            session_timeout_ms: 1_500,
            ..ControllerConfig::default()
        };
        let clock = Arc::new(rill_log::time::SystemClock);
        nodes.push(Some(
            ControllerService::start(config, controller, l, clock, id)
                .await
                .unwrap(),
        ));
    }
    let mut client = ControllerClient::new(voters.clone(), Duration::from_secs(5));
    let mut epochs = BTreeMap::new();
    for b in 1..=3 {
        let req = ControllerRequest::Register(RegisterBroker {
            cluster_id: "c".into(),
            id: NodeId(b),
            incarnation: Uuid::from_u128(b as u128),
            host: "127.0.0.1".into(),
            port: 9000 + b,
            rack: None,
            clean_shutdown: true,
        });
        match client.call(&req).await.unwrap() {
            ControllerResponse::Registered { epoch } => epochs.insert(b, epoch),
            other => panic!("{other:?}"),
        };
    }
    let heartbeat = |b: i32, epoch: u64, offset: u64| {
        ControllerRequest::Heartbeat(Heartbeat {
            id: NodeId(b),
            epoch,
            metadata_offset: offset,
            want_fence: false,
            want_shutdown: false,
        })
    };
    for b in 1..=3 {
        match client
            .call(&heartbeat(b, epochs[&b], u64::MAX / 2))
            .await
            .unwrap()
        {
            ControllerResponse::Heartbeat(reply) => assert!(!reply.fenced),
            other => panic!("{other:?}"),
        }
    }
    let create = ControllerRequest::CreateTopics {
        topics: vec![TopicSpec {
            name: "t".into(),
            partitions: 3,
            replication_factor: 3,
            assignments: None,
            configs: BTreeMap::new(),
        }],
        validate_only: false,
    };
    let ControllerResponse::Topics { results, .. } = client.call(&create).await.unwrap() else {
        panic!("not a topics answer");
    };
    let topic_id = results[0].clone().unwrap();

    // Stop the active controller; brokers 1 and 2 keep heartbeating (through the new one),
    // broker 3 goes silent and is fenced after its session.
    let leader = nodes[0].as_ref().unwrap().quorum().leader().unwrap();
    nodes[(leader - 1) as usize]
        .take()
        .unwrap()
        .shutdown()
        .await;
    let started = Instant::now();
    let survivor = nodes.iter().flatten().next().unwrap().clone();
    loop {
        for b in 1..=2 {
            client
                .call(&heartbeat(b, epochs[&b], u64::MAX / 2))
                .await
                .unwrap();
        }
        let fenced = survivor
            .quorum()
            .shared()
            .with_image(|i| i.brokers[&NodeId(3)].fenced);
        if fenced {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "broker 3 never fenced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let image = survivor.quorum().shared().image();
    for p in 0..3 {
        let rec = image.partition(topic_id, p).unwrap();
        assert_ne!(rec.leader, NodeId(3), "partition {p}: {rec:?}");
        assert!(!rec.isr.contains(&NodeId(3)));
    }
    assert!(!image.brokers[&NodeId(1)].fenced && !image.brokers[&NodeId(2)].fenced);
    for q in nodes.into_iter().flatten() {
        q.shutdown().await;
    }
}
