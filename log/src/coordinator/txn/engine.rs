//! The transaction coordinator's decisions, sans IO (KIP-98, with KIP-360's epoch bumps and
//! KIP-890's partition verification): every request and every timer is a transition that
//! returns its answer and the [`Effect`]s the broker must carry out, in order. The engine never
//! writes, sleeps or reads a clock, so it runs the same in the broker, under a simulated clock
//! and in the model test (`tests` below).
//!
//! A transaction ends in two steps, as in Kafka: EndTxn (or a timeout, or a fencing
//! InitProducerId) moves it to PrepareCommit / PrepareAbort, which is persisted, and queues a
//! [`MarkerJob`]; when every marker is written (the `__consumer_offsets` ones commit or drop
//! the transaction's offsets at the group coordinator) the broker
//! calls [`TxnEngine::markers_written`], which completes it. Until then the transactional id
//! answers CONCURRENT_TRANSACTIONS, as Kafka's does.

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::ResponseError;

use super::{TxnMetadata, TxnState};

/// The coordinator's settings (Kafka's broker configs of the same names).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
}

/// What the broker must do for a transition, in this order, before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write this metadata to its `__transaction_state` partition.
    Persist(TxnMetadata),
    /// Write a tombstone for this transactional id (it expired).
    Forget(String),
    /// Queue these markers; call [`TxnEngine::markers_written`] once all are written.
    Markers(MarkerJob),
}

/// The end of one transaction, to be written to each of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// Partitions to write the marker to: the data partitions, and the `__consumer_offsets`
    /// partition of each group that committed offsets in the transaction (where the marker
    /// commits or drops them, as in Kafka).
    pub partitions: Vec<(String, i32)>,
}

/// A transition's answer and effects.
#[derive(Debug)]
pub struct Outcome<T> {
    pub answer: Result<T, ResponseError>,
    pub effects: Vec<Effect>,
}

impl<T> Outcome<T> {
    fn answer(answer: Result<T, ResponseError>) -> Self {
        Outcome {
            answer,
            effects: Vec::new(),
        }
    }

    fn with(answer: Result<T, ResponseError>, effects: Vec<Effect>) -> Self {
        Outcome { answer, effects }
    }
}

impl Outcome<()> {
    /// Effects with nothing to answer (timers, completions).
    pub fn only(effects: Vec<Effect>) -> Self {
        Outcome {
            answer: Ok(()),
            effects,
        }
    }
}

/// A transaction as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

/// The last epoch a producer id may have: a bump past it rotates to a new producer id.
const LAST_EPOCH: i16 = i16::MAX - 1;

/// The state machine: every transactional id's metadata, as persisted.
#[derive(Debug)]
pub struct TxnEngine {
    config: TxnConfig,
    txns: HashMap<String, TxnMetadata>,
}

impl TxnEngine {
    pub fn new(config: TxnConfig) -> Self {
        TxnEngine {
            config,
            txns: HashMap::new(),
        }
    }

    /// Replays one `__transaction_state` record (the last one per id wins; `None` is a
    /// tombstone). Call [`recover`](Self::recover) after the last.
    pub fn replay(&mut self, transactional_id: String, meta: Option<TxnMetadata>) {
        match meta {
            Some(m) => self.txns.insert(transactional_id, m),
            None => self.txns.remove(&transactional_id),
        };
    }

    /// After loading: the marker jobs of transactions a crash caught between prepare and
    /// complete (markers are idempotent, so those already written are written again).
    pub fn recover(&self) -> Vec<Effect> {
        let mut prepared: Vec<&TxnMetadata> = self
            .txns
            .values()
            .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .collect();
        prepared.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        prepared
            .into_iter()
            .map(|m| Effect::Markers(marker_job(m)))
            .collect()
    }

    /// Forgets the transactional ids `moved` selects (their coordinator is elsewhere now).
    pub fn forget_where(&mut self, moved: impl Fn(&str) -> bool) {
        self.txns.retain(|id, _| !moved(id));
    }

    /// Takes over the transactional ids `other` holds (a partition of them just loaded).
    pub fn absorb(&mut self, other: TxnEngine) {
        self.txns.extend(other.txns);
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    /// InitProducerId with a transactional id. `expected` is the producer's current id and
    /// epoch when it asks to bump its own epoch after an error (KIP-360); `new_id` hands out a
    /// fresh producer id (`None` when it cannot: COORDINATOR_LOAD_IN_PROGRESS, which the
    /// client retries, as Kafka answers while its next producer-id block is on its way).
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: i64,
        new_id: &mut dyn FnMut() -> Option<i64>,
    ) -> Outcome<(i64, i16)> {
        if transactional_id.is_empty() {
            return Outcome::answer(Err(ResponseError::InvalidRequest));
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Outcome::answer(Err(ResponseError::InvalidTransactionTimeout));
        }
        let mut meta = match self.txns.get(transactional_id) {
            Some(m) => m.clone(),
            None => {
                let Some(id) = new_id() else {
                    return Outcome::answer(Err(ResponseError::CoordinatorLoadInProgress));
                };
                let mut m = TxnMetadata::new(transactional_id, id, timeout_ms, now_ms);
                // No epoch yet: the first bump below makes it 0.
                m.producer_epoch = -1;
                m
            }
        };
        if let Some((pid, epoch)) = expected {
            // A producer bumping its own epoch must still own the id: the current one, or
            // (a retry whose answer was lost) the one it had before the id rotated.
            let owns = meta.producer_epoch < 0
                || pid == meta.producer_id
                || (pid == meta.previous_producer_id && epoch >= LAST_EPOCH);
            if !owns {
                return Outcome::answer(Err(ResponseError::ProducerFenced));
            }
        }
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Outcome::answer(Err(ResponseError::ConcurrentTransactions))
            }
            TxnState::Ongoing => {
                // Abort the open transaction under a bumped epoch (fencing its producer), and
                // let the client retry once the abort completed; the retry bumps again.
                let effects = self.fence_and_abort(meta, now_ms);
                return Outcome::with(Err(ResponseError::ConcurrentTransactions), effects);
            }
            TxnState::Dead => return Outcome::answer(Err(ResponseError::InvalidTxnState)),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {}
        }
        let exhausted = meta.producer_epoch >= LAST_EPOCH;
        if exhausted && expected.is_none_or(|(_, e)| e == meta.producer_epoch) {
            let Some(id) = new_id() else {
                return Outcome::answer(Err(ResponseError::CoordinatorLoadInProgress));
            };
            meta.previous_producer_id = meta.producer_id;
            meta.producer_id = id;
            meta.producer_epoch = 0;
            meta.last_producer_epoch = -1;
        } else {
            match expected {
                // A new producer instance: fence every earlier one.
                None => {
                    meta.last_producer_epoch = -1;
                    meta.producer_epoch += 1;
                }
                Some((_, e)) if meta.producer_epoch < 0 || e == meta.producer_epoch => {
                    meta.last_producer_epoch = meta.producer_epoch;
                    meta.producer_epoch += 1;
                }
                // A retry of a bump that succeeded: the same answer again.
                Some((_, e)) if e == meta.last_producer_epoch => {}
                Some(_) => return Outcome::answer(Err(ResponseError::ProducerFenced)),
            }
        }
        meta.timeout_ms = timeout_ms;
        meta.state = TxnState::Empty;
        meta.partitions.clear();
        meta.offsets.clear();
        meta.updated_ms = now_ms;
        let answer = (meta.producer_id, meta.producer_epoch);
        Outcome::with(Ok(answer), vec![self.keep(meta)])
    }

    /// AddPartitionsToTxn: `known` says whether a partition exists.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer: (i64, i16),
        partitions: &[(String, i32)],
        known: &dyn Fn(&str, i32) -> bool,
        now_ms: i64,
    ) -> Outcome<()> {
        self.add(transactional_id, producer, partitions, None, known, now_ms)
    }

    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
    pub fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer: (i64, i16),
        group: &str,
        offsets_partition: (String, i32),
        now_ms: i64,
    ) -> Outcome<()> {
        let known = |_: &str, _: i32| true;
        self.add(
            transactional_id,
            producer,
            std::slice::from_ref(&offsets_partition),
            Some(group),
            &known,
            now_ms,
        )
    }

    fn add(
        &mut self,
        transactional_id: &str,
        producer: (i64, i16),
        partitions: &[(String, i32)],
        group: Option<&str>,
        known: &dyn Fn(&str, i32) -> bool,
        now_ms: i64,
    ) -> Outcome<()> {
        let mut meta = match self.owned(transactional_id, producer) {
            Ok(m) => m.clone(),
            Err(e) => return Outcome::answer(Err(e)),
        };
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Outcome::answer(Err(ResponseError::ConcurrentTransactions))
            }
            TxnState::Dead => return Outcome::answer(Err(ResponseError::InvalidTxnState)),
            _ => {}
        }
        if partitions.iter().any(|(t, p)| !known(t, *p)) {
            return Outcome::answer(Err(ResponseError::UnknownTopicOrPartition));
        }
        let was_ongoing = meta.state == TxnState::Ongoing;
        let before = (meta.partitions.len(), meta.offsets.len());
        if !was_ongoing {
            meta.state = TxnState::Ongoing;
            meta.started_ms = now_ms;
        }
        meta.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            meta.offsets.entry(g.to_string()).or_default();
        }
        if was_ongoing && (meta.partitions.len(), meta.offsets.len()) == before {
            // Nothing new (a retry): nothing to persist.
            return Outcome::answer(Ok(()));
        }
        meta.updated_ms = now_ms;
        Outcome::with(Ok(()), vec![self.keep(meta)])
    }

    /// TxnOffsetCommit's checks of the transaction (the group's own checks are the group
    /// coordinator's): the group must have been added with AddOffsetsToTxn.
    pub fn check_offset_commit(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        group: &str,
    ) -> Result<(), ResponseError> {
        let meta = self.owned(transactional_id, producer)?;
        if meta.state != TxnState::Ongoing || !meta.offsets.contains_key(group) {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: prepares the commit or abort and queues its markers.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer: (i64, i16),
        commit: bool,
        now_ms: i64,
    ) -> Outcome<()> {
        let meta = match self.owned(transactional_id, producer) {
            Ok(m) => m.clone(),
            Err(e) => return Outcome::answer(Err(e)),
        };
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {}
            // A retried EndTxn whose first try finished: the same answer.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Outcome::answer(Ok(()))
            }
            // Nothing was sent in this transaction: nothing to end.
            (TxnState::Empty, _) => return Outcome::answer(Ok(())),
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                return Outcome::answer(Err(ResponseError::ConcurrentTransactions))
            }
            _ => return Outcome::answer(Err(ResponseError::InvalidTxnState)),
        }
        let effects = self.prepare(meta, commit, now_ms);
        Outcome::with(Ok(()), effects)
    }

    /// Every marker of the job is written (and, on commit, the offsets applied): the
    /// transaction completes. A job that no longer matches the metadata changes nothing.
    pub fn markers_written(&mut self, job: &MarkerJob, now_ms: i64) -> Vec<Effect> {
        let Some(meta) = self.txns.get(&job.transactional_id) else {
            return Vec::new();
        };
        let prepared = if job.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if meta.state != prepared
            || meta.producer_id != job.producer_id
            || meta.producer_epoch != job.producer_epoch
        {
            return Vec::new();
        }
        let mut meta = meta.clone();
        meta.state = if job.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        meta.partitions.clear();
        meta.offsets.clear();
        meta.updated_ms = now_ms;
        vec![self.keep(meta)]
    }

    /// Timers: transactions open past their timeout are aborted (fencing their producer), and
    /// ids idle for `transactional.id.expiration.ms` are forgotten.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut ids: Vec<String> = self.txns.keys().cloned().collect();
        ids.sort();
        let mut effects = Vec::new();
        for id in ids {
            let meta = &self.txns[&id];
            let idle = now_ms.saturating_sub(meta.updated_ms);
            let open_for = now_ms.saturating_sub(meta.started_ms);
            if meta.state == TxnState::Ongoing && open_for > i64::from(meta.timeout_ms) {
                let meta = meta.clone();
                effects.extend(self.fence_and_abort(meta, now_ms));
            } else if matches!(
                meta.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && idle > self.config.id_expiration_ms
            {
                self.txns.remove(&id);
                effects.push(Effect::Forget(id));
            }
        }
        effects
    }

    /// KIP-890's check of a partition's first transactional batch: the producer's open
    /// transaction must hold the partition. Kafka's produce answers: a fenced epoch is
    /// INVALID_PRODUCER_EPOCH, a partition not in the transaction INVALID_TXN_STATE.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        let meta = self
            .owned(transactional_id, producer)
            .map_err(|e| match e {
                ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
                e => e,
            })?;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Ongoing if meta.partitions.contains(partition) => Ok(()),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// ListTransactions: every transactional id, filtered by state names and producer ids
    /// (empty filters take all) and, with `min_duration_ms >= 0`, to transactions open at
    /// least that long.
    pub fn list(
        &self,
        states: &BTreeSet<String>,
        producer_ids: &BTreeSet<i64>,
        min_duration_ms: i64,
        now_ms: i64,
    ) -> Vec<Listed> {
        let mut out: Vec<Listed> = self
            .txns
            .values()
            .filter(|m| states.is_empty() || states.contains(m.state.name()))
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|m| {
                min_duration_ms < 0
                    || (m.in_progress() && now_ms.saturating_sub(m.started_ms) >= min_duration_ms)
            })
            .map(|m| Listed {
                transactional_id: m.transactional_id.clone(),
                producer_id: m.producer_id,
                state: m.state,
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    /// Transactions whose metadata names `producer_id` (a hanging transaction's owner).
    pub fn by_producer(&self, producer_id: i64) -> Option<&TxnMetadata> {
        self.txns.values().find(|m| m.producer_id == producer_id)
    }

    /// The metadata of `transactional_id` if `producer` owns it.
    fn owned(
        &self,
        transactional_id: &str,
        (pid, epoch): (i64, i16),
    ) -> Result<&TxnMetadata, ResponseError> {
        let meta = self
            .txns
            .get(transactional_id)
            .filter(|m| m.producer_id == pid)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if meta.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(meta)
    }

    /// Aborts `meta`'s open transaction under a bumped epoch: the markers carry the new epoch,
    /// so the producer that opened it is fenced wherever they land.
    fn fence_and_abort(&mut self, mut meta: TxnMetadata, now_ms: i64) -> Vec<Effect> {
        if meta.producer_epoch < LAST_EPOCH {
            meta.producer_epoch += 1;
        }
        meta.last_producer_epoch = -1;
        self.prepare(meta, false, now_ms)
    }

    fn prepare(&mut self, mut meta: TxnMetadata, commit: bool, now_ms: i64) -> Vec<Effect> {
        meta.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        meta.updated_ms = now_ms;
        let job = marker_job(&meta);
        vec![self.keep(meta), Effect::Markers(job)]
    }

    fn keep(&mut self, meta: TxnMetadata) -> Effect {
        self.txns
            .insert(meta.transactional_id.clone(), meta.clone());
        Effect::Persist(meta)
    }
}

fn marker_job(meta: &TxnMetadata) -> MarkerJob {
    MarkerJob {
        transactional_id: meta.transactional_id.clone(),
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        commit: meta.state == TxnState::PrepareCommit,
        partitions: meta.partitions.iter().cloned().collect(),
    }
}
