//! A three-node rill cluster on loopback (each `rill broker` process a broker and a
//! controller), driven by rill's own clients: acknowledged records survive kill -9 of
//! partition leaders and of the active controller; a replica with a divergent tail truncates
//! it and rejoins the ISR. Kill schedules are random from a printed seed
//! (`RILL_CLUSTER_SEED` replays one, `RILL_CLUSTER_KILLS` sets how many kills).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    Transport,
};
use rill_log::net::{TcpConfig, TcpTransport};
use rill_log::types::TopicPartition;

/// One cluster test at a time: each runs three nodes with 2 s sessions, and three clusters
/// at once on a 2-core machine would test the machine's contention instead.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's timing: fast failure detection so a test's kills cost seconds.
const NODE_FLAGS: &[&str] = &[
    "--override",
    "broker.session.timeout.ms=2000",
    "--override",
    "broker.heartbeat.interval.ms=250",
    "--override",
    "controller.quorum.election.timeout.ms=1000",
    "--override",
    "replica.lag.time.max.ms=4000",
    "--override",
    "replica.fetch.backoff.ms=100",
    "--override",
    "transaction.state.log.num.partitions=3",
];

struct Cluster {
    dir: tempfile::TempDir,
    voters: String,
    /// Each node's client listener, kept across restarts (as a deployment's would be).
    listeners: Vec<String>,
    nodes: Vec<Option<BrokerProcess>>,
    /// Flags of this test's nodes beyond [`NODE_FLAGS`].
    extra: Vec<String>,
    /// Every process's stderr, killed ones included, for a failure's report.
    history: Vec<(usize, Arc<Mutex<String>>)>,
}

/// Free loopback ports, picked by binding port 0.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Nodes with `extra` properties (`key=value`) as well.
    fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let ports = free_ports(2 * n);
        let listeners = ports[n..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let ports = &ports[..n];
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            voters,
            listeners,
            nodes: (0..n).map(|_| None).collect(),
            extra: extra
                .iter()
                .flat_map(|kv| ["--override".to_string(), kv.to_string()])
                .collect(),
            history: Vec::new(),
        };
        for id in 1..=n {
            cluster.start_node(id);
        }
        cluster
    }

    fn start_node(&mut self, id: usize) {
        let dir = self.dir.path().join(format!("n{id}"));
        let id_s = id.to_string();
        let mut args = vec![
            "--node-id",
            &id_s,
            "--cluster-id",
            "test-cluster",
            "--controller-quorum",
            &self.voters,
        ];
        args.extend_from_slice(NODE_FLAGS);
        args.extend(self.extra.iter().map(String::as_str));
        let log = std::env::var("RILL_CLUSTER_LOG").unwrap_or_else(|_| "warn".into());
        let node = BrokerProcess::start_at(&dir, &self.listeners[id - 1], &args, &log);
        self.history.push((id, Arc::clone(&node.stderr)));
        self.nodes[id - 1] = Some(node);
    }

    fn kill9(&mut self, id: usize) {
        if let Some(mut n) = self.nodes[id - 1].take() {
            n.kill9();
        }
    }

    /// Every process's stderr, in start order, written to a file for a failure's report.
    fn dump_logs(&self) -> String {
        let text = self
            .history
            .iter()
            .map(|(id, e)| format!("--- node {id} ---\n{}", e.lock().unwrap()))
            .collect::<Vec<_>>()
            .join("\n");
        let path = std::env::temp_dir().join("rill-cluster-test.log");
        let _ = std::fs::write(&path, text);
        path.display().to_string()
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn transport(&self) -> Arc<dyn Transport> {
        let mut config = TcpConfig::new(self.bootstrap());
        config.metadata_max_age_ms = 1_000;
        Arc::new(TcpTransport::connect(config).await.unwrap())
    }
}

/// Retries `f` until it succeeds or 30 s pass (the cluster is electing, a broker joining).
async fn eventually<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                if let Some(logs) = LOGS.lock().unwrap().as_ref().map(|f| f()) {
                    eprintln!("{logs}");
                }
                panic!("{what}: {e:?}")
            }
        }
    }
}

/// What a failure prints: the nodes' logs.
type LogDump = Box<dyn Fn() -> String + Send>;
static LOGS: Mutex<Option<LogDump>> = Mutex::new(None);

/// Every record of `topic` from the beginning to the end offsets (partition, offset, value).
async fn read_all(t: &Arc<dyn Transport>, topic: &str, partitions: i32) -> Vec<(i32, i64, String)> {
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let admin = Admin::new(Arc::clone(t));
    let q: Vec<_> = tps
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends = eventually("end offsets", || admin.list_offsets(&q)).await;
    let total: i64 = ends.values().map(|o| o.offset).sum();
    let mut c = Consumer::new(
        Arc::clone(t),
        ConsumerConfig {
            fetch_max_wait_ms: 50,
            ..Default::default()
        },
    );
    c.assign(tps.clone());
    c.seek_to_beginning(&tps).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total && Instant::now() < deadline {
        match c.poll().await {
            Ok(records) => out.extend(records.into_iter().map(|r| {
                let v = String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap();
                (r.partition, r.offset, v)
            })),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    out
}

/// The leader of each partition of `topic`, from Metadata.
async fn leaders(t: &Arc<dyn Transport>, topic: &str) -> Vec<i32> {
    let all = Admin::new(Arc::clone(t))
        .list_topics()
        .await
        .unwrap_or_default();
    all.into_iter()
        .find(|d| d.name == topic)
        .map(|d| d.leaders)
        .unwrap_or_default()
}

/// A small deterministic generator for the kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// kill -9 of partition leaders (the active controller among them, whenever it leads)
/// while an idempotent producer sends with acks=all, min.insync.replicas=2, RF 3: every
/// acknowledged record is there exactly once afterwards, no offset holds two records, and a
/// consumer reads them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_leader_kills() {
    let _serial = SERIAL.lock().await;
    let seed = env_u64("RILL_CLUSTER_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let kills = env_u64("RILL_CLUSTER_KILLS").unwrap_or(20);
    println!("cluster kill test: seed {seed}, {kills} kills (RILL_CLUSTER_SEED={seed} replays)");
    if let Ok(filter) = std::env::var("RILL_CLUSTER_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let mut rng = Rng(seed);
    let mut cluster = Cluster::start(3);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    eventually("creating the topic", || {
        admin.create_replicated_topic("t", 3, 3, &[("min.insync.replicas", "2")])
    })
    .await;

    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (t, acked, stop) = (Arc::clone(&t), Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let producer = Producer::new(
                t,
                ProducerConfig {
                    linger_ms: 2,
                    delivery_timeout_ms: 60_000,
                    retry_backoff_ms: 50,
                    ..Default::default()
                },
            );
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pending = Vec::new();
                for _ in 0..20 {
                    let value = format!("v{i}");
                    let r = ProducerRecord::new("t", Some(format!("k{}", i % 7)), value.clone());
                    if let Ok(d) = producer.send(r).await {
                        pending.push((value, d));
                    }
                    i += 1;
                }
                for (value, d) in pending {
                    if d.await.is_ok() {
                        acked.lock().unwrap().insert(value);
                    }
                }
            }
            producer.close().await;
        })
    };

    // A consumer group reads along through the kills.
    let consumed: Arc<Mutex<BTreeMap<(i32, i64), String>>> = Arc::default();
    let conflicts: Arc<Mutex<Vec<String>>> = Arc::default();
    let consuming = {
        let (t, consumed, conflicts) = (
            Arc::clone(&t),
            Arc::clone(&consumed),
            Arc::clone(&conflicts),
        );
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut c = Consumer::new(
                t,
                ConsumerConfig {
                    group_id: Some("readers".into()),
                    auto_offset_reset: rill_log::client::OffsetReset::Earliest,
                    fetch_max_wait_ms: 100,
                    heartbeat_interval_ms: 200,
                    session_timeout_ms: 6_000,
                    ..Default::default()
                },
            );
            c.subscribe(["t"]);
            let mut quiet_since: Option<Instant> = None;
            loop {
                match c.poll().await {
                    Ok(records) if !records.is_empty() => {
                        quiet_since = None;
                        let mut seen = consumed.lock().unwrap();
                        for r in records {
                            let v =
                                String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap();
                            if let Some(old) = seen.insert((r.partition, r.offset), v.clone()) {
                                if old != v {
                                    conflicts.lock().unwrap().push(format!(
                                        "{}@{}: {old} then {v}",
                                        r.partition, r.offset
                                    ));
                                }
                            }
                        }
                    }
                    Ok(_) | Err(_) => {
                        // Done once the producer stopped and nothing came for a while.
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if stop.load(Ordering::Relaxed) && since.elapsed() > Duration::from_secs(8)
                        {
                            break;
                        }
                    }
                }
            }
        })
    };

    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let leaders = leaders(&t, "t").await;
        let candidates: Vec<i32> = leaders.into_iter().filter(|l| *l > 0).collect();
        let victim = if candidates.is_empty() {
            1 + rng.below(3) as usize
        } else {
            candidates[rng.below(candidates.len() as u64) as usize] as usize
        };
        println!("kill {k}: node {victim}");
        cluster.kill9(victim);
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2_000))).await;
        cluster.start_node(victim);
    }
    // Let the cluster settle, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Ok(all) = Admin::new(Arc::clone(&t)).list_topics().await {
        for p in all
            .iter()
            .filter(|d| d.name == "t")
            .flat_map(|d| &d.partition_states)
        {
            println!("after the kills: {p:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    println!("stopping with {} acknowledged", acked.lock().unwrap().len());
    let producer_done = tokio::time::timeout(Duration::from_secs(90), producing).await;
    if std::env::var("RILL_CLUSTER_LOG").is_ok() {
        println!("logs in {}", cluster.dump_logs());
    }
    if producer_done.is_err() {
        panic!(
            "seed {seed}: the producer did not finish; logs in {}",
            cluster.dump_logs()
        );
    }

    tokio::time::timeout(Duration::from_secs(120), consuming)
        .await
        .expect("the group consumer finishes")
        .unwrap();
    let t = cluster.transport().await;
    let stderrs: Vec<_> = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| Arc::clone(&n.stderr))
        .collect();
    *LOGS.lock().unwrap() = Some(Box::new(move || {
        stderrs
            .iter()
            .map(|s| s.lock().unwrap().clone())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    }));
    let records = read_all(&t, "t", 3).await;
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "nothing was acknowledged");
    // No offset twice, offsets increasing per partition.
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in &records {
        let prev = last.insert(*p, *o);
        assert!(
            prev.is_none_or(|prev| prev < *o),
            "partition {p}: offset {o} after {prev:?}"
        );
    }
    // Every acknowledged record once; nothing twice.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, v) in &records {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: records read twice: {twice:?}"
    );
    let lost: Vec<&String> = acked
        .iter()
        .filter(|v| !seen.contains_key(v.as_str()))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: {} of {} acknowledged records lost, e.g. {lost:?}",
        acked
            .iter()
            .filter(|v| !seen.contains_key(v.as_str()))
            .count(),
        acked.len()
    );
    // The group went on through the kills: it read every record, never two different
    // records at one offset.
    let conflicts = conflicts.lock().unwrap().clone();
    assert!(conflicts.is_empty(), "seed {seed}: {conflicts:?}");
    let consumed = consumed.lock().unwrap();
    let missed: Vec<_> = records
        .iter()
        .filter(|(p, o, v)| consumed.get(&(*p, *o)) != Some(v))
        .take(5)
        .collect();
    assert!(
        missed.is_empty(),
        "seed {seed}: the group did not read {missed:?}"
    );
    println!(
        "{} acknowledged, {} read, {} read by the group",
        acked.len(),
        records.len(),
        consumed.len()
    );
}

fn signal(node: &BrokerProcess, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn produce(t: &Arc<dyn Transport>, acks: i16, values: &[String]) {
    let producer = Producer::new(
        Arc::clone(t),
        ProducerConfig {
            acks,
            enable_idempotence: acks == -1,
            linger_ms: 0,
            delivery_timeout_ms: 30_000,
            ..Default::default()
        },
    );
    let mut ds = Vec::new();
    for v in values {
        let mut r = ProducerRecord::new("d", None::<String>, v.clone());
        r.partition = Some(0);
        ds.push(producer.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    producer.close().await;
}

async fn describe_d(t: &Arc<dyn Transport>) -> Option<rill_log::client::PartitionDescription> {
    let all = Admin::new(Arc::clone(t)).list_topics().await.ok()?;
    all.into_iter()
        .find(|d| d.name == "d")?
        .partition_states
        .into_iter()
        .next()
}

/// A leader takes records with acks=1 that its followers never get, then is cut off
/// (SIGSTOP) while the followers resume and elect one of themselves, which takes new
/// records. The old leader, killed and restarted, truncates its divergent tail to the new
/// leader's history (KIP-101/279: the diverging epoch in Fetch), copies the new records and
/// rejoins the ISR; its log ends byte for byte equal to the new leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_tail_is_truncated_and_the_replica_rejoins() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3);
    // Requests to a frozen broker hang until they time out: keep that short, and keep the
    // leaders this client learned (no refresh while brokers are frozen).
    let mut config = TcpConfig::new(cluster.bootstrap());
    config.request_timeout_ms = 2_000;
    config.metadata_max_age_ms = 600_000;
    let t: Arc<dyn Transport> = Arc::new(TcpTransport::connect(config).await.unwrap());
    let admin = Admin::new(Arc::clone(&t));
    eventually("creating the topic", || {
        admin.create_replicated_topic("d", 1, 3, &[])
    })
    .await;
    let values = |prefix: &str| (0..5).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    let first = eventually("a leader", || async {
        describe_d(&t)
            .await
            .filter(|p| p.leader > 0 && p.isr.len() == 3)
            .ok_or("no leader")
    })
    .await;
    produce(&t, -1, &values("x")).await;
    println!("x produced; leader {}", first.leader);
    let old = first.leader as usize;
    let followers: Vec<usize> = first
        .replicas
        .iter()
        .map(|r| *r as usize)
        .filter(|r| *r != old)
        .collect();

    // The followers freeze; the leader takes records only it will have.
    for f in &followers {
        signal(cluster.nodes[f - 1].as_ref().unwrap(), "-STOP");
    }
    // Fetches the followers had waiting on the leader end empty first (their long poll is
    // `replica.fetch.wait.max.ms`, 500 ms): no answer carries the next records to them.
    tokio::time::sleep(Duration::from_millis(800)).await;
    produce(&t, 1, &values("a")).await;
    println!("a produced");
    signal(cluster.nodes[old - 1].as_ref().unwrap(), "-STOP");
    for f in &followers {
        signal(cluster.nodes[f - 1].as_ref().unwrap(), "-CONT");
    }
    // The frozen leader's session expires; a follower leads in a new epoch.
    let t2 = {
        let mut config = TcpConfig::new(
            followers
                .iter()
                .map(|f| cluster.listeners[f - 1].clone())
                .collect::<Vec<_>>()
                .join(","),
        );
        config.metadata_max_age_ms = 500;
        config.request_timeout_ms = 2_000;
        let t: Arc<dyn Transport> = Arc::new(TcpTransport::connect(config).await.unwrap());
        t
    };
    let moved = eventually("a new leader", || async {
        describe_d(&t2)
            .await
            .filter(|p| p.leader > 0 && p.leader as usize != old)
            .ok_or("the old leader still leads")
    })
    .await;
    assert!(moved.leader_epoch > first.leader_epoch);
    println!("new leader {}", moved.leader);
    produce(&t2, -1, &values("b")).await;
    println!("b produced");

    // The old leader dies frozen and comes back.
    cluster.kill9(old);
    cluster.start_node(old);
    let rejoined = eventually("the old leader back in the ISR", || async {
        describe_d(&t2)
            .await
            .filter(|p| p.isr.contains(&(old as i32)))
            .ok_or("not in the ISR")
    })
    .await;
    assert_eq!(rejoined.leader, moved.leader);
    let got: Vec<String> = read_all(&t2, "d", 1)
        .await
        .into_iter()
        .map(|r| r.2)
        .collect();
    let mut want = values("x");
    want.extend(values("b"));
    assert_eq!(
        got, want,
        "the divergent records are gone, the new leader's are there"
    );
    let segment = |id: usize| {
        std::fs::read(
            cluster
                .dir
                .path()
                .join(format!("n{id}/d-0/00000000000000000000.log")),
        )
        .unwrap()
    };
    let leader_log = segment(moved.leader as usize);
    eventually("the old leader's log to match", || async {
        (segment(old) == leader_log)
            .then_some(())
            .ok_or("logs differ")
    })
    .await;
}

/// kill -9 of the active controller: the other two elect a new one, the metadata is
/// intact (topics, ids, leaders), and topic creation and acks=all produce go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_controller_dies_and_the_cluster_goes_on() {
    let _serial = SERIAL.lock().await;
    use rill_log::controller::rpc::{ControllerRequest, ControllerResponse};
    use rill_log::controller::service::ControllerClient;

    let mut cluster = Cluster::start(3);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    eventually("creating a topic", || {
        admin.create_replicated_topic("before", 2, 3, &[("min.insync.replicas", "2")])
    })
    .await;
    let topics_before = admin.list_topics().await.unwrap();
    let voters: BTreeMap<u64, String> = cluster
        .voters
        .split(',')
        .map(|v| {
            let (id, addr) = v.split_once('@').unwrap();
            (id.parse().unwrap(), addr.to_string())
        })
        .collect();
    let quorum = |voters: BTreeMap<u64, String>| async move {
        let mut client = ControllerClient::new(voters, Duration::from_secs(10));
        match client.call(&ControllerRequest::DescribeQuorum).await {
            Ok(ControllerResponse::Quorum(q)) => q.leader.ok_or("no leader"),
            _ => Err("no answer"),
        }
    };
    let active = eventually("the active controller", || quorum(voters.clone())).await;
    println!("killing the active controller, node {active}");
    cluster.kill9(active as usize);
    let alive: BTreeMap<u64, String> = voters
        .iter()
        .filter(|(id, _)| **id != active)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let next = eventually("a new active controller", || async {
        quorum(alive.clone())
            .await
            .and_then(|l| (l != active).then_some(l).ok_or("old"))
    })
    .await;
    println!("node {next} is active");
    // `rill cluster describe` shows the two brokers left, the new leader, and the dead
    // controller as unreachable; `rill topics describe --under-replicated` shows the
    // partitions whose ISR lost the dead node, and `--under-min-isr` none (2 of 2 remain).
    let rill = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rill {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        rows
    };
    let bootstrap = cluster.bootstrap();
    let rows = rill(&[
        "cluster",
        "describe",
        "--bootstrap-server",
        &bootstrap,
        "--controller-quorum",
        &cluster.voters,
        "--json",
    ]);
    let field = |r: &serde_json::Value, k: &str| r[k].to_string().trim_matches('"').to_string();
    let controllers: BTreeMap<String, String> = rows
        .iter()
        .filter(|r| r["role"] == "controller")
        .map(|r| (field(r, "id"), field(r, "state")))
        .collect();
    assert_eq!(controllers.len(), 3, "{rows:?}");
    assert_eq!(controllers[&next.to_string()], "leader", "{rows:?}");
    assert!(
        controllers[&active.to_string()].starts_with("unreachable"),
        "{rows:?}"
    );
    let brokers = rows.iter().filter(|r| r["role"] == "broker").count();
    assert!(brokers >= 2, "{rows:?}");
    let describe = |flag: &str| {
        rill(&[
            "topics",
            "describe",
            "before",
            flag,
            "--bootstrap-server",
            &bootstrap,
            "--json",
        ])
        .into_iter()
        .filter(|r| r["partition"].is_number())
        .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while describe("--under-replicated") < 2 {
        assert!(
            Instant::now() < deadline,
            "the dead node's partitions never showed as under-replicated"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(describe("--under-min-isr"), 0);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    eventually("creating a topic after the failover", || {
        admin.create_replicated_topic("after", 1, 2, &[])
    })
    .await;
    let after = admin.list_topics().await.unwrap();
    let before = topics_before.iter().find(|d| d.name == "before").unwrap();
    let still = after.iter().find(|d| d.name == "before").unwrap();
    assert_eq!(still.partitions, before.partitions);
    let producer = Producer::new(Arc::clone(&t), ProducerConfig::default());
    for i in 0..10 {
        let d = producer
            .send(ProducerRecord::new(
                "before",
                Some(format!("k{i}")),
                format!("v{i}"),
            ))
            .await
            .unwrap();
        d.wait().await.expect("delivered");
    }
    producer.close().await;
    let read = read_all(&t, "before", 2).await;
    assert_eq!(read.len(), 10);
    // A topic config changed through one broker is the cluster's (committed by the
    // controller): every live broker describes it, and the leaders gate acks=all on it at
    // once (min.insync.replicas 3 with a node dead: NOT_ENOUGH_REPLICAS).
    use rill_log::client::admin::ConfigOp;
    let min_isr = |v: &str| [("min.insync.replicas", ConfigOp::Set(v.to_string()))];
    admin
        .alter_topic_configs("before", &min_isr("3"))
        .await
        .unwrap();
    for node in cluster.nodes.iter().flatten() {
        let mut config = TcpConfig::new(node.addr.clone());
        config.metadata_max_age_ms = 1_000;
        let one: Arc<dyn Transport> = Arc::new(TcpTransport::connect(config).await.unwrap());
        let configs = Admin::new(one)
            .describe_topic_configs("before")
            .await
            .unwrap();
        assert_eq!(
            configs.get("min.insync.replicas").map(String::as_str),
            Some("3"),
            "{}",
            node.addr
        );
    }
    let strict = Producer::new(
        Arc::clone(&t),
        ProducerConfig {
            delivery_timeout_ms: 3_000,
            ..ProducerConfig::default()
        },
    );
    let refused = strict
        .send(ProducerRecord::new(
            "before",
            Some("k".to_string()),
            "v".to_string(),
        ))
        .await
        .unwrap()
        .wait()
        .await;
    let error = refused.expect_err("acks=all under min.insync.replicas 3 with two replicas");
    assert_eq!(
        error.kafka_error(),
        Some(rill_log::client::ResponseError::NotEnoughReplicas),
        "{error}"
    );
    strict.close().await;
    admin
        .alter_topic_configs("before", &min_isr("2"))
        .await
        .unwrap();
}

/// The broker coordinating `key` (0: a group, 1: a transactional id), by FindCoordinator.
async fn coordinator_of(t: &Arc<dyn Transport>, key_type: i8, key: &str) -> Result<i32, String> {
    use kafka_protocol::messages::{RequestKind, ResponseKind};
    let key = kafka_protocol::protocol::StrBytes::from_string(key.into());
    let req = kafka_protocol::messages::FindCoordinatorRequest::default()
        .with_key_type(key_type)
        .with_key(key.clone())
        .with_coordinator_keys(vec![key]);
    match t.send(RequestKind::FindCoordinator(req)).await {
        Ok(Some(ResponseKind::FindCoordinator(r))) => match r.coordinators.first() {
            Some(c) if c.error_code == 0 => Ok(c.node_id.0),
            None if r.error_code == 0 => Ok(r.node_id.0),
            _ => Err(format!("{r:?}")),
        },
        other => Err(format!("{other:?}")),
    }
}

/// Transactions across a kill -9 of their coordinator (KIP-98 in a cluster): the
/// coordinator is the leader of the transactional id's `__transaction_state` partition, and
/// the offsets' group coordinator the leader of the group's `__consumer_offsets` partition;
/// both are killed mid-run. Every transaction whose commit was acknowledged is visible to
/// read_committed readers exactly once, every aborted one never, one whose commit failed
/// all or nothing; the group's committed offset is the last committed transaction's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_their_coordinators_kill() {
    use rill_log::client::{ConsumerGroupMetadata, IsolationLevel};
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3);
    let t = cluster.transport().await;
    let logs = cluster.dump_logs();
    *LOGS.lock().unwrap() = Some(Box::new(move || format!("node logs: {logs}")));
    let admin = Admin::new(Arc::clone(&t));
    eventually("creating a topic", || {
        admin.create_replicated_topic("tx", 2, 3, &[("min.insync.replicas", "2")])
    })
    .await;
    let config = ProducerConfig {
        transactional_id: Some("txn-a".into()),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(Arc::clone(&t), config);
    eventually("init_transactions", || producer.init_transactions()).await;
    let group = ConsumerGroupMetadata {
        group_id: "txn-group".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
    };
    const ROUNDS: usize = 12;
    // Per round: Some(true) committed, Some(false) aborted, None: the commit failed.
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        if round == 4 || round == 8 {
            let kind = if round == 4 { 1 } else { 0 };
            let key = if round == 4 { "txn-a" } else { "txn-group" };
            let node = eventually("the coordinator", || coordinator_of(&t, kind, key)).await;
            println!("round {round}: killing node {node}, the coordinator of {key}");
            cluster.kill9(node as usize);
            // Back in a while: the two others carry on meanwhile.
            let restart_at = Instant::now() + Duration::from_secs(3);
            let node = node as usize;
            let outcome = run_round(&producer, round, &group).await;
            outcomes.push(outcome);
            tokio::time::sleep_until(restart_at.into()).await;
            cluster.start_node(node);
            continue;
        }
        outcomes.push(run_round(&producer, round, &group).await);
    }
    producer.close().await;
    println!("outcomes: {outcomes:?}");
    assert!(
        outcomes.iter().filter(|o| **o == Some(true)).count() >= ROUNDS / 2,
        "most transactions commit: {outcomes:?}"
    );
    let t = cluster.transport().await;
    let mut c = Consumer::new(
        Arc::clone(&t),
        ConsumerConfig {
            fetch_max_wait_ms: 50,
            isolation_level: IsolationLevel::ReadCommitted,
            ..Default::default()
        },
    );
    let tps = vec![TopicPartition::new("tx", 0), TopicPartition::new("tx", 1)];
    c.assign(tps.clone());
    let seek_deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = c.seek_to_beginning(&tps).await {
        assert!(Instant::now() < seek_deadline, "seeking: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen: Vec<String> = Vec::new();
    let quiet_until = Instant::now() + Duration::from_secs(20);
    let mut last_new = Instant::now();
    while Instant::now() < quiet_until && last_new.elapsed() < Duration::from_secs(4) {
        if let Ok(records) = c.poll().await {
            if !records.is_empty() {
                last_new = Instant::now();
            }
            seen.extend(
                records
                    .into_iter()
                    .map(|r| String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap()),
            );
        }
    }
    let mut by_round: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for v in &seen {
        let round: usize = v.split('-').nth(1).unwrap().parse().unwrap();
        by_round.entry(round).or_default().push(v.clone());
    }
    for (round, outcome) in outcomes.iter().enumerate() {
        let got = by_round.remove(&round).unwrap_or_default();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "round {round} read twice: {got:?}");
        match outcome {
            Some(true) => assert_eq!(got.len(), 10, "committed round {round}: {got:?}"),
            Some(false) => assert!(got.is_empty(), "aborted round {round} visible: {got:?}"),
            None => assert!(
                got.is_empty() || got.len() == 10,
                "round {round} partly visible: {got:?}"
            ),
        }
    }
    // The group's offset is the one sent with the last transaction that committed (or a
    // later one whose commit failed but went through).
    let admin = Admin::new(Arc::clone(&t));
    let offsets = eventually("the group's offsets", || {
        admin.list_group_offsets("txn-group")
    })
    .await;
    let committed = offsets.get(&TopicPartition::new("tx", 0)).map(|o| o.0);
    let last_ok = outcomes.iter().rposition(|o| *o == Some(true)).unwrap() as i64;
    let last_maybe = outcomes.iter().rposition(|o| *o != Some(false)).unwrap() as i64;
    assert!(
        committed.is_some_and(|o| o >= last_ok && o <= last_maybe),
        "committed offset {committed:?}, last committed round {last_ok}: {outcomes:?}"
    );
    *LOGS.lock().unwrap() = None;
}

/// One transaction of ten records `r-<round>-<i>` with the group offset `round` of partition
/// `tx`-0; every third round is aborted. `Some(true)`: committed, `Some(false)`: aborted,
/// `None`: it failed (and was aborted here; the commit may still have gone through).
async fn run_round(
    producer: &Producer,
    round: usize,
    group: &rill_log::client::ConsumerGroupMetadata,
) -> Option<bool> {
    let attempt = async {
        producer.begin_transaction()?;
        for i in 0..10 {
            producer
                .send(ProducerRecord::new(
                    "tx",
                    Some(format!("k{i}")),
                    format!("r-{round}-{i}"),
                ))
                .await?;
        }
        let offsets = [(TopicPartition::new("tx", 0), round as i64)];
        producer
            .send_offsets_to_transaction(&offsets, group)
            .await?;
        if round % 3 == 2 {
            producer.abort_transaction().await?;
            return Ok(false);
        }
        producer.commit_transaction().await?;
        Ok::<bool, rill_log::client::ClientError>(true)
    };
    match attempt.await {
        Ok(committed) => Some(committed),
        Err(e) => {
            println!("round {round}: {e}");
            let _ = producer.abort_transaction().await;
            eventually("init_transactions", || producer.init_transactions()).await;
            // An aborted round never commits; a failed commit may have gone through.
            (round % 3 == 2).then_some(false)
        }
    }
}

/// Whether the Python Kafka clients and kcat are installed (`.ci/run` installs them; CI
/// sets `RILL_COMPAT_REQUIRED=1`, which makes their absence a failure).
fn kafka_clients_present() -> bool {
    let python = std::process::Command::new("python3")
        .args(["-c", "import confluent_kafka, kafka, aiokafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    let kcat = std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if python && kcat {
        return true;
    }
    assert!(
        std::env::var("RILL_COMPAT_REQUIRED").map_or(true, |v| v != "1"),
        "the cluster's client scenarios need python3 with confluent-kafka, kafka-python, \
         aiokafka, and kcat"
    );
    eprintln!("SKIPPED: the cluster's client scenarios need the Kafka clients (see .ci/run)");
    false
}

/// Runs `cmd` (stdout piped) and, once it prints a line starting with `trigger`, kills the
/// leader of partition 0 of `topic` and starts it again 3 s later; returns the command's
/// success and its output.
async fn run_killing_leader(
    cluster: &mut Cluster,
    t: &Arc<dyn Transport>,
    topic: &str,
    mut cmd: std::process::Command,
    trigger: &str,
) -> (bool, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s);
        s
    });
    let mut out = String::new();
    let mut killed: Option<(usize, Instant)> = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        while let Ok(line) = rx.try_recv() {
            if killed.is_none() && line.starts_with(trigger) {
                let leader = leaders(t, topic).await.first().copied().unwrap_or(1).max(1);
                println!("{topic}: killing node {leader}, the leader of partition 0");
                cluster.kill9(leader as usize);
                killed = Some((leader as usize, Instant::now()));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if let Some((node, at)) = killed {
            if at.elapsed() > Duration::from_secs(3) && cluster.nodes[node - 1].is_none() {
                cluster.start_node(node);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let _ = lines.join();
            while let Ok(line) = rx.try_recv() {
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str(&errors.join().unwrap_or_default());
            if let Some((node, _)) = killed {
                if cluster.nodes[node - 1].is_none() {
                    cluster.start_node(node);
                }
            }
            return (status.success() && killed.is_some(), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return (false, format!("timed out\n{out}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Real Kafka clients against the three-broker cluster while the leader of the partition
/// they write is killed: confluent-kafka (librdkafka), kafka-python and aiokafka each
/// produce with acks=all (idempotent) through the failover and read everything back in a
/// consumer group that commits as it goes and survives the kill (`compat/cluster_clients.py`);
/// kcat produces with acks=all through a kill and every line is in the log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_ride_through_a_leader_kill() {
    if !kafka_clients_present() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cluster_clients.py");
    for client in ["confluent", "kafka-python", "aiokafka", "kcat"] {
        let topic = format!("ha-{client}");
        eventually("creating the topic", || {
            admin.create_replicated_topic(&topic, 2, 3, &[("min.insync.replicas", "2")])
        })
        .await;
        let bootstrap = cluster.listeners.join(",");
        let (ok, out) = if client == "kcat" {
            // 300 lines over 6 s into an idempotent acks=all kcat producer; the kill comes
            // 2 s in.
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c").arg(format!(
                "(i=0; while [ $i -lt 300 ]; do echo v$i; i=$((i+1)); sleep 0.02; done) | \
                 kcat -P -b {bootstrap} -t {topic} -X acks=all -X enable.idempotence=true \
                 -X message.timeout.ms=60000 -X topic.metadata.refresh.interval.ms=1000 & \
                 sleep 2; echo produced 100; wait $!"
            ));
            run_killing_leader(&mut cluster, &t, &topic, cmd, "produced").await
        } else {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg(&script)
                .arg(client)
                .arg(&bootstrap)
                .arg(&topic)
                .arg(format!("group-{client}"))
                .arg("300");
            run_killing_leader(&mut cluster, &t, &topic, cmd, "produced 100").await
        };
        assert!(
            ok,
            "{client} failed:\n{out}\nnode logs: {}",
            cluster.dump_logs()
        );
        let summary = out.lines().find(|l| l.starts_with("ok:")).unwrap_or("done");
        println!("{client}: {summary}");
        if client == "kcat" {
            let t = cluster.transport().await;
            let mut values: Vec<String> = read_all(&t, &topic, 2)
                .await
                .into_iter()
                .map(|r| r.2)
                .collect();
            values.sort();
            let mut want: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
            want.sort();
            assert_eq!(values, want, "kcat's lines, each once");
        }
    }
}

/// A failure in [`eventually`] prints the stderr of `cluster`'s processes so far.
fn report_logs_of(cluster: &Cluster) {
    let stderrs: Vec<_> = cluster
        .history
        .iter()
        .map(|(id, e)| (*id, Arc::clone(e)))
        .collect();
    *LOGS.lock().unwrap() = Some(Box::new(move || {
        stderrs
            .iter()
            .map(|(id, e)| format!("--- node {id} ---\n{}", e.lock().unwrap()))
            .collect::<Vec<_>>()
            .join("\n")
    }));
}

/// Waits until the leaders of `topic`'s partitions are `want`.
async fn leaders_become(t: &Arc<dyn Transport>, topic: &str, want: &[i32]) {
    eventually("the partitions' leaders", || async {
        let now = leaders(t, topic).await;
        if now == want {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
}

/// Each partition's (leader, replicas, ISR) of `topic`.
async fn partition_states(t: &Arc<dyn Transport>, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
    let all = Admin::new(Arc::clone(t))
        .list_topics()
        .await
        .unwrap_or_default();
    all.into_iter()
        .find(|d| d.name == topic)
        .map(|d| {
            d.partition_states
                .into_iter()
                .map(|p| (p.leader, p.replicas, p.isr))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates `topic` (3 partitions, RF 3, min ISR 2) and waits until each partition is led by
/// its first replica with all three in sync; returns those preferred leaders.
async fn create_balanced(t: &Arc<dyn Transport>, topic: &str) -> Vec<i32> {
    let admin = Admin::new(Arc::clone(t));
    eventually("creating the topic", || {
        admin.create_replicated_topic(topic, 3, 3, &[("min.insync.replicas", "2")])
    })
    .await;
    eventually(
        "the topic led by its preferred replicas, all in sync",
        || async {
            let states = partition_states(t, topic).await;
            if states.len() == 3
                && states
                    .iter()
                    .all(|(l, r, isr)| *l == r[0] && isr.len() == 3)
            {
                Ok(states.iter().map(|(l, _, _)| *l).collect::<Vec<_>>())
            } else {
                Err(states)
            }
        },
    )
    .await
}

/// Waits until every partition of `topic` has a leader and all three replicas in sync;
/// returns the leaders.
async fn all_in_sync(t: &Arc<dyn Transport>, topic: &str) -> Vec<i32> {
    eventually("every replica of the topic in sync", || async {
        let states = partition_states(t, topic).await;
        if states.len() == 3 && states.iter().all(|(l, _, isr)| *l >= 0 && isr.len() == 3) {
            Ok(states.iter().map(|(l, _, _)| *l).collect::<Vec<_>>())
        } else {
            Err(states)
        }
    })
    .await
}

/// Kills broker `victim`, waits until it no longer leads anything of `topic`, restarts it
/// and waits until it is back in every ISR of `topic`. Returns the leaders then.
async fn bounce(
    cluster: &mut Cluster,
    t: &Arc<dyn Transport>,
    topic: &str,
    victim: usize,
) -> Vec<i32> {
    cluster.kill9(victim);
    let v = victim as i32;
    eventually("leaderships moved off the killed broker", || async {
        let states = partition_states(t, topic).await;
        let moved = !states.is_empty() && states.iter().all(|(l, _, _)| *l != v && *l >= 0);
        if moved {
            Ok(())
        } else {
            Err(states)
        }
    })
    .await;
    cluster.start_node(victim);
    all_in_sync(t, topic).await
}

/// Kafka's preferred-leader election (`ElectLeaders`, KIP-460), with the automatic rebalance
/// off: a restarted broker gets no leadership back by itself; an election moves each
/// partition's leadership to its first replica, answering as Kafka does (elected,
/// ELECTION_NOT_NEEDED, UNKNOWN_TOPIC_OR_PARTITION), and a second one finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preferred_leader_election_returns_leaderships_to_the_first_replicas() {
    use kafka_protocol::ResponseError::{ElectionNotNeeded, UnknownTopicOrPartition};
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, &["auto.leader.rebalance.enable=false"]);
    report_logs_of(&cluster);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    let preferred = create_balanced(&t, "e").await;
    let victim = preferred[0] as usize;
    let after = bounce(&mut cluster, &t, "e", victim).await;
    assert_ne!(after[0], preferred[0], "no leadership comes back by itself");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        leaders(&t, "e").await,
        after,
        "still no rebalance with it off"
    );

    let mut wanted: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("e", p)).collect();
    wanted.push(TopicPartition::new("nope", 0));
    let results = admin.elect_leaders(true, Some(&wanted)).await.unwrap();
    let expected: Vec<(TopicPartition, Option<kafka_protocol::ResponseError>)> = (0..3)
        .map(|p| {
            let moved = after[p as usize] != preferred[p as usize];
            (
                TopicPartition::new("e", p),
                (!moved).then_some(ElectionNotNeeded),
            )
        })
        .chain([(
            TopicPartition::new("nope", 0),
            Some(UnknownTopicOrPartition),
        )])
        .collect();
    assert_eq!(results, expected);
    // Every broker's metadata has it soon after (the one that answered already did).
    leaders_become(&t, "e", &preferred).await;
    // Every partition, asked by omission: nothing needed, so nothing listed for `e`.
    let again = admin.elect_leaders(true, None).await.unwrap();
    assert!(again.iter().all(|(tp, _)| tp.topic != "e"), "{again:?}");
    // Records still flow through the elected leaders.
    produce_to(&t, "e", 30).await;

    // DescribeLogDirs goes to the broker asked: each answers with its own directory, holding
    // a replica of every partition of `e` with the records in it (once replicated).
    for id in 1..=3 {
        eventually("each broker's log directory", || async {
            let dirs = admin
                .describe_log_dirs(id)
                .await
                .map_err(|e| e.to_string())?;
            let dir = dirs.first().ok_or("no directory")?;
            let sizes: Vec<i64> = (0..3)
                .map(|p| {
                    let tp = TopicPartition::new("e", p);
                    dir.partitions.iter().find(|d| d.0 == tp).map_or(0, |d| d.1)
                })
                .collect();
            let mine = dir.log_dir.ends_with(&format!("n{id}"));
            if mine && sizes.iter().all(|s| *s > 0) && dir.usable_bytes > 0 {
                Ok(())
            } else {
                Err(format!("{dir:?}"))
            }
        })
        .await;
    }
}

/// `auto.leader.rebalance.enable` (on by default) at a short
/// `leader.imbalance.check.interval.seconds`: a restarted broker gets its preferred
/// leaderships back without anyone asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_rebalance_returns_leaderships_to_a_restarted_broker() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, &["leader.imbalance.check.interval.seconds=1"]);
    report_logs_of(&cluster);
    let t = cluster.transport().await;
    let preferred = create_balanced(&t, "b").await;
    bounce(&mut cluster, &t, "b", preferred[1] as usize).await;
    leaders_become(&t, "b", &preferred).await;
    produce_to(&t, "b", 30).await;
}

/// `n` records with acks=all to every partition of `topic`, all acknowledged.
async fn produce_to(t: &Arc<dyn Transport>, topic: &str, n: usize) {
    let producer = Producer::new(
        Arc::clone(t),
        ProducerConfig {
            acks: -1,
            linger_ms: 0,
            delivery_timeout_ms: 30_000,
            ..Default::default()
        },
    );
    let mut ds = Vec::new();
    for i in 0..n {
        let mut r = ProducerRecord::new(topic, None::<String>, format!("v{i}"));
        r.partition = Some((i % 3) as i32);
        ds.push(producer.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    producer.close().await;
}

/// A rolling restart under a steady acks=all load (Kafka's controlled shutdown): each broker
/// in turn gets SIGTERM, stops, starts again and rejoins every ISR. A broker stops only once
/// the controller moved its leaderships away (so, the moment its process is gone, metadata
/// names other leaders, where a crash would leave it leader until its session expires), the
/// idempotent producer sees no failed send, and every acknowledged record is there exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_send_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, &["leader.imbalance.check.interval.seconds=1"]);
    report_logs_of(&cluster);
    let t = cluster.transport().await;
    create_balanced(&t, "r").await;

    let load = SteadyLoad::start(&t, "r", 0).await;

    for id in 1..=3usize {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut node = cluster.nodes[id - 1].take().expect("running");
        let status = tokio::task::block_in_place(|| node.terminate(40));
        assert!(
            status.is_some_and(|s| s.success()),
            "node {id} stops on SIGTERM"
        );
        // Gone, and already no leader anywhere: its leaderships moved before it stopped.
        let states = partition_states(&t, "r").await;
        assert!(
            states.iter().all(|(l, _, _)| *l != id as i32),
            "node {id} still leads after its controlled shutdown: {states:?}"
        );
        cluster.start_node(id);
        all_in_sync(&t, "r").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = load.finish().await;
    each_exactly_once(&t, "r", 3, &acknowledged).await;
    eprintln!(
        "rolling restart: {} records, none failed, none lost",
        acknowledged.len()
    );
}

/// An idempotent acks=all producer sending `{topic}{i}` keyed by itself every 5 ms
/// (timer-paced, with retries) until finished.
struct SteadyLoad {
    producer: Arc<Producer>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(String, rill_log::client::Delivery)>>,
    backlog: Vec<(String, rill_log::client::Delivery)>,
}

impl SteadyLoad {
    /// Sends `backlog` records at once, then the steady load.
    async fn start(t: &Arc<dyn Transport>, topic: &str, backlog: u64) -> SteadyLoad {
        let producer = Arc::new(Producer::new(
            Arc::clone(t),
            ProducerConfig {
                acks: -1,
                enable_idempotence: true,
                linger_ms: 0,
                delivery_timeout_ms: 60_000,
                ..Default::default()
            },
        ));
        let send = |producer: Arc<Producer>, topic: String, i: u64| async move {
            let value = format!("{topic}{i}");
            let r = ProducerRecord::new(topic.as_str(), Some(value.clone()), value.clone());
            (value, producer.send(r).await.expect("queued"))
        };
        let mut sent = Vec::new();
        for i in 0..backlog {
            sent.push(send(Arc::clone(&producer), topic.to_string(), i).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (producer, stop, topic) =
                (Arc::clone(&producer), Arc::clone(&stop), topic.to_string());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                let mut sent = Vec::new();
                let mut i = backlog;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    sent.push(send(Arc::clone(&producer), topic.clone(), i).await);
                    i += 1;
                }
                sent
            })
        };
        SteadyLoad {
            producer,
            stop,
            task,
            backlog: sent,
        }
    }

    /// Stops sending; asserts no send failed; the values acknowledged.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut sent = self.backlog;
        sent.extend(self.task.await.unwrap());
        let mut failed = Vec::new();
        let mut acknowledged = Vec::new();
        for (value, delivery) in sent {
            match delivery.await {
                Ok(_) => acknowledged.push(value),
                Err(e) => failed.push((value, e)),
            }
        }
        assert!(
            failed.is_empty(),
            "{} failed sends: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        self.producer.close().await;
        acknowledged
    }
}

/// Every value of `acknowledged` is in `topic` once, and nothing is there twice.
async fn each_exactly_once(
    t: &Arc<dyn Transport>,
    topic: &str,
    partitions: i32,
    acknowledged: &[String],
) {
    let records = read_all(t, topic, partitions).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, v) in &records {
        *seen.entry(v.clone()).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    let missing = acknowledged
        .iter()
        .filter(|v| !seen.contains_key(*v))
        .count();
    assert_eq!(missing, 0, "acknowledged records missing");
}

/// A partition reassigned under load (KIP-455), {a,b,c} to {b,c,d} on four brokers: the
/// new replica catches up and joins the ISR, the old one leaves (with the leadership, since
/// it led) and deletes its copy; the idempotent producer sees no failed send and every
/// acknowledged record is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_another_broker_under_load_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(4, &["leader.imbalance.check.interval.seconds=1"]);
    report_logs_of(&cluster);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    let (leader, current) = create_one_partition(&t, "m").await;
    let newcomer = (1..=4).find(|b| !current.contains(b)).unwrap();
    // The first replica (the leader) leaves; the newcomer joins last.
    let target: Vec<i32> = current[1..].iter().copied().chain([newcomer]).collect();
    assert_eq!(leader, current[0]);

    // A backlog for the new replica to copy, then a steady load while it does.
    let load = SteadyLoad::start(&t, "m", 2_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m0 = TopicPartition::new("m", 0);
    let clock = Instant::now();
    let started = admin
        .alter_partition_reassignments(&[(m0.clone(), Some(target.clone()))])
        .await
        .unwrap();
    assert_eq!(started, vec![(m0.clone(), None)]);
    eventually("the reassignment to complete", || async {
        let ongoing = admin
            .list_partition_reassignments()
            .await
            .map_err(|e| e.to_string())?;
        let states = partition_states(&t, "m").await;
        match states.first() {
            Some((l, r, isr))
                if ongoing.is_empty() && *r == target && isr.len() == 3 && *l == target[0] =>
            {
                Ok(())
            }
            _ => Err(format!("{ongoing:?} {states:?}")),
        }
    })
    .await;
    eprintln!("reassignment complete after {:?}", clock.elapsed());
    // The old leader answers the produces waiting on it when it loses the partition, not at
    // their 30 s timeout (requests behind them on a connection would wait as long).
    assert!(
        clock.elapsed() < Duration::from_secs(15),
        "the reassignment took {:?}",
        clock.elapsed()
    );
    // The broker that left deletes its copy.
    eventually("the old replica's log deleted", || async {
        let dirs = admin
            .describe_log_dirs(current[0])
            .await
            .map_err(|e| e.to_string())?;
        let held = dirs.iter().flat_map(|d| &d.partitions).any(|p| p.0 == m0);
        if held {
            Err("still there".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acknowledged = load.finish().await;
    each_exactly_once(&t, "m", 1, &acknowledged).await;
    eprintln!(
        "reassignment: {} records, none failed, none lost",
        acknowledged.len()
    );

    // Decommissioned: the drained broker stops and leaves the cluster (UnregisterBroker).
    let gone = current[0];
    let mut node = cluster.nodes[gone as usize - 1].take().expect("running");
    let status = tokio::task::block_in_place(|| node.terminate(40));
    assert!(status.is_some_and(|s| s.success()));
    admin.unregister_broker(gone).await.unwrap();
    eventually("the broker gone from the cluster", || async {
        let brokers = cluster_brokers(&t).await;
        if brokers.contains(&gone) {
            Err(brokers)
        } else {
            Ok(())
        }
    })
    .await;
    let again = admin.unregister_broker(gone).await.unwrap_err();
    assert_eq!(
        again.kafka_error(),
        Some(kafka_protocol::ResponseError::BrokerIdNotRegistered)
    );
}

/// Creates `topic` with one partition (RF 3, min ISR 2) and waits until all three replicas
/// are in sync; its leader and replicas.
async fn create_one_partition(t: &Arc<dyn Transport>, topic: &str) -> (i32, Vec<i32>) {
    let admin = Admin::new(Arc::clone(t));
    eventually("creating the topic", || {
        admin.create_replicated_topic(topic, 1, 3, &[("min.insync.replicas", "2")])
    })
    .await;
    eventually("the topic in sync", || async {
        let states = partition_states(t, topic).await;
        match states.first() {
            Some((l, r, isr)) if *l >= 0 && isr.len() == 3 => Ok((*l, r.clone())),
            _ => Err(states),
        }
    })
    .await
}

/// The brokers DescribeCluster lists.
async fn cluster_brokers(t: &Arc<dyn Transport>) -> Vec<i32> {
    use kafka_protocol::messages::{DescribeClusterRequest, RequestKind, ResponseKind};
    match t
        .send(RequestKind::DescribeCluster(
            DescribeClusterRequest::default(),
        ))
        .await
    {
        Ok(Some(ResponseKind::DescribeCluster(c))) => {
            c.brokers.iter().map(|b| b.broker_id.0).collect()
        }
        _ => Vec::new(),
    }
}

/// The follower throttle (`follower.replication.throttled.rate`, 4 MB/s here) on a
/// reassignment: the new replica copies a 24 MB partition at the rate, within 20 % (the
/// issue's bound), measured as the partition's size over the time from the reassignment's
/// start to its completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassignment_copies_at_the_throttled_rate() {
    const RATE: f64 = 4_000_000.0;
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with(4, &["follower.replication.throttled.rate=4000000"]);
    report_logs_of(&cluster);
    let t = cluster.transport().await;
    let admin = Admin::new(Arc::clone(&t));
    let (leader, current) = create_one_partition(&t, "th").await;
    // 24 MB, replicated (unthrottled) to the current replicas.
    let producer = Producer::new(
        Arc::clone(&t),
        ProducerConfig {
            acks: -1,
            linger_ms: 5,
            ..Default::default()
        },
    );
    let value = "x".repeat(1_000);
    let mut ds = Vec::new();
    for _ in 0..24_000 {
        let r = ProducerRecord::new("th", None::<String>, value.clone());
        ds.push(producer.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    producer.close().await;
    let th0 = TopicPartition::new("th", 0);
    let dirs = admin.describe_log_dirs(leader).await.unwrap();
    let size = dirs[0]
        .partitions
        .iter()
        .find(|p| p.0 == th0)
        .map(|p| p.1)
        .unwrap();
    assert!(size > 20_000_000, "{size} bytes");

    let newcomer = (1..=4).find(|b| !current.contains(b)).unwrap();
    let target: Vec<i32> = current.iter().copied().skip(1).chain([newcomer]).collect();
    let start = Instant::now();
    admin
        .alter_partition_reassignments(&[(th0.clone(), Some(target.clone()))])
        .await
        .unwrap();
    let deadline = start + Duration::from_secs(60);
    loop {
        let states = partition_states(&t, "th").await;
        if states
            .first()
            .is_some_and(|(_, r, isr)| *r == target && isr.len() == 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no completion: {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    let rate = size as f64 / took.as_secs_f64();
    eprintln!(
        "throttled copy: {size} bytes in {took:?}: {:.2} MB/s against {:.2}",
        rate / 1e6,
        RATE / 1e6
    );
    assert!(
        (0.8 * RATE..=1.2 * RATE).contains(&rate),
        "{:.2} MB/s against a {:.2} MB/s throttle",
        rate / 1e6,
        RATE / 1e6
    );
}
