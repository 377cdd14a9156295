//! The request schemas of the APIs rill decodes, from Kafka's message definitions, matching the
//! decoders of `kafka-protocol` 0.18 field for field and version for version.
//!
//! Each line is one field, in wire order, with its versions as Kafka's definitions give them
//! (within an API's version range, exactly the versions in which `kafka-protocol` reads it) and
//! its name in the comment. Struct types are named consts above the API that uses them.
//! Strings, bytes and arrays take their compact forms in flexible versions on their own: the
//! walker switches at `flexible_from`. Nullable fields need no mark: the walker takes null
//! wherever a length may be.

use super::schema::{api, f, tagged, Field, Schema, Ty, MAX};

// ApiVersions (18)
const API_VERSIONS: &[Field] = &[
    f(3, MAX, Ty::String), // client_software_name
    f(3, MAX, Ty::String), // client_software_version
];

// Metadata (3)
const METADATA_TOPIC: &[Field] = &[
    f(10, MAX, Ty::Uuid),  // topic_id
    f(0, MAX, Ty::String), // name (nullable from 10)
];
const METADATA: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(METADATA_TOPIC))), // topics (nullable from 1)
    f(4, MAX, Ty::Bool),                               // allow_auto_topic_creation
    f(8, 10, Ty::Bool),                                // include_cluster_authorized_operations
    f(8, MAX, Ty::Bool),                               // include_topic_authorized_operations
];

// Produce (0)
const PRODUCE_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),   // index
    f(0, MAX, Ty::Records), // records
];
const PRODUCE_TOPIC: &[Field] = &[
    f(0, 12, Ty::String),                                 // name
    f(13, MAX, Ty::Uuid),                                 // topic_id
    f(0, MAX, Ty::Array(&Ty::Struct(PRODUCE_PARTITION))), // partition_data
];
const PRODUCE: &[Field] = &[
    f(3, MAX, Ty::String),                            // transactional_id
    f(0, MAX, Ty::Int16),                             // acks
    f(0, MAX, Ty::Int32),                             // timeout_ms
    f(0, MAX, Ty::Array(&Ty::Struct(PRODUCE_TOPIC))), // topic_data
];

// Fetch (1)
const FETCH_REPLICA_STATE: &[Field] = &[
    f(15, MAX, Ty::Int32), // replica_id
    f(15, MAX, Ty::Int64), // replica_epoch
];
const FETCH_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),          // partition
    f(9, MAX, Ty::Int32),          // current_leader_epoch
    f(0, MAX, Ty::Int64),          // fetch_offset
    f(12, MAX, Ty::Int32),         // last_fetched_epoch
    f(5, MAX, Ty::Int64),          // log_start_offset
    f(0, MAX, Ty::Int32),          // partition_max_bytes
    tagged(0, 17, MAX, Ty::Uuid),  // replica_directory_id
    tagged(1, 18, MAX, Ty::Int64), // high_watermark
];
const FETCH_TOPIC: &[Field] = &[
    f(0, 12, Ty::String),                               // topic
    f(13, MAX, Ty::Uuid),                               // topic_id
    f(0, MAX, Ty::Array(&Ty::Struct(FETCH_PARTITION))), // partitions
];
const FETCH_FORGOTTEN_TOPIC: &[Field] = &[
    f(7, 12, Ty::String),             // topic
    f(13, MAX, Ty::Uuid),             // topic_id
    f(7, MAX, Ty::Array(&Ty::Int32)), // partitions
];
const FETCH: &[Field] = &[
    tagged(0, 12, MAX, Ty::String), // cluster_id (nullable)
    f(0, 14, Ty::Int32),            // replica_id
    tagged(1, 15, MAX, Ty::Struct(FETCH_REPLICA_STATE)), // replica_state
    f(0, MAX, Ty::Int32),           // max_wait_ms
    f(0, MAX, Ty::Int32),           // min_bytes
    f(3, MAX, Ty::Int32),           // max_bytes
    f(4, MAX, Ty::Int8),            // isolation_level
    f(7, MAX, Ty::Int32),           // session_id
    f(7, MAX, Ty::Int32),           // session_epoch
    f(0, MAX, Ty::Array(&Ty::Struct(FETCH_TOPIC))), // topics
    f(7, MAX, Ty::Array(&Ty::Struct(FETCH_FORGOTTEN_TOPIC))), // forgotten_topics_data
    f(11, MAX, Ty::String),         // rack_id
];

// ListOffsets (2)
const LIST_OFFSETS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(4, MAX, Ty::Int32), // current_leader_epoch
    f(0, MAX, Ty::Int64), // timestamp
];
const LIST_OFFSETS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                     // name
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_OFFSETS_PARTITION))), // partitions
];
const LIST_OFFSETS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                  // replica_id
    f(2, MAX, Ty::Int8),                                   // isolation_level
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_OFFSETS_TOPIC))), // topics
    f(10, MAX, Ty::Int32),                                 // timeout_ms
];

// FindCoordinator (10)
const FIND_COORDINATOR: &[Field] = &[
    f(0, 3, Ty::String),               // key
    f(1, MAX, Ty::Int8),               // key_type
    f(4, MAX, Ty::Array(&Ty::String)), // coordinator_keys
];

// JoinGroup (11)
const JOIN_GROUP_PROTOCOL: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(0, MAX, Ty::Bytes),  // metadata
];
const JOIN_GROUP: &[Field] = &[
    f(0, MAX, Ty::String),                                  // group_id
    f(0, MAX, Ty::Int32),                                   // session_timeout_ms
    f(1, MAX, Ty::Int32),                                   // rebalance_timeout_ms
    f(0, MAX, Ty::String),                                  // member_id
    f(5, MAX, Ty::String),                                  // group_instance_id
    f(0, MAX, Ty::String),                                  // protocol_type
    f(0, MAX, Ty::Array(&Ty::Struct(JOIN_GROUP_PROTOCOL))), // protocols
    f(8, MAX, Ty::String),                                  // reason
];

// SyncGroup (14)
const SYNC_GROUP_ASSIGNMENT: &[Field] = &[
    f(0, MAX, Ty::String), // member_id
    f(0, MAX, Ty::Bytes),  // assignment
];
const SYNC_GROUP: &[Field] = &[
    f(0, MAX, Ty::String),                                    // group_id
    f(0, MAX, Ty::Int32),                                     // generation_id
    f(0, MAX, Ty::String),                                    // member_id
    f(3, MAX, Ty::String),                                    // group_instance_id
    f(5, MAX, Ty::String),                                    // protocol_type
    f(5, MAX, Ty::String),                                    // protocol_name
    f(0, MAX, Ty::Array(&Ty::Struct(SYNC_GROUP_ASSIGNMENT))), // assignments
];

// Heartbeat (12)
const HEARTBEAT: &[Field] = &[
    f(0, MAX, Ty::String), // group_id
    f(0, MAX, Ty::Int32),  // generation_id
    f(0, MAX, Ty::String), // member_id
    f(3, MAX, Ty::String), // group_instance_id
];

// LeaveGroup (13)
const LEAVE_GROUP_MEMBER: &[Field] = &[
    f(3, MAX, Ty::String), // member_id
    f(3, MAX, Ty::String), // group_instance_id
    f(5, MAX, Ty::String), // reason
];
const LEAVE_GROUP: &[Field] = &[
    f(0, MAX, Ty::String),                                 // group_id
    f(0, 2, Ty::String),                                   // member_id
    f(3, MAX, Ty::Array(&Ty::Struct(LEAVE_GROUP_MEMBER))), // members
];

// OffsetCommit (8)
const OFFSET_COMMIT_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),  // partition_index
    f(0, MAX, Ty::Int64),  // committed_offset
    f(6, MAX, Ty::Int32),  // committed_leader_epoch
    f(0, MAX, Ty::String), // committed_metadata
];
const OFFSET_COMMIT_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                      // name
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_COMMIT_PARTITION))), // partitions
];
const OFFSET_COMMIT: &[Field] = &[
    f(0, MAX, Ty::String),                                  // group_id
    f(1, MAX, Ty::Int32),                                   // generation_id_or_member_epoch
    f(1, MAX, Ty::String),                                  // member_id
    f(7, MAX, Ty::String),                                  // group_instance_id
    f(2, 4, Ty::Int64),                                     // retention_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_COMMIT_TOPIC))), // topics
];

// OffsetFetch (9)
const OFFSET_FETCH_TOPIC: &[Field] = &[
    f(0, 7, Ty::String),            // name
    f(0, 7, Ty::Array(&Ty::Int32)), // partition_indexes
];
const OFFSET_FETCH_GROUP_TOPIC: &[Field] = &[
    f(8, MAX, Ty::String),            // name
    f(8, MAX, Ty::Array(&Ty::Int32)), // partition_indexes
];
const OFFSET_FETCH_GROUP: &[Field] = &[
    f(8, MAX, Ty::String),                                       // group_id
    f(9, MAX, Ty::String),                                       // member_id
    f(9, MAX, Ty::Int32),                                        // member_epoch
    f(8, MAX, Ty::Array(&Ty::Struct(OFFSET_FETCH_GROUP_TOPIC))), // topics (nullable)
];
const OFFSET_FETCH: &[Field] = &[
    f(0, 7, Ty::String),                                   // group_id
    f(0, 7, Ty::Array(&Ty::Struct(OFFSET_FETCH_TOPIC))),   // topics (nullable from 2)
    f(8, MAX, Ty::Array(&Ty::Struct(OFFSET_FETCH_GROUP))), // groups
    f(7, MAX, Ty::Bool),                                   // require_stable
];

// DescribeGroups (15)
const DESCRIBE_GROUPS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::String)), // groups
    f(3, MAX, Ty::Bool),               // include_authorized_operations
];

// ListGroups (16)
const LIST_GROUPS: &[Field] = &[
    f(4, MAX, Ty::Array(&Ty::String)), // states_filter
    f(5, MAX, Ty::Array(&Ty::String)), // types_filter
];

// DeleteGroups (42)
const DELETE_GROUPS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::String)), // groups_names
];

// CreateTopics (19)
const CREATE_TOPICS_ASSIGNMENT: &[Field] = &[
    f(0, MAX, Ty::Int32),             // partition_index
    f(0, MAX, Ty::Array(&Ty::Int32)), // broker_ids
];
const CREATE_TOPICS_CONFIG: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(0, MAX, Ty::String), // value (nullable)
];
const CREATE_TOPICS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                       // name
    f(0, MAX, Ty::Int32),                                        // num_partitions
    f(0, MAX, Ty::Int16),                                        // replication_factor
    f(0, MAX, Ty::Array(&Ty::Struct(CREATE_TOPICS_ASSIGNMENT))), // assignments
    f(0, MAX, Ty::Array(&Ty::Struct(CREATE_TOPICS_CONFIG))),     // configs
];
const CREATE_TOPICS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(CREATE_TOPICS_TOPIC))), // topics
    f(0, MAX, Ty::Int32),                                   // timeout_ms
    f(1, MAX, Ty::Bool),                                    // validate_only
];

// DeleteTopics (20)
const DELETE_TOPICS_TOPIC: &[Field] = &[
    f(6, MAX, Ty::String), // name (nullable)
    f(6, MAX, Ty::Uuid),   // topic_id
];
const DELETE_TOPICS: &[Field] = &[
    f(6, MAX, Ty::Array(&Ty::Struct(DELETE_TOPICS_TOPIC))), // topics
    f(0, 5, Ty::Array(&Ty::String)),                        // topic_names
    f(0, MAX, Ty::Int32),                                   // timeout_ms
];

// CreatePartitions (37)
const CREATE_PARTITIONS_ASSIGNMENT: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Int32)), // broker_ids
];
const CREATE_PARTITIONS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                           // name
    f(0, MAX, Ty::Int32),                                            // count
    f(0, MAX, Ty::Array(&Ty::Struct(CREATE_PARTITIONS_ASSIGNMENT))), // assignments (nullable)
];
const CREATE_PARTITIONS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(CREATE_PARTITIONS_TOPIC))), // topics
    f(0, MAX, Ty::Int32),                                       // timeout_ms
    f(0, MAX, Ty::Bool),                                        // validate_only
];

// DeleteRecords (21)
const DELETE_RECORDS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int64), // offset
];
const DELETE_RECORDS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                       // name
    f(0, MAX, Ty::Array(&Ty::Struct(DELETE_RECORDS_PARTITION))), // partitions
];
const DELETE_RECORDS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(DELETE_RECORDS_TOPIC))), // topics
    f(0, MAX, Ty::Int32),                                    // timeout_ms
];

// DescribeConfigs (32)
const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[
    f(0, MAX, Ty::Int8),               // resource_type
    f(0, MAX, Ty::String),             // resource_name
    f(0, MAX, Ty::Array(&Ty::String)), // configuration_keys (nullable)
];
const DESCRIBE_CONFIGS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_CONFIGS_RESOURCE))), // resources
    f(1, MAX, Ty::Bool),                                          // include_synonyms
    f(3, MAX, Ty::Bool),                                          // include_documentation
];

// IncrementalAlterConfigs (44)
const ALTERABLE_CONFIG: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(0, MAX, Ty::Int8),   // config_operation
    f(0, MAX, Ty::String), // value (nullable)
];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[
    f(0, MAX, Ty::Int8),                                 // resource_type
    f(0, MAX, Ty::String),                               // resource_name
    f(0, MAX, Ty::Array(&Ty::Struct(ALTERABLE_CONFIG))), // configs
];
const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(ALTER_CONFIGS_RESOURCE))), // resources
    f(0, MAX, Ty::Bool),                                       // validate_only
];

// AlterConfigs (33)
const LEGACY_ALTERABLE_CONFIG: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(0, MAX, Ty::String), // value (nullable)
];
const LEGACY_ALTER_CONFIGS_RESOURCE: &[Field] = &[
    f(0, MAX, Ty::Int8),                                        // resource_type
    f(0, MAX, Ty::String),                                      // resource_name
    f(0, MAX, Ty::Array(&Ty::Struct(LEGACY_ALTERABLE_CONFIG))), // configs
];
const ALTER_CONFIGS: &[Field] = &[
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(LEGACY_ALTER_CONFIGS_RESOURCE)),
    ), // resources
    f(0, MAX, Ty::Bool), // validate_only
];

// DescribeCluster (60)
const DESCRIBE_CLUSTER: &[Field] = &[
    f(0, MAX, Ty::Bool), // include_cluster_authorized_operations
    f(1, MAX, Ty::Int8), // endpoint_type
    f(2, MAX, Ty::Bool), // include_fenced_brokers
];

// OffsetForLeaderEpoch (23)
const OFFSET_FOR_LEADER_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition
    f(2, MAX, Ty::Int32), // current_leader_epoch
    f(0, MAX, Ty::Int32), // leader_epoch
];
const OFFSET_FOR_LEADER_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                          // topic
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_FOR_LEADER_PARTITION))), // partitions
];
const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    f(3, MAX, Ty::Int32),                                       // replica_id
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_FOR_LEADER_TOPIC))), // topics
];

// InitProducerId (22)
const INIT_PRODUCER_ID: &[Field] = &[
    f(0, MAX, Ty::String), // transactional_id (nullable)
    f(0, MAX, Ty::Int32),  // transaction_timeout_ms
    f(3, MAX, Ty::Int64),  // producer_id
    f(3, MAX, Ty::Int16),  // producer_epoch
];

// AddPartitionsToTxn (24)
const ADD_PARTITIONS_TO_TXN_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),            // name
    f(0, MAX, Ty::Array(&Ty::Int32)), // partitions
];
const ADD_PARTITIONS_TO_TXN_TRANSACTION: &[Field] = &[
    f(4, MAX, Ty::String), // transactional_id
    f(4, MAX, Ty::Int64),  // producer_id
    f(4, MAX, Ty::Int16),  // producer_epoch
    f(4, MAX, Ty::Bool),   // verify_only
    f(4, MAX, Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_TOPIC))), // topics
];
const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    f(
        4,
        MAX,
        Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_TRANSACTION)),
    ), // transactions
    f(0, 3, Ty::String), // v3_and_below_transactional_id
    f(0, 3, Ty::Int64),  // v3_and_below_producer_id
    f(0, 3, Ty::Int16),  // v3_and_below_producer_epoch
    f(0, 3, Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_TOPIC))), // v3_and_below_topics
];

// AddOffsetsToTxn (25)
const ADD_OFFSETS_TO_TXN: &[Field] = &[
    f(0, MAX, Ty::String), // transactional_id
    f(0, MAX, Ty::Int64),  // producer_id
    f(0, MAX, Ty::Int16),  // producer_epoch
    f(0, MAX, Ty::String), // group_id
];

// EndTxn (26)
const END_TXN: &[Field] = &[
    f(0, MAX, Ty::String), // transactional_id
    f(0, MAX, Ty::Int64),  // producer_id
    f(0, MAX, Ty::Int16),  // producer_epoch
    f(0, MAX, Ty::Bool),   // committed
];

// TxnOffsetCommit (28)
const TXN_OFFSET_COMMIT_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),  // partition_index
    f(0, MAX, Ty::Int64),  // committed_offset
    f(2, MAX, Ty::Int32),  // committed_leader_epoch
    f(0, MAX, Ty::String), // committed_metadata (nullable)
];
const TXN_OFFSET_COMMIT_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                          // name
    f(0, MAX, Ty::Array(&Ty::Struct(TXN_OFFSET_COMMIT_PARTITION))), // partitions
];
const TXN_OFFSET_COMMIT: &[Field] = &[
    f(0, MAX, Ty::String),                                      // transactional_id
    f(0, MAX, Ty::String),                                      // group_id
    f(0, MAX, Ty::Int64),                                       // producer_id
    f(0, MAX, Ty::Int16),                                       // producer_epoch
    f(3, MAX, Ty::Int32),                                       // generation_id
    f(3, MAX, Ty::String),                                      // member_id
    f(3, MAX, Ty::String),                                      // group_instance_id (nullable)
    f(0, MAX, Ty::Array(&Ty::Struct(TXN_OFFSET_COMMIT_TOPIC))), // topics
];

// OffsetDelete (47)
const OFFSET_DELETE_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
];
const OFFSET_DELETE_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                      // name
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_DELETE_PARTITION))), // partitions
];
const OFFSET_DELETE: &[Field] = &[
    f(0, MAX, Ty::String),                                  // group_id
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_DELETE_TOPIC))), // topics
];

// WriteTxnMarkers (27)
const WRITE_TXN_MARKERS_TOPIC: &[Field] = &[
    f(1, MAX, Ty::String),            // name
    f(1, MAX, Ty::Array(&Ty::Int32)), // partition_indexes
];
const WRITE_TXN_MARKERS_MARKER: &[Field] = &[
    f(1, MAX, Ty::Int64),                                       // producer_id
    f(1, MAX, Ty::Int16),                                       // producer_epoch
    f(1, MAX, Ty::Bool),                                        // transaction_result
    f(1, MAX, Ty::Array(&Ty::Struct(WRITE_TXN_MARKERS_TOPIC))), // topics
    f(1, MAX, Ty::Int32),                                       // coordinator_epoch
];
const WRITE_TXN_MARKERS: &[Field] = &[
    f(1, MAX, Ty::Array(&Ty::Struct(WRITE_TXN_MARKERS_MARKER))), // markers
];

// AlterPartitionReassignments (45)
const ALTER_REASSIGNMENTS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),             // partition_index
    f(0, MAX, Ty::Array(&Ty::Int32)), // replicas (nullable)
];
const ALTER_REASSIGNMENTS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(ALTER_REASSIGNMENTS_PARTITION)),
    ), // partitions
];
const ALTER_REASSIGNMENTS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                         // timeout_ms
    f(1, MAX, Ty::Bool),                                          // allow_replication_factor_change
    f(0, MAX, Ty::Array(&Ty::Struct(ALTER_REASSIGNMENTS_TOPIC))), // topics
];

// ListPartitionReassignments (46)
const LIST_REASSIGNMENTS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),            // name
    f(0, MAX, Ty::Array(&Ty::Int32)), // partition_indexes
];
const LIST_REASSIGNMENTS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                        // timeout_ms
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_REASSIGNMENTS_TOPIC))), // topics (nullable)
];

// UnregisterBroker (64)
const UNREGISTER_BROKER: &[Field] = &[
    f(0, MAX, Ty::Int32), // broker_id
];

// DescribeLogDirs (35)
const DESCRIBE_LOG_DIRS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),            // topic
    f(0, MAX, Ty::Array(&Ty::Int32)), // partitions
];
const DESCRIBE_LOG_DIRS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_LOG_DIRS_TOPIC))), // topics (nullable)
];

// ElectLeaders (43)
const ELECT_LEADERS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),            // topic
    f(0, MAX, Ty::Array(&Ty::Int32)), // partitions
];
const ELECT_LEADERS: &[Field] = &[
    f(1, MAX, Ty::Int8),                                    // election_type
    f(0, MAX, Ty::Array(&Ty::Struct(ELECT_LEADERS_TOPIC))), // topic_partitions (nullable)
    f(0, MAX, Ty::Int32),                                   // timeout_ms
];

// DescribeProducers (61)
const DESCRIBE_PRODUCERS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),            // name
    f(0, MAX, Ty::Array(&Ty::Int32)), // partition_indexes
];
const DESCRIBE_PRODUCERS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_PRODUCERS_TOPIC))), // topics
];

// DescribeTransactions (65)
const DESCRIBE_TRANSACTIONS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::String)), // transactional_ids
];

// ListTransactions (66)
const LIST_TRANSACTIONS: &[Field] = &[
    f(0, MAX, Ty::Array(&Ty::String)), // state_filters
    f(0, MAX, Ty::Array(&Ty::Int64)),  // producer_id_filters
    f(1, MAX, Ty::Int64),              // duration_filter
    f(2, MAX, Ty::String),             // transactional_id_pattern (nullable)
];

/// Every request rill decodes: (api key, name, versions `kafka-protocol` 0.18 decodes, first
/// flexible version, fields).
pub(crate) static REQUESTS: &[Schema] = &[
    api(0, "Produce", (3, 13), 9, PRODUCE),
    api(1, "Fetch", (4, 18), 12, FETCH),
    api(2, "ListOffsets", (1, 10), 6, LIST_OFFSETS),
    api(3, "Metadata", (0, 13), 9, METADATA),
    api(8, "OffsetCommit", (2, 9), 8, OFFSET_COMMIT),
    api(9, "OffsetFetch", (1, 9), 6, OFFSET_FETCH),
    api(10, "FindCoordinator", (0, 6), 3, FIND_COORDINATOR),
    api(11, "JoinGroup", (0, 9), 6, JOIN_GROUP),
    api(12, "Heartbeat", (0, 4), 4, HEARTBEAT),
    api(13, "LeaveGroup", (0, 5), 4, LEAVE_GROUP),
    api(14, "SyncGroup", (0, 5), 4, SYNC_GROUP),
    api(15, "DescribeGroups", (0, 6), 5, DESCRIBE_GROUPS),
    api(16, "ListGroups", (0, 5), 3, LIST_GROUPS),
    api(18, "ApiVersions", (0, 4), 3, API_VERSIONS),
    api(19, "CreateTopics", (2, 7), 5, CREATE_TOPICS),
    api(20, "DeleteTopics", (1, 6), 4, DELETE_TOPICS),
    api(21, "DeleteRecords", (0, 2), 2, DELETE_RECORDS),
    api(22, "InitProducerId", (0, 5), 2, INIT_PRODUCER_ID),
    api(
        23,
        "OffsetForLeaderEpoch",
        (2, 4),
        4,
        OFFSET_FOR_LEADER_EPOCH,
    ),
    api(24, "AddPartitionsToTxn", (0, 5), 3, ADD_PARTITIONS_TO_TXN),
    api(25, "AddOffsetsToTxn", (0, 4), 3, ADD_OFFSETS_TO_TXN),
    api(26, "EndTxn", (0, 5), 3, END_TXN),
    api(28, "TxnOffsetCommit", (0, 5), 3, TXN_OFFSET_COMMIT),
    api(32, "DescribeConfigs", (1, 4), 4, DESCRIBE_CONFIGS),
    api(33, "AlterConfigs", (0, 2), 2, ALTER_CONFIGS),
    api(37, "CreatePartitions", (0, 3), 2, CREATE_PARTITIONS),
    api(42, "DeleteGroups", (0, 2), 2, DELETE_GROUPS),
    api(
        44,
        "IncrementalAlterConfigs",
        (0, 1),
        1,
        INCREMENTAL_ALTER_CONFIGS,
    ),
    api(60, "DescribeCluster", (0, 2), 0, DESCRIBE_CLUSTER),
    api(27, "WriteTxnMarkers", (1, 1), 1, WRITE_TXN_MARKERS),
    api(47, "OffsetDelete", (0, 0), 1, OFFSET_DELETE),
    api(43, "ElectLeaders", (0, 2), 2, ELECT_LEADERS),
    api(35, "DescribeLogDirs", (1, 4), 2, DESCRIBE_LOG_DIRS),
    api(
        45,
        "AlterPartitionReassignments",
        (0, 1),
        0,
        ALTER_REASSIGNMENTS,
    ),
    api(
        46,
        "ListPartitionReassignments",
        (0, 0),
        0,
        LIST_REASSIGNMENTS,
    ),
    api(64, "UnregisterBroker", (0, 0), 0, UNREGISTER_BROKER),
    api(61, "DescribeProducers", (0, 0), 0, DESCRIBE_PRODUCERS),
    api(65, "DescribeTransactions", (0, 0), 0, DESCRIBE_TRANSACTIONS),
    api(66, "ListTransactions", (0, 2), 0, LIST_TRANSACTIONS),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::schema::walk_exact as walk;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{
        add_offsets_to_txn_request::AddOffsetsToTxnRequest,
        add_partitions_to_txn_request::{
            AddPartitionsToTxnRequest, AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
        },
        alter_configs_request::{self, AlterConfigsRequest},
        api_versions_request::ApiVersionsRequest,
        create_partitions_request::{
            CreatePartitionsAssignment, CreatePartitionsRequest, CreatePartitionsTopic,
        },
        create_topics_request::{
            CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
        },
        delete_groups_request::DeleteGroupsRequest,
        delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
        },
        delete_topics_request::{DeleteTopicState, DeleteTopicsRequest},
        describe_cluster_request::DescribeClusterRequest,
        describe_configs_request::{DescribeConfigsRequest, DescribeConfigsResource},
        describe_groups_request::DescribeGroupsRequest,
        end_txn_request::EndTxnRequest,
        fetch_request::{FetchPartition, FetchRequest, FetchTopic, ForgottenTopic, ReplicaState},
        find_coordinator_request::FindCoordinatorRequest,
        heartbeat_request::HeartbeatRequest,
        incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
        },
        init_producer_id_request::InitProducerIdRequest,
        join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol},
        leave_group_request::{LeaveGroupRequest, MemberIdentity},
        list_groups_request::ListGroupsRequest,
        list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic},
        metadata_request::{MetadataRequest, MetadataRequestTopic},
        offset_commit_request::{
            OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        },
        offset_fetch_request::{
            OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic,
            OffsetFetchRequestTopics,
        },
        offset_for_leader_epoch_request::{
            OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
        },
        produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
        sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment},
        txn_offset_commit_request::{
            TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
        },
        AlterPartitionReassignmentsRequest, BrokerId, DescribeLogDirsRequest,
        DescribeProducersRequest, DescribeTransactionsRequest, ElectLeadersRequest, GroupId,
        ListPartitionReassignmentsRequest, ListTransactionsRequest, OffsetDeleteRequest,
        ProducerId, TopicName, TransactionalId, UnregisterBrokerRequest, WriteTxnMarkersRequest,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
    use uuid::Uuid;

    fn s(x: &'static str) -> StrBytes {
        StrBytes::from_static_str(x)
    }
    fn topic(x: &'static str) -> TopicName {
        TopicName(s(x))
    }
    fn group(x: &'static str) -> GroupId {
        GroupId(s(x))
    }
    fn txn(x: &'static str) -> TransactionalId {
        TransactionalId(s(x))
    }
    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n * 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)
    }
    fn brokers() -> Vec<BrokerId> {
        vec![BrokerId(1001), BrokerId(1002)]
    }
    /// `x` in versions that have the field, its default (what the encoder accepts) in others.
    fn when<T>(present: bool, x: T, default: T) -> T {
        if present {
            x
        } else {
            default
        }
    }

    // One populated request per API, every array with two elements (nested ones too), every
    // string non-empty and every optional field set, in the versions that have them.

    fn api_versions(_v: i16) -> ApiVersionsRequest {
        ApiVersionsRequest::default()
            .with_client_software_name(s("rill-test"))
            .with_client_software_version(s("1.0"))
    }

    fn metadata(v: i16) -> MetadataRequest {
        let t = |n, id| {
            MetadataRequestTopic::default()
                .with_topic_id(uuid(id))
                .with_name(Some(topic(n)))
        };
        MetadataRequest::default()
            .with_topics(Some(vec![t("a", 1), t("bb", 2)]))
            .with_allow_auto_topic_creation(v < 4)
            .with_include_cluster_authorized_operations((8..=10).contains(&v))
            .with_include_topic_authorized_operations(v >= 8)
    }

    fn produce(_v: i16) -> ProduceRequest {
        let p = |i, r: &'static [u8]| {
            PartitionProduceData::default()
                .with_index(i)
                .with_records(Some(Bytes::from_static(r)))
        };
        let t = |n, id| {
            TopicProduceData::default()
                .with_name(topic(n))
                .with_topic_id(uuid(id))
                .with_partition_data(vec![p(0, b"records"), p(7, b"more records")])
        };
        ProduceRequest::default()
            .with_transactional_id(Some(txn("tx")))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![t("a", 1), t("bb", 2)])
    }

    fn fetch(v: i16) -> FetchRequest {
        let p = |i| {
            FetchPartition::default()
                .with_partition(i)
                .with_current_leader_epoch(3)
                .with_fetch_offset(1 << 40)
                .with_last_fetched_epoch(when(v >= 12, 2, -1))
                .with_log_start_offset(5)
                .with_partition_max_bytes(1 << 20)
                .with_replica_directory_id(uuid(9))
                .with_high_watermark(77)
        };
        let t = |n, id| {
            FetchTopic::default()
                .with_topic(topic(n))
                .with_topic_id(uuid(id))
                .with_partitions(vec![p(0), p(1)])
        };
        let forgotten = |n, id| {
            ForgottenTopic::default()
                .with_topic(topic(n))
                .with_topic_id(uuid(id))
                .with_partitions(vec![4, 5])
        };
        let mut req = FetchRequest::default()
            .with_cluster_id(Some(s("cluster")))
            .with_replica_id(BrokerId(when(v <= 14, 3, -1)))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 24)
            .with_isolation_level(1)
            .with_session_id(when(v >= 7, 11, 0))
            .with_session_epoch(when(v >= 7, 12, -1))
            .with_topics(vec![t("a", 1), t("bb", 2)])
            .with_rack_id(s("rack"));
        if v >= 7 {
            req = req.with_forgotten_topics_data(vec![forgotten("c", 3), forgotten("dd", 4)]);
        }
        if v >= 15 {
            req = req.with_replica_state(
                ReplicaState::default()
                    .with_replica_id(BrokerId(3))
                    .with_replica_epoch(4),
            );
        }
        req
    }

    fn list_offsets(v: i16) -> ListOffsetsRequest {
        let p = |i| {
            ListOffsetsPartition::default()
                .with_partition_index(i)
                .with_current_leader_epoch(2)
                .with_timestamp(-2)
        };
        let t = |n| {
            ListOffsetsTopic::default()
                .with_name(topic(n))
                .with_partitions(vec![p(0), p(1)])
        };
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(when(v >= 2, 1, 0))
            .with_topics(vec![t("a"), t("bb")])
            .with_timeout_ms(1000)
    }

    fn find_coordinator(v: i16) -> FindCoordinatorRequest {
        FindCoordinatorRequest::default()
            .with_key(when(v <= 3, s("group"), s("")))
            .with_key_type(when(v >= 1, 1, 0))
            .with_coordinator_keys(when(v >= 4, vec![s("g1"), s("g22")], vec![]))
    }

    fn join_group(v: i16) -> JoinGroupRequest {
        let p = |n, m: &'static [u8]| {
            JoinGroupRequestProtocol::default()
                .with_name(s(n))
                .with_metadata(Bytes::from_static(m))
        };
        JoinGroupRequest::default()
            .with_group_id(group("group"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(20_000)
            .with_member_id(s("member"))
            .with_group_instance_id(when(v >= 5, Some(s("instance")), None))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![p("range", b"meta"), p("roundrobin", b"more meta")])
            .with_reason(Some(s("reason")))
    }

    fn sync_group(v: i16) -> SyncGroupRequest {
        let a = |m, x: &'static [u8]| {
            SyncGroupRequestAssignment::default()
                .with_member_id(s(m))
                .with_assignment(Bytes::from_static(x))
        };
        SyncGroupRequest::default()
            .with_group_id(group("group"))
            .with_generation_id(3)
            .with_member_id(s("member"))
            .with_group_instance_id(when(v >= 3, Some(s("instance")), None))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![a("m1", b"assignment"), a("m22", b"another")])
    }

    fn heartbeat(v: i16) -> HeartbeatRequest {
        HeartbeatRequest::default()
            .with_group_id(group("group"))
            .with_generation_id(3)
            .with_member_id(s("member"))
            .with_group_instance_id(when(v >= 3, Some(s("instance")), None))
    }

    fn leave_group(v: i16) -> LeaveGroupRequest {
        let m = |id, inst| {
            MemberIdentity::default()
                .with_member_id(s(id))
                .with_group_instance_id(Some(s(inst)))
                .with_reason(Some(s("leaving")))
        };
        LeaveGroupRequest::default()
            .with_group_id(group("group"))
            .with_member_id(when(v <= 2, s("member"), s("")))
            .with_members(when(v >= 3, vec![m("m1", "i1"), m("m22", "i22")], vec![]))
    }

    fn offset_commit(v: i16) -> OffsetCommitRequest {
        let p = |i| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(i)
                .with_committed_offset(1 << 33)
                .with_committed_leader_epoch(4)
                .with_committed_metadata(Some(s("metadata")))
        };
        let t = |n| {
            OffsetCommitRequestTopic::default()
                .with_name(topic(n))
                .with_partitions(vec![p(0), p(1)])
        };
        OffsetCommitRequest::default()
            .with_group_id(group("group"))
            .with_generation_id_or_member_epoch(5)
            .with_member_id(s("member"))
            .with_group_instance_id(when(v >= 7, Some(s("instance")), None))
            .with_retention_time_ms(60_000)
            .with_topics(vec![t("a"), t("bb")])
    }

    fn offset_fetch(v: i16) -> OffsetFetchRequest {
        let t = |n| {
            OffsetFetchRequestTopic::default()
                .with_name(topic(n))
                .with_partition_indexes(vec![0, 1])
        };
        let gt = |n| {
            OffsetFetchRequestTopics::default()
                .with_name(topic(n))
                .with_partition_indexes(vec![2, 3])
        };
        let g = |id| {
            OffsetFetchRequestGroup::default()
                .with_group_id(group(id))
                .with_member_id(Some(s("member")))
                .with_member_epoch(6)
                .with_topics(Some(vec![gt("a"), gt("bb")]))
        };
        if v <= 7 {
            OffsetFetchRequest::default()
                .with_group_id(group("group"))
                .with_topics(Some(vec![t("a"), t("bb")]))
                .with_require_stable(v >= 7)
        } else {
            OffsetFetchRequest::default()
                .with_groups(vec![g("g1"), g("g22")])
                .with_require_stable(true)
        }
    }

    fn describe_groups(v: i16) -> DescribeGroupsRequest {
        DescribeGroupsRequest::default()
            .with_groups(vec![group("g1"), group("g22")])
            .with_include_authorized_operations(v >= 3)
    }

    fn list_groups(v: i16) -> ListGroupsRequest {
        ListGroupsRequest::default()
            .with_states_filter(when(v >= 4, vec![s("Stable"), s("Empty")], vec![]))
            .with_types_filter(when(v >= 5, vec![s("classic"), s("consumer")], vec![]))
    }

    fn delete_groups(_v: i16) -> DeleteGroupsRequest {
        DeleteGroupsRequest::default().with_groups_names(vec![group("g1"), group("g22")])
    }

    fn create_topics(_v: i16) -> CreateTopicsRequest {
        let a = |i| {
            CreatableReplicaAssignment::default()
                .with_partition_index(i)
                .with_broker_ids(brokers())
        };
        let c = |n, x| {
            CreatableTopicConfig::default()
                .with_name(s(n))
                .with_value(Some(s(x)))
        };
        let t = |n| {
            CreatableTopic::default()
                .with_name(topic(n))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![a(0), a(1)])
                .with_configs(vec![c("cleanup.policy", "compact"), c("retention.ms", "1")])
        };
        CreateTopicsRequest::default()
            .with_topics(vec![t("a"), t("bb")])
            .with_timeout_ms(5000)
            .with_validate_only(true)
    }

    fn delete_topics(v: i16) -> DeleteTopicsRequest {
        let t = |n, id| {
            DeleteTopicState::default()
                .with_name(Some(topic(n)))
                .with_topic_id(uuid(id))
        };
        DeleteTopicsRequest::default()
            .with_topics(when(v >= 6, vec![t("a", 1), t("bb", 2)], vec![]))
            .with_topic_names(when(v <= 5, vec![topic("a"), topic("bb")], vec![]))
            .with_timeout_ms(5000)
    }

    fn create_partitions(_v: i16) -> CreatePartitionsRequest {
        let a = || CreatePartitionsAssignment::default().with_broker_ids(brokers());
        let t = |n| {
            CreatePartitionsTopic::default()
                .with_name(topic(n))
                .with_count(4)
                .with_assignments(Some(vec![a(), a()]))
        };
        CreatePartitionsRequest::default()
            .with_topics(vec![t("a"), t("bb")])
            .with_timeout_ms(5000)
            .with_validate_only(true)
    }

    fn delete_records(_v: i16) -> DeleteRecordsRequest {
        let p = |i| {
            DeleteRecordsPartition::default()
                .with_partition_index(i)
                .with_offset(1 << 35)
        };
        let t = |n| {
            DeleteRecordsTopic::default()
                .with_name(topic(n))
                .with_partitions(vec![p(0), p(1)])
        };
        DeleteRecordsRequest::default()
            .with_topics(vec![t("a"), t("bb")])
            .with_timeout_ms(5000)
    }

    fn describe_configs(v: i16) -> DescribeConfigsRequest {
        let r = |ty, n| {
            DescribeConfigsResource::default()
                .with_resource_type(ty)
                .with_resource_name(s(n))
                .with_configuration_keys(Some(vec![s("retention.ms"), s("segment.bytes")]))
        };
        DescribeConfigsRequest::default()
            .with_resources(vec![r(2, "a"), r(4, "1")])
            .with_include_synonyms(true)
            .with_include_documentation(v >= 3)
    }

    fn alter_configs(_v: i16) -> AlterConfigsRequest {
        let c = |n, x: Option<&'static str>| {
            alter_configs_request::AlterableConfig::default()
                .with_name(s(n))
                .with_value(x.map(s))
        };
        let r = |ty, n| {
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(ty)
                .with_resource_name(s(n))
                .with_configs(vec![c("retention.ms", Some("1000")), c("x", None)])
        };
        AlterConfigsRequest::default()
            .with_resources(vec![r(2, "a"), r(4, "")])
            .with_validate_only(true)
    }

    fn incremental_alter_configs(_v: i16) -> IncrementalAlterConfigsRequest {
        let c = |n, op, x| {
            AlterableConfig::default()
                .with_name(s(n))
                .with_config_operation(op)
                .with_value(Some(s(x)))
        };
        let r = |ty, n| {
            AlterConfigsResource::default()
                .with_resource_type(ty)
                .with_resource_name(s(n))
                .with_configs(vec![
                    c("retention.ms", 0, "1000"),
                    c("cleanup.policy", 2, "x"),
                ])
        };
        IncrementalAlterConfigsRequest::default()
            .with_resources(vec![r(2, "a"), r(4, "1")])
            .with_validate_only(true)
    }

    fn describe_cluster(v: i16) -> DescribeClusterRequest {
        DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(true)
            .with_endpoint_type(when(v >= 1, 2, 1))
            .with_include_fenced_brokers(v >= 2)
    }

    fn offset_for_leader_epoch(_v: i16) -> OffsetForLeaderEpochRequest {
        let p = |i| {
            OffsetForLeaderPartition::default()
                .with_partition(i)
                .with_current_leader_epoch(7)
                .with_leader_epoch(6)
        };
        let t = |n| {
            OffsetForLeaderTopic::default()
                .with_topic(topic(n))
                .with_partitions(vec![p(0), p(1)])
        };
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(2))
            .with_topics(vec![t("a"), t("bb")])
    }

    fn init_producer_id(v: i16) -> InitProducerIdRequest {
        InitProducerIdRequest::default()
            .with_transactional_id(Some(txn("tx")))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(when(v >= 3, 1 << 40, -1)))
            .with_producer_epoch(when(v >= 3, 3, -1))
    }

    fn add_partitions_to_txn(v: i16) -> AddPartitionsToTxnRequest {
        let t = |n| {
            AddPartitionsToTxnTopic::default()
                .with_name(topic(n))
                .with_partitions(vec![0, 1])
        };
        let x = |id| {
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(txn(id))
                .with_producer_id(ProducerId(1 << 40))
                .with_producer_epoch(3)
                .with_verify_only(true)
                .with_topics(vec![t("a"), t("bb")])
        };
        if v >= 4 {
            AddPartitionsToTxnRequest::default().with_transactions(vec![x("tx1"), x("tx22")])
        } else {
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(txn("tx"))
                .with_v3_and_below_producer_id(ProducerId(1 << 40))
                .with_v3_and_below_producer_epoch(3)
                .with_v3_and_below_topics(vec![t("a"), t("bb")])
        }
    }

    fn add_offsets_to_txn(_v: i16) -> AddOffsetsToTxnRequest {
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn("tx"))
            .with_producer_id(ProducerId(1 << 40))
            .with_producer_epoch(3)
            .with_group_id(group("group"))
    }

    fn offset_delete(_v: i16) -> OffsetDeleteRequest {
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        let topic = |n: &'static str| {
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(n)))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                    OffsetDeleteRequestPartition::default().with_partition_index(7),
                ])
        };
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("group-one")))
            .with_topics(vec![topic("orders-topic"), topic("b")])
    }

    fn write_txn_markers(_v: i16) -> WriteTxnMarkersRequest {
        use kafka_protocol::messages::write_txn_markers_request::{
            WritableTxnMarker, WritableTxnMarkerTopic,
        };
        let marker = |pid| {
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(2)
                .with_transaction_result(true)
                .with_coordinator_epoch(9)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders-topic")))
                    .with_partition_indexes(vec![0, 3])])
        };
        WriteTxnMarkersRequest::default().with_markers(vec![marker(1), marker(1 << 40)])
    }

    fn alter_reassignments(v: i16) -> AlterPartitionReassignmentsRequest {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_allow_replication_factor_change(v < 1)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(topic("orders-topic"))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(brokers())),
                    ReassignablePartition::default().with_partition_index(3),
                ])])
    }

    fn list_reassignments(_v: i16) -> ListPartitionReassignmentsRequest {
        use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
        ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                .with_name(topic("orders-topic"))
                .with_partition_indexes(vec![0, 4])]))
    }

    fn unregister_broker(_v: i16) -> UnregisterBrokerRequest {
        UnregisterBrokerRequest::default().with_broker_id(BrokerId(7))
    }

    fn describe_log_dirs(_v: i16) -> DescribeLogDirsRequest {
        use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
        DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(topic("orders-topic"))
                .with_partitions(vec![0, 1, 5]),
            DescribableLogDirTopic::default().with_topic(topic("b")),
        ]))
    }

    fn elect_leaders(v: i16) -> ElectLeadersRequest {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        ElectLeadersRequest::default()
            .with_election_type(when(v >= 1, 1, 0))
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(topic("orders-topic"))
                    .with_partitions(vec![0, 2]),
                TopicPartitions::default().with_topic(topic("b")),
            ]))
            .with_timeout_ms(30_000)
    }

    fn describe_producers(_v: i16) -> DescribeProducersRequest {
        use kafka_protocol::messages::describe_producers_request::TopicRequest;
        DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("a")))
                .with_partition_indexes(vec![0, 1]),
            TopicRequest::default().with_name(TopicName(StrBytes::from_static_str("b"))),
        ])
    }

    fn describe_transactions(_v: i16) -> DescribeTransactionsRequest {
        DescribeTransactionsRequest::default().with_transactional_ids(vec![txn("a"), txn("bb")])
    }

    fn list_transactions(v: i16) -> ListTransactionsRequest {
        ListTransactionsRequest::default()
            .with_state_filters(vec![
                StrBytes::from_static_str("Ongoing"),
                StrBytes::from_static_str("PrepareAbort"),
            ])
            .with_producer_id_filters(vec![ProducerId(5), ProducerId(1 << 40)])
            .with_duration_filter(when(v >= 1, 60_000, -1))
            .with_transactional_id_pattern(if v >= 2 {
                Some(StrBytes::from_static_str("tx-.*"))
            } else {
                None
            })
    }

    fn end_txn(_v: i16) -> EndTxnRequest {
        EndTxnRequest::default()
            .with_transactional_id(txn("tx"))
            .with_producer_id(ProducerId(1 << 40))
            .with_producer_epoch(3)
            .with_committed(true)
    }

    fn txn_offset_commit(v: i16) -> TxnOffsetCommitRequest {
        let p = |i| {
            TxnOffsetCommitRequestPartition::default()
                .with_partition_index(i)
                .with_committed_offset(1 << 33)
                .with_committed_leader_epoch(4)
                .with_committed_metadata(Some(s("metadata")))
        };
        let t = |n| {
            TxnOffsetCommitRequestTopic::default()
                .with_name(topic(n))
                .with_partitions(vec![p(0), p(1)])
        };
        TxnOffsetCommitRequest::default()
            .with_transactional_id(txn("tx"))
            .with_group_id(group("group"))
            .with_producer_id(ProducerId(1 << 40))
            .with_producer_epoch(3)
            .with_generation_id(when(v >= 3, 5, -1))
            .with_member_id(when(v >= 3, s("member"), s("")))
            .with_group_instance_id(when(v >= 3, Some(s("instance")), None))
            .with_topics(vec![t("a"), t("bb")])
    }

    /// One API as `kafka-protocol` knows it, with a populated request for each version.
    struct Case {
        api_key: i16,
        versions: (i16, i16),
        /// Whether a version is flexible (takes request header v2).
        flexible: fn(i16) -> bool,
        populated: Box<dyn Fn(i16) -> Vec<u8>>,
        default: fn(i16) -> Vec<u8>,
        decodes: fn(i16, &[u8]) -> bool,
    }

    fn encode<T: Encodable>(req: &T, v: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        req.encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("{} v{v}: {e}", std::any::type_name::<T>()));
        buf.to_vec()
    }

    fn case<T>(api_key: i16, build: fn(i16) -> T) -> Case
    where
        T: Encodable + Decodable + Message + HeaderVersion + Default + 'static,
    {
        Case {
            api_key,
            versions: (T::VERSIONS.min, T::VERSIONS.max),
            flexible: |v| T::header_version(v) >= 2,
            populated: Box::new(move |v| encode(&build(v), v)),
            default: |v| encode(&T::default(), v),
            decodes: |v, body| {
                let mut b = Bytes::copy_from_slice(body);
                T::decode(&mut b, v).is_ok() && b.is_empty()
            },
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            case(0, produce),
            case(1, fetch),
            case(2, list_offsets),
            case(3, metadata),
            case(8, offset_commit),
            case(9, offset_fetch),
            case(10, find_coordinator),
            case(11, join_group),
            case(12, heartbeat),
            case(13, leave_group),
            case(14, sync_group),
            case(15, describe_groups),
            case(16, list_groups),
            case(18, api_versions),
            case(19, create_topics),
            case(20, delete_topics),
            case(21, delete_records),
            case(22, init_producer_id),
            case(23, offset_for_leader_epoch),
            case(24, add_partitions_to_txn),
            case(25, add_offsets_to_txn),
            case(26, end_txn),
            case(28, txn_offset_commit),
            case(32, describe_configs),
            case(33, alter_configs),
            case(37, create_partitions),
            case(42, delete_groups),
            case(44, incremental_alter_configs),
            case(60, describe_cluster),
            case(27, write_txn_markers),
            case(47, offset_delete),
            case(43, elect_leaders),
            case(35, describe_log_dirs),
            case(45, alter_reassignments),
            case(46, list_reassignments),
            case(64, unregister_broker),
            case(61, describe_producers),
            case(65, describe_transactions),
            case(66, list_transactions),
        ]
    }

    fn schema_of(api_key: i16) -> &'static Schema {
        let mut found = REQUESTS.iter().filter(|s| s.api_key == api_key);
        let schema = found
            .next()
            .unwrap_or_else(|| panic!("no schema for api {api_key}"));
        assert!(found.next().is_none(), "two schemas for api {api_key}");
        schema
    }

    fn versions(c: &Case) -> std::ops::RangeInclusive<i16> {
        c.versions.0..=c.versions.1
    }

    #[test]
    fn the_tables_cover_what_kafka_protocol_decodes() {
        let cases = cases();
        assert_eq!(REQUESTS.len(), cases.len());
        for c in &cases {
            let schema = schema_of(c.api_key);
            assert_eq!(schema.versions, c.versions, "{}", schema.name);
            for v in versions(c) {
                assert_eq!(
                    v >= schema.flexible_from,
                    (c.flexible)(v),
                    "{} v{v}: flexible",
                    schema.name
                );
            }
        }
    }

    #[test]
    fn populated_and_default_requests_walk_at_every_version() {
        for c in cases() {
            let schema = schema_of(c.api_key);
            for v in versions(&c) {
                for (what, body) in [("populated", (c.populated)(v)), ("default", (c.default)(v))] {
                    let at = format!("{} v{v} {what}", schema.name);
                    assert!(
                        (c.decodes)(v, &body),
                        "{at}: kafka-protocol does not decode it"
                    );
                    assert_eq!(walk(schema, v, &body, 1 << 20), Ok(()), "{at}");
                    if !body.is_empty() {
                        let short = &body[..body.len() - 1];
                        assert!(walk(schema, v, short, 1 << 20).is_err(), "{at}: truncated");
                    }
                    let mut long = body.clone();
                    long.push(0);
                    assert!(
                        walk(schema, v, &long, 1 << 20).is_err(),
                        "{at}: a byte more"
                    );
                }
            }
        }
    }

    /// Random requests generated from each table decode whole and encode back to the same
    /// bytes, and the tags the walk skips are unknown to the decoder too (see
    /// [`crate::net::schema::check`]).
    #[test]
    fn the_tables_match_kafka_protocols_decoders() {
        use crate::net::schema::check::{against_decoder, round_trip, RoundTrip};
        let decoders: Vec<(i16, RoundTrip)> = vec![
            (0, round_trip::<ProduceRequest>),
            (1, round_trip::<FetchRequest>),
            (2, round_trip::<ListOffsetsRequest>),
            (3, round_trip::<MetadataRequest>),
            (8, round_trip::<OffsetCommitRequest>),
            (9, round_trip::<OffsetFetchRequest>),
            (10, round_trip::<FindCoordinatorRequest>),
            (11, round_trip::<JoinGroupRequest>),
            (12, round_trip::<HeartbeatRequest>),
            (13, round_trip::<LeaveGroupRequest>),
            (14, round_trip::<SyncGroupRequest>),
            (15, round_trip::<DescribeGroupsRequest>),
            (16, round_trip::<ListGroupsRequest>),
            (18, round_trip::<ApiVersionsRequest>),
            (19, round_trip::<CreateTopicsRequest>),
            (20, round_trip::<DeleteTopicsRequest>),
            (21, round_trip::<DeleteRecordsRequest>),
            (22, round_trip::<InitProducerIdRequest>),
            (23, round_trip::<OffsetForLeaderEpochRequest>),
            (24, round_trip::<AddPartitionsToTxnRequest>),
            (25, round_trip::<AddOffsetsToTxnRequest>),
            (26, round_trip::<EndTxnRequest>),
            (28, round_trip::<TxnOffsetCommitRequest>),
            (32, round_trip::<DescribeConfigsRequest>),
            (33, round_trip::<AlterConfigsRequest>),
            (37, round_trip::<CreatePartitionsRequest>),
            (42, round_trip::<DeleteGroupsRequest>),
            (44, round_trip::<IncrementalAlterConfigsRequest>),
            (60, round_trip::<DescribeClusterRequest>),
            (27, round_trip::<WriteTxnMarkersRequest>),
            (47, round_trip::<OffsetDeleteRequest>),
            (43, round_trip::<ElectLeadersRequest>),
            (35, round_trip::<DescribeLogDirsRequest>),
            (45, round_trip::<AlterPartitionReassignmentsRequest>),
            (46, round_trip::<ListPartitionReassignmentsRequest>),
            (64, round_trip::<UnregisterBrokerRequest>),
            (61, round_trip::<DescribeProducersRequest>),
            (65, round_trip::<DescribeTransactionsRequest>),
            (66, round_trip::<ListTransactionsRequest>),
        ];
        assert_eq!(decoders.len(), REQUESTS.len());
        let tried: usize = decoders
            .into_iter()
            .map(|(key, decoder)| against_decoder(schema_of(key), decoder))
            .sum();
        assert!(tried > 1_000, "only {tried} bodies");
    }

    /// The number of array elements in a walkable body: the least `max_elements` it walks with.
    fn elements(schema: &Schema, v: i16, body: &[u8]) -> usize {
        (0..=body.len())
            .find(|&n| walk(schema, v, body, n).is_ok())
            .expect("the body walks")
    }

    #[test]
    fn the_element_cap_counts_every_nested_element() {
        // Metadata: two topics.
        let schema = schema_of(3);
        assert_eq!(elements(schema, 12, &encode(&metadata(12), 12)), 2);
        // CreateTopics: 2 topics, each with 2 assignments of 2 brokers and 2 configs.
        let schema = schema_of(19);
        assert_eq!(
            elements(schema, 7, &encode(&create_topics(7), 7)),
            2 + 2 * (2 + 2 * 2 + 2)
        );
        // Fetch v13: 2 topics of 2 partitions, 2 forgotten topics of 2 partitions.
        let schema = schema_of(1);
        assert_eq!(elements(schema, 13, &encode(&fetch(13), 13)), 2 + 4 + 2 + 4);
    }

    /// The body with the count of its leading array replaced by `count`.
    fn with_count(body: &[u8], flexible: bool, count: u32) -> Vec<u8> {
        let mut out = Vec::new();
        if flexible {
            let len = body.iter().position(|b| b & 0x80 == 0).expect("a varint") + 1;
            let mut n = count + 1;
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(&body[len..]);
        } else {
            out.extend_from_slice(&count.to_be_bytes());
            out.extend_from_slice(&body[4..]);
        }
        out
    }

    #[test]
    fn a_huge_array_count_fails() {
        let mut patched = 0;
        for c in cases() {
            let schema = schema_of(c.api_key);
            for v in versions(&c) {
                let first = schema
                    .fields
                    .iter()
                    .find(|f| f.tag.is_none() && f.versions.0 <= v && v <= f.versions.1);
                let Some(Field {
                    ty: Ty::Array(_), ..
                }) = first
                else {
                    continue;
                };
                let body = (c.populated)(v);
                let flexible = v >= schema.flexible_from;
                // The count as encoded walks; larger ones do not.
                assert_eq!(
                    walk(schema, v, &with_count(&body, flexible, 2), 1 << 20),
                    Ok(())
                );
                for count in [3, 1 << 20, i32::MAX as u32 - 1] {
                    let bad = with_count(&body, flexible, count);
                    assert!(
                        walk(schema, v, &bad, 1 << 20).is_err(),
                        "{} v{v}: count {count}",
                        schema.name
                    );
                }
                patched += 1;
            }
        }
        assert!(patched > 40, "only {patched} requests patched");
    }

    // The check on the test itself: any one change to a table (a field's version bound moved by
    // one, a field's size changed, the first flexible version moved) must break the walk of
    // some populated request, unless the change makes no difference to any version the API
    // has (a bound outside the range, a field inside a parent absent in the versions moved
    // over). Tagged fields are left out: an unknown tag is skipped, so their versions cannot
    // be seen from a walk.

    fn copy_ty(ty: &'static Ty) -> Ty {
        match ty {
            Ty::Bool => Ty::Bool,
            Ty::Int8 => Ty::Int8,
            Ty::Int16 => Ty::Int16,
            Ty::Int32 => Ty::Int32,
            Ty::Int64 => Ty::Int64,
            Ty::Uuid => Ty::Uuid,
            Ty::String => Ty::String,
            Ty::Bytes => Ty::Bytes,
            Ty::Records => Ty::Records,
            Ty::Array(e) => Ty::Array(e),
            Ty::Struct(fs) => Ty::Struct(fs),
        }
    }

    /// The fields of `ty` (through arrays), if it is a struct.
    fn inner(ty: &'static Ty) -> Option<&'static [Field]> {
        match ty {
            Ty::Array(e) => inner(e),
            Ty::Struct(fs) => Some(fs),
            _ => None,
        }
    }

    /// `fields` with the field at `path` (field indexes through nested structs) replaced by
    /// `edit` of it.
    fn edited(
        fields: &'static [Field],
        path: &[usize],
        edit: &dyn Fn(&'static Field) -> Field,
    ) -> &'static [Field] {
        fn edit_ty(ty: &'static Ty, path: &[usize], edit: &dyn Fn(&'static Field) -> Field) -> Ty {
            match ty {
                Ty::Array(e) => Ty::Array(Box::leak(Box::new(edit_ty(e, path, edit)))),
                Ty::Struct(fs) => Ty::Struct(edited(fs, path, edit)),
                _ => unreachable!("a path into a primitive"),
            }
        }
        let out: Vec<Field> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| match path {
                [j] if *j == i => edit(f),
                [j, rest @ ..] if *j == i => Field {
                    versions: f.versions,
                    ty: edit_ty(&f.ty, rest, edit),
                    tag: f.tag,
                },
                _ => Field {
                    versions: f.versions,
                    ty: copy_ty(&f.ty),
                    tag: f.tag,
                },
            })
            .collect();
        Box::leak(out.into_boxed_slice())
    }

    /// Every field path, with the fields along it.
    fn paths(
        fields: &'static [Field],
        prefix: &mut Vec<usize>,
        along: &mut Vec<&'static Field>,
        out: &mut Vec<(Vec<usize>, Vec<&'static Field>)>,
    ) {
        for (i, f) in fields.iter().enumerate() {
            prefix.push(i);
            along.push(f);
            out.push((prefix.clone(), along.clone()));
            if let Some(fs) = inner(&f.ty) {
                paths(fs, prefix, along, out);
            }
            prefix.pop();
            along.pop();
        }
    }

    fn present(f: &Field, versions: (i16, i16), v: i16, flexible_from: i16) -> bool {
        versions.0 <= v && v <= versions.1 && (f.tag.is_none() || v >= flexible_from)
    }

    /// Whether some version's populated request fails to walk against `schema`.
    fn breaks(schema: &Schema, bodies: &[(i16, Vec<u8>)]) -> bool {
        bodies
            .iter()
            .any(|(v, body)| walk(schema, *v, body, 1 << 20).is_err())
    }

    fn resized(ty: &'static Ty) -> Option<Ty> {
        Some(match ty {
            Ty::Bool | Ty::Int8 => Ty::Int16,
            Ty::Int16 => Ty::Int32,
            Ty::Int32 => Ty::Int64,
            Ty::Int64 => Ty::Int32,
            Ty::Uuid => Ty::Int64,
            Ty::String => Ty::Bytes,
            Ty::Bytes | Ty::Records => Ty::String,
            Ty::Array(_) | Ty::Struct(_) => return None,
        })
    }

    #[test]
    fn any_change_to_a_table_breaks_some_walk() {
        let mut checked = 0;
        for c in cases() {
            let schema = schema_of(c.api_key);
            let bodies: Vec<(i16, Vec<u8>)> = versions(&c).map(|v| (v, (c.populated)(v))).collect();
            let with = |fields, flexible_from| Schema {
                api_key: schema.api_key,
                name: schema.name,
                versions: schema.versions,
                flexible_from,
                fields,
            };

            for moved in [schema.flexible_from - 1, schema.flexible_from + 1] {
                let differs = versions(&c).any(|v| (v >= moved) != (v >= schema.flexible_from));
                let broken = breaks(&with(schema.fields, moved), &bodies);
                assert_eq!(broken, differs, "{} flexible from {moved}", schema.name);
                checked += 1;
            }

            let mut all = Vec::new();
            paths(schema.fields, &mut vec![], &mut vec![], &mut all);
            for (path, along) in all {
                let (field, parents) = along.split_last().expect("a path");
                let reached = |v: i16| {
                    parents
                        .iter()
                        .all(|p| present(p, p.versions, v, schema.flexible_from))
                };
                let (from, to) = field.versions;
                let mut bounds = vec![];
                if field.tag.is_none() {
                    bounds.extend([(from - 1, to), (from + 1, to)]);
                    if to != MAX {
                        bounds.extend([(from, to - 1), (from, to + 1)]);
                    }
                }
                for moved in bounds {
                    let differs = versions(&c).any(|v| {
                        reached(v)
                            && present(field, moved, v, schema.flexible_from)
                                != present(field, field.versions, v, schema.flexible_from)
                    });
                    let fields = edited(schema.fields, &path, &|f| Field {
                        versions: moved,
                        ty: copy_ty(&f.ty),
                        tag: f.tag,
                    });
                    let broken = breaks(&with(fields, schema.flexible_from), &bodies);
                    assert_eq!(
                        broken, differs,
                        "{} field {path:?} versions {:?} -> {moved:?}",
                        schema.name, field.versions
                    );
                    checked += 1;
                }
                if resized(&field.ty).is_some() {
                    // Strings and bytes are alike in flexible versions.
                    let alike = matches!(field.ty, Ty::String | Ty::Bytes | Ty::Records);
                    let differs = versions(&c).any(|v| {
                        reached(v)
                            && present(field, field.versions, v, schema.flexible_from)
                            && !(alike && v >= schema.flexible_from)
                    });
                    let fields = edited(schema.fields, &path, &|f| Field {
                        versions: f.versions,
                        ty: resized(&f.ty).expect("a primitive"),
                        tag: f.tag,
                    });
                    let broken = breaks(&with(fields, schema.flexible_from), &bodies);
                    assert_eq!(broken, differs, "{} field {path:?} resized", schema.name);
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "only {checked} changes checked");
    }
}
