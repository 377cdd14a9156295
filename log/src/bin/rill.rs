//! The `rill` command: today `rill bench storage|produce|consume`; the broker, topic,
//! produce, consume and group commands join it as the TCP server lands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rill_log::bench::{format_table, run_storage, StorageBenchOptions};

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
    /// Measure rill against a baseline run in the same process.
    Bench {
        #[command(subcommand)]
        workload: BenchWorkload,
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
    /// One embedded producer (acks=all) against the storage append path.
    Produce {
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// End-to-end latency (produce -> consumer poll) at a fixed rate, from the intended send
    /// time; the baseline is the producer's acknowledgement latency in the same run.
    E2e {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Records per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Record size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One embedded consumer over a prepared backlog against reading the log directly.
    Consume {
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
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
    Produce,
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
            ClientBench::Produce => rill_log::bench::run_produce(&work, seconds).await,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            workload: BenchWorkload::Produce { seconds, json, dir },
        } => run_client_bench(seconds, json, dir, ClientBench::Produce),
        Command::Bench {
            workload: BenchWorkload::Consume { seconds, json, dir },
        } => run_client_bench(seconds, json, dir, ClientBench::Consume),
        Command::Bench {
            workload:
                BenchWorkload::E2e {
                    seconds,
                    rate,
                    size,
                    json,
                    dir,
                },
        } => run_client_bench(seconds, json, dir, ClientBench::E2e { rate, size }),
        Command::Bench {
            workload: BenchWorkload::Storage { seconds, json, dir },
        } => {
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
