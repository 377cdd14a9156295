//! rill's assignor for streams applications (`rill-streams`): it assigns tasks — a
//! sub-topology over one partition number, with every source partition of that number — not
//! loose partitions, and it is
//!
//! - balanced: every member (stream thread) gets `tasks / members` tasks, or one more;
//! - sticky: a member keeps the tasks it ran, up to its share;
//! - state-aware: a task nobody keeps goes, if possible, to a member whose instance has local
//!   state for it (a checkpointed task directory, reported in the subscription's user data),
//!   so it restores only a changelog tail instead of everything;
//! - cooperative (KIP-429): a task still run by another member is withheld for one round;
//!   its owner gives it up, rejoins, and the next rebalance hands it over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rill_log::client::{Assignor, Subscription};
use rill_log::types::TopicPartition;

use crate::task::TaskId;

/// The assignor's protocol name.
pub const STREAMS_ASSIGNOR: &str = "rill-streams";
/// The user data's first line: its format version.
const USER_DATA_HEADER: &str = "rill-streams/1";

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct StreamsAssignor {
    /// Source topic -> sub-topology.
    sub_of: BTreeMap<String, usize>,
    /// This instance's `state.dir`, where tasks with local state are found.
    state_dir: Option<PathBuf>,
}

impl StreamsAssignor {
    pub fn new(sub_of: BTreeMap<String, usize>, state_dir: Option<PathBuf>) -> Self {
        StreamsAssignor { sub_of, state_dir }
    }

    /// Tasks whose directory under `state.dir` holds a store checkpoint.
    pub fn local_state(&self) -> BTreeSet<TaskId> {
        let Some(dir) = &self.state_dir else {
            return BTreeSet::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let id = parse_task(e.file_name().to_str()?)?;
                let checkpointed = std::fs::read_dir(e.path()).ok()?.flatten().any(|f| {
                    f.file_name()
                        .to_str()
                        .is_some_and(|n| n.ends_with(".checkpoint"))
                });
                checkpointed.then_some(id)
            })
            .collect()
    }

    fn task_of(&self, tp: &TopicPartition) -> Option<TaskId> {
        self.sub_of.get(&tp.topic).map(|s| (*s, tp.partition.0))
    }
}

/// `"<sub>_<partition>"`, the name of a task's directory.
fn parse_task(name: &str) -> Option<TaskId> {
    let (s, p) = name.split_once('_')?;
    Some((s.parse().ok()?, p.parse().ok()?))
}

/// Encodes the tasks with local state as the subscription's user data.
pub fn encode_user_data(local: &BTreeSet<TaskId>) -> Vec<u8> {
    let tasks: Vec<String> = local.iter().map(|(s, p)| format!("{s}_{p}")).collect();
    format!("{USER_DATA_HEADER}\n{}", tasks.join(",")).into_bytes()
}

/// The tasks with local state a member reported (nothing, for data of another format).
pub fn decode_user_data(data: &[u8]) -> BTreeSet<TaskId> {
    let Ok(text) = std::str::from_utf8(data) else {
        return BTreeSet::new();
    };
    match text.split_once('\n') {
        Some((USER_DATA_HEADER, tasks)) => tasks.split(',').filter_map(parse_task).collect(),
        _ => BTreeSet::new(),
    }
}

impl Assignor for StreamsAssignor {
    fn name(&self) -> &'static str {
        STREAMS_ASSIGNOR
    }

    fn cooperative(&self) -> bool {
        true
    }

    fn user_data(&self) -> Vec<u8> {
        encode_user_data(&self.local_state())
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
        // Every task: one per partition number of its sub-topology's widest source.
        let tasks: BTreeSet<TaskId> = partitions
            .iter()
            .filter_map(|(t, n)| self.sub_of.get(t).map(|s| (*s, *n)))
            .flat_map(|(s, n)| (0..n).map(move |p| (s, p)))
            .collect();
        let owned: BTreeMap<&String, BTreeSet<TaskId>> = members
            .iter()
            .map(|(id, sub)| {
                let tasks = sub.owned.iter().filter_map(|tp| self.task_of(tp)).collect();
                (id, tasks)
            })
            .collect();
        let local: BTreeMap<&String, BTreeSet<TaskId>> = members
            .iter()
            .map(|(id, sub)| (id, decode_user_data(&sub.user_data)))
            .collect();
        let (base, extra) = (tasks.len() / members.len(), tasks.len() % members.len());
        // The larger shares go to the members that ran the most, so the least moves.
        let mut order: Vec<&String> = members.keys().collect();
        order.sort_by_key(|id| (std::cmp::Reverse(owned[id].len()), (*id).clone()));
        let quota: BTreeMap<&String, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, base + usize::from(i < extra)))
            .collect();
        let mut plan: BTreeMap<&String, BTreeSet<TaskId>> =
            members.keys().map(|id| (id, BTreeSet::new())).collect();
        let mut placed: BTreeSet<TaskId> = BTreeSet::new();
        // Sticky: keep what was run, up to the share.
        for id in &order {
            for task in &owned[id] {
                if plan[id].len() < quota[id] && tasks.contains(task) && placed.insert(*task) {
                    plan.get_mut(id).expect("member").insert(*task);
                }
            }
        }
        // State-aware, then balanced: the least loaded member with room, preferring one with
        // local state for the task.
        for task in &tasks {
            if placed.contains(task) {
                continue;
            }
            let target = plan
                .iter()
                .filter(|(id, got)| got.len() < quota[*id])
                .min_by_key(|(id, got)| (!local[*id].contains(task), got.len(), *id))
                .map(|(id, _)| *id);
            if let Some(id) = target {
                plan.get_mut(id).expect("member").insert(*task);
                placed.insert(*task);
            }
        }
        // Cooperative: a task another member still runs waits for it to be given up.
        let runner: BTreeMap<TaskId, &String> = owned
            .iter()
            .flat_map(|(id, ts)| ts.iter().map(move |t| (*t, *id)))
            .collect();
        for (id, assigned) in plan {
            let mine = out.get_mut(id).expect("member");
            for task in assigned {
                if runner.get(&task).is_some_and(|r| *r != id) {
                    continue;
                }
                for (topic, n) in partitions {
                    if self.sub_of.get(topic) == Some(&task.0) && task.1 < *n {
                        mine.push(TopicPartition::new(topic.clone(), task.1));
                    }
                }
            }
            mine.sort();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignor() -> StreamsAssignor {
        // Sub-topology 0 reads a and b (co-partitioned), 1 reads c.
        let sub_of = [("a", 0), ("b", 0), ("c", 1)]
            .iter()
            .map(|(t, s)| (t.to_string(), *s))
            .collect();
        StreamsAssignor::new(sub_of, None)
    }

    fn member(owned: &[(&str, i32)], local: &[TaskId]) -> Subscription {
        Subscription {
            topics: vec!["a".into(), "b".into(), "c".into()],
            owned: owned
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
            user_data: encode_user_data(&local.iter().copied().collect()),
        }
    }

    fn counts() -> BTreeMap<String, i32> {
        [("a", 2), ("b", 2), ("c", 2)]
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect()
    }

    fn tasks(a: &StreamsAssignor, tps: &[TopicPartition]) -> BTreeSet<TaskId> {
        tps.iter().filter_map(|tp| a.task_of(tp)).collect()
    }

    #[test]
    fn tasks_move_whole_and_balanced() {
        let a = assignor();
        let members: BTreeMap<String, Subscription> =
            [("m1", member(&[], &[])), ("m2", member(&[], &[]))]
                .into_iter()
                .map(|(id, s)| (id.to_string(), s))
                .collect();
        let plan = a.assign(&members, &counts());
        // Four tasks, two each; a task's partitions of a and b stay together.
        for tps in plan.values() {
            assert_eq!(tasks(&a, tps).len(), 2);
            for tp in tps.iter().filter(|tp| tp.topic == "a") {
                assert!(tps.contains(&TopicPartition::new("b", tp.partition.0)));
            }
        }
        let all: BTreeSet<TaskId> = plan.values().flat_map(|t| tasks(&a, t)).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn owners_keep_their_tasks_and_local_state_attracts_new_ones() {
        let a = assignor();
        // m1 ran everything; m2 joins with local state for (1, 1).
        let members: BTreeMap<String, Subscription> = [
            (
                "m1",
                member(
                    &[("a", 0), ("b", 0), ("a", 1), ("b", 1), ("c", 0), ("c", 1)],
                    &[],
                ),
            ),
            ("m2", member(&[], &[(1, 1)])),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
        let plan = a.assign(&members, &counts());
        // m1 keeps two of its tasks; the two it gives up are withheld this round.
        assert_eq!(tasks(&a, &plan["m1"]).len(), 2);
        assert!(plan["m2"].is_empty());
        // Next round: m1 owns its two; m2 gets the other two, (1, 1) among them.
        let kept = plan["m1"].clone();
        let owned: Vec<(&str, i32)> = kept
            .iter()
            .map(|tp| (tp.topic.as_str(), tp.partition.0))
            .collect();
        let members: BTreeMap<String, Subscription> =
            [("m1", member(&owned, &[])), ("m2", member(&[], &[(1, 1)]))]
                .into_iter()
                .map(|(id, s)| (id.to_string(), s))
                .collect();
        let plan = a.assign(&members, &counts());
        assert_eq!(plan["m1"], kept);
        let m2 = tasks(&a, &plan["m2"]);
        assert_eq!(m2.len(), 2);
        assert!(m2.contains(&(1, 1)), "{m2:?}");
    }

    #[test]
    fn the_state_aware_choice_wins_over_ids() {
        let a = assignor();
        // Nobody owns anything; m2 has local state for (0, 0) and (0, 1).
        let members: BTreeMap<String, Subscription> = [
            ("m1", member(&[], &[])),
            ("m2", member(&[], &[(0, 0), (0, 1)])),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
        let plan = a.assign(&members, &counts());
        assert_eq!(
            tasks(&a, &plan["m2"]),
            [(0, 0), (0, 1)].into_iter().collect()
        );
        assert_eq!(
            tasks(&a, &plan["m1"]),
            [(1, 0), (1, 1)].into_iter().collect()
        );
    }

    #[test]
    fn user_data_round_trips_and_foreign_data_is_ignored() {
        let local: BTreeSet<TaskId> = [(0, 3), (2, 0)].into_iter().collect();
        assert_eq!(decode_user_data(&encode_user_data(&local)), local);
        assert!(decode_user_data(b"\xff\x00garbage").is_empty());
        assert!(decode_user_data(b"other/1\n0_1").is_empty());
    }

    #[test]
    fn local_state_is_read_from_checkpointed_task_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("0_1/counts")).unwrap();
        std::fs::write(dir.path().join("0_1/counts.checkpoint"), "5\n").unwrap();
        std::fs::create_dir_all(dir.path().join("0_2/counts")).unwrap();
        std::fs::create_dir_all(dir.path().join("not-a-task")).unwrap();
        let a = StreamsAssignor::new(BTreeMap::new(), Some(dir.path().to_path_buf()));
        assert_eq!(a.local_state(), [(0, 1)].into_iter().collect());
    }
}
