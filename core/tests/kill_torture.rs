//! Torture tests: a counting application runs as a child process (this test binary, re-run
//! with `torture_child`) over a real TCP broker, and is killed with SIGKILL at random moments
//! while input is being produced, then restarted on the same state directory.
//!
//! - Under exactly_once_v2 the committed output, read `read_committed`, is exactly the
//!   reference: for every key the counts 1, 2, ..., n in order, each carrying the id of the
//!   input record that made it — no duplicate, no gap.
//! - Under at_least_once every input record reaches the output at least once, and the kills
//!   do produce duplicates.
//!
//! The seed of the kill schedule is printed; `RILL_TORTURE_SEED` replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::runtime::{KafkaStreams, ProcessingGuarantee, StreamsConfig};
use rill_core::topology::{ProcessorSupplier, StoreBackend, Topology};
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Transport,
};
use rill_log::net::{Server, ServerConfig, TcpConfig, TcpTransport};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

mod common;
use common::{counting_topology_with, increment, text};

const KEYS: usize = 300;
const RECORDS: usize = 3_000;
const KILLS: usize = 22;
const PARTITIONS: i32 = 2;

/// Counts per key; emits `"<count> <input id>"`.
struct CountWithId;

impl Processor for CountWithId {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let key = r.key.clone().unwrap_or_default();
        let n = increment(ctx, &key)?;
        let id = text(&r.value);
        ctx.forward(Record::new(
            Some(key),
            Some(format!("{n} {id}")),
            r.timestamp,
        ))
    }
}

fn topology() -> Topology {
    let count: ProcessorSupplier = Arc::new(|| Box::new(CountWithId));
    counting_topology_with("input", "output", StoreBackend::Fjall, count)
}

/// The child: runs the application until killed (or until it fails: exit code 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the torture tests as their child process"]
async fn torture_child() {
    let (Ok(bootstrap), Ok(state), Ok(guarantee)) = (
        std::env::var("RILL_TORTURE_BOOTSTRAP"),
        std::env::var("RILL_TORTURE_STATE"),
        std::env::var("RILL_TORTURE_GUARANTEE"),
    ) else {
        eprintln!("torture_child needs RILL_TORTURE_BOOTSTRAP, _STATE and _GUARANTEE");
        std::process::exit(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let transport: Arc<dyn Transport> = Arc::new(
        TcpTransport::connect(TcpConfig::new(bootstrap))
            .await
            .unwrap(),
    );
    let mut config = StreamsConfig::new("torture");
    config.state_dir = Some(PathBuf::from(state));
    config.group_instance_id = Some("torture".into());
    config.poll_ms = 50;
    config.session_timeout_ms = 6_000;
    config.heartbeat_interval_ms = 200;
    config.transaction_timeout_ms = 5_000;
    // Checkpoints often, so most kills leave local state ahead of its checkpoint.
    config.checkpoint_after_changes = 40;
    // A write-behind budget of a few changes: kills find committed changes held in memory,
    // and local state written past its checkpoint by a spill.
    config.write_behind_max_bytes = 300;
    if guarantee == "eos" {
        config.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
        // Longer than the input's 80 ms pace, so a transaction with output is open most of the
        // time and kills abort some.
        config.commit_interval_ms = 200;
    } else {
        config.commit_interval_ms = 400;
    }
    let app = KafkaStreams::start(topology(), transport, config);
    while app.is_running() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the application stopped: {:?}", app.close().await);
    std::process::exit(1);
}

/// A small deterministic RNG (xorshift64*), so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    state: PathBuf,
    logs: PathBuf,
    addr: String,
    transport: Arc<dyn Transport>,
    _server: Server,
    _broker: Arc<Broker>,
    children: usize,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = BrokerConfig::new(dir.path().join("broker"));
        config.offsets_topic_num_partitions = 1;
        config.transaction_state_num_partitions = 1;
        config.group.initial_rebalance_delay_ms = 0;
        config.group_tick_ms = 20;
        config.advertised_host = "127.0.0.1".into();
        config.advertised_port = i32::from(addr.port());
        let broker = Arc::new(Broker::open(config, Arc::new(SystemClock)).unwrap());
        let server = Server::start(listener, Arc::clone(&broker), ServerConfig::default());
        let addr = addr.to_string();
        let transport: Arc<dyn Transport> =
            Arc::new(TcpTransport::connect(TcpConfig::new(&addr)).await.unwrap());
        let admin = Admin::new(Arc::clone(&transport));
        admin.create_topic("input", PARTITIONS, &[]).await.unwrap();
        admin.create_topic("output", PARTITIONS, &[]).await.unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        Harness {
            state: dir.path().join("state"),
            logs,
            addr,
            transport,
            _server: server,
            _broker: broker,
            _dir: dir,
            children: 0,
        }
    }

    fn spawn(&mut self, guarantee: &str) -> Child {
        self.children += 1;
        let log = std::fs::File::create(self.log(self.children)).unwrap();
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "torture_child", "--ignored", "--nocapture"])
            .env("RILL_TORTURE_BOOTSTRAP", &self.addr)
            .env("RILL_TORTURE_STATE", &self.state)
            .env("RILL_TORTURE_GUARANTEE", guarantee)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// The last lines of every child's log, for a failure message.
    fn logs_tail(&self) -> String {
        let mut out = String::new();
        for child in 1..=self.children {
            let log = read(&self.log(child));
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n");
            out.push_str(&format!("--- child {child}:\n{tail}\n"));
        }
        out
    }

    fn log(&self, child: usize) -> PathBuf {
        self.logs.join(format!("child-{child}.log"))
    }

    /// SIGKILLs `child`, which must still be running.
    fn kill(&self, mut child: Child) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "child {} exited by itself ({status}):\n{}",
                self.children,
                read(&self.log(self.children))
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// Produces `RECORDS` records (value = their id, key = `k<id % KEYS>`) over about 12 s.
async fn produce_slowly(transport: Arc<dyn Transport>) {
    let p = Producer::new(transport, ProducerConfig::default());
    for chunk in 0..RECORDS / 20 {
        let mut ds = Vec::new();
        for i in chunk * 20..(chunk + 1) * 20 {
            let r = ProducerRecord::new("input", Some(format!("k{}", i % KEYS)), i.to_string());
            ds.push(p.send(r).await.unwrap());
        }
        for d in ds {
            d.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    p.close().await;
}

/// The input ids of each key, in order.
fn reference() -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..RECORDS {
        m.entry(format!("k{}", i % KEYS))
            .or_default()
            .push(i as u64);
    }
    m
}

/// Every output record so far, per key in offset order: (count, input id).
async fn read_output(
    transport: &Arc<dyn Transport>,
    isolation_level: IsolationLevel,
    done: impl Fn(&BTreeMap<String, Vec<(u64, u64)>>) -> bool,
    deadline: Duration,
) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut c = Consumer::new(
        Arc::clone(transport),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 100,
            max_poll_records: 10_000,
            isolation_level,
            ..Default::default()
        },
    );
    c.assign((0..PARTITIONS).map(|p| TopicPartition::new("output", p)));
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let started = Instant::now();
    while !done(&out) && started.elapsed() < deadline {
        // (A poll may fail while a broker of the cluster variant restarts: poll again.)
        let Ok(records) = c.poll().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for r in records {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            let (n, id) = value.split_once(' ').unwrap();
            out.entry(key)
                .or_default()
                .push((n.parse().unwrap(), id.parse().unwrap()));
        }
    }
    out
}

/// Starts and SIGKILLs the application `KILLS` times while input is produced, then lets a
/// last incarnation run; returns the harness and that last child.
async fn kill_repeatedly(guarantee: &str) -> (Harness, Child) {
    let seed = std::env::var("RILL_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{guarantee} torture: RILL_TORTURE_SEED={seed}");
    let mut rng = Rng(seed);
    let mut h = Harness::start().await;
    let producing = tokio::spawn(produce_slowly(Arc::clone(&h.transport)));
    for _ in 0..KILLS {
        let child = h.spawn(guarantee);
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_000))).await;
        h.kill(child);
    }
    producing.await.unwrap();
    let last = h.spawn(guarantee);
    (h, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_output_is_exact_across_sigkills() {
    let (h, last) = kill_repeatedly("eos").await;
    let want = reference();
    let complete = |out: &BTreeMap<String, Vec<(u64, u64)>>| {
        want.iter()
            .all(|(k, ids)| out.get(k).map_or(0, Vec::len) >= ids.len())
    };
    let out = read_output(
        &h.transport,
        IsolationLevel::ReadCommitted,
        complete,
        Duration::from_secs(120),
    )
    .await;
    h.kill(last);
    // The kills did land mid-transaction: output of aborted transactions is in the log.
    let committed: usize = out.values().map(Vec::len).sum();
    let everything = read_output(
        &h.transport,
        IsolationLevel::ReadUncommitted,
        |all| all.values().map(Vec::len).sum::<usize>() > committed,
        Duration::from_secs(10),
    )
    .await;
    let all: usize = everything.values().map(Vec::len).sum();
    assert!(
        all > committed,
        "no kill interrupted a transaction ({committed} committed)\n{}",
        h.logs_tail()
    );
    eprintln!(
        "exactly_once: {committed} committed outputs, {} aborted",
        all - committed
    );
    for (key, ids) in &want {
        let expected: Vec<(u64, u64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (i as u64 + 1, *id))
            .collect();
        let got = out.get(key).cloned().unwrap_or_default();
        assert_eq!(
            got, expected,
            "key {key}: committed output differs from the reference"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_across_sigkills_but_may_duplicate() {
    let (h, last) = kill_repeatedly("alo").await;
    let want: BTreeSet<u64> = (0..RECORDS as u64).collect();
    let ids_of = |out: &BTreeMap<String, Vec<(u64, u64)>>| -> BTreeSet<u64> {
        out.values().flatten().map(|(_, id)| *id).collect()
    };
    let out = read_output(
        &h.transport,
        IsolationLevel::ReadUncommitted,
        |out| ids_of(out) == want,
        Duration::from_secs(120),
    )
    .await;
    h.kill(last);
    let seen = ids_of(&out);
    let missing: Vec<&u64> = want.difference(&seen).take(10).collect();
    assert!(missing.is_empty(), "input records lost: {missing:?}...");
    let total: usize = out.values().map(Vec::len).sum();
    assert!(
        total > RECORDS,
        "{KILLS} kills mid-interval reprocessed nothing ({total} outputs for {RECORDS} inputs)"
    );
    eprintln!(
        "at_least_once: {total} outputs for {RECORDS} inputs ({} duplicates)",
        total - RECORDS
    );
}

/// The cluster's timing, as in the log crate's cluster tests: failures are detected in
/// about 2 s, so a test's kills cost seconds.
const CLUSTER_SETTINGS: &[(&str, &str)] = &[
    ("process.roles", "broker,controller"),
    ("cluster.id", "torture-cluster"),
    ("broker.session.timeout.ms", "2000"),
    ("broker.heartbeat.interval.ms", "250"),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("replica.lag.time.max.ms", "4000"),
    ("replica.fetch.backoff.ms", "100"),
    ("offsets.topic.num.partitions", "3"),
    ("transaction.state.log.num.partitions", "3"),
    ("group.initial.rebalance.delay.ms", "0"),
    // The application's changelogs are replicated as its topics are (Kafka Streams'
    // `replication.factor` -1 takes this).
    ("default.replication.factor", "3"),
    ("min.insync.replicas", "2"),
];

/// A broker of the cluster variant: one `rill broker` node (broker and controller) run in
/// this child process until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the cluster torture test as a broker process"]
async fn torture_broker_node() {
    let (Ok(id), Ok(voters), Ok(data), Ok(listen)) = (
        std::env::var("RILL_TORTURE_NODE_ID"),
        std::env::var("RILL_TORTURE_VOTERS"),
        std::env::var("RILL_TORTURE_DATA"),
        std::env::var("RILL_TORTURE_LISTEN"),
    ) else {
        eprintln!("torture_broker_node needs RILL_TORTURE_NODE_ID, _VOTERS, _DATA and _LISTEN");
        std::process::exit(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut config = rill_log::cli::NodeConfig::new(PathBuf::from(data));
    let mut settings = vec![
        ("node.id", id.as_str()),
        ("controller.quorum.voters", voters.as_str()),
        ("listeners", listen.as_str()),
    ];
    settings.extend_from_slice(CLUSTER_SETTINGS);
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let outcome = rill_log::cli::broker::run(config, std::future::pending()).await;
    eprintln!("the broker stopped: {outcome:?}");
    std::process::exit(1);
}

/// Three broker processes on loopback, each restartable on its data directory and port.
struct TortureCluster {
    dir: tempfile::TempDir,
    voters: String,
    listeners: Vec<String>,
    nodes: Vec<Option<Child>>,
    starts: usize,
}

impl TortureCluster {
    fn start() -> TortureCluster {
        let sockets: Vec<std::net::TcpListener> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        drop(sockets);
        let voters = (0..3)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = TortureCluster {
            dir: tempfile::tempdir().unwrap(),
            voters,
            listeners: ports[3..]
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            nodes: vec![None, None, None],
            starts: 0,
        };
        for id in 1..=3 {
            c.start_node(id);
        }
        c
    }

    fn start_node(&mut self, id: usize) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("node-{}.log", self.starts)))
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "torture_broker_node", "--ignored", "--nocapture"])
            .env("RILL_TORTURE_NODE_ID", id.to_string())
            .env("RILL_TORTURE_VOTERS", &self.voters)
            .env("RILL_TORTURE_DATA", self.dir.path().join(format!("n{id}")))
            .env("RILL_TORTURE_LISTEN", &self.listeners[id - 1])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.nodes[id - 1] = Some(child);
    }

    fn kill9(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn bootstrap(&self) -> String {
        self.listeners.join(",")
    }
}

impl Drop for TortureCluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.kill9(id);
        }
    }
}

/// The exactly-once counting application against a three-broker cluster (RF 3,
/// `min.insync.replicas` 2) while brokers are SIGKILLed and restarted one at a time, so
/// partition leaders, the group coordinator and the transaction coordinator move under it:
/// the application rides through every kill without a restart, and the committed output,
/// read `read_committed`, is exactly the reference. `RILL_TORTURE_SEED` replays a schedule,
/// `RILL_TORTURE_BROKER_KILLS` sets how many kills (6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_output_is_exact_across_broker_kills() {
    let seed = std::env::var("RILL_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let kills: usize = std::env::var("RILL_TORTURE_BROKER_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    eprintln!("cluster torture: RILL_TORTURE_SEED={seed}, {kills} broker kills");
    let mut rng = Rng(seed);
    let mut cluster = TortureCluster::start();
    let mut config = TcpConfig::new(cluster.bootstrap());
    config.metadata_max_age_ms = 1_000;
    let transport: Arc<dyn Transport> = loop {
        if let Ok(t) = TcpTransport::connect(config.clone()).await {
            break Arc::new(t);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let admin = Admin::new(Arc::clone(&transport));
    for topic in ["input", "output"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = admin
            .create_replicated_topic(topic, PARTITIONS, 3, &[("min.insync.replicas", "2")])
            .await
        {
            assert!(Instant::now() < deadline, "creating {topic}: {e}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let state = cluster.dir.path().join("state");
    let app_log = cluster.dir.path().join("app.log");
    let bootstrap = cluster.bootstrap();
    let spawn_app = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "torture_child", "--ignored", "--nocapture"])
            .env("RILL_TORTURE_BOOTSTRAP", &bootstrap)
            .env("RILL_TORTURE_STATE", &state)
            .env("RILL_TORTURE_GUARANTEE", "eos")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&app_log).unwrap()))
            .spawn()
            .unwrap()
    };
    let mut app = spawn_app();
    let producing = tokio::spawn(produce_slowly(Arc::clone(&transport)));
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_500))).await;
        let id = 1 + rng.below(3) as usize;
        eprintln!("killing broker {id}");
        cluster.kill9(id);
        tokio::time::sleep(Duration::from_millis(2_500 + rng.below(1_000))).await;
        cluster.start_node(id);
        if let Some(status) = app.try_wait().unwrap() {
            panic!(
                "the application stopped ({status}) after broker {id}'s kill (seed {seed}):\n{}",
                read(&app_log)
            );
        }
    }
    producing.await.unwrap();
    let want = reference();
    let complete = |out: &BTreeMap<String, Vec<(u64, u64)>>| {
        want.iter()
            .all(|(k, ids)| out.get(k).map_or(0, Vec::len) >= ids.len())
    };
    let out = read_output(
        &transport,
        IsolationLevel::ReadCommitted,
        complete,
        Duration::from_secs(120),
    )
    .await;
    if let Some(status) = app.try_wait().unwrap() {
        panic!(
            "the application stopped ({status}) (seed {seed}):\n{}",
            read(&app_log)
        );
    }
    let _ = app.kill();
    let _ = app.wait();
    for (key, ids) in &want {
        let expected: Vec<(u64, u64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (i as u64 + 1, *id))
            .collect();
        let got = out.get(key).cloned().unwrap_or_default();
        assert_eq!(
            got,
            expected,
            "key {key}: committed output differs from the reference (seed {seed})\n{}",
            read(&app_log)
        );
    }
}
