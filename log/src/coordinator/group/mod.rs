//! Kafka's classic group protocol: JoinGroup (with KIP-394's MEMBER_ID_REQUIRED round),
//! SyncGroup, Heartbeat, LeaveGroup, DescribeGroups, ListGroups; states Empty /
//! PreparingRebalance / CompletingRebalance / Stable / Dead; generations; session and rebalance
//! timeouts driven by [`GroupCoordinator::tick`]; static membership (KIP-345).
//!
//! JoinGroup and SyncGroup are delayed operations: a call either answers at once or returns a
//! receiver that is answered when the rebalance reaches the right point (all members joined,
//! the rebalance timeout passed, the leader sent the assignment). The coordinator itself never
//! waits, so it runs the same under a real clock or a simulated one.

use std::collections::BTreeMap;

pub mod offsets;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// Group coordinator settings (Kafka's broker configs of the same names).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`: members per group.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
        }
    }
}

/// The topics a group's members subscribe to, for OffsetDelete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscriptions {
    Topics(std::collections::BTreeSet<String>),
    /// Not known (unreadable metadata): every topic counts as subscribed.
    All,
}

/// The topics of a consumer protocol subscription (any version: v0's topics lead every
/// version), read with bounds (the bytes are a client's): `None` if they do not parse.
fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut at = 2usize; // version
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let bytes = metadata.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(bytes)
    };
    let count = i32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?);
    // Each topic takes at least its 2-byte length.
    if count < 0 || count as usize > metadata.len() / 2 {
        return None;
    }
    (0..count)
        .map(|_| {
            let len = i16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?);
            let name = take(&mut at, usize::try_from(len).ok()?)?;
            String::from_utf8(name.to_vec()).ok()
        })
        .collect()
}

/// A group's state, named as Kafka names it in DescribeGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Who sent a request, for DescribeGroups.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client: ClientInfo,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    join_waiter: Option<oneshot::Sender<JoinGroupResponse>>,
    sync_waiter: Option<oneshot::Sender<SyncGroupResponse>>,
}

impl Member {
    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// One consumer group.
#[derive(Debug)]
pub(crate) struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, not yet joined, with when they were issued.
    pending: BTreeMap<String, i64>,
    /// When the current join phase ends even if members are missing.
    rebalance_deadline_ms: i64,
    /// Before this, a join phase waits for more members even if every known one has joined
    /// (`group.initial.rebalance.delay.ms` for a group starting from empty).
    join_not_before_ms: i64,
    /// When the group last became empty (for offset expiry).
    pub empty_since_ms: i64,
}

impl Group {
    fn new(group_id: &str, now: i64) -> Self {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            join_not_before_ms: 0,
            empty_since_ms: now,
        }
    }

    fn by_instance(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.group_instance_id.as_deref() == Some(instance))
            .map(|m| m.member_id.clone())
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<Vec<String>> = None;
        for m in self.members.values() {
            let names: Vec<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: Vec<(usize, String)> = candidates.iter().map(|c| (0, c.clone())).collect();
        for m in self.members.values() {
            if let Some((first, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(_, n)| n == first) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; ties go to the earlier candidate (the first member's preference order).
        votes
            .iter()
            .rev()
            .max_by_key(|(v, _)| *v)
            .map(|(_, n)| n.clone())
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(n, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(mn, _)| mn == n))
            })
    }
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn join_error(code: ResponseError, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code.code())
        .with_generation_id(-1)
        .with_member_id(text(member_id))
}

fn sync_error(code: ResponseError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(code.code())
}

/// A JoinGroup or SyncGroup answered now, or later through the receiver.
#[derive(Debug)]
pub enum Delayed<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// All groups of this coordinator.
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    config: GroupConfig,
    pub(crate) groups: BTreeMap<String, Group>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
        }
    }

    pub(crate) fn group(&self, group_id: &str) -> Option<&Group> {
        // (DescribeGroups reads groups through this.)
        self.groups.get(group_id)
    }

    /// JoinGroup. `version` decides whether a new member first gets MEMBER_ID_REQUIRED
    /// (v4+, KIP-394); `new_member_id` makes the id handed to a new member.
    pub fn join(
        &mut self,
        req: JoinGroupRequest,
        version: i16,
        client: ClientInfo,
        now: i64,
        new_member_id: impl FnOnce(&str) -> String,
    ) -> Delayed<JoinGroupResponse> {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        if !offsets::valid_group_id(&group_id) {
            return Delayed::Now(join_error(ResponseError::InvalidGroupId, &member_id));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Delayed::Now(join_error(ResponseError::InvalidSessionTimeout, &member_id));
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let protocol_type = req.protocol_type.to_string();
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        // Before v4 (no rebalance timeout field before v1) the session timeout stands in.
        let rebalance_timeout_ms = if req.rebalance_timeout_ms > 0 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        };
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let max_size = self.config.max_size;
        let group = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id, now));
        if group.state == GroupState::Dead {
            return Delayed::Now(join_error(
                ResponseError::CoordinatorNotAvailable,
                &member_id,
            ));
        }
        if !group.supports(&protocol_type, &protocols) {
            return Delayed::Now(join_error(
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            ));
        }

        // A member id the coordinator just made for this request (static members and pre-v4
        // clients skip the MEMBER_ID_REQUIRED round).
        let mut fresh = false;
        let member_id = if member_id.is_empty() {
            // A static member coming back takes its old place under a new id (KIP-345).
            if let Some(instance) = &instance {
                if let Some(old_id) = group.by_instance(instance) {
                    let mut member = group.members.remove(&old_id).expect("listed");
                    let new_id = new_member_id(&client.client_id);
                    if let Some(w) = member.join_waiter.take() {
                        let _ = w.send(join_error(ResponseError::FencedInstanceId, &old_id));
                    }
                    if let Some(w) = member.sync_waiter.take() {
                        let _ = w.send(sync_error(ResponseError::FencedInstanceId));
                    }
                    member.member_id = new_id.clone();
                    member.last_heartbeat_ms = now;
                    member.client = client.clone();
                    let unchanged = member.protocols == protocols;
                    member.protocols = protocols.clone();
                    if group.leader_id.as_deref() == Some(old_id.as_str()) {
                        group.leader_id = Some(new_id.clone());
                    }
                    group.members.insert(new_id.clone(), member);
                    if group.state == GroupState::Stable && unchanged {
                        // Same subscription: no rebalance, the member gets its generation back.
                        let leader = group.leader_id.clone().unwrap_or_default();
                        return Delayed::Now(
                            JoinGroupResponse::default()
                                .with_generation_id(group.generation_id)
                                .with_protocol_type(group.protocol_type.clone().map(text))
                                .with_protocol_name(group.protocol_name.clone().map(text))
                                .with_leader(text(leader))
                                .with_member_id(text(new_id)),
                        );
                    }
                    return Self::join_known(group, new_id, protocols, false, now, initial_delay);
                }
            }
            if group.members.len() + group.pending.len() >= max_size {
                return Delayed::Now(join_error(ResponseError::GroupMaxSizeReached, ""));
            }
            let new_id = new_member_id(&client.client_id);
            if version >= 4 && instance.is_none() {
                // KIP-394: hand out the id first; the member joins with it in a second round.
                group.pending.insert(new_id.clone(), now);
                return Delayed::Now(join_error(ResponseError::MemberIdRequired, &new_id));
            }
            fresh = true;
            new_id
        } else {
            member_id
        };

        let known = group.members.contains_key(&member_id);
        if !known {
            let pending = group.pending.remove(&member_id).is_some();
            if !pending && !fresh {
                return Delayed::Now(join_error(ResponseError::UnknownMemberId, &member_id));
            }
            if group.members.len() >= max_size {
                return Delayed::Now(join_error(ResponseError::GroupMaxSizeReached, &member_id));
            }
            // The first member of an empty group sets its protocol type (Kafka's add).
            if group.members.is_empty() {
                group.protocol_type = Some(protocol_type);
            }
            group.members.insert(
                member_id.clone(),
                Member {
                    member_id: member_id.clone(),
                    group_instance_id: instance,
                    client,
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms,
                    protocols: protocols.clone(),
                    assignment: Bytes::new(),
                    last_heartbeat_ms: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        } else if let Some(m) = group.members.get_mut(&member_id) {
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = rebalance_timeout_ms;
            m.client = client;
        }
        tracing::debug!(group = %group.group_id, member = %member_id, new = !known, state = ?group.state, generation = group.generation_id, "join");
        Self::join_known(group, member_id, protocols, !known, now, initial_delay)
    }

    /// A member of the group (re)joins: start or continue a rebalance and wait for it.
    fn join_known(
        group: &mut Group,
        member_id: String,
        protocols: Vec<(String, Bytes)>,
        new_member: bool,
        now: i64,
        initial_delay: i64,
    ) -> Delayed<JoinGroupResponse> {
        let member = group.members.get_mut(&member_id).expect("member present");
        let changed = member.protocols != protocols;
        member.protocols = protocols;
        member.last_heartbeat_ms = now;
        let is_leader = group.leader_id.as_deref() == Some(member_id.as_str());
        match group.state {
            GroupState::Stable if !changed && !is_leader && !new_member => {
                // A follower rejoining with nothing new gets the current generation (Kafka).
                return Delayed::Now(
                    JoinGroupResponse::default()
                        .with_generation_id(group.generation_id)
                        .with_protocol_type(group.protocol_type.clone().map(text))
                        .with_protocol_name(group.protocol_name.clone().map(text))
                        .with_leader(text(group.leader_id.clone().unwrap_or_default()))
                        .with_member_id(text(member_id)),
                );
            }
            GroupState::CompletingRebalance if !changed && !new_member => {
                // A retried JoinGroup (a lost response) changes nothing: answer it again.
                return Delayed::Now(Self::join_response(group, &member_id));
            }
            GroupState::Empty => {
                Self::prepare_rebalance(group, now, initial_delay);
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                Self::prepare_rebalance(group, now, 0);
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = group.members.get_mut(&member_id) {
            m.join_waiter = Some(tx);
        }
        Self::maybe_complete_join(group, now);
        Delayed::Later(rx)
    }

    fn prepare_rebalance(group: &mut Group, now: i64, initial_delay: i64) {
        // Members waiting on SyncGroup must rejoin.
        for m in group.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(sync_error(ResponseError::RebalanceInProgress));
            }
        }
        let timeout = group
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        group.rebalance_deadline_ms = now + timeout.max(initial_delay);
        group.join_not_before_ms = now + initial_delay;
        group.state = GroupState::PreparingRebalance;
    }

    /// Ends the join phase when every member has rejoined (and any initial delay is over), or
    /// when the rebalance timeout has passed (dropping those that did not rejoin).
    fn maybe_complete_join(group: &mut Group, now: i64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = group.members.values().all(|m| m.join_waiter.is_some());
        let timed_out = now >= group.rebalance_deadline_ms;
        if !(timed_out
            || (all_joined && now >= group.join_not_before_ms && group.pending.is_empty()))
        {
            return;
        }
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = group
            .members
            .values()
            // Static members keep their place until their session expires (KIP-345).
            .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            tracing::info!(group = %group.group_id, member = %id, "member did not rejoin within the rebalance timeout; removed");
            group.members.remove(&id);
        }
        group.pending.clear();
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.generation_id += 1;
            group.protocol_name = None;
            group.leader_id = None;
            group.empty_since_ms = now;
            return;
        }
        group.generation_id += 1;
        group.protocol_name = group.select_protocol();
        if group
            .leader_id
            .as_ref()
            .is_none_or(|l| !group.members.contains_key(l))
        {
            group.leader_id = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        tracing::debug!(group = %group.group_id, generation = group.generation_id, members = ?group.members.keys().collect::<Vec<_>>(), "join complete");
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let leader = group.leader_id.clone().unwrap_or_default();
        let all_members: Vec<JoinGroupResponseMember> = group
            .members
            .values()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(text(m.member_id.clone()))
                    .with_group_instance_id(m.group_instance_id.clone().map(text))
                    .with_metadata(m.metadata_for(&protocol))
            })
            .collect();
        for m in group.members.values_mut() {
            m.last_heartbeat_ms = now;
            if let Some(w) = m.join_waiter.take() {
                let members = if m.member_id == leader {
                    all_members.clone()
                } else {
                    Vec::new()
                };
                let _ = w.send(
                    JoinGroupResponse::default()
                        .with_generation_id(group.generation_id)
                        .with_protocol_type(group.protocol_type.clone().map(text))
                        .with_protocol_name(Some(text(protocol.clone())))
                        .with_leader(text(leader.clone()))
                        .with_member_id(text(m.member_id.clone()))
                        .with_members(members),
                );
            }
        }
    }

    /// The JoinGroup answer of the current generation for `member_id` (the member list goes
    /// to the leader only).
    fn join_response(group: &Group, member_id: &str) -> JoinGroupResponse {
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let leader = group.leader_id.clone().unwrap_or_default();
        let members = if member_id == leader {
            group
                .members
                .values()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(m.member_id.clone()))
                        .with_group_instance_id(m.group_instance_id.clone().map(text))
                        .with_metadata(m.metadata_for(&protocol))
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .with_generation_id(group.generation_id)
            .with_protocol_type(group.protocol_type.clone().map(text))
            .with_protocol_name(Some(text(protocol)))
            .with_leader(text(leader))
            .with_member_id(text(member_id))
            .with_members(members)
    }

    /// Checks that `member_id` (or, for a static member, its instance id) is a member of the
    /// current generation.
    fn check_member(
        group: &Group,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        let Some(member) = group.members.get(member_id) else {
            if let Some(i) = instance {
                if group.by_instance(i).is_some() {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
            return Err(ResponseError::UnknownMemberId);
        };
        if let (Some(i), Some(mi)) = (instance, member.group_instance_id.as_deref()) {
            if i != mi {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        if generation_id != group.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// SyncGroup: the leader brings the assignment, which every member then receives.
    pub fn sync(&mut self, req: SyncGroupRequest, now: i64) -> Delayed<SyncGroupResponse> {
        tracing::debug!(group = %req.group_id.0, member = %req.member_id, generation = req.generation_id, "sync");
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let Some(group) = self.groups.get_mut(&group_id) else {
            return Delayed::Now(sync_error(ResponseError::UnknownMemberId));
        };
        let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
        if let Err(code) =
            Self::check_member(group, &member_id, instance.as_deref(), req.generation_id)
        {
            return Delayed::Now(sync_error(code));
        }
        let type_ok = req
            .protocol_type
            .as_ref()
            .is_none_or(|t| group.protocol_type.as_deref() == Some(t.as_str()));
        let name_ok = req
            .protocol_name
            .as_ref()
            .is_none_or(|n| group.protocol_name.as_deref() == Some(n.as_str()));
        if !type_ok || !name_ok {
            return Delayed::Now(sync_error(ResponseError::InconsistentGroupProtocol));
        }
        let ok = |g: &Group, assignment: Bytes| {
            SyncGroupResponse::default()
                .with_protocol_type(g.protocol_type.clone().map(text))
                .with_protocol_name(g.protocol_name.clone().map(text))
                .with_assignment(assignment)
        };
        match group.state {
            GroupState::PreparingRebalance => {
                Delayed::Now(sync_error(ResponseError::RebalanceInProgress))
            }
            GroupState::Empty | GroupState::Dead => {
                Delayed::Now(sync_error(ResponseError::UnknownMemberId))
            }
            GroupState::Stable => {
                let m = group.members.get_mut(&member_id).expect("checked");
                m.last_heartbeat_ms = now;
                let a = m.assignment.clone();
                Delayed::Now(ok(group, a))
            }
            GroupState::CompletingRebalance => {
                group
                    .members
                    .get_mut(&member_id)
                    .expect("checked")
                    .last_heartbeat_ms = now;
                if group.leader_id.as_deref() != Some(member_id.as_str()) {
                    let (tx, rx) = oneshot::channel();
                    group
                        .members
                        .get_mut(&member_id)
                        .expect("checked")
                        .sync_waiter = Some(tx);
                    return Delayed::Later(rx);
                }
                let assignments: BTreeMap<String, Bytes> = req
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect();
                for m in group.members.values_mut() {
                    m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
                }
                group.state = GroupState::Stable;
                let (ptype, pname) = (group.protocol_type.clone(), group.protocol_name.clone());
                for m in group.members.values_mut() {
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(
                            SyncGroupResponse::default()
                                .with_protocol_type(ptype.clone().map(text))
                                .with_protocol_name(pname.clone().map(text))
                                .with_assignment(m.assignment.clone()),
                        );
                    }
                }
                let a = group.members[&member_id].assignment.clone();
                Delayed::Now(ok(group, a))
            }
        }
    }

    /// Heartbeat: keeps the member's session alive and tells it when to rejoin.
    pub fn heartbeat(&mut self, req: HeartbeatRequest, now: i64) -> HeartbeatResponse {
        let code = (|| {
            let group = self
                .groups
                .get_mut(req.group_id.0.as_str())
                .ok_or(ResponseError::UnknownMemberId)?;
            let member_id = req.member_id.to_string();
            let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
            Self::check_member(group, &member_id, instance.as_deref(), req.generation_id)?;
            group
                .members
                .get_mut(&member_id)
                .expect("checked")
                .last_heartbeat_ms = now;
            match group.state {
                GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
                GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
                _ => Ok(()),
            }
        })();
        if let Err(e) = code {
            tracing::debug!(group = %req.group_id.0, member = %req.member_id, generation = req.generation_id, error = ?e, "heartbeat refused");
        }
        HeartbeatResponse::default().with_error_code(code.err().map_or(0, |e| e.code()))
    }

    /// LeaveGroup: v0-2 name one member; v3+ a batch, by member id or instance id.
    pub fn leave(&mut self, req: LeaveGroupRequest, now: i64) -> LeaveGroupResponse {
        let Some(group) = self.groups.get_mut(req.group_id.0.as_str()) else {
            return LeaveGroupResponse::default()
                .with_error_code(ResponseError::UnknownMemberId.code());
        };
        let batch = !req.members.is_empty();
        let leaving: Vec<(String, Option<String>)> = if batch {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let mut responses = Vec::new();
        let mut removed = false;
        for (member_id, instance) in leaving {
            // A member id handed out by MEMBER_ID_REQUIRED but never used.
            if instance.is_none() && group.pending.remove(&member_id).is_some() {
                removed = true;
                responses.push(MemberResponse::default().with_member_id(text(member_id)));
                continue;
            }
            let target = match (&instance, member_id.is_empty()) {
                (Some(i), true) => group.by_instance(i),
                // An instance known under another id means the caller is a zombie (fenced below).
                (Some(i), false) => group.by_instance(i).filter(|id| *id == member_id),
                (None, _) => group
                    .members
                    .contains_key(&member_id)
                    .then(|| member_id.clone()),
            };
            let code = match target {
                Some(id) => {
                    if let Some(mut m) = group.members.remove(&id) {
                        if let Some(w) = m.join_waiter.take() {
                            let _ = w.send(join_error(ResponseError::UnknownMemberId, &id));
                        }
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(sync_error(ResponseError::UnknownMemberId));
                        }
                    }
                    removed = true;
                    0
                }
                None if instance
                    .as_ref()
                    .is_some_and(|i| group.by_instance(i).is_some()) =>
                {
                    ResponseError::FencedInstanceId.code()
                }
                None => ResponseError::UnknownMemberId.code(),
            };
            responses.push(
                MemberResponse::default()
                    .with_member_id(text(member_id))
                    .with_group_instance_id(instance.map(text))
                    .with_error_code(code),
            );
        }
        if removed {
            Self::members_changed(group, now);
        }
        let top = if batch { 0 } else { responses[0].error_code };
        LeaveGroupResponse::default()
            .with_error_code(top)
            .with_members(if batch { responses } else { Vec::new() })
    }

    /// After members left or expired: rebalance the rest, or become Empty.
    fn members_changed(group: &mut Group, now: i64) {
        if group.members.is_empty() {
            // Anyone waiting is gone too; the group keeps its offsets.
            group.state = GroupState::Empty;
            group.generation_id += 1;
            group.protocol_name = None;
            group.leader_id = None;
            group.empty_since_ms = now;
            return;
        }
        if group
            .leader_id
            .as_ref()
            .is_some_and(|l| !group.members.contains_key(l))
        {
            group.leader_id = None;
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                Self::prepare_rebalance(group, now, 0)
            }
            GroupState::PreparingRebalance => Self::maybe_complete_join(group, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Expires members whose session ran out, ends join phases whose time is up, and forgets
    /// member ids handed out but never used. Call it regularly with the current time.
    pub fn tick(&mut self, now: i64) {
        for group in self.groups.values_mut() {
            let expired: Vec<String> = group
                .members
                .values()
                // A member waiting in a join phase is not expected to heartbeat.
                .filter(|m| m.join_waiter.is_none())
                .filter(|m| now - m.last_heartbeat_ms > i64::from(m.session_timeout_ms))
                .map(|m| m.member_id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.group_id, member = %id, "member session expired");
                if let Some(mut m) = group.members.remove(id) {
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(sync_error(ResponseError::UnknownMemberId));
                    }
                }
            }
            let max_session = group
                .members
                .values()
                .map(|m| i64::from(m.session_timeout_ms))
                .max()
                .unwrap_or(30_000);
            group
                .pending
                .retain(|_, issued| now - *issued <= max_session);
            if !expired.is_empty() {
                Self::members_changed(group, now);
            } else {
                Self::maybe_complete_join(group, now);
            }
        }
    }

    /// Whether a member may commit offsets for `group_id` now (Kafka's rules for the classic
    /// protocol): a generation of -1 with no member id is an admin or standalone consumer and may
    /// commit only to a group without members; otherwise the member must be in the current
    /// generation of a group that is not rebalancing.
    pub fn validate_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if !offsets::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get(group_id) else {
            return if generation_id < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation_id < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        Self::check_member(group, member_id, instance, generation_id)?;
        match group.state {
            // Kafka takes commits while a rebalance is being prepared (members commit before
            // they rejoin) and refuses them only while the new assignment is being synced.
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Groups that have been Empty since before `cutoff_ms` (their offsets may expire).
    pub fn empty_since_before(&self, cutoff_ms: i64) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.state == GroupState::Empty && g.empty_since_ms <= cutoff_ms)
            .map(|g| g.group_id.clone())
            .collect()
    }

    /// Whether the coordinator tracks the group (members or a past generation).
    pub fn knows(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// OffsetDelete's check of a group the coordinator tracks (Kafka's
    /// `ClassicGroup.validateOffsetDelete` and `isSubscribedToTopic`): a Dead group is
    /// GROUP_ID_NOT_FOUND, a non-consumer group with members NON_EMPTY_GROUP; otherwise the
    /// topics its members subscribe to, whose offsets must stay. `None`: the coordinator does
    /// not track the group.
    pub fn offset_delete_check(
        &self,
        group_id: &str,
    ) -> Option<Result<Subscriptions, ResponseError>> {
        let g = self.groups.get(group_id)?;
        let consumer = g.protocol_type.as_deref() == Some("consumer");
        Some(match g.state {
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => Ok(Subscriptions::Topics(Default::default())),
            _ if !consumer => Err(ResponseError::NonEmptyGroup),
            _ => {
                let protocol = g.protocol_name.as_deref();
                let topics = protocol.and_then(|p| {
                    g.members
                        .values()
                        .try_fold(std::collections::BTreeSet::new(), |mut all, m| {
                            all.extend(subscribed_topics(&m.metadata_for(p))?);
                            Some(all)
                        })
                });
                // Members whose subscriptions cannot be read keep every topic (as Kafka).
                Ok(topics.map_or(Subscriptions::All, Subscriptions::Topics))
            }
        })
    }

    /// Forgets the groups `moved` selects: another broker coordinates them now. Members
    /// waiting in a JoinGroup or SyncGroup see their answer dropped and retry elsewhere.
    pub fn forget_where(&mut self, moved: impl Fn(&str) -> bool) {
        self.groups.retain(|id, _| !moved(id));
    }

    /// Deletes an empty group (DeleteGroups); fails for a group with members.
    pub fn delete(&mut self, group_id: &str) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            None => Err(ResponseError::GroupIdNotFound),
            Some(g) if !g.members.is_empty() => Err(ResponseError::NonEmptyGroup),
            Some(_) => {
                self.groups.remove(group_id);
                Ok(())
            }
        }
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.group_id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }
}
