//! `rill partitions`: partition reassignment as Kafka's `kafka-reassign-partitions.sh` does it
//! — a JSON plan (Kafka's format), generated to drain a broker or to spread replicas onto a
//! new one, then executed, verified or cancelled with AlterPartitionReassignments and
//! ListPartitionReassignments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::output::Table;
use super::CliError;
use crate::client::{Admin, Transport};
use crate::types::TopicPartition;

/// A reassignment plan, in Kafka's JSON: `{"version":1,"partitions":[{"topic":"t",
/// "partition":0,"replicas":[2,3,4]}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: i32,
    pub partitions: Vec<PlannedPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPartition {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

impl Plan {
    /// Reads a plan from its JSON text; a plan naming a partition twice, or giving one no
    /// replicas, is refused before anything is sent.
    pub fn parse(text: &str) -> Result<Plan, CliError> {
        let plan: Plan = serde_json::from_str(text)
            .map_err(|e| CliError::Usage(format!("not a reassignment plan: {e}")))?;
        if plan.version != 1 {
            return Err(CliError::Usage(format!(
                "plan version {} (only 1 is known)",
                plan.version
            )));
        }
        let mut seen = BTreeSet::new();
        for p in &plan.partitions {
            if !seen.insert((&p.topic, p.partition)) {
                return Err(CliError::Usage(format!(
                    "{}-{} is in the plan twice",
                    p.topic, p.partition
                )));
            }
            if p.replicas.is_empty() {
                return Err(CliError::Usage(format!(
                    "{}-{} has no replicas in the plan",
                    p.topic, p.partition
                )));
            }
        }
        Ok(plan)
    }
}

/// Every partition's current replicas (in preference order), internal topics left out.
async fn assignments(admin: &Admin) -> Result<BTreeMap<TopicPartition, Vec<i32>>, CliError> {
    let mut out = BTreeMap::new();
    for t in admin.list_topics().await? {
        if t.internal {
            continue;
        }
        for p in t.partition_states {
            out.insert(TopicPartition::new(t.name.clone(), p.partition), p.replicas);
        }
    }
    Ok(out)
}

/// The brokers of the cluster, by id (DescribeCluster).
async fn brokers(t: &Arc<dyn Transport>) -> Result<Vec<i32>, CliError> {
    use kafka_protocol::messages::{DescribeClusterRequest, RequestKind, ResponseKind};
    let resp = t
        .send(RequestKind::DescribeCluster(
            DescribeClusterRequest::default(),
        ))
        .await?;
    let Some(ResponseKind::DescribeCluster(c)) = resp else {
        return Err(CliError::Usage("no DescribeCluster answer".into()));
    };
    crate::client::check(c.error_code, c.error_message.as_deref())?;
    let mut ids: Vec<i32> = c.brokers.iter().map(|b| b.broker_id.0).collect();
    ids.sort();
    Ok(ids)
}

/// What a plan is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Every replica off this broker (before removing it).
    Drain(i32),
    /// A fair share of the replicas onto this broker (after adding it).
    SpreadTo(i32),
}

/// A plan for `goal` over the current assignments of the cluster's brokers.
pub async fn generate(t: Arc<dyn Transport>, goal: Goal) -> Result<Plan, CliError> {
    let admin = Admin::new(Arc::clone(&t));
    let current = assignments(&admin).await?;
    let brokers = brokers(&t).await?;
    plan_for(goal, &current, &brokers)
}

/// The plan itself, from the assignments and brokers: moves replicas one at a time, each to
/// (or from) the broker with the fewest (most) replicas, keeping each partition's other
/// replicas and their order (so its preferred leader stays unless it is the one moved).
pub fn plan_for(
    goal: Goal,
    current: &BTreeMap<TopicPartition, Vec<i32>>,
    brokers: &[i32],
) -> Result<Plan, CliError> {
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for replicas in current.values() {
        for r in replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    let mut moved = Vec::new();
    match goal {
        Goal::Drain(gone) => {
            let others: Vec<i32> = brokers.iter().copied().filter(|b| *b != gone).collect();
            for (tp, replicas) in current {
                let Some(at) = replicas.iter().position(|r| *r == gone) else {
                    continue;
                };
                let to = others
                    .iter()
                    .filter(|b| !replicas.contains(b))
                    .min_by_key(|b| (load[b], **b))
                    .copied()
                    .ok_or_else(|| {
                        CliError::Usage(format!(
                            "{tp}: no broker left to take the replica of broker {gone}"
                        ))
                    })?;
                let mut target = replicas.clone();
                target[at] = to;
                *load.entry(to).or_default() += 1;
                *load.entry(gone).or_default() -= 1;
                moved.push((tp.clone(), target));
            }
        }
        Goal::SpreadTo(new) => {
            if !brokers.contains(&new) {
                return Err(CliError::Usage(format!(
                    "broker {new} is not in the cluster"
                )));
            }
            let total: usize = current.values().map(Vec::len).sum();
            let share = total / brokers.len().max(1);
            for (tp, replicas) in current {
                if load[&new] >= share {
                    break;
                }
                if replicas.contains(&new) {
                    continue;
                }
                // The most loaded of this partition's replicas gives its place up, if it
                // has more than its share.
                let Some((at, from)) = replicas
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, r)| (load[r], -**r))
                    .map(|(i, r)| (i, *r))
                else {
                    continue;
                };
                if load[&from] <= share {
                    continue;
                }
                let mut target = replicas.clone();
                target[at] = new;
                *load.entry(from).or_default() -= 1;
                *load.entry(new).or_default() += 1;
                moved.push((tp.clone(), target));
            }
        }
    }
    Ok(Plan {
        version: 1,
        partitions: moved
            .into_iter()
            .map(|(tp, replicas)| PlannedPartition {
                topic: tp.topic,
                partition: tp.partition.0,
                replicas,
            })
            .collect(),
    })
}

/// `--execute`: starts the plan's reassignments; a row per partition.
pub async fn execute(t: Arc<dyn Transport>, plan: &Plan) -> Result<Table, CliError> {
    let targets: Vec<(TopicPartition, Option<Vec<i32>>)> = plan
        .partitions
        .iter()
        .map(|p| {
            let tp = TopicPartition::new(p.topic.clone(), p.partition);
            (tp, Some(p.replicas.clone()))
        })
        .collect();
    outcome_table(
        Admin::new(t)
            .alter_partition_reassignments(&targets)
            .await?,
        "started",
    )
}

/// `--cancel`: cancels the plan's reassignments that are under way.
pub async fn cancel(t: Arc<dyn Transport>, plan: &Plan) -> Result<Table, CliError> {
    let targets: Vec<(TopicPartition, Option<Vec<i32>>)> = plan
        .partitions
        .iter()
        .map(|p| (TopicPartition::new(p.topic.clone(), p.partition), None))
        .collect();
    outcome_table(
        Admin::new(t)
            .alter_partition_reassignments(&targets)
            .await?,
        "cancelled",
    )
}

fn outcome_table(
    outcomes: Vec<(TopicPartition, Option<kafka_protocol::ResponseError>)>,
    done: &str,
) -> Result<Table, CliError> {
    let mut table = Table::new(&["topic", "partition", "result"]);
    for (tp, error) in outcomes {
        table.push(vec![
            tp.topic.clone(),
            tp.partition.0.to_string(),
            error.map_or(done.to_string(), |e| format!("{e:?}")),
        ]);
    }
    Ok(table)
}

/// `--verify`: each planned partition's state: `complete` (its replicas are the plan's and
/// nothing is under way), `in progress` (with what is still being added and removed), or
/// `not as planned`.
pub async fn verify(t: Arc<dyn Transport>, plan: &Plan) -> Result<Table, CliError> {
    let admin = Admin::new(t);
    let ongoing: BTreeMap<TopicPartition, _> = admin
        .list_partition_reassignments()
        .await?
        .into_iter()
        .map(|r| (r.partition.clone(), r))
        .collect();
    let current = assignments(&admin).await?;
    let mut table = Table::new(&["topic", "partition", "target", "replicas", "state"]);
    for p in &plan.partitions {
        let tp = TopicPartition::new(p.topic.clone(), p.partition);
        let replicas = current.get(&tp).cloned().unwrap_or_default();
        let state = match ongoing.get(&tp) {
            Some(r) => format!(
                "in progress (adding {:?}, removing {:?})",
                r.adding, r.removing
            ),
            None if replicas == p.replicas => "complete".to_string(),
            None => "not as planned".to_string(),
        };
        table.push(vec![
            p.topic.clone(),
            p.partition.to_string(),
            format!("{:?}", p.replicas),
            format!("{replicas:?}"),
            state,
        ]);
    }
    Ok(table)
}

/// `rill partitions list-reassignments`: what is under way.
pub async fn list(t: Arc<dyn Transport>) -> Result<Table, CliError> {
    let mut table = Table::new(&["topic", "partition", "replicas", "adding", "removing"]);
    for r in Admin::new(t).list_partition_reassignments().await? {
        table.push(vec![
            r.partition.topic.clone(),
            r.partition.partition.0.to_string(),
            format!("{:?}", r.replicas),
            format!("{:?}", r.adding),
            format!("{:?}", r.removing),
        ]);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(rows: &[(&str, i32, &[i32])]) -> BTreeMap<TopicPartition, Vec<i32>> {
        rows.iter()
            .map(|(t, p, r)| (TopicPartition::new(*t, *p), r.to_vec()))
            .collect()
    }

    #[test]
    fn a_drain_moves_every_replica_off_the_broker_to_the_least_loaded_others() {
        let current = assignment(&[
            ("t", 0, &[1, 2, 3]),
            ("t", 1, &[2, 3, 1]),
            ("t", 2, &[3, 1, 2]),
            ("u", 0, &[2, 3, 4]),
        ]);
        let plan = plan_for(Goal::Drain(1), &current, &[1, 2, 3, 4]).unwrap();
        let moves: Vec<(String, i32, Vec<i32>)> = plan
            .partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.replicas.clone()))
            .collect();
        // Broker 4 holds one replica, the others three: 4 takes all three of broker 1's.
        assert_eq!(
            moves,
            vec![
                ("t".to_string(), 0, vec![4, 2, 3]),
                ("t".to_string(), 1, vec![2, 3, 4]),
                ("t".to_string(), 2, vec![3, 4, 2]),
            ]
        );
        // With nowhere to go (RF 3 on 3 brokers), draining is refused.
        assert!(plan_for(Goal::Drain(1), &current, &[1, 2, 3]).is_err());
    }

    #[test]
    fn spreading_onto_a_new_broker_gives_it_a_fair_share() {
        let current = assignment(&[
            ("t", 0, &[1, 2, 3]),
            ("t", 1, &[2, 3, 1]),
            ("t", 2, &[3, 1, 2]),
            ("t", 3, &[1, 2, 3]),
        ]);
        let plan = plan_for(Goal::SpreadTo(4), &current, &[1, 2, 3, 4]).unwrap();
        // 12 replicas over 4 brokers: broker 4 gets 3, one from each of the others.
        assert_eq!(plan.partitions.len(), 3);
        let mut after = current.clone();
        for p in &plan.partitions {
            after.insert(
                TopicPartition::new(p.topic.clone(), p.partition),
                p.replicas.clone(),
            );
        }
        let mut load: BTreeMap<i32, usize> = BTreeMap::new();
        for rs in after.values() {
            assert_eq!(rs.iter().collect::<BTreeSet<_>>().len(), 3, "{rs:?}");
            for r in rs {
                *load.entry(*r).or_default() += 1;
            }
        }
        assert_eq!(load.values().copied().collect::<Vec<_>>(), vec![3, 3, 3, 3]);
    }

    #[test]
    fn plans_are_kafkas_json_and_bad_ones_are_refused() {
        let text = r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3,4]}]}"#;
        let plan = Plan::parse(text).unwrap();
        assert_eq!(plan.partitions[0].replicas, vec![2, 3, 4]);
        assert_eq!(serde_json::to_string(&plan).unwrap(), text);
        let twice = r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1]},{"topic":"t","partition":0,"replicas":[2]}]}"#;
        assert!(Plan::parse(twice).is_err());
        assert!(Plan::parse(r#"{"version":2,"partitions":[]}"#).is_err());
        assert!(Plan::parse(
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[]}]}"#
        )
        .is_err());
        assert!(Plan::parse("nonsense").is_err());
    }
}
