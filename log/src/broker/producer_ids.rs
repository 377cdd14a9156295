//! Producer ids for InitProducerId: handed out from blocks of 1000 whose upper bound is
//! persisted (fsynced) in `<data dir>/metadata/producer-ids` before any id of the block is
//! given, so no id is ever handed out twice, even across crashes (a restart skips the rest of
//! the block, as Kafka's controller-allocated blocks do). In a cluster the blocks come from
//! the controller instead (committed in the metadata log), so ids are unique cluster-wide.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::BrokerError;

const BLOCK: i64 = 1000;
const FILE: &str = "producer-ids";

pub(crate) struct ProducerIds {
    path: PathBuf,
    next: i64,
    /// Ids below this are reserved on disk (or granted by the controller).
    reserved_until: i64,
    /// Ids taken but not handed out (an InitProducerId that did not need its spare id).
    returned: Vec<i64>,
    /// In a cluster, blocks come from the controller: [`add_block`](Self::add_block).
    clustered: bool,
}

impl std::fmt::Debug for ProducerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIds")
            .field("next", &self.next)
            .field("reserved_until", &self.reserved_until)
            .field("clustered", &self.clustered)
            .finish()
    }
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> Result<ProducerIds, BrokerError> {
        let dir = data_dir.join("metadata");
        let path = dir.join(FILE);
        let err = |reason: String| BrokerError::Metadata {
            path: path.clone(),
            reason,
        };
        fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let start = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| err(format!("not a producer id bound: {text:?}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(ProducerIds {
            path,
            next: start,
            reserved_until: start,
            returned: Vec::new(),
            clustered: false,
        })
    }

    /// From now on blocks come from the controller; the local block is dropped.
    pub fn use_controller(&mut self) {
        self.clustered = true;
        self.next = 0;
        self.reserved_until = 0;
        self.returned.clear();
    }

    pub fn clustered(&self) -> bool {
        self.clustered
    }

    /// A block the controller granted (`len` ids from `start`); what is left of the current
    /// one is dropped, as a restarted broker drops it.
    pub fn add_block(&mut self, start: i64, len: i64) {
        self.next = start;
        self.reserved_until = start + len;
    }

    /// An id taken with [`take`](Self::take) and not handed to anyone.
    pub fn give_back(&mut self, id: i64) {
        self.returned.push(id);
    }

    /// A fresh producer id; in a cluster `None` once the block is used up (the caller asks
    /// the controller for the next one without holding this, and adds it).
    pub fn take(&mut self) -> Result<Option<i64>, BrokerError> {
        if let Some(id) = self.returned.pop() {
            return Ok(Some(id));
        }
        if self.clustered {
            if self.next >= self.reserved_until {
                return Ok(None);
            }
            let id = self.next;
            self.next += 1;
            return Ok(Some(id));
        }
        if self.next >= self.reserved_until {
            let until = self.reserved_until + BLOCK;
            let tmp = self.path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(until.to_string().as_bytes())?;
                f.sync_all()?;
                fs::rename(&tmp, &self.path)?;
                if let Some(dir) = self.path.parent() {
                    fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            };
            write().map_err(|e| BrokerError::Metadata {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            self.reserved_until = until;
        }
        let id = self.next;
        self.next += 1;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standalone_broker_reserves_blocks_on_disk_and_never_repeats_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.take().unwrap().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        ids.give_back(1);
        assert_eq!(ids.take().unwrap(), Some(1));
        assert_eq!(ids.take().unwrap(), Some(3));
        // A restart skips the rest of the reserved block.
        let mut again = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(again.take().unwrap(), Some(BLOCK));
    }

    #[test]
    fn a_clustered_broker_hands_out_only_granted_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.take().unwrap(), Some(0));
        ids.use_controller();
        assert!(ids.clustered());
        assert_eq!(ids.take().unwrap(), None, "no block granted yet");
        ids.add_block(5_000, 2);
        assert_eq!(ids.take().unwrap(), Some(5_000));
        assert_eq!(ids.take().unwrap(), Some(5_001));
        assert_eq!(ids.take().unwrap(), None, "the block is used up");
        ids.give_back(5_001);
        assert_eq!(ids.take().unwrap(), Some(5_001));
    }
}
