//! Windowed page views: views per page in hopping windows (10 s long, a new one every 5 s,
//! 2 s of grace for late views), each window's final count emitted once when it closes
//! (`suppress`). Checks every window against the input.
//!
//! Run it with `cargo run --release --example windowed_pageviews`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{Args, Cluster, Rng};

const PAGES: [&str; 4] = ["/home", "/search", "/item", "/basket"];
const SIZE: i64 = 10_000;
const ADVANCE: i64 = 5_000;
const GRACE: i64 = 2_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let records = args.records.unwrap_or(3_000);
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[("views", 2), ("hopping-counts", 2)])
        .await?;

    let ms = |n: i64| Duration::from_millis(n as u64);
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("views")
        .group_by_key()
        .windowed_by(TimeWindows::of_size_with_grace(ms(SIZE), ms(GRACE)).advance_by(ms(ADVANCE)))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("hopping-counts");
    let mut app = Streams::new(
        builder.build()?,
        Arc::clone(&cluster.transport),
        cluster.streams_config("windowed-pageviews"),
    );
    app.start();

    // A view every 10 ms, some of them up to 1.5 s late (within the grace period).
    let mut rng = Rng::new(3);
    let mut views: Vec<(String, String, i64)> = (0..records as i64)
        .map(|i| {
            let late = if rng.below(10) == 0 {
                rng.below(1_500) as i64
            } else {
                0
            };
            (
                rng.pick(&PAGES).to_string(),
                format!("u{}", rng.below(50)),
                (i * 10 - late).max(0),
            )
        })
        .collect();
    // The windows each view belongs to: starts that are multiples of ADVANCE, in
    // (ts - SIZE, ts].
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (page, _, ts) in &views {
        let mut start = ts - ts % ADVANCE;
        while start >= 0 && start > ts - SIZE {
            *expected.entry((page.clone(), start)).or_insert(0) += 1;
            start -= ADVANCE;
        }
    }
    // Views past the last window's close move every page's stream time on.
    let last = views.iter().map(|v| v.2).max().unwrap_or(0);
    let closing = last - last % ADVANCE + SIZE + GRACE;
    views.extend(
        PAGES
            .iter()
            .map(|p| (p.to_string(), "closer".into(), closing)),
    );
    cluster.produce("views", &views).await?;

    let keys: SerdeRef<Windowed<String>> = Arc::new(WindowedSerde::new(auto()));
    let results = cluster
        .consume_until::<Windowed<String>, i64>(
            "hopping-counts",
            keys,
            Duration::from_secs(60),
            |got| got.len() >= expected.len(),
        )
        .await?;
    app.close().await?;
    cluster.close()?;
    let mut busiest = results.clone();
    busiest.sort_by_key(|(_, n, _)| std::cmp::Reverse(n.unwrap_or(0)));
    for (w, n, _) in busiest.iter().take(5) {
        println!(
            "  {:<8} [{:>6} ms, {:>6} ms)  {:>4} views",
            w.key,
            w.window.start,
            w.window.end,
            n.unwrap_or(0)
        );
    }
    let got: BTreeMap<(String, i64), i64> = results
        .iter()
        .map(|(w, n, _)| ((w.key.clone(), w.window.start), n.unwrap_or(0)))
        .collect();
    let mut twice: Vec<String> = Vec::new();
    for (i, (w, n, ts)) in results.iter().enumerate() {
        if results[..i].iter().any(|(v, _, _)| v == w) {
            twice.push(format!(
                "{} [{}, {}) = {:?} at {ts}",
                w.key, w.window.start, w.window.end, n
            ));
        }
    }
    ensure!(
        results.len() == expected.len() && twice.is_empty(),
        "a window was emitted twice: {twice:?} ({} results, {} windows)",
        results.len(),
        expected.len()
    );
    ensure!(got == expected, "window counts differ from the input's");
    println!(
        "all {} hopping windows match, each emitted once",
        expected.len()
    );
    Ok(())
}
