//! The Consumer over the embedded transport (manual assignment): positions from commits or
//! `auto.offset.reset`, per-partition order, `max.poll.records`, seeks by offset and by time,
//! committed offsets that let a new consumer resume with no gap, across a broker restart,
//! pause / resume, seeks to either end, offsets by time, auto-commit and `commit_async`.

mod common;

use std::sync::Arc;

use common::{broker, embedded};

use rill_log::broker::Broker;
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use rill_log::types::TopicPartition;

/// Produces `n` records "v0".."v{n-1}" to `partition` with timestamps 1000 + i.
async fn produce(b: &Arc<Broker>, partition: i32, n: usize, prefix: &str) {
    let p = Producer::new(
        embedded(b),
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    );
    let mut ds = Vec::new();
    for i in 0..n {
        let mut r = ProducerRecord::new("t", Some("k"), format!("{prefix}{i}"));
        r.partition = Some(partition);
        r.timestamp_ms = Some(1000 + i as i64);
        ds.push(p.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await;
}

fn consumer(b: &Arc<Broker>, group: Option<&str>, reset: OffsetReset, max_poll: usize) -> Consumer {
    let config = ConsumerConfig {
        group_id: group.map(str::to_string),
        auto_offset_reset: reset,
        max_poll_records: max_poll,
        fetch_max_wait_ms: 10,
        ..Default::default()
    };
    let mut c = Consumer::new(embedded(b), config);
    c.assign([TopicPartition::new("t", 0), TopicPartition::new("t", 1)]);
    c
}

async fn values(c: &mut Consumer, want: usize) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    for _ in 0..50 {
        for r in c.poll().await.unwrap() {
            out.push((
                r.partition,
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
        if out.len() >= want {
            break;
        }
    }
    out
}

#[tokio::test]
async fn reads_every_record_in_partition_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 30, "a").await;
    produce(&b, 1, 20, "b").await;
    let mut c = consumer(&b, None, OffsetReset::Earliest, 7);
    let got = values(&mut c, 50).await;
    assert_eq!(got.len(), 50);
    for p in 0..2 {
        let mine: Vec<(i64, String)> = got
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| (r.1, r.2.clone()))
            .collect();
        let prefix = if p == 0 { "a" } else { "b" };
        let want: Vec<(i64, String)> = (0..mine.len() as i64)
            .map(|i| (i, format!("{prefix}{i}")))
            .collect();
        assert_eq!(mine, want);
    }
    assert_eq!(c.position(&TopicPartition::new("t", 0)), Some(30));
    // max.poll.records bounds each poll.
    let mut c = consumer(&b, None, OffsetReset::Earliest, 7);
    assert_eq!(c.poll().await.unwrap().len(), 7);
    b.close().unwrap();
}

#[tokio::test]
async fn a_new_consumer_resumes_at_the_commit_with_no_gap_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = broker(dir.path());
        Admin::new(embedded(&b))
            .create_topic("t", 2, &[])
            .await
            .unwrap();
        produce(&b, 0, 40, "v").await;
        let mut c = consumer(&b, Some("g"), OffsetReset::Earliest, 15);
        let first = c.poll().await.unwrap();
        assert_eq!(first.len(), 15);
        c.commit_sync().await.unwrap();
        let committed = c
            .committed(&[TopicPartition::new("t", 0), TopicPartition::new("t", 1)])
            .await
            .unwrap();
        assert_eq!(committed[&TopicPartition::new("t", 0)], Some(15));
        // Partition 1 is empty: its position (0) is committed too.
        assert_eq!(committed[&TopicPartition::new("t", 1)], Some(0));
        b.close().unwrap();
    }
    let b = broker(dir.path());
    let mut c = consumer(&b, Some("g"), OffsetReset::None, 100);
    let rest = values(&mut c, 25).await;
    let offsets: Vec<i64> = rest.iter().map(|r| r.1).collect();
    assert_eq!(
        offsets,
        (15..40).collect::<Vec<_>>(),
        "resumed exactly after the commit"
    );
    b.close().unwrap();
}

#[tokio::test]
async fn latest_reset_skips_the_backlog_and_seeks_move_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 10, "old").await;
    let mut c = consumer(&b, None, OffsetReset::Latest, 100);
    assert!(c.poll().await.unwrap().is_empty());
    produce(&b, 0, 3, "new").await;
    let got = values(&mut c, 3).await;
    assert_eq!(
        got.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        vec!["new0", "new1", "new2"]
    );
    // Seek by offset, then by timestamp (timestamps are 1000 + i per produce call).
    let tp = TopicPartition::new("t", 0);
    c.seek(&tp, 8).unwrap();
    let got = values(&mut c, 5).await;
    assert_eq!(
        got.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        vec!["old8", "old9", "new0", "new1", "new2"]
    );
    c.seek_to_timestamp(&tp, 1002).await.unwrap();
    // The first record with a timestamp >= 1002 is old2 (offset 2).
    assert_eq!(c.position(&tp), Some(2));
    // A committed group with auto.offset.reset=none and no commit is an error, not a guess.
    let mut strict = consumer(&b, Some("fresh"), OffsetReset::None, 10);
    assert!(strict.poll().await.is_err());
    b.close().unwrap();
}

#[tokio::test]
async fn pause_resume_seek_to_either_end_and_offsets_for_times() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 10, "a").await;
    produce(&b, 1, 5, "b").await;
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let mut c = consumer(&b, None, OffsetReset::Earliest, 100);
    c.pause(std::slice::from_ref(&p0)).unwrap();
    assert_eq!(c.paused(), vec![p0.clone()]);
    let got = values(&mut c, 5).await;
    assert_eq!(
        got.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        (0..5).map(|o| (1, o)).collect::<Vec<_>>(),
        "a paused partition is neither fetched nor returned"
    );
    assert_eq!(c.position(&p0), Some(0));
    c.resume(std::slice::from_ref(&p0));
    let got = values(&mut c, 10).await;
    assert_eq!(got.iter().filter(|r| r.0 == 0).count(), 10);
    // Back to the start of p1, past the end of p0.
    c.seek_to_beginning(std::slice::from_ref(&p1))
        .await
        .unwrap();
    c.seek_to_end(std::slice::from_ref(&p0)).await.unwrap();
    assert_eq!((c.position(&p0), c.position(&p1)), (Some(10), Some(0)));
    let got = values(&mut c, 5).await;
    assert_eq!(
        got.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        (0..5).map(|o| (1, o)).collect::<Vec<_>>()
    );
    // Timestamps are 1000 + i: the first record at or after 1003 is offset 3; none that late.
    let found = c
        .offsets_for_times(&[(p0.clone(), 1003), (p1.clone(), 5000)])
        .await
        .unwrap();
    assert_eq!(found[&p0], Some((3, 1003)));
    assert_eq!(found[&p1], None);
    // Pausing or seeking what is not assigned is refused.
    let other = TopicPartition::new("t", 7);
    assert!(c.pause(std::slice::from_ref(&other)).is_err());
    assert!(c.seek_to_end(&[other]).await.is_err());
    b.close().unwrap();
}

#[tokio::test]
async fn auto_commit_and_commit_async_store_the_positions_returned() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 30, "v").await;
    let p0 = TopicPartition::new("t", 0);
    // Auto-commit on every poll: the next poll commits what the previous one returned.
    let mut c = Consumer::new(
        embedded(&b),
        ConsumerConfig {
            group_id: Some("auto".into()),
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 12,
            fetch_max_wait_ms: 10,
            enable_auto_commit: true,
            auto_commit_interval_ms: 0,
            ..Default::default()
        },
    );
    c.assign([p0.clone()]);
    assert_eq!(c.poll().await.unwrap().len(), 12);
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        None
    );
    assert_eq!(c.poll().await.unwrap().len(), 12);
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        Some(12)
    );
    // commit_async: the handle resolves once the commit is stored.
    let mut c = consumer(&b, Some("async"), OffsetReset::Earliest, 20);
    assert_eq!(c.poll().await.unwrap().len(), 20);
    c.commit_async().await.unwrap().unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        Some(20)
    );
    b.close().unwrap();
}
