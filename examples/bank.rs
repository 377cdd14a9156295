//! Bank: money transfers between accounts, exactly once across a crash. A transfer debits
//! its source account only if the balance covers it, then credits the target account
//! through a second topic; the job is killed halfway (no commit, no goodbye) and a new
//! instance takes over from the same state directory. Afterwards the committed balances
//! must show every transfer decided once, every approved one credited once, no balance ever
//! below zero, and no money created or lost.
//!
//! Run it with `cargo run --release --example bank`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rill_dsl::prelude::*;
use rill_examples::{Args, Cluster, Rng};
use serde::{Deserialize, Serialize};

/// What happens to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Movement {
    Open { amount: i64 },
    Debit { id: u64, to: String, amount: i64 },
    Credit { id: u64, amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Outcome {
    Opened,
    Approved { id: u64, to: String, amount: i64 },
    Rejected { id: u64 },
    Credited { id: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    last: Option<Outcome>,
}

impl Account {
    fn apply(mut self, m: Movement) -> Account {
        self.last = Some(match m {
            Movement::Open { amount } => {
                self.balance += amount;
                Outcome::Opened
            }
            Movement::Debit { id, to, amount } if amount <= self.balance => {
                self.balance -= amount;
                Outcome::Approved { id, to, amount }
            }
            Movement::Debit { id, .. } => Outcome::Rejected { id },
            Movement::Credit { id, amount } => {
                self.balance += amount;
                Outcome::Credited { id }
            }
        });
        self
    }
}

const ACCOUNTS: u64 = 10;
const OPENING: i64 = 1_000;

fn topology() -> Result<rill_dsl::BuiltTopology> {
    let builder = StreamsBuilder::new();
    let transfers = builder.stream::<String, Movement>("bank-transfers"); // key: debited account
    let credits = builder.stream::<String, Movement>("bank-credits"); // key: credited account
    let updates = transfers
        .merge(&credits)
        .group_by_key()
        .aggregate_with(
            Account::default,
            |_, m, a: Account| a.apply(m),
            // Every movement's outcome must go on (each approved debit becomes a credit),
            // so no record cache may fold two updates of an account into one.
            Materialized::named("accounts").with_caching_disabled(),
        )
        .to_stream();
    updates.to("bank-balances");
    // An approved debit becomes a credit of the target account, in the same transaction.
    updates
        .flat_map(|_, a: Option<Account>| match a.and_then(|a| a.last) {
            Some(Outcome::Approved { id, to, amount }) => {
                Some((to, Movement::Credit { id, amount }))
            }
            _ => None,
        })
        .to("bank-credits");
    Ok(builder.build()?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let transfers = args.records.unwrap_or(3_000) as u64;
    let cluster = Cluster::start(&args).await?;
    cluster
        .create_topics(&[
            ("bank-transfers", 3),
            ("bank-credits", 3),
            ("bank-balances", 3),
        ])
        .await?;
    let mut config = cluster.streams_config("bank");
    // Static membership: the restarted instance takes the crashed one's place at once.
    config.group_instance_id = Some("bank-1".into());

    let mut input: Vec<(String, Movement, i64)> = (0..ACCOUNTS)
        .map(|a| (format!("acct-{a}"), Movement::Open { amount: OPENING }, 0))
        .collect();
    let mut rng = Rng::new(17);
    for id in 0..transfers {
        let from = rng.below(ACCOUNTS);
        let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
        let amount = 1 + rng.below(30) as i64;
        let m = Movement::Debit {
            id,
            to: format!("acct-{to}"),
            amount,
        };
        input.push((format!("acct-{from}"), m, 1 + id as i64));
    }
    cluster.produce("bank-transfers", &input).await?;

    let mut first = Streams::new(topology()?, Arc::clone(&cluster.transport), config.clone());
    first.set_state_listener(|from, to| println!("  instance 1: {from:?} -> {to:?}"));
    first.start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let crash_at = transfers / 3;
    while first.runtime().map_or(0, |r| r.processed()) < crash_at {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the first instance made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = first.runtime().map_or(0, |r| r.processed());
    first.abort();
    println!("killed instance 1 after {done} records (its open transaction is lost)");

    let mut second = Streams::new(topology()?, Arc::clone(&cluster.transport), config);
    second.set_state_listener(|from, to| println!("  instance 2: {from:?} -> {to:?}"));
    second.start();

    // Read the committed balances until every transfer is decided and every approved one
    // credited.
    let mut decided = BTreeMap::new();
    let mut credited = BTreeMap::new();
    let out = cluster
        .consume_until::<String, Account>("bank-balances", auto(), Duration::from_secs(90), |got| {
            decided.clear();
            credited.clear();
            for (_, a, _) in got {
                match a.as_ref().and_then(|a| a.last.as_ref()) {
                    Some(Outcome::Approved { id, .. }) => *decided.entry(*id).or_insert(0) += 1,
                    Some(Outcome::Rejected { id }) => *decided.entry(*id).or_insert(-1000) += 1,
                    Some(Outcome::Credited { id }) => *credited.entry(*id).or_insert(0) += 1,
                    _ => {}
                }
            }
            // A transfer decided or credited twice fails below: no need to wait longer.
            let twice = decided.values().any(|n| *n != 1 && *n != -999)
                || credited.values().any(|n| *n > 1);
            let approved = decided.values().filter(|n| **n == 1).count();
            twice || (decided.len() as u64 == transfers && approved == credited.len())
        })
        .await?;
    let all_balances: Option<i64> = second
        .get("accounts", &"acct-0".to_string())
        .await?
        .map(|a: Account| a.balance);
    second.close().await?;
    cluster.close()?;

    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (k, a, _) in &out {
        let a = a.as_ref().expect("balances are never deleted");
        ensure!(a.balance >= 0, "{k} went negative: {}", a.balance);
        last.insert(k.clone(), a.balance);
    }
    let approved: BTreeSet<u64> = decided
        .iter()
        .filter(|(_, n)| **n == 1)
        .map(|(id, _)| *id)
        .collect();
    ensure!(
        decided.values().all(|n| *n == 1 || *n == -999),
        "a transfer was decided twice"
    );
    ensure!(
        credited.values().all(|n| *n == 1),
        "a credit was applied twice"
    );
    ensure!(
        credited.keys().copied().collect::<BTreeSet<_>>() == approved,
        "credits differ from approvals"
    );
    let total: i64 = last.values().sum();
    ensure!(
        total == ACCOUNTS as i64 * OPENING,
        "money was created or lost: {total}"
    );
    ensure!(
        all_balances == last.get("acct-0").copied(),
        "the store disagrees with the output"
    );
    for (k, b) in &last {
        println!("  {k:<7} {b:>4}");
    }
    println!(
        "{transfers} transfers, {} approved and credited once each, {} rejected; total {total}",
        approved.len(),
        transfers as usize - approved.len()
    );
    Ok(())
}
