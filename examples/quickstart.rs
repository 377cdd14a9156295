//! Quickstart: page views counted per page in 10-second tumbling windows, exactly once, on
//! an embedded log (no server to start). Each window's final count is printed when the
//! window closes, then checked against a count of the generated input.
//!
//! Run it with `cargo run --release --example quickstart`
//! (`-- --records N` for more input, `-- --bootstrap-server host:port` for a `rill broker`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{tally, Args, Cluster, Rng};

const PAGES: [&str; 5] = ["/home", "/products", "/cart", "/checkout", "/about"];
const WINDOW_MS: i64 = 10_000;
/// Event time of the first view (a multiple of the window size: windows align to epoch 0).
const T0: i64 = 1_700_000_000_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let records = args.records.unwrap_or(5_000);
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[("page-views", 3), ("pageviews-per-window", 3)])
        .await?;

    // The job: views keyed by page, counted per page and 10-second window; only each
    // window's final count leaves the job (suppress until the window closes).
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("page-views") // key: page, value: user
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("pageviews-per-window");
    let mut app = Streams::new(
        builder.build()?,
        Arc::clone(&cluster.transport),
        cluster.streams_config("quickstart"),
    );
    app.start();

    // The input: a view every 20 ms of event time, then one view per page a window after
    // the last, which moves each page's stream time on so that its last window closes.
    let mut rng = Rng::new(7);
    let mut views: Vec<(String, String, i64)> = (0..records as i64)
        .map(|i| {
            let page = rng.pick(&PAGES).to_string();
            let user = format!("user-{}", rng.below(20));
            (page, user, T0 + i * 20)
        })
        .collect();
    let expected = tally(
        views
            .iter()
            .map(|(page, _, ts)| (page.clone(), ts - ts % WINDOW_MS)),
    );
    let last = views.last().map_or(T0, |v| v.2);
    let closing = last - last % WINDOW_MS + WINDOW_MS;
    views.extend(
        PAGES
            .iter()
            .map(|p| (p.to_string(), "closer".to_string(), closing)),
    );
    cluster.produce("page-views", &views).await?;
    println!(
        "produced {records} page views over {} s of event time; windows of {} s:",
        (last - T0) / 1000 + 1,
        WINDOW_MS / 1000
    );

    let keys: SerdeRef<Windowed<String>> = Arc::new(WindowedSerde::new(auto()));
    let mut printed = 0;
    let results = cluster
        .consume_until::<Windowed<String>, i64>(
            "pageviews-per-window",
            keys,
            Duration::from_secs(60),
            |got| {
                for (w, n, _) in &got[printed..] {
                    println!(
                        "  window [+{:>3} s, +{:>3} s)  {:<10} {:>4} views",
                        (w.window.start - T0) / 1000,
                        (w.window.end - T0) / 1000,
                        w.key,
                        n.unwrap_or(0)
                    );
                }
                printed = got.len();
                got.len() >= expected.len()
            },
        )
        .await?;
    app.close().await?;
    cluster.close()?;

    ensure!(
        results.len() == expected.len(),
        "{} results for {} windows",
        results.len(),
        expected.len()
    );
    let got: std::collections::BTreeMap<(String, i64), i64> = results
        .into_iter()
        .map(|(w, n, _)| ((w.key, w.window.start), n.unwrap_or(0)))
        .collect();
    ensure!(
        got == expected,
        "the windows' counts differ from the input's"
    );
    println!(
        "all {} windows match the input's counts, each emitted once",
        expected.len()
    );
    Ok(())
}
