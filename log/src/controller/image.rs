//! The metadata image: the cluster as the metadata log describes it up to some offset
//! (Kafka's `MetadataImage`). Controllers keep one as their state machine and snapshot it;
//! brokers keep one by following the log and answer `Metadata` from it. Applying a record is
//! deterministic and total (a record about something unknown is ignored), so every replica
//! of the log builds the same image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{BrokerRegistration, MetadataRecord, PartitionRecord};
use crate::types::NodeId;

/// A topic in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: BTreeMap<i32, PartitionRecord>,
    /// Configuration overrides (the rest are the cluster's defaults).
    pub configs: BTreeMap<String, String>,
}

/// The cluster at metadata offset [`offset`](Self::offset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The offset of the last record applied (0: none yet; the log's offsets start at 1).
    pub offset: u64,
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    pub topics: BTreeMap<Uuid, TopicImage>,
    pub topic_ids: BTreeMap<String, Uuid>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
}

impl MetadataImage {
    /// Applies the records of the metadata log entry at `offset`, in order.
    pub fn apply(&mut self, offset: u64, records: &[MetadataRecord]) {
        debug_assert!(offset > self.offset || records.is_empty());
        for record in records {
            self.apply_one(offset, record);
        }
        self.offset = self.offset.max(offset);
    }

    fn apply_one(&mut self, offset: u64, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker(reg) => {
                let mut reg = reg.clone();
                reg.epoch = offset;
                self.brokers.insert(reg.id, reg);
            }
            MetadataRecord::FenceBroker { id, epoch, fenced } => {
                if let Some(b) = self.brokers.get_mut(id).filter(|b| b.epoch == *epoch) {
                    b.fenced = *fenced;
                }
            }
            MetadataRecord::ShutdownBroker { id, epoch } => {
                if let Some(b) = self.brokers.get_mut(id).filter(|b| b.epoch == *epoch) {
                    b.shutting_down = true;
                }
            }
            MetadataRecord::UnregisterBroker { id, epoch } => {
                if self.brokers.get(id).is_some_and(|b| b.epoch == *epoch) {
                    self.brokers.remove(id);
                }
            }
            MetadataRecord::Topic(t) => {
                if self.topic_ids.contains_key(&t.name) {
                    return;
                }
                self.topic_ids.insert(t.name.clone(), t.id);
                self.topics.insert(
                    t.id,
                    TopicImage {
                        name: t.name.clone(),
                        id: t.id,
                        ..TopicImage::default()
                    },
                );
            }
            MetadataRecord::TopicConfig { topic_id, configs } => {
                if let Some(t) = self.topics.get_mut(topic_id) {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::Partition(p) => {
                if let Some(t) = self.topics.get_mut(&p.topic_id) {
                    t.partitions.insert(p.partition, p.clone());
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(t) = self.topics.remove(id) {
                    self.topic_ids.remove(&t.name);
                }
            }
            MetadataRecord::ProducerIds { next, .. } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
        }
    }

    /// The image as it would be after `records`, its offset unchanged (a decision's later
    /// steps see its earlier ones). A registration keeps the epoch of the broker's committed
    /// one, if any, until its own record commits and gets its offset.
    pub fn preview(&self, records: &[MetadataRecord]) -> MetadataImage {
        let mut next = self.clone();
        for r in records {
            match r {
                MetadataRecord::RegisterBroker(reg) => {
                    let mut reg = reg.clone();
                    reg.epoch = self.brokers.get(&reg.id).map_or(0, |b| b.epoch);
                    next.brokers.insert(reg.id, reg);
                }
                other => next.apply_one(self.offset, other),
            }
        }
        next
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(self.topic_ids.get(name)?)
    }

    pub fn partition(&self, topic_id: Uuid, partition: i32) -> Option<&PartitionRecord> {
        self.topics.get(&topic_id)?.partitions.get(&partition)
    }

    /// A broker that may lead and join ISRs: registered, unfenced, not shutting down.
    pub fn is_usable(&self, id: NodeId) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.shutting_down)
    }

    /// The usable brokers, by id.
    pub fn usable_brokers(&self) -> Vec<&BrokerRegistration> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
            .collect()
    }

    /// Every partition, with its topic's name.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, &PartitionRecord)> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.values().map(move |p| (t.name.as_str(), p)))
    }

    /// The image as a snapshot's bytes (JSON: metadata is small, and an operator can read
    /// a snapshot file).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the image serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataImage, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::TopicRecord;

    fn broker(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker(BrokerRegistration {
            id: NodeId(id),
            incarnation: Uuid::from_u128(id as u128),
            epoch: 0,
            host: "localhost".into(),
            port: 9092 + id,
            rack: None,
            fenced: true,
            shutting_down: false,
        })
    }

    #[test]
    fn records_build_the_image_and_it_round_trips() {
        let mut image = MetadataImage::default();
        image.apply(1, &[broker(1), broker(2)]);
        assert_eq!(image.brokers[&NodeId(1)].epoch, 1);
        // A fence for an old epoch does nothing; for the current one it applies.
        image.apply(
            2,
            &[
                MetadataRecord::FenceBroker {
                    id: NodeId(1),
                    epoch: 0,
                    fenced: false,
                },
                MetadataRecord::FenceBroker {
                    id: NodeId(2),
                    epoch: 1,
                    fenced: false,
                },
            ],
        );
        assert!(image.brokers[&NodeId(1)].fenced);
        assert!(!image.brokers[&NodeId(2)].fenced);
        assert!(image.is_usable(NodeId(2)));
        let id = Uuid::from_u128(7);
        let partition = PartitionRecord {
            topic_id: id,
            partition: 0,
            replicas: vec![NodeId(2), NodeId(1)],
            isr: vec![NodeId(2)],
            elr: vec![],
            leader: NodeId(2),
            leader_epoch: 0,
            partition_epoch: 0,
            adding: vec![],
            removing: vec![],
        };
        image.apply(
            3,
            &[
                MetadataRecord::Topic(TopicRecord {
                    name: "t".into(),
                    id,
                }),
                MetadataRecord::Partition(partition.clone()),
                MetadataRecord::ProducerIds {
                    broker: NodeId(2),
                    next: 1000,
                },
            ],
        );
        assert_eq!(image.topic("t").unwrap().partitions[&0], partition);
        assert_eq!(image.next_producer_id, 1000);
        assert_eq!(image.offset, 3);
        assert_eq!(MetadataImage::decode(&image.encode()).unwrap(), image);
        image.apply(4, &[MetadataRecord::RemoveTopic { id }]);
        assert!(image.topic("t").is_none());
        assert!(image.partitions().next().is_none());
    }
}
