"""Compatibility scenarios with aiokafka against a running rill broker.

Usage: python3 aiokafka_client.py HOST:PORT [CROSS_TOPIC CROSS_GROUP]
The optional topic and group hold offsets committed by kafka-python (9 and 4).
"""

import asyncio
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

BOOTSTRAP = sys.argv[1]
RUN = uuid.uuid4().hex[:8]
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def create_topic(name, partitions, configs=None):
    a = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await a.start()
    try:
        await a.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        await a.close()


def consumer(group, **extra):
    conf = dict(
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    conf.update(extra)
    return AIOKafkaConsumer(**conf)


async def drain(c, want, timeout=20.0):
    out = []
    deadline = time.time() + timeout
    while len(out) < want and time.time() < deadline:
        batch = await c.getmany(timeout_ms=200)
        for recs in batch.values():
            out.extend(recs)
    return out


async def scenario_codecs_keys_headers():
    topic = f"aio-codecs-{RUN}"
    await create_topic(topic, 3)
    for codec in CODECS:
        p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type=codec, acks="all",
                             linger_ms=5)
        await p.start()
        name = codec or "none"
        try:
            futures = [await p.send(topic, key=f"k{i}".encode(), value=f"{name}-{i}".encode(),
                                    headers=[("codec", name.encode())]) for i in range(30)]
            await asyncio.gather(*futures)
        finally:
            await p.stop()
    c = consumer(f"aio-codecs-{RUN}")
    c.subscribe([topic])
    await c.start()
    try:
        got = await drain(c, 150)
    finally:
        await c.stop()
    check(len(got) == 150, f"consumed {len(got)} of 150")
    for i in range(30):
        mine = sorted((r for r in got if r.key == f"k{i}".encode()), key=lambda r: r.offset)
        check(len({r.partition for r in mine}) == 1, f"k{i} spread over partitions")
        values = [r.value.decode() for r in mine]
        check(values == [f"{c or 'none'}-{i}" for c in CODECS], f"k{i}: {values}")
        for r in mine:
            check(list(r.headers) == [("codec", r.value.decode().split("-")[0].encode())],
                  f"headers {r.headers}")


async def scenario_group_of_three_rebalances():
    topic = f"aio-group-{RUN}"
    group = f"aio-group-{RUN}"
    await create_topic(topic, 6)
    p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await p.start()
    try:
        for i in range(600):
            await p.send(topic, value=f"v{i}".encode(), partition=i % 6)
        await p.flush()
    finally:
        await p.stop()
    consumed = set()
    members = {}
    for name in ("a", "b", "c"):
        c = consumer(group)
        c.subscribe([topic])
        await c.start()
        members[name] = c

    async def poll_all(names, until):
        deadline = time.time() + 40
        while time.time() < deadline:
            for n in names:
                batch = await members[n].getmany(timeout_ms=50)
                for tp, recs in batch.items():
                    consumed.update((r.partition, r.offset) for r in recs)
                    await members[n].commit({tp: recs[-1].offset + 1})
            if until():
                return
        raise AssertionError(f"timed out: {[sorted(tp.partition for tp in members[n].assignment()) for n in names]}")

    def sizes(names):
        parts = [sorted(tp.partition for tp in members[n].assignment()) for n in names]
        return sorted(p for ps in parts for p in ps), sorted(len(ps) for ps in parts)

    await poll_all(("a", "b", "c"), lambda: sizes(("a", "b", "c")) == (list(range(6)), [2, 2, 2]))
    await members.pop("c").stop()
    await poll_all(("a", "b"), lambda: sizes(("a", "b")) == (list(range(6)), [3, 3]))
    await poll_all(("a", "b"), lambda: len(consumed) >= 600)
    for c in members.values():
        await c.stop()
    check(len(consumed) == 600, f"consumed {len(consumed)} of 600")


async def scenario_seek_by_time_and_admin():
    topic = f"aio-admin-{RUN}"
    await create_topic(topic, 1, {"retention.ms": "3600000"})
    a = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await a.start()
    try:
        res = await a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        text = str(res)
        check("retention.ms" in text and "3600000" in text, f"describe_configs: {text[:300]}")
        base = 1_700_000_000_000
        p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
        await p.start()
        try:
            for i in range(10):
                await p.send_and_wait(topic, value=f"t{i}".encode(), partition=0,
                                      timestamp_ms=base + i * 1000)
        finally:
            await p.stop()
        c = consumer(None)
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            found = await c.offsets_for_times({tp: base + 4500})
            check(found[tp].offset == 5 and found[tp].timestamp == base + 5000, f"{found}")
            c.seek(tp, found[tp].offset)
            got = await drain(c, 5)
            check([r.value.decode() for r in got] == [f"t{i}" for i in range(5, 10)], "seek")
        finally:
            await c.stop()
        await a.delete_topics([topic])
        check(topic not in await a.list_topics(), "topic still listed")
    finally:
        await a.close()


async def scenario_read_offsets_committed_by_kafka_python(topic, group):
    c = consumer(group)
    await c.start()
    try:
        got = [await c.committed(TopicPartition(topic, p)) for p in (0, 1)]
        check(got == [9, 4], f"committed offsets {got}")
    finally:
        await c.stop()


async def main():
    for s in (scenario_codecs_keys_headers, scenario_seek_by_time_and_admin,
              scenario_group_of_three_rebalances):
        start = time.time()
        await s()
        print(f"ok {s.__name__} ({time.time() - start:.1f}s)", flush=True)
    if len(sys.argv) >= 4:
        await scenario_read_offsets_committed_by_kafka_python(sys.argv[2], sys.argv[3])
        print("ok scenario_read_offsets_committed_by_kafka_python", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
