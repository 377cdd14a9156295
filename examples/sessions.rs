//! User sessions: clicks per user grouped into sessions that end after 30 s without a
//! click, counted, and emitted once each session has closed. Checks the sessions against
//! ones computed from the input.
//!
//! Run it with `cargo run --release --example sessions`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{Args, Cluster, Rng};

const GAP: i64 = 30_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let records = args.records.unwrap_or(2_000);
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[("clicks", 3), ("user-sessions", 3)])
        .await?;

    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("clicks") // key: user, value: page
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_with_no_grace(
            Duration::from_millis(GAP as u64),
        ))
        .count()
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .to("user-sessions");
    let mut app = Streams::new(
        builder.build()?,
        Arc::clone(&cluster.transport),
        cluster.streams_config("sessions"),
    );
    app.start();

    // Clicks by 10 users, 2 s apart on average: each user's gaps vary around the
    // session gap.
    let mut rng = Rng::new(11);
    let mut clicks: Vec<(String, String, i64)> = (0..records as i64)
        .map(|i| {
            (
                format!("user-{}", rng.below(10)),
                format!("/p{}", rng.below(5)),
                i * 2_000,
            )
        })
        .collect();
    // The sessions, from the definition: a user's clicks at most GAP apart share one.
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (u, _, ts) in &clicks {
        by_user.entry(u.clone()).or_default().push(*ts);
    }
    let mut expected: BTreeMap<(String, i64, i64), i64> = BTreeMap::new();
    for (u, times) in &by_user {
        let (mut start, mut end, mut n) = (times[0], times[0], 0);
        for &t in times {
            if t - end > GAP {
                expected.insert((u.clone(), start, end), n);
                (start, n) = (t, 0);
            }
            end = t;
            n += 1;
        }
        expected.insert((u.clone(), start, end), n);
    }
    // A click far later per user closes its last session.
    let last = clicks.last().map_or(0, |c| c.2);
    clicks.extend(
        by_user
            .keys()
            .map(|u| (u.clone(), "/bye".into(), last + 10 * GAP)),
    );
    cluster.produce("clicks", &clicks).await?;

    // Closed sessions arrive once each; a session merged away before it closed arrives as a
    // tombstone.
    let keys: SerdeRef<Windowed<String>> = Arc::new(WindowedSerde::new(auto()));
    let mut sessions: BTreeMap<(String, i64, i64), i64> = BTreeMap::new();
    let consumed = cluster
        .consume_until::<Windowed<String>, i64>(
            "user-sessions",
            keys,
            Duration::from_secs(60),
            |got| {
                sessions.clear();
                for (w, n, _) in got {
                    let k = (w.key.clone(), w.window.start, w.window.end);
                    match n {
                        Some(n) => {
                            sessions.insert(k, *n);
                        }
                        None => {
                            sessions.remove(&k);
                        }
                    }
                }
                sessions == expected
            },
        )
        .await;
    if let Err(e) = &consumed {
        for (k, n) in &expected {
            if sessions.get(k) != Some(n) {
                println!(
                    "missing or wrong: {k:?} expected {n}, got {:?}",
                    sessions.get(k)
                );
            }
        }
        for (k, n) in &sessions {
            if !expected.contains_key(k) {
                println!("unexpected: {k:?} = {n}");
            }
        }
        anyhow::bail!("{e}");
    }
    app.close().await?;
    cluster.close()?;
    let mut longest: Vec<_> = sessions.iter().collect();
    longest.sort_by_key(|((_, s, e), _)| std::cmp::Reverse(e - s));
    for ((u, s, e), n) in longest.iter().take(5) {
        println!(
            "  {u:<8} {:>4} s long, {n:>3} clicks (from {s} ms)",
            (e - s) / 1000
        );
    }
    ensure!(sessions == expected, "sessions differ");
    println!(
        "all {} sessions of {} users match the input",
        expected.len(),
        by_user.len()
    );
    Ok(())
}
