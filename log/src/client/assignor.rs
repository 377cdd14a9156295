//! Partition assignors run by the group leader, with Kafka's names and rules so rill's
//! consumers can share a group with Kafka's: `range` (per topic, contiguous ranges over members
//! sorted by id), `roundrobin` (every partition of every topic, in order, dealt to members in
//! turn, skipping members not subscribed to its topic) and `cooperative-sticky` (balanced, keeps owned partitions, and never moves a
//! partition directly between members in one rebalance: the owner gives it up first, KIP-429).

use std::collections::{BTreeMap, BTreeSet};

use crate::types::TopicPartition;

/// What a member told the leader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// Partitions the member owned in the last generation (cooperative protocol).
    pub owned: Vec<TopicPartition>,
    /// What the member's assignor added to its subscription ([`Assignor::user_data`]).
    pub user_data: Vec<u8>,
}

/// Assigns partitions: `members` (member id -> subscription), `partitions` (topic -> count).
pub trait Assignor: Send + Sync + std::fmt::Debug {
    /// The protocol name in JoinGroup.
    fn name(&self) -> &'static str;
    /// Whether members keep partitions across a rebalance (cooperative) or give up all (eager).
    fn cooperative(&self) -> bool;
    /// Bytes this member adds to its subscription for the leader's assignor (Kafka's
    /// `subscriptionUserData`), asked for at every join.
    fn user_data(&self) -> Vec<u8> {
        Vec::new()
    }
    fn assign(
        &self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>>;
}

/// Kafka's RangeAssignor.
#[derive(Debug, Default, Clone, Copy)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn cooperative(&self) -> bool {
        false
    }

    fn assign(
        &self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> =
            members.keys().map(|m| (m.clone(), Vec::new())).collect();
        for (topic, &count) in partitions {
            let subscribers: Vec<&String> = members
                .iter()
                .filter(|(_, s)| s.topics.contains(topic))
                .map(|(m, _)| m)
                .collect();
            if subscribers.is_empty() {
                continue;
            }
            let n = subscribers.len() as i32;
            let (each, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, m) in subscribers.iter().enumerate() {
                let take = each + i32::from((i as i32) < extra);
                for p in next..next + take {
                    out.get_mut(*m)
                        .expect("member")
                        .push(TopicPartition::new(topic.clone(), p));
                }
                next += take;
            }
        }
        out
    }
}

/// Kafka's RoundRobinAssignor.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn cooperative(&self) -> bool {
        false
    }

    fn assign(
        &self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> =
            members.keys().map(|m| (m.clone(), Vec::new())).collect();
        let ring: Vec<(&String, &Subscription)> = members.iter().collect();
        if ring.is_empty() {
            return out;
        }
        let mut next = 0;
        for (topic, &count) in partitions {
            if !ring.iter().any(|(_, s)| s.topics.contains(topic)) {
                continue;
            }
            for p in 0..count {
                // The next member in the ring that subscribes to this topic.
                while !ring[next % ring.len()].1.topics.contains(topic) {
                    next += 1;
                }
                let member = ring[next % ring.len()].0;
                out.get_mut(member)
                    .expect("member")
                    .push(TopicPartition::new(topic.clone(), p));
                next += 1;
            }
        }
        out
    }
}

/// Kafka's CooperativeStickyAssignor (for members subscribed to the same topics).
#[derive(Debug, Default, Clone, Copy)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn cooperative(&self) -> bool {
        true
    }

    fn assign(
        &self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> =
            members.keys().map(|m| (m.clone(), Vec::new())).collect();
        if members.is_empty() {
            return out;
        }
        let all: BTreeSet<TopicPartition> = partitions
            .iter()
            .filter(|(t, _)| members.values().any(|s| s.topics.contains(t)))
            .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
            .collect();
        let m = members.len();
        let (base, extra) = (all.len() / m, all.len() % m);
        // Keep owned partitions (each claimed once) up to each member's quota; members that
        // owned more get the larger quotas first so as little as possible moves.
        let mut by_owned: Vec<(&String, &Subscription)> = members.iter().collect();
        by_owned.sort_by_key(|(id, s)| (std::cmp::Reverse(s.owned.len()), (*id).clone()));
        let mut claimed: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut quota: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (id, sub)) in by_owned.iter().enumerate() {
            let q = base + usize::from(i < extra);
            quota.insert((*id).clone(), q);
            for tp in &sub.owned {
                let mine = out.get_mut(*id).expect("member");
                if mine.len() < q
                    && all.contains(tp)
                    && sub.topics.contains(&tp.topic)
                    && claimed.insert(tp.clone())
                {
                    mine.push(tp.clone());
                }
            }
        }
        // Hand out the rest to whoever is furthest below quota.
        for tp in all.iter().filter(|tp| !claimed.contains(*tp)) {
            let target = out
                .iter()
                .filter(|(id, got)| {
                    got.len() < quota[*id] && members[*id].topics.contains(&tp.topic)
                })
                .min_by_key(|(id, got)| (got.len(), (*id).clone()))
                .map(|(id, _)| id.clone());
            if let Some(id) = target {
                out.get_mut(&id).expect("member").push(tp.clone());
            }
        }
        // KIP-429: a partition another member still owns is withheld this round; its owner
        // revokes it, rejoins, and the next rebalance hands it over.
        let owner: BTreeMap<&TopicPartition, &String> = members
            .iter()
            .flat_map(|(id, s)| s.owned.iter().map(move |tp| (tp, id)))
            .collect();
        for (id, tps) in out.iter_mut() {
            tps.retain(|tp| owner.get(tp).is_none_or(|o| *o == id));
            tps.sort();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[(&str, &[(&str, i32)])], topics: &[&str]) -> BTreeMap<String, Subscription> {
        members
            .iter()
            .map(|(id, owned)| {
                (
                    id.to_string(),
                    Subscription {
                        topics: topics.iter().map(|t| t.to_string()).collect(),
                        owned: owned
                            .iter()
                            .map(|(t, p)| TopicPartition::new(*t, *p))
                            .collect(),
                        user_data: Vec::new(),
                    },
                )
            })
            .collect()
    }

    fn names(a: &BTreeMap<String, Vec<TopicPartition>>) -> BTreeMap<String, Vec<i32>> {
        a.iter()
            .map(|(m, tps)| (m.clone(), tps.iter().map(|tp| tp.partition.0).collect()))
            .collect()
    }

    #[test]
    fn range_splits_each_topic_into_contiguous_ranges() {
        let members = subs(&[("a", &[]), ("b", &[]), ("c", &[])], &["t"]);
        let parts = BTreeMap::from([("t".to_string(), 7)]);
        let got = names(&RangeAssignor.assign(&members, &parts));
        assert_eq!(got["a"], vec![0, 1, 2]);
        assert_eq!(got["b"], vec![3, 4]);
        assert_eq!(got["c"], vec![5, 6]);
    }

    #[test]
    fn roundrobin_deals_partitions_in_turn_skipping_unsubscribed_members() {
        let mut members = subs(&[("a", &[]), ("b", &[]), ("c", &[])], &["t", "u"]);
        members.get_mut("c").unwrap().topics = vec!["u".into()];
        let parts = BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 4)]);
        let got = RoundRobinAssignor.assign(&members, &parts);
        let show = |m: &str| -> Vec<String> { got[m].iter().map(|tp| tp.to_string()).collect() };
        // t-0 a, t-1 b, t-2 a (c skipped), then u-0 b, u-1 c, u-2 a, u-3 b.
        assert_eq!(show("a"), vec!["t-0", "t-2", "u-2"]);
        assert_eq!(show("b"), vec!["t-1", "u-0", "u-3"]);
        assert_eq!(show("c"), vec!["u-1"]);
    }

    #[test]
    fn cooperative_sticky_keeps_owned_and_withholds_moves() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        // Two members own three each; a third joins.
        let members = subs(
            &[
                ("a", &[("t", 0), ("t", 1), ("t", 2)]),
                ("b", &[("t", 3), ("t", 4), ("t", 5)]),
                ("c", &[]),
            ],
            &["t"],
        );
        let round1 = names(&CooperativeStickyAssignor.assign(&members, &parts));
        assert_eq!(round1["a"].len(), 2);
        assert_eq!(round1["b"].len(), 2);
        assert!(round1["a"].iter().all(|p| [0, 1, 2].contains(p)));
        assert!(round1["b"].iter().all(|p| [3, 4, 5].contains(p)));
        assert!(
            round1["c"].is_empty(),
            "moved partitions are withheld in the first round"
        );
        // Second round: a and b own what they kept; the freed two go to c.
        let owned = |v: &Vec<i32>| v.iter().map(|p| ("t", *p)).collect::<Vec<_>>();
        let (oa, ob) = (owned(&round1["a"]), owned(&round1["b"]));
        let members = subs(&[("a", &oa), ("b", &ob), ("c", &[])], &["t"]);
        let round2 = names(&CooperativeStickyAssignor.assign(&members, &parts));
        assert_eq!(round2["a"], round1["a"]);
        assert_eq!(round2["b"], round1["b"]);
        assert_eq!(round2["c"].len(), 2);
        let mut all: Vec<i32> = round2.values().flatten().copied().collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    }
}
