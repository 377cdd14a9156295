//! A replica fetcher (Kafka's `ReplicaFetcherThread`): one task per leader this broker
//! follows partitions of, fetching them from it with the Kafka `Fetch` API as a replica
//! (`replica_id` = this node). Each partition's fetch carries its last fetched epoch; a
//! leader whose history differs answers with the diverging epoch, and the follower truncates
//! to the divergence point before taking any batch (KIP-595's check inside Fetch, which
//! replaces a separate `OffsetForLeaderEpoch` round). Batches are appended byte for byte
//! (`append_as_follower`), and the leader's high watermark is taken as far as the local log
//! reaches. The partitions a reassignment is adding this broker to are copied at most at
//! `follower.replication.throttled.rate` (Kafka's follower throttle): while over it, they are
//! left out of the fetches, so the other partitions of the leader keep up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

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

/// The partitions of `followed` a reassignment is adding this broker to.
fn being_added(
    broker: &Broker,
    followed: &BTreeMap<TopicPartition, i32>,
) -> BTreeSet<TopicPartition> {
    let Some(cluster) = broker.cluster() else {
        return BTreeSet::new();
    };
    let image = cluster.image();
    followed
        .keys()
        .filter(|tp| {
            image
                .topic(&tp.topic)
                .and_then(|t| t.partitions.get(&tp.partition.0))
                .is_some_and(|p| p.adding.contains(&cluster.node))
        })
        .cloned()
        .collect()
}

/// The follower throttle: the throttled partitions' bytes are a debt paid off at `rate`
/// bytes per second; they are fetched only while nothing is owed. A fetch may overdraw by
/// one response (up to `replica.fetch.max.bytes` per partition), paid off before the next,
/// so over a reassignment the copy runs at the rate, with no burst allowance saved up.
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: f64,
    owed: f64,
    at: Instant,
}

impl Throttle {
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Throttle {
            rate: rate.max(1) as f64,
            owed: 0.0,
            at: now,
        }
    }

    fn pay_off(&mut self, now: Instant) {
        let paid = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.owed = (self.owed - paid).max(0.0);
        self.at = now;
    }

    /// How long until the throttled partitions may be fetched again (zero: now).
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        self.pay_off(now);
        Duration::from_secs_f64(self.owed / self.rate)
    }

    pub(crate) fn charge(&mut self, bytes: usize, now: Instant) {
        self.pay_off(now);
        self.owed += bytes as f64;
    }
}

/// Runs while the broker lives; idle while it follows nothing from `leader`.
pub(crate) async fn run(broker: Weak<Broker>, leader: NodeId) {
    let mut link: Option<BrokerLink> = None;
    let mut throttle: Option<Throttle> = None;
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
        // The throttled partitions sit out this fetch while their copy is ahead of the rate;
        // with nothing else to fetch, the fetcher waits until they may go again.
        let throttled = match cluster.config.follower_throttled_rate {
            Some(rate) => {
                throttle.get_or_insert_with(|| Throttle::new(rate, Instant::now()));
                being_added(&b, &partitions)
            }
            None => BTreeSet::new(),
        };
        let hold = throttle
            .as_mut()
            .filter(|_| !throttled.is_empty())
            .map_or(Duration::ZERO, |t| t.wait(Instant::now()));
        let mut asked = partitions.clone();
        if !hold.is_zero() {
            asked.retain(|tp, _| !throttled.contains(tp));
            if asked.is_empty() {
                drop(b);
                let _ = tokio::time::timeout(hold, changed).await;
                continue;
            }
        }
        let mut request = fetch_request(&b, cluster.node, &cluster.config, &asked);
        if !hold.is_zero() {
            // Back in time for the throttled partitions' next turn.
            let hold_ms = i32::try_from(hold.as_millis()).unwrap_or(i32::MAX).max(1);
            request.max_wait_ms = request.max_wait_ms.min(hold_ms);
        }
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
                        if !asked.contains_key(&tp) {
                            continue;
                        }
                        if throttled.contains(&tp) {
                            let bytes = p.records.as_ref().map_or(0, |r| r.len());
                            if let Some(t) = throttle.as_mut() {
                                t.charge(bytes, Instant::now());
                            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_holds_fetches_until_their_bytes_are_paid_off_at_the_rate() {
        let close = |a: Duration, ms: u64| {
            a.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(10)
        };
        let t0 = Instant::now();
        let mut t = Throttle::new(1_000_000, t0);
        assert!(close(t.wait(t0), 0));
        // One response of 500 kB: half a second before the next.
        t.charge(500_000, t0);
        assert!(close(t.wait(t0), 500));
        assert!(close(t.wait(t0 + Duration::from_millis(200)), 300));
        assert!(close(t.wait(t0 + Duration::from_millis(600)), 0));
        // Idle time saves nothing up: after 10 s, a 2 MB response still owes 2 s.
        t.charge(2_000_000, t0 + Duration::from_secs(10));
        assert!(close(t.wait(t0 + Duration::from_secs(10)), 2_000));
    }
}
