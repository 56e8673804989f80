import { KeyStore, SCOPES } from '@quern/api';
import { LocalRedisCluster, seedTestKeys } from '@quern/devkit';
import { createRedis, KeySpace, loadConfig, type RedisClient, waitForRedis } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_HEADERS, Fleet, fleetEnv, mapLimit, pollUntil } from './support/fleet';
import { makeWorkload, type Workload } from './support/workload';

/**
 * The spread key layout on a local Redis Cluster of three masters with a replica each: an
 * untagged prefix and QUERN_QUEUE_PARTITIONS=3, so each queue (model and partition) has a hash
 * tag of its own and the per-request keys go by their own names. Mixed traffic (async jobs,
 * /v1/predict, /v1/batch-predict) through an API and a worker process must spread the commands
 * over every master (INFO commandstats counts the commands inside BullMQ's scripts too), every
 * job must succeed, and a master failed over to its replica mid-run must cost only 503s while
 * the failover lasts, never an accepted job. Calls come from six keys in turn, as tenants would:
 * a key's row ledger, recent jobs, usage and rate-limit windows share its hash tag, so one key
 * alone would make its master serve the most (about half of the commands).
 */
const PREFIX = 'quern';
const TERMINAL = ['succeeded', 'failed', 'canceled', 'expired'];

let cluster: LocalRedisCluster;
let seedClient: RedisClient;
let fleet: Fleet;
let baseUrl: string;
let workload: Workload;
/** The API keys calls come from, in turn (each job is read with the key that made it). */
let apiKeys: string[];

beforeAll(async () => {
  cluster = await LocalRedisCluster.start({ masters: 3, replicas: 1 });
  const env = { REDIS_CLUSTER_NODES: cluster.nodes, QUERN_REDIS_PREFIX: PREFIX, QUERN_QUEUE_PARTITIONS: '3' };
  const config = loadConfig(env);
  seedClient = createRedis(config, 'consumer', { name: 'seed' });
  await waitForRedis(seedClient, 10_000);
  const store = new KeyStore(seedClient, KeySpace.of(config));
  await seedTestKeys(store, SCOPES);
  apiKeys = [API_HEADERS['x-api-key']];
  for (let i = 1; i < 6; i++) {
    apiKeys.push((await store.create({ name: `tenant-${i}`, tier: 'premium', scopes: ['predict', 'jobs:read'] })).key);
  }
  fleet = new Fleet(fleetEnv({ REDIS_URL: undefined, ...env }));
  baseUrl = (await fleet.startApi()).baseUrl;
  await fleet.startWorker('spread-worker');
  await fleet.ready();
  workload = await makeWorkload({ 'cars-mpg': 700, 'mlp-large': 30 }, 17);
}, 120_000);

afterAll(async () => {
  await fleet?.stopAll();
  seedClient?.disconnect();
  await cluster?.stop();
});

interface Call {
  status: number;
  at: number;
  body: Record<string, unknown>;
}

async function post(path: string, body: unknown, key: string): Promise<Call> {
  const res = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { ...API_HEADERS, 'x-api-key': key },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, at: Date.now(), body: parsed };
}

/** Polls each job through the API (with its key) until it has finished; the finished views, in order. */
async function finished(
  jobs: readonly { id: string; key: string }[],
  timeoutMs = 60_000,
): Promise<{ id: string; status: string }[]> {
  return mapLimit(jobs, 16, ({ id, key }) =>
    pollUntil(
      async () => {
        const res = await fetch(`${baseUrl}/v1/jobs/${id}`, { headers: { ...API_HEADERS, 'x-api-key': key } });
        if (res.status !== 200) return undefined;
        const job = (await res.json()) as { id: string; status: string };
        return TERMINAL.includes(job.status) ? job : undefined;
      },
      timeoutMs,
      () => `job ${id} not finished`,
      100,
    ),
  );
}

/**
 * One round of mixed traffic: async jobs, single predictions and batch predictions, `lanes` at a
 * time, over the workload's rows from `from`. Every call's status and time is kept.
 */
async function mixedTraffic(
  from: number,
  count: number,
  lanes: number,
  onCall: (calls: readonly Call[]) => void = () => undefined,
): Promise<{ calls: Call[]; jobIds: { id: string; key: string }[] }> {
  const calls: Call[] = [];
  const jobIds: { id: string; key: string }[] = [];
  const items = workload.jobs.slice(from, from + count);
  await mapLimit(items, lanes, async (job, i) => {
    let call: Call;
    const key = apiKeys[Math.floor(i / 3) % apiKeys.length] as string;
    if (i % 3 === 0) {
      call = await post('/v1/jobs', { model: job.model, features: job.features }, key);
      if (call.status === 202) jobIds.push({ id: String(call.body.id), key });
    } else if (i % 3 === 1) {
      call = await post('/v1/predict', { model: job.model, features: job.features }, key);
    } else {
      const rows = workload.jobs.slice(from + i, from + i + 4).filter((j) => j.model === job.model);
      call = await post(
        '/v1/batch-predict',
        { model: job.model, requests: rows.map((r) => ({ features: r.features })) },
        key,
      );
    }
    calls.push(call);
    onCall(calls);
  });
  return { calls, jobIds };
}

describe('spread keys on a three-master Redis Cluster with replicas', () => {
  it('spreads mixed traffic over every master (≥ 20% of the commands each); every call and job succeeds', async () => {
    const masters = await cluster.masterPorts();
    expect(masters).toHaveLength(3);
    for (const port of masters) await cluster.cli(port, 'config', 'resetstat');
    const { calls, jobIds } = await mixedTraffic(0, 240, 12);
    const results = await finished(jobIds);
    const calls2 = await Promise.all(masters.map((port) => cluster.commandCalls(port)));
    const total = calls2.reduce((a, b) => a + b, 0);
    const shares = calls2.map((n) => n / total);
    const keys = await cluster.keysPerNode();
    console.log(
      `[scale] spread cluster: ${calls.length} calls (${jobIds.length} async jobs); commands per master ` +
        `${JSON.stringify(calls2)} (shares ${shares.map((s) => s.toFixed(2)).join(', ')}); keys per master ${JSON.stringify(keys)}`,
    );
    expect(calls.filter((c) => c.status !== 200 && c.status !== 202)).toEqual([]);
    expect(results.filter((r) => r.status !== 'succeeded')).toEqual([]);
    expect(jobIds.length).toBeGreaterThanOrEqual(80);
    for (const share of shares) expect(share).toBeGreaterThanOrEqual(0.2);
    for (const n of Object.values(keys)) expect(n).toBeGreaterThan(0);
  });

  it('fails a master over to its replica mid-run: accepted jobs finish, 503s only while the failover lasts', async () => {
    const [victim] = await cluster.masterPorts();
    if (victim === undefined) throw new Error('no master');
    let window: { from: number; to: number } | undefined;
    // Mid-run: once a quarter of the calls have been answered by the healthy cluster.
    let midRun: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => {
      midRun = resolve;
    });
    // Rows no call has sent before (a cached row would not reach a queue).
    const traffic = mixedTraffic(250, 420, 8, (calls) => {
      if (calls.length >= 105) midRun();
    });
    const failover = (async () => {
      await reached;
      const from = Date.now();
      const promoted = await cluster.failover(victim);
      window = { from, to: Date.now() };
      return promoted;
    })();
    const [{ calls, jobIds }, promoted] = await Promise.all([traffic, failover]);
    if (!window) throw new Error('no failover window');
    const w = window;
    const results = await finished(jobIds);
    const refused = calls.filter((c) => c.status !== 200 && c.status !== 202);
    console.log(
      `[scale] failover ${victim} → ${promoted} in ${w.to - w.from} ms: ${calls.length} calls, ` +
        `${jobIds.length} accepted jobs, ${refused.length} refused (${JSON.stringify(refused.map((c) => c.status))})`,
    );
    expect((await cluster.masterPorts()).includes(promoted)).toBe(true);
    // The failover happened while calls were going on, before and after it.
    expect(calls.filter((c) => c.at > w.to).length).toBeGreaterThan(50);
    // Every accepted job finished, and succeeded.
    expect(results.filter((r) => r.status !== 'succeeded')).toEqual([]);
    // Refusals: 503 only, and only from the failover's start until clients have seen the new
    // master (ioredis refreshes its slot map on the first MOVED; a second of slack for that).
    for (const c of refused) {
      const logged = fleet.api?.process.lines.filter((l) => l.includes(String(c.body.request_id))) ?? [];
      expect(c.status, `${JSON.stringify(c.body)}\n${logged.join('\n')}`).toBe(503);
      expect(c.at).toBeGreaterThanOrEqual(w.from);
      expect(c.at).toBeLessThanOrEqual(w.to + 1_000);
    }
    expect(calls.length - refused.length).toBeGreaterThan(300);
    // After the failover the service takes traffic as before.
    const after = await mixedTraffic(680, 30, 6);
    expect(after.calls.filter((c) => c.status !== 200 && c.status !== 202)).toEqual([]);
    expect((await finished(after.jobIds)).filter((r) => r.status !== 'succeeded')).toEqual([]);
  });
});
