//! What the `rill` command does, as a library so it is tested like the rest: running a broker
//! process ([`broker`]), and the admin, produce and consume commands over the Kafka protocol
//! ([`commands`], [`transactions`]), printing human tables or JSON ([`output`]).

pub mod broker;
pub mod commands;
pub mod config;
pub mod output;
pub mod partitions;
pub mod transactions;

pub use config::NodeConfig;

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::storage::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("{}", describe_client_error(.0))]
    Client(#[from] crate::client::ClientError),
    #[error("{0}")]
    Usage(String),
}

/// Kafka error names in words people search for.
fn describe_client_error(e: &crate::client::ClientError) -> String {
    use kafka_protocol::ResponseError as R;
    match e.kafka_error() {
        Some(R::UnknownTopicOrPartition) => "unknown topic or partition".into(),
        Some(R::TopicAlreadyExists) => "the topic already exists".into(),
        Some(R::GroupIdNotFound) => "unknown group".into(),
        Some(R::NonEmptyGroup) => "the group has active members".into(),
        _ => e.to_string(),
    }
}
