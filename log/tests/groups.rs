//! Consumer groups through the broker's handlers (classic protocol): joins with the
//! MEMBER_ID_REQUIRED round, generations, leader assignment through SyncGroup, heartbeats,
//! session expiry by the injected clock, rebalances on join and leave, static membership,
//! describe / list / delete.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rill_log::broker::{Broker, BrokerConfig, RequestContext};
use rill_log::time::ManualClock;

const SESSION_MS: i32 = 10_000;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn setup(dir: &std::path::Path) -> (Arc<Broker>, Arc<ManualClock>) {
    let clock = ManualClock::new(1_000_000);
    let mut config = BrokerConfig::new(dir);
    config.seed = 1;
    config.group.initial_rebalance_delay_ms = 0;
    config.offsets_topic_num_partitions = 3;
    // The test drives the timers itself with `tick`.
    config.group_tick_ms = 3_600_000;
    (
        Arc::new(Broker::open(config, clock.clone()).unwrap()),
        clock,
    )
}

fn ctx(client: &str) -> RequestContext {
    RequestContext {
        api_version: 9,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn join_req(member_id: &str, instance: Option<&str>, metadata: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from(metadata.to_string()))])
}

async fn join(b: &Broker, client: &str, req: JoinGroupRequest) -> JoinGroupResponse {
    match b
        .handle(&ctx(client), RequestKind::JoinGroup(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::JoinGroup(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// The first round of a new member: MEMBER_ID_REQUIRED with the id to use.
async fn member_id(b: &Broker, client: &str) -> String {
    let r = join(b, client, join_req("", None, client)).await;
    assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
    assert!(r.member_id.starts_with(client));
    r.member_id.to_string()
}

async fn sync(
    b: &Broker,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from(a.to_string()))
                })
                .collect(),
        );
    match b
        .handle(&ctx("x"), RequestKind::SyncGroup(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::SyncGroup(r)) => r,
        other => panic!("{other:?}"),
    }
}

async fn heartbeat(b: &Broker, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member));
    match b
        .handle(&ctx("x"), RequestKind::Heartbeat(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::Heartbeat(r)) => r.error_code,
        other => panic!("{other:?}"),
    }
}

async fn describe(
    b: &Broker,
) -> kafka_protocol::messages::describe_groups_response::DescribedGroup {
    match b
        .handle(
            &ctx("x"),
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
            ),
        )
        .await
        .unwrap()
    {
        Some(ResponseKind::DescribeGroups(r)) => r.groups.into_iter().next().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Three members join concurrently; returns (member ids, generation, leader).
async fn three_members(b: &Arc<Broker>) -> (Vec<String>, i32, String) {
    let mut ids = Vec::new();
    for c in ["c1", "c2", "c3"] {
        ids.push(member_id(b, c).await);
    }
    let tasks: Vec<_> = ids
        .iter()
        .zip(["c1", "c2", "c3"])
        .map(|(id, c)| {
            let (b, id) = (Arc::clone(b), id.clone());
            tokio::spawn(async move { join(&b, c, join_req(&id, None, c)).await })
        })
        .collect();
    let mut responses = Vec::new();
    for t in tasks {
        responses.push(t.await.unwrap());
    }
    let generation = responses[0].generation_id;
    let leader = responses[0].leader.to_string();
    for r in &responses {
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, generation);
        assert_eq!(r.leader.as_str(), leader);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        // Only the leader receives the members and their metadata.
        if r.member_id.as_str() == leader {
            let mut got: Vec<(String, String)> = r
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        String::from_utf8(m.metadata.to_vec()).unwrap(),
                    )
                })
                .collect();
            got.sort();
            let mut want: Vec<(String, String)> = ids
                .iter()
                .zip(["c1", "c2", "c3"])
                .map(|(i, c)| (i.clone(), c.to_string()))
                .collect();
            want.sort();
            assert_eq!(got, want);
        } else {
            assert!(r.members.is_empty());
        }
    }
    (ids, generation, leader)
}

/// Everyone syncs; the leader brings `assignment of m = "a-" + m`.
async fn sync_all(b: &Arc<Broker>, ids: &[String], generation: i32, leader: &str) {
    let followers: Vec<_> = ids
        .iter()
        .filter(|i| i.as_str() != leader)
        .map(|id| {
            let (b, id) = (Arc::clone(b), id.clone());
            tokio::spawn(async move { (id.clone(), sync(&b, &id, generation, &[]).await) })
        })
        .collect();
    tokio::task::yield_now().await;
    let owned: Vec<(String, String)> = ids.iter().map(|i| (i.clone(), format!("a-{i}"))).collect();
    let assignments: Vec<(&str, &str)> = owned
        .iter()
        .map(|(i, a)| (i.as_str(), a.as_str()))
        .collect();
    let r = sync(b, leader, generation, &assignments).await;
    assert_eq!(
        (r.error_code, r.assignment.to_vec()),
        (0, format!("a-{leader}").into_bytes())
    );
    for f in followers {
        let (id, r) = f.await.unwrap();
        assert_eq!(r.error_code, 0);
        assert_eq!(r.assignment.to_vec(), format!("a-{id}").into_bytes());
    }
}

#[tokio::test]
async fn three_members_join_sync_and_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    let (ids, generation, leader) = three_members(&b).await;
    assert_eq!(
        describe(&b).await.group_state.as_str(),
        "CompletingRebalance"
    );
    sync_all(&b, &ids, generation, &leader).await;
    let d = describe(&b).await;
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.protocol_type.as_str(), "consumer");
    assert_eq!(d.members.len(), 3);
    assert!(d
        .members
        .iter()
        .all(|m| m.member_assignment.to_vec() == format!("a-{}", m.member_id).into_bytes()));
    for id in &ids {
        assert_eq!(heartbeat(&b, id, generation).await, 0);
    }
    assert_eq!(
        heartbeat(&b, &ids[0], generation + 1).await,
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        heartbeat(&b, "nobody", generation).await,
        ResponseError::UnknownMemberId.code()
    );
    b.close().unwrap();
}

#[tokio::test]
async fn a_silent_member_expires_and_the_rest_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let (b, clock) = setup(dir.path());
    let (ids, generation, leader) = three_members(&b).await;
    sync_all(&b, &ids, generation, &leader).await;
    // Two members heartbeat through the session timeout; the third stays silent.
    for _ in 0..3 {
        clock.advance_ms(4_000);
        heartbeat(&b, &ids[0], generation).await;
        heartbeat(&b, &ids[1], generation).await;
        b.tick();
    }
    assert_eq!(describe(&b).await.members.len(), 2);
    assert_eq!(
        heartbeat(&b, &ids[0], generation).await,
        ResponseError::RebalanceInProgress.code()
    );
    // The survivors rejoin and get a new generation without the silent one.
    let tasks: Vec<_> = ids[..2]
        .iter()
        .map(|id| {
            let (b, id) = (Arc::clone(&b), id.clone());
            tokio::spawn(async move { join(&b, "c", join_req(&id, None, "m")).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, generation + 1);
    }
    assert_eq!(
        heartbeat(&b, &ids[2], generation + 1).await,
        ResponseError::UnknownMemberId.code()
    );
    b.close().unwrap();
}

#[tokio::test]
async fn a_joining_member_triggers_a_rebalance_and_leaving_empties_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    let (ids, generation, leader) = three_members(&b).await;
    sync_all(&b, &ids, generation, &leader).await;
    let newcomer = member_id(&b, "c4").await;
    let pending = {
        let (b, id) = (Arc::clone(&b), newcomer.clone());
        tokio::spawn(async move { join(&b, "c4", join_req(&id, None, "c4")).await })
    };
    tokio::task::yield_now().await;
    // The others learn of the rebalance from their heartbeat and rejoin.
    assert_eq!(
        heartbeat(&b, &ids[0], generation).await,
        ResponseError::RebalanceInProgress.code()
    );
    let rejoins: Vec<_> = ids
        .iter()
        .map(|id| {
            let (b, id) = (Arc::clone(&b), id.clone());
            tokio::spawn(async move { join(&b, "c", join_req(&id, None, "m")).await })
        })
        .collect();
    let r = pending.await.unwrap();
    assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
    for t in rejoins {
        assert_eq!(t.await.unwrap().generation_id, generation + 1);
    }
    // Everyone leaves (v3+ batch): the group is Empty.
    let mut all = ids.clone();
    all.push(newcomer);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_members(
            all.iter()
                .map(|m| MemberIdentity::default().with_member_id(s(m)))
                .chain([MemberIdentity::default().with_member_id(s("ghost"))])
                .collect(),
        );
    match b
        .handle(&ctx("x"), RequestKind::LeaveGroup(leave))
        .await
        .unwrap()
    {
        Some(ResponseKind::LeaveGroup(r)) => {
            let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
            assert_eq!(
                codes,
                vec![0, 0, 0, 0, ResponseError::UnknownMemberId.code()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(describe(&b).await.group_state.as_str(), "Empty");
    b.close().unwrap();
}

#[tokio::test]
async fn a_static_member_rejoining_in_time_causes_no_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    // Static members join without the MEMBER_ID_REQUIRED round. Alone, i1 completes a
    // generation at once; i2's arrival starts another, which i1 rejoins.
    let first = join(&b, "i1", join_req("", Some("i1"), "i1")).await;
    assert_eq!(first.error_code, 0);
    let second = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { join(&b, "i2", join_req("", Some("i2"), "i2")).await })
    };
    tokio::task::yield_now().await;
    let first = join(
        &b,
        "i1",
        join_req(first.member_id.as_str(), Some("i1"), "i1"),
    )
    .await;
    let second = second.await.unwrap();
    let rs = [first, second];
    assert!(rs.iter().all(|r| r.error_code == 0));
    assert_eq!(rs[0].generation_id, rs[1].generation_id);
    let generation = rs[0].generation_id;
    let ids: Vec<String> = rs.iter().map(|r| r.member_id.to_string()).collect();
    sync_all(&b, &ids, generation, rs[0].leader.as_str()).await;
    // i2 restarts (unknown member id, same instance id): same generation, no rebalance.
    let r = join(&b, "i2", join_req("", Some("i2"), "i2")).await;
    assert_eq!((r.error_code, r.generation_id), (0, generation));
    assert_ne!(r.member_id.to_string(), ids[1]);
    assert_eq!(describe(&b).await.group_state.as_str(), "Stable");
    assert_eq!(heartbeat(&b, &ids[0], generation).await, 0);
    // The old incarnation is fenced.
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(&ids[1]))
        .with_group_instance_id(Some(s("i2")));
    match b
        .handle(&ctx("x"), RequestKind::Heartbeat(hb))
        .await
        .unwrap()
    {
        Some(ResponseKind::Heartbeat(r)) => {
            assert_eq!(r.error_code, ResponseError::FencedInstanceId.code())
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

#[tokio::test]
async fn bad_joins_and_group_listing_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    let mut short = join_req("", None, "x");
    short.session_timeout_ms = 10;
    assert_eq!(
        join(&b, "c", short).await.error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    assert_eq!(
        join(&b, "c", join_req("made-up", None, "x"))
            .await
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
    let id = member_id(&b, "c").await;
    let r = join(&b, "c", join_req(&id, None, "x")).await;
    assert_eq!(r.error_code, 0);
    let mut other = join_req("", None, "x");
    other.protocol_type = s("connect");
    assert_eq!(
        join(&b, "c", other).await.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    match b
        .handle(
            &ctx("x"),
            RequestKind::ListGroups(ListGroupsRequest::default()),
        )
        .await
        .unwrap()
    {
        Some(ResponseKind::ListGroups(r)) => {
            assert_eq!(r.groups.len(), 1);
            assert_eq!(r.groups[0].group_id.0.as_str(), "g");
            assert_eq!(r.groups[0].group_state.as_str(), "CompletingRebalance");
        }
        other => panic!("{other:?}"),
    }
    let del = |b: &Arc<Broker>| {
        let b = Arc::clone(b);
        async move {
            match b
                .handle(
                    &ctx("x"),
                    RequestKind::DeleteGroups(
                        DeleteGroupsRequest::default()
                            .with_groups_names(vec![GroupId(s("g")), GroupId(s("none"))]),
                    ),
                )
                .await
                .unwrap()
            {
                Some(ResponseKind::DeleteGroups(r)) => {
                    r.results.iter().map(|x| x.error_code).collect::<Vec<_>>()
                }
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(
        del(&b).await,
        vec![
            ResponseError::NonEmptyGroup.code(),
            ResponseError::GroupIdNotFound.code()
        ]
    );
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&id));
    b.handle(&ctx("x"), RequestKind::LeaveGroup(leave))
        .await
        .unwrap();
    assert_eq!(
        del(&b).await,
        vec![0, ResponseError::GroupIdNotFound.code()]
    );
    match b
        .handle(
            &ctx("x"),
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g"))),
        )
        .await
        .unwrap()
    {
        Some(ResponseKind::FindCoordinator(r)) => {
            assert_eq!((r.error_code, r.node_id.0, r.port), (0, 0, 9092))
        }
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

/// The topics the commit tests commit to: t (3 partitions) and u (1).
async fn create_topics(b: &Broker) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let topics = [("t", 3), ("u", 1)]
        .iter()
        .map(|(n, p)| {
            CreatableTopic::default()
                .with_name(TopicName(s(n)))
                .with_num_partitions(*p)
                .with_replication_factor(-1)
        })
        .collect();
    b.handle(
        &ctx("x"),
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(topics)),
    )
    .await
    .unwrap();
}

async fn commit(
    b: &Broker,
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64)],
) -> Vec<i16> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_metadata(Some(s(&format!("m{o}"))));
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(topics);
    match b
        .handle(&ctx("x"), RequestKind::OffsetCommit(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::OffsetCommit(r)) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// Committed (topic, partition, offset, metadata) of a group, all topics (OffsetFetch v7 form).
async fn fetch_offsets(b: &Broker, group: &str) -> Vec<(String, i32, i64, String)> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(None);
    match b
        .handle(&ctx("x"), RequestKind::OffsetFetch(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::OffsetFetch(r)) => r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.metadata.as_ref().unwrap().to_string(),
                    )
                })
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn offset_commits_are_checked_against_the_generation_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _clock) = setup(dir.path());
        create_topics(&b).await;
        let (ids, generation, leader) = three_members(&b).await;
        // Before the sync the group is still rebalancing.
        assert_eq!(
            commit(&b, "g", generation, &ids[0], &[("t", 0, 5)]).await,
            vec![ResponseError::RebalanceInProgress.code()]
        );
        sync_all(&b, &ids, generation, &leader).await;
        assert_eq!(
            commit(
                &b,
                "g",
                generation,
                &ids[0],
                &[("t", 0, 5), ("t", 1, 7), ("u", 0, 1)]
            )
            .await,
            vec![0, 0, 0]
        );
        assert_eq!(
            commit(&b, "g", generation, &ids[1], &[("t", 1, 9)]).await,
            vec![0]
        );
        assert_eq!(
            commit(&b, "g", generation - 1, &ids[0], &[("t", 0, 6)]).await,
            vec![ResponseError::IllegalGeneration.code()]
        );
        assert_eq!(
            commit(&b, "g", generation, "stranger", &[("t", 0, 6)]).await,
            vec![ResponseError::UnknownMemberId.code()]
        );
        // A standalone consumer (generation -1, no member) may commit to a group of its own.
        assert_eq!(commit(&b, "solo", -1, "", &[("t", 2, 3)]).await, vec![0]);
        assert_eq!(
            fetch_offsets(&b, "g").await,
            vec![
                ("t".into(), 0, 5, "m5".into()),
                ("t".into(), 1, 9, "m9".into()),
                ("u".into(), 0, 1, "m1".into())
            ]
        );
        b.close().unwrap();
    }
    // Restart: the offsets come back from __consumer_offsets; the group is listed as Empty.
    let (b, _clock) = setup(dir.path());
    assert_eq!(
        fetch_offsets(&b, "g").await,
        vec![
            ("t".into(), 0, 5, "m5".into()),
            ("t".into(), 1, 9, "m9".into()),
            ("u".into(), 0, 1, "m1".into())
        ]
    );
    assert_eq!(
        fetch_offsets(&b, "solo").await,
        vec![("t".into(), 2, 3, "m3".into())]
    );
    assert_eq!(describe(&b).await.group_state.as_str(), "Empty");
    // A commit that names a partition without a commit fetches -1.
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_topics(Some(vec![
            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0, 3]),
        ]));
    match b
        .handle(&ctx("x"), RequestKind::OffsetFetch(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::OffsetFetch(r)) => {
            let got: Vec<(i32, i64)> = r.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset))
                .collect();
            assert_eq!(got, vec![(0, 5), (3, -1)]);
        }
        other => panic!("{other:?}"),
    }
    // Deleting the group deletes its offsets, for good.
    match b
        .handle(
            &ctx("x"),
            RequestKind::DeleteGroups(
                DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
            ),
        )
        .await
        .unwrap()
    {
        Some(ResponseKind::DeleteGroups(r)) => assert_eq!(r.results[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    assert!(fetch_offsets(&b, "g").await.is_empty());
    b.close().unwrap();
    drop(b);
    let (b, _clock) = setup(dir.path());
    assert!(fetch_offsets(&b, "g").await.is_empty());
    b.close().unwrap();
}

#[tokio::test]
async fn offsets_of_an_empty_group_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (b, clock) = setup(dir.path());
    create_topics(&b).await;
    let id = member_id(&b, "c").await;
    let r = join(&b, "c", join_req(&id, None, "c")).await;
    sync_all(&b, std::slice::from_ref(&id), r.generation_id, &id).await;
    assert_eq!(
        commit(&b, "g", r.generation_id, &id, &[("t", 0, 11)]).await,
        vec![0]
    );
    b.handle(
        &ctx("x"),
        RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(&id)),
        ),
    )
    .await
    .unwrap();
    // Kept while the group has been empty for less than offsets.retention.minutes (7 days).
    clock.advance_ms(7 * 24 * 3600 * 1000 - 1);
    b.tick();
    assert_eq!(fetch_offsets(&b, "g").await.len(), 1);
    clock.advance_ms(2);
    b.tick();
    assert!(fetch_offsets(&b, "g").await.is_empty());
    b.close().unwrap();
}

#[tokio::test]
async fn commit_metadata_has_a_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    create_topics(&b).await;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("solo")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)
                .with_committed_metadata(Some(s(&"x".repeat(5000))))])]);
    match b
        .handle(&ctx("x"), RequestKind::OffsetCommit(req))
        .await
        .unwrap()
    {
        Some(ResponseKind::OffsetCommit(r)) => assert_eq!(
            r.topics[0].partitions[0].error_code,
            ResponseError::OffsetMetadataTooLarge.code()
        ),
        other => panic!("{other:?}"),
    }
    assert!(fetch_offsets(&b, "solo").await.is_empty());
    b.close().unwrap();
}

#[tokio::test]
async fn commits_are_taken_while_a_rebalance_is_prepared_and_refused_for_unknown_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    create_topics(&b).await;
    let (ids, generation, leader) = three_members(&b).await;
    sync_all(&b, &ids, generation, &leader).await;
    // A fourth member's join puts the group in PreparingRebalance; the others commit first.
    let newcomer = member_id(&b, "c4").await;
    let pending = {
        let (b, id) = (Arc::clone(&b), newcomer.clone());
        tokio::spawn(async move { join(&b, "c4", join_req(&id, None, "c4")).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        describe(&b).await.group_state.as_str(),
        "PreparingRebalance"
    );
    assert_eq!(
        commit(&b, "g", generation, &ids[0], &[("t", 0, 42)]).await,
        vec![0]
    );
    assert_eq!(
        commit(&b, "g", generation, &ids[0], &[("t", 7, 1), ("nope", 0, 1)]).await,
        vec![ResponseError::UnknownTopicOrPartition.code(); 2]
    );
    assert_eq!(
        fetch_offsets(&b, "g").await,
        vec![("t".into(), 0, 42, "m42".into())]
    );
    pending.abort();
    b.close().unwrap();
}

/// A group id longer than an offset key can hold (16-bit length, as in Kafka's
/// `__consumer_offsets`) is refused with INVALID_GROUP_ID by JoinGroup, OffsetCommit and
/// AddOffsetsToTxn, and nothing is written; before, the key cut it at 32767 bytes, possibly
/// inside a UTF-8 character, and the offsets came back under another group's name.
#[tokio::test]
async fn over_long_group_ids_are_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    let long = "é".repeat(20_000); // 40,000 bytes
    let invalid = ResponseError::InvalidGroupId.code();
    let resp = join(
        &b,
        "c",
        join_req("", None, "m").with_group_id(GroupId(s(&long))),
    )
    .await;
    assert_eq!(resp.error_code, invalid);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&long)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("__consumer_offsets")))
                .with_partitions(vec![
                    kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                ]),
        ]);
    let before = b
        .logs()
        .get(&rill_log::types::TopicPartition::new(
            "__consumer_offsets",
            0,
        ))
        .map(|l| l.log_end_offset());
    match b
        .handle(&ctx("c"), RequestKind::OffsetCommit(commit))
        .await
        .unwrap()
        .unwrap()
    {
        ResponseKind::OffsetCommit(r) => {
            assert_eq!(r.topics[0].partitions[0].error_code, invalid)
        }
        other => panic!("{other:?}"),
    }
    let after = b
        .logs()
        .get(&rill_log::types::TopicPartition::new(
            "__consumer_offsets",
            0,
        ))
        .map(|l| l.log_end_offset());
    assert_eq!(before, after, "nothing written");
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_producer_id(ProducerId(0))
        .with_producer_epoch(0)
        .with_group_id(GroupId(s(&long)));
    match b
        .handle(&ctx("c"), RequestKind::AddOffsetsToTxn(add))
        .await
        .unwrap()
        .unwrap()
    {
        ResponseKind::AddOffsetsToTxn(r) => assert_eq!(r.error_code, invalid),
        other => panic!("{other:?}"),
    }
    b.close().unwrap();
}

/// OffsetDelete (KIP-496), as Kafka's `OffsetMetadataManagerTest.testGenericGroupOffsetDelete`
/// and `...WithErrors` and `KafkaApis.handleOffsetDeleteRequest`: an unknown group is
/// GROUP_ID_NOT_FOUND; a group without members loses the offsets asked for (others stay); a
/// topic its members subscribe to answers GROUP_SUBSCRIBED_TO_TOPIC and keeps its offsets,
/// while another topic's go; an unknown partition is UNKNOWN_TOPIC_OR_PARTITION; a
/// non-consumer group with members is NON_EMPTY_GROUP.
#[tokio::test]
async fn offset_delete_keeps_subscribed_topics_and_deletes_the_rest() {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, _clock) = setup(dir.path());
    create_topics(&b).await;
    let delete = |group: &str, parts: &[(&str, i32)]| {
        let topics = parts
            .iter()
            .map(|(t, p)| {
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(*p)
                    ])
            })
            .collect();
        RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(topics),
        )
    };
    let answer = |r: Option<ResponseKind>| match r {
        Some(ResponseKind::OffsetDelete(r)) => (
            r.error_code,
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect::<Vec<_>>(),
        ),
        other => panic!("{other:?}"),
    };
    let go = |req| {
        let b = Arc::clone(&b);
        async move { answer(b.handle(&ctx("x"), req).await.unwrap()) }
    };
    assert_eq!(
        go(delete("nope", &[("t", 0)])).await.0,
        ResponseError::GroupIdNotFound.code()
    );
    // A group known by its offsets alone.
    assert_eq!(
        commit(&b, "foo", -1, "", &[("t", 0, 5), ("u", 0, 6)]).await,
        vec![0, 0]
    );
    assert_eq!(
        go(delete("foo", &[("t", 0), ("nowhere", 0)])).await,
        (0, vec![0, ResponseError::UnknownTopicOrPartition.code()])
    );
    let left: Vec<(String, i32, i64)> = fetch_offsets(&b, "foo")
        .await
        .into_iter()
        .map(|(t, p, o, _)| (t, p, o))
        .collect();
    assert_eq!(left, vec![("u".to_string(), 0, 6)]);
    // A consumer group whose member subscribes to `t`: ConsumerProtocolSubscription v0.
    let mut subscription = vec![0, 0, 0, 0, 0, 1, 0, 1, b't'];
    subscription.extend_from_slice(&(-1i32).to_be_bytes());
    let id = member_id(&b, "c").await;
    let mut req = join_req(&id, None, "");
    req.protocols[0].metadata = Bytes::from(subscription);
    let r = join(&b, "c", req).await;
    sync_all(&b, std::slice::from_ref(&id), r.generation_id, &id).await;
    assert_eq!(
        commit(&b, "g", r.generation_id, &id, &[("t", 1, 7), ("u", 0, 8)]).await,
        vec![0, 0]
    );
    assert_eq!(
        go(delete("g", &[("t", 1), ("u", 0)])).await,
        (0, vec![ResponseError::GroupSubscribedToTopic.code(), 0])
    );
    let left: Vec<(String, i32)> = fetch_offsets(&b, "g")
        .await
        .into_iter()
        .map(|(t, p, _, _)| (t, p))
        .collect();
    assert_eq!(left, vec![("t".to_string(), 1)]);
    // A group of another protocol type with members.
    let mut other = join_req("", None, "x").with_group_id(GroupId(s("conn")));
    other.protocol_type = s("connect");
    let first = join(&b, "k", other.clone()).await;
    let r = join(&b, "k", other.with_member_id(first.member_id.clone())).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(
        go(delete("conn", &[("t", 0)])).await.0,
        ResponseError::NonEmptyGroup.code()
    );
    b.close().unwrap();
}
