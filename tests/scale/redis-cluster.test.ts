import { KeyStore, SCOPES } from '@quern/api';
import { LocalRedisCluster, seedTestKeys } from '@quern/devkit';
import { createRedis, KeySpace, loadConfig, type RedisClient, waitForRedis } from '@quern/shared';
import { Queue } from 'bullmq';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_HEADERS, Fleet, fleetEnv, mapLimit, pollUntil, submitJobs } from './support/fleet';
import { makeWorkload, type Workload } from './support/workload';

/**
 * The same service on a three-master Redis Cluster: API and worker processes configured with
 * REDIS_CLUSTER_NODES and the hash-tagged prefix {quern}, the layout of deployments from before
 * keys were spread (still accepted): every Quern key lands in one slot. Sync, async and batch
 * requests complete end to end. The spread layout is redis-cluster-spread.test.ts.
 */
const PREFIX = '{quern}';

let cluster: LocalRedisCluster;
let seedClient: RedisClient;
let fleet: Fleet;
let baseUrl: string;
let workload: Workload;

beforeAll(async () => {
  cluster = await LocalRedisCluster.start({ masters: 3 });
  const topology = loadConfig({ REDIS_CLUSTER_NODES: cluster.nodes, QUERN_REDIS_PREFIX: PREFIX });
  seedClient = createRedis(topology, 'consumer', { name: 'seed' });
  await waitForRedis(seedClient, 10_000);
  await seedTestKeys(new KeyStore(seedClient, new KeySpace(PREFIX)), SCOPES);
  // REDIS_URL unset (a value from the environment would be ignored anyway: the cluster wins).
  fleet = new Fleet(fleetEnv({ REDIS_URL: undefined, REDIS_CLUSTER_NODES: cluster.nodes, QUERN_REDIS_PREFIX: PREFIX }));
  baseUrl = (await fleet.startApi()).baseUrl;
  await Promise.all([fleet.startWorker('cluster-worker-1'), fleet.startWorker('cluster-worker-2')]);
  await fleet.ready();
  workload = await makeWorkload({ 'cars-mpg': 300, 'mlp-large': 20 }, 99);
}, 90_000);

afterAll(async () => {
  await fleet?.stopAll();
  seedClient?.disconnect();
  await cluster?.stop();
});

async function post(path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${baseUrl}${path}`, { method: 'POST', headers: API_HEADERS, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function asRow(prediction: unknown): number[] {
  return Array.isArray(prediction) ? (prediction as number[]) : [prediction as number];
}

function maxDiff(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  return Math.max(0, ...a.map((v, i) => Math.abs(v - (b[i] as number))));
}

describe('on a three-master Redis Cluster', () => {
  it('answers a synchronous prediction', async () => {
    const job = workload.jobs[0];
    if (!job) throw new Error('empty workload');
    const res = await post('/v1/predict', { model: job.model, features: job.features });
    expect(res.status).toBe(200);
    expect(res.body.cached).toBe(false);
    expect(maxDiff(asRow(res.body.prediction), workload.reference[0] as number[])).toBeLessThanOrEqual(1e-4);
  });

  it('completes a batch prediction', async () => {
    const rows = workload.jobs.slice(1, 41).filter((j) => j.model === 'cars-mpg');
    const res = await post('/v1/batch-predict', {
      model: 'cars-mpg',
      requests: rows.map((j) => ({ features: j.features })),
    });
    expect(res.status).toBe(200);
    const predictions = res.body.predictions as unknown[];
    expect(predictions).toHaveLength(rows.length);
    const reference = workload.jobs
      .map((j, i) => ({ j, i }))
      .slice(1, 41)
      .filter(({ j }) => j.model === 'cars-mpg')
      .map(({ i }) => workload.reference[i] as number[]);
    predictions.forEach((p, i) => {
      expect(maxDiff(asRow(p), reference[i] as number[])).toBeLessThanOrEqual(1e-4);
    });
  });

  it('a queue needs a hash tag: without one it cannot take a job on a cluster (why each queue has its own)', async () => {
    const client = new Cluster(
      cluster.ports.map((port) => ({ host: '127.0.0.1', port })),
      { redisOptions: { maxRetriesPerRequest: null } },
    );
    client.on('error', () => undefined);
    const untagged = new Queue('infer-tag-check', { connection: client, prefix: 'quern' });
    // The same tag as the service's keys: the check leaves nothing on another master.
    const tagged = new Queue('infer-tag-check', { connection: client, prefix: PREFIX });
    try {
      await expect(untagged.add('infer', {})).rejects.toThrow(/CROSSSLOT/);
      const job = await tagged.add('infer', {});
      expect(await tagged.getJobState(job.id as string)).toBe('waiting');
    } finally {
      await untagged.close();
      await tagged.close();
      // What either queue wrote (single-key commands such as its meta key do not need one slot).
      for (const node of client.nodes('master')) {
        const keys = [
          ...(await node.keys('quern:infer-tag-check:*')),
          ...(await node.keys(`${PREFIX}:infer-tag-check:*`)),
        ];
        for (const key of keys) await node.del(key);
      }
      client.disconnect();
    }
  });

  it('completes asynchronous jobs, polled through the API; every Quern key sits on one master', async () => {
    const started = Date.now();
    const ids = await submitJobs(baseUrl, workload.jobs, 32);
    const results = await mapLimit(ids, 16, (id) =>
      pollUntil(
        async () => {
          const res = await fetch(`${baseUrl}/v1/jobs/${id}`, { headers: API_HEADERS });
          const job = (await res.json()) as { status: string; output?: { prediction: unknown } };
          return ['succeeded', 'failed', 'canceled', 'expired'].includes(job.status) ? job : undefined;
        },
        30_000,
        () => `job ${id} not finished`,
        50,
      ),
    );
    const elapsed = Date.now() - started;
    expect(results.filter((r) => r.status !== 'succeeded')).toEqual([]);
    const worst = Math.max(
      ...results.map((r, i) => maxDiff(asRow(r.output?.prediction), workload.reference[i] as number[])),
    );
    expect(worst).toBeLessThanOrEqual(1e-4);
    const keys = await cluster.keysPerNode();
    console.log(
      `[scale] Redis Cluster (3 masters, prefix ${PREFIX}): ${ids.length} async jobs through 1 API and 2 workers ` +
        `in ${elapsed} ms; max |diff| ${worst}; keys per master ${JSON.stringify(keys)}`,
    );
    // One hash tag, one slot, one master: Cluster gives availability and memory, not throughput.
    expect(Object.values(keys).filter((n) => n > 0)).toHaveLength(1);
  });
});
