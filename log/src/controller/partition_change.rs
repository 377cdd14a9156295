//! How a partition's leadership and ISR change (Kafka's `PartitionChangeBuilder`): a new
//! target ISR (an `AlterPartition`, a fenced broker leaving it), then leader election and
//! the eligible leader replicas of KIP-966. The rules that keep acknowledged records:
//!
//! - a leader comes from the ISR; with the ISR empty, from the ELR (replicas that left the
//!   ISR while it was below `min.insync.replicas`, so the high watermark, which only moves
//!   while the ISR holds that many, never moved without them); only with
//!   `unclean.leader.election.enable` from any live replica;
//! - the ELR is cleared whenever the ISR reaches `min.insync.replicas` again (the high
//!   watermark may then move without its members), and loses replicas that restarted after
//!   an unclean shutdown (their unflushed tail may be gone);
//! - the leader epoch is bumped on every leader change, and when replicas leave the
//!   assignment (so a removed replica's fetches are fenced); the partition epoch on every
//!   change.
//!
//! Reassignments (Kafka's `PartitionReassignmentReplicas`): the new replicas join the
//! assignment as `adding` and catch up; once every target replica is in the ISR, the next
//! change completes it, dropping the `removing` ones from the replicas and the ISR (and the
//! leadership, which goes to the first target replica in the ISR).

use super::image::MetadataImage;
use super::records::PartitionRecord;
use crate::types::NodeId;

/// What the partition's topic says about elections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionPolicy {
    /// `min.insync.replicas`.
    pub min_isr: usize,
    /// `unclean.leader.election.enable`.
    pub unclean: bool,
}

/// A change to one partition, built then applied to its current record.
#[derive(Debug, Clone)]
pub struct PartitionChange<'a> {
    current: &'a PartitionRecord,
    image: &'a MetadataImage,
    policy: ElectionPolicy,
    target_isr: Vec<NodeId>,
    /// The assignment after the change, with a reassignment's adding and removing replicas.
    target_replicas: Vec<NodeId>,
    target_adding: Vec<NodeId>,
    target_removing: Vec<NodeId>,
    /// Replicas whose last shutdown was unclean: dropped from the ELR.
    unclean_shutdown: Vec<NodeId>,
    /// Elect again even if the current leader may stay (it is fenced or shutting down in the
    /// image being built).
    move_leader: bool,
    /// A preferred-leader election: the first replica leads if it is in the ISR and usable.
    preferred: bool,
}

impl<'a> PartitionChange<'a> {
    pub fn new(
        current: &'a PartitionRecord,
        image: &'a MetadataImage,
        policy: ElectionPolicy,
    ) -> Self {
        PartitionChange {
            current,
            image,
            policy,
            target_isr: current.isr.clone(),
            target_replicas: current.replicas.clone(),
            target_adding: current.adding.clone(),
            target_removing: current.removing.clone(),
            unclean_shutdown: Vec::new(),
            move_leader: false,
            preferred: false,
        }
    }

    pub fn with_isr(mut self, isr: Vec<NodeId>) -> Self {
        self.target_isr = isr;
        self
    }

    /// Starts (or replaces) a reassignment to `target` (Kafka's
    /// `changePartitionReassignment`): the assignment becomes the target followed by the
    /// current replicas it drops, which are `removing`; the target's new ones are `adding`.
    /// With nothing to add, it may complete at once.
    pub fn reassigning_to(mut self, target: &[NodeId]) -> Self {
        let current = &self.current.replicas;
        let mut removing: Vec<NodeId> = current
            .iter()
            .filter(|r| !target.contains(r))
            .copied()
            .collect();
        removing.sort();
        let mut adding: Vec<NodeId> = target
            .iter()
            .filter(|r| !current.contains(r))
            .copied()
            .collect();
        adding.sort();
        self.target_replicas = target.iter().chain(&removing).copied().collect();
        self.target_adding = adding;
        self.target_removing = removing;
        self
    }

    /// Cancels the reassignment under way (Kafka's `PartitionReassignmentRevert`): back to
    /// the original replicas, the added ones out of the ISR. `None` when that would leave
    /// the ISR empty and the topic does not allow an unclean election.
    pub fn reverting_reassignment(mut self) -> Option<Self> {
        let original = self.current.original_replicas();
        let adding = &self.current.adding;
        let mut isr: Vec<NodeId> = self
            .current
            .isr
            .iter()
            .filter(|r| !adding.contains(r))
            .copied()
            .collect();
        if isr.is_empty() {
            if !self.policy.unclean {
                return None;
            }
            isr.extend(original.first().copied());
        }
        self.target_isr = isr;
        self.target_replicas = original;
        self.target_adding = Vec::new();
        self.target_removing = Vec::new();
        Some(self)
    }

    /// Completes the reassignment under way if every target replica is in the ISR (Kafka's
    /// `maybeCompleteReassignment`): the removing replicas leave the assignment and the ISR.
    fn complete_reassignment(&mut self) {
        if self.target_adding.is_empty() && self.target_removing.is_empty() {
            return;
        }
        let removing = &self.target_removing;
        let isr: Vec<NodeId> = self
            .target_isr
            .iter()
            .filter(|r| !removing.contains(r))
            .copied()
            .collect();
        let replicas: Vec<NodeId> = self
            .target_replicas
            .iter()
            .filter(|r| !removing.contains(r))
            .copied()
            .collect();
        if isr.is_empty() || replicas.is_empty() || !replicas.iter().all(|r| isr.contains(r)) {
            return;
        }
        self.target_isr = isr;
        self.target_replicas = replicas;
        self.target_adding.clear();
        self.target_removing.clear();
    }

    /// Takes `broker` out of the ISR and the leadership (it was fenced or is shutting down).
    pub fn without(mut self, broker: NodeId) -> Self {
        self.target_isr.retain(|r| *r != broker);
        self.move_leader |= self.current.leader == broker;
        self
    }

    /// A preferred-leader election (Kafka's `Election.PREFERRED`): the first replica takes
    /// the leadership if it is in the ISR and usable; otherwise the leader is chosen as
    /// usual (the current one stays if it may).
    pub fn preferring_first_replica(mut self) -> Self {
        self.preferred = true;
        self
    }

    /// An unclean election the operator asked for (`ElectLeaders` of type UNCLEAN):
    /// allowed whatever the topic's `unclean.leader.election.enable` says.
    pub fn allowing_unclean(mut self) -> Self {
        self.policy.unclean = true;
        self
    }

    pub fn with_unclean_shutdown(mut self, broker: NodeId) -> Self {
        self.unclean_shutdown.push(broker);
        self
    }

    /// The new record, or `None` if nothing changes.
    pub fn build(mut self) -> Option<PartitionRecord> {
        self.complete_reassignment();
        let cur = self.current;
        let usable = |r: &NodeId| self.image.is_usable(*r);
        let replicas = &self.target_replicas;
        let mut isr = self.target_isr.clone();
        // The ELR: this change's ISR leavers join it while the ISR is below min (KIP-966's
        // `maybePopulateTargetElr`).
        let mut elr: Vec<NodeId> = if isr.len() >= self.policy.min_isr {
            Vec::new()
        } else {
            // Replicas a completed reassignment dropped are not eligible any more.
            cur.replicas
                .iter()
                .filter(|r| (cur.isr.contains(r) || cur.elr.contains(r)) && !isr.contains(r))
                .filter(|r| replicas.contains(r))
                .copied()
                .collect()
        };
        elr.retain(|r| !self.unclean_shutdown.contains(r));

        let keep = !self.move_leader
            && cur.has_leader()
            && isr.contains(&cur.leader)
            && usable(&cur.leader);
        let preferred = replicas
            .first()
            .filter(|r| self.preferred && isr.contains(r) && usable(r));
        let leader = if let Some(p) = preferred {
            *p
        } else if keep {
            cur.leader
        } else if let Some(l) = replicas.iter().find(|r| isr.contains(r) && usable(r)) {
            *l
        } else if let Some(l) = isr
            .is_empty()
            .then(|| replicas.iter().find(|r| elr.contains(r) && usable(r)))
            .flatten()
        {
            // From the ELR: it becomes the ISR.
            isr = vec![*l];
            elr.retain(|r| r != l);
            *l
        } else if let Some(l) = self
            .policy
            .unclean
            .then(|| replicas.iter().find(|r| usable(r)))
            .flatten()
        {
            // Unclean: whatever it has is the partition's history from now on.
            isr = vec![*l];
            elr.clear();
            *l
        } else {
            NodeId::NONE
        };
        // With the ISR reaching min again (an ELR member elected into an ISR of one with
        // min 1, say), the ELR guarantee no longer holds.
        if isr.len() >= self.policy.min_isr {
            elr.clear();
        }
        // Keep the replicas' order in the ISR and ELR, so equal sets compare equal.
        let ordered = |set: &[NodeId]| -> Vec<NodeId> {
            replicas
                .iter()
                .filter(|r| set.contains(r))
                .copied()
                .collect()
        };
        let isr = ordered(&isr);
        let elr = ordered(&elr);
        let assignment_same = *replicas == cur.replicas
            && self.target_adding == cur.adding
            && self.target_removing == cur.removing;
        if isr == cur.isr && elr == cur.elr && leader == cur.leader && assignment_same {
            return None;
        }
        let mut next = cur.clone();
        // A new leader, or replicas leaving the assignment (their fetches must be fenced):
        // a new leader epoch.
        let replicas_left = cur.replicas.iter().any(|r| !replicas.contains(r));
        if leader != cur.leader || replicas_left {
            next.leader_epoch += 1;
        }
        next.replicas = replicas.clone();
        next.adding = self.target_adding.clone();
        next.removing = self.target_removing.clone();
        next.leader = leader;
        next.isr = isr;
        next.elr = elr;
        next.partition_epoch += 1;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::{BrokerRegistration, MetadataRecord};
    use uuid::Uuid;

    fn n(ids: &[i32]) -> Vec<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    /// Brokers 1..=5, those in `fenced` fenced.
    fn image(fenced: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut records = Vec::new();
        for id in 1..=5 {
            records.push(MetadataRecord::RegisterBroker(BrokerRegistration {
                id: NodeId(id),
                incarnation: Uuid::from_u128(id as u128),
                epoch: 0,
                host: "h".into(),
                port: 1,
                rack: None,
                fenced: fenced.contains(&id),
                shutting_down: false,
            }));
        }
        image.apply(1, &records);
        image
    }

    fn partition(replicas: &[i32], isr: &[i32], elr: &[i32], leader: i32) -> PartitionRecord {
        PartitionRecord {
            topic_id: Uuid::nil(),
            partition: 0,
            replicas: n(replicas),
            isr: n(isr),
            elr: n(elr),
            leader: NodeId(leader),
            leader_epoch: 5,
            partition_epoch: 9,
            adding: vec![],
            removing: vec![],
        }
    }

    const MIN1: ElectionPolicy = ElectionPolicy {
        min_isr: 1,
        unclean: false,
    };
    const MIN2: ElectionPolicy = ElectionPolicy {
        min_isr: 2,
        unclean: false,
    };

    /// Kafka's `PartitionChangeBuilderTest.testElectLeader` (the PREFERRED cases): the first
    /// replica leads when it is in the ISR and usable; otherwise the current leader stays.
    #[test]
    fn a_preferred_election_moves_the_leadership_to_the_first_replica_when_it_may() {
        let img = image(&[]);
        let cur = partition(&[1, 2, 3], &[1, 2, 3], &[], 2);
        let next = PartitionChange::new(&cur, &img, MIN2)
            .preferring_first_replica()
            .build()
            .unwrap();
        assert_eq!(next.leader, NodeId(1));
        assert_eq!((next.leader_epoch, next.partition_epoch), (6, 10));
        // Already there: no change.
        assert!(PartitionChange::new(&next, &img, MIN2)
            .preferring_first_replica()
            .build()
            .is_none());
        // The first replica out of the ISR, or fenced: the current leader stays.
        let out = partition(&[1, 2, 3], &[2, 3], &[], 2);
        assert!(PartitionChange::new(&out, &img, MIN2)
            .preferring_first_replica()
            .build()
            .is_none());
        let fenced = image(&[1]);
        assert!(PartitionChange::new(&cur, &fenced, MIN2)
            .preferring_first_replica()
            .build()
            .is_none());
    }

    #[test]
    fn an_unclean_election_asked_for_elects_a_live_replica_outside_the_isr() {
        // Leaderless: the ISR's only member (1) is fenced, 2 and 3 are live but out of it.
        let img = image(&[1]);
        let cur = partition(&[1, 2, 3], &[1], &[], -1);
        assert!(PartitionChange::new(&cur, &img, MIN2).build().is_none());
        let next = PartitionChange::new(&cur, &img, MIN2)
            .allowing_unclean()
            .build()
            .unwrap();
        assert_eq!((next.leader, next.isr.clone()), (NodeId(2), n(&[2])));
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr_in_replica_order() {
        let img = image(&[1]);
        let cur = partition(&[1, 2, 3], &[1, 3, 2], &[], 1);
        let next = PartitionChange::new(&cur, &img, MIN2)
            .without(NodeId(1))
            .build()
            .unwrap();
        assert_eq!(next.leader, NodeId(2));
        assert_eq!(next.isr, n(&[2, 3]));
        assert!(next.elr.is_empty());
        assert_eq!((next.leader_epoch, next.partition_epoch), (6, 10));
    }

    #[test]
    fn an_isr_change_keeping_the_leader_bumps_only_the_partition_epoch() {
        let img = image(&[]);
        let cur = partition(&[1, 2, 3], &[1, 2, 3], &[], 1);
        let next = PartitionChange::new(&cur, &img, MIN1)
            .with_isr(n(&[1, 2]))
            .build()
            .unwrap();
        assert_eq!(
            (next.leader, next.leader_epoch, next.partition_epoch),
            (NodeId(1), 5, 10)
        );
        // The same ISR again is no change.
        assert!(PartitionChange::new(&next, &img, MIN1)
            .with_isr(n(&[2, 1]))
            .build()
            .is_none());
    }

    /// KIP-966: leavers of an ISR below min join the ELR; a leader can come from there when
    /// the ISR empties; the ELR clears when the ISR is back at min.
    #[test]
    fn eligible_leader_replicas_keep_a_partition_electable() {
        let img = image(&[]);
        let cur = partition(&[1, 2, 3], &[1, 2, 3], &[], 1);
        // 3 leaves: ISR {1,2} is at min, no ELR.
        let a = PartitionChange::new(&cur, &img, MIN2)
            .with_isr(n(&[1, 2]))
            .build()
            .unwrap();
        assert!(a.elr.is_empty());
        // 2 leaves: ISR {1} is below min, 2 becomes eligible (3 left while the HW could
        // still move without it, so it is not).
        let b = PartitionChange::new(&a, &img, MIN2)
            .with_isr(n(&[1]))
            .build()
            .unwrap();
        assert_eq!(b.elr, n(&[2]));
        // The leader 1 is fenced: the ISR empties, 1 joins the ELR, 2 leads from it.
        let img1 = image(&[1]);
        let c = PartitionChange::new(&b, &img1, MIN2)
            .without(NodeId(1))
            .build()
            .unwrap();
        assert_eq!(c.leader, NodeId(2));
        assert_eq!(c.isr, n(&[2]));
        assert_eq!(c.elr, n(&[1]));
        // 3 catches up and joins: the ISR is at min again and the ELR clears.
        let d = PartitionChange::new(&c, &img1, MIN2)
            .with_isr(n(&[2, 3]))
            .build()
            .unwrap();
        assert!(d.elr.is_empty());
    }

    #[test]
    fn with_no_eligible_replica_alive_the_partition_goes_offline_unless_unclean() {
        // ISR {1} (min 2) and 1 is fenced: 2 and 3 never were eligible.
        let img = image(&[1]);
        let cur = partition(&[1, 2, 3], &[1], &[], 1);
        let off = PartitionChange::new(&cur, &img, MIN2)
            .without(NodeId(1))
            .build()
            .unwrap();
        assert_eq!(off.leader, NodeId::NONE);
        assert!(off.isr.is_empty());
        assert_eq!(off.elr, n(&[1]), "the last ISR member stays eligible");
        assert_eq!(off.leader_epoch, 6);
        // When 1 comes back, it leads again from the ELR.
        let back = image(&[]);
        let again = PartitionChange::new(&off, &back, MIN2).build().unwrap();
        assert_eq!((again.leader, again.isr.clone()), (NodeId(1), n(&[1])));
        // Unclean election takes any live replica instead.
        let unclean = ElectionPolicy {
            min_isr: 2,
            unclean: true,
        };
        let u = PartitionChange::new(&cur, &img, unclean)
            .without(NodeId(1))
            .build()
            .unwrap();
        assert_eq!(
            (u.leader, u.isr.clone(), u.elr.clone()),
            (NodeId(2), n(&[2]), vec![])
        );
    }

    #[test]
    fn an_unclean_shutdown_removes_a_replica_from_the_elr() {
        let img = image(&[1]);
        let cur = partition(&[1, 2, 3], &[], &[1, 2], -1);
        let next = PartitionChange::new(&cur, &img, MIN2)
            .with_unclean_shutdown(NodeId(2))
            .build()
            .unwrap();
        assert_eq!(next.elr, n(&[1]));
        assert_eq!(
            next.leader,
            NodeId::NONE,
            "1 is fenced, 2 may have lost records"
        );
    }
}
