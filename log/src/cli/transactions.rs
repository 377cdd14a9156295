//! `rill transactions`: list and describe the coordinator's transactions, find hanging ones
//! (a partition holding a transaction open that the coordinator does not run) and abort them,
//! as Kafka's `kafka-transactions.sh` does (KIP-664).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::output::Table;
use super::CliError;
use crate::client::admin::{ProducerDescription, TransactionDescription};
use crate::client::{Admin, Transport};
use crate::types::TopicPartition;

pub async fn list(t: Arc<dyn Transport>) -> Result<Table, CliError> {
    let mut table = Table::new(&["transactional_id", "producer_id", "state"]);
    for l in Admin::new(t).list_transactions().await? {
        table.push(vec![l.transactional_id, l.producer_id.to_string(), l.state]);
    }
    Ok(table)
}

pub async fn describe(t: Arc<dyn Transport>, id: &str) -> Result<Table, CliError> {
    let mut table = Table::new(&[
        "transactional_id",
        "producer_id",
        "producer_epoch",
        "state",
        "timeout_ms",
        "start_time_ms",
        "partitions",
    ]);
    for d in Admin::new(t).describe_transactions(&[id]).await? {
        let parts: Vec<String> = d.partitions.iter().map(ToString::to_string).collect();
        table.push(vec![
            d.transactional_id,
            d.producer_id.to_string(),
            d.producer_epoch.to_string(),
            d.state,
            d.timeout_ms.to_string(),
            d.start_time_ms.to_string(),
            parts.join(","),
        ]);
    }
    Ok(table)
}

/// Open transactions in partitions (of `topic`, or of every topic) that no ongoing or
/// completing transaction of the coordinator accounts for: same producer id and epoch, and the
/// partition among its partitions. Those never end on their own.
pub async fn find_hanging(
    t: Arc<dyn Transport>,
    topic: Option<&str>,
) -> Result<Vec<ProducerDescription>, CliError> {
    let admin = Admin::new(t);
    let partitions: Vec<TopicPartition> = admin
        .list_topics()
        .await?
        .into_iter()
        .filter(|d| topic.is_none_or(|t| t == d.name))
        .flat_map(|d| (0..d.partitions).map(move |p| TopicPartition::new(d.name.clone(), p)))
        .collect();
    let open: Vec<ProducerDescription> = admin
        .describe_producers(&partitions)
        .await?
        .into_iter()
        .filter(|p| p.txn_start_offset >= 0)
        .collect();
    if open.is_empty() {
        return Ok(open);
    }
    let listed = admin.list_transactions().await?;
    let ids: Vec<&str> = listed
        .iter()
        .filter(|l| open.iter().any(|p| p.producer_id == l.producer_id))
        .map(|l| l.transactional_id.as_str())
        .collect();
    let described: BTreeMap<i64, TransactionDescription> = if ids.is_empty() {
        BTreeMap::new()
    } else {
        admin
            .describe_transactions(&ids)
            .await?
            .into_iter()
            .map(|d| (d.producer_id, d))
            .collect()
    };
    Ok(open
        .into_iter()
        .filter(|p| {
            let running = described.get(&p.producer_id).is_some_and(|d| {
                matches!(
                    d.state.as_str(),
                    "Ongoing" | "PrepareCommit" | "PrepareAbort"
                ) && i32::from(d.producer_epoch) == p.producer_epoch
                    && d.partitions.contains(&p.partition)
            });
            !running
        })
        .collect())
}

pub fn hanging_table(hanging: Vec<ProducerDescription>) -> Table {
    let mut table = Table::new(&[
        "topic",
        "partition",
        "producer_id",
        "producer_epoch",
        "start_offset",
        "last_timestamp_ms",
    ]);
    for p in hanging {
        table.push(vec![
            p.partition.topic,
            p.partition.partition.0.to_string(),
            p.producer_id.to_string(),
            p.producer_epoch.to_string(),
            p.txn_start_offset.to_string(),
            p.last_timestamp_ms.to_string(),
        ]);
    }
    table
}

/// Aborts producer `producer_id`'s open transaction in `partition`, at its epoch there
/// unless `epoch` is given. Refused when the coordinator still runs that transaction.
pub async fn abort(
    t: Arc<dyn Transport>,
    partition: &TopicPartition,
    producer_id: i64,
    epoch: Option<i16>,
) -> Result<Table, CliError> {
    let hanging = find_hanging(Arc::clone(&t), Some(&partition.topic)).await?;
    let Some(h) = hanging
        .iter()
        .find(|h| h.partition == *partition && h.producer_id == producer_id)
    else {
        return Err(CliError::Usage(format!(
            "producer {producer_id} has no hanging transaction in {partition} \
             (see `rill transactions find-hanging`)"
        )));
    };
    let epoch = match epoch {
        Some(e) => e,
        None => i16::try_from(h.producer_epoch)
            .map_err(|_| CliError::Usage(format!("epoch {} out of range", h.producer_epoch)))?,
    };
    Admin::new(t)
        .abort_transaction(partition, producer_id, epoch)
        .await?;
    let mut table = Table::new(&[
        "topic",
        "partition",
        "producer_id",
        "producer_epoch",
        "aborted",
    ]);
    table.push(vec![
        partition.topic.clone(),
        partition.partition.0.to_string(),
        producer_id.to_string(),
        epoch.to_string(),
        "true".into(),
    ]);
    Ok(table)
}
