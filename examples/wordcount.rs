//! Word count: lines of text split into words, counted per word (the key changes, so the
//! words go through a repartition topic before the count), exactly once. Prints the top
//! words and checks every count against the input.
//!
//! Run it with `cargo run --release --example wordcount` (`-- --records N` lines).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{tally, Args, Cluster, Rng};

const WORDS: [&str; 12] = [
    "stream", "table", "window", "join", "log", "rill", "kafka", "state", "store", "time", "event",
    "record",
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let lines = args.records.unwrap_or(2_000);
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[("text-lines", 2), ("word-counts", 2)])
        .await?;

    let builder = StreamsBuilder::new();
    builder
        .stream::<(), String>("text-lines") // lines have no key
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone())
        .count_with(Materialized::named("counts"))
        .to_stream()
        .to("word-counts");
    let mut app = Streams::new(
        builder.build()?,
        Arc::clone(&cluster.transport),
        cluster.streams_config("wordcount"),
    );
    app.start();

    let mut rng = Rng::new(42);
    let text: Vec<((), String, i64)> = (0..lines as i64)
        .map(|i| {
            let n = 1 + rng.below(8) as usize;
            let line: Vec<&str> = (0..n).map(|_| *rng.pick(&WORDS)).collect();
            ((), line.join(" "), i)
        })
        .collect();
    let expected = tally(
        text.iter()
            .flat_map(|(_, l, _)| l.split_whitespace().map(String::from).collect::<Vec<_>>()),
    );
    let total: i64 = expected.values().sum();
    cluster.produce("text-lines", &text).await?;
    println!("produced {lines} lines, {total} words");

    // The record cache forwards the latest count per word at each commit: read until the
    // last update of every word is its count.
    let latest = |updates: &[(String, Option<i64>, i64)]| {
        let mut counts = std::collections::BTreeMap::new();
        for (w, n, _) in updates {
            counts.insert(w.clone(), n.unwrap_or(0));
        }
        counts
    };
    let updates = cluster
        .consume_until::<String, i64>("word-counts", auto(), Duration::from_secs(60), |got| {
            latest(got) == expected
        })
        .await?;
    let counts = latest(&updates);
    let mut top: Vec<(&String, &i64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (w, n) in top.iter().take(5) {
        println!("  {w:<8} {n}");
    }
    // Interactive query: the count of one word from the application's own store.
    let stream_count: Option<i64> = app.get("counts", &"stream".to_string()).await?;
    println!("  (the store says \"stream\" = {stream_count:?})");
    ensure!(
        stream_count == expected.get("stream").copied(),
        "interactive query disagrees"
    );
    app.close().await?;
    cluster.close()?;
    ensure!(counts == expected, "counts differ from the input's");
    println!("all {} words counted exactly", expected.len());
    Ok(())
}
