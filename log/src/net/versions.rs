//! The APIs and versions rill speaks on the wire, the ApiVersions answer built from them, and
//! the fitting of a response to an older version (fields an old version cannot carry are reset
//! to their defaults, since the encoder refuses to drop a set field silently).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, BrokerId, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Every API rill handles over TCP, with the versions it advertises (each one handled and
/// tested; the non-flexible ones stay for clients such as kafkajs that speak only those).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    // v2's transactional id pattern is not applied: not advertised.
    (ApiKey::ListTransactions, 0, 1),
];

/// The advertised range of `key`, if rill handles it.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// The ApiVersions answer: our ranges, with `error` (UNSUPPORTED_VERSION when the client asked
/// for an ApiVersions version we do not speak; it then reads the v0 encoding).
pub fn api_versions_response(error: Option<ResponseError>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

/// Resets what `version` of the response cannot carry. The handlers fill every field they
/// know; this drops the ones an older client would not understand, as Kafka's
/// serializers do.
pub fn fit_response(resp: &mut ResponseKind, version: i16) {
    match resp {
        ResponseKind::Metadata(r) => {
            if !(8..=10).contains(&version) {
                r.cluster_authorized_operations = i32::MIN;
            }
            if version < 8 {
                for t in &mut r.topics {
                    t.topic_authorized_operations = i32::MIN;
                }
            }
        }
        ResponseKind::Produce(r) => {
            if version < 10 {
                r.node_endpoints.clear();
            }
            for p in r
                .responses
                .iter_mut()
                .flat_map(|t| &mut t.partition_responses)
            {
                if version < 10 {
                    p.current_leader = Default::default();
                }
                if version < 8 {
                    p.record_errors.clear();
                    p.error_message = None;
                }
            }
        }
        ResponseKind::Fetch(r) => {
            if version < 7 {
                r.session_id = 0;
            }
            if version < 16 {
                r.node_endpoints.clear();
            }
            for p in r.responses.iter_mut().flat_map(|t| &mut t.partitions) {
                if version < 11 {
                    p.preferred_read_replica = BrokerId(-1);
                }
                if version < 12 {
                    p.diverging_epoch = Default::default();
                    p.current_leader = Default::default();
                    p.snapshot_id = Default::default();
                }
            }
        }
        // v0 has no top-level error: the partitions carry it.
        ResponseKind::ElectLeaders(r) if version < 1 => r.error_code = 0,
        // v0 cannot say false (KIP-860 came with v1).
        ResponseKind::AlterPartitionReassignments(r) if version < 1 => {
            r.allow_replication_factor_change = true;
        }
        ResponseKind::DescribeLogDirs(r) => {
            if version < 3 {
                r.error_code = 0;
            }
            if version < 4 {
                for d in &mut r.results {
                    d.total_bytes = -1;
                    d.usable_bytes = -1;
                }
            }
        }
        ResponseKind::ListOffsets(r) if version < 4 => {
            for p in r.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                p.leader_epoch = -1;
            }
        }
        ResponseKind::FindCoordinator(r) if version >= 4 => {
            r.error_code = 0;
            r.error_message = None;
            r.node_id = BrokerId(0);
            r.host = StrBytes::default();
            r.port = 0;
        }
        ResponseKind::FindCoordinator(r) => r.coordinators.clear(),
        ResponseKind::JoinGroup(r) if version < 9 => r.skip_assignment = false,
        ResponseKind::LeaveGroup(r) if version < 3 => r.members.clear(),
        ResponseKind::DescribeGroups(r) => {
            for g in &mut r.groups {
                if version < 3 {
                    g.authorized_operations = i32::MIN;
                }
                if version < 6 {
                    g.error_message = None;
                }
            }
        }
        ResponseKind::CreateTopics(r) if version < 5 => {
            for t in &mut r.topics {
                t.configs = None;
            }
        }
        ResponseKind::DescribeCluster(r) if version < 1 => r.endpoint_type = 1,
        _ => {}
    }
}

/// The highest version rill's own clients send of `key`: what the broker side speaks, except
/// where a newer version changes the request's shape (Fetch 13 names topics by id, OffsetFetch
/// 8 batches groups), which the clients do not build.
pub fn client_max(key: ApiKey) -> Option<i16> {
    let (_, max) = supported(key)?;
    Some(match key {
        ApiKey::OffsetFetch => max.min(7),
        _ => max,
    })
}

/// Moves and resets what `version` of the request cannot carry. rill's clients fill requests
/// in their newest shape; an older broker gets the same meaning in the older layout (or loses
/// an optional feature, e.g. static membership before JoinGroup v5).
pub fn fit_request(req: &mut RequestKind, version: i16) {
    match req {
        RequestKind::Metadata(r) => {
            if version < 4 {
                r.allow_auto_topic_creation = true;
            }
            if !(8..=10).contains(&version) {
                r.include_cluster_authorized_operations = false;
            }
            if version < 8 {
                r.include_topic_authorized_operations = false;
            }
        }
        RequestKind::Fetch(r) => {
            if version < 7 {
                r.forgotten_topics_data.clear();
            }
            if version < 12 {
                for p in r.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                    p.last_fetched_epoch = -1;
                }
            }
        }
        RequestKind::ListOffsets(r) if version < 2 => r.isolation_level = 0,
        RequestKind::FindCoordinator(r) => {
            if version < 1 {
                r.key_type = 0;
            }
            if version >= 4 {
                if r.coordinator_keys.is_empty() && !r.key.is_empty() {
                    r.coordinator_keys.push(std::mem::take(&mut r.key));
                }
                r.key = StrBytes::default();
            } else {
                if r.key.is_empty() && !r.coordinator_keys.is_empty() {
                    r.key = r.coordinator_keys.swap_remove(0);
                }
                r.coordinator_keys.clear();
            }
        }
        RequestKind::JoinGroup(r) if version < 5 => r.group_instance_id = None,
        RequestKind::SyncGroup(r) if version < 3 => r.group_instance_id = None,
        RequestKind::Heartbeat(r) if version < 3 => r.group_instance_id = None,
        RequestKind::OffsetCommit(r) if version < 7 => r.group_instance_id = None,
        RequestKind::LeaveGroup(r) if version < 3 => {
            if r.member_id.is_empty() {
                if let Some(m) = r.members.first() {
                    r.member_id = m.member_id.clone();
                }
            }
            r.members.clear();
        }
        RequestKind::LeaveGroup(r) => {
            if r.members.is_empty() && !r.member_id.is_empty() {
                r.members.push(
                    kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                        .with_member_id(r.member_id.clone()),
                );
            }
            r.member_id = StrBytes::default();
            if version < 5 {
                for m in &mut r.members {
                    m.reason = None;
                }
            }
        }
        RequestKind::OffsetFetch(r) if version < 7 => r.require_stable = false,
        RequestKind::DescribeGroups(r) if version < 3 => r.include_authorized_operations = false,
        RequestKind::ListGroups(r) => {
            if version < 4 {
                r.states_filter.clear();
            }
            if version < 5 {
                r.types_filter.clear();
            }
        }
        RequestKind::DeleteTopics(r) if version < 6 => {
            if r.topic_names.is_empty() {
                r.topic_names = r.topics.iter().filter_map(|t| t.name.clone()).collect();
            }
            r.topics.clear();
        }
        RequestKind::DeleteTopics(r) => r.topic_names.clear(),
        RequestKind::DescribeConfigs(r) if version < 3 => r.include_documentation = false,
        RequestKind::DescribeCluster(r) if version < 1 => r.endpoint_type = 1,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ElectLeadersResponse;
    use kafka_protocol::protocol::Encodable;

    /// ElectLeaders v0 has no top-level error code (the partitions carry it): a refusal
    /// answered to a v0 client encodes once fitted, and would not without it.
    #[test]
    fn an_elect_leaders_refusal_fits_version_0() {
        let refused =
            ElectLeadersResponse::default().with_error_code(ResponseError::InvalidRequest.code());
        let mut buf = bytes::BytesMut::new();
        assert!(refused.encode(&mut buf, 0).is_err());
        let mut resp = ResponseKind::ElectLeaders(refused);
        fit_response(&mut resp, 0);
        let ResponseKind::ElectLeaders(fitted) = resp else {
            unreachable!()
        };
        assert!(fitted.encode(&mut buf, 0).is_ok());
        assert_eq!(fitted.error_code, 0);
    }
}
