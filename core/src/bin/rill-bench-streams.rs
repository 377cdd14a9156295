//! `rill-bench-streams`: the streams benchmark (`rill bench streams` runs this program, which
//! lives in rill-core because the `rill` binary's crate, rill-log, sits below the runtime).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rill_core::bench::{run_streams, StreamsBenchOptions};
use rill_log::bench::{format_table, run_in_dir};

/// Throughput of rill's streams runtime on the embedded log, as ratios in the same run.
#[derive(Debug, Parser)]
#[command(name = "rill bench streams")]
struct Args {
    /// Input records (each workload processes all of them).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Distinct keys of the input.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Print JSON objects, one per line, instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the bench's broker and state live (default: the temp directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.records == 0 || args.keys == 0 {
        eprintln!("error: --records and --keys must be positive");
        return ExitCode::from(2);
    }
    let options = StreamsBenchOptions {
        records: args.records,
        keys: args.keys,
        value_bytes: args.value_bytes,
    };
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
    let dir = args.dir.unwrap_or_else(std::env::temp_dir);
    let result = runtime.block_on(run_in_dir(&dir, |work| async move {
        run_streams(&work, &options).await
    }));
    match result {
        Ok(rows) if args.json => {
            for r in &rows {
                match serde_json::to_string(r) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            print!("{}", format_table(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
