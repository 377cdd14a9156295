//! The metadata log's state machine (openraft's `RaftStateMachine`): committed entries are
//! applied to the [`MetadataImage`], which is snapshotted to
//! `<data dir>/__cluster_metadata/snapshot.json` so the log before it can be purged and a
//! restarting or lagging controller catches up from it. The image is shared with the
//! controller's decisions and with the brokers that follow the log: they get the entries
//! applied since their offset from a bounded window of recent ones, or the whole image when
//! they are further behind (as a KRaft broker loads a snapshot).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Applied, LogEntry, LogId, MetadataRaft, StorageError};
use crate::controller::image::MetadataImage;
use crate::controller::records::MetadataRecord;
use crate::storage::write_atomically;

const SNAPSHOT_FILE: &str = "snapshot.json";

type Membership = StoredMembership<u64, openraft::BasicNode>;
type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// What a follower of the metadata log gets for its offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataDelta {
    /// The entries after its offset, in order (each with its offset).
    Entries(Vec<(u64, Vec<MetadataRecord>)>),
    /// It is too far behind: the whole image.
    Image(Box<MetadataImage>),
}

/// Entries applied after an offset (the floor), oldest first.
type Recent = (u64, VecDeque<(u64, Vec<MetadataRecord>)>);

/// The applied image and the recent entries, shared by the state machine, the controller's
/// decisions and the metadata it serves to brokers.
#[derive(Debug)]
pub struct SharedImage {
    image: RwLock<MetadataImage>,
    /// The entries applied after `floor`, oldest first, at most `window` of them.
    recent: Mutex<Recent>,
    window: usize,
    applied: watch::Sender<u64>,
}

impl SharedImage {
    fn new(image: MetadataImage, window: usize) -> Self {
        let offset = image.offset;
        SharedImage {
            image: RwLock::new(image),
            recent: Mutex::new((offset, VecDeque::new())),
            window: window.max(1),
            applied: watch::channel(offset).0,
        }
    }

    /// A copy of the image.
    pub fn image(&self) -> MetadataImage {
        crate::sync::read(&self.image).clone()
    }

    /// Runs `f` on the image without copying it.
    pub fn with_image<T>(&self, f: impl FnOnce(&MetadataImage) -> T) -> T {
        f(&crate::sync::read(&self.image))
    }

    pub fn offset(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Changes whenever an entry is applied or a snapshot installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// What a follower at `offset` is missing (empty entries when it is up to date).
    pub fn delta_since(&self, offset: u64) -> MetadataDelta {
        let recent = crate::sync::plain(&self.recent);
        let (floor, entries) = &*recent;
        if offset >= *floor {
            MetadataDelta::Entries(
                entries
                    .iter()
                    .filter(|(o, _)| *o > offset)
                    .cloned()
                    .collect(),
            )
        } else {
            MetadataDelta::Image(Box::new(self.image()))
        }
    }

    fn apply(&self, offset: u64, records: Vec<MetadataRecord>) {
        crate::sync::write(&self.image).apply(offset, &records);
        let mut recent = crate::sync::plain(&self.recent);
        recent.1.push_back((offset, records));
        while recent.1.len() > self.window {
            if let Some((o, _)) = recent.1.pop_front() {
                recent.0 = o;
            }
        }
        drop(recent);
        self.applied.send_replace(offset);
    }

    fn replace(&self, image: MetadataImage) {
        let offset = image.offset;
        *crate::sync::write(&self.image) = image;
        *crate::sync::plain(&self.recent) = (offset, VecDeque::new());
        self.applied.send_replace(offset);
    }
}

/// A snapshot as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    image: MetadataImage,
}

/// The state machine; openraft owns it, the rest of the controller reads [`SharedImage`].
#[derive(Debug)]
pub struct StateMachine {
    dir: PathBuf,
    shared: Arc<SharedImage>,
    last_applied: Option<LogId>,
    membership: Membership,
}

fn read_snapshot(dir: &Path) -> io::Result<Option<StoredSnapshot>> {
    match fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{SNAPSHOT_FILE}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the last snapshot if there is one;
    /// brokers more than `window` entries behind get the whole image.
    pub fn open(dir: &Path, window: usize) -> io::Result<StateMachine> {
        fs::create_dir_all(dir)?;
        let (image, last_applied, membership) = match read_snapshot(dir)? {
            Some(s) => (s.image, s.meta.last_log_id, s.meta.last_membership),
            None => (MetadataImage::default(), None, Membership::default()),
        };
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            shared: Arc::new(SharedImage::new(image, window)),
            last_applied,
            membership,
        })
    }

    pub fn shared(&self) -> Arc<SharedImage> {
        Arc::clone(&self.shared)
    }
}

/// Builds snapshots from a copy of the image taken when asked.
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: Membership,
}

impl RaftSnapshotBuilder<MetadataRaft> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetadataRaft>, StorageError> {
        let snapshot_id = self.last_applied.map_or("empty".to_string(), |l| {
            format!("{}-{}", l.leader_id.term, l.index)
        });
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image: std::mem::take(&mut self.image),
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let dir = self.dir.clone();
        crate::sync::off_the_workers(move || write_atomically(&dir, SNAPSHOT_FILE, &bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "metadata snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.image.encode())),
        })
    }
}

impl RaftStateMachine<MetadataRaft> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            let offset = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let records = match entry.payload {
                EntryPayload::Normal(batch) => batch.records,
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    self.membership = Membership::new(Some(entry.log_id), m);
                    Vec::new()
                }
            };
            self.shared.apply(offset, records);
            out.push(Applied { offset });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            image: self.shared.image(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let image = MetadataImage::decode(snapshot.get_ref()).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image,
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let dir = self.dir.clone();
        crate::sync::off_the_workers(move || write_atomically(&dir, SNAPSHOT_FILE, &bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.shared.replace(stored.image);
        tracing::info!(snapshot = %meta.snapshot_id, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MetadataRaft>>, StorageError> {
        let dir = self.dir.clone();
        let stored = crate::sync::off_the_workers(move || read_snapshot(&dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.image.encode())),
        }))
    }
}
