//! The `rill` command: today `rill bench storage`; the broker, topic, produce, consume and
//! group commands join it as the layers below them land.

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
                    if json {
                        for r in &rows {
                            println!("{}", serde_json::to_string(r).expect("rows serialize"));
                        }
                    } else {
                        print!("{}", format_table(&rows));
                    }
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
