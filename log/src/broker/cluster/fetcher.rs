//! A replica fetcher (Kafka's `ReplicaFetcherThread`): one task per leader this broker
//! follows partitions of, fetching them from it with the Kafka `Fetch` API as a replica
//! (`replica_id` = this node). Each partition's fetch carries its last fetched epoch; a
//! leader whose history differs answers with the diverging epoch, and the follower truncates
//! to the divergence point before taking any batch (KIP-595's check inside Fetch, which
//! replaces a separate `OffsetForLeaderEpoch` round). Batches are appended byte for byte
//! (`append_as_follower`), and the leader's high watermark is taken as far as the local log
//! reaches.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Role;
use crate::broker::Broker;
use crate::net::client::BrokerLink;
use crate::net::TcpConfig;
use crate::replication::{truncation_for, EpochEnd};
use crate::storage::PartitionLog;
use crate::types::{NodeId, Offset, TopicPartition};

/// The partitions this broker follows from `leader`, with the leader epoch of each.
fn followed(broker: &Broker, leader: NodeId) -> BTreeMap<TopicPartition, i32> {
    let Some(cluster) = broker.cluster() else {
        return BTreeMap::new();
    };
    crate::sync::plain(&cluster.roles)
        .iter()
        .filter_map(|(tp, role)| match role {
            Role::Follower {
                leader: l,
                leader_epoch,
            } if *l == leader => Some((tp.clone(), *leader_epoch)),
            _ => None,
        })
        .collect()
}

/// Runs while the broker lives; idle while it follows nothing from `leader`.
pub(crate) async fn run(broker: Weak<Broker>, leader: NodeId) {
    let mut link: Option<BrokerLink> = None;
    loop {
        let Some(b) = broker.upgrade() else {
            return;
        };
        let Some(cluster) = b.cluster().cloned() else {
            return;
        };
        // Created before the partitions are read: a change from here on wakes it.
        let changed = cluster.fetchers_changed.notified();
        let partitions = followed(&b, leader);
        if partitions.is_empty() {
            drop(b);
            // (A timeout as well, in case a change slipped by.)
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
            continue;
        }
        let backoff = Duration::from_millis(cluster.config.replica_fetch_backoff_ms);
        let addr = cluster
            .image()
            .brokers
            .get(&leader)
            .map(|r| format!("{}:{}", r.host, r.port));
        let Some(addr) = addr else {
            drop(b);
            tokio::time::sleep(backoff).await;
            continue;
        };
        if link.as_ref().is_none_or(BrokerLink::is_dead) {
            let mut config = TcpConfig::new(addr.clone());
            config.client_id = format!("rill-replica-{}", cluster.node);
            config.request_timeout_ms = 30_000;
            match BrokerLink::open(&addr, config).await {
                Ok(l) => link = Some(l),
                Err(e) => {
                    tracing::debug!(%leader, error = %e, "replica fetcher cannot connect");
                    drop(b);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        let request = fetch_request(&b, cluster.node, &cluster.config, &partitions);
        drop(b);
        let result = tokio::select! {
            r = link.as_ref().expect("connected above").call(RequestKind::Fetch(request)) => Some(r),
            // The partitions followed from this leader changed: fetch again with the new set.
            _ = changed => None,
        };
        let Some(result) = result else {
            continue;
        };
        let Some(b) = broker.upgrade() else {
            return;
        };
        match result {
            Ok(Some(ResponseKind::Fetch(resp))) => {
                let mut failed = resp.error_code != 0;
                for t in resp.responses {
                    for p in t.partitions {
                        let tp = TopicPartition::new(t.topic.0.to_string(), p.partition_index);
                        if !partitions.contains_key(&tp) {
                            continue;
                        }
                        failed |= !apply(&b, &tp, p).await;
                    }
                }
                if failed {
                    drop(b);
                    tokio::time::sleep(backoff).await;
                }
            }
            Ok(other) => {
                tracing::warn!(%leader, ?other, "unexpected replica fetch answer");
                drop(b);
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                tracing::debug!(%leader, error = %e, "replica fetch failed");
                link = None;
                drop(b);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn fetch_request(
    broker: &Broker,
    node: NodeId,
    config: &super::ClusterConfig,
    partitions: &BTreeMap<TopicPartition, i32>,
) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (tp, epoch) in partitions {
        let Some(log) = broker.logs.get(tp) else {
            continue;
        };
        topics.entry(&tp.topic).or_default().push(
            FetchPartition::default()
                .with_partition(tp.partition.0)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(log.log_end_offset().0)
                .with_last_fetched_epoch(log.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(log.log_start_offset().0)
                .with_partition_max_bytes(config.replica_fetch_max_bytes),
        );
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(node.0))
        .with_max_wait_ms(config.replica_fetch_wait_max_ms)
        .with_min_bytes(config.replica_fetch_min_bytes)
        .with_max_bytes(config.replica_fetch_response_max_bytes)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Applies one partition's answer; false when it failed (the fetcher backs off).
async fn apply(broker: &Arc<Broker>, tp: &TopicPartition, p: PartitionData) -> bool {
    let Some(log) = broker.logs.get(tp) else {
        // No longer held here (the replica moved away and its log went): nothing to do.
        return true;
    };
    match ResponseError::try_from_code(p.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            return out_of_range(&log, tp, p.log_start_offset, p.high_watermark);
        }
        Some(e) => {
            tracing::debug!(%tp, error = ?e, "replica fetch refused for the partition");
            return false;
        }
    }
    if p.diverging_epoch.epoch >= 0 {
        let leader = EpochEnd::new(p.diverging_epoch.epoch, p.diverging_epoch.end_offset);
        let leo = log.log_end_offset().0;
        let local = EpochEnd::from_pair(log.end_offset_for_epoch(leader.epoch));
        let t = truncation_for(leader, local, leo, leo);
        tracing::info!(%tp, to = t.offset, log_end = leo, diverging = ?leader, "truncating to the leader's history");
        let log2 = Arc::clone(&log);
        let cut = crate::sync::off_the_workers(move || log2.truncate_to(Offset(t.offset))).await;
        return matches!(cut, Ok(Ok(_)));
    }
    if let Some(records) = p.records.filter(|r| !r.is_empty()) {
        // Into the page cache in place, as the leader's appends of a produce are; an append
        // that may fsync (`flush.messages`, `flush.ms`) goes off the async workers. (Handing
        // the worker on for every fetched batch costs a thread wake-up each time, which on
        // a virtual machine is a good part of what a follower spends.)
        let appended = if log.appends_may_sync() {
            let log2 = Arc::clone(&log);
            crate::sync::off_the_workers(move || log2.append_as_follower(&records)).await
        } else {
            Ok(log.append_as_follower(&records))
        };
        match appended {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(%tp, error = %e, "follower append failed");
                return false;
            }
            Err(e) => {
                tracing::error!(%tp, error = %e, "follower append did not complete");
                return false;
            }
        }
    }
    if p.high_watermark >= 0 {
        log.set_high_watermark(Offset(p.high_watermark));
    }
    true
}

/// The leader has nothing at this follower's position: its log starts later (retention or
/// DeleteRecords went past it), so the follower starts over at the leader's log start; or
/// the follower is ahead of everything the leader has, and keeps only what the leader's high
/// watermark covers.
fn out_of_range(
    log: &PartitionLog,
    tp: &TopicPartition,
    leader_start: i64,
    leader_hw: i64,
) -> bool {
    let leo = log.log_end_offset().0;
    let result = if leader_start >= 0 && leo < leader_start {
        tracing::info!(%tp, leader_start, "follower behind the leader's log start; starting over there");
        log.truncate_fully_and_start_at(Offset(leader_start))
    } else if leader_hw >= 0 && leo > leader_hw {
        log.truncate_to(Offset(leader_hw)).map(drop)
    } else {
        Ok(())
    };
    if let Err(e) = result {
        tracing::warn!(%tp, error = %e, "recovering from an out-of-range fetch failed");
        return false;
    }
    true
}
