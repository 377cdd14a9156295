// kafkajs (npm) against a rill broker: kafkajs speaks only the non-flexible protocol versions,
// so this checks rill's older API versions end to end. Scenarios: the admin calls (topics,
// partitions, configs, offsets, groups, records), keyed produce with gzip and a consumer
// group reading it back in order, an idempotent producer, and a committed and an aborted
// transaction read with read_committed. Exits non-zero on the first difference.
//
// Usage: NODE_PATH=<dir with node_modules> node kafkajs_client.js HOST:PORT

const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const broker = process.argv[2];
const run = Date.now().toString(36);
const kafka = new Kafka({
  clientId: 'rill-compat-kafkajs',
  brokers: [broker],
  logLevel: logLevel.ERROR,
  retry: { retries: 5, initialRetryTime: 100 },
});

function check(cond, what) {
  if (!cond) {
    throw new Error(`check failed: ${what}`);
  }
}

function eq(a, b, what) {
  const [x, y] = [JSON.stringify(a), JSON.stringify(b)];
  check(x === y, `${what}: got ${x}, want ${y}`);
}

// Reads `count` records of `topic` with a fresh group; resolves with them in arrival order.
async function readAll(topic, count, opts = {}) {
  const consumer = kafka.consumer({
    groupId: `js-read-${topic}-${Math.random().toString(36).slice(2)}`,
    readUncommitted: opts.readUncommitted || false,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`timed out reading ${topic}: ${got.length}/${count}`)),
      opts.timeoutMs || 30000,
    );
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          got.push({
            partition,
            key: message.key && message.key.toString(),
            value: message.value && message.value.toString(),
            offset: message.offset,
          });
          if (got.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  if (opts.settleMs) {
    // Anything more would arrive now (aborted records must not).
    await new Promise((r) => setTimeout(r, opts.settleMs));
  }
  await consumer.disconnect();
  return got;
}

async function scenarioAdmin() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = `js-admin-${run}`;
  eq(
    await admin.createTopics({
      topics: [{ topic, numPartitions: 2, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
      waitForLeaders: true,
    }),
    true,
    'createTopics',
  );
  check((await admin.listTopics()).includes(topic), 'listTopics has the topic');
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  eq(meta.topics[0].partitions.length, 2, 'partitions in metadata');
  await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
  const meta3 = await admin.fetchTopicMetadata({ topics: [topic] });
  eq(meta3.topics[0].partitions.length, 3, 'partitions after createPartitions');
  const configs = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: 2, name: topic, configNames: ['retention.ms'] }],
  });
  const retention = configs.resources[0].configEntries.find((c) => c.configName === 'retention.ms');
  eq(retention && retention.configValue, '3600000', 'describeConfigs retention.ms');
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: [0, 1, 2, 3].map((i) => ({ partition: 0, value: `v${i}` })) });
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  eq(offsets.find((o) => o.partition === 0).high, '4', 'high watermark of partition 0');
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '2' }] });
  const after = await admin.fetchTopicOffsets(topic);
  eq(after.find((o) => o.partition === 0).low, '2', 'low watermark after deleteTopicRecords');
  // A group's offsets: set, fetch, then delete the group.
  const groupId = `js-admin-group-${run}`;
  await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '3' }] });
  const fetched = await admin.fetchOffsets({ groupId, topics: [topic] });
  eq(fetched[0].partitions.find((p) => p.partition === 0).offset, '3', 'fetchOffsets after setOffsets');
  const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
  check(groups.includes(groupId), `listGroups has ${groupId}: ${groups}`);
  const described = await admin.describeGroups([groupId]);
  eq(described.groups[0].state, 'Empty', 'describeGroups state');
  await admin.deleteGroups([groupId]);
  await admin.deleteTopics({ topics: [topic] });
  check(!(await admin.listTopics()).includes(topic), 'deleted topic is gone');
  await admin.disconnect();
}

async function scenarioKeyedGzipAndGroup() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = `js-keyed-${run}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 30; i++) {
    messages.push({ key: `k${i % 5}`, value: `v${i}`, headers: { n: `${i}` } });
  }
  await producer.send({ topic, compression: CompressionTypes.GZIP, messages });
  await producer.disconnect();
  const got = await readAll(topic, 30);
  eq(got.length, 30, 'all records read');
  // Per key, the values come in send order, all on one partition.
  for (let k = 0; k < 5; k++) {
    const mine = got.filter((r) => r.key === `k${k}`);
    eq(mine.map((r) => r.value), messages.filter((m) => m.key === `k${k}`).map((m) => m.value), `order of k${k}`);
    eq(new Set(mine.map((r) => r.partition)).size, 1, `k${k} on one partition`);
  }
}

async function scenarioIdempotent() {
  const topic = `js-idem-${run}`;
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let i = 0; i < 5; i++) {
    await producer.send({ topic, acks: -1, messages: [{ key: 'k', value: `i${i}` }] });
  }
  await producer.disconnect();
  const got = await readAll(topic, 5);
  eq(got.map((r) => r.value), ['i0', 'i1', 'i2', 'i3', 'i4'], 'idempotent records once, in order');
}

async function scenarioTransactions() {
  const admin = kafka.admin();
  await admin.connect();
  const topic = `js-txn-${run}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer({
    transactionalId: `js-txn-${run}`,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  const committed = await producer.transaction();
  await committed.send({ topic, messages: [{ value: 'c1' }, { value: 'c2' }] });
  await committed.commit();
  const aborted = await producer.transaction();
  await aborted.send({ topic, messages: [{ value: 'a1' }] });
  await aborted.abort();
  const last = await producer.transaction();
  await last.send({ topic, messages: [{ value: 'c3' }] });
  await last.commit();
  await producer.disconnect();
  const got = await readAll(topic, 3, { settleMs: 1500 });
  eq(got.map((r) => r.value), ['c1', 'c2', 'c3'], 'read_committed sees the committed records only');
  const all = await readAll(topic, 4, { readUncommitted: true, settleMs: 500 });
  eq(all.map((r) => r.value), ['c1', 'c2', 'a1', 'c3'], 'read_uncommitted sees every record');
}

async function main() {
  for (const s of [scenarioAdmin, scenarioKeyedGzipAndGroup, scenarioIdempotent, scenarioTransactions]) {
    await s();
    console.log(`ok ${s.name}`);
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  },
);
