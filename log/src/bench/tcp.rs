//! `rill bench produce|consume|e2e --tcp` (or `--bootstrap-server`): rill's clients against a
//! broker in another process, over the Kafka protocol on TCP, as Kafka's perf tools measure a
//! broker. Each figure is a ratio to what the machine itself does in the same run: a loopback
//! socket blast (throughput), a ping-pong of the record size (latency), fdatasync (durable
//! produce). Latencies are from each record's intended send time (a paced sender that falls
//! behind counts against rill), in hdrhistogram.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::loopback::{blast, fdatasync_limit, file_write_limit, latency_histogram, ping_pong};
use super::{BenchError, BenchRow};
use crate::client::{
    Admin, Consumer, ConsumerConfig, Delivery, OffsetReset, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, Transport,
};
use crate::net::{TcpConfig, TcpTransport};
use crate::record::Compression;
use crate::types::TopicPartition;

/// What `rill bench produce|consume|e2e` over TCP runs.
#[derive(Debug, Clone)]
pub struct TcpBenchOptions {
    /// The broker to measure; `None` starts `broker_exe broker` on a temporary directory and
    /// a free loopback port, and stops it afterwards.
    pub bootstrap: Option<String>,
    /// The `rill` program to start as the broker.
    pub broker_exe: PathBuf,
    /// Broker properties for the started broker (`key=value`).
    pub broker_overrides: Vec<String>,
    /// Where the started broker keeps its data and the fdatasync baseline writes.
    pub dir: PathBuf,
    /// How long the measured phase runs (unless `records` ends it first).
    pub seconds: f64,
    /// Records to produce (produce, e2e) or in the backlog (consume).
    pub records: Option<u64>,
    pub producers: usize,
    pub consumers: usize,
    pub partitions: i32,
    /// Record value size in bytes (no key).
    pub size: usize,
    pub acks: i16,
    pub compression: Compression,
    /// Records per second across all producers, paced by timers; `None` is as fast as
    /// possible.
    pub rate: Option<u64>,
    /// `batch.size` and `linger.ms` of the producers (Kafka's defaults: 16384 and 5).
    pub batch_size: usize,
    pub linger_ms: u64,
    /// Produce to a topic with `flush.messages=1` (every batch fsynced before it is
    /// acknowledged), against the fdatasync limit of `batch_size` writes.
    pub durable: bool,
    /// A line per second on stderr with the running rate.
    pub progress: bool,
}

impl Default for TcpBenchOptions {
    fn default() -> Self {
        TcpBenchOptions {
            bootstrap: None,
            broker_exe: PathBuf::from("rill"),
            broker_overrides: Vec::new(),
            dir: std::env::temp_dir(),
            seconds: 10.0,
            records: None,
            producers: 1,
            consumers: 1,
            partitions: 1,
            size: 1024,
            acks: -1,
            compression: Compression::None,
            rate: None,
            batch_size: 16_384,
            linger_ms: 5,
            durable: false,
            progress: false,
        }
    }
}

/// One workload's results: its rows, its throughput per second, its latency histograms
/// (rill's and the baseline's), for the table, the JSON lines and the HTML report.
#[derive(Debug, Default)]
pub struct TcpReport {
    pub rows: Vec<BenchRow>,
    /// (workload, [(seconds since start, MB/s in that second)]).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// (name, latency histogram in microseconds).
    pub latencies: Vec<(String, Histogram<u64>)>,
    /// What was run, for the report's header.
    pub description: String,
}

/// The writes of the loopback blast: large enough that the machine's limit, not the
/// syscalls, is measured.
const LOOPBACK_CHUNK: usize = 1 << 20;

/// Deletes a bench topic (its data would otherwise stay on a broker given with
/// `--bootstrap-server`); a failure only leaves it there.
fn drop_topic(admin: &Admin, topic: &str, handle: &tokio::runtime::Handle) {
    if let Err(e) = handle.block_on(admin.delete_topic(topic)) {
        tracing::warn!(%topic, error = %e, "could not delete the bench topic");
    }
}

/// A `rill broker` child process on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Child,
    addr: String,
}

impl BrokerProcess {
    /// Starts `exe broker` with its data in `dir` and waits (up to 60 s) for its
    /// "listening on" line.
    pub fn start(exe: &Path, dir: &Path, overrides: &[String]) -> Result<Self, BenchError> {
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        for o in overrides {
            args.extend(["--override".to_string(), o.clone()]);
        }
        Self::start_with(exe, &args)
    }

    /// Starts `exe broker ARGS` and waits (up to 60 s) for its "listening on" line.
    pub fn start_with(exe: &Path, args: &[String]) -> Result<Self, BenchError> {
        let mut cmd = Command::new(exe);
        cmd.arg("broker").args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            // The broker's own warnings (a killed peer, a recovered tail) would bury the
            // bench's output; RUST_LOG shows them.
            cmd.env("RUST_LOG", "error,openraft=off");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Client(format!("cannot start {}: {e}", exe.display())))?;
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                // "rill broker listening on 127.0.0.1:PORT (advertised as ...)"
                if let Some(rest) = line.strip_prefix("rill broker listening on ") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_string());
                    break;
                }
            }
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let mut broker = BrokerProcess {
            child,
            addr: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => broker.addr = addr,
            Err(_) => {
                return Err(BenchError::Client(format!(
                    "{} broker did not report its address within 60 s",
                    exe.display()
                )))
            }
        }
        Ok(broker)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records and bytes acknowledged or consumed so far, sampled once a second into a series
/// (and a progress line) by a timer thread.
struct Meter {
    records: AtomicU64,
    bytes: AtomicU64,
    stop: AtomicBool,
}

impl Meter {
    fn new() -> Arc<Self> {
        Arc::new(Meter {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Samples every second until stopped; returns the (seconds, MB/s) series.
    fn sample(
        self: &Arc<Self>,
        name: String,
        progress: bool,
    ) -> std::thread::JoinHandle<Vec<(f64, f64)>> {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut series = Vec::new();
            let (mut last_r, mut last_b, mut last_t) = (0u64, 0u64, start);
            while !me.stop.load(Ordering::Relaxed) {
                // Short sleeps so stopping is prompt; a sample each full second.
                std::thread::sleep(Duration::from_millis(50));
                let now = Instant::now();
                let dt = now.duration_since(last_t).as_secs_f64();
                if dt < 1.0 && !me.stop.load(Ordering::Relaxed) {
                    continue;
                }
                let (r, b) = (
                    me.records.load(Ordering::Relaxed),
                    me.bytes.load(Ordering::Relaxed),
                );
                let mbps = (b - last_b) as f64 / 1e6 / dt.max(1e-9);
                let rps = (r - last_r) as f64 / dt.max(1e-9);
                let at = now.duration_since(start).as_secs_f64();
                series.push((at, mbps));
                if progress {
                    eprintln!(
                        "{name:>24} {at:>6.1} s {rps:>12.0} records/s {mbps:>9.1} MB/s {r:>12} total"
                    );
                }
                (last_r, last_b, last_t) = (r, b, now);
            }
            series
        })
    }
}

/// Seeded letters, as Kafka's producer perf tool fills its payloads (uncompressed sizes are
/// exact; compressors see text, not zeros).
pub(super) fn payload(size: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub(super) fn tcp_transport(bootstrap: &str, client_id: &str) -> Arc<dyn Transport> {
    let mut config = TcpConfig::new(bootstrap);
    config.client_id = client_id.into();
    Arc::new(TcpTransport::new(config))
}

/// The broker to measure: the given address, or a child started for this run.
fn broker_for(opts: &TcpBenchOptions) -> Result<(String, Option<BrokerProcess>), BenchError> {
    match &opts.bootstrap {
        Some(addr) => Ok((addr.clone(), None)),
        None => {
            let dir = opts.dir.join("broker");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let b = BrokerProcess::start(&opts.broker_exe, &dir, &opts.broker_overrides)?;
            Ok((b.addr().to_string(), Some(b)))
        }
    }
}

/// A workload's broker and its fresh topic.
struct Setup {
    addr: String,
    /// The broker this run started, stopped when dropped.
    _broker: Option<BrokerProcess>,
    topic: String,
    admin: Admin,
}

/// The broker to measure and a new topic of `opts.partitions` with `configs` on it, named
/// for the workload `kind` and unused so far (a given broker may hold earlier runs' topics).
fn setup(
    opts: &TcpBenchOptions,
    kind: &str,
    configs: &[(&str, &str)],
    handle: &tokio::runtime::Handle,
) -> Result<Setup, BenchError> {
    let (addr, broker) = broker_for(opts)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let topic = format!("rill-bench-{kind}-{}-{nanos}", std::process::id());
    let admin = Admin::new(tcp_transport(&addr, "rill-bench-admin"));
    handle.block_on(admin.create_topic(&topic, opts.partitions, configs))?;
    Ok(Setup {
        addr,
        _broker: broker,
        topic,
        admin,
    })
}

fn producer_config(opts: &TcpBenchOptions) -> ProducerConfig {
    ProducerConfig {
        acks: opts.acks,
        batch_size: opts.batch_size,
        linger_ms: opts.linger_ms,
        compression: opts.compression,
        // Room for a few requests' worth of batches per partition.
        buffer_memory: (32 << 20).max(opts.batch_size * 8 * opts.partitions.max(1) as usize),
        ..Default::default()
    }
}

/// One producer's part of a run.
struct ProducerJob {
    producer: Producer,
    topic: Arc<str>,
    value: Bytes,
    /// Records per second, or `None` for as fast as it can.
    rate: Option<f64>,
    until: Instant,
    records: u64,
    meter: Arc<Meter>,
    hist: Arc<Mutex<Histogram<u64>>>,
}

/// Sends until `until` or `records`, paced by `rate`; returns the records sent.
async fn produce_loop(job: ProducerJob) -> Result<u64, BenchError> {
    let ProducerJob {
        producer,
        topic,
        value,
        rate,
        until,
        records,
        meter,
        hist,
    } = job;
    let size = value.len() as u64;
    // Latency is sampled: every record at low rates, one in 97 (prime, so not in step with
    // batch boundaries) when unpaced or fast.
    let every = match rate {
        Some(r) if r <= 20_000.0 => 1,
        _ => 97,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Delivery, u64)>(1 << 16);
    let waiter = {
        let meter = Arc::clone(&meter);
        tokio::spawn(async move {
            // Deliveries of one partition complete in order; across partitions a later one
            // may be done first and is then recorded when its turn comes (microseconds).
            while let Some((intended, d, n)) = rx.recv().await {
                let ok = d.await.is_ok();
                let us = intended.elapsed().as_micros().max(1) as u64;
                if ok {
                    let _ = crate::sync::plain(&hist).record(us);
                    meter.add(n, n * size);
                }
            }
        })
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let mut since_sample = 0u64;
    let mut last = None;
    while sent < records {
        let intended = match rate {
            Some(r) => {
                let at = start + Duration::from_secs_f64(sent as f64 / r);
                let now = Instant::now();
                if at > now {
                    // A thread's sleep (not tokio's millisecond timer, not a spin): this
                    // runs on its own thread, see `run_producers`.
                    std::thread::sleep(at - now);
                }
                at
            }
            None => Instant::now(),
        };
        if intended >= until {
            break;
        }
        let r = ProducerRecord::new(topic.clone(), None::<Bytes>, value.clone());
        let d = producer.send(r).await?;
        sent += 1;
        since_sample += 1;
        if sent.is_multiple_of(every) {
            if tx.send((intended, d, since_sample)).await.is_err() {
                break;
            }
            since_sample = 0;
        } else {
            last = Some(d);
        }
    }
    producer.flush().await;
    if let Some(d) = last {
        if d.await.is_ok() {
            meter.add(since_sample, since_sample * size);
        }
    }
    drop(tx);
    let _ = waiter.await;
    producer.close().await;
    Ok(sent)
}

/// What the producers of a run did.
pub(super) struct Produced {
    pub(super) records: u64,
    /// Seconds until every record was acknowledged.
    pub(super) seconds: f64,
    pub(super) latency: Histogram<u64>,
    /// MB/s acknowledged per second.
    pub(super) series: Vec<(f64, f64)>,
}

/// Runs `opts.producers` producers to `topic`, each on its own thread (so paced ones sleep
/// with the OS's timer), sharing `opts.rate`.
pub(super) fn run_producers(
    opts: &TcpBenchOptions,
    addr: &str,
    topic: &str,
    name: &str,
    handle: &tokio::runtime::Handle,
) -> Result<Produced, BenchError> {
    let meter = Meter::new();
    let sampler = meter.sample(name.to_string(), opts.progress);
    let hist = Arc::new(Mutex::new(latency_histogram()));
    let n = opts.producers.max(1);
    let rate = opts.rate.map(|r| r as f64 / n as f64);
    let per_producer = opts.records.map_or(u64::MAX, |r| r.div_ceil(n as u64));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(opts.seconds);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let transport = tcp_transport(addr, &format!("rill-bench-producer-{i}"));
            let config = ProducerConfig {
                seed: 0x5eed + i as u64,
                ..producer_config(opts)
            };
            let topic: Arc<str> = topic.into();
            let value = payload(opts.size, 7 + i as u64);
            let (meter, hist, handle) = (Arc::clone(&meter), Arc::clone(&hist), handle.clone());
            std::thread::spawn(move || {
                handle.block_on(async move {
                    produce_loop(ProducerJob {
                        producer: Producer::new(transport, config),
                        topic,
                        value,
                        rate,
                        until,
                        records: per_producer,
                        meter,
                        hist,
                    })
                    .await
                })
            })
        })
        .collect();
    let mut sent = 0u64;
    let mut failed = None;
    for t in threads {
        match t.join() {
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(BenchError::Client("a producer thread panicked".into())),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    meter.stop.store(true, Ordering::Relaxed);
    let series = sampler.join().unwrap_or_default();
    if let Some(e) = failed {
        return Err(e);
    }
    let latency = crate::sync::plain(&hist).clone();
    Ok(Produced {
        records: sent,
        seconds: elapsed,
        latency,
        series,
    })
}

fn workload_name(kind: &str, opts: &TcpBenchOptions) -> String {
    let mut name = format!("tcp-{kind}-{}B", opts.size);
    if opts.durable {
        name.push_str("-durable");
    }
    if let Some(r) = opts.rate {
        name.push_str(&format!("-{r}-per-s"));
    }
    name
}

pub(super) fn latency_rows(
    name: &str,
    ours: &Histogram<u64>,
    base: &Histogram<u64>,
) -> Vec<BenchRow> {
    [
        ("p50 latency", 0.5),
        ("p99 latency", 0.99),
        ("p99.9 latency", 0.999),
        ("max latency", 1.0),
    ]
    .into_iter()
    .map(|(metric, q)| {
        BenchRow::new(
            name,
            metric,
            ours.value_at_quantile(q) as f64,
            "us",
            base.value_at_quantile(q) as f64,
        )
    })
    .collect()
}

fn describe(opts: &TcpBenchOptions, addr: &str, kind: &str) -> String {
    format!(
        "{kind} over TCP to {addr}: {} producer(s), {} consumer(s), {} partition(s), {} B records, \
         acks={}, compression={:?}, batch.size={}, linger.ms={}, rate={}, {} s{}",
        opts.producers,
        opts.consumers,
        opts.partitions,
        opts.size,
        opts.acks,
        opts.compression,
        opts.batch_size,
        opts.linger_ms,
        opts.rate
            .map_or("unpaced".to_string(), |r| format!("{r}/s")),
        opts.seconds,
        if opts.durable { ", flush.messages=1" } else { "" },
    )
}

/// `rill bench produce --tcp`: producers against the broker, against the loopback blast
/// (or, `durable`, the fdatasync limit of `batch.size` writes); also against plain writes into
/// the page cache, what the broker's appends cost by themselves.
pub fn run_tcp_produce(
    opts: &TcpBenchOptions,
    handle: &tokio::runtime::Handle,
) -> Result<TcpReport, BenchError> {
    let configs: &[(&str, &str)] = if opts.durable {
        &[("flush.messages", "1")]
    } else {
        &[]
    };
    let Setup {
        addr,
        _broker,
        topic,
        admin,
    } = setup(opts, "produce", configs, handle)?;
    let name = workload_name("produce", opts);
    let Produced {
        records,
        seconds,
        latency: hist,
        series,
    } = run_producers(opts, &addr, &topic, &name, handle)?;
    let rps = records as f64 / seconds.max(1e-9);
    let mbps = rps * opts.size as f64 / 1e6;
    drop_topic(&admin, &topic, handle);
    // The baselines after the measured phase, so they do not warm the broker's page cache.
    let budget = Duration::from_secs_f64((opts.seconds / 4.0).clamp(0.5, 3.0));
    let base_bps = if opts.durable {
        fdatasync_limit(&opts.dir, opts.batch_size, budget)?
    } else {
        blast(LOOPBACK_CHUNK, budget)?
    };
    let base_mbps = base_bps / 1e6;
    let mut rows = vec![
        BenchRow::new(
            &name,
            "records",
            rps,
            "records/s",
            base_bps / opts.size.max(1) as f64,
        ),
        BenchRow::new(&name, "throughput", mbps, "MB/s", base_mbps),
    ];
    if !opts.durable {
        // What the broker's appends cost the machine by themselves: writes into the page
        // cache, in the same directory's file system when the bench started the broker.
        let write = file_write_limit(&opts.dir, opts.batch_size.max(64 << 10), budget)?;
        rows.push(BenchRow::new(
            &name,
            "vs file write",
            mbps,
            "MB/s",
            write / 1e6,
        ));
    }
    let pp = ping_pong(opts.size, 20_000, budget)?;
    rows.extend(latency_rows(&name, &hist, &pp));
    Ok(TcpReport {
        rows,
        series: vec![(name.clone(), series)],
        latencies: vec![
            (format!("{name} (ack from intended send)"), hist),
            (format!("loopback ping-pong {} B", opts.size), pp),
        ],
        description: describe(opts, &addr, "produce"),
    })
}

/// `rill bench consume --tcp`: a backlog written first (1 MiB batches, not measured), then
/// consumers read it, again and again for the duration, against the loopback blast.
pub fn run_tcp_consume(
    opts: &TcpBenchOptions,
    handle: &tokio::runtime::Handle,
) -> Result<TcpReport, BenchError> {
    let Setup {
        addr,
        _broker,
        topic,
        admin,
    } = setup(opts, "consume", &[], handle)?;
    // The backlog: 512 MiB by default, written as fast as the producers can.
    let backlog = opts
        .records
        .unwrap_or(((512u64 << 20) / opts.size.max(1) as u64).max(1));
    let fill = TcpBenchOptions {
        records: Some(backlog),
        seconds: 3600.0,
        batch_size: 1 << 20,
        linger_ms: 5,
        rate: None,
        progress: false,
        ..opts.clone()
    };
    let written = run_producers(&fill, &addr, &topic, "backlog", handle)?.records;
    let name = workload_name("consume", opts);
    // Where each partition's backlog ends: a consumer that reaches the end of all of its
    // partitions reads them again from the start, until the duration is up (at least once
    // through), so a short backlog still gives a steady measurement.
    let tps: Vec<TopicPartition> = (0..opts.partitions)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    let query: Vec<_> = tps
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends: Arc<std::collections::BTreeMap<TopicPartition, i64>> = Arc::new(
        handle
            .block_on(admin.list_offsets(&query))?
            .into_iter()
            .map(|(tp, o)| (tp, o.offset))
            .collect(),
    );
    let meter = Meter::new();
    let sampler = meter.sample(name.clone(), opts.progress);
    let n = opts.consumers.max(1);
    let consumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(opts.seconds);
    let deadline = start + Duration::from_secs_f64(opts.seconds.max(1.0) * 20.0);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut consumer = Consumer::new(
                tcp_transport(&addr, &format!("rill-bench-consumer-{i}")),
                ConsumerConfig {
                    auto_offset_reset: OffsetReset::Earliest,
                    fetch_max_wait_ms: 100,
                    ..Default::default()
                },
            );
            let mine: Vec<TopicPartition> = tps
                .iter()
                .filter(|tp| tp.partition.0 as usize % n == i)
                .cloned()
                .collect();
            consumer.assign(mine.clone());
            let (meter, consumed, ends) =
                (Arc::clone(&meter), Arc::clone(&consumed), Arc::clone(&ends));
            handle.spawn(async move {
                loop {
                    let at_end = mine.iter().all(|tp| {
                        consumer.position(tp).unwrap_or(0) >= ends.get(tp).copied().unwrap_or(0)
                    });
                    if at_end {
                        if Instant::now() >= until {
                            return Ok::<(), BenchError>(());
                        }
                        consumer.seek_to_beginning(&mine).await?;
                    }
                    if Instant::now() > deadline {
                        return Err(BenchError::Client(format!(
                            "consumers stalled at {} of {written} records",
                            consumed.load(Ordering::Relaxed)
                        )));
                    }
                    let records = consumer.poll().await?;
                    let bytes: usize = records
                        .iter()
                        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
                        .sum();
                    meter.add(records.len() as u64, bytes as u64);
                    consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        handle
            .block_on(t)
            .map_err(|e| BenchError::Client(e.to_string()))??;
    }
    let seconds = start.elapsed().as_secs_f64();
    meter.stop.store(true, Ordering::Relaxed);
    let series = sampler.join().unwrap_or_default();
    drop_topic(&admin, &topic, handle);
    let total = consumed.load(Ordering::Relaxed);
    let rps = total as f64 / seconds.max(1e-9);
    let mbps = meter.bytes.load(Ordering::Relaxed) as f64 / 1e6 / seconds.max(1e-9);
    let budget = Duration::from_secs_f64((opts.seconds / 4.0).clamp(0.5, 3.0));
    let base_bps = blast(LOOPBACK_CHUNK, budget)?;
    Ok(TcpReport {
        rows: vec![
            BenchRow::new(
                &name,
                "records",
                rps,
                "records/s",
                base_bps / opts.size.max(1) as f64,
            ),
            BenchRow::new(&name, "throughput", mbps, "MB/s", base_bps / 1e6),
        ],
        series: vec![(name, series)],
        latencies: Vec::new(),
        description: describe(opts, &addr, "consume"),
    })
}

/// `rill bench e2e --tcp`: a paced producer (linger.ms=0 unless set) and a consumer; each
/// record's latency from its intended send time to the consumer's poll returning it,
/// against a loopback ping-pong of the record size. The first fifth of the run (at most a
/// second) warms up and is not measured.
pub fn run_tcp_e2e(
    opts: &TcpBenchOptions,
    handle: &tokio::runtime::Handle,
) -> Result<TcpReport, BenchError> {
    let Setup {
        addr,
        _broker,
        topic,
        admin,
    } = setup(opts, "e2e", &[], handle)?;
    let rate = opts.rate.unwrap_or(10_000).max(1);
    // A warm-up first (a fifth of the run, at most a second: connections, metadata, the
    // first fetches), sent and consumed at the same rate but not measured.
    let warmup_us = (opts.seconds * 0.2).min(1.0) * 1e6;
    let measured = opts
        .records
        .unwrap_or(((opts.seconds * rate as f64) as u64).max(1));
    let total = measured + (warmup_us / 1e6 * rate as f64) as u64;
    let warmup_us = warmup_us as u64;
    let name = format!("tcp-e2e-{rate}-per-s-{}B", opts.size);
    let origin = Instant::now();
    let e2e = Arc::new(Mutex::new(latency_histogram()));
    let meter = Meter::new();
    let sampler = meter.sample(name.clone(), opts.progress);

    let mut consumer = Consumer::new(
        tcp_transport(&addr, "rill-bench-consumer"),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 500,
            ..Default::default()
        },
    );
    consumer.assign((0..opts.partitions).map(|p| TopicPartition::new(topic.clone(), p)));
    let reader = {
        let (e2e, meter) = (Arc::clone(&e2e), Arc::clone(&meter));
        let deadline = Duration::from_secs_f64(opts.seconds * 2.0 + 30.0);
        handle.spawn(async move {
            let mut seen = 0u64;
            while seen < total {
                if origin.elapsed() > deadline {
                    return Err(BenchError::Client(format!(
                        "the consumer saw {seen} of {total} records"
                    )));
                }
                let records = consumer.poll().await?;
                let now = origin.elapsed().as_micros() as u64;
                let mut h = crate::sync::plain(&e2e);
                let mut bytes = 0;
                for r in &records {
                    let v = r.value.as_deref().unwrap_or_default();
                    bytes += v.len() as u64;
                    let intended = u64::from_be_bytes(
                        v.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]),
                    );
                    if intended >= warmup_us {
                        let _ = h.record(now.saturating_sub(intended).max(1));
                    }
                }
                meter.add(records.len() as u64, bytes);
                seen += records.len() as u64;
            }
            Ok::<(), BenchError>(())
        })
    };
    // The producer on its own thread, paced with the OS's sleep.
    let config = ProducerConfig {
        linger_ms: opts.linger_ms,
        ..producer_config(opts)
    };
    let transport = tcp_transport(&addr, "rill-bench-producer");
    let (size, h2, topic2) = (opts.size.max(8), handle.clone(), topic.clone());
    let acks = Arc::new(Mutex::new(latency_histogram()));
    let acks2 = Arc::clone(&acks);
    let producer = std::thread::spawn(move || {
        h2.block_on(async move {
            let producer = Producer::new(transport, config);
            let interval = 1.0 / rate as f64;
            let fill = payload(size, 11);
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Delivery)>(1 << 16);
            let waiter = tokio::spawn(async move {
                while let Some((intended_us, d)) = rx.recv().await {
                    if d.await.is_ok() {
                        let now = origin.elapsed().as_micros() as u64;
                        if intended_us >= warmup_us {
                            let _ = crate::sync::plain(&acks2)
                                .record(now.saturating_sub(intended_us).max(1));
                        }
                    }
                }
            });
            for i in 0..total {
                let intended = origin + Duration::from_secs_f64(i as f64 * interval);
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                let intended_us = intended.duration_since(origin).as_micros() as u64;
                let mut value = Vec::with_capacity(size);
                value.extend_from_slice(&intended_us.to_be_bytes());
                value.extend_from_slice(&fill[8..]);
                let r = ProducerRecord::new(topic2.as_str(), None::<Bytes>, value);
                let d = producer.send(r).await?;
                let _ = tx.send((intended_us, d)).await;
            }
            drop(tx);
            let _ = waiter.await;
            producer.close().await;
            Ok::<(), BenchError>(())
        })
    });
    producer
        .join()
        .map_err(|_| BenchError::Client("the producer thread panicked".into()))??;
    handle
        .block_on(reader)
        .map_err(|e| BenchError::Client(e.to_string()))??;
    meter.stop.store(true, Ordering::Relaxed);
    let series = sampler.join().unwrap_or_default();
    drop_topic(&admin, &topic, handle);
    let budget = Duration::from_secs_f64((opts.seconds / 4.0).clamp(0.5, 3.0));
    let pp = ping_pong(opts.size, total.min(100_000), budget)?;
    let e2e = crate::sync::plain(&e2e).clone();
    let acks = crate::sync::plain(&acks).clone();
    let mut rows = latency_rows(&name, &e2e, &pp);
    rows.extend(latency_rows(&format!("{name}-ack"), &acks, &pp));
    Ok(TcpReport {
        rows,
        series: vec![(name.clone(), series)],
        latencies: vec![
            (format!("{name} (poll from intended send)"), e2e),
            (format!("{name} (ack from intended send)"), acks),
            (format!("loopback ping-pong {} B", opts.size), pp),
        ],
        description: describe(
            &TcpBenchOptions {
                rate: Some(rate),
                ..opts.clone()
            },
            &addr,
            "end to end",
        ),
    })
}
