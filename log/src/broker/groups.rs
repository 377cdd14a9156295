//! The group coordinator's requests: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups. This broker coordinates every group.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Broker, RequestContext};
use crate::coordinator::group::{ClientInfo, Delayed};

/// FindCoordinator key types: consumer group, transaction.
const KEY_GROUP: i8 = 0;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

impl Broker {
    fn coordinator(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::coordinator::group::GroupCoordinator> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn find_coordinator(&self, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
        let node = BrokerId(self.config.node_id);
        let host = text(self.config.advertised_host.clone());
        let port = self.config.advertised_port;
        // v0-3 ask for one key; v4 for a batch.
        let error = (req.key_type != KEY_GROUP).then_some(ResponseError::InvalidRequest);
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                match error {
                    Some(e) => c
                        .with_error_code(e.code())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                    None => c.with_node_id(node).with_host(host.clone()).with_port(port),
                }
            })
            .collect();
        let resp = FindCoordinatorResponse::default().with_coordinators(coordinators);
        match error {
            Some(e) => resp
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
            None => resp.with_node_id(node).with_host(host).with_port(port),
        }
    }

    pub(crate) async fn join_group(
        &self,
        ctx: &RequestContext,
        req: JoinGroupRequest,
    ) -> JoinGroupResponse {
        let client = ClientInfo {
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
        };
        let now = self.clock.now_ms();
        let outcome = {
            let rnd = uuid::Builder::from_random_bytes(self.random_bytes()).into_uuid();
            self.coordinator()
                .join(req, ctx.api_version, client, now, |client_id| {
                    format!("{client_id}-{rnd}")
                })
        };
        match outcome {
            Delayed::Now(r) => r,
            Delayed::Later(rx) => rx.await.unwrap_or_else(|_| {
                JoinGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code())
            }),
        }
    }

    pub(crate) async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let now = self.clock.now_ms();
        let outcome = self.coordinator().sync(req, now);
        match outcome {
            Delayed::Now(r) => r,
            Delayed::Later(rx) => rx.await.unwrap_or_else(|_| {
                SyncGroupResponse::default()
                    .with_error_code(ResponseError::RebalanceInProgress.code())
            }),
        }
    }

    pub(crate) fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let now = self.clock.now_ms();
        self.coordinator().heartbeat(req, now)
    }

    pub(crate) fn leave_group(&self, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let now = self.clock.now_ms();
        self.coordinator().leave(req, now)
    }

    pub(crate) fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let coordinator = self.coordinator();
        let groups = req
            .groups
            .into_iter()
            .map(|id| {
                let Some(g) = coordinator.group(id.0.as_str()) else {
                    // Kafka describes an unknown group as Dead, without an error.
                    return DescribedGroup::default()
                        .with_group_id(id)
                        .with_group_state(text("Dead"));
                };
                let protocol = g.protocol_name.clone().unwrap_or_default();
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(text(g.state.name()))
                    .with_protocol_type(text(g.protocol_type.clone().unwrap_or_default()))
                    .with_protocol_data(text(protocol.clone()))
                    .with_members(
                        g.members
                            .values()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(m.member_id.clone()))
                                    .with_group_instance_id(m.group_instance_id.clone().map(text))
                                    .with_client_id(text(m.client.client_id.clone()))
                                    .with_client_host(text(m.client.client_host.clone()))
                                    .with_member_metadata(m.metadata_for(&protocol))
                                    .with_member_assignment(m.assignment.clone())
                            })
                            .collect(),
                    )
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn list_groups(&self, req: ListGroupsRequest) -> ListGroupsResponse {
        let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
        let groups = self
            .coordinator()
            .list()
            .into_iter()
            .filter(|(_, _, state)| {
                states.is_empty() || states.contains(&state.name().to_lowercase())
            })
            .map(|(id, ptype, state)| {
                ListedGroup::default()
                    .with_group_id(GroupId(text(id)))
                    .with_protocol_type(text(ptype))
                    .with_group_state(text(state.name()))
                    .with_group_type(text("classic"))
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn delete_groups(&self, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let results = req
            .groups_names
            .into_iter()
            .map(|id| {
                let deleted = self.coordinator().delete(id.0.as_str());
                let code = deleted.err().map_or(0, |e| e.code());
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }
}
