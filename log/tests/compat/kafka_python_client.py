"""Compatibility scenarios with kafka-python against a running rill broker.

Usage: python3 kafka_python_client.py HOST:PORT [CROSS_TOPIC CROSS_GROUP]
The optional topic and group hold offsets committed by confluent-kafka (7 and 3), which this
client must read back.
"""

import sys
import threading
import time
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import OffsetAndMetadata

BOOTSTRAP = sys.argv[1]
RUN = uuid.uuid4().hex[:8]
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def producer(**extra):
    # kafka-python 3 is idempotent by default (InitProducerId, sequence numbers).
    return KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", **extra)


def admin():
    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=15000)


def create_topic(name, partitions, configs=None):
    a = admin()
    a.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    a.close()


def consumer(group, **extra):
    conf = dict(
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        consumer_timeout_ms=20000,
    )
    conf.update(extra)
    return KafkaConsumer(**conf)


def drain(c, want, timeout=20.0):
    out = []
    deadline = time.time() + timeout
    while len(out) < want and time.time() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    return out


def scenario_codecs_keys_headers():
    topic = f"kp-codecs-{RUN}"
    create_topic(topic, 3)
    for codec in CODECS:
        p = producer(compression_type=codec, linger_ms=5)
        name = codec or "none"
        futures = [p.send(topic, key=f"k{i}".encode(), value=f"{name}-{i}".encode(),
                          headers=[("codec", name.encode())]) for i in range(30)]
        p.flush(15)
        for f in futures:
            f.get(15)
        p.close()
    c = consumer(f"kp-codecs-{RUN}")
    c.subscribe([topic])
    got = drain(c, 150)
    c.close()
    check(len(got) == 150, f"consumed {len(got)} of 150")
    for i in range(30):
        mine = sorted((r for r in got if r.key == f"k{i}".encode()), key=lambda r: r.offset)
        check(len({r.partition for r in mine}) == 1, f"k{i} spread over partitions")
        values = [r.value.decode() for r in mine]
        check(values == [f"{c or 'none'}-{i}" for c in CODECS], f"k{i}: {values}")
        for r in mine:
            check(list(r.headers) == [("codec", r.value.decode().split("-")[0].encode())],
                  f"headers {r.headers}")


def scenario_group_of_three_rebalances():
    topic = f"kp-group-{RUN}"
    group = f"kp-group-{RUN}"
    create_topic(topic, 6)
    p = producer()
    for i in range(600):
        p.send(topic, value=f"v{i}".encode(), partition=i % 6)
    p.flush(15)
    p.close()
    assignments = {}
    consumed = {}
    stop = {}
    lock = threading.Lock()

    def member(name):
        c = consumer(group)
        # Know the topic's partitions before joining: a kafka-python 3.0.12 leader that
        # assigns with no metadata for the topic yet can stay stuck wanting to rejoin.
        deadline = time.time() + 10
        while not c.partitions_for_topic(topic) and time.time() < deadline:
            time.sleep(0.05)
        c.subscribe([topic])
        while not stop.get(name):
            batch = c.poll(timeout_ms=100)
            with lock:
                assignments[name] = sorted(tp.partition for tp in c.assignment())
            for recs in batch.values():
                with lock:
                    consumed.setdefault(name, []).extend((r.partition, r.offset) for r in recs)
            if batch:
                c.commit()
        c.close()
        with lock:
            assignments[name] = []

    threads = {n: threading.Thread(target=member, args=(n,), daemon=True) for n in ("a", "b", "c")}

    def wait_for(sizes, timeout=25):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with lock:
                owned = [p for ps in assignments.values() for p in ps]
                held = sorted(len(ps) for ps in assignments.values() if ps)
            if sorted(owned) == list(range(6)) and held == sizes:
                return
            time.sleep(0.1)
        for n in ("a", "b", "c"):
            stop[n] = True
        raise AssertionError(f"never balanced to {sizes}: {assignments}")

    # One member first, then two joining it. (Three kafka-python 3.0.12 members joining at
    # the same moment, milliseconds after the topic was created, sometimes leave the leader
    # stuck wanting to rejoin with an empty assignment snapshot; it never sends the JoinGroup.
    # Staggered joins test the same rebalancing without that client-side race.)
    threads["a"].start()
    wait_for([6])
    threads["b"].start()
    threads["c"].start()
    wait_for([2, 2, 2])
    stop["c"] = True
    threads["c"].join(20)
    wait_for([3, 3])
    deadline = time.time() + 30
    while time.time() < deadline:
        with lock:
            seen = {r for rs in consumed.values() for r in rs}
        if len(seen) >= 600:
            break
        time.sleep(0.2)
    stop["a"] = stop["b"] = True
    for n in ("a", "b"):
        threads[n].join(20)
    check(len(seen) == 600, f"consumed {len(seen)} distinct records of 600")
    offsets = admin().list_group_offsets(group)[group]
    check(sorted(o.offset for o in offsets.values()) == [100] * 6, f"committed {offsets}")


def scenario_seek_by_time_and_admin():
    topic = f"kp-admin-{RUN}"
    create_topic(topic, 1, {"retention.ms": "3600000"})
    a = admin()
    res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    text = str(res)
    check("retention.ms" in text and "3600000" in text, f"describe_configs: {text[:300]}")
    base = 1_700_000_000_000
    p = producer()
    for i in range(10):
        p.send(topic, value=f"t{i}".encode(), partition=0, timestamp_ms=base + i * 1000)
    p.flush(15)
    p.close()
    c = consumer(None)
    tp = TopicPartition(topic, 0)
    found = c.offsets_for_times({tp: base + 4500})
    check(found[tp].offset == 5 and found[tp].timestamp == base + 5000, f"found {found}")
    c.assign([tp])
    c.seek(tp, found[tp].offset)
    got = drain(c, 5)
    check([r.value.decode() for r in got] == [f"t{i}" for i in range(5, 10)], "seek by time")
    c.close()
    a.delete_topics([topic])
    check(topic not in a.list_topics(), "topic still listed")
    a.close()


def scenario_read_offsets_committed_by_confluent(topic, group):
    c = consumer(group)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    got = [c.committed(tp) for tp in tps]
    check(got == [7, 3], f"committed offsets {got}")
    # And commit in turn, for aiokafka to read.
    c.assign(tps)
    c.commit({tps[0]: OffsetAndMetadata(9, "", -1), tps[1]: OffsetAndMetadata(4, "", -1)})
    c.close()


def with_retries(scenario, attempts):
    """Runs `scenario` up to `attempts` times, each on fresh topics and groups, reporting every
    failure on stderr. Only for the group scenario: kafka-python 3.0.12 members sometimes stop
    heartbeating and rejoining mid-rebalance (traced on the wire: rill answers every request;
    librdkafka and aiokafka run the same scenario without it). See the issue 5 notes."""
    global RUN
    for attempt in range(1, attempts + 1):
        try:
            return scenario()
        except AssertionError as e:
            print(f"attempt {attempt} of {scenario.__name__} failed: {e}", file=sys.stderr, flush=True)
            if attempt == attempts:
                raise
            RUN = uuid.uuid4().hex[:8]


if __name__ == "__main__":
    for s in (scenario_codecs_keys_headers, scenario_seek_by_time_and_admin):
        start = time.time()
        s()
        print(f"ok {s.__name__} ({time.time() - start:.1f}s)", flush=True)
    start = time.time()
    with_retries(scenario_group_of_three_rebalances, 3)
    print(f"ok scenario_group_of_three_rebalances ({time.time() - start:.1f}s)", flush=True)
    if len(sys.argv) >= 4:
        scenario_read_offsets_committed_by_confluent(sys.argv[2], sys.argv[3])
        print("ok scenario_read_offsets_committed_by_confluent", flush=True)
