import { createApp, createServices, SCOPES, type Services } from '@quern/api';
import {
  APP_ENTRY,
  freePort,
  OTHER_API_KEY,
  ServiceProcess,
  seedTestKeys,
  startTestRedis,
  TEST_API_KEY,
  type TestRedis,
  testConfig,
} from '@quern/devkit';
import { type Config, createLogger, loadManifest } from '@quern/shared';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

/**
 * Fair share within a tier (docs/scheduling.md): keys of one tier take turns, by weight. Jobs are
 * queued before a worker starts (or while it drains), so every key has a backlog; what each key
 * got is read afterwards from its jobs' start times, never from timings.
 */

const MODEL = 'mlp-large';
const WIDTH = 256;
const MAX_BATCH = 64;
const ROWS_PER_JOB = 10;

let redis: TestRedis;
let services: Services | undefined;
let worker: ServiceProcess | undefined;

beforeAll(async () => {
  redis = await startTestRedis();
});

afterEach(async () => {
  await worker?.stop('SIGTERM');
  await services?.close();
  worker = undefined;
  services = undefined;
});

afterAll(async () => {
  await redis.close();
});

/** An API on a fresh prefix, no worker yet; rate limits off (the test floods on purpose). */
async function stack(prefix: string, overrides: Record<string, string> = {}) {
  const config: Config = testConfig(
    { url: redis.url, prefix },
    {
      QUERN_RATE_PREMIUM_PER_MINUTE: '0',
      QUERN_RATE_PREMIUM_PER_HOUR: '0',
      QUERN_CACHE_TTL_SECONDS: '0',
      ...overrides,
    },
  );
  const manifest = loadManifest(config.QUERN_MODELS_DIR);
  const logger = createLogger('api', 'silent');
  services = createServices(config, manifest, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const app = createApp(services, logger);
  const request = (path: string, key: string, init: { method?: string; body?: unknown; prefer?: string } = {}) =>
    Promise.resolve(
      app.request(path, {
        method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
        headers: { 'content-type': 'application/json', 'x-api-key': key, prefer: init.prefer ?? 'respond-async' },
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      }),
    );
  // The worker is a process of its own, as deployed: in this process its event loop would be the
  // API's and the test's too, and how soon it takes a newcomer's job would measure that loop.
  const startWorker = async () => {
    worker = new ServiceProcess({
      name: 'worker',
      entry: APP_ENTRY.worker,
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'info',
        REDIS_URL: redis.url,
        QUERN_REDIS_PREFIX: prefix,
        QUERN_WORKER_THREADS: '2',
        QUERN_WORKER_PORT: String(await freePort()),
        QUERN_HEARTBEAT_INTERVAL_MS: '500',
        QUERN_HEARTBEAT_TTL_MS: '3000',
        QUERN_CACHE_TTL_SECONDS: '0',
        ...overrides,
      },
    });
    await worker.waitForLog((line) => line.msg === 'worker started', 60_000);
  };
  return { app, request, startWorker };
}

type Request = Awaited<ReturnType<typeof stack>>['request'];

const randomRow = () => Array.from({ length: WIDTH }, () => Math.random() * 2 - 1);

/** Queues `rows` rows for `key` as jobs of ROWS_PER_JOB rows; returns the job ids. */
async function flood(request: Request, key: string, rows: number): Promise<string[]> {
  const ids: string[] = [];
  for (let done = 0; done < rows; ) {
    const burst = [];
    for (let k = 0; k < 20 && done < rows; k++, done += ROWS_PER_JOB) {
      const requests = Array.from({ length: ROWS_PER_JOB }, () => ({ features: randomRow() }));
      burst.push(request('/v1/batch-predict', key, { body: { model: MODEL, requests } }));
    }
    for (const res of await Promise.all(burst)) {
      expect(res.status).toBe(202);
      ids.push(((await res.json()) as { id: string }).id);
    }
  }
  return ids;
}

interface Finished {
  id: string;
  status: string;
  created_at: string;
  timings: { queue_ms: number } | null;
}

/** When the job's (first) batch began computing: `started_at` is when a worker took it, before its batch. */
const batchStart = (job: Finished | undefined): number =>
  Date.parse(job?.created_at ?? '') + (job?.timings?.queue_ms ?? Number.NaN);

async function waitFinished(request: Request, key: string, ids: string[]): Promise<Finished[]> {
  const out: Finished[] = [];
  for (const id of ids) {
    let job: Finished | undefined;
    await expect
      .poll(
        async () => {
          job = (await (await request(`/v1/jobs/${id}`, key)).json()) as Finished;
          return job.status;
        },
        { timeout: 60_000, interval: 50, message: JSON.stringify(job) },
      )
      .toBe('succeeded');
    out.push(job as Finished);
  }
  return out;
}

/**
 * Rows of each key that started before the batch holding the `rows`-th row to start (jobs of a
 * batch share one start time, so the cut falls between batches and no tie decides a count).
 */
function firstStarted(byKey: Record<string, Finished[]>, rows: number): Record<string, number> {
  const all = Object.entries(byKey).flatMap(([key, jobs]) => jobs.map((j) => ({ key, at: batchStart(j) })));
  all.sort((a, b) => a.at - b.at);
  const cut = all[Math.floor(rows / ROWS_PER_JOB)]?.at ?? Number.POSITIVE_INFINITY;
  const counts: Record<string, number> = Object.fromEntries(Object.keys(byKey).map((k) => [k, 0]));
  for (const { key, at } of all) if (at < cut) counts[key] = (counts[key] ?? 0) + ROWS_PER_JOB;
  return counts;
}

describe('fair share within a tier', () => {
  it('a key flooding 5,000 rows delays another key’s single job by a few batches at most', async () => {
    const { request, startWorker } = await stack('fairnew');
    const flooded = await flood(request, TEST_API_KEY, 5_000);
    await startWorker();
    // The worker is draining A's backlog; B submits one job now.
    const submitted = Date.now();
    const res = await request('/v1/jobs', OTHER_API_KEY, { body: { model: MODEL, features: randomRow() } });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const [mine] = await waitFinished(request, OTHER_API_KEY, [id]);
    const startedB = batchStart(mine);
    const others = await waitFinished(request, TEST_API_KEY, flooded);
    // Rows of A whose batch started after B was submitted and before B's batch: at most 3 batches.
    const aheadRows = others.filter((j) => {
      const at = batchStart(j);
      return at > submitted && at < startedB;
    }).length;
    expect(aheadRows * ROWS_PER_JOB).toBeLessThanOrEqual(3 * MAX_BATCH);
    // And A had plenty left when B ran: B did not simply come last.
    const afterB = others.filter((j) => batchStart(j) > startedB).length;
    expect(afterB * ROWS_PER_JOB).toBeGreaterThan(1_000);
  }, 180_000);

  it('with sync calls coalesced into shared jobs: 20 concurrent calls of another key wait a few batches', async () => {
    const { request, startWorker } = await stack('fairsync');
    const flooded = await flood(request, TEST_API_KEY, 5_000);
    await startWorker();
    // Sync calls of one key and model share jobs (one in flight, the rest gathered into the next).
    const calls = await Promise.all(
      Array.from({ length: 20 }, () =>
        request('/v1/predict', OTHER_API_KEY, {
          body: { model: MODEL, features: randomRow() },
          prefer: 'wait=60',
        }).then(async (res) => ({ status: res.status, body: (await res.json()) as { job_id: string } })),
      ),
    );
    expect(calls.map((c) => c.status)).toEqual(calls.map(() => 200));
    const jobIds = [...new Set(calls.map((c) => c.body.job_id))];
    expect(jobIds.length).toBeLessThan(20);
    const mine = await waitFinished(request, OTHER_API_KEY, jobIds);
    const lastStart = Math.max(...mine.map(batchStart));
    const others = await waitFinished(request, TEST_API_KEY, flooded);
    // Rows of the flood that started while one of the key's shared jobs was queued (from its
    // creation to its start). Between its jobs the key has nothing queued (the next shared job is
    // made once the one in flight is answered): how long that takes depends on the machine's load,
    // not on the scheduler, so those gaps are not counted.
    const aheadRows = mine.reduce((sum, job) => {
      const queuedFrom = Date.parse(job.created_at ?? '');
      const startedAt = batchStart(job);
      return (
        sum +
        others.filter((o) => {
          const at = batchStart(o);
          return at > queuedFrom && at < startedAt;
        }).length *
          ROWS_PER_JOB
      );
    }, 0);
    // Each of the key's shared jobs waits a few batches (without fair share: the whole flood).
    // Looser than the single job's 3: the 20 calls arrive as the worker is busiest, and a job the
    // worker has fetched still goes through its intake (a turn of the event loop shared with the
    // completions of the batches before) before the batch scheduler sees it; on a loaded 2-core
    // machine that took up to 6 batches of 64 mlp-large rows (1.7 ms each). The scheduler's own
    // order is checked in apps/worker/src/batch-scheduler.test.ts.
    expect(aheadRows).toBeLessThanOrEqual(6 * MAX_BATCH * jobIds.length);
    expect(others.filter((j) => batchStart(j) > lastStart).length * ROWS_PER_JOB).toBeGreaterThan(1_000);
  }, 180_000);

  it('two keys flooding together get the same rows, within 10%', async () => {
    const { request, startWorker } = await stack('fairtwo');
    const [a, b] = await Promise.all([flood(request, TEST_API_KEY, 2_000), flood(request, OTHER_API_KEY, 2_000)]);
    await startWorker();
    const byKey = {
      a: await waitFinished(request, TEST_API_KEY, a),
      b: await waitFinished(request, OTHER_API_KEY, b),
    };
    // While both had a backlog (the first half of all rows), each got about half.
    const counts = firstStarted(byKey, 2_000);
    const [ra, rb] = [counts.a ?? 0, counts.b ?? 0];
    expect(ra + rb).toBeGreaterThan(1_000);
    expect(Math.abs(ra - rb) / Math.max(ra, rb)).toBeLessThanOrEqual(0.1);
  }, 180_000);

  it('a key of weight 2 gets about twice the rows of a key of weight 1', async () => {
    const { request, startWorker } = await stack('fairweight');
    const created = await request('/v1/admin/keys', TEST_API_KEY, {
      body: { name: 'heavy', tier: 'premium', scopes: ['predict', 'jobs:read'] },
    });
    const heavy = (await created.json()) as { id: string; key: string };
    const patched = await request(`/v1/admin/keys/${heavy.id}`, TEST_API_KEY, {
      method: 'PATCH',
      body: { weight: 2 },
    });
    expect(await patched.json()).toMatchObject({ weight: 2 });
    // Batches hold keys in turns of whole jobs: the smaller key gets a little more than 1/3 at the
    // edges of each batch; over 1,500 rows the ratio stays well above 1.6 and below 2.4.
    const [h, l] = await Promise.all([flood(request, heavy.key, 2_000), flood(request, OTHER_API_KEY, 2_000)]);
    await startWorker();
    const byKey = {
      heavy: await waitFinished(request, heavy.key, h),
      light: await waitFinished(request, OTHER_API_KEY, l),
    };
    const counts = firstStarted(byKey, 1_500);
    const ratio = (counts.heavy ?? 0) / Math.max(1, counts.light ?? 0);
    expect(ratio).toBeGreaterThan(1.6);
    expect(ratio).toBeLessThan(2.4);
  }, 180_000);
});
