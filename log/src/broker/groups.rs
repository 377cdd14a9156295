//! The group coordinator's requests: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups. This broker coordinates every group.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::cluster::coordinators::Coordinated;
use super::{Broker, RequestContext};
use crate::coordinator::group::offsets::{Committed, OffsetStore};
use crate::coordinator::group::{ClientInfo, Delayed, GroupCoordinator, GroupState};
use crate::storage::LogManager;

/// Each partition of an OffsetCommit: the commit to write, or why not.
type CommitPlan = Vec<(TopicName, Vec<(i32, Result<Committed, ResponseError>)>)>;
/// Each topic of an OffsetFetch: partitions with their commit, if any.
type FetchedOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;

/// FindCoordinator key types: consumer group, transaction.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

impl Broker {
    fn coordinator(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::coordinator::group::GroupCoordinator> {
        super::lock_groups(&self.groups, &self.config.group)
    }

    pub(crate) fn find_coordinator(&self, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
        let (mut node, mut host, mut port) = (
            BrokerId(self.config.node_id),
            text(self.config.advertised_host.clone()),
            self.config.advertised_port,
        );
        // v0-3 ask for one key; v4 for a batch.
        // Groups and transactional ids are both coordinated here.
        let mut error = (req.key_type != KEY_GROUP && req.key_type != KEY_TRANSACTION)
            .then_some(ResponseError::InvalidRequest);
        let kind = if req.key_type == KEY_TRANSACTION {
            Coordinated::Transaction
        } else {
            Coordinated::Group
        };
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                let located = match (error, self.cluster()) {
                    (Some(e), _) => Err(e),
                    (None, None) => Ok((node, host.clone(), port)),
                    (None, Some(cluster)) => self
                        .locate_coordinator(cluster, kind, k.as_str())
                        .map(|l| (BrokerId(l.node), text(l.host), l.port)),
                };
                match located {
                    Err(e) => c
                        .with_error_code(e.code())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                    Ok((n, h, p)) => c.with_node_id(n).with_host(h).with_port(p),
                }
            })
            .collect();
        // v0-3 ask for one key (`key`) and read the answer's top level.
        if let (None, Some(cluster)) = (error, self.cluster()) {
            if req.coordinator_keys.is_empty() {
                match self.locate_coordinator(cluster, kind, req.key.as_str()) {
                    Ok(l) => (node, host, port) = (BrokerId(l.node), text(l.host), l.port),
                    Err(e) => error = Some(e),
                }
            }
        }
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
        if let Err(e) = self.check_coordinator(Coordinated::Group, req.group_id.as_str()) {
            return JoinGroupResponse::default()
                .with_error_code(e.code())
                .with_generation_id(-1)
                .with_member_id(req.member_id);
        }
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
        if let Err(e) = self.check_coordinator(Coordinated::Group, req.group_id.as_str()) {
            return SyncGroupResponse::default().with_error_code(e.code());
        }
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
        if let Err(e) = self.check_coordinator(Coordinated::Group, req.group_id.as_str()) {
            return HeartbeatResponse::default().with_error_code(e.code());
        }
        let now = self.clock.now_ms();
        self.coordinator().heartbeat(req, now)
    }

    pub(crate) fn leave_group(&self, req: LeaveGroupRequest) -> LeaveGroupResponse {
        if let Err(e) = self.check_coordinator(Coordinated::Group, req.group_id.as_str()) {
            return LeaveGroupResponse::default().with_error_code(e.code());
        }
        let now = self.clock.now_ms();
        self.coordinator().leave(req, now)
    }

    pub(crate) fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let coordinator = self.coordinator();
        let ops = if req.include_authorized_operations {
            super::authorized::GROUP
        } else {
            i32::MIN
        };
        let groups = req
            .groups
            .into_iter()
            .map(|id| {
                if let Err(e) = self.check_coordinator(Coordinated::Group, id.0.as_str()) {
                    return DescribedGroup::default()
                        .with_group_id(id)
                        .with_error_code(e.code())
                        .with_authorized_operations(ops);
                }
                let Some(g) = coordinator.group(id.0.as_str()) else {
                    // A group known only by committed offsets is Empty; an unknown one is Dead
                    // (Kafka answers both without an error).
                    let known = !self.offsets().of_group(id.0.as_str()).is_empty();
                    let state = if known { "Empty" } else { "Dead" };
                    return DescribedGroup::default()
                        .with_group_id(id)
                        .with_group_state(text(state))
                        .with_authorized_operations(ops);
                };
                let protocol = g.protocol_name.clone().unwrap_or_default();
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_authorized_operations(ops)
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
        let mut listed = self.coordinator().list();
        for g in self.offsets().groups() {
            if !listed.iter().any(|(id, _, _)| *id == g) {
                listed.push((g, String::new(), GroupState::Empty));
            }
        }
        let groups = listed
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

    /// OffsetDelete (KIP-496): removes a group's committed offsets of the given partitions,
    /// except those of topics its members still subscribe to (GROUP_SUBSCRIBED_TO_TOPIC);
    /// unknown partitions answer UNKNOWN_TOPIC_OR_PARTITION, as in Kafka.
    pub(crate) fn offset_delete(
        &self,
        req: kafka_protocol::messages::OffsetDeleteRequest,
    ) -> kafka_protocol::messages::OffsetDeleteResponse {
        use crate::coordinator::group::Subscriptions;
        use kafka_protocol::messages::offset_delete_response::{
            OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
        };
        use kafka_protocol::messages::OffsetDeleteResponse;
        let group = req.group_id.0.to_string();
        let refuse = |e: ResponseError| OffsetDeleteResponse::default().with_error_code(e.code());
        if let Err(e) = self.check_coordinator(Coordinated::Group, &group) {
            return refuse(e);
        }
        let check = self.coordinator().offset_delete_check(&group);
        let subscribed = match check {
            Some(Ok(s)) => s,
            Some(Err(e)) => return refuse(e),
            // Known only by its committed offsets (as after a restart), or not at all.
            None if self.offsets().of_group(&group).is_empty() => {
                return refuse(ResponseError::GroupIdNotFound)
            }
            None => Subscriptions::Topics(BTreeSet::new()),
        };
        let mut doomed = Vec::new();
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let partitions = self.topic_partitions(&name);
                let keep = match &subscribed {
                    Subscriptions::All => true,
                    Subscriptions::Topics(ts) => ts.contains(&name),
                };
                let results = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let i = p.partition_index;
                        let code = if !partitions.is_some_and(|n| i >= 0 && i < n) {
                            ResponseError::UnknownTopicOrPartition.code()
                        } else if keep {
                            ResponseError::GroupSubscribedToTopic.code()
                        } else {
                            doomed.push((name.clone(), i, None));
                            0
                        };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(i)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(results)
            })
            .collect();
        let mut store = self.offsets();
        // Tombstones only for offsets that exist.
        let committed: BTreeSet<(String, i32)> = store
            .of_group(&group)
            .into_iter()
            .map(|((_, t, p), _)| (t, p))
            .collect();
        doomed.retain(|(t, p, _)| committed.contains(&(t.clone(), *p)));
        if let Err(e) = store.write(&self.logs, &group, doomed) {
            tracing::error!(group = %group, error = %e, "deleting committed offsets failed");
            return refuse(ResponseError::CoordinatorNotAvailable);
        }
        OffsetDeleteResponse::default().with_topics(topics)
    }

    pub(crate) fn delete_groups(&self, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let results = req
            .groups_names
            .into_iter()
            .map(|id| {
                let group = id.0.to_string();
                if let Err(e) = self.check_coordinator(Coordinated::Group, &group) {
                    return DeletableGroupResult::default()
                        .with_group_id(id)
                        .with_error_code(e.code());
                }
                let has_offsets = !self.offsets().of_group(&group).is_empty();
                let deleted = match self.coordinator().delete(&group) {
                    // A group known only by its committed offsets (e.g. after a restart).
                    Err(ResponseError::GroupIdNotFound) if has_offsets => Ok(()),
                    other => other,
                };
                let deleted = deleted.and_then(|()| {
                    let mut store = self.offsets();
                    let doomed = store
                        .of_group(&group)
                        .into_iter()
                        .map(|((_, t, p), _)| (t, p, None))
                        .collect();
                    store.write(&self.logs, &group, doomed).map_err(|e| {
                        tracing::error!(group = %group, error = %e, "deleting committed offsets failed");
                        ResponseError::CoordinatorNotAvailable
                    })
                });
                let code = deleted.err().map_or(0, |e| e.code());
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }
}

impl Broker {
    fn offsets(&self) -> std::sync::MutexGuard<'_, OffsetStore> {
        super::lock_offsets(&self.offsets, &self.logs)
    }

    /// Under the offsets lock, right before a write: whether this broker leads `group`'s
    /// `__consumer_offsets` partition (NOT_COORDINATOR if it just stopped: a follower's log
    /// is its leader's copy and takes no writes of its own).
    pub(crate) fn leads_group_partition(
        &self,
        store: &OffsetStore,
        group: &str,
    ) -> Result<(), ResponseError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        let tp = crate::types::TopicPartition::new(
            crate::coordinator::group::offsets::OFFSETS_TOPIC,
            store.partition_of(group),
        );
        match crate::sync::plain(&cluster.roles).get(&tp) {
            Some(super::cluster::Role::Leader(_)) => Ok(()),
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    pub(crate) async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = req.group_id.0.to_string();
        let now = self.clock.now_ms();
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        let allowed = self
            .check_coordinator(Coordinated::Group, &group)
            .and_then(|()| {
                self.coordinator().validate_commit(
                    &group,
                    req.member_id.as_str(),
                    instance.as_deref(),
                    req.generation_id_or_member_epoch,
                )
            });
        // Offset records hold the metadata behind a 16-bit length.
        let max_metadata = self.config.offset_metadata_max_bytes.min(i16::MAX as usize);
        // Per partition: the error, or the commit to write.
        let mut plan: CommitPlan = Vec::new();
        for t in req.topics {
            let partitions = self.topic_partitions(t.name.0.as_str());
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    // Kafka refuses commits for partitions that do not exist.
                    let known =
                        partitions.is_some_and(|n| p.partition_index >= 0 && p.partition_index < n);
                    let metadata = p
                        .committed_metadata
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    let too_large = metadata.len() > max_metadata;
                    let c = allowed
                        .and_then(|()| {
                            known
                                .then_some(())
                                .ok_or(ResponseError::UnknownTopicOrPartition)
                        })
                        .and_then(|()| {
                            (!too_large)
                                .then_some(())
                                .ok_or(ResponseError::OffsetMetadataTooLarge)
                        })
                        .map(|()| Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp_ms: now,
                        });
                    (p.partition_index, c)
                })
                .collect();
            plan.push((t.name, parts));
        }
        let writes: Vec<(String, i32, Option<Committed>)> = plan
            .iter()
            .flat_map(|(t, parts)| {
                parts.iter().filter_map(|(p, c)| {
                    c.as_ref()
                        .ok()
                        .map(|c| (t.0.to_string(), *p, Some(c.clone())))
                })
            })
            .collect();
        let wrote = !writes.is_empty();
        let mut written = {
            let mut store = self.offsets();
            self.leads_group_partition(&store, &group).and_then(|()| {
                store.write(&self.logs, &group, writes).map_err(|e| {
                    tracing::error!(group = %group, error = %e, "writing committed offsets failed");
                    ResponseError::CoordinatorNotAvailable
                })
            })
        };
        if written.is_ok() && wrote {
            written = self
                .coordinator_replicated(Coordinated::Group, &group)
                .await;
        }
        let topics = plan
            .into_iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, c)| {
                                let code = match (c, &written) {
                                    (Err(e), _) | (Ok(_), &Err(e)) => e.code(),
                                    (Ok(_), Ok(())) => 0,
                                };
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    pub(crate) fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        // require_stable (v7+, KIP-447): a partition whose offset sits in an open transaction
        // answers UNSTABLE_OFFSET_COMMIT, and the client retries, so a consumer taking over
        // never starts from an offset a committing transaction is about to move.
        let unstable = |group: &str| -> BTreeSet<(String, i32)> {
            if req.require_stable {
                self.unstable_offsets(group)
            } else {
                BTreeSet::new()
            }
        };
        let unstable_single = unstable(req.group_id.0.as_str());
        let unstable_groups: BTreeMap<String, BTreeSet<(String, i32)>> = req
            .groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), unstable(g.group_id.0.as_str())))
            .collect();
        let code_of = |unstable: &BTreeSet<(String, i32)>, topic: &str, partition: i32| {
            if unstable.contains(&(topic.to_string(), partition)) {
                ResponseError::UnstableOffsetCommit.code()
            } else {
                0
            }
        };
        let store = self.offsets();
        let fetch = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| -> FetchedOffsets {
            match topics {
                Some(ts) => ts
                    .into_iter()
                    .map(|(t, ps)| {
                        let parts = ps
                            .into_iter()
                            .map(|p| (p, store.get(group, &t, p).cloned()))
                            .collect();
                        (t, parts)
                    })
                    .collect(),
                None => {
                    let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                        BTreeMap::new();
                    for ((_, t, p), c) in store.of_group(group) {
                        by_topic.entry(t).or_default().push((p, Some(c)));
                    }
                    by_topic.into_iter().collect()
                }
            }
        };
        let part = |(p, c): (i32, Option<Committed>)| match c {
            Some(c) => (p, c.offset, c.leader_epoch, Some(text(c.metadata))),
            // No commit: offset -1 and empty metadata, no error (Kafka).
            None => (p, -1, -1, Some(text(""))),
        };
        if req.groups.is_empty() {
            // v0-7: one group.
            let group = req.group_id.0.to_string();
            if let Err(e) = self.check_coordinator(Coordinated::Group, &group) {
                return OffsetFetchResponse::default().with_error_code(e.code());
            }
            let topics = req.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let topics = fetch(&group, topics)
                .into_iter()
                .map(|(t, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(part)
                        .map(|(p, o, e, m)| {
                            let code = code_of(&unstable_single, &t, p);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(e)
                                .with_metadata(m)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(text(t)))
                        .with_partitions(partitions)
                })
                .collect();
            return OffsetFetchResponse::default().with_topics(topics);
        }
        // v8+: a batch of groups.
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let group = g.group_id.0.to_string();
                if let Err(e) = self.check_coordinator(Coordinated::Group, &group) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(e.code());
                }
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let unstable = &unstable_groups[&group];
                let topics = fetch(&group, topics)
                    .into_iter()
                    .map(|(t, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(part)
                            .map(|(p, o, e, m)| {
                                let code = code_of(unstable, &t, p);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(e)
                                    .with_metadata(m)
                                    .with_error_code(code)
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(text(t)))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    }
}

/// Expires the committed offsets of groups that have been empty for `retention_ms`, and of
/// groups without any membership state (standalone consumers) commit by commit, writing
/// tombstones so compaction removes them from `__consumer_offsets`.
pub(crate) fn expire_offsets(
    coordinator: &GroupCoordinator,
    store: &mut OffsetStore,
    logs: &LogManager,
    now: i64,
    retention_ms: i64,
) {
    let cutoff = now.saturating_sub(retention_ms);
    let empty: Vec<String> = coordinator.empty_since_before(cutoff);
    for group in store.groups() {
        let commits = store.of_group(&group);
        let doomed: Vec<(String, i32, Option<Committed>)> = commits
            .into_iter()
            .filter(|(_, c)| {
                if empty.contains(&group) {
                    true
                } else if coordinator.knows(&group) {
                    false
                } else {
                    c.commit_timestamp_ms <= cutoff
                }
            })
            .map(|((_, t, p), _)| (t, p, None))
            .collect();
        if doomed.is_empty() {
            continue;
        }
        let n = doomed.len();
        match store.write(logs, &group, doomed) {
            Ok(()) => tracing::info!(group = %group, offsets = n, "expired committed offsets"),
            Err(e) => tracing::error!(group = %group, error = %e, "expiring offsets failed"),
        }
    }
}
