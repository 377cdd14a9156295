//! Where a new partition's replicas go: round robin over the usable brokers, ordered so
//! that consecutive brokers sit in different racks (`broker.rack`), starting each topic at
//! a different broker so leaderships spread. Kafka's rack-alternated list of its older
//! `AdminUtils` placement, which its striped placer refines; the guarantees are the same:
//! a partition's replicas are distinct brokers, on as many racks as there are (up to the
//! replication factor), and leaders (the first replica) rotate over the brokers.

use std::collections::BTreeMap;

use super::records::BrokerRegistration;
use crate::types::NodeId;

/// Why replicas could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {wanted} is larger than the {available} available brokers")]
    NotEnoughBrokers { wanted: usize, available: usize },
    #[error("replication factor must be at least 1, not {0}")]
    InvalidReplicationFactor(i32),
}

/// Brokers ordered so that racks alternate: the first broker of each rack, then the second
/// of each, and so on (brokers without a rack form one rack of their own).
fn rack_alternated(brokers: &[&BrokerRegistration]) -> Vec<NodeId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort();
    }
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| by_rack.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

/// Replicas for partitions `first..first + count` of a topic, `replication_factor` each;
/// `start` picks the broker of partition 0's leader (the caller varies it per topic).
pub fn place(
    brokers: &[&BrokerRegistration],
    first: i32,
    count: i32,
    replication_factor: i32,
    start: usize,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if replication_factor < 1 {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    }
    let rf = replication_factor as usize;
    let order = rack_alternated(brokers);
    let n = order.len();
    if rf > n {
        return Err(PlacementError::NotEnoughBrokers {
            wanted: rf,
            available: n,
        });
    }
    Ok((first..first + count)
        .map(|p| {
            let base = start + p as usize;
            (0..rf).map(|i| order[(base + i) % n]).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn broker(id: i32, rack: Option<&str>) -> BrokerRegistration {
        BrokerRegistration {
            id: NodeId(id),
            incarnation: Uuid::nil(),
            epoch: 1,
            host: "h".into(),
            port: 1,
            rack: rack.map(str::to_string),
            fenced: false,
            shutting_down: false,
        }
    }

    #[test]
    fn replicas_are_distinct_and_leaders_rotate() {
        let bs: Vec<_> = (1..=3).map(|i| broker(i, None)).collect();
        let refs: Vec<_> = bs.iter().collect();
        let placed = place(&refs, 0, 6, 3, 0).unwrap();
        for r in &placed {
            let mut sorted = r.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3);
        }
        let leaders: Vec<i32> = placed.iter().map(|r| r[0].0).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        assert_eq!(
            place(&refs, 0, 1, 4, 0),
            Err(PlacementError::NotEnoughBrokers {
                wanted: 4,
                available: 3
            })
        );
    }

    #[test]
    fn racks_alternate_so_two_replicas_never_share_a_rack_when_they_need_not() {
        let bs = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
        ];
        let refs: Vec<_> = bs.iter().collect();
        assert_eq!(
            rack_alternated(&refs),
            [NodeId(1), NodeId(3), NodeId(2), NodeId(4)]
        );
        for start in 0..4 {
            for r in place(&refs, 0, 8, 2, start).unwrap() {
                let racks: Vec<_> = r
                    .iter()
                    .map(|id| bs[(id.0 - 1) as usize].rack.clone())
                    .collect();
                assert_ne!(racks[0], racks[1], "{r:?}");
            }
        }
    }
}
