//! `rill-bench-dsl`: the DSL benchmark (`rill bench dsl` runs this program, which lives in
//! rill-dsl because the `rill` binary's crate, rill-log, sits below the DSL).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rill_core::bench::bench_program;
use rill_dsl::bench::{run_dsl, DslBenchOptions};

/// mimalloc: allocation-heavy paths (a record per `Vec`, `Bytes`) run faster than on glibc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Throughput of DSL jobs (windows, sessions, joins) under exactly-once on the embedded
/// log, as ratios to pass-through in the same run.
#[derive(Debug, Parser)]
#[command(name = "rill bench dsl")]
struct Args {
    /// Input records (each workload processes all of them).
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Distinct keys of the input.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Only these workloads (comma-separated: tumbling, hopping, session, join); pass-through
    /// always runs, as the baseline.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Every job's commit interval. Under a profiler that slows the process ~100x
    /// (cachegrind), 100x the default keeps as many records per commit as a native run.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
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
    let options = DslBenchOptions {
        records: args.records,
        keys: args.keys,
        value_bytes: args.value_bytes,
        only: args.only,
        commit_interval_ms: args.commit_interval_ms,
    };
    bench_program(args.dir, args.json, |work| async move {
        run_dsl(&work, &options).await
    })
}
