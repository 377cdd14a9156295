//! Typed identifiers shared by every layer of the log, so an offset is never confused with a
//! partition number or an epoch.

use std::fmt;

/// A position in a partition's log. Kafka offsets are signed 64-bit; `-1` means "none" on the
/// wire, which rill keeps as `Option<Offset>` instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

impl Offset {
    /// The offset right after this one.
    pub const fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// The raw value as it appears on the wire and on disk.
    pub const fn value(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition number within a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub i32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The epoch of a partition's leader, stamped into every batch the leader appends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// Kafka's "no epoch" value.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);
}

/// A broker's or controller's `node.id`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub i32);

impl NodeId {
    /// Kafka's "no node" (no leader, a consumer's replica id).
    pub const NONE: NodeId = NodeId(-1);
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A topic name and a partition of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: PartitionId,
}

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name `{0}` is `.` or `..`")]
    Dots(String),
    #[error("topic name is {0} characters long; the limit is {TOPIC_NAME_MAX_LEN}")]
    TooLong(usize),
    #[error("topic name `{0}` has a character outside [a-zA-Z0-9._-]")]
    BadCharacter(String),
}

/// Checks a topic name with Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.`/`..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots(name.to_string()));
    }
    if name.len() > TOPIC_NAME_MAX_LEN {
        return Err(TopicNameError::TooLong(name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(TopicNameError::BadCharacter(name.to_string()));
    }
    Ok(())
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition: PartitionId(partition),
        }
    }

    /// The directory name Kafka uses for this partition's log: `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition.0)
    }

    /// Parses a `<topic>-<partition>` directory name; `None` if it is not one.
    pub fn from_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        // Digits only: "+1" would parse, but it is not a name rill writes.
        if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let partition: i32 = partition.parse().ok()?;
        if validate_topic_name(topic).is_err() {
            return None;
        }
        Some(TopicPartition::new(topic, partition))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip_even_with_dashes_in_topic() {
        let tp = TopicPartition::new("my-topic.v2", 12);
        assert_eq!(tp.dir_name(), "my-topic.v2-12");
        assert_eq!(TopicPartition::from_dir_name("my-topic.v2-12"), Some(tp));
        assert_eq!(TopicPartition::from_dir_name("topic-configs"), None);
        assert_eq!(
            TopicPartition::from_dir_name("a--1"),
            Some(TopicPartition::new("a-", 1))
        );
        assert_eq!(TopicPartition::from_dir_name("a-+1"), None);
        assert_eq!(TopicPartition::from_dir_name("a-1.deleting"), None);
        assert_eq!(TopicPartition::from_dir_name("-3"), None);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders_2024.v1-x").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert!(matches!(
            validate_topic_name(".."),
            Err(TopicNameError::Dots(_))
        ));
        assert!(matches!(
            validate_topic_name("a/b"),
            Err(TopicNameError::BadCharacter(_))
        ));
        assert!(matches!(
            validate_topic_name(&"x".repeat(250)),
            Err(TopicNameError::TooLong(250))
        ));
    }
}
