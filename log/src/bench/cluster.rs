//! `rill bench cluster`: a three-node cluster on loopback (three `rill broker` processes, each
//! a broker and a controller) measured against itself in the same run. Replication's cost:
//! produce of 1 KiB records with `acks=all` to a topic with replication factor 3 and
//! `min.insync.replicas` 2, against the same producers to a topic with replication factor 1
//! (the three brokers share the machine's cores either way). Failover: the time from a
//! partition leader's kill -9 to the first record acknowledged by its successor, over a
//! number of kills (the killed broker restarts and rejoins the ISR before the next one),
//! against `broker.session.timeout.ms` + 1 s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tcp::{
    latency_rows, payload, run_producers, tcp_transport, BrokerProcess, TcpBenchOptions, TcpReport,
};
use super::{BenchError, BenchRow};
use crate::client::{Admin, Producer, ProducerConfig, ProducerRecord, Transport};

/// What `rill bench cluster` runs.
#[derive(Debug, Clone)]
pub struct ClusterBenchOptions {
    /// The `rill` program to start as the brokers.
    pub broker_exe: PathBuf,
    /// Where the brokers keep their data (a directory per node, removed first).
    pub dir: PathBuf,
    /// Seconds of each throughput phase (RF 1, then RF 3).
    pub seconds: f64,
    /// Record value size in bytes.
    pub size: usize,
    /// Producers (threads) in the throughput phases.
    pub producers: usize,
    /// Records per second across the producers, paced by timers (`None`: as fast as they
    /// go); a paced run measures acknowledgement latency rather than throughput.
    pub rate: Option<u64>,
    /// The producers' `batch.size` and `linger.ms`.
    pub batch_size: usize,
    pub linger_ms: u64,
    /// Partitions of the throughput topics (3: one led by each broker).
    pub partitions: i32,
    /// Leader kills in the failover phase (0 skips it).
    pub kills: usize,
    /// `broker.session.timeout.ms` of the brokers (heartbeats at an eighth of it).
    pub session_timeout_ms: u64,
    /// More broker properties (`key=value`), e.g. `replica.fetch.max.bytes=8388608`.
    pub broker_overrides: Vec<String>,
    pub progress: bool,
}

impl Default for ClusterBenchOptions {
    fn default() -> Self {
        ClusterBenchOptions {
            broker_exe: PathBuf::from("rill"),
            dir: std::env::temp_dir(),
            seconds: 8.0,
            size: 1024,
            producers: 2,
            rate: None,
            batch_size: 16_384,
            linger_ms: 5,
            partitions: 3,
            kills: 20,
            session_timeout_ms: 2_000,
            broker_overrides: Vec::new(),
            progress: false,
        }
    }
}

/// The three nodes: each restartable on its data directory and client port.
struct Nodes {
    exe: PathBuf,
    dir: PathBuf,
    voters: String,
    listeners: Vec<String>,
    session_timeout_ms: u64,
    overrides: Vec<String>,
    running: Vec<Option<BrokerProcess>>,
}

impl Nodes {
    fn start(opts: &ClusterBenchOptions) -> Result<Nodes, BenchError> {
        let dir = opts.dir.join("rill-bench-cluster");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let sockets = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = sockets
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?;
        drop(sockets);
        let voters = (0..3)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Nodes {
            exe: opts.broker_exe.clone(),
            dir,
            voters,
            listeners: ports[3..]
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            session_timeout_ms: opts.session_timeout_ms,
            overrides: opts.broker_overrides.clone(),
            running: vec![None, None, None],
        };
        for id in 1..=3 {
            nodes.start_node(id)?;
        }
        Ok(nodes)
    }

    fn start_node(&mut self, id: usize) -> Result<(), BenchError> {
        let data = self.dir.join(format!("n{id}"));
        let mut args: Vec<String> = [
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &self.listeners[id - 1],
            "--node-id",
            &id.to_string(),
            "--cluster-id",
            "rill-bench",
            "--controller-quorum",
            &self.voters,
            "--override",
            &format!("broker.session.timeout.ms={}", self.session_timeout_ms),
            "--override",
            &format!(
                "broker.heartbeat.interval.ms={}",
                (self.session_timeout_ms / 8).max(50)
            ),
            "--override",
            "replica.fetch.backoff.ms=100",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        for o in &self.overrides {
            args.extend(["--override".to_string(), o.clone()]);
        }
        self.running[id - 1] = Some(BrokerProcess::start_with(&self.exe, &args)?);
        Ok(())
    }

    /// kill -9 (dropping a `BrokerProcess` kills its child with SIGKILL).
    fn kill9(&mut self, id: usize) {
        self.running[id - 1] = None;
    }

    fn bootstrap(&self) -> String {
        self.listeners.join(",")
    }
}

/// Retries `f` every 200 ms until it succeeds or `limit` passes.
async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> Result<T, BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(BenchError::Client(format!("{what}: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The leader and ISR of partition 0 of `topic`, from Metadata.
async fn partition_zero(t: &Arc<dyn Transport>, topic: &str) -> Option<(i32, usize)> {
    let topics = Admin::new(Arc::clone(t)).list_topics().await.ok()?;
    let d = topics.into_iter().find(|d| d.name == topic)?;
    let p = d.partition_states.into_iter().find(|p| p.partition == 0)?;
    (p.leader >= 0).then_some((p.leader, p.isr.len()))
}

/// `rill bench cluster`.
pub fn run_cluster(
    opts: &ClusterBenchOptions,
    handle: &tokio::runtime::Handle,
) -> Result<TcpReport, BenchError> {
    let mut nodes = Nodes::start(opts)?;
    let bootstrap = nodes.bootstrap();
    let admin = Admin::new(tcp_transport(&bootstrap, "rill-bench-admin"));
    let topics = [("rill-bench-rf1", 1i16), ("rill-bench-rf3", 3)];
    for (topic, rf) in topics {
        let min_isr = [("min.insync.replicas", if rf == 3 { "2" } else { "1" })];
        handle.block_on(retry("creating a topic", Duration::from_secs(60), || {
            admin.create_replicated_topic(topic, opts.partitions, rf, &min_isr)
        }))?;
    }
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut latencies = Vec::new();
    let mut mbps = Vec::new();
    for (topic, rf) in topics {
        let tcp = TcpBenchOptions {
            bootstrap: Some(bootstrap.clone()),
            seconds: opts.seconds,
            producers: opts.producers,
            partitions: opts.partitions,
            size: opts.size,
            acks: -1,
            rate: opts.rate,
            batch_size: opts.batch_size,
            linger_ms: opts.linger_ms,
            progress: opts.progress,
            ..TcpBenchOptions::default()
        };
        let name = format!("cluster-produce-rf{rf}-{}B", opts.size);
        let produced = run_producers(&tcp, &bootstrap, topic, &name, handle)?;
        mbps.push(produced.records as f64 * opts.size as f64 / 1e6 / produced.seconds.max(1e-9));
        series.push((name.clone(), produced.series));
        latencies.push((format!("{name} (ack from intended send)"), produced.latency));
    }
    let workload = format!("cluster-produce-{}B", opts.size);
    rows.push(BenchRow::new(
        &workload,
        "RF 3 vs RF 1 throughput (acks=all)",
        mbps[1],
        "MB/s",
        mbps[0],
    ));
    // Ack latency from the intended send time, RF 3 against RF 1.
    rows.extend(latency_rows(&workload, &latencies[1].1, &latencies[0].1));
    if opts.kills > 0 {
        let times = handle.block_on(failovers(&mut nodes, opts))?;
        let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        let bound = opts.session_timeout_ms as f64 + 1_000.0;
        for (metric, q) in [
            ("failover p50", 0.5),
            ("failover p99", 0.99),
            ("failover max", 1.0),
        ] {
            rows.push(BenchRow::new(
                "cluster-failover",
                &format!("{metric} vs session timeout + 1 s"),
                at(q),
                "ms",
                bound,
            ));
        }
    }
    Ok(TcpReport {
        rows,
        series,
        latencies,
        description: format!(
            "three rill brokers (broker and controller each) on loopback, {} producer(s), {} \
             partitions, {} B records, acks=all, batch.size={}, linger.ms={}, {} s per topic; \
             {} leader kill(s) with broker.session.timeout.ms={}; broker overrides {:?}",
            opts.producers,
            opts.partitions,
            opts.size,
            opts.batch_size,
            opts.linger_ms,
            opts.seconds,
            opts.kills,
            opts.session_timeout_ms,
            opts.broker_overrides
        ),
    })
}

/// kill -9 of partition 0's leader, `opts.kills` times: each measured from the kill to the
/// first record acknowledged after it (the producer knew the old leader); the killed node
/// restarts and rejoins the ISR before the next kill.
async fn failovers(
    nodes: &mut Nodes,
    opts: &ClusterBenchOptions,
) -> Result<Vec<Duration>, BenchError> {
    let bootstrap = nodes.bootstrap();
    let admin_t = tcp_transport(&bootstrap, "rill-bench-admin");
    let admin = Admin::new(Arc::clone(&admin_t));
    let topic = "rill-bench-failover";
    let min_isr = [("min.insync.replicas", "2")];
    retry(
        "creating the failover topic",
        Duration::from_secs(60),
        || admin.create_replicated_topic(topic, 1, 3, &min_isr),
    )
    .await?;
    let value = payload(opts.size, 11);
    let mut times = Vec::with_capacity(opts.kills);
    for kill in 0..opts.kills {
        // The partition back at full strength, and a producer that has just written to its
        // leader (so it knows it, as a producer in steady state does).
        let leader = retry(
            "a fully replicated leader",
            Duration::from_secs(60),
            || async {
                match partition_zero(&admin_t, topic).await {
                    Some((leader, 3)) => Ok(leader),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await?;
        let producer = Producer::new(
            tcp_transport(&bootstrap, "rill-bench-failover"),
            ProducerConfig {
                linger_ms: 0,
                retry_backoff_ms: 50,
                ..ProducerConfig::default()
            },
        );
        let send = || send_one(&producer, topic, value.clone());
        retry("a write before the kill", Duration::from_secs(30), send).await?;
        let killed = Instant::now();
        nodes.kill9(leader as usize);
        retry("a write after the kill", Duration::from_secs(60), send).await?;
        let took = killed.elapsed();
        if opts.progress {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
                - took.as_secs_f64();
            eprintln!(
                "kill {}: node {leader} at unix {at:.3}, failover {:.0} ms",
                kill + 1,
                took.as_secs_f64() * 1e3
            );
        }
        times.push(took);
        producer.close().await;
        nodes.start_node(leader as usize)?;
    }
    Ok(times)
}

/// Sends one record and waits for its acknowledgement.
async fn send_one(
    producer: &Producer,
    topic: &str,
    value: bytes::Bytes,
) -> Result<crate::client::RecordMetadata, crate::client::ClientError> {
    let record = ProducerRecord::new(topic, None::<String>, value);
    producer.send(record).await?.wait().await
}
