//! What a clustered broker adds to serving produce and fetch: only a partition's leader
//! serves them, at the leader epoch the client expects; a follower's fetch updates the
//! leader's view of it (and so the ISR and the high watermark) and learns where its log
//! diverged; an `acks=all` produce is answered once the in-sync replicas have it. Without a
//! cluster these checks pass at once.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::EpochEndOffset;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use super::Role;
use crate::broker::Broker;
use crate::replication::{diverging_epoch, EpochEnd};
use crate::storage::PartitionLog;
use crate::types::{NodeId, TopicPartition};

/// How a fetch of one partition is served.
#[derive(Debug)]
pub(crate) enum ClusterFetch {
    /// Read it: for a follower (`replica`) up to the log end, for a consumer up to the high
    /// watermark.
    Serve { replica: Option<NodeId> },
    /// The follower's log diverged from the leader's: this is where (no records).
    Diverged(EpochEndOffset),
}

/// An `acks=all` append waiting for the in-sync replicas.
#[derive(Debug)]
pub(crate) struct PendingAck {
    /// Where its answer is in the response: the topic's index, the partition's index.
    pub topic: usize,
    pub partition: usize,
    pub tp: TopicPartition,
    /// Acknowledged once the high watermark reaches this.
    pub required: i64,
}

/// Kafka's epoch checks of a request naming the leader epoch it expects (-1: none).
fn check_epoch(expected: i32, current: i32) -> Result<(), ResponseError> {
    if expected < 0 || expected == current {
        Ok(())
    } else if expected < current {
        Err(ResponseError::FencedLeaderEpoch)
    } else {
        Err(ResponseError::UnknownLeaderEpoch)
    }
}

impl Broker {
    /// Whether this broker may serve a fetch of `log`'s partition, and how.
    pub(crate) fn check_cluster_fetch(
        &self,
        log: &PartitionLog,
        p: &FetchPartition,
        replica_id: i32,
    ) -> Result<ClusterFetch, ResponseError> {
        let Some(cluster) = self.cluster() else {
            return Ok(ClusterFetch::Serve { replica: None });
        };
        let tp = log.topic_partition();
        let epoch = match crate::sync::plain(&cluster.roles).get(tp) {
            Some(Role::Leader(l)) => l.leader_epoch(),
            Some(_) => return Err(ResponseError::NotLeaderOrFollower),
            None => return Err(ResponseError::NotLeaderOrFollower),
        };
        check_epoch(p.current_leader_epoch, epoch)?;
        if replica_id < 0 {
            return Ok(ClusterFetch::Serve { replica: None });
        }
        if p.last_fetched_epoch >= 0 {
            let answer = EpochEnd::from_pair(log.end_offset_for_epoch(p.last_fetched_epoch));
            let start = log.log_start_offset().0;
            match diverging_epoch(answer, p.last_fetched_epoch, p.fetch_offset, start) {
                Ok(None) => {}
                Ok(Some(div)) => {
                    return Ok(ClusterFetch::Diverged(
                        EpochEndOffset::default()
                            .with_epoch(div.epoch)
                            .with_end_offset(div.end_offset),
                    ))
                }
                Err(_) => return Err(ResponseError::OffsetOutOfRange),
            }
        }
        Ok(ClusterFetch::Serve {
            replica: Some(NodeId(replica_id)),
        })
    }

    /// A follower fetched `p` from this leader: its position moves the leader's view (the
    /// high watermark, maybe an ISR expansion to send).
    pub(crate) fn follower_fetched(&self, log: &PartitionLog, node: NodeId, p: &FetchPartition) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let tp = log.topic_partition();
        let now = self.clock.now_ms();
        let outcome = {
            let image = cluster.image();
            let eligible = |n: NodeId| image.is_usable(n);
            match crate::sync::plain(&cluster.roles).get_mut(tp) {
                Some(Role::Leader(l)) => {
                    l.on_follower_fetch(node, p.fetch_offset, p.log_start_offset, now, &eligible)
                }
                _ => return,
            }
        };
        match outcome {
            Ok(o) => {
                if let Some(hw) = o.high_watermark {
                    self.advance_hw(tp, hw);
                }
                if let Some(alter) = o.alter {
                    tracing::info!(%tp, isr = ?alter.isr, "expanding the ISR");
                    if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
                        me.send_alter_isr(tp.clone(), alter);
                    }
                }
            }
            Err(e) => tracing::debug!(%tp, error = %e, "fetch from a non-replica"),
        }
    }

    /// For requests only a leader answers (ListOffsets, OffsetForLeaderEpoch from clients):
    /// the leader epoch here, after Kafka's checks of the one the client expects; `None`
    /// without a cluster.
    pub(crate) fn cluster_leader_epoch(
        &self,
        tp: &TopicPartition,
        expected: i32,
    ) -> Result<Option<i32>, ResponseError> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        match crate::sync::plain(&cluster.roles).get(tp) {
            Some(Role::Leader(l)) => {
                check_epoch(expected, l.leader_epoch())?;
                Ok(Some(l.leader_epoch()))
            }
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// Whether this broker may take a produce to `tp` with `acks`.
    pub(crate) fn check_cluster_produce(
        &self,
        tp: &TopicPartition,
        acks: i16,
    ) -> Result<(), (ResponseError, String)> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        match crate::sync::plain(&cluster.roles).get(tp) {
            Some(Role::Leader(l)) => {
                if acks == -1 && !l.may_append_acks_all() {
                    return Err((
                        ResponseError::NotEnoughReplicas,
                        format!(
                            "the ISR of {tp} ({:?}) is smaller than min.insync.replicas",
                            l.isr()
                        ),
                    ));
                }
                Ok(())
            }
            _ => Err((
                ResponseError::NotLeaderOrFollower,
                format!("broker {} does not lead {tp}", cluster.node),
            )),
        }
    }

    /// Waits until each `acks=all` append is on the in-sync replicas, or `timeout_ms`
    /// passed (REQUEST_TIMED_OUT), or the ISR fell below `min.insync.replicas` meanwhile
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND), or leadership moved (NOT_LEADER_OR_FOLLOWER).
    pub(crate) async fn await_acks(
        &self,
        resp: &mut ProduceResponse,
        pending: Vec<PendingAck>,
        timeout_ms: i32,
    ) {
        let wanted = pending.iter().map(|a| (a.tp.clone(), a.required)).collect();
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let outcomes = self.await_replicated(wanted, timeout).await;
        for (a, outcome) in pending.iter().zip(outcomes) {
            if let Some(code) = outcome {
                fail_partition(resp, a, code);
            }
        }
    }

    /// Waits until each partition's log, which this broker leads, is on its in-sync replicas
    /// through the offset given; per partition `None` when it is, else why not (as
    /// [`replication_of`](Self::replication_of), or REQUEST_TIMED_OUT after `timeout`).
    /// Immediate without a cluster.
    pub(crate) async fn await_replicated(
        &self,
        wanted: Vec<(TopicPartition, i64)>,
        timeout: Duration,
    ) -> Vec<Option<ResponseError>> {
        let mut outcomes: Vec<Option<Option<ResponseError>>> = vec![None; wanted.len()];
        if self.cluster().is_none() {
            return vec![None; wanted.len()];
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let waiter = Arc::new(Notify::new());
        loop {
            let open: Vec<&TopicPartition> = wanted
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.is_none())
                .map(|((tp, _), _)| tp)
                .collect();
            if open.is_empty() {
                return outcomes.into_iter().map(Option::flatten).collect();
            }
            self.waiting.watch(open, &waiter);
            for ((tp, required), outcome) in wanted.iter().zip(outcomes.iter_mut()) {
                if outcome.is_none() {
                    *outcome = self.replication_of(tp, *required);
                }
            }
            if outcomes.iter().all(Option::is_some) {
                continue;
            }
            if tokio::time::timeout_at(deadline, waiter.notified())
                .await
                .is_err()
            {
                return outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or(Some(ResponseError::RequestTimedOut)))
                    .collect();
            }
        }
    }
}

fn fail_partition(resp: &mut ProduceResponse, a: &PendingAck, code: ResponseError) {
    let p = resp
        .responses
        .get_mut(a.topic)
        .and_then(|t| t.partition_responses.get_mut(a.partition));
    if let Some(p) = p {
        p.error_code = code.code();
        p.error_message = Some(StrBytes::from_string(format!(
            "{code:?} waiting for the in-sync replicas of {}",
            a.tp
        )));
    }
}
