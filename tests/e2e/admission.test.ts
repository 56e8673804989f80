import { createApp, createServices, SCOPES, type Services } from '@quern/api';
import {
  OTHER_API_KEY,
  seedTestKeys,
  startTestRedis,
  TEST_API_KEY,
  type TestRedis,
  testConfig,
  uniquePrefix,
} from '@quern/devkit';
import { AdmissionLedger, type AdmitRequest, createLogger, FAIR_BAND, KeySpace, loadManifest } from '@quern/shared';
import { type Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack } from '../support/stack';

/**
 * One job's admission to queue `m` under `queueKey` for the ledger tests: class 5, weight 1, a
 * quantum of 1 row, no caps; the fields given override these.
 */
const admission = (
  queueKey: string,
  fields: Pick<AdmitRequest, 'owner' | 'jobId' | 'rows'> & Partial<AdmitRequest>,
): AdmitRequest => ({
  queueKey,
  model: 'm',
  maxDepth: 1_000_000,
  maxRows: 0,
  deadlineAt: Date.now() + 60_000,
  priorityClass: 5,
  weight: 1,
  quantumRows: 1,
  recentJobsTtlMs: 60_000,
  ...fields,
});

const CAR = [4, 140, 90, 2264, 15.5, 1971];
const CONCURRENT = 200;

let redis: TestRedis;
const opened: Services[] = [];

/** An API with no worker behind it (nothing drains), on its own key prefix. */
async function api(overrides: Record<string, string>) {
  const config = testConfig({ url: redis.url, prefix: uniquePrefix() }, overrides);
  const logger = createLogger('api', 'silent');
  const services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  opened.push(services);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const app = createApp(services, logger);
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...headers },
      body: JSON.stringify(body),
    });
  return { app, post, config, services };
}

/** Status counts of responses, and each refusal's code and Retry-After. */
async function tally(responses: Response[]) {
  const statuses = new Map<number, number>();
  const refusals: { code: string; retryAfter: string | null }[] = [];
  for (const res of responses) {
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    if (res.status >= 400) {
      const body = (await res.json()) as { code: string };
      refusals.push({ code: body.code, retryAfter: res.headers.get('retry-after') });
    } else {
      await res.body?.cancel();
    }
  }
  return { statuses, refusals };
}

beforeAll(async () => {
  redis = await startTestRedis();
});

afterAll(async () => {
  for (const s of opened) await s.close();
  await redis.close();
});

describe('the queue-depth cap holds under concurrency', () => {
  it(`accepts exactly QUERN_QUEUE_MAX_DEPTH of ${CONCURRENT} concurrent POST /v1/jobs`, async () => {
    const { post } = await api({ QUERN_QUEUE_MAX_DEPTH: '5' });
    const responses = await Promise.all(
      Array.from({ length: CONCURRENT }, () => post('/v1/jobs', { model: 'cars-mpg', features: CAR })),
    );
    const { statuses, refusals } = await tally(responses);
    expect(statuses.get(202)).toBe(5);
    expect(statuses.get(503)).toBe(CONCURRENT - 5);
    expect(new Set(refusals.map((r) => r.code))).toEqual(new Set(['queue_full']));
    for (const r of refusals) expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
  });

  it('holds on /v1/predict and /v1/batch-predict too, across keys', async () => {
    const { post } = await api({ QUERN_QUEUE_MAX_DEPTH: '7' });
    const responses = await Promise.all(
      Array.from({ length: CONCURRENT }, (_, i) =>
        i % 2 === 0
          ? post(
              '/v1/predict',
              { model: 'cars-mpg', features: [...CAR.slice(0, 5), 1900 + i] },
              { prefer: 'respond-async', 'x-api-key': i % 4 === 0 ? TEST_API_KEY : OTHER_API_KEY },
            )
          : post(
              '/v1/batch-predict',
              { model: 'cars-mpg', requests: [{ features: CAR }, { features: CAR }] },
              { prefer: 'respond-async', 'x-api-key': i % 4 === 1 ? TEST_API_KEY : OTHER_API_KEY },
            ),
      ),
    );
    const { statuses, refusals } = await tally(responses);
    expect(statuses.get(202)).toBe(7);
    expect(statuses.get(503)).toBe(CONCURRENT - 7);
    expect(new Set(refusals.map((r) => r.code))).toEqual(new Set(['queue_full']));
  });

  it('a job the full queue refuses holds none of its key’s rows and is not listed', async () => {
    // Both caps in play: the key's rows are counted first, then the depth; a refusal by the
    // depth gives them back in the same script.
    const { post, app, services, config } = await api({
      QUERN_QUEUE_MAX_DEPTH: '3',
      QUERN_CONCURRENCY_PREMIUM_ROWS: '100',
    });
    const responses = await Promise.all(
      Array.from({ length: 40 }, () => post('/v1/jobs', { model: 'cars-mpg', features: CAR })),
    );
    const { statuses } = await tally(responses);
    expect(statuses.get(202)).toBe(3);
    expect(statuses.get(503)).toBe(37);
    const owner = (await services.apiKeys.findByKey(TEST_API_KEY))?.id as string;
    const client = new Redis(redis.url);
    try {
      expect(Number(await client.hget(new KeySpace(config.QUERN_REDIS_PREFIX).keyRows(owner), 'total'))).toBe(3);
    } finally {
      client.disconnect();
    }
    const listed = (await (
      await app.request('/v1/jobs?limit=100', { headers: { 'x-api-key': TEST_API_KEY } })
    ).json()) as { data: { id: string }[] };
    expect(listed.data).toHaveLength(3);
  });
});

describe('the per-key concurrency cap', () => {
  it(`admits exactly the key's rows of ${CONCURRENT} concurrent submissions; 429 concurrency_limited after`, async () => {
    // Test keys are premium: a cap of 9 rows.
    const { post, app, services, config } = await api({ QUERN_CONCURRENCY_PREMIUM_ROWS: '9' });
    const responses = await Promise.all(
      Array.from({ length: CONCURRENT }, (_, i) =>
        i % 3 === 0
          ? post(
              '/v1/batch-predict',
              { model: 'cars-mpg', requests: [{ features: CAR }, { features: CAR }] },
              { prefer: 'respond-async' },
            )
          : post('/v1/jobs', { model: 'cars-mpg', features: CAR }),
      ),
    );
    const rowsOf = (i: number) => (i % 3 === 0 ? 2 : 1);
    const acceptedRows = responses.reduce((sum, r, i) => sum + (r.status === 202 ? rowsOf(i) : 0), 0);
    const firstJob = responses.findIndex((r, i) => r.status === 202 && rowsOf(i) === 1);
    const first = (await (responses[firstJob] as Response).clone().json()) as { id: string };
    const { statuses, refusals } = await tally(responses);
    expect(new Set(refusals.map((r) => r.code))).toEqual(new Set(['concurrency_limited']));
    for (const r of refusals) expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
    expect((statuses.get(202) ?? 0) + (statuses.get(429) ?? 0)).toBe(CONCURRENT);
    // Never over the cap; under it only by less than the smallest refused request (a batch of 2).
    expect(acceptedRows).toBeLessThanOrEqual(9);
    expect(acceptedRows).toBeGreaterThanOrEqual(8);
    const owner = (await services.apiKeys.findByKey(TEST_API_KEY))?.id as string;
    const client = new Redis(redis.url);
    try {
      expect(Number(await client.hget(new KeySpace(config.QUERN_REDIS_PREFIX).keyRows(owner), 'total'))).toBe(
        acceptedRows,
      );
    } finally {
      client.disconnect();
    }

    // Another key is not limited by this one.
    expect((await post('/v1/jobs', { model: 'cars-mpg', features: CAR }, { 'x-api-key': OTHER_API_KEY })).status).toBe(
      202,
    );
    // A canceled queued job gives its rows back.
    const canceled = await app.request(`/v1/jobs/${first.id}`, {
      method: 'DELETE',
      headers: { 'x-api-key': TEST_API_KEY },
    });
    expect(canceled.status).toBeLessThan(300);
    await expect
      .poll(async () => (await post('/v1/jobs', { model: 'cars-mpg', features: CAR })).status, { timeout: 5_000 })
      .toBe(202);
  });
});

describe('an admission counts as an add in flight only until its add returns', () => {
  it('a queue emptied by obliterate (or by hand) takes its full depth again at once', async () => {
    const { post, services } = await api({ QUERN_QUEUE_MAX_DEPTH: '5' });
    const submitAll = (n: number, from: number) =>
      Promise.all(
        Array.from({ length: n }, (_, i) =>
          post('/v1/jobs', { model: 'cars-mpg', features: [...CAR.slice(0, 5), from + i] }),
        ),
      );
    // Concurrent: every admission runs before any add, so none of them sees another's job added.
    expect((await submitAll(5, 1900)).map((r) => r.status)).toEqual([202, 202, 202, 202, 202]);
    expect(await services.jobs.queueOf('cars-mpg').getPrioritizedCount()).toBe(5);
    await services.jobs.queueOf('cars-mpg').obliterate({ force: true });
    // Before the API cleared its admissions, the 5 removed jobs still counted for up to 30 s.
    const again = await submitAll(5, 1950);
    expect(again.map((r) => r.status)).toEqual([202, 202, 202, 202, 202]);
    expect((await post('/v1/jobs', { model: 'cars-mpg', features: CAR })).status).toBe(503);
    // A job removed by hand frees its place too.
    const id = ((await (again[0] as Response).json()) as { id: string }).id;
    expect(await services.jobs.queueOf('cars-mpg').remove(id)).toBe(1);
    expect((await post('/v1/jobs', { model: 'cars-mpg', features: CAR })).status).toBe(202);
  });
});

describe('rows are released when jobs finish', () => {
  it('a key at its cap can submit again once the worker has finished its jobs', async () => {
    const stack = await startStack({ QUERN_CONCURRENCY_PREMIUM_ROWS: '3' });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await stack.post('/v1/jobs', { model: 'cars-mpg', features: [...CAR.slice(0, 5), 1950 + i] });
        expect(res.status).toBe(202);
        ids.push(((await res.json()) as { id: string }).id);
      }
      for (const id of ids) {
        await expect
          .poll(async () => ((await (await stack.get(`/v1/jobs/${id}`)).json()) as { status: string }).status, {
            timeout: 20_000,
          })
          .toBe('succeeded');
      }
      const owner = (await stack.services.apiKeys.findByKey(TEST_API_KEY))?.id as string;
      const keys = new KeySpace(stack.config.QUERN_REDIS_PREFIX);
      const client = new Redis(stack.redis.url);
      try {
        await expect.poll(async () => Number((await client.hget(keys.keyRows(owner), 'total')) ?? 0)).toBe(0);
      } finally {
        client.disconnect();
      }
      const again = await Promise.all(
        [0, 1, 2, 3].map((i) =>
          stack.post('/v1/jobs', { model: 'cars-mpg', features: [...CAR.slice(0, 5), 1960 + i] }),
        ),
      );
      expect(again.map((r) => r.status).sort()).toEqual([202, 202, 202, 429]);
    } finally {
      await stack.close();
    }
  });
});

describe("a tier's fair-share weight", () => {
  it('weighs the keys of a tier that have no weight of their own; a key’s own weight wins', async () => {
    const { post, services, config } = await api({ QUERN_FAIR_WEIGHT_PREMIUM: '3' });
    const queue = services.jobs.queueOf('cars-mpg');
    const submitted = async (key: string) => {
      const res = await post('/v1/jobs', { model: 'cars-mpg', features: CAR }, { 'x-api-key': key });
      expect(res.status).toBe(202);
      const job = await queue.getJob(((await res.json()) as { id: string }).id);
      return job?.data.weight ?? 1;
    };
    expect(config.QUERN_FAIR_WEIGHT_PREMIUM).toBe(3);
    // The test key is premium with no weight of its own: its tier's.
    expect(await submitted(TEST_API_KEY)).toBe(3);
    // A premium key an admin gave a weight keeps it, 1 included.
    const { record, key } = await services.apiKeys.create({ name: 'own-weight', tier: 'premium', scopes: ['predict'] });
    await services.apiKeys.setLimits(record.id, { weight: 1 });
    // The key cache may hold the key's record without the weight for a moment (QUERN_KEY_CACHE_TTL_MS).
    await expect.poll(() => submitted(key), { timeout: 5_000, interval: 100 }).toBe(1);
  });
});

describe('fair-share priorities stay inside their band', () => {
  it('rebases a long-running band: queued jobs keep their order, new ones their place behind them', async () => {
    const prefix = uniquePrefix();
    const client = new Redis(redis.url);
    const queue = new Queue('infer-m', { connection: client, prefix });
    const keys = new KeySpace(prefix);
    const ledger = new AdmissionLedger(client, keys);
    const admit = (jobId: string) =>
      // Each job advances the key's tag by 1,000 steps: the band's middle is reached in 11 jobs.
      ledger.admit(admission(`${prefix}:infer-m`, { owner: 'key_a', jobId, rows: 1_000 }));
    try {
      const lo = 4 * FAIR_BAND + 1;
      const queued: string[] = [];
      for (let i = 0; i < 40; i++) {
        const id = `job_${i}`;
        const decision = await admit(id);
        if (decision.kind !== 'admitted') throw new Error(decision.kind);
        expect(decision.priority).toBeGreaterThanOrEqual(lo);
        expect(decision.priority).toBeLessThan(lo + FAIR_BAND);
        await queue.add('infer', {}, { jobId: id, priority: decision.priority });
        queued.push(id);
        // A worker takes the head now and then: the band's virtual time moves on.
        if (queued.length > 3) await queue.remove(queued.shift() as string);
      }
      expect(Number(await client.hget(keys.fairShare('m'), 'rebases'))).toBeGreaterThan(0);
      // The queue still holds the last jobs in the order they came, inside the band.
      const order = await client.zrange(`${prefix}:infer-m:prioritized`, '0', '-1');
      expect(order).toEqual(queued);
      const jobs = await Promise.all(queued.map((id) => queue.getJob(id)));
      for (const job of jobs) expect(job?.priority).toBeLessThan(lo + FAIR_BAND);
    } finally {
      await queue.close();
      client.disconnect();
    }
  });
});

describe('a rebase in chunks', () => {
  it('keeps the order of an atomic rebase at every step, and a real Worker takes the jobs in that order', async () => {
    const client = new Redis(redis.url);
    // The same admissions on two queues: rebased at once (chunks larger than the queue), and 3 jobs
    // per admission, so that most admissions find a rebase half done.
    const sides = [1_000_000, 3].map((chunk) => {
      const prefix = uniquePrefix();
      const keys = new KeySpace(prefix);
      return {
        chunk,
        prefix,
        keys,
        queue: new Queue('infer-m', { connection: client, prefix }),
        ledger: new AdmissionLedger(client, keys),
      };
    });
    const [atomic, chunked] = sides as [(typeof sides)[0], (typeof sides)[0]];
    const order = (side: typeof atomic) => client.zrange(`${side.prefix}:infer-m:prioritized`, '0', '-1');
    const lo = 4 * FAIR_BAND + 1;
    let halfDone = 0;
    try {
      for (let i = 0; i < 400; i++) {
        // Key A floods (100 steps per job); key B comes now and then with one small job that
        // fair share places at the front; a worker takes the head of the queue every other turn.
        const owner = i % 7 === 3 ? 'key_b' : 'key_a';
        const id = `job_${String(i).padStart(3, '0')}`;
        for (const side of sides) {
          const decision = await side.ledger.admit(
            admission(`${side.prefix}:infer-m`, {
              owner,
              jobId: id,
              rows: owner === 'key_a' ? 100 : 1,
              rebaseChunk: side.chunk,
            }),
          );
          if (decision.kind !== 'admitted') throw new Error(decision.kind);
          expect(decision.priority).toBeGreaterThanOrEqual(lo);
          expect(decision.priority).toBeLessThan(lo + FAIR_BAND);
          await side.queue.add('infer', {}, { jobId: id, priority: decision.priority });
        }
        if (await client.hexists(chunked.keys.fairShare('m'), 'rd5')) halfDone++;
        const [a, c] = await Promise.all([order(atomic), order(chunked)]);
        expect(c).toEqual(a);
        if (i % 2 === 1) for (const side of sides) await side.queue.remove(a[0] as string);
      }
      const rebases = Number(await client.hget(chunked.keys.fairShare('m'), 'rebases'));
      expect(rebases).toBeGreaterThan(1);
      expect(Number(await client.hget(atomic.keys.fairShare('m'), 'rebases'))).toBe(rebases);
      expect(halfDone).toBeGreaterThan(10);
      // Every queued job's priority field is what its score says (BullMQ reads it on a retry).
      const expected = await order(chunked);
      const scored = await client.zrange(`${chunked.prefix}:infer-m:prioritized`, '0', '-1', 'WITHSCORES');
      for (let k = 0; k < scored.length; k += 2) {
        const priority = Math.floor(Number(scored[k + 1]) / 2 ** 32);
        expect(priority).toBeGreaterThanOrEqual(lo);
        expect(Number(await client.hget(`${chunked.prefix}:infer-m:${scored[k]}`, 'priority'))).toBe(priority);
      }
      // A real BullMQ Worker takes them in that order.
      const taken: string[] = [];
      const worker = new Worker('infer-m', async (job) => void taken.push(job.id as string), {
        connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
        prefix: chunked.prefix,
        concurrency: 1,
      });
      try {
        await expect.poll(() => taken.length, { timeout: 20_000 }).toBe(expected.length);
      } finally {
        await worker.close();
        await worker.disconnect();
      }
      expect(taken).toEqual(expected);
    } finally {
      for (const side of sides) await side.queue.close();
      client.disconnect();
    }
  }, 60_000);
});

describe('a job BullMQ retries', () => {
  it('goes to the front of its band, not where its old number lands after a rebase', async () => {
    const client = new Redis(redis.url, { maxRetriesPerRequest: null });
    const prefix = uniquePrefix();
    const keys = new KeySpace(prefix);
    const queue = new Queue('infer-m', { connection: client, prefix });
    const ledger = new AdmissionLedger(client, keys);
    const queueKey = `${prefix}:infer-m`;
    const add = async (id: string, owner: string, rows: number) => {
      const decision = await ledger.admit(admission(queueKey, { owner, jobId: id, rows }));
      if (decision.kind !== 'admitted') throw new Error(decision.kind);
      // As the API adds jobs: the class in the data, a retry allowed.
      await queue.add('infer', { priority: 5 }, { jobId: id, priority: decision.priority, attempts: 2 });
      ledger.added('m', id);
    };
    // A worker that takes jobs by hand, so that each step happens when the test says.
    const manual = new Worker('infer-m', null, {
      connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
      prefix,
    });
    const token = 'test-token';
    try {
      // Key A's jobs: 1,000 steps apart (a_05 is 5,000 numbers into the band).
      for (let i = 0; i < 12; i++) await add(`a_${String(i).padStart(2, '0')}`, 'key_a', 1_000);
      for (let k = 0; k < 5; k++) await ((await manual.getNextJob(token)) as Job).moveToCompleted('ok', token, false);
      const taken = (await manual.getNextJob(token)) as Job;
      expect(taken.id).toBe('a_05');
      // While it runs, new jobs come: the band is rebased (every queued number 6,000 lower).
      for (let i = 12; i < 16; i++) await add(`a_${i}`, 'key_a', 1_000);
      await add('b_00', 'key_b', 1);
      expect(Number(await client.hget(keys.fairShare('m'), 'rebases'))).toBe(1);
      // Its attempt fails: BullMQ queues it again with the number it was admitted with, now
      // behind the jobs that came after it.
      await taken.moveToFailed(new Error('transient'), token);
      const waiting = await client.zrange(`${queueKey}:prioritized`, '0', '-1');
      expect(waiting.indexOf('a_05')).toBeGreaterThan(3);
      expect(await ledger.requeued(queueKey, 'a_05')).toBe(true);
      // Now it is next, and its priority field says so (BullMQ reads it on a further retry).
      const order = await client.zrange(`${queueKey}:prioritized`, '0', '-1');
      expect(order[0]).toBe('a_05');
      expect(order.slice(1)).toEqual(waiting.filter((id) => id !== 'a_05'));
      expect(Number(await client.hget(`${queueKey}:a_05`, 'priority'))).toBe(4 * FAIR_BAND + 1);
      const next = (await manual.getNextJob(token)) as Job;
      expect(next.id).toBe('a_05');
      expect(next.attemptsMade).toBe(1);
      // Once at the front, it is left alone.
      expect(await ledger.requeued(queueKey, 'a_05')).toBe(false);
    } finally {
      await manual.close();
      await manual.disconnect();
      await queue.close();
      client.disconnect();
    }
  });
});
