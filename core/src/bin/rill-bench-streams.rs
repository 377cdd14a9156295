//! `rill-bench-streams`: the streams benchmark (`rill bench streams` runs this program, which
//! lives in rill-core because the `rill` binary's crate, rill-log, sits below the runtime).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rill_core::bench::{bench_program, run_streams, StreamsBenchOptions};

/// mimalloc: allocation-heavy paths (a record per `Vec`, `Bytes`) run faster than on glibc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    bench_program(args.dir, args.json, |work| async move {
        run_streams(&work, &options).await
    })
}
