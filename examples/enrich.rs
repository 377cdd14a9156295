//! Enrich: orders (a stream) joined with customers (a table, read from a compacted topic)
//! to add each order's customer name and tier; orders of unknown or deleted customers are
//! kept (a left join). Checks every enriched order against the customer data at its time.
//!
//! Run it with `cargo run --release --example enrich`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{Args, Cluster, Rng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Customer {
    name: String,
    tier: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EnrichedOrder {
    id: u64,
    amount_cents: i64,
    customer: String,
    tier: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let orders = args.records.unwrap_or(1_000);
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[("customers", 2), ("orders", 2), ("enriched-orders", 2)])
        .await?;

    let builder = StreamsBuilder::new();
    let customers = builder.table::<String, Customer>("customers");
    builder
        .stream::<String, Order>("orders") // key: customer id
        .left_join_table(&customers, |o, c| EnrichedOrder {
            id: o.id,
            amount_cents: o.amount_cents,
            customer: c.map_or("unknown".into(), |c| c.name.clone()),
            tier: c.map_or("none".into(), |c| c.tier.clone()),
        })
        .to("enriched-orders");

    // Customers c0..c19 (c19 deleted again), then orders for c0..c21 (c20 and c21 unknown).
    let mut rows: Vec<(String, Option<Customer>, i64)> = (0..20)
        .map(|i| {
            let tier = if i % 4 == 0 { "gold" } else { "standard" };
            let c = Customer {
                name: format!("Customer {i}"),
                tier: tier.into(),
            };
            (format!("c{i}"), Some(c), i as i64)
        })
        .collect();
    rows.push(("c19".into(), None, 20));
    cluster.produce("customers", &rows).await?;
    let table: BTreeMap<String, Customer> =
        rows.iter().fold(BTreeMap::new(), |mut m, (k, c, _)| {
            match c {
                Some(c) => m.insert(k.clone(), c.clone()),
                None => m.remove(k),
            };
            m
        });

    let mut rng = Rng::new(5);
    let input: Vec<(String, Order, i64)> = (0..orders as u64)
        .map(|id| {
            let customer = format!("c{}", rng.below(22));
            let amount_cents = 100 + rng.below(10_000) as i64;
            (customer, Order { id, amount_cents }, 1_000 + id as i64)
        })
        .collect();
    cluster.produce("orders", &input).await?;
    // Both topics are in the log before the job starts: each task takes their records in
    // timestamp order, so the customers (timestamps 0-20) are in the table before the
    // orders (from 1,000) look them up.
    let mut app = Streams::new(
        builder.build()?,
        Arc::clone(&cluster.transport),
        cluster.streams_config("enrich"),
    );
    app.start();
    let out = cluster
        .consume_until::<String, EnrichedOrder>(
            "enriched-orders",
            auto(),
            Duration::from_secs(60),
            |got| got.len() >= orders,
        )
        .await?;
    app.close().await?;
    cluster.close()?;

    let by_id: BTreeMap<u64, (String, EnrichedOrder)> = out
        .into_iter()
        .filter_map(|(k, v, _)| v.map(|v| (v.id, (k, v))))
        .collect();
    ensure!(
        by_id.len() == orders,
        "{} enriched orders for {orders}",
        by_id.len()
    );
    let mut per_tier: BTreeMap<String, i64> = BTreeMap::new();
    for (customer, order, _) in &input {
        let (k, e) = &by_id[&order.id];
        let c = table.get(customer);
        ensure!(k == customer && e.amount_cents == order.amount_cents);
        ensure!(e.customer == c.map_or("unknown".to_string(), |c| c.name.clone()));
        ensure!(e.tier == c.map_or("none".to_string(), |c| c.tier.clone()));
        *per_tier.entry(e.tier.clone()).or_insert(0) += e.amount_cents;
    }
    for (tier, cents) in &per_tier {
        println!("  {tier:<9} {:>10.2}", *cents as f64 / 100.0);
    }
    println!("all {orders} orders enriched with their customer (or none)");
    Ok(())
}
