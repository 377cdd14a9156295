//! The transaction coordinator's requests (InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn) and its side effects: every
//! state change is written to `__transaction_state` before the answer, markers go to each
//! partition of a finished transaction, committed group offsets are applied with the commit,
//! and transactions past `transaction.timeout.ms` are aborted (fencing their producer).
//!
//! A commit runs PrepareCommit (persisted) -> markers -> offsets -> CompleteCommit
//! (persisted). A restart that finds a transaction in PrepareCommit or PrepareAbort finishes
//! it, so nothing stays half-visible.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;

use super::{Broker, BrokerError};
use crate::coordinator::group::offsets::{partition_for, Committed, OffsetStore, OFFSETS_TOPIC};
use crate::coordinator::txn::{PendingOffset, TxnMetadata, TxnState, TRANSACTION_TOPIC};
use crate::storage::producer_state::Marker;
use crate::storage::{encode_batch, Compression, LogManager, NewRecord, StorageError};
use crate::types::TopicPartition;

/// Every transactional id's metadata, mirrored from `__transaction_state`.
#[derive(Debug, Default)]
pub(crate) struct TxnStore {
    pub txns: HashMap<String, TxnMetadata>,
    pub partitions: i32,
}

impl TxnStore {
    /// Reads `__transaction_state` (the last record per transactional id wins).
    pub fn load(logs: &LogManager, partitions: i32) -> Result<TxnStore, StorageError> {
        let mut store = TxnStore {
            txns: HashMap::new(),
            partitions,
        };
        for p in 0..partitions {
            let Some(log) = logs.get(&TopicPartition::new(TRANSACTION_TOPIC, p)) else {
                continue;
            };
            log.scan_records(|rec| {
                let Some(key) = rec
                    .key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                else {
                    return;
                };
                match rec.value.as_deref().and_then(TxnMetadata::decode) {
                    Some(m) => store.txns.insert(key, m),
                    None => store.txns.remove(&key),
                };
            })?;
        }
        Ok(store)
    }

    /// Writes a tombstone for `txn_id` (its state is gone, as if it never existed).
    fn forget(&mut self, logs: &LogManager, txn_id: &str) -> Result<(), StorageError> {
        let tp = TopicPartition::new(TRANSACTION_TOPIC, partition_for(txn_id, self.partitions));
        let log = logs.get_or_create(&tp)?;
        let record = NewRecord {
            key: Some(txn_id.as_bytes().to_vec().into()),
            value: None,
            timestamp_ms: 0,
            headers: Vec::new(),
        };
        let mut batch = encode_batch(std::slice::from_ref(&record), Compression::None)?;
        log.append(&mut batch)?;
        self.txns.remove(txn_id);
        tracing::debug!(txn = %txn_id, "transactional id expired");
        Ok(())
    }

    /// Writes `meta` to its `__transaction_state` partition, then keeps it.
    fn persist(&mut self, logs: &LogManager, meta: TxnMetadata) -> Result<(), StorageError> {
        let tp = TopicPartition::new(
            TRANSACTION_TOPIC,
            partition_for(&meta.transactional_id, self.partitions),
        );
        let log = logs.get_or_create(&tp)?;
        let record = NewRecord {
            key: Some(meta.transactional_id.clone().into_bytes().into()),
            value: Some(meta.encode().into()),
            timestamp_ms: meta.updated_ms,
            headers: Vec::new(),
        };
        let mut batch = encode_batch(std::slice::from_ref(&record), Compression::None)?;
        log.append(&mut batch)?;
        self.txns.insert(meta.transactional_id.clone(), meta);
        Ok(())
    }
}

/// Ends the transaction in `meta` (which is in PrepareCommit or PrepareAbort, persisted):
/// markers to every partition, the group offsets on commit, then the Complete state.
pub(crate) fn complete(
    store: &mut TxnStore,
    logs: &LogManager,
    offsets: &Mutex<OffsetStore>,
    mut meta: TxnMetadata,
    now_ms: i64,
    stop_after_markers: Option<usize>,
) -> Result<TxnMetadata, StorageError> {
    let commit = meta.state == TxnState::PrepareCommit;
    let marker = if commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    for (i, (topic, p)) in meta.partitions.iter().enumerate() {
        if stop_after_markers == Some(i) {
            return Err(StorageError::Closed(TopicPartition::new(topic.clone(), *p)));
        }
        if topic == OFFSETS_TOPIC {
            continue;
        }
        if let Some(log) = logs.get(&TopicPartition::new(topic.clone(), *p)) {
            log.append_marker(meta.producer_id, meta.producer_epoch, marker, 0)?;
        }
    }
    if commit {
        let mut store = offsets.lock().unwrap_or_else(|e| e.into_inner());
        for (group, pending) in &meta.offsets {
            let writes = pending
                .iter()
                .map(|o| {
                    (
                        o.topic.clone(),
                        o.partition,
                        Some(Committed {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                            metadata: o.metadata.clone(),
                            commit_timestamp_ms: now_ms,
                        }),
                    )
                })
                .collect();
            store.write(logs, group, writes)?;
        }
    }
    meta.state = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    meta.partitions.clear();
    meta.offsets.clear();
    meta.updated_ms = now_ms;
    store.persist(logs, meta.clone())?;
    tracing::debug!(txn = %meta.transactional_id, commit, "transaction completed");
    Ok(meta)
}

/// Aborts `meta`'s open transaction with its epoch bumped, so the producer that opened it is
/// fenced everywhere the markers land.
fn abort_fencing(
    store: &mut TxnStore,
    logs: &LogManager,
    offsets: &Mutex<OffsetStore>,
    mut meta: TxnMetadata,
    now_ms: i64,
) -> Result<TxnMetadata, StorageError> {
    meta.producer_epoch = meta.producer_epoch.saturating_add(1);
    meta.state = TxnState::PrepareAbort;
    meta.updated_ms = now_ms;
    store.persist(logs, meta.clone())?;
    complete(store, logs, offsets, meta, now_ms, None)
}

/// Finishes transactions a restart found prepared, aborts those past their timeout, and
/// forgets transactional ids idle for `transactional.id.expiration.ms` (a tombstone in
/// `__transaction_state`).
pub(crate) fn run_timers(
    store: &Mutex<TxnStore>,
    logs: &LogManager,
    offsets: &Mutex<OffsetStore>,
    now_ms: i64,
    id_expiration_ms: i64,
) {
    let mut st = store.lock().unwrap_or_else(|e| e.into_inner());
    let expired: Vec<String> = st
        .txns
        .values()
        .filter(|m| !m.in_progress() && now_ms.saturating_sub(m.updated_ms) > id_expiration_ms)
        .map(|m| m.transactional_id.clone())
        .collect();
    for id in expired {
        if let Err(e) = st.forget(logs, &id) {
            tracing::error!(txn = %id, error = %e, "expiring a transactional id failed");
        }
    }
    let due: Vec<TxnMetadata> = st
        .txns
        .values()
        .filter(|m| {
            matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                || (m.state == TxnState::Ongoing
                    && now_ms.saturating_sub(m.started_ms) > i64::from(m.timeout_ms))
        })
        .cloned()
        .collect();
    for meta in due {
        let id = meta.transactional_id.clone();
        let result = if meta.state == TxnState::Ongoing {
            tracing::info!(txn = %id, "transaction timed out; aborting it");
            abort_fencing(&mut st, logs, offsets, meta, now_ms)
        } else {
            complete(&mut st, logs, offsets, meta, now_ms, None)
        };
        if let Err(e) = result {
            tracing::error!(txn = %id, error = %e, "finishing a transaction failed");
        }
    }
}

fn fenced_or_unknown(meta: Option<&TxnMetadata>, pid: i64, epoch: i16) -> Option<ResponseError> {
    let Some(m) = meta else {
        return Some(ResponseError::InvalidProducerIdMapping);
    };
    if m.producer_id != pid {
        return Some(ResponseError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != epoch {
        return Some(ResponseError::InvalidProducerEpoch);
    }
    None
}

impl Broker {
    /// Partitions with an offset of `group` in a transaction not yet completed: their
    /// committed offset may still change (KIP-447's unstable offsets).
    pub(crate) fn unstable_offsets(&self, group: &str) -> BTreeSet<(String, i32)> {
        self.txn_store()
            .txns
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .filter_map(|m| m.offsets.get(group))
            .flatten()
            .map(|o| (o.topic.clone(), o.partition))
            .collect()
    }

    fn txn_store(&self) -> std::sync::MutexGuard<'_, TxnStore> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// InitProducerId with a transactional id: a new id at epoch 0, or the same id at the next
    /// epoch, after finishing (or aborting, fencing the old producer) its open transaction.
    pub(crate) fn init_transactional_producer(
        &self,
        txn_id: &str,
        req: &InitProducerIdRequest,
    ) -> Result<InitProducerIdResponse, BrokerError> {
        let refuse = |e: ResponseError| {
            Ok(InitProducerIdResponse::default()
                .with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1))
        };
        if req.transaction_timeout_ms <= 0
            || req.transaction_timeout_ms > self.config.transaction_max_timeout_ms
        {
            return refuse(ResponseError::InvalidTransactionTimeout);
        }
        let now = self.clock.now_ms();
        let mut st = self.txn_store();
        let existing = st.txns.get(txn_id).cloned();
        let meta = match existing {
            None => {
                let id = self
                    .producer_ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .next_id()?;
                TxnMetadata::new(txn_id, id, req.transaction_timeout_ms, now)
            }
            Some(mut m) => {
                // A producer bumping its own epoch after an error must name it right.
                if req.producer_id.0 >= 0
                    && (req.producer_id.0 != m.producer_id
                        || req.producer_epoch != m.producer_epoch)
                {
                    return refuse(ResponseError::ProducerFenced);
                }
                if m.state == TxnState::Ongoing {
                    m = abort_fencing(&mut st, &self.logs, &self.offsets, m, now)?;
                } else if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                    m = complete(&mut st, &self.logs, &self.offsets, m, now, None)?;
                }
                if m.producer_epoch >= i16::MAX - 1 {
                    let id = self
                        .producer_ids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .next_id()?;
                    m.producer_id = id;
                    m.producer_epoch = 0;
                } else {
                    m.producer_epoch += 1;
                }
                m.timeout_ms = req.transaction_timeout_ms;
                m.state = TxnState::Empty;
                m.updated_ms = now;
                m
            }
        };
        let (id, epoch) = (meta.producer_id, meta.producer_epoch);
        st.persist(&self.logs, meta)?;
        Ok(InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch))
    }

    /// Adds `partitions` to the producer's transaction (starting it), after the checks every
    /// transactional request shares.
    fn add_to_txn(
        &self,
        txn_id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<Result<(), ResponseError>, BrokerError> {
        let now = self.clock.now_ms();
        let mut st = self.txn_store();
        if let Some(e) = fenced_or_unknown(st.txns.get(txn_id), pid, epoch) {
            return Ok(Err(e));
        }
        let mut meta = st.txns[txn_id].clone();
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Ok(Err(ResponseError::ConcurrentTransactions))
            }
            TxnState::Dead => return Ok(Err(ResponseError::InvalidTxnState)),
            _ => {}
        }
        for (t, p) in partitions {
            let known = self.topic_partitions(t).is_some_and(|n| *p >= 0 && *p < n);
            if !known {
                return Ok(Err(ResponseError::UnknownTopicOrPartition));
            }
        }
        if meta.state != TxnState::Ongoing {
            meta.state = TxnState::Ongoing;
            meta.started_ms = now;
        }
        let before = (meta.partitions.len(), meta.offsets.len());
        meta.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            meta.offsets.entry(g.to_string()).or_default();
        }
        if (meta.partitions.len(), meta.offsets.len()) != before
            || st.txns[txn_id].state != TxnState::Ongoing
        {
            meta.updated_ms = now;
            st.persist(&self.logs, meta)?;
        }
        Ok(Ok(()))
    }

    pub(crate) fn add_partitions_to_txn(
        &self,
        req: AddPartitionsToTxnRequest,
    ) -> Result<AddPartitionsToTxnResponse, BrokerError> {
        let txn_id = req.v3_and_below_transactional_id.to_string();
        let wanted: Vec<(String, i32)> = req
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let outcome = self.add_to_txn(
            &txn_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &wanted,
            None,
        )?;
        let code = outcome.err().map_or(0, |e| e.code());
        let results = req
            .v3_and_below_topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Ok(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
    }

    pub(crate) fn add_offsets_to_txn(
        &self,
        req: AddOffsetsToTxnRequest,
    ) -> Result<AddOffsetsToTxnResponse, BrokerError> {
        let group = req.group_id.0.to_string();
        let n = self.topic_partitions(OFFSETS_TOPIC).unwrap_or(1);
        let outcome = self.add_to_txn(
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), partition_for(&group, n))],
            Some(&group),
        )?;
        Ok(AddOffsetsToTxnResponse::default()
            .with_error_code(outcome.err().map_or(0, |e| e.code())))
    }

    /// TxnOffsetCommit: offsets kept with the transaction (persisted in its metadata) and
    /// committed with it; the group's generation and member are checked as for any commit
    /// (KIP-447) when the producer sends them.
    pub(crate) fn txn_offset_commit(
        &self,
        req: TxnOffsetCommitRequest,
    ) -> Result<TxnOffsetCommitResponse, BrokerError> {
        let group = req.group_id.0.to_string();
        let txn_id = req.transactional_id.to_string();
        let now = self.clock.now_ms();
        let check = (|| {
            let st = self.txn_store();
            if let Some(e) =
                fenced_or_unknown(st.txns.get(&txn_id), req.producer_id.0, req.producer_epoch)
            {
                return Err(e);
            }
            let meta = &st.txns[&txn_id];
            if meta.state != TxnState::Ongoing || !meta.offsets.contains_key(&group) {
                // AddOffsetsToTxn comes first.
                return Err(ResponseError::InvalidTxnState);
            }
            drop(st);
            if req.generation_id >= 0 || !req.member_id.is_empty() {
                let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
                self.groups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .validate_commit(
                        &group,
                        req.member_id.as_str(),
                        instance.as_deref(),
                        req.generation_id,
                    )?;
            }
            Ok(())
        })();
        let code = check.err().map_or(0, |e| e.code());
        if code == 0 {
            let mut st = self.txn_store();
            let mut meta = st.txns[&txn_id].clone();
            let pending = meta.offsets.entry(group.clone()).or_default();
            for t in &req.topics {
                for p in &t.partitions {
                    pending.retain(|o| {
                        !(o.topic == t.name.0.as_str() && o.partition == p.partition_index)
                    });
                    pending.push(PendingOffset {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_deref()
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
            }
            meta.updated_ms = now;
            st.persist(&self.logs, meta)?;
        }
        let topics = req
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Ok(TxnOffsetCommitResponse::default().with_topics(topics))
    }

    pub(crate) fn end_txn(&self, req: EndTxnRequest) -> Result<EndTxnResponse, BrokerError> {
        let txn_id = req.transactional_id.to_string();
        let now = self.clock.now_ms();
        let answer = |e: Option<ResponseError>| {
            Ok(EndTxnResponse::default().with_error_code(e.map_or(0, |e| e.code())))
        };
        let mut st = self.txn_store();
        if let Some(e) =
            fenced_or_unknown(st.txns.get(&txn_id), req.producer_id.0, req.producer_epoch)
        {
            return answer(Some(e));
        }
        let mut meta = st.txns[&txn_id].clone();
        match (meta.state, req.committed) {
            (TxnState::Ongoing, _) => {}
            // A retried EndTxn whose first try finished: the same answer.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return answer(None)
            }
            // Nothing was sent in this transaction: nothing to end.
            (TxnState::Empty, _) => return answer(None),
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                return answer(Some(ResponseError::ConcurrentTransactions))
            }
            _ => return answer(Some(ResponseError::InvalidTxnState)),
        }
        meta.state = if req.committed {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        meta.updated_ms = now;
        st.persist(&self.logs, meta.clone())?;
        complete(
            &mut st,
            &self.logs,
            &self.offsets,
            meta,
            now,
            self.config.txn_crash_after_markers,
        )?;
        answer(None)
    }
}
