//! The response schemas of the APIs rill's clients send, from Kafka's message definitions,
//! matching the decoders of `kafka-protocol` 0.18 field for field and version for version (the
//! tests below check every table against them), laid out as the request tables in
//! [`super::schema_tables`] are: one field a line, in wire order, with the versions in which
//! `kafka-protocol` reads it and its name in the comment; struct types are named consts above
//! the API that uses them.

use super::schema::{api, f, tagged, Field, Schema, Ty, MAX};

// Produce (0)
const PRODUCE_BATCH_INDEX_AND_ERROR_MESSAGE: &[Field] = &[
    f(8, MAX, Ty::Int32),  // batch_index
    f(8, MAX, Ty::String), // batch_index_error_message
];
const PRODUCE_LEADER_ID_AND_EPOCH: &[Field] = &[
    f(10, MAX, Ty::Int32), // leader_id
    f(10, MAX, Ty::Int32), // leader_epoch
];
const PRODUCE_PARTITION_PRODUCE_RESPONSE: &[Field] = &[
    f(0, MAX, Ty::Int32), // index
    f(0, MAX, Ty::Int16), // error_code
    f(0, MAX, Ty::Int64), // base_offset
    f(0, MAX, Ty::Int64), // log_append_time_ms
    f(5, MAX, Ty::Int64), // log_start_offset
    f(
        8,
        MAX,
        Ty::Array(&Ty::Struct(PRODUCE_BATCH_INDEX_AND_ERROR_MESSAGE)),
    ), // record_errors
    f(8, MAX, Ty::String), // error_message
    tagged(0, 10, MAX, Ty::Struct(PRODUCE_LEADER_ID_AND_EPOCH)), // current_leader
];
const PRODUCE_TOPIC_PRODUCE_RESPONSE: &[Field] = &[
    f(0, 12, Ty::String), // name
    f(13, MAX, Ty::Uuid), // topic_id
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(PRODUCE_PARTITION_PRODUCE_RESPONSE)),
    ), // partition_responses
];
const PRODUCE_NODE_ENDPOINT: &[Field] = &[
    f(10, MAX, Ty::Int32),  // node_id
    f(10, MAX, Ty::String), // host
    f(10, MAX, Ty::Int32),  // port
    f(10, MAX, Ty::String), // rack
];
const PRODUCE: &[Field] = &[
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(PRODUCE_TOPIC_PRODUCE_RESPONSE)),
    ), // responses
    f(0, MAX, Ty::Int32), // throttle_time_ms
    tagged(0, 10, MAX, Ty::Array(&Ty::Struct(PRODUCE_NODE_ENDPOINT))), // node_endpoints
];

// Fetch (1)
const FETCH_ABORTED_TRANSACTION: &[Field] = &[
    f(0, MAX, Ty::Int64), // producer_id
    f(0, MAX, Ty::Int64), // first_offset
];
const FETCH_EPOCH_END_OFFSET: &[Field] = &[
    f(12, MAX, Ty::Int32), // epoch
    f(12, MAX, Ty::Int64), // end_offset
];
const FETCH_LEADER_ID_AND_EPOCH: &[Field] = &[
    f(12, MAX, Ty::Int32), // leader_id
    f(12, MAX, Ty::Int32), // leader_epoch
];
const FETCH_SNAPSHOT_ID: &[Field] = &[
    f(0, MAX, Ty::Int64), // end_offset
    f(0, MAX, Ty::Int32), // epoch
];
const FETCH_PARTITION_DATA: &[Field] = &[
    f(0, MAX, Ty::Int32),                                         // partition_index
    f(0, MAX, Ty::Int16),                                         // error_code
    f(0, MAX, Ty::Int64),                                         // high_watermark
    f(0, MAX, Ty::Int64),                                         // last_stable_offset
    f(5, MAX, Ty::Int64),                                         // log_start_offset
    f(0, MAX, Ty::Array(&Ty::Struct(FETCH_ABORTED_TRANSACTION))), // aborted_transactions
    f(11, MAX, Ty::Int32),                                        // preferred_read_replica
    f(0, MAX, Ty::Records),                                       // records
    tagged(0, 12, MAX, Ty::Struct(FETCH_EPOCH_END_OFFSET)),       // diverging_epoch
    tagged(1, 12, MAX, Ty::Struct(FETCH_LEADER_ID_AND_EPOCH)),    // current_leader
    tagged(2, 12, MAX, Ty::Struct(FETCH_SNAPSHOT_ID)),            // snapshot_id
];
const FETCH_FETCHABLE_TOPIC_RESPONSE: &[Field] = &[
    f(0, 12, Ty::String),                                    // topic
    f(13, MAX, Ty::Uuid),                                    // topic_id
    f(0, MAX, Ty::Array(&Ty::Struct(FETCH_PARTITION_DATA))), // partitions
];
const FETCH_NODE_ENDPOINT: &[Field] = &[
    f(16, MAX, Ty::Int32),  // node_id
    f(16, MAX, Ty::String), // host
    f(16, MAX, Ty::Int32),  // port
    f(16, MAX, Ty::String), // rack
];
const FETCH: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(7, MAX, Ty::Int16), // error_code
    f(7, MAX, Ty::Int32), // session_id
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(FETCH_FETCHABLE_TOPIC_RESPONSE)),
    ), // responses
    tagged(0, 16, MAX, Ty::Array(&Ty::Struct(FETCH_NODE_ENDPOINT))), // node_endpoints
];

// ListOffsets (2)
const LIST_OFFSETS_PARTITION_RESPONSE: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int16), // error_code
    f(0, MAX, Ty::Int64), // timestamp
    f(0, MAX, Ty::Int64), // offset
    f(4, MAX, Ty::Int32), // leader_epoch
];
const LIST_OFFSETS_TOPIC_RESPONSE: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(LIST_OFFSETS_PARTITION_RESPONSE)),
    ), // partitions
];
const LIST_OFFSETS: &[Field] = &[
    f(2, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_OFFSETS_TOPIC_RESPONSE))), // topics
];

// Metadata (3)
const METADATA_RESPONSE_BROKER: &[Field] = &[
    f(0, MAX, Ty::Int32),  // node_id
    f(0, MAX, Ty::String), // host
    f(0, MAX, Ty::Int32),  // port
    f(1, MAX, Ty::String), // rack
];
const METADATA_RESPONSE_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int16),             // error_code
    f(0, MAX, Ty::Int32),             // partition_index
    f(0, MAX, Ty::Int32),             // leader_id
    f(7, MAX, Ty::Int32),             // leader_epoch
    f(0, MAX, Ty::Array(&Ty::Int32)), // replica_nodes
    f(0, MAX, Ty::Array(&Ty::Int32)), // isr_nodes
    f(5, MAX, Ty::Array(&Ty::Int32)), // offline_replicas
];
const METADATA_RESPONSE_TOPIC: &[Field] = &[
    f(0, MAX, Ty::Int16),                                           // error_code
    f(0, MAX, Ty::String),                                          // name
    f(10, MAX, Ty::Uuid),                                           // topic_id
    f(1, MAX, Ty::Bool),                                            // is_internal
    f(0, MAX, Ty::Array(&Ty::Struct(METADATA_RESPONSE_PARTITION))), // partitions
    f(8, MAX, Ty::Int32),                                           // topic_authorized_operations
];
const METADATA: &[Field] = &[
    f(3, MAX, Ty::Int32),                                        // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(METADATA_RESPONSE_BROKER))), // brokers
    f(2, MAX, Ty::String),                                       // cluster_id
    f(1, MAX, Ty::Int32),                                        // controller_id
    f(0, MAX, Ty::Array(&Ty::Struct(METADATA_RESPONSE_TOPIC))),  // topics
    f(8, 10, Ty::Int32),                                         // cluster_authorized_operations
    f(13, MAX, Ty::Int16),                                       // error_code
];

// OffsetCommit (8)
const OFFSET_COMMIT_RESPONSE_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int16), // error_code
];
const OFFSET_COMMIT_RESPONSE_TOPIC: &[Field] = &[
    f(0, 9, Ty::String),  // name
    f(10, MAX, Ty::Uuid), // topic_id
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(OFFSET_COMMIT_RESPONSE_PARTITION)),
    ), // partitions
];
const OFFSET_COMMIT: &[Field] = &[
    f(3, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_COMMIT_RESPONSE_TOPIC))), // topics
];

// OffsetFetch (9)
const OFFSET_FETCH_RESPONSE_PARTITION: &[Field] = &[
    f(0, 7, Ty::Int32),  // partition_index
    f(0, 7, Ty::Int64),  // committed_offset
    f(5, 7, Ty::Int32),  // committed_leader_epoch
    f(0, 7, Ty::String), // metadata
    f(0, 7, Ty::Int16),  // error_code
];
const OFFSET_FETCH_RESPONSE_TOPIC: &[Field] = &[
    f(0, 7, Ty::String), // name
    f(
        0,
        7,
        Ty::Array(&Ty::Struct(OFFSET_FETCH_RESPONSE_PARTITION)),
    ), // partitions
];
const OFFSET_FETCH_RESPONSE_PARTITIONS: &[Field] = &[
    f(8, MAX, Ty::Int32),  // partition_index
    f(8, MAX, Ty::Int64),  // committed_offset
    f(8, MAX, Ty::Int32),  // committed_leader_epoch
    f(8, MAX, Ty::String), // metadata
    f(8, MAX, Ty::Int16),  // error_code
];
const OFFSET_FETCH_RESPONSE_TOPICS: &[Field] = &[
    f(8, 9, Ty::String),  // name
    f(10, MAX, Ty::Uuid), // topic_id
    f(
        8,
        MAX,
        Ty::Array(&Ty::Struct(OFFSET_FETCH_RESPONSE_PARTITIONS)),
    ), // partitions
];
const OFFSET_FETCH_RESPONSE_GROUP: &[Field] = &[
    f(8, MAX, Ty::String),                                           // group_id
    f(8, MAX, Ty::Array(&Ty::Struct(OFFSET_FETCH_RESPONSE_TOPICS))), // topics
    f(8, MAX, Ty::Int16),                                            // error_code
];
const OFFSET_FETCH: &[Field] = &[
    f(3, MAX, Ty::Int32),                                         // throttle_time_ms
    f(0, 7, Ty::Array(&Ty::Struct(OFFSET_FETCH_RESPONSE_TOPIC))), // topics
    f(2, 7, Ty::Int16),                                           // error_code
    f(8, MAX, Ty::Array(&Ty::Struct(OFFSET_FETCH_RESPONSE_GROUP))), // groups
];

// FindCoordinator (10)
const FIND_COORDINATOR_COORDINATOR: &[Field] = &[
    f(4, MAX, Ty::String), // key
    f(4, MAX, Ty::Int32),  // node_id
    f(4, MAX, Ty::String), // host
    f(4, MAX, Ty::Int32),  // port
    f(4, MAX, Ty::Int16),  // error_code
    f(4, MAX, Ty::String), // error_message
];
const FIND_COORDINATOR: &[Field] = &[
    f(1, MAX, Ty::Int32), // throttle_time_ms
    f(0, 3, Ty::Int16),   // error_code
    f(1, 3, Ty::String),  // error_message
    f(0, 3, Ty::Int32),   // node_id
    f(0, 3, Ty::String),  // host
    f(0, 3, Ty::Int32),   // port
    f(4, MAX, Ty::Array(&Ty::Struct(FIND_COORDINATOR_COORDINATOR))), // coordinators
];

// JoinGroup (11)
const JOIN_GROUP_RESPONSE_MEMBER: &[Field] = &[
    f(0, MAX, Ty::String), // member_id
    f(5, MAX, Ty::String), // group_instance_id
    f(0, MAX, Ty::Bytes),  // metadata
];
const JOIN_GROUP: &[Field] = &[
    f(2, MAX, Ty::Int32),  // throttle_time_ms
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::Int32),  // generation_id
    f(7, MAX, Ty::String), // protocol_type
    f(0, MAX, Ty::String), // protocol_name
    f(0, MAX, Ty::String), // leader
    f(9, MAX, Ty::Bool),   // skip_assignment
    f(0, MAX, Ty::String), // member_id
    f(0, MAX, Ty::Array(&Ty::Struct(JOIN_GROUP_RESPONSE_MEMBER))), // members
];

// Heartbeat (12)
const HEARTBEAT: &[Field] = &[
    f(1, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Int16), // error_code
];

// LeaveGroup (13)
const LEAVE_GROUP_MEMBER_RESPONSE: &[Field] = &[
    f(3, MAX, Ty::String), // member_id
    f(3, MAX, Ty::String), // group_instance_id
    f(3, MAX, Ty::Int16),  // error_code
];
const LEAVE_GROUP: &[Field] = &[
    f(1, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Int16), // error_code
    f(3, MAX, Ty::Array(&Ty::Struct(LEAVE_GROUP_MEMBER_RESPONSE))), // members
];

// SyncGroup (14)
const SYNC_GROUP: &[Field] = &[
    f(1, MAX, Ty::Int32),  // throttle_time_ms
    f(0, MAX, Ty::Int16),  // error_code
    f(5, MAX, Ty::String), // protocol_type
    f(5, MAX, Ty::String), // protocol_name
    f(0, MAX, Ty::Bytes),  // assignment
];

// DescribeGroups (15)
const DESCRIBE_GROUPS_DESCRIBED_GROUP_MEMBER: &[Field] = &[
    f(0, MAX, Ty::String), // member_id
    f(4, MAX, Ty::String), // group_instance_id
    f(0, MAX, Ty::String), // client_id
    f(0, MAX, Ty::String), // client_host
    f(0, MAX, Ty::Bytes),  // member_metadata
    f(0, MAX, Ty::Bytes),  // member_assignment
];
const DESCRIBE_GROUPS_DESCRIBED_GROUP: &[Field] = &[
    f(0, MAX, Ty::Int16),  // error_code
    f(6, MAX, Ty::String), // error_message
    f(0, MAX, Ty::String), // group_id
    f(0, MAX, Ty::String), // group_state
    f(0, MAX, Ty::String), // protocol_type
    f(0, MAX, Ty::String), // protocol_data
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(DESCRIBE_GROUPS_DESCRIBED_GROUP_MEMBER)),
    ), // members
    f(3, MAX, Ty::Int32),  // authorized_operations
];
const DESCRIBE_GROUPS: &[Field] = &[
    f(1, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(DESCRIBE_GROUPS_DESCRIBED_GROUP)),
    ), // groups
];

// ListGroups (16)
const LIST_GROUPS_LISTED_GROUP: &[Field] = &[
    f(0, MAX, Ty::String), // group_id
    f(0, MAX, Ty::String), // protocol_type
    f(4, MAX, Ty::String), // group_state
    f(5, MAX, Ty::String), // group_type
];
const LIST_GROUPS: &[Field] = &[
    f(1, MAX, Ty::Int32),                                        // throttle_time_ms
    f(0, MAX, Ty::Int16),                                        // error_code
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_GROUPS_LISTED_GROUP))), // groups
];

// ApiVersions (18)
const API_VERSIONS_API_VERSION: &[Field] = &[
    f(0, MAX, Ty::Int16), // api_key
    f(0, MAX, Ty::Int16), // min_version
    f(0, MAX, Ty::Int16), // max_version
];
const API_VERSIONS_SUPPORTED_FEATURE_KEY: &[Field] = &[
    f(3, MAX, Ty::String), // name
    f(3, MAX, Ty::Int16),  // min_version
    f(3, MAX, Ty::Int16),  // max_version
];
const API_VERSIONS_FINALIZED_FEATURE_KEY: &[Field] = &[
    f(3, MAX, Ty::String), // name
    f(3, MAX, Ty::Int16),  // max_version_level
    f(3, MAX, Ty::Int16),  // min_version_level
];
const API_VERSIONS: &[Field] = &[
    f(0, MAX, Ty::Int16),                                        // error_code
    f(0, MAX, Ty::Array(&Ty::Struct(API_VERSIONS_API_VERSION))), // api_keys
    f(1, MAX, Ty::Int32),                                        // throttle_time_ms
    tagged(
        0,
        3,
        MAX,
        Ty::Array(&Ty::Struct(API_VERSIONS_SUPPORTED_FEATURE_KEY)),
    ), // supported_features
    tagged(1, 3, MAX, Ty::Int64),                                // finalized_features_epoch
    tagged(
        2,
        3,
        MAX,
        Ty::Array(&Ty::Struct(API_VERSIONS_FINALIZED_FEATURE_KEY)),
    ), // finalized_features
    tagged(3, 3, MAX, Ty::Bool),                                 // zk_migration_ready
];

// CreateTopics (19)
const CREATE_TOPICS_CREATABLE_TOPIC_CONFIGS: &[Field] = &[
    f(5, MAX, Ty::String), // name
    f(5, MAX, Ty::String), // value
    f(5, MAX, Ty::Bool),   // read_only
    f(5, MAX, Ty::Int8),   // config_source
    f(5, MAX, Ty::Bool),   // is_sensitive
];
const CREATE_TOPICS_CREATABLE_TOPIC_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(7, MAX, Ty::Uuid),   // topic_id
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message
    f(5, MAX, Ty::Int32),  // num_partitions
    f(5, MAX, Ty::Int16),  // replication_factor
    f(
        5,
        MAX,
        Ty::Array(&Ty::Struct(CREATE_TOPICS_CREATABLE_TOPIC_CONFIGS)),
    ), // configs
    tagged(0, 5, MAX, Ty::Int16), // topic_config_error_code
];
const CREATE_TOPICS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(CREATE_TOPICS_CREATABLE_TOPIC_RESULT)),
    ), // topics
];

// DeleteTopics (20)
const DELETE_TOPICS_DELETABLE_TOPIC_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(6, MAX, Ty::Uuid),   // topic_id
    f(0, MAX, Ty::Int16),  // error_code
    f(5, MAX, Ty::String), // error_message
];
const DELETE_TOPICS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(DELETE_TOPICS_DELETABLE_TOPIC_RESULT)),
    ), // responses
];

// DeleteRecords (21)
const DELETE_RECORDS_PARTITION_RESULT: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int64), // low_watermark
    f(0, MAX, Ty::Int16), // error_code
];
const DELETE_RECORDS_TOPIC_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(DELETE_RECORDS_PARTITION_RESULT)),
    ), // partitions
];
const DELETE_RECORDS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(DELETE_RECORDS_TOPIC_RESULT))), // topics
];

// InitProducerId (22)
const INIT_PRODUCER_ID: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Int16), // error_code
    f(0, MAX, Ty::Int64), // producer_id
    f(0, MAX, Ty::Int16), // producer_epoch
    f(6, MAX, Ty::Int64), // ongoing_txn_producer_id
    f(6, MAX, Ty::Int16), // ongoing_txn_producer_epoch
];

// OffsetForLeaderEpoch (23)
const OFFSET_FOR_LEADER_EPOCH_EPOCH_END_OFFSET: &[Field] = &[
    f(0, MAX, Ty::Int16), // error_code
    f(0, MAX, Ty::Int32), // partition
    f(0, MAX, Ty::Int32), // leader_epoch
    f(0, MAX, Ty::Int64), // end_offset
];
const OFFSET_FOR_LEADER_EPOCH_OFFSET_FOR_LEADER_TOPIC_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // topic
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(OFFSET_FOR_LEADER_EPOCH_EPOCH_END_OFFSET)),
    ), // partitions
];
const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(
            OFFSET_FOR_LEADER_EPOCH_OFFSET_FOR_LEADER_TOPIC_RESULT,
        )),
    ), // topics
];

// AddPartitionsToTxn (24)
const ADD_PARTITIONS_TO_TXN_PARTITION_RESULT: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int16), // partition_error_code
];
const ADD_PARTITIONS_TO_TXN_TOPIC_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_PARTITION_RESULT)),
    ), // results_by_partition
];
const ADD_PARTITIONS_TO_TXN_RESULT: &[Field] = &[
    f(4, MAX, Ty::String), // transactional_id
    f(
        4,
        MAX,
        Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_TOPIC_RESULT)),
    ), // topic_results
];
const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(4, MAX, Ty::Int16), // error_code
    f(4, MAX, Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_RESULT))), // results_by_transaction
    f(
        0,
        3,
        Ty::Array(&Ty::Struct(ADD_PARTITIONS_TO_TXN_TOPIC_RESULT)),
    ), // results_by_topic_v3_and_below
];

// AddOffsetsToTxn (25)
const ADD_OFFSETS_TO_TXN: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Int16), // error_code
];

// EndTxn (26)
const END_TXN: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Int16), // error_code
    f(5, MAX, Ty::Int64), // producer_id
    f(5, MAX, Ty::Int16), // producer_epoch
];

// TxnOffsetCommit (28)
const TXN_OFFSET_COMMIT_RESPONSE_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int16), // error_code
];
const TXN_OFFSET_COMMIT_RESPONSE_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(TXN_OFFSET_COMMIT_RESPONSE_PARTITION)),
    ), // partitions
];
const TXN_OFFSET_COMMIT: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(TXN_OFFSET_COMMIT_RESPONSE_TOPIC)),
    ), // topics
];

// DescribeConfigs (32)
const DESCRIBE_CONFIGS_SYNONYM: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(0, MAX, Ty::String), // value
    f(0, MAX, Ty::Int8),   // source
];
const DESCRIBE_CONFIGS_RESOURCE_RESULT: &[Field] = &[
    f(0, MAX, Ty::String),                                       // name
    f(0, MAX, Ty::String),                                       // value
    f(0, MAX, Ty::Bool),                                         // read_only
    f(0, MAX, Ty::Int8),                                         // config_source
    f(0, MAX, Ty::Bool),                                         // is_sensitive
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_CONFIGS_SYNONYM))), // synonyms
    f(3, MAX, Ty::Int8),                                         // config_type
    f(3, MAX, Ty::String),                                       // documentation
];
const DESCRIBE_CONFIGS_RESULT: &[Field] = &[
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message
    f(0, MAX, Ty::Int8),   // resource_type
    f(0, MAX, Ty::String), // resource_name
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(DESCRIBE_CONFIGS_RESOURCE_RESULT)),
    ), // configs
];
const DESCRIBE_CONFIGS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                       // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_CONFIGS_RESULT))), // results
];

// CreatePartitions (37)
const CREATE_PARTITIONS_TOPIC_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // name
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message
];
const CREATE_PARTITIONS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(CREATE_PARTITIONS_TOPIC_RESULT)),
    ), // results
];

// DeleteGroups (42)
const DELETE_GROUPS_DELETABLE_GROUP_RESULT: &[Field] = &[
    f(0, MAX, Ty::String), // group_id
    f(0, MAX, Ty::Int16),  // error_code
];
const DELETE_GROUPS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(DELETE_GROUPS_DELETABLE_GROUP_RESULT)),
    ), // results
];

// AlterConfigs (33): the same fields as IncrementalAlterConfigs' response.
const ALTER_CONFIGS: &[Field] = INCREMENTAL_ALTER_CONFIGS;

// IncrementalAlterConfigs (44)
const INCREMENTAL_ALTER_CONFIGS_ALTER_CONFIGS_RESOURCE_RESPONSE: &[Field] = &[
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message
    f(0, MAX, Ty::Int8),   // resource_type
    f(0, MAX, Ty::String), // resource_name
];
const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(
        0,
        MAX,
        Ty::Array(&Ty::Struct(
            INCREMENTAL_ALTER_CONFIGS_ALTER_CONFIGS_RESOURCE_RESPONSE,
        )),
    ), // responses
];

// DescribeCluster (60)
const DESCRIBE_CLUSTER_BROKER: &[Field] = &[
    f(0, MAX, Ty::Int32),  // broker_id
    f(0, MAX, Ty::String), // host
    f(0, MAX, Ty::Int32),  // port
    f(0, MAX, Ty::String), // rack
    f(2, MAX, Ty::Bool),   // is_fenced
];
const DESCRIBE_CLUSTER: &[Field] = &[
    f(0, MAX, Ty::Int32),                                       // throttle_time_ms
    f(0, MAX, Ty::Int16),                                       // error_code
    f(0, MAX, Ty::String),                                      // error_message
    f(1, MAX, Ty::Int8),                                        // endpoint_type
    f(0, MAX, Ty::String),                                      // cluster_id
    f(0, MAX, Ty::Int32),                                       // controller_id
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_CLUSTER_BROKER))), // brokers
    f(0, MAX, Ty::Int32),                                       // cluster_authorized_operations
];

// OffsetDelete (47)
const OFFSET_DELETE_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int16), // error_code
];
const OFFSET_DELETE_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                      // name
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_DELETE_PARTITION))), // partitions
];
const OFFSET_DELETE: &[Field] = &[
    f(0, MAX, Ty::Int16),                                   // error_code
    f(0, MAX, Ty::Int32),                                   // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(OFFSET_DELETE_TOPIC))), // topics
];

// WriteTxnMarkers (27)
const WRITE_TXN_MARKERS_PARTITION: &[Field] = &[
    f(1, MAX, Ty::Int32), // partition_index
    f(1, MAX, Ty::Int16), // error_code
];
const WRITE_TXN_MARKERS_TOPIC: &[Field] = &[
    f(1, MAX, Ty::String),                                          // name
    f(1, MAX, Ty::Array(&Ty::Struct(WRITE_TXN_MARKERS_PARTITION))), // partitions
];
const WRITE_TXN_MARKERS_MARKER: &[Field] = &[
    f(1, MAX, Ty::Int64),                                       // producer_id
    f(1, MAX, Ty::Array(&Ty::Struct(WRITE_TXN_MARKERS_TOPIC))), // topics
];
const WRITE_TXN_MARKERS: &[Field] = &[
    f(1, MAX, Ty::Array(&Ty::Struct(WRITE_TXN_MARKERS_MARKER))), // markers
];

// AlterPartitionReassignments (45)
const ALTER_REASSIGNMENTS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),  // partition_index
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message (nullable)
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
    f(0, MAX, Ty::Int32),                                         // throttle_time_ms
    f(1, MAX, Ty::Bool),                                          // allow_replication_factor_change
    f(0, MAX, Ty::Int16),                                         // error_code
    f(0, MAX, Ty::String),                                        // error_message (nullable)
    f(0, MAX, Ty::Array(&Ty::Struct(ALTER_REASSIGNMENTS_TOPIC))), // responses
];

// ListPartitionReassignments (46)
const LIST_REASSIGNMENTS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),             // partition_index
    f(0, MAX, Ty::Array(&Ty::Int32)), // replicas
    f(0, MAX, Ty::Array(&Ty::Int32)), // adding_replicas
    f(0, MAX, Ty::Array(&Ty::Int32)), // removing_replicas
];
const LIST_REASSIGNMENTS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                           // name
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_REASSIGNMENTS_PARTITION))), // partitions
];
const LIST_REASSIGNMENTS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                        // throttle_time_ms
    f(0, MAX, Ty::Int16),                                        // error_code
    f(0, MAX, Ty::String),                                       // error_message (nullable)
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_REASSIGNMENTS_TOPIC))), // topics
];

// UnregisterBroker (64)
const UNREGISTER_BROKER: &[Field] = &[
    f(0, MAX, Ty::Int32),  // throttle_time_ms
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message (nullable)
];

// DescribeLogDirs (35)
const DESCRIBE_LOG_DIRS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32), // partition_index
    f(0, MAX, Ty::Int64), // partition_size
    f(0, MAX, Ty::Int64), // offset_lag
    f(0, MAX, Ty::Bool),  // is_future_key
];
const DESCRIBE_LOG_DIRS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                          // name
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_LOG_DIRS_PARTITION))), // partitions
];
const DESCRIBE_LOG_DIRS_RESULT: &[Field] = &[
    f(0, MAX, Ty::Int16),                                       // error_code
    f(0, MAX, Ty::String),                                      // log_dir
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_LOG_DIRS_TOPIC))), // topics
    f(4, MAX, Ty::Int64),                                       // total_bytes
    f(4, MAX, Ty::Int64),                                       // usable_bytes
];
const DESCRIBE_LOG_DIRS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                        // throttle_time_ms
    f(3, MAX, Ty::Int16),                                        // error_code
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_LOG_DIRS_RESULT))), // results
];

// ElectLeaders (43)
const ELECT_LEADERS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),  // partition_id
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message (nullable)
];
const ELECT_LEADERS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                      // topic
    f(0, MAX, Ty::Array(&Ty::Struct(ELECT_LEADERS_PARTITION))), // partition_result
];
const ELECT_LEADERS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                   // throttle_time_ms
    f(1, MAX, Ty::Int16),                                   // error_code
    f(0, MAX, Ty::Array(&Ty::Struct(ELECT_LEADERS_TOPIC))), // replica_election_results
];

// DescribeProducers (61)
const DESCRIBE_PRODUCERS_PRODUCER: &[Field] = &[
    f(0, MAX, Ty::Int64), // producer_id
    f(0, MAX, Ty::Int32), // producer_epoch
    f(0, MAX, Ty::Int32), // last_sequence
    f(0, MAX, Ty::Int64), // last_timestamp
    f(0, MAX, Ty::Int32), // coordinator_epoch
    f(0, MAX, Ty::Int64), // current_txn_start_offset
];
const DESCRIBE_PRODUCERS_PARTITION: &[Field] = &[
    f(0, MAX, Ty::Int32),  // partition_index
    f(0, MAX, Ty::Int16),  // error_code
    f(0, MAX, Ty::String), // error_message (nullable)
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_PRODUCERS_PRODUCER))), // active_producers
];
const DESCRIBE_PRODUCERS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),                                           // name
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_PRODUCERS_PARTITION))), // partitions
];
const DESCRIBE_PRODUCERS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                        // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_PRODUCERS_TOPIC))), // topics
];

// DescribeTransactions (65)
const DESCRIBE_TRANSACTIONS_TOPIC: &[Field] = &[
    f(0, MAX, Ty::String),            // topic
    f(0, MAX, Ty::Array(&Ty::Int32)), // partitions
];
const DESCRIBE_TRANSACTIONS_STATE: &[Field] = &[
    f(0, MAX, Ty::Int16),                                           // error_code
    f(0, MAX, Ty::String),                                          // transactional_id
    f(0, MAX, Ty::String),                                          // transaction_state
    f(0, MAX, Ty::Int32),                                           // transaction_timeout_ms
    f(0, MAX, Ty::Int64),                                           // transaction_start_time_ms
    f(0, MAX, Ty::Int64),                                           // producer_id
    f(0, MAX, Ty::Int16),                                           // producer_epoch
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_TRANSACTIONS_TOPIC))), // topics
];
const DESCRIBE_TRANSACTIONS: &[Field] = &[
    f(0, MAX, Ty::Int32), // throttle_time_ms
    f(0, MAX, Ty::Array(&Ty::Struct(DESCRIBE_TRANSACTIONS_STATE))), // transaction_states
];

// ListTransactions (66)
const LIST_TRANSACTIONS_STATE: &[Field] = &[
    f(0, MAX, Ty::String), // transactional_id
    f(0, MAX, Ty::Int64),  // producer_id
    f(0, MAX, Ty::String), // transaction_state
];
const LIST_TRANSACTIONS: &[Field] = &[
    f(0, MAX, Ty::Int32),                                       // throttle_time_ms
    f(0, MAX, Ty::Int16),                                       // error_code
    f(0, MAX, Ty::Array(&Ty::String)),                          // unknown_state_filters
    f(0, MAX, Ty::Array(&Ty::Struct(LIST_TRANSACTIONS_STATE))), // transaction_states
];

/// Every response rill's clients decode: (api key, name, versions `kafka-protocol` 0.18
/// decodes, first flexible version, fields).
pub(crate) static RESPONSES: &[Schema] = &[
    api(0, "Produce", (3, 13), 9, PRODUCE),
    api(1, "Fetch", (4, 18), 12, FETCH),
    api(2, "ListOffsets", (1, 10), 6, LIST_OFFSETS),
    api(3, "Metadata", (0, 13), 9, METADATA),
    api(8, "OffsetCommit", (2, 10), 8, OFFSET_COMMIT),
    api(9, "OffsetFetch", (1, 10), 6, OFFSET_FETCH),
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
    api(22, "InitProducerId", (0, 6), 2, INIT_PRODUCER_ID),
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
    use crate::net::schema::check::{against_decoder, round_trip, RoundTrip};
    use crate::net::schema::walk_exact;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, Message};

    /// Each response type: (api key, versions it decodes, its round trip, its default encoded).
    type Case = (i16, (i16, i16), RoundTrip, fn(i16) -> Vec<u8>);

    fn case<T: Decodable + Encodable + Message + Default>(api_key: i16) -> Case {
        (
            api_key,
            (T::VERSIONS.min, T::VERSIONS.max),
            round_trip::<T>,
            |v| {
                let mut b = bytes::BytesMut::new();
                T::default()
                    .encode(&mut b, v)
                    .expect("a default response encodes");
                b.to_vec()
            },
        )
    }

    use kafka_protocol::protocol::Decodable;

    fn cases() -> Vec<Case> {
        vec![
            case::<ProduceResponse>(0),
            case::<FetchResponse>(1),
            case::<ListOffsetsResponse>(2),
            case::<MetadataResponse>(3),
            case::<OffsetCommitResponse>(8),
            case::<OffsetFetchResponse>(9),
            case::<FindCoordinatorResponse>(10),
            case::<JoinGroupResponse>(11),
            case::<HeartbeatResponse>(12),
            case::<LeaveGroupResponse>(13),
            case::<SyncGroupResponse>(14),
            case::<DescribeGroupsResponse>(15),
            case::<ListGroupsResponse>(16),
            case::<ApiVersionsResponse>(18),
            case::<CreateTopicsResponse>(19),
            case::<DeleteTopicsResponse>(20),
            case::<DeleteRecordsResponse>(21),
            case::<InitProducerIdResponse>(22),
            case::<OffsetForLeaderEpochResponse>(23),
            case::<AddPartitionsToTxnResponse>(24),
            case::<AddOffsetsToTxnResponse>(25),
            case::<EndTxnResponse>(26),
            case::<TxnOffsetCommitResponse>(28),
            case::<DescribeConfigsResponse>(32),
            case::<AlterConfigsResponse>(33),
            case::<CreatePartitionsResponse>(37),
            case::<DeleteGroupsResponse>(42),
            case::<IncrementalAlterConfigsResponse>(44),
            case::<DescribeClusterResponse>(60),
            case::<WriteTxnMarkersResponse>(27),
            case::<OffsetDeleteResponse>(47),
            case::<ElectLeadersResponse>(43),
            case::<DescribeLogDirsResponse>(35),
            case::<AlterPartitionReassignmentsResponse>(45),
            case::<ListPartitionReassignmentsResponse>(46),
            case::<UnregisterBrokerResponse>(64),
            case::<DescribeProducersResponse>(61),
            case::<DescribeTransactionsResponse>(65),
            case::<ListTransactionsResponse>(66),
        ]
    }

    /// The tables cover exactly the responses to what rill's clients send, at every version
    /// `kafka-protocol` decodes.
    #[test]
    fn the_tables_cover_every_api_the_clients_send() {
        let cases = cases();
        assert_eq!(RESPONSES.len(), cases.len());
        for (key, versions, _, _) in &cases {
            let schema = RESPONSES
                .iter()
                .find(|s| s.api_key == *key)
                .expect("a schema");
            assert_eq!(schema.versions, *versions, "{}", schema.name);
        }
        for (key, _, max) in crate::net::versions::SUPPORTED {
            let max = crate::net::versions::client_max(*key).unwrap_or(*max);
            let schema = RESPONSES.iter().find(|s| s.api_key == *key as i16);
            assert!(
                schema.is_some_and(|s| s.versions.1 >= max),
                "{key:?} v{max} responses"
            );
        }
    }

    #[test]
    fn default_responses_walk_at_every_version() {
        for (key, (from, to), _, default) in cases() {
            let schema = RESPONSES
                .iter()
                .find(|s| s.api_key == key)
                .expect("a schema");
            for v in from..=to {
                assert_eq!(
                    walk_exact(schema, v, &default(v), 1 << 20),
                    Ok(()),
                    "{} v{v}",
                    schema.name
                );
            }
        }
    }

    #[test]
    fn the_tables_match_kafka_protocols_decoders() {
        let mut tried = 0;
        for (key, _, decoder, _) in cases() {
            let schema = RESPONSES
                .iter()
                .find(|s| s.api_key == key)
                .expect("a schema");
            tried += against_decoder(schema, decoder);
        }
        assert!(tried > 1_000, "only {tried} bodies");
    }
}
