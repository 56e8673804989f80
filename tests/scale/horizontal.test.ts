import { KeyStore, SCOPES } from '@quern/api';
import { seedTestKeys, startTestRedis, type TestRedis, uniquePrefix } from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fleet, fleetEnv, submitJobs, sumMetric } from './support/fleet';
import { makeWorkload, QueueReader, verify, type Workload } from './support/workload';

/**
 * Horizontal scale-out: one API and three worker processes on one Redis take 5 000 jobs submitted
 * through the API; every job completes with the output ONNX Runtime gives directly, every worker
 * takes a share, and the outputs are exactly those of the same jobs run through a single worker.
 */
const MODELS = ['cars-mpg', 'mlp-large'];
const COUNTS = { 'cars-mpg': 4_500, 'mlp-large': 500 };
const TOTAL = 5_000;

let redis: TestRedis;
let client: Redis;
let workload: Workload;
const fleets: Fleet[] = [];
const readers: QueueReader[] = [];

/** Redis `used_memory` in bytes. */
async function usedMemory(): Promise<number> {
  const info = await client.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? Number.NaN);
}

async function runThrough(workers: number, label: string) {
  // Each run on its own key prefix: no result cache or queue state carries over between runs.
  const prefix = uniquePrefix(label);
  await seedTestKeys(new KeyStore(client, new KeySpace(prefix)), SCOPES);
  const fleet = new Fleet(fleetEnv({ REDIS_URL: redis.url, QUERN_REDIS_PREFIX: prefix }));
  fleets.push(fleet);
  const api = await fleet.startApi();
  await Promise.all(Array.from({ length: workers }, (_, i) => fleet.startWorker(`${label}-worker-${i + 1}`)));
  await fleet.ready();
  const reader = new QueueReader(client, prefix, MODELS);
  readers.push(reader);

  const memoryBefore = await usedMemory();
  const started = Date.now();
  const ids = await submitJobs(api.baseUrl, workload.jobs, 64);
  const submittedMs = Date.now() - started;
  const counts = await reader.waitForFinished(TOTAL, 60_000);
  const finishedMs = Date.now() - started;
  const memoryPerJob = Math.round((await usedMemory()) - memoryBefore) / TOTAL;
  const verdict = await verify(reader, ids, workload);
  const finishedPerWorker = await Promise.all(
    fleet.workers.map(async (w) =>
      sumMetric(await (await fetch(w.metricsUrl)).text(), 'quern_jobs_finished_total', { outcome: 'succeeded' }),
    ),
  );
  console.log(
    `[scale] ${label}: ${TOTAL} jobs (${JSON.stringify(COUNTS)}) through 1 API and ${workers} worker(s): ` +
      `submitted in ${submittedMs} ms (${Math.round(TOTAL / (submittedMs / 1000))} jobs/s), all finished after ` +
      `${finishedMs} ms (${Math.round(TOTAL / (finishedMs / 1000))} jobs/s); per worker (processedBy) ` +
      `${JSON.stringify(verdict.perWorker)}; quern_jobs_finished_total{outcome="succeeded"} per worker ` +
      `${JSON.stringify(finishedPerWorker)}; max |diff| vs direct ONNX Runtime ${verdict.maxDiff}; Redis memory ` +
      `per retained job (with its result and cache entry) ~${Math.round(memoryPerJob)} bytes`,
  );
  await fleet.stopAll();
  return { fleet, counts, verdict, finishedPerWorker };
}

beforeAll(async () => {
  // A server of its own even when REDIS_URL is set: these tests write thousands of jobs under prefixes
  // of their own, and measure Redis memory.
  redis = await startTestRedis({ forceOwn: true });
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
  workload = await makeWorkload(COUNTS);
});

afterAll(async () => {
  await Promise.all(fleets.map((f) => f.stopAll()));
  await Promise.all(readers.map((r) => r.close()));
  client?.disconnect();
  await redis?.close();
});

/**
 * The three-worker run, made once by whichever test needs it first: the one-worker test compares
 * against its outputs, and runs it itself when it runs alone.
 */
let threeWorkerRun: ReturnType<typeof runThrough> | undefined;
const threeWorkers = () => {
  threeWorkerRun ??= runThrough(3, 'three');
  return threeWorkerRun;
};

describe('horizontal scale-out on one Redis', () => {
  it('three workers complete 5 000 API-submitted jobs, each with the direct ONNX Runtime output; every worker takes a share', async () => {
    const { counts, verdict, fleet, finishedPerWorker } = await threeWorkers();
    expect(counts.failed ?? 0).toBe(0);
    expect(counts.completed).toBe(TOTAL);
    expect(verdict.notCompleted).toEqual([]);
    expect(verdict.wrongShape).toEqual([]);
    expect(verdict.maxDiff).toBeLessThanOrEqual(1e-4);
    // BullMQ records the worker's name (its wrk_… id) on each job it runs.
    const ids = fleet.workers.map((w) => w.id);
    expect(Object.keys(verdict.perWorker).sort()).toEqual([...ids].sort());
    for (const id of ids) expect(verdict.perWorker[id]).toBeGreaterThan(0);
    // The workers' own counters agree with what Redis recorded.
    expect(finishedPerWorker.reduce((a, b) => a + b, 0)).toBe(TOTAL);
    for (const [i, w] of fleet.workers.entries()) expect(finishedPerWorker[i]).toBe(verdict.perWorker[w.id]);
  });

  it('one worker gives exactly the same outputs for the same jobs', async () => {
    const threeWorkerOutputs = (await threeWorkers()).verdict.outputs;
    expect(threeWorkerOutputs).toHaveLength(TOTAL);
    const { counts, verdict } = await runThrough(1, 'one');
    expect(counts.failed ?? 0).toBe(0);
    expect(verdict.notCompleted).toEqual([]);
    expect(verdict.outputs).toEqual(threeWorkerOutputs);
  });
});
