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

/// Asks the controller for the next block: its first id and length.
pub(crate) type BlockSource = Box<dyn FnMut() -> Result<(i64, i64), String> + Send>;

pub(crate) struct ProducerIds {
    path: PathBuf,
    next: i64,
    /// Ids below this are reserved on disk (or granted by the controller).
    reserved_until: i64,
    /// In a cluster: where blocks come from.
    controller: Option<BlockSource>,
}

impl std::fmt::Debug for ProducerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIds")
            .field("next", &self.next)
            .field("reserved_until", &self.reserved_until)
            .field("clustered", &self.controller.is_some())
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
            controller: None,
        })
    }

    /// From now on blocks come from `source` (the controller); the local block is dropped.
    pub fn use_controller(&mut self, source: BlockSource) {
        self.controller = Some(source);
        self.next = 0;
        self.reserved_until = 0;
    }

    /// A fresh producer id.
    pub fn next_id(&mut self) -> Result<i64, BrokerError> {
        if let Some(source) = self.controller.as_mut() {
            if self.next >= self.reserved_until {
                let (start, len) = source().map_err(BrokerError::Internal)?;
                self.next = start;
                self.reserved_until = start + len;
            }
            let id = self.next;
            self.next += 1;
            return Ok(id);
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
        Ok(id)
    }
}
