//! Rill's Kafka clients — `Producer`, `Consumer`, `Admin` — written once against a transport
//! (embedded: typed requests straight into the in-process `Broker`; TCP: the Kafka protocol).
//!
//! Today: the transport seam with its embedded transport, the `Admin` client, the `Producer`
//! (whose partitioner places keys exactly where Kafka's Java client does), the `Consumer` of
//! assigned partitions or of a group's subscription, the assignors, and typed configs built
//! from Kafka's property names.

pub mod admin;
pub mod assignor;
pub mod config;
pub mod consumer;
pub mod partitioner;
pub mod producer;
pub mod transport;

use kafka_protocol::messages::ResponseKind;

pub use admin::{
    Admin, GroupDescription, GroupListing, ListedOffset, LogDirDescription, MemberDescription,
    OffsetSpec, PartitionDescription, PartitionLag, PartitionReassignment, ProducerDescription,
    TransactionDescription, TransactionListing,
};
pub use assignor::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor, Subscription,
};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecord, IsolationLevel,
    ListenerFuture, OffsetReset, RebalanceListener,
};
pub use kafka_protocol::ResponseError;
pub use producer::{Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use transport::{EmbeddedTransport, Transport};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with a Kafka error code.
    #[error("{error:?}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        error: ResponseError,
        message: Option<String>,
    },
    #[error("the broker sent no response")]
    NoResponse,
    #[error("the broker answered with an unexpected response: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the client is closed")]
    Closed,
    /// The connection to a broker failed or returned something unreadable.
    #[error("network: {0}")]
    Network(String),
    #[error(transparent)]
    Config(#[from] crate::storage::ConfigError),
    /// The broker refused a batch for some of its records (KIP-467): its error
    /// (INVALID_RECORD, or INVALID_TIMESTAMP), and the records' indexes in the batch, each
    /// with its reason. Each of those records fails with that error and its reason; the others
    /// of the batch with [`ClientError::BatchRejected`].
    #[error("{}", message.clone().unwrap_or_else(|| format!("invalid records {records:?}")))]
    InvalidRecords {
        error: ResponseError,
        message: Option<String>,
        records: Vec<(u32, String)>,
    },
    /// The record was not written because other records of its batch were invalid (their
    /// indexes): it may be sent again.
    #[error("not written: records {0:?} of its batch were invalid")]
    BatchRejected(Vec<u32>),
}

impl ClientError {
    fn unexpected(r: &ResponseKind) -> Self {
        let text = format!("{r:?}");
        ClientError::Unexpected(text.chars().take(120).collect())
    }

    /// Whether trying again may succeed: a retriable Kafka error, or a network failure (the
    /// next attempt reconnects).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { error, .. } => error.is_retriable(),
            ClientError::Network(_) => true,
            _ => false,
        }
    }

    /// For a transactional producer: whether the producer can go on at all. Fatal errors
    /// (fenced by a newer instance with the same `transactional.id`, an unknown producer id
    /// mapping, no authorization) mean closing the producer; any other failure inside a
    /// transaction is abortable: abort the transaction and carry on.
    pub fn is_fatal_for_transactions(&self) -> bool {
        matches!(
            self.kafka_error(),
            Some(
                ResponseError::ProducerFenced
                    | ResponseError::InvalidProducerEpoch
                    | ResponseError::InvalidProducerIdMapping
                    | ResponseError::TransactionalIdAuthorizationFailed
                    | ResponseError::UnsupportedVersion
            )
        )
    }

    /// The Kafka error code, if the broker sent one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { error, .. } => Some(*error),
            ClientError::InvalidRecords { error, .. } => Some(*error),
            ClientError::BatchRejected(_) => Some(ResponseError::InvalidRecord),
            _ => None,
        }
    }
}

/// Turns a response's error code into a result.
pub(crate) fn check(code: i16, message: Option<&str>) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
    Err(ClientError::Kafka {
        error,
        message: message.map(str::to_string),
    })
}
