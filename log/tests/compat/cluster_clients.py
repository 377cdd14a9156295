"""A Kafka client against a three-broker rill cluster while the test kills a broker.

Usage: python3 cluster_clients.py CLIENT BOOTSTRAP TOPIC GROUP COUNT
CLIENT is confluent, kafka-python or aiokafka. The topic exists (RF 3, min.insync.replicas
2). An idempotent producer with acks=all sends COUNT records, paced over a few seconds, while
a consumer of GROUP reads them and commits after every batch. The test (log/tests/cluster.rs)
kills a broker once the line "produced N" shows progress. Checked: every record is
acknowledged (the producer rides through the failover), the group reads every acknowledged
record, no offset holds two values, and the group's committed offsets reach the log end.
Exits non-zero with the first failure.
"""

import asyncio
import sys
import threading
import time

CLIENT, BOOTSTRAP, TOPIC, GROUP, COUNT = sys.argv[1:6]
COUNT = int(COUNT)
PACE = 0.02
DEADLINE = 90.0


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


class Seen:
    """What the consumer read: (partition, offset) -> value."""

    def __init__(self):
        self.by_offset = {}
        self.values = set()
        self.lock = threading.Lock()

    def add(self, partition, offset, value):
        with self.lock:
            old = self.by_offset.setdefault((partition, offset), value)
            check(old == value, f"offset {partition}/{offset} holds {old} and {value}")
            self.values.add(value)

    def count(self):
        with self.lock:
            return len(self.values)


def report_progress(i):
    if i % 50 == 0:
        print(f"produced {i}", flush=True)


def confluent():
    from confluent_kafka import Consumer, Producer, TopicPartition

    acked, failed = set(), []

    def on_delivery(err, msg):
        if err is None:
            acked.add(msg.value().decode())
        else:
            failed.append(str(err))

    p = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 60000,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    seen = Seen()
    done = threading.Event()

    def consume():
        c = Consumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        c.subscribe([TOPIC])
        deadline = time.time() + DEADLINE
        while not done.is_set() and time.time() < deadline:
            msgs = c.consume(num_messages=100, timeout=0.2)
            for m in msgs:
                if m.error() is None:
                    seen.add(m.partition(), m.offset(), m.value().decode())
            if msgs:
                try:
                    c.commit(asynchronous=False)
                except Exception as e:  # a commit during the failover: the next one counts
                    print(f"commit failed: {e}", flush=True)
        # A last commit of everything read, then the committed offsets.
        for _ in range(50):
            try:
                c.commit(asynchronous=False)
                break
            except Exception:
                time.sleep(0.2)
        parts = [TopicPartition(TOPIC, p) for p in range(2)]
        committed = c.committed(parts, timeout=20)
        c.close()
        return {tp.partition: tp.offset for tp in committed}

    result = {}
    t = threading.Thread(target=lambda: result.update(consume()))
    t.start()
    for i in range(COUNT):
        p.produce(TOPIC, key=f"k{i % 10}", value=f"v{i}", on_delivery=on_delivery)
        p.poll(0)
        report_progress(i)
        time.sleep(PACE)
    left = p.flush(60)
    check(left == 0 and not failed, f"unacknowledged: {left}, failed: {failed[:5]}")
    check(len(acked) == COUNT, f"{len(acked)} of {COUNT} acknowledged")
    deadline = time.time() + DEADLINE
    while seen.count() < COUNT and time.time() < deadline:
        time.sleep(0.2)
    done.set()
    t.join()
    return acked, seen, result


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    p = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        retries=1000,
        metadata_max_age_ms=1000,
        request_timeout_ms=10000,
    )
    seen = Seen()
    done = threading.Event()
    result = {}

    def consume():
        c = KafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            group_id=GROUP,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            metadata_max_age_ms=1000,
        )
        c.subscribe([TOPIC])
        deadline = time.time() + DEADLINE
        while not done.is_set() and time.time() < deadline:
            batch = c.poll(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    seen.add(r.partition, r.offset, r.value.decode())
            if batch:
                try:
                    c.commit()
                except Exception as e:
                    print(f"commit failed: {e}", flush=True)
        for _ in range(50):
            try:
                c.commit()
                break
            except Exception:
                time.sleep(0.2)
        for part in range(2):
            result[part] = c.committed(TopicPartition(TOPIC, part))
        c.close()

    t = threading.Thread(target=consume)
    t.start()
    futures = []
    for i in range(COUNT):
        futures.append(p.send(TOPIC, key=f"k{i % 10}".encode(), value=f"v{i}".encode()))
        report_progress(i)
        time.sleep(PACE)
    p.flush(60)
    acked = set()
    for i, f in enumerate(futures):
        try:
            f.get(timeout=60)
            acked.add(f"v{i}")
        except Exception as e:
            check(False, f"v{i} not acknowledged: {e}")
    deadline = time.time() + DEADLINE
    while seen.count() < COUNT and time.time() < deadline:
        time.sleep(0.2)
    done.set()
    t.join()
    return acked, seen, result


def aiokafka():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def run():
        p = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            acks="all",
            enable_idempotence=True,
            metadata_max_age_ms=1000,
            request_timeout_ms=10000,
        )
        await p.start()
        seen = Seen()
        done = asyncio.Event()
        result = {}

        async def consume():
            c = AIOKafkaConsumer(
                TOPIC,
                bootstrap_servers=BOOTSTRAP,
                group_id=GROUP,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                metadata_max_age_ms=1000,
            )
            await c.start()
            deadline = time.time() + DEADLINE
            while not done.is_set() and time.time() < deadline:
                batch = await c.getmany(timeout_ms=200)
                for recs in batch.values():
                    for r in recs:
                        seen.add(r.partition, r.offset, r.value.decode())
                if batch:
                    try:
                        await c.commit()
                    except Exception as e:
                        print(f"commit failed: {e}", flush=True)
            for _ in range(50):
                try:
                    await c.commit()
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            for part in range(2):
                result[part] = await c.committed(TopicPartition(TOPIC, part))
            await c.stop()

        task = asyncio.create_task(consume())
        sends = []
        for i in range(COUNT):
            sends.append(
                await p.send(TOPIC, key=f"k{i % 10}".encode(), value=f"v{i}".encode())
            )
            report_progress(i)
            await asyncio.sleep(PACE)
        acked = set()
        for i, f in enumerate(sends):
            try:
                await asyncio.wait_for(f, 60)
                acked.add(f"v{i}")
            except Exception as e:
                check(False, f"v{i} not acknowledged: {e!r}")
        await p.stop()
        deadline = time.time() + DEADLINE
        while seen.count() < COUNT and time.time() < deadline:
            await asyncio.sleep(0.2)
        done.set()
        await task
        return acked, seen, result

    return asyncio.run(run())


acked, seen, committed = {"confluent": confluent, "kafka-python": kafka_python, "aiokafka": aiokafka}[
    CLIENT
]()
missing = sorted(acked - seen.values)
check(not missing, f"{len(missing)} acknowledged records never read: {missing[:5]}")
ends = {}
for (part, offset) in seen.by_offset:
    ends[part] = max(ends.get(part, 0), offset + 1)
for part, end in ends.items():
    check(committed.get(part) == end, f"partition {part}: committed {committed.get(part)}, read up to {end}")
print(f"ok: {len(acked)} acknowledged, {len(seen.by_offset)} read, committed {committed}", flush=True)
