import { rmSync } from 'node:fs';
import { randomRows, TEST_API_KEY } from '@quern/devkit';
import { decodeFailure, inputHash, type JobView } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sseReader } from '../support/sse';
import { type Stack, startStack } from '../support/stack';
import { writeTestModels } from '../support/test-models';

let stack: Stack;
let modelsDir: string;
let freeKey: string;
let seed = 1;
const CAR = [4, 140, 90, 2264, 15.5, 1971];

beforeAll(async () => {
  modelsDir = writeTestModels([
    // A long batching delay: a job waits in the worker's batcher, held but not started.
    { name: 'cars-held', from: 'cars-mpg', batching: { max_delay_ms: 4_000, max_batch_size: 256 } },
    // One row per batch: a 100-row job keeps running for a while.
    { name: 'mlp-serial', from: 'mlp-large', batching: { max_batch_size: 1, max_delay_ms: 0 } },
    // Served by no worker: its jobs stay queued.
    { name: 'cars-idle', from: 'cars-mpg' },
  ]);
  stack = await startStack({
    QUERN_MODELS_DIR: modelsDir,
    QUERN_WORKER_MODELS: 'cars-mpg,mlp-large,cars-held,mlp-serial',
    QUERN_WORKER_THREADS: '1',
    QUERN_SSE_KEEPALIVE_MS: '200',
    QUERN_QUEUE_MAX_DEPTH: '10',
    QUERN_QUEUE_DEPTH_CACHE_MS: '0',
  });
  ({ key: freeKey } = await stack.services.apiKeys.create({
    name: 'free',
    tier: 'free',
    scopes: ['predict', 'jobs:read'],
  }));
});

afterAll(async () => {
  await stack?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

function features(model: string): number[] {
  return model.startsWith('mlp')
    ? (randomRows(1, 256, seed++)[0] as number[])
    : CAR.map((v, i) => (i === 5 ? v : v + seed++ / 1000));
}

async function submit(model: string, extra: Record<string, unknown> = {}, key = TEST_API_KEY): Promise<JobView> {
  const res = await stack.post('/v1/jobs', { model, features: features(model), ...extra }, { 'x-api-key': key });
  expect(res.status).toBe(202);
  return (await res.json()) as JobView;
}

async function job(id: string, key = TEST_API_KEY): Promise<JobView> {
  return (await (await stack.get(`/v1/jobs/${id}`, key)).json()) as JobView;
}

const cancel = (id: string) =>
  stack.app.request(`/v1/jobs/${id}`, { method: 'DELETE', headers: { 'x-api-key': TEST_API_KEY } });

async function batchesRun(model: string): Promise<number> {
  const { values } = await stack.worker.metrics.batchSize.get();
  return values.find((v) => v.metricName === 'quern_batch_size_count' && v.labels.model === model)?.value ?? 0;
}

describe('cancel', () => {
  it('removes a queued job at once: canceled; a second cancel is 409', async () => {
    const { id } = await submit('cars-idle');
    const res = await cancel(id);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: 'canceled', error: { code: 'canceled' } });
    expect(await stack.services.jobs.queueOf('cars-idle').getJobState(id)).toBe('unknown');
    expect((await job(id)).status).toBe('canceled');
    const again = await cancel(id);
    expect(again.status).toBe(409);
    expect(((await again.json()) as { code: string }).code).toBe('job_finished');
  });

  it('drops a job a worker holds whose batch has not started: canceled, never computed', async () => {
    const { id } = await submit('cars-held');
    await expect.poll(async () => (await job(id)).status, { timeout: 5_000, interval: 10 }).toBe('running');
    const res = await cancel(id);
    expect(res.status).toBe(200);
    expect(((await res.json()) as JobView).status).toBe('canceled');
    expect(await batchesRun('cars-held')).toBe(0);
  });

  it('lets a job whose batch has started complete, and says so with 409', async () => {
    const rows = randomRows(100, 256, 4242).map((f) => ({ features: f }));
    const res = await stack.post(
      '/v1/batch-predict',
      { model: 'mlp-serial', requests: rows },
      { prefer: 'respond-async' },
    );
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as JobView;
    await expect.poll(async () => (await job(id)).started_at, { timeout: 5_000, interval: 2 }).not.toBeNull();
    const refused = await cancel(id);
    expect(refused.status).toBe(409);
    expect(['job_already_started', 'job_finished']).toContain(((await refused.json()) as { code: string }).code);
    await expect.poll(async () => (await job(id)).status, { timeout: 10_000 }).toBe('succeeded');
  });

  it('refuses to cancel a finished job with 409', async () => {
    const done = await stack.post('/v1/predict', { model: 'mlp-large', features: features('mlp-large') });
    const { job_id } = (await done.json()) as { job_id: string };
    const res = await cancel(job_id);
    expect(res.status).toBe(409);
    expect(((await res.json()) as { code: string }).code).toBe('job_finished');
  });

  it('a sync caller that disconnects cancels its job if it has not started', async () => {
    const queue = stack.services.jobs.queueOf('cars-idle');
    const before = new Set((await queue.getJobs(['prioritized', 'waiting'])).map((j) => j.id));
    const abort = new AbortController();
    const pending = stack.app.request('/v1/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
      body: JSON.stringify({ model: 'cars-idle', features: features('cars-idle') }),
      signal: abort.signal,
    });
    let id: string | undefined;
    await expect
      .poll(
        async () => {
          id = (await queue.getJobs(['prioritized', 'waiting'])).map((j) => j.id).find((j) => !before.has(j));
          return id;
        },
        { timeout: 5_000, interval: 10 },
      )
      .toBeDefined();
    abort.abort();
    await Promise.resolve(pending).catch(() => undefined);
    await expect.poll(async () => (await job(id as string)).status, { timeout: 5_000, interval: 20 }).toBe('canceled');
  });
});

describe('callers that leave, and callers that do not wait', () => {
  it('a shared job whose callers all disconnect is canceled before it runs', async () => {
    const queue = stack.services.jobs.queueOf('cars-idle');
    const before = new Set((await queue.getJobs(['prioritized', 'waiting'])).map((j) => j.id));
    const abort = new AbortController();
    // Twelve calls of one principal parsed together: they share jobs (at most two in flight).
    const pending = Array.from({ length: 12 }, () =>
      Promise.resolve(
        stack.app.request('/v1/predict', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
          body: JSON.stringify({ model: 'cars-idle', features: features('cars-idle') }),
          signal: abort.signal,
        }),
      ).catch(() => undefined),
    );
    const fresh = async () =>
      (await queue.getJobs(['prioritized', 'waiting'])).filter((j) => !before.has(j.id as string));
    await expect.poll(async () => (await fresh()).length, { timeout: 5_000, interval: 10 }).toBeGreaterThan(0);
    const shared = await fresh();
    // Shared, not one job per caller.
    expect(shared.length).toBeLessThan(12);
    abort.abort();
    await Promise.all(pending);
    for (const j of shared) {
      await expect
        .poll(async () => (await job(j.id as string)).status, { timeout: 5_000, interval: 20 })
        .toBe('canceled');
    }
  });

  it('a job read right after its sync answer shows it finished, with the same output', async () => {
    // The worker's reply reaches the API before BullMQ records the job as finished.
    for (let i = 0; i < 30; i++) {
      const res = await stack.post('/v1/predict', { model: 'cars-mpg', features: features('cars-mpg') });
      expect(res.status).toBe(200);
      const answer = (await res.json()) as { prediction: number; job_id: string };
      const view = await job(answer.job_id);
      expect(view.status).toBe('succeeded');
      expect(view.output).toEqual({ prediction: answer.prediction });
    }
  });

  it('Prefer: respond-async always answers 202 with a job, also for a cached input and a batch', async () => {
    const timeouts = async () =>
      Number(
        /quern_sync_wait_timeouts_total\{model="cars-mpg"[^}]*\} (\d+)/.exec(
          await (await stack.get('/metrics')).text(),
        )?.[1] ?? 0,
      );
    const before = await timeouts();
    const row = features('cars-mpg');
    // Cached first: a plain call computes it, so the row is in the result cache.
    const first = await stack.post('/v1/predict', { model: 'cars-mpg', features: row });
    expect(first.status).toBe(200);
    const cached = await stack.post('/v1/predict', { model: 'cars-mpg', features: row });
    expect(((await cached.json()) as { cached: boolean }).cached).toBe(true);
    for (let i = 0; i < 6; i++) {
      for (const [path, body] of [
        ['/v1/predict', { model: 'cars-mpg', features: i % 2 === 0 ? row : features('cars-mpg') }],
        ['/v1/batch-predict', { model: 'cars-mpg', requests: [{ features: row }, { features: features('cars-mpg') }] }],
      ] as const) {
        const res = await stack.post(path, body, { prefer: 'respond-async' });
        expect(res.status).toBe(202);
        expect(res.headers.get('preference-applied')).toBe('respond-async');
        const view = (await res.json()) as JobView;
        expect(res.headers.get('location')).toBe(`/v1/jobs/${view.id}`);
        await expect.poll(async () => (await job(view.id)).status, { timeout: 10_000, interval: 20 }).toBe('succeeded');
      }
    }
    // Not waits that ran out: the backlog alarm does not count them.
    expect(await timeouts()).toBe(before);
  });
});

describe('server-sent events', () => {
  it('streams queued, running and the final state of a job watched from before it runs, then closes', async () => {
    const queue = stack.services.jobs.queueOf('mlp-large');
    await queue.pause();
    try {
      const { id } = await submit('mlp-large');
      const res = await stack.get(`/v1/jobs/${id}/events`);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const sse = sseReader(res);
      const first = await sse.next();
      expect(first?.event).toBe('queued');
      expect(JSON.parse(first?.data ?? '{}')).toMatchObject({ id, status: 'queued' });
      await queue.resume();
      const events: string[] = [];
      for (let m = await sse.next(); m; m = await sse.next()) if (m.event) events.push(m.event);
      expect(events).toEqual(['running', 'succeeded']);
    } finally {
      await queue.resume();
    }
  });

  it('gives a finished job its final event at once and closes', async () => {
    const done = await stack.post('/v1/predict', { model: 'mlp-large', features: features('mlp-large') });
    const { job_id } = (await done.json()) as { job_id: string };
    const sse = sseReader(await stack.get(`/v1/jobs/${job_id}/events`));
    const only = await sse.next();
    expect(only?.event).toBe('succeeded');
    expect(JSON.parse(only?.data ?? '{}').output.prediction).toHaveLength(8);
    expect(await sse.next()).toBeUndefined();
  });

  it('sends keep-alive comments while nothing happens', async () => {
    const { id } = await submit('cars-idle');
    const sse = sseReader(await stack.get(`/v1/jobs/${id}/events`));
    expect((await sse.next())?.event).toBe('queued');
    expect((await sse.next(3_000))?.comment).toBe('keep-alive');
    await sse.cancel();
    await cancel(id);
  });
});

describe('idempotency', () => {
  it('100 concurrent requests with one key create one job and all get its id', async () => {
    const queue = stack.services.jobs.queueOf('cars-idle');
    const before = await queue.count();
    const body = { model: 'cars-idle', features: features('cars-idle') };
    const responses = await Promise.all(
      Array.from({ length: 100 }, () => stack.post('/v1/jobs', body, { 'idempotency-key': 'order-77' })),
    );
    expect(responses.every((r) => r.status === 202)).toBe(true);
    const ids = new Set(await Promise.all(responses.map(async (r) => ((await r.json()) as JobView).id)));
    expect(ids.size).toBe(1);
    expect(await queue.count()).toBe(before + 1);
    expect(responses.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(99);

    const other = await stack.post('/v1/jobs', { ...body, features: CAR }, { 'idempotency-key': 'order-77' });
    expect(other.status).toBe(422);
    expect(((await other.json()) as { code: string }).code).toBe('idempotency_key_reused');
    await cancel([...ids][0] as string);
  });

  it('a repeated /v1/predict with the same key answers from the same job', async () => {
    const body = { model: 'mlp-large', features: features('mlp-large') };
    const a = (await (await stack.post('/v1/predict', body, { 'idempotency-key': 'p-1' })).json()) as {
      job_id: string;
      prediction: number[];
    };
    const b = (await (await stack.post('/v1/predict', body, { 'idempotency-key': 'p-1' })).json()) as {
      job_id: string;
      prediction: number[];
    };
    expect(b.job_id).toBe(a.job_id);
    expect(b.prediction).toEqual(a.prediction);
  });
});

describe('deadlines, priority and backpressure', () => {
  it('a job still queued at its deadline expires and is never computed', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    await queue.pause();
    const row = [5, 190, 105, 3100, 15, 1977];
    let id: string;
    try {
      const res = await stack.post('/v1/jobs', { model: 'cars-mpg', features: row, timeout_ms: 50 });
      id = ((await res.json()) as JobView).id;
      await expect.poll(async () => (await job(id)).status, { timeout: 3_000, interval: 20 }).toBe('expired');
      const atDeadline = await job(id);
      expect(atDeadline).toMatchObject({ started_at: null, completed_at: atDeadline.expires_at });
      const batches = await batchesRun('cars-mpg');
      await queue.resume();
      await expect.poll(() => queue.getJobState(id), { timeout: 5_000, interval: 20 }).toBe('failed');
      expect(decodeFailure((await queue.getJob(id))?.failedReason).code).toBe('deadline_exceeded');
      expect(await batchesRun('cars-mpg')).toBe(batches);
      const cached = await stack.services.redis.get(
        `${stack.config.QUERN_REDIS_PREFIX}:cache:cars-mpg:1.0.0:${inputHash(row)}`,
      );
      expect(cached).toBeNull();
      // Final from the deadline on: the worker dropping it later changes none of its times.
      expect(await job(id)).toEqual({
        ...atDeadline,
        status: 'expired',
        error: { code: 'deadline_exceeded', message: expect.any(String) },
      });
    } finally {
      await queue.resume();
    }
  });

  it('a sync call whose job is still queued at its deadline answers 504 then, not 202 at the end of its wait', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    await queue.pause();
    try {
      const wait = { prefer: 'wait=20' };
      // Coalesced (/v1/predict), one job per call (an Idempotency-Key), and a client batch.
      const calls = [
        stack.post('/v1/predict', { features: [5, 191, 105, 3100, 15, 1977], timeout_ms: 300 }, wait),
        stack.post(
          '/v1/predict',
          { features: [5, 192, 105, 3100, 15, 1977], timeout_ms: 300 },
          {
            ...wait,
            'idempotency-key': 'deadline-sync-1',
          },
        ),
        stack.post(
          '/v1/batch-predict',
          { requests: [{ features: [5, 193, 105, 3100, 15, 1977] }], timeout_ms: 300 },
          wait,
        ),
      ];
      for (const res of await Promise.all(calls)) {
        expect(res.status).toBe(504);
        const body = (await res.json()) as { code: string; job_id: string };
        expect(body.code).toBe('job_expired');
        expect((await job(body.job_id)).status).toBe('expired');
      }
    } finally {
      await queue.resume();
    }
  });

  it('runs premium jobs before free ones, and a request cannot raise its priority above its tier', async () => {
    const queue = stack.services.jobs.queueOf('mlp-serial');
    await queue.pause();
    try {
      const free = await submit('mlp-serial', { priority: 1 }, freeKey);
      expect(free.priority).toBe(5);
      const premium = await submit('mlp-serial');
      expect(premium.priority).toBe(1);
      const lowered = await submit('mlp-serial', { priority: 9 });
      expect(lowered.priority).toBe(9);
      await queue.resume();
      const done = async (id: string, key = TEST_API_KEY) => {
        await expect.poll(async () => (await job(id, key)).status, { timeout: 10_000, interval: 20 }).toBe('succeeded');
        return Date.parse((await job(id, key)).started_at as string);
      };
      const [f, p, l] = [await done(free.id, freeKey), await done(premium.id), await done(lowered.id)];
      expect(p).toBeLessThanOrEqual(f);
      expect(f).toBeLessThanOrEqual(l);
    } finally {
      await queue.resume();
    }
  });

  it('a full queue answers 503 with Retry-After and enqueues nothing', async () => {
    const queue = stack.services.jobs.queueOf('cars-idle');
    const depth = async () => {
      const c = await queue.getJobCounts('waiting', 'prioritized');
      return (c.waiting ?? 0) + (c.prioritized ?? 0);
    };
    while ((await depth()) < 10) await submit('cars-idle');
    const res = await stack.post('/v1/jobs', { model: 'cars-idle', features: CAR });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await res.json()) as { code: string }).code).toBe('queue_full');
    // The sync routes apply the same cap (/v1/predict used to enqueue past it).
    for (const [path, body] of [
      ['/v1/predict', { model: 'cars-idle', features: features('cars-idle') }],
      ['/v1/predict', { model: 'cars-idle', features: features('cars-idle') }, { prefer: 'respond-async' }],
      ['/v1/batch-predict', { model: 'cars-idle', requests: [{ features: features('cars-idle') }] }],
    ] as const) {
      const sync = await stack.post(path, body);
      expect(sync.status).toBe(503);
      expect(((await sync.json()) as { code: string }).code).toBe('queue_full');
    }
    expect(await depth()).toBe(10);
    // Other models are not affected.
    expect((await stack.post('/v1/jobs', { model: 'cars-mpg', features: CAR })).status).toBe(202);
  });
});
