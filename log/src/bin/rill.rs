//! The `rill` command: `rill broker` (a Kafka-compatible broker process), the client commands
//! `rill topics|produce|consume|groups` (over the Kafka protocol, to rill or any Kafka
//! cluster), and `rill bench`. Errors are one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rill_log::bench::{format_table, run_storage, StorageBenchOptions};
use rill_log::cli::{commands, CliError, NodeConfig};

/// mimalloc: allocation-heavy paths (a record per `Vec`, `Bytes`) run faster than on glibc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "rill",
    version,
    about = "rill: a Kafka-compatible log and stream processor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker: the Kafka protocol on a TCP listener over a data directory.
    Broker {
        /// The data directory (Kafka's `log.dirs`); overrides the config file.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// `host:port` to listen on (Kafka's `listeners`; port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// `host:port` clients are told to connect to (Kafka's `advertised.listeners`).
        #[arg(long)]
        advertised_listener: Option<String>,
        /// A TOML file of broker properties under Kafka's names (see the README).
        #[arg(long)]
        config: Option<PathBuf>,
        /// One broker property, `key=value`; repeatable; overrides the config file.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Format a data directory for a cluster: write its `meta.properties` (cluster id and
    /// node id), once.
    Format {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        cluster_id: String,
        #[arg(long)]
        node_id: i32,
    },
    /// The cluster: its brokers and, with `--controller-quorum`, each controller's view of
    /// the metadata quorum.
    Cluster {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Partition reassignment (Kafka's `kafka-reassign-partitions.sh`): generate a plan,
    /// execute, verify or cancel it, list what is under way.
    Partitions {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: PartitionsAction,
    },
    /// Partition leader elections (Kafka's `kafka-leader-election.sh`).
    Leaders {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: LeadersAction,
    },
    /// Create, list, describe, delete topics and alter their configs.
    Topics {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Send each line of stdin as a record.
    Produce {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        /// Split each line at the first SEP into key and value.
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
        /// A header `key=value` on every record; repeatable.
        #[arg(long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Send every record to this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// A producer property `key=value` (`acks=1`, `compression.type=zstd`, ...); repeatable.
        #[arg(long = "property", short = 'X', value_name = "KEY=VALUE")]
        properties: Vec<String>,
    },
    /// Print records of a topic.
    Consume {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        /// Start at the earliest offset (without a committed one).
        #[arg(long)]
        from_beginning: bool,
        /// Start at this offset of --partition.
        #[arg(long)]
        offset: Option<i64>,
        #[arg(long)]
        partition: Option<i32>,
        /// Consume as a member of this group, committing what was printed.
        #[arg(long)]
        group: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Stop after this many milliseconds without a record.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Output format: %t topic, %p partition, %o offset, %T timestamp, %k key, %v value,
        /// %h headers, \n, \t.
        #[arg(long, default_value = "%v")]
        format: String,
        /// A consumer property `key=value`; repeatable.
        #[arg(long = "property", short = 'X', value_name = "KEY=VALUE")]
        properties: Vec<String>,
    },
    /// List and describe consumer groups; reset their offsets.
    Groups {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: GroupsAction,
    },
    /// List and describe transactions; find hanging ones and abort them (KIP-664).
    Transactions {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: TransactionsAction,
    },
    /// Measure rill against a baseline run in the same process.
    Bench {
        #[command(subcommand)]
        workload: BenchWorkload,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Brokers (id, endpoint, rack) and controllers (leader or follower, term, metadata
    /// offset applied).
    Describe {
        /// The controllers to ask, `id@host:port,...` (Kafka's `controller.quorum.voters`);
        /// without it only the brokers are listed.
        #[arg(long)]
        controller_quorum: Option<String>,
    },
    /// Take a decommissioned broker out of the cluster (UnregisterBroker): drain it
    /// (`rill partitions plan --drain`) and stop it first.
    Unregister {
        #[arg(long)]
        broker: i32,
    },
}

#[derive(Debug, Subcommand)]
enum LeadersAction {
    /// Elect leaders: `preferred` moves each leadership to the partition's first replica
    /// where it is in the ISR; `unclean` gives a leaderless partition any live replica (it
    /// may lack acknowledged records).
    Elect {
        #[arg(long, value_enum, default_value = "preferred")]
        election_type: ElectionKind,
        /// The topic whose partitions to elect (all of them without `--partition`).
        #[arg(long, conflicts_with = "all_topic_partitions")]
        topic: Option<String>,
        /// A partition of `--topic`; repeatable.
        #[arg(long, requires = "topic")]
        partition: Vec<i32>,
        /// Every partition of every topic.
        #[arg(long)]
        all_topic_partitions: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PartitionsAction {
    /// Print a reassignment plan (Kafka's JSON) that moves every replica off a broker, or a
    /// fair share onto a new one.
    Plan {
        /// Every replica off this broker (before removing it).
        #[arg(
            long,
            conflicts_with = "spread_to",
            required_unless_present = "spread_to"
        )]
        drain: Option<i32>,
        /// A fair share of the replicas onto this broker (after adding it).
        #[arg(long)]
        spread_to: Option<i32>,
    },
    /// Execute, verify or cancel the reassignments of a plan file.
    Reassign {
        /// The plan: `{"version":1,"partitions":[{"topic":..,"partition":..,"replicas":[..]}]}`.
        #[arg(long)]
        plan: PathBuf,
        #[arg(long, group = "what")]
        execute: bool,
        #[arg(long, group = "what")]
        verify: bool,
        #[arg(long, group = "what")]
        cancel: bool,
    },
    /// The partitions under reassignment.
    ListReassignments,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ElectionKind {
    Preferred,
    Unclean,
}

#[derive(Debug, clap::Args)]
struct Conn {
    /// `host:port[,host:port...]` of the cluster.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    /// Print JSON objects, one per line, instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    Create {
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Copies of each partition (-1: the cluster's `default.replication.factor`).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config `key=value`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    List,
    Describe {
        topic: String,
        /// Only partitions whose ISR is short of their replicas.
        #[arg(long)]
        under_replicated: bool,
        /// Only partitions whose ISR is smaller than `min.insync.replicas`.
        #[arg(long)]
        under_min_isr: bool,
    },
    Delete {
        topic: String,
    },
    AlterConfig {
        topic: String,
        /// Set `key=value`; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove an override (back to the default); repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum GroupsAction {
    List,
    Describe {
        group: String,
    },
    /// Delete a group's committed offsets for one topic (refused for a topic its members
    /// subscribe to).
    DeleteOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only this partition; repeatable (default: every partition of the topic).
        #[arg(long = "partition")]
        partitions: Vec<i32>,
    },
    /// Move a group's committed offsets for one topic (the group must have no members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// Epoch milliseconds: the first record at or after it.
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        /// Commit the plan (without it, only print it).
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TransactionsAction {
    /// Every transactional id the coordinator knows, with its producer id and state.
    List,
    /// One transactional id: producer, epoch, state, timeout and the open transaction's
    /// partitions.
    Describe { transactional_id: String },
    /// Open transactions in partitions that no transaction of the coordinator accounts for.
    FindHanging {
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Abort a hanging transaction in one partition (writes an abort marker there).
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: i64,
        /// Defaults to the producer's epoch in that partition.
        #[arg(long)]
        producer_epoch: Option<i16>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWorkload {
    /// The storage engine: append, read and fsync'd append against raw file I/O.
    Storage {
        /// Total time budget in seconds, shared by all phases.
        #[arg(long, default_value_t = 16.0)]
        seconds: f64,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Directory for the bench's files (removed afterwards); defaults to the system temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One embedded producer (acks=all) against the storage append path; with `--tcp` or
    /// `--bootstrap-server`, producers over TCP against the loopback limit.
    Produce {
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The idempotent producer against the plain one (instead of against storage).
        #[arg(long, conflicts_with = "transactional")]
        idempotent: bool,
        /// The transactional producer (a commit every 100 ms) against the plain one.
        #[arg(long)]
        transactional: bool,
        #[command(flatten)]
        tcp: TcpBenchArgs,
    },
    /// End-to-end latency (produce -> consumer poll) at a fixed rate, from the intended send
    /// time; the baseline is the producer's acknowledgement latency in the same run (over
    /// TCP: a loopback ping-pong of the record size).
    E2e {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        tcp: TcpBenchArgs,
    },
    /// One embedded consumer over a prepared backlog against reading the log directly; with
    /// `--tcp` or `--bootstrap-server`, consumers over TCP against the loopback limit.
    Consume {
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        tcp: TcpBenchArgs,
    },
    /// A three-node cluster on loopback (three `rill broker` processes it starts): acks=all
    /// produce to a replication-factor-3 topic (min.insync.replicas 2) against replication
    /// factor 1 in the same run, then the failover time from a partition leader's kill -9 to
    /// the first record its successor acknowledges, over `--kills` kills.
    Cluster {
        /// Seconds of each throughput phase (RF 1, then RF 3).
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Record value size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 2)]
        producers: usize,
        /// Records per second across the producers, paced by timers (latency at a fixed
        /// load); as fast as they go without it.
        #[arg(long)]
        rate: Option<u64>,
        /// The producers' `batch.size`.
        #[arg(long, default_value_t = 16384)]
        batch_size: usize,
        /// The producers' `linger.ms`.
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// Leader kills of the failover phase (0 skips it).
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// The brokers' `broker.session.timeout.ms`.
        #[arg(long, default_value_t = 2000)]
        session_timeout_ms: u64,
        /// A property for the brokers, `key=value`; repeatable.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Where the brokers keep their data (removed afterwards); the temp dir by default.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Progress lines on stderr.
        #[arg(long)]
        progress: bool,
    },
    /// The streams runtime (pass-through and count per key, at-least-once and exactly-once):
    /// runs the `rill-bench-streams` program of rill-core, found beside this one; its flags
    /// (`--records`, `--keys`, `--value-bytes`, `--json`, `--dir`) are passed on.
    #[command(disable_help_flag = true)]
    Streams {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// DSL jobs (tumbling, hopping, session, join against pass-through, exactly-once): runs
    /// the `rill-bench-dsl` program of rill-dsl, found beside this one; its flags
    /// (`--records`, `--keys`, `--value-bytes`, `--only`, `--commit-interval-ms`, `--json`,
    /// `--dir`) are passed on.
    #[command(disable_help_flag = true)]
    Dsl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `rill bench produce|consume|e2e` over TCP (Kafka's perf-tool knobs).
#[derive(Debug, Clone, clap::Args)]
struct TcpBenchArgs {
    /// Measure over TCP against a `rill broker` this bench starts (temporary directory,
    /// free loopback port).
    #[arg(long)]
    tcp: bool,
    /// Measure over TCP against this broker (`host:port`) instead of starting one.
    #[arg(long)]
    bootstrap_server: Option<String>,
    /// Producers (each its own connection and thread).
    #[arg(long)]
    producers: Option<usize>,
    /// Consumers (each assigned a share of the partitions).
    #[arg(long)]
    consumers: Option<usize>,
    #[arg(long)]
    partitions: Option<i32>,
    /// Record value size in bytes (default 1024).
    #[arg(long)]
    size: Option<usize>,
    /// `acks`: 0, 1 or -1 (all).
    #[arg(long, allow_hyphen_values = true)]
    acks: Option<i16>,
    /// `compression.type`: none, gzip, snappy, lz4, zstd.
    #[arg(long)]
    compression: Option<String>,
    /// Records per second across all producers (produce: unpaced by default; e2e: 10000).
    #[arg(long)]
    rate: Option<u64>,
    /// Records to produce, or in the consume backlog (default: the duration decides; a
    /// 512 MiB backlog).
    #[arg(long)]
    records: Option<u64>,
    /// The producers' `batch.size` (default 16384, Kafka's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// The producers' `linger.ms` (default 5, Kafka's; e2e: 0).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Produce to a topic with `flush.messages=1`, against the fdatasync limit of
    /// `--batch-size` writes (default 64 KiB).
    #[arg(long)]
    durable: bool,
    /// A broker property for the started broker, `key=value`; repeatable.
    #[arg(long = "broker-override", value_name = "KEY=VALUE")]
    broker_overrides: Vec<String>,
    /// Write a self-contained HTML report (table, throughput over time, latency curve).
    #[arg(long)]
    html: Option<PathBuf>,
    /// A line per second with the running rate on stderr (default: when stderr is a
    /// terminal).
    #[arg(long)]
    progress: bool,
}

impl TcpBenchArgs {
    fn enabled(&self) -> bool {
        self.tcp || self.bootstrap_server.is_some()
    }

    /// Flags that only mean something over TCP.
    fn tcp_only_flag(&self) -> Option<&'static str> {
        [
            (self.producers.is_some(), "--producers"),
            (self.consumers.is_some(), "--consumers"),
            (self.partitions.is_some(), "--partitions"),
            (self.size.is_some(), "--size"),
            (self.acks.is_some(), "--acks"),
            (self.compression.is_some(), "--compression"),
            (self.rate.is_some(), "--rate"),
            (self.records.is_some(), "--records"),
            (self.batch_size.is_some(), "--batch-size"),
            (self.linger_ms.is_some(), "--linger-ms"),
            (self.durable, "--durable"),
            (!self.broker_overrides.is_empty(), "--broker-override"),
            (self.html.is_some(), "--html"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }

    fn options(
        &self,
        seconds: f64,
        dir: Option<PathBuf>,
    ) -> Result<rill_log::bench::TcpBenchOptions, String> {
        use std::io::IsTerminal;
        let d = rill_log::bench::TcpBenchOptions::default();
        let compression = match &self.compression {
            None => d.compression,
            Some(c) => rill_log::record::Compression::parse(c)
                .ok_or_else(|| format!("unknown --compression {c}"))?,
        };
        let acks = self.acks.unwrap_or(d.acks);
        if ![0, 1, -1].contains(&acks) {
            return Err(format!("--acks must be 0, 1 or -1, not {acks}"));
        }
        let opts = rill_log::bench::TcpBenchOptions {
            bootstrap: self.bootstrap_server.clone(),
            broker_exe: std::env::current_exe()
                .map_err(|e| format!("cannot find the rill program to start: {e}"))?,
            broker_overrides: self.broker_overrides.clone(),
            dir: dir
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("rill-bench-{}", std::process::id())),
            seconds,
            records: self.records,
            producers: self.producers.unwrap_or(d.producers),
            consumers: self.consumers.unwrap_or(d.consumers),
            partitions: self.partitions.unwrap_or(d.partitions),
            size: self.size.unwrap_or(d.size),
            acks,
            compression,
            rate: self.rate,
            batch_size: self
                .batch_size
                .unwrap_or(if self.durable { 65_536 } else { d.batch_size }),
            linger_ms: self.linger_ms.unwrap_or(d.linger_ms),
            durable: self.durable,
            progress: self.progress || std::io::stderr().is_terminal(),
        };
        if opts.producers == 0 || opts.consumers == 0 || opts.partitions <= 0 {
            return Err("--producers, --consumers and --partitions must be at least 1".into());
        }
        if opts.batch_size == 0 || opts.rate == Some(0) || opts.records == Some(0) {
            return Err("--batch-size, --rate and --records must be positive".into());
        }
        Ok(opts)
    }
}

/// Which workload `run_tcp_bench` runs.
#[derive(Debug, Clone, Copy)]
enum TcpWorkload {
    Produce,
    Consume,
    E2e,
}

fn run_tcp_bench(
    which: TcpWorkload,
    opts: rill_log::bench::TcpBenchOptions,
    json: bool,
    html: Option<&std::path::Path>,
) -> ExitCode {
    if !(opts.seconds > 0.0 && opts.seconds.is_finite()) {
        eprintln!("error: --seconds must be a positive number");
        return ExitCode::from(2);
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = runtime.handle().clone();
    let _ = std::fs::create_dir_all(&opts.dir);
    let result = match which {
        TcpWorkload::Produce => rill_log::bench::run_tcp_produce(&opts, &handle),
        TcpWorkload::Consume => rill_log::bench::run_tcp_consume(&opts, &handle),
        TcpWorkload::E2e => rill_log::bench::run_tcp_e2e(&opts, &handle),
    };
    let _ = std::fs::remove_dir_all(&opts.dir);
    match result {
        Ok(report) => {
            print_rows(&report.rows, json);
            if let Some(path) = html {
                let page = rill_log::bench::report::html("rill bench", &[report]);
                if let Err(e) = std::fs::write(path, page) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The programs that run `rill bench streams` and `rill bench dsl`: the streams runtime and
/// the DSL live in crates above this one, so the `rill` binary hands over to them rather than
/// linking them.
const STREAMS_BENCH: (&str, &str) = ("rill-bench-streams", "rill-core");
const DSL_BENCH: (&str, &str) = ("rill-bench-dsl", "rill-dsl");

fn sibling_bench((name, krate): (&str, &str), args: &[String]) -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(name));
    match std::process::Command::new(&program).args(args).status() {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "error: this bench runs `{name}`, which is not built: \
                 `cargo build --release --workspace` builds it beside `rill` (or run \
                 `cargo run --release -p {krate} --bin {name} -- ...`)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", program.display());
            ExitCode::FAILURE
        }
    }
}

/// Prints rows as a table or as JSON lines.
fn print_rows(rows: &[rill_log::bench::BenchRow], json: bool) {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r).expect("rows serialize"));
        }
    } else {
        print!("{}", format_table(rows));
    }
}

/// Runs a client bench on a tokio runtime.
#[derive(Debug, Clone, Copy)]
enum ClientBench {
    Produce { mode: rill_log::bench::ProducerMode },
    Consume,
    E2e { rate: u64, size: usize },
}

fn run_client_bench(
    seconds: f64,
    json: bool,
    dir: Option<PathBuf>,
    which: ClientBench,
) -> ExitCode {
    if !(seconds > 0.0 && seconds.is_finite()) {
        eprintln!("error: --seconds must be a positive number");
        return ExitCode::from(2);
    }
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(rill_log::bench::run_in_dir(&dir, |work| async move {
        match which {
            ClientBench::Produce { mode } => {
                rill_log::bench::run_produce(&work, seconds, mode).await
            }
            ClientBench::Consume => rill_log::bench::run_consume(&work, seconds).await,
            ClientBench::E2e { rate, size } => {
                rill_log::bench::run_e2e(&work, seconds, rate, size).await
            }
        }
    }));
    match result {
        Ok(rows) => {
            print_rows(&rows, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The common case of a cluster node, as flags (each one a Kafka property).
#[derive(clap::Args, Debug, Default)]
struct ClusterFlags {
    /// `node.id`.
    #[arg(long)]
    node_id: Option<i32>,
    /// `controller.quorum.voters`: `1@host:port,2@host:port,3@host:port`. Makes this node part
    /// of a cluster (a broker and controller unless `--process-roles` says otherwise).
    #[arg(long, value_name = "VOTERS")]
    controller_quorum: Option<String>,
    /// `process.roles`: `broker`, `controller` or `broker,controller`.
    #[arg(long)]
    process_roles: Option<String>,
    /// The controller listener `host:port` (default: this node's voter address).
    #[arg(long)]
    controller_listen: Option<String>,
    /// `cluster.id`: formats an unformatted data directory for this cluster, and is checked
    /// against a formatted one.
    #[arg(long)]
    cluster_id: Option<String>,
    /// `broker.rack`.
    #[arg(long)]
    rack: Option<String>,
}

impl ClusterFlags {
    fn apply(&self, config: &mut NodeConfig) -> Result<(), CliError> {
        if let Some(id) = self.node_id {
            config.set("node.id", &id.to_string())?;
        }
        if let Some(v) = &self.controller_quorum {
            config.set("controller.quorum.voters", v)?;
            if self.process_roles.is_none() && !config.cluster.enabled() {
                config.set("process.roles", "broker,controller")?;
            }
        }
        if let Some(r) = &self.process_roles {
            config.set("process.roles", r)?;
        }
        if let Some(l) = &self.controller_listen {
            config.set("listeners", &format!("CONTROLLER://{l}"))?;
        }
        if let Some(c) = &self.cluster_id {
            config.set("cluster.id", c)?;
        }
        if let Some(r) = &self.rack {
            config.set("broker.rack", r)?;
        }
        Ok(())
    }
}

fn broker_command(
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertised: Option<String>,
    config_file: Option<PathBuf>,
    overrides: Vec<String>,
    cluster: ClusterFlags,
) -> Result<(), CliError> {
    let mut config = NodeConfig::new(PathBuf::new());
    if let Some(path) = &config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        config.apply_toml(&text)?;
    }
    for (k, v) in commands::pairs(&overrides)? {
        config.set(&k, &v)?;
    }
    if let Some(dir) = data_dir {
        config.broker.log.data_dir = dir;
    }
    if let Some(l) = listen {
        config.set("listeners", &l)?;
    }
    if let Some(a) = advertised {
        config.set("advertised.listeners", &a)?;
    }
    cluster.apply(&mut config)?;
    if config.broker.log.data_dir.as_os_str().is_empty() {
        return Err(CliError::Usage(
            "no data directory: give --data-dir or log.dirs in the config".into(),
        ));
    }
    runtime()?.block_on(rill_log::cli::broker::run(config, shutdown_signal()))
}

fn format_command(dir: &std::path::Path, cluster_id: &str, node_id: i32) -> Result<(), CliError> {
    use rill_log::storage::meta_properties;
    if let Some(meta) = meta_properties::read(dir).map_err(|e| CliError::Usage(e.to_string()))? {
        return Err(CliError::Usage(format!(
            "{} is already formatted (cluster {}, node {})",
            dir.display(),
            meta.cluster_id,
            meta.node_id
        )));
    }
    meta_properties::ensure(dir, node_id, Some(cluster_id))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!(
        "formatted {} for cluster {cluster_id}, node {node_id}",
        dir.display()
    );
    Ok(())
}

fn client_command(command: Command) -> Result<(), CliError> {
    let rt = runtime()?;
    rt.block_on(async move {
        match command {
            Command::Topics { conn, action } => {
                let t = commands::connect(&conn.bootstrap_server).await?;
                let table = match action {
                    TopicsAction::Create {
                        topic,
                        partitions,
                        replication_factor,
                        configs,
                    } => {
                        commands::topics_create(
                            t,
                            &topic,
                            partitions,
                            replication_factor,
                            &commands::pairs(&configs)?,
                        )
                        .await?
                    }
                    TopicsAction::List => commands::topics_list(t).await?,
                    TopicsAction::Describe {
                        topic,
                        under_replicated,
                        under_min_isr,
                    } => {
                        commands::topics_describe(t, &topic, under_replicated, under_min_isr)
                            .await?
                    }
                    TopicsAction::Delete { topic } => commands::topics_delete(t, &topic).await?,
                    TopicsAction::AlterConfig { topic, set, delete } => {
                        commands::topics_alter_config(t, &topic, &commands::pairs(&set)?, &delete)
                            .await?
                    }
                };
                table.print(conn.json);
            }
            Command::Produce {
                conn,
                topic,
                key_separator,
                headers,
                partition,
                properties,
            } => {
                let t = commands::connect(&conn.bootstrap_server).await?;
                let opts = commands::ProduceOptions {
                    topic: topic.clone(),
                    key_separator,
                    headers: commands::pairs(&headers)?,
                    partition,
                    properties: commands::pairs(&properties)?,
                };
                let stdin = std::io::stdin();
                let n = commands::produce(t, &opts, stdin.lock()).await?;
                if conn.json {
                    println!("{}", serde_json::json!({"topic": topic, "records": n}));
                } else {
                    eprintln!("produced {n} record(s) to {topic}");
                }
            }
            Command::Consume {
                conn,
                topic,
                from_beginning,
                offset,
                partition,
                group,
                max_messages,
                timeout_ms,
                format,
                properties,
            } => {
                let t = commands::connect(&conn.bootstrap_server).await?;
                let opts = commands::ConsumeOptions {
                    topic,
                    from_beginning,
                    offset,
                    partition,
                    group,
                    max_messages,
                    timeout_ms,
                    format: if conn.json {
                        r#"{"topic":"%t","partition":%p,"offset":%o,"timestamp":%T,"key":"%k","value":"%v"}"#.into()
                    } else {
                        format
                    },
                    properties: commands::pairs(&properties)?,
                };
                let stdout = std::io::stdout();
                commands::consume(t, &opts, &mut stdout.lock()).await?;
            }
            Command::Transactions { conn, action } => {
                use rill_log::cli::transactions;
                let t = commands::connect(&conn.bootstrap_server).await?;
                let table = match action {
                    TransactionsAction::List => transactions::list(t).await?,
                    TransactionsAction::Describe { transactional_id } => {
                        transactions::describe(t, &transactional_id).await?
                    }
                    TransactionsAction::FindHanging { topic } => transactions::hanging_table(
                        transactions::find_hanging(t, topic.as_deref()).await?,
                    ),
                    TransactionsAction::Abort {
                        topic,
                        partition,
                        producer_id,
                        producer_epoch,
                    } => {
                        let tp = rill_log::types::TopicPartition::new(topic, partition);
                        transactions::abort(t, &tp, producer_id, producer_epoch).await?
                    }
                };
                table.print(conn.json);
            }
            Command::Cluster { conn, action } => {
                let t = commands::connect(&conn.bootstrap_server).await?;
                let table = match action {
                    ClusterAction::Describe { controller_quorum } => {
                        let voters = match controller_quorum {
                            Some(v) => {
                                let mut c = NodeConfig::new(PathBuf::new());
                                c.set("controller.quorum.voters", &v)?;
                                Some(c.cluster.broker.voters)
                            }
                            None => None,
                        };
                        commands::cluster_describe(t, voters).await?
                    }
                    ClusterAction::Unregister { broker } => {
                        rill_log::client::Admin::new(t).unregister_broker(broker).await?;
                        let mut table = rill_log::cli::output::Table::new(&["broker", "result"]);
                        table.push(vec![broker.to_string(), "unregistered".into()]);
                        table
                    }
                };
                table.print(conn.json);
            }
            Command::Partitions { conn, action } => {
                use rill_log::cli::partitions;
                let t = commands::connect(&conn.bootstrap_server).await?;
                let table = match action {
                    PartitionsAction::Plan { drain, spread_to } => {
                        let goal = match (drain, spread_to) {
                            (Some(b), _) => partitions::Goal::Drain(b),
                            (None, Some(b)) => partitions::Goal::SpreadTo(b),
                            (None, None) => unreachable!("clap requires one"),
                        };
                        let plan = partitions::generate(t, goal).await?;
                        println!(
                            "{}",
                            serde_json::to_string(&plan).map_err(|e| CliError::Usage(e.to_string()))?
                        );
                        return Ok(());
                    }
                    PartitionsAction::Reassign {
                        plan,
                        execute,
                        verify,
                        cancel,
                    } => {
                        let text = std::fs::read_to_string(&plan)?;
                        let plan = partitions::Plan::parse(&text)?;
                        if execute {
                            partitions::execute(t, &plan).await?
                        } else if verify {
                            partitions::verify(t, &plan).await?
                        } else if cancel {
                            partitions::cancel(t, &plan).await?
                        } else {
                            return Err(CliError::Usage(
                                "give --execute, --verify or --cancel".into(),
                            ));
                        }
                    }
                    PartitionsAction::ListReassignments => partitions::list(t).await?,
                };
                table.print(conn.json);
            }
            Command::Leaders { conn, action } => {
                let t = commands::connect(&conn.bootstrap_server).await?;
                let table = match action {
                    LeadersAction::Elect {
                        election_type,
                        topic,
                        partition,
                        all_topic_partitions,
                    } => {
                        if topic.is_none() && !all_topic_partitions {
                            return Err(CliError::Usage(
                                "name a --topic or give --all-topic-partitions".into(),
                            ));
                        }
                        let preferred = matches!(election_type, ElectionKind::Preferred);
                        commands::leaders_elect(t, preferred, topic.as_deref(), &partition)
                            .await?
                    }
                };
                table.print(conn.json);
            }
            Command::Groups { conn, action } => {
                let t = commands::connect(&conn.bootstrap_server).await?;
                let table = match action {
                    GroupsAction::List => commands::groups_list(t).await?,
                    GroupsAction::Describe { group } => commands::groups_describe(t, &group).await?,
                    GroupsAction::DeleteOffsets {
                        group,
                        topic,
                        partitions,
                    } => commands::groups_delete_offsets(t, &group, &topic, &partitions).await?,
                    GroupsAction::ResetOffsets {
                        group,
                        topic,
                        to_earliest,
                        to_latest,
                        to_offset,
                        to_timestamp,
                        execute,
                    } => {
                        let to = match (to_earliest, to_latest, to_offset, to_timestamp) {
                            (true, _, _, _) => commands::ResetTo::Earliest,
                            (_, true, _, _) => commands::ResetTo::Latest,
                            (_, _, Some(o), _) => commands::ResetTo::Offset(o),
                            (_, _, _, Some(ts)) => commands::ResetTo::Timestamp(ts),
                            _ => {
                                return Err(CliError::Usage(
                                    "give one of --to-earliest, --to-latest, --to-offset, --to-timestamp"
                                        .into(),
                                ))
                            }
                        };
                        commands::groups_reset_offsets(t, &group, &topic, to, execute).await?
                    }
                };
                table.print(conn.json);
            }
            Command::Broker { .. } | Command::Bench { .. } | Command::Format { .. } => {}
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Broker {
            data_dir,
            listen,
            advertised_listener,
            config,
            overrides,
            cluster,
        } => broker_command(
            data_dir,
            listen,
            advertised_listener,
            config,
            overrides,
            cluster,
        ),
        Command::Format {
            data_dir,
            cluster_id,
            node_id,
        } => format_command(&data_dir, &cluster_id, node_id),
        Command::Bench { workload } => return bench(workload),
        other => client_command(other),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn needs_tcp(flag: &str) -> ExitCode {
    eprintln!("error: {flag} is for benches over TCP: add --tcp or --bootstrap-server");
    ExitCode::from(2)
}

/// A TCP bench from its flags; `e2e` carries the e2e subcommand's own rate and size.
fn tcp_bench(
    which: TcpWorkload,
    args: &TcpBenchArgs,
    seconds: f64,
    dir: Option<PathBuf>,
    json: bool,
    e2e: Option<(u64, usize)>,
) -> ExitCode {
    let mut opts = match args.options(seconds, dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some((rate, size)) = e2e {
        opts.rate = Some(rate.max(1));
        opts.size = size.max(8);
        // A record waits for no one end to end, unless asked.
        opts.linger_ms = args.linger_ms.unwrap_or(0);
    }
    run_tcp_bench(which, opts, json, args.html.as_deref())
}

fn bench(workload: BenchWorkload) -> ExitCode {
    match workload {
        BenchWorkload::Streams { args } => sibling_bench(STREAMS_BENCH, &args),
        BenchWorkload::Cluster {
            seconds,
            size,
            producers,
            rate,
            batch_size,
            linger_ms,
            kills,
            session_timeout_ms,
            overrides,
            json,
            dir,
            progress,
        } => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: cannot find this program to start brokers: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = rill_log::bench::cluster::ClusterBenchOptions {
                broker_exe: exe,
                dir: dir.unwrap_or_else(std::env::temp_dir),
                seconds,
                size: size.max(1),
                producers: producers.max(1),
                rate,
                batch_size: batch_size.max(1),
                linger_ms,
                kills,
                session_timeout_ms,
                broker_overrides: overrides,
                progress,
                ..Default::default()
            };
            let runtime = match runtime() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = rill_log::bench::cluster::run_cluster(&opts, runtime.handle());
            let _ = std::fs::remove_dir_all(opts.dir.join("rill-bench-cluster"));
            match result {
                Ok(report) => {
                    print_rows(&report.rows, json);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        BenchWorkload::Dsl { args } => sibling_bench(DSL_BENCH, &args),
        BenchWorkload::Produce {
            seconds,
            json,
            dir,
            idempotent,
            transactional,
            tcp,
        } => {
            if tcp.enabled() {
                if idempotent || transactional {
                    eprintln!("error: --idempotent and --transactional are embedded benches");
                    return ExitCode::from(2);
                }
                return tcp_bench(TcpWorkload::Produce, &tcp, seconds, dir, json, None);
            }
            if let Some(flag) = tcp.tcp_only_flag() {
                return needs_tcp(flag);
            }
            let mode = match (idempotent, transactional) {
                (_, true) => rill_log::bench::ProducerMode::Transactional,
                (true, _) => rill_log::bench::ProducerMode::Idempotent,
                _ => rill_log::bench::ProducerMode::Plain,
            };
            run_client_bench(seconds, json, dir, ClientBench::Produce { mode })
        }
        BenchWorkload::Consume {
            seconds,
            json,
            dir,
            tcp,
        } => {
            if tcp.enabled() {
                return tcp_bench(TcpWorkload::Consume, &tcp, seconds, dir, json, None);
            }
            if let Some(flag) = tcp.tcp_only_flag() {
                return needs_tcp(flag);
            }
            run_client_bench(seconds, json, dir, ClientBench::Consume)
        }
        BenchWorkload::E2e {
            seconds,
            json,
            dir,
            tcp,
        } => {
            let (rate, size) = (tcp.rate.unwrap_or(10_000), tcp.size.unwrap_or(1024));
            if tcp.enabled() {
                let e2e = Some((rate, size));
                return tcp_bench(TcpWorkload::E2e, &tcp, seconds, dir, json, e2e);
            }
            // The embedded e2e bench takes --rate and --size too.
            let embedded = TcpBenchArgs {
                rate: None,
                size: None,
                ..tcp.clone()
            };
            if let Some(flag) = embedded.tcp_only_flag() {
                return needs_tcp(flag);
            }
            run_client_bench(seconds, json, dir, ClientBench::E2e { rate, size })
        }
        BenchWorkload::Storage { seconds, json, dir } => {
            if !(seconds > 0.0 && seconds.is_finite()) {
                eprintln!("error: --seconds must be a positive number");
                return ExitCode::from(2);
            }
            let opts = StorageBenchOptions {
                seconds,
                dir: dir.unwrap_or_else(std::env::temp_dir),
            };
            match run_storage(&opts) {
                Ok(rows) => {
                    print_rows(&rows, json);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
