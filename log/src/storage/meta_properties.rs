//! `meta.properties` in a data directory (Kafka's file and format): the cluster the node's
//! data belongs to and the node's id, written once when the directory is formatted and
//! checked at every start, so a node never joins another cluster's quorum or serves another
//! node's data.

use std::fs;
use std::io;
use std::path::Path;

use super::log::write_atomically;

const FILE: &str = "meta.properties";

/// A data directory's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: String,
    pub node_id: i32,
}

/// Why a data directory's identity is refused.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0} is not formatted: give it a cluster id (`rill format --cluster-id ID` or `--cluster-id` on its first start)")]
    NotFormatted(String),
    #[error("{dir} belongs to cluster {found}, not {wanted}")]
    OtherCluster {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error("{dir} holds the data of node {found}, not node {wanted}")]
    OtherNode {
        dir: String,
        found: i32,
        wanted: i32,
    },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads `meta.properties` from `dir`, if it exists.
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaError> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let unreadable = |reason: &str| MetaError::Unreadable {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut cluster_id = None;
    let mut node_id = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| unreadable("a line without `=`"))?;
        match k.trim() {
            "cluster.id" => cluster_id = Some(v.trim().to_string()),
            "node.id" => node_id = Some(v.trim().parse().map_err(|_| unreadable("node.id"))?),
            "version" if v.trim() != "1" => return Err(unreadable("unknown version")),
            _ => {}
        }
    }
    Ok(Some(MetaProperties {
        cluster_id: cluster_id.ok_or_else(|| unreadable("no cluster.id"))?,
        node_id: node_id.ok_or_else(|| unreadable("no node.id"))?,
    }))
}

/// Writes `meta.properties` into `dir` (atomically).
pub fn write(dir: &Path, meta: &MetaProperties) -> Result<(), MetaError> {
    fs::create_dir_all(dir)?;
    let text = format!(
        "#\n# written by rill format\nversion=1\ncluster.id={}\nnode.id={}\n",
        meta.cluster_id, meta.node_id
    );
    write_atomically(dir, FILE, text.as_bytes())?;
    Ok(())
}

/// The identity of `dir` for node `node_id`: checked against `cluster_id` when one is
/// given, and written from it when the directory is not formatted yet.
pub fn ensure(
    dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> Result<MetaProperties, MetaError> {
    let shown = dir.display().to_string();
    match read(dir)? {
        Some(meta) => {
            if meta.node_id != node_id {
                return Err(MetaError::OtherNode {
                    dir: shown,
                    found: meta.node_id,
                    wanted: node_id,
                });
            }
            if let Some(wanted) = cluster_id.filter(|c| *c != meta.cluster_id) {
                return Err(MetaError::OtherCluster {
                    dir: shown,
                    found: meta.cluster_id,
                    wanted: wanted.to_string(),
                });
            }
            Ok(meta)
        }
        None => {
            let cluster_id = cluster_id.ok_or(MetaError::NotFormatted(shown))?;
            let meta = MetaProperties {
                cluster_id: cluster_id.to_string(),
                node_id,
            };
            write(dir, &meta)?;
            Ok(meta)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_once_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ensure(dir.path(), 1, None),
            Err(MetaError::NotFormatted(_))
        ));
        let meta = ensure(dir.path(), 1, Some("c1")).unwrap();
        assert_eq!(meta.cluster_id, "c1");
        assert_eq!(ensure(dir.path(), 1, None).unwrap(), meta);
        assert!(matches!(
            ensure(dir.path(), 1, Some("c2")),
            Err(MetaError::OtherCluster { .. })
        ));
        assert!(matches!(
            ensure(dir.path(), 2, Some("c1")),
            Err(MetaError::OtherNode { .. })
        ));
    }
}
