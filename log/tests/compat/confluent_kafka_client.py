"""Compatibility scenarios with confluent-kafka (librdkafka) against a running rill broker.

Usage: python3 confluent_kafka_client.py HOST:PORT
Exits non-zero with a message on the first scenario that does not behave as on Kafka.
"""

import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

BOOTSTRAP = sys.argv[1]
RUN = uuid.uuid4().hex[:8]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


_ADMIN = []


def admin():
    # One client for the whole run: futures fail if their client is garbage collected.
    if not _ADMIN:
        _ADMIN.append(AdminClient({"bootstrap.servers": BOOTSTRAP}))
    return _ADMIN[0]


def create_topic(name, partitions, config=None):
    futures = admin().create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    futures[name].result(15)


def produce(topic, records, codec="none"):
    """records: (key, value, headers, partition-or-None, timestamp-or-None)."""
    delivered = []
    errors = []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or (msg.partition(), msg.offset()))

    p = Producer(
        {"bootstrap.servers": BOOTSTRAP, "compression.type": codec, "linger.ms": 5, "acks": "all"}
    )
    for key, value, headers, partition, ts in records:
        kwargs = {"key": key, "value": value, "headers": headers, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if ts is not None:
            kwargs["timestamp"] = ts
        p.produce(topic, **kwargs)
    check(p.flush(15) == 0, "producer did not flush")
    check(not errors, f"delivery errors: {errors}")
    return delivered


def consumer(group, **extra):
    conf = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


def drain(c, want, timeout=20.0):
    out = []
    deadline = time.time() + timeout
    while len(out) < want and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(f"consumer error: {m.error()}")
        out.append(m)
    return out


def scenario_codecs_keys_headers():
    topic = f"cf-codecs-{RUN}"
    create_topic(topic, 3)
    for codec in CODECS:
        recs = [(f"k{i}".encode(), f"{codec}-{i}".encode(), [("codec", codec.encode())], None, None)
                for i in range(30)]
        produce(topic, recs, codec)
    c = consumer(f"cf-codecs-{RUN}")
    c.subscribe([topic])
    got = drain(c, 150)
    c.close()
    check(len(got) == 150, f"consumed {len(got)} of 150")
    by_key = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(m)
    for i in range(30):
        ms = by_key[f"k{i}".encode()]
        check(len({m.partition() for m in ms}) == 1, f"k{i} spread over partitions")
        values = [m.value().decode() for m in sorted(ms, key=lambda m: m.offset())]
        check(values == [f"{c}-{i}" for c in CODECS], f"k{i} values {values}")
        for m in ms:
            codec = m.value().decode().split("-")[0]
            check(m.headers() == [("codec", codec.encode())], f"headers {m.headers()}")


def scenario_group_of_three_rebalances():
    topic = f"cf-group-{RUN}"
    group = f"cf-group-{RUN}"
    create_topic(topic, 6)
    produce(topic, [(None, f"v{i}".encode(), None, i % 6, None) for i in range(600)])
    assignments = {}
    consumed = {}
    stop = {}
    lock = threading.Lock()

    def member(name):
        c = consumer(group, **{"partition.assignment.strategy": "range"})

        def on_assign(_c, parts):
            with lock:
                assignments[name] = sorted(p.partition for p in parts)

        def on_revoke(_c, parts):
            with lock:
                assignments[name] = []

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        while not stop.get(name):
            m = c.poll(0.1)
            if m is None or m.error():
                continue
            with lock:
                consumed.setdefault(name, []).append((m.partition(), m.offset()))
            c.commit(message=m, asynchronous=False)
        c.close()
        with lock:
            assignments[name] = []

    threads = {n: threading.Thread(target=member, args=(n,), daemon=True) for n in ("a", "b", "c")}
    for t in threads.values():
        t.start()

    def wait_for(sizes, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with lock:
                owned = [p for ps in assignments.values() for p in ps]
                held = sorted(len(ps) for ps in assignments.values() if ps)
            if sorted(owned) == list(range(6)) and held == sizes:
                return
            time.sleep(0.1)
        raise AssertionError(f"never balanced to {sizes}: {assignments}")

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
    # Everything was committed: a fresh consumer of the group has nothing left to read.
    c = consumer(group)
    committed = c.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    c.close()
    check([tp.offset for tp in committed] == [100] * 6, f"committed {committed}")


def scenario_offsets_seek_by_time_and_admin():
    topic = f"cf-admin-{RUN}"
    create_topic(topic, 1, {"retention.ms": "3600000", "cleanup.policy": "delete"})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin().describe_configs([res])[res].result(15)
    check(configs["retention.ms"].value == "3600000", f"retention.ms {configs['retention.ms'].value}")
    check("segment.bytes" in configs, "segment.bytes not described")
    base = 1_700_000_000_000
    produce(topic, [(None, f"t{i}".encode(), None, 0, base + i * 1000) for i in range(10)])
    c = consumer(f"cf-time-{RUN}")
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 4500)], timeout=10)
    check(found[0].offset == 5, f"offsets_for_times gave {found[0].offset}")
    c.assign([TopicPartition(topic, 0, found[0].offset)])
    got = drain(c, 5)
    check([m.value().decode() for m in got] == [f"t{i}" for i in range(5, 10)], "seek by time")
    check(got[0].timestamp()[1] == base + 5000, f"timestamp {got[0].timestamp()}")
    c.commit(asynchronous=False)
    c.close()
    # Deleting the topic removes it from the metadata.
    admin().delete_topics([topic])[topic].result(15)
    deadline = time.time() + 10
    while topic in admin().list_topics(timeout=10).topics and time.time() < deadline:
        time.sleep(0.2)
    check(topic not in admin().list_topics(timeout=10).topics, "topic still listed")


def scenario_idempotent_producer():
    topic = f"cf-idem-{RUN}"
    create_topic(topic, 2)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "linger.ms": 2,
                  "compression.type": "lz4"})
    errors = []
    for i in range(500):
        p.produce(topic, key=f"k{i % 7}".encode(), value=f"{i}".encode(),
                  on_delivery=lambda err, msg: err and errors.append(err))
    check(p.flush(15) == 0, "idempotent producer did not flush")
    check(not errors, f"delivery errors: {errors}")
    c = consumer(f"cf-idem-{RUN}")
    c.subscribe([topic])
    got = drain(c, 500)
    time.sleep(0.5)
    extra = drain(c, 1, timeout=1.0)
    c.close()
    check(len(got) == 500 and not extra, f"consumed {len(got)} + {len(extra)} of 500")
    for k in range(7):
        values = [int(m.value()) for m in got if m.key() == f"k{k}".encode()]
        check(values == sorted(values), f"k{k} out of order")


def scenario_transactions_commit_then_abort():
    topic = f"cf-txn-{RUN}"
    create_topic(topic, 3)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"cf-tx-{RUN}",
                  "linger.ms": 2})
    p.init_transactions(15)
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, key=f"k{i}".encode(), value=f"committed-{i}".encode())
    p.commit_transaction(15)
    p.begin_transaction()
    for i in range(20):
        p.produce(topic, key=f"k{i}".encode(), value=f"aborted-{i}".encode())
    p.flush(15)
    p.abort_transaction(15)
    # A transaction left open by this producer: read_committed must stop before it.
    p.begin_transaction()
    p.produce(topic, key=b"late", value=b"open")
    p.flush(15)
    committed = consumer(f"cf-rc-{RUN}", **{"isolation.level": "read_committed"})
    committed.subscribe([topic])
    got = drain(committed, 30)
    time.sleep(0.5)
    got += drain(committed, 1, timeout=1.0)
    committed.close()
    values = sorted(m.value().decode() for m in got)
    check(values == sorted(f"committed-{i}" for i in range(30)), f"read_committed saw {values[:5]}... ({len(values)})")
    everything = consumer(f"cf-ru-{RUN}", **{"isolation.level": "read_uncommitted"})
    everything.subscribe([topic])
    seen = drain(everything, 51)
    everything.close()
    check(len(seen) == 51, f"read_uncommitted saw {len(seen)} of 51")
    p.abort_transaction(15)


def scenario_commit_for_other_clients():
    """Commits offsets that the kafka-python and aiokafka scripts then read (group and topic
    names passed through stdout)."""
    topic = f"cross-{RUN}"
    group = f"cross-{RUN}"
    create_topic(topic, 2)
    produce(topic, [(None, b"x", None, p, None) for p in (0, 1) for _ in range(10)])
    c = consumer(group)
    c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    c.commit(offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 3)], asynchronous=False)
    c.close()
    print(f"CROSS {topic} {group}")


SCENARIOS = [
    scenario_codecs_keys_headers,
    scenario_offsets_seek_by_time_and_admin,
    scenario_group_of_three_rebalances,
    scenario_idempotent_producer,
    scenario_transactions_commit_then_abort,
    scenario_commit_for_other_clients,
]

if __name__ == "__main__":
    for s in SCENARIOS:
        start = time.time()
        s()
        print(f"ok {s.__name__} ({time.time() - start:.1f}s)", flush=True)
