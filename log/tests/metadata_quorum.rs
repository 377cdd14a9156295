//! The metadata quorum on real TCP over loopback, three controllers in one process: records
//! committed on the leader reach every controller's image; the leader stops and another
//! takes over with nothing lost; a controller that was down catches up (from a snapshot when
//! the log it missed was purged) after a restart from its own directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rill_log::controller::quorum::{Quorum, QuorumConfig, QuorumError};
use rill_log::controller::records::{MetadataRecord, TopicRecord};
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
) -> Quorum {
    let mut config = QuorumConfig::new(id, voters.clone(), dir.join(format!("c{id}")));
    config.heartbeat_interval_ms = 50;
    config.election_timeout_min_ms = 300;
    config.election_timeout_max_ms = 600;
    config.snapshot_every_entries = 20;
    // Nothing kept after a snapshot: a controller that missed entries must install one.
    config.entries_kept_after_snapshot = 0;
    config.broker_window_entries = 10;
    Quorum::start(config, listener)
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
async fn write(nodes: &[Option<Quorum>], records: Vec<MetadataRecord>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for q in nodes.iter().flatten() {
            match q.write(records.clone()).await {
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
    let mut nodes: Vec<Option<Quorum>> = Vec::new();
    for (id, l) in listeners {
        nodes.push(Some(start(id, &voters, dir.path(), l).await));
    }
    wait_for("a leader", || nodes[0].as_ref().unwrap().leader()).await;

    for i in 0..5 {
        write(&nodes, vec![topic(i)]).await;
    }
    let expected: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    for q in nodes.iter().flatten() {
        let shared = q.shared().clone();
        wait_for("the records everywhere", || {
            (topics(&shared.image()) == expected).then_some(())
        })
        .await;
    }

    // The leader stops; the other two elect one of themselves and go on.
    let leader = nodes[0].as_ref().unwrap().leader().unwrap();
    let leader_at = (leader - 1) as usize;
    let stopped = nodes[leader_at].take().unwrap();
    let stopped_addr = stopped.addr();
    stopped.shutdown().await;
    for i in 5..40 {
        write(&nodes, vec![topic(i)]).await;
    }
    let survivor = nodes.iter().flatten().next().unwrap();
    let new_leader = survivor.leader().unwrap();
    assert_ne!(new_leader, leader);
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(topics(&survivor.shared().image()), expected);

    // The old leader restarts from its directory on its old address: it catches up with
    // the 35 records it missed, past a snapshot (every 20 entries) that purged them.
    let listener = TcpListener::bind(stopped_addr).await.unwrap();
    let restarted = start(leader, &voters, dir.path(), listener).await;
    let shared = restarted.shared().clone();
    wait_for("the restarted controller to catch up", || {
        (topics(&shared.image()) == expected).then_some(())
    })
    .await;
    assert!(
        restarted.raft().metrics().borrow().snapshot.is_some(),
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
