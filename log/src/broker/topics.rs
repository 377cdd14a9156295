//! Topic metadata: each topic's name, id and partition count, persisted in
//! `<data dir>/metadata/topics.json` (replaced atomically) so topics survive a restart. Topic
//! configs live with the log manager (`topic-configs/`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::BrokerError;
use crate::storage::write_atomically;

const DIR: &str = "metadata";
const FILE: &str = "topics.json";

/// What the broker knows of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// The leader epoch of every partition (bumped on leadership changes, later).
    pub leader_epoch: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    topics: Vec<TopicMeta>,
}

/// The topics, by name, mirrored to disk on every change.
#[derive(Debug)]
pub(crate) struct TopicStore {
    dir: PathBuf,
    topics: BTreeMap<String, TopicMeta>,
}

impl TopicStore {
    pub fn open(data_dir: &Path) -> Result<TopicStore, BrokerError> {
        let dir = data_dir.join(DIR);
        let err = |reason: String| BrokerError::Metadata {
            path: dir.join(FILE),
            reason,
        };
        fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let topics = match fs::read(dir.join(FILE)) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
                if file.version != 1 {
                    return Err(err(format!("unknown version {}", file.version)));
                }
                file.topics
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(TopicStore { dir, topics })
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn all(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// Adds or replaces a topic and persists the store.
    pub fn put(&mut self, topic: TopicMeta) -> Result<(), BrokerError> {
        let old = self.topics.insert(topic.name.clone(), topic.clone());
        if let Err(e) = self.persist() {
            match old {
                Some(o) => self.topics.insert(o.name.clone(), o),
                None => self.topics.remove(&topic.name),
            };
            return Err(e);
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<Option<TopicMeta>, BrokerError> {
        let old = self.topics.remove(name);
        if let Err(e) = self.persist() {
            if let Some(o) = old {
                self.topics.insert(o.name.clone(), o);
            }
            return Err(e);
        }
        Ok(old)
    }

    fn persist(&self) -> Result<(), BrokerError> {
        let file = File {
            version: 1,
            topics: self.topics.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("topic metadata serializes");
        write_atomically(&self.dir, FILE, &bytes).map_err(|e| BrokerError::Metadata {
            path: self.dir.join(FILE),
            reason: e.to_string(),
        })
    }
}
