import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createApp, createServices, SCOPES, type Services } from '@quern/api';
import {
  DirectOrt,
  maxAbsDiff,
  OTHER_API_KEY,
  REPO_ROOT,
  randomRows,
  seedTestKeys,
  startTestRedis,
  TEST_API_KEY,
  type TestRedis,
  testConfig,
  uniquePrefix,
} from '@quern/devkit';
import {
  type Config,
  createLogger,
  InferenceJobData,
  jobRowCount,
  KeySpace,
  loadManifest,
  type ModelEntry,
  type ModelManifest,
  modelPartitions,
} from '@quern/shared';
import { WorkerRuntime } from '@quern/worker';
import type { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { writeTestModels } from '../support/test-models';

/**
 * Partitioned queues (`QUERN_QUEUE_PARTITIONS`, a manifest entry's `partitions`; docs/configuration.md,
 * docs/scheduling.md): a model's jobs spread over its BullMQ queues by id, one worker consumes
 * them all and batches across them, and priorities, cancel, retry, position, Bull Board and the
 * depth cap work per partition. One API on a Redis of the test's own; workers are started by each
 * test for its own models (a model no worker serves keeps its jobs queued).
 */

const PARTITIONS = 3;
const CAR = [4, 140, 90, 2264, 15.5, 1971];
const MLP_WIDTH = 256;

/** Every model has a test of its own (so queues, drain rates and batches of its own). */
const M = {
  /** Jobs queued with no worker, then one batch (1 s gathering) over all partitions. */
  batched: 'cars-p-batched',
  /** A manifest entry with its own `partitions: 2`. */
  two: 'cars-p-two',
  sync: 'cars-p-sync',
  /** One row per batch: jobs run one after another, in the order the consumers take them. */
  priority: 'mlp-p-priority',
  eta: 'mlp-p-eta',
  /** Fair share between two keys across the partitions. */
  fair: 'mlp-p-fair',
  idle: 'cars-p-idle',
  retry: 'cars-p-retry',
} as const;

let redis: TestRedis;
let modelsDir: string;
let manifest: ModelManifest;
let config: Config;
let services: Services;
let app: ReturnType<typeof createApp>;
let keys: KeySpace;
let client: Redis;
let cars: DirectOrt;
let mlp: DirectOrt;
let worker: WorkerRuntime | undefined;
const opened: Services[] = [];
let seed = 1;

const settings = (modelsDir: string): Record<string, string> => ({
  QUERN_MODELS_DIR: modelsDir,
  QUERN_QUEUE_PARTITIONS: String(PARTITIONS),
  QUERN_WORKER_THREADS: '1',
  QUERN_CACHE_TTL_SECONDS: '0',
  QUERN_RATE_PREMIUM_PER_MINUTE: '0',
  QUERN_RATE_PREMIUM_PER_HOUR: '0',
});

beforeAll(async () => {
  redis = await startTestRedis();
  const real = loadManifest(join(REPO_ROOT, 'models'));
  const carsEntry = real.models.find((m) => m.name === 'cars-mpg') as ModelEntry;
  modelsDir = writeTestModels(
    [
      { name: M.batched, from: 'cars-mpg', batching: { max_delay_ms: 1_000, max_batch_size: 256 } },
      { name: M.sync, from: 'cars-mpg' },
      { name: M.priority, from: 'mlp-large', batching: { max_batch_size: 1, max_delay_ms: 0 } },
      { name: M.eta, from: 'mlp-large', batching: { max_batch_size: 8, max_delay_ms: 0 } },
      { name: M.fair, from: 'mlp-large', batching: { max_batch_size: 8, max_delay_ms: 0 } },
      { name: M.idle, from: 'cars-mpg' },
      { name: M.retry, from: 'cars-mpg' },
    ],
    [() => ({ ...carsEntry, name: M.two, partitions: 2 })],
  );
  config = testConfig(redis, settings(modelsDir));
  manifest = loadManifest(modelsDir);
  const logger = createLogger('api', 'silent');
  services = createServices(config, manifest, logger);
  opened.push(services);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  app = createApp(services, logger);
  keys = KeySpace.of(config, (model) => modelPartitions(manifest, model, config.QUERN_QUEUE_PARTITIONS));
  client = new Redis(redis.url);
  cars = await DirectOrt.load(modelsDir, carsEntry);
  mlp = await DirectOrt.load(modelsDir, real.models.find((m) => m.name === 'mlp-large') as ModelEntry);
});

afterEach(async () => {
  await worker?.close(10_000);
  worker = undefined;
});

afterAll(async () => {
  client?.disconnect();
  await cars?.release();
  await mlp?.release();
  for (const s of opened) await s.close();
  await redis?.close();
  if (modelsDir) rmSync(modelsDir, { recursive: true, force: true });
});

/** A worker for these models only, on the API's Redis, prefix and partitions. */
async function startWorker(models: string[], overrides: Record<string, string> = {}): Promise<void> {
  const workerConfig = testConfig(redis, {
    ...settings(modelsDir),
    QUERN_WORKER_MODELS: models.join(','),
    ...overrides,
  });
  worker = await WorkerRuntime.start({
    config: workerConfig,
    manifest,
    logger: createLogger('worker', 'silent'),
  });
}

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  Promise.resolve(
    app.request(path, {
      method,
      headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }),
  );

const carRow = (): number[] => CAR.map((v, i) => (i === 5 ? v : v + seed++ / 1000));
const mlpRow = (): number[] => randomRows(1, MLP_WIDTH, seed++)[0] as number[];

interface JobBody {
  id: string;
  status: string;
  created_at: string;
  output: { prediction: number | number[] } | null;
  timings: { queue_ms: number; batch_size: number } | null;
  queue?: { position: number; ahead_rows: number; eta_ms: number | null } | null;
  error?: { code: string } | null;
}

/** POST /v1/jobs: one row, accepted. */
async function submit(model: string, features: number[], extra: Record<string, unknown> = {}): Promise<string> {
  const res = await call('POST', '/v1/jobs', { model, features, ...extra });
  expect(res.status).toBe(202);
  return ((await res.json()) as JobBody).id;
}

const read = async (id: string) => (await (await call('GET', `/v1/jobs/${id}`)).json()) as JobBody;

async function succeeded(id: string, timeout = 30_000): Promise<JobBody> {
  let job: JobBody | undefined;
  await expect
    .poll(
      async () => {
        job = await read(id);
        return job.status;
      },
      { timeout, interval: 25 },
    )
    .toBe('succeeded');
  return job as JobBody;
}

const queues = (model: string) => services.jobs.queuesOf(model);
const home = (model: string, id: string): Queue => queues(model).forJob(id);

/** Waiting jobs (list and prioritized set) of each partition of the model. */
const depths = async (model: string) =>
  Promise.all(
    queues(model).partitions.map(async (q) => {
      const counts = await q.getJobCounts('waiting', 'prioritized');
      return (counts.waiting ?? 0) + (counts.prioritized ?? 0);
    }),
  );

/** Submits jobs of the model until one lands on a partition other than the first. */
async function submitOffFirst(model: string): Promise<{ id: string; features: number[]; partition: number }> {
  for (let i = 0; i < 30; i++) {
    const features = carRow();
    const id = await submit(model, features);
    const partition = queues(model).partitionOf(id);
    if (partition > 0) return { id, features, partition };
  }
  throw new Error('30 jobs in a row on partition 0');
}

const owner = async () => (await services.apiKeys.findByKey(TEST_API_KEY))?.id as string;

describe('jobs spread over partitions and are batched across them', () => {
  it('fills every partition, runs the jobs of all of them in one batch, each with its own output', async () => {
    expect(queues(M.batched).partitions.map((q) => q.name)).toEqual([
      `infer-${M.batched}`,
      `infer-${M.batched}.1`,
      `infer-${M.batched}.2`,
    ]);
    // The manifest entry's own `partitions` wins over QUERN_QUEUE_PARTITIONS.
    expect(queues(M.two).partitions.map((q) => q.name)).toEqual([`infer-${M.two}`, `infer-${M.two}.1`]);

    const rows = { [M.batched]: [] as number[][], [M.two]: [] as number[][] };
    const ids = { [M.batched]: [] as string[], [M.two]: [] as string[] };
    for (const model of [M.batched, M.two] as const) {
      for (let i = 0; i < 30; i++) {
        const features = carRow();
        rows[model].push(features);
        ids[model].push(await submit(model, features));
      }
    }
    // No worker yet: every job waits in the partition its id hashes to, and every partition has some.
    for (const model of [M.batched, M.two] as const) {
      const counts = await depths(model);
      expect(counts).toHaveLength(model === M.two ? 2 : PARTITIONS);
      for (const n of counts) expect(n).toBeGreaterThan(0);
      expect(counts.reduce((a, b) => a + b, 0)).toBe(30);
      for (const id of ids[model]) expect(await home(model, id).getJobState(id)).toBe('prioritized');
    }
    const largestPartition = Math.max(...(await depths(M.batched)));

    await startWorker([M.batched, M.two]);
    for (const model of [M.batched, M.two] as const) {
      const done = await Promise.all(ids[model].map((id) => succeeded(id)));
      const expected = await cars.run(rows[model]);
      expect(
        maxAbsDiff(
          done.map((j) => [j.output?.prediction as number]),
          expected,
        ),
      ).toBeLessThan(1e-4);
      if (model === M.batched) {
        // Rows gather for 1 s from the first one taken: a batch holding more jobs than any one
        // partition had can only have taken jobs of several partitions.
        const sizes = done.map((j) => j.timings?.batch_size ?? 0);
        expect(Math.max(...sizes)).toBeGreaterThan(largestPartition);
      }
    }
  });

  it('/v1/predict: a coalesced job holds the rows of several callers, whole, in its one partition', async () => {
    await startWorker([M.sync]);
    const seen = new Set<number>();
    let coalesced = 0;
    // Bursts of concurrent calls: while a group's job is in flight the next calls gather into one
    // job. Bursts go on until coalesced jobs were seen on every partition (ids are random).
    for (let burst = 0; burst < 40 && seen.size < PARTITIONS; burst++) {
      const rows = Array.from({ length: 12 }, carRow);
      const responses = await Promise.all(
        rows.map((features) => call('POST', '/v1/predict', { model: M.sync, features })),
      );
      const bodies = (await Promise.all(responses.map((r) => r.json()))) as {
        prediction: number;
        job_id: string;
        job_row: number;
      }[];
      expect(responses.map((r) => r.status)).toEqual(rows.map(() => 200));
      expect(
        maxAbsDiff(
          bodies.map((b) => [b.prediction]),
          await cars.run(rows),
        ),
      ).toBeLessThan(1e-4);
      for (const id of new Set(bodies.map((b) => b.job_id))) {
        const callers = bodies.filter((b) => b.job_id === id);
        if (callers.length < 2) continue;
        coalesced++;
        const partition = queues(M.sync).partitionOf(id);
        seen.add(partition);
        // The job is whole in its own partition: every caller's row in it, in no other partition.
        const job = await home(M.sync, id).getJob(id);
        expect(job).toBeTruthy();
        expect(jobRowCount(InferenceJobData.parse(job?.data))).toBe(callers.length);
        expect(new Set(callers.map((c) => c.job_row)).size).toBe(callers.length);
        const others = queues(M.sync).partitions.filter((_, p) => p !== partition);
        for (const q of others) expect(await q.getJob(id)).toBeUndefined();
      }
    }
    expect(coalesced).toBeGreaterThan(0);
    expect([...seen].sort()).toEqual([0, 1, 2]);
  });
});

describe('priorities across partitions', () => {
  it('a high-priority job queued after 60 low-priority ones on every partition runs among the first', async () => {
    const low: string[] = [];
    for (let i = 0; i < 60; i++) low.push(await submit(M.priority, mlpRow(), { priority: 10 }));
    const high = await submit(M.priority, mlpRow());
    const highPartition = queues(M.priority).partitionOf(high);
    const lowOnIt = low.filter((id) => queues(M.priority).partitionOf(id) === highPartition).length;
    expect(lowOnIt).toBeGreaterThan(5);
    for (const n of await depths(M.priority)) expect(n).toBeGreaterThan(5);
    // Each partition's consumer takes one job at a time (a prefetch of 3 over 3 partitions) and
    // each batch is one row: jobs run in the order the consumers take them.
    await startWorker([M.priority], { QUERN_WORKER_PREFETCH: String(PARTITIONS) });
    const done = await Promise.all([...low, high].map((id) => succeeded(id, 45_000)));
    const startOf = (j: JobBody) => Date.parse(j.created_at) + (j.timings?.queue_ms ?? Number.NaN);
    const order = done.map((j) => ({ id: j.id, at: startOf(j) })).sort((a, b) => a.at - b.at);
    const rank = order.findIndex((o) => o.id === high);
    // Behind it in its own partition were `lowOnIt` jobs; ahead of it can only be what the other
    // partitions' consumers took while it was being fetched: at most one batch round.
    expect(rank).toBeLessThan(PARTITIONS * 2);
    expect(lowOnIt).toBeGreaterThan(PARTITIONS * 2);
  }, 60_000);
});

describe('cancel, retry and standing of a job on another partition than the first', () => {
  it('DELETE removes a queued job from its partition, gives its rows back; a second cancel is 409', async () => {
    const me = await owner();
    const { id, partition } = await submitOffFirst(M.idle);
    expect(await queues(M.idle).partitions[partition]?.getJobState(id)).toBe('prioritized');
    expect(await client.hget(keys.keyRows(me), id)).toBe('1');
    const held = Number(await client.hget(keys.keyRows(me), 'total'));

    const res = await call('DELETE', `/v1/jobs/${id}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: 'canceled', error: { code: 'canceled' } });
    for (const q of queues(M.idle).partitions) expect(await q.getJobState(id)).toBe('unknown');
    expect((await read(id)).status).toBe('canceled');
    expect(await client.hget(keys.keyRows(me), id)).toBeNull();
    expect(Number(await client.hget(keys.keyRows(me), 'total'))).toBe(held - 1);
    expect((await call('DELETE', `/v1/jobs/${id}`)).status).toBe(409);
  });

  it('POST /retry puts a canceled job back in its partition under its id, and it runs', async () => {
    const me = await owner();
    const { id, features, partition } = await submitOffFirst(M.retry);
    expect((await call('DELETE', `/v1/jobs/${id}`)).status).toBe(200);
    const res = await call('POST', `/v1/jobs/${id}/retry`);
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ id, status: 'queued' });
    expect(await queues(M.retry).partitions[partition]?.getJobState(id)).toBe('prioritized');
    expect(await client.hget(keys.keyRows(me), id)).toBe('1');
    const queued = await read(id);
    expect(queued).toMatchObject({ status: 'queued', queue: { position: expect.any(Number) } });

    await startWorker([M.retry]);
    const job = await succeeded(id);
    const [expected] = await cars.run([features]);
    expect(Math.abs((job.output?.prediction as number) - (expected?.[0] as number))).toBeLessThan(1e-4);
    await expect.poll(async () => client.hget(keys.keyRows(me), id), { timeout: 5_000 }).toBeNull();
  });

  it('position counts the jobs ahead in the job’s own partition; an ETA appears as it drains, never rising', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 240; i++) ids.push(await submit(M.eta, mlpRow()));
    const partitionOf = (id: string) => queues(M.eta).partitionOf(id);
    // The last job submitted on a partition other than the first.
    const target = [...ids].reverse().find((id) => partitionOf(id) > 0) as string;
    const ahead = ids.slice(0, ids.indexOf(target)).filter((id) => partitionOf(id) === partitionOf(target)).length;
    expect(ahead).toBeLessThan(ids.indexOf(target));
    const queue = home(M.eta, target);
    expect(Number(await client.zrank(`${config.QUERN_REDIS_PREFIX}:${queue.name}:prioritized`, target))).toBe(ahead);
    expect((await read(target)).queue).toEqual({ position: ahead, ahead_rows: ahead, eta_ms: null });

    await startWorker([M.eta], { QUERN_WORKER_PREFETCH: '6' });
    const standings: { position: number; eta_ms: number | null }[] = [];
    for (;;) {
      const job = await read(target);
      if (job.status !== 'queued') break;
      if (job.queue) standings.push(job.queue);
      // Paces the reads as a client's polls are paced.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(standings.length).toBeGreaterThan(2);
    for (let i = 1; i < standings.length; i++) {
      const [was, now] = [standings[i - 1], standings[i]] as [(typeof standings)[0], (typeof standings)[0]];
      expect(now.position).toBeLessThanOrEqual(was.position);
      if (was.eta_ms !== null) expect(now.eta_ms ?? Number.POSITIVE_INFINITY).toBeLessThanOrEqual(was.eta_ms);
    }
    expect(standings.some((s) => s.eta_ms !== null && s.eta_ms > 0)).toBe(true);
    await succeeded(target);
  }, 60_000);
});

describe('fair share across partitions', () => {
  it('another key’s job queued behind 240 of one key’s runs within 3 batches, not behind the flood', async () => {
    const flood: string[] = [];
    for (let i = 0; i < 240; i++) flood.push(await submit(M.fair, mlpRow()));
    const res = await call('POST', '/v1/jobs', { model: M.fair, features: mlpRow() }, { 'x-api-key': OTHER_API_KEY });
    expect(res.status).toBe(202);
    const newcomer = ((await res.json()) as JobBody).id;
    // Each partition has the newcomer's key at the front of its band: it is fetched among the first.
    await startWorker([M.fair], { QUERN_WORKER_PREFETCH: '6' });
    const startOf = (job: JobBody) => Date.parse(job.created_at) + (job.timings?.queue_ms ?? Number.NaN);
    const readAs = async (id: string, key: string) =>
      (await (await call('GET', `/v1/jobs/${id}`, undefined, { 'x-api-key': key })).json()) as JobBody;
    let mine: JobBody | undefined;
    await expect
      .poll(
        async () => {
          mine = await readAs(newcomer, OTHER_API_KEY);
          return mine.status;
        },
        { timeout: 30_000, interval: 25 },
      )
      .toBe('succeeded');
    const startedAt = startOf(mine as JobBody);
    const others = await Promise.all(flood.map((id) => succeeded(id, 60_000)));
    const ahead = others.filter((job) => startOf(job) < startedAt).length;
    // Batches of at most 8 rows: 3 batches. First come first served would put it behind about a
    // third of the flood (its partition's share), and the batch scheduler behind what it holds.
    expect(ahead).toBeLessThanOrEqual(24);
    expect(others.filter((job) => startOf(job) > startedAt).length).toBeGreaterThan(150);
  }, 90_000);
});

describe('Bull Board', () => {
  it('lists every partition queue with its counts, and finds a job in its partition', async () => {
    const res = await call('GET', '/admin/queues/api/queues');
    expect(res.status).toBe(200);
    const board = (await res.json()) as { queues: { name: string; counts: Record<string, number> }[] };
    const names = board.queues.map((q) => q.name);
    for (const model of [M.batched, M.idle, M.eta]) {
      for (const q of queues(model).partitions) expect(names).toContain(q.name);
    }
    expect(names).toContain(`infer-${M.two}.1`);
    expect(names).not.toContain(`infer-${M.two}.2`);
    // Partitions beyond the configured number do not exist.
    expect(names).not.toContain(`infer-${M.idle}.${PARTITIONS}`);

    const { id, partition } = await submitOffFirst(M.idle);
    const name = queues(M.idle).partitions[partition]?.name as string;
    const again = (await (await call('GET', '/admin/queues/api/queues')).json()) as typeof board;
    const listed = again.queues.find((q) => q.name === name);
    expect(listed?.counts.prioritized).toBe(await queues(M.idle).partitions[partition]?.getPrioritizedCount());
    const detail = await call('GET', `/admin/queues/api/queues/${encodeURIComponent(name)}/${id}`);
    expect(detail.status).toBe(200);
    expect(await detail.json()).toMatchObject({ job: { id }, status: 'prioritized' });
  });
});

describe('the queue-depth cap with partitions', () => {
  /** An API of its own (the cap is the deployment's), no worker, on a fresh prefix. */
  async function cappedApi(maxDepth: number) {
    const capped = testConfig(
      { url: redis.url, prefix: uniquePrefix() },
      { ...settings(modelsDir), QUERN_QUEUE_MAX_DEPTH: String(maxDepth), QUERN_QUEUE_DEPTH_CACHE_MS: '0' },
    );
    const logger = createLogger('api', 'silent');
    const s = createServices(capped, manifest, logger);
    opened.push(s);
    await s.connected(10_000);
    await seedTestKeys(s.apiKeys, SCOPES);
    return { services: s, app: createApp(s, logger) };
  }

  it('is divided exactly over the partitions and holds under 200 concurrent submissions', async () => {
    // docs/configuration.md, QUERN_QUEUE_MAX_DEPTH: the cap is divided exactly over the partitions,
    // the first `cap mod partitions` holding one more: 3 each of 9 on three partitions, 5 and 4 on two.
    const MAX = 9;
    const capped = await cappedApi(MAX);
    for (const [model, shares] of [
      [M.idle, [3, 3, 3]],
      [M.two, [5, 4]],
    ] as const) {
      const responses = await Promise.all(
        Array.from({ length: 200 }, () =>
          capped.app.request('/v1/jobs', {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
            body: JSON.stringify({ model, features: carRow() }),
          }),
        ),
      );
      const statuses = responses.map((r) => r.status);
      const refusals = (await Promise.all(responses.filter((r) => r.status !== 202).map((r) => r.json()))) as {
        code: string;
      }[];
      expect(statuses.filter((s) => s === 202)).toHaveLength(MAX);
      expect(new Set(statuses.filter((s) => s !== 202))).toEqual(new Set([503]));
      expect(new Set(refusals.map((r) => r.code))).toEqual(new Set(['queue_full']));
      const partitions = capped.services.jobs.queuesOf(model).partitions;
      expect(await Promise.all(partitions.map((q) => q.getPrioritizedCount()))).toEqual([...shares]);
    }
  });
});
