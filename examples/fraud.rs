//! Fraud: card payments joined with the card's logins (a stream-stream join): a payment
//! with a login from another country within a minute, before or after it, raises an alert.
//! Checks the alerts against every such pair in the input.
//!
//! Run it with `cargo run --release --example fraud`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{Args, Cluster, Rng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payment {
    id: u64,
    amount_cents: i64,
    country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Login {
    id: u64,
    country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Alert {
    payment: u64,
    login: u64,
    payment_country: String,
    login_country: String,
}

const COUNTRIES: [&str; 4] = ["NL", "DE", "FR", "US"];
const MINUTE: i64 = 60_000;
/// Event time between two events.
const SPACING: i64 = 5_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let events = args.records.unwrap_or(2_000);
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[("payments", 2), ("logins", 2), ("alerts", 2)])
        .await?;

    let builder = StreamsBuilder::new();
    let logins = builder.stream::<String, Login>("logins"); // key: card
    builder
        .stream::<String, Payment>("payments") // key: card
        .join(
            &logins,
            |p, l| (p.clone(), l.clone()),
            // A task takes its records in timestamp order across both topics, so ten
            // seconds of grace is plenty.
            JoinWindows::of_time_difference_and_grace(
                Duration::from_millis(MINUTE as u64),
                Duration::from_secs(10),
            ),
        )
        .filter(|_, (p, l)| p.country != l.country)
        .map_values(|(p, l)| Alert {
            payment: p.id,
            login: l.id,
            payment_country: p.country,
            login_country: l.country,
        })
        .to("alerts");

    // 30 cards; an event every 5 s, alternately payments and logins, mostly from the
    // card's home country.
    let mut rng = Rng::new(9);
    let mut payments = Vec::new();
    let mut logins = Vec::new();
    for i in 0..events as u64 {
        let card = rng.below(30);
        let country = if rng.below(8) == 0 {
            rng.pick(&COUNTRIES).to_string()
        } else {
            COUNTRIES[(card % 4) as usize].to_string()
        };
        let ts = i as i64 * SPACING;
        if i % 2 == 0 {
            let amount_cents = 100 + rng.below(50_000) as i64;
            payments.push((
                format!("card-{card}"),
                Payment {
                    id: i,
                    amount_cents,
                    country,
                },
                ts,
            ));
        } else {
            logins.push((format!("card-{card}"), Login { id: i, country }, ts));
        }
    }
    let mut expected = BTreeSet::new();
    for (pc, p, pt) in &payments {
        for (lc, l, lt) in &logins {
            if pc == lc && (pt - lt).abs() <= MINUTE && p.country != l.country {
                expected.insert(Alert {
                    payment: p.id,
                    login: l.id,
                    payment_country: p.country.clone(),
                    login_country: l.country.clone(),
                });
            }
        }
    }
    // All input is in the log before the job starts: the payments topic first, entirely.
    cluster.produce("payments", &payments).await?;
    cluster.produce("logins", &logins).await?;
    let mut app = Streams::new(
        builder.build()?,
        Arc::clone(&cluster.transport),
        cluster.streams_config("fraud"),
    );
    app.start();
    let out = cluster
        .consume_until::<String, Alert>("alerts", auto(), Duration::from_secs(60), |got| {
            got.len() >= expected.len()
        })
        .await?;
    app.close().await?;
    cluster.close()?;
    let alerts: Vec<Alert> = out.into_iter().filter_map(|(_, a, _)| a).collect();
    for a in alerts.iter().take(5) {
        println!(
            "  payment {} in {} with a login ({}) from {}",
            a.payment, a.payment_country, a.login, a.login_country
        );
    }
    let got: BTreeSet<Alert> = alerts.iter().cloned().collect();
    ensure!(got.len() == alerts.len(), "an alert was raised twice");
    ensure!(got == expected, "alerts differ from the input's pairs");
    println!(
        "{} alerts from {events} events, exactly the suspicious pairs",
        alerts.len()
    );
    Ok(())
}
