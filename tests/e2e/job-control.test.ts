import { rmSync } from 'node:fs';
import { randomRows, TEST_API_KEY } from '@quern/devkit';
import { decodeFailure, inputHash, type JobView, jobMatrix, jobRowCount, KeySpace } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSlowModel } from '../support/slow-model';
import { sseReader } from '../support/sse';
import { type Stack, startStack } from '../support/stack';
import { writeTestModels } from '../support/test-models';

let stack: Stack;
let modelsDir: string;
let freeKey: string;
let seed = 1;
const CAR = [4, 140, 90, 2264, 15.5, 1971];

/** A BATCH_DELAY_MS batching delay: a job waits in the worker's batch scheduler, held but not started. */
const BATCH_DELAY_MS = 4_000;
/**
 * Each test that queues, holds, pauses or counts has a model (so a queue and batch metrics) of its
 * own: no test sees another's jobs, and any one runs alone (`-t`). Models no worker serves keep
 * their jobs queued.
 */
const IDLE = [
  'idle-cancel',
  'idle-disconnect',
  'idle-shared',
  'idle-sse',
  'idle-idem',
  'idle-full',
  'idle-waits',
  'idle-single',
  'idle-pair',
  // One per round of the shared-job test: each round starts on a queue (and admission record) of its own.
  ...Array.from({ length: 6 }, (_, i) => `idle-alone-${i}`),
];
const SERVED = [
  'cars-mpg',
  'mlp-large',
  'cars-held',
  'slow-started',
  'cars-expire',
  'cars-expire-sync',
  'mlp-priority',
];

beforeAll(async () => {
  modelsDir = writeTestModels(
    [
      { name: 'cars-held', from: 'cars-mpg', batching: { max_delay_ms: BATCH_DELAY_MS, max_batch_size: 256 } },
      // One row per batch: jobs run one after another, in priority order.
      { name: 'mlp-priority', from: 'mlp-large', batching: { max_batch_size: 1, max_delay_ms: 0 } },
      { name: 'cars-expire', from: 'cars-mpg' },
      { name: 'cars-expire-sync', from: 'cars-mpg' },
      ...IDLE.map((name) =>
        // One row per batch: a sync call fills a job by itself.
        name === 'idle-single' || name === 'idle-pair'
          ? { name, from: 'cars-mpg', batching: { max_batch_size: name === 'idle-single' ? 1 : 2, max_delay_ms: 0 } }
          : { name, from: 'cars-mpg' },
      ),
    ],
    // 200 layers: a 100-row batch computes for over a second, so a cancel lands while it runs.
    [(dir) => writeSlowModel(dir, 'slow-started', 200, { max_batch_size: 256, max_delay_ms: 0 })],
  );
  stack = await startStack({
    QUERN_MODELS_DIR: modelsDir,
    QUERN_WORKER_MODELS: SERVED.join(','),
    QUERN_WORKER_THREADS: '1',
    QUERN_SSE_KEEPALIVE_MS: '200',
    QUERN_QUEUE_MAX_DEPTH: '10',
    QUERN_QUEUE_DEPTH_CACHE_MS: '0',
    // A cancel of a running job waits for its end, however slow the machine.
    QUERN_CANCEL_WAIT_MS: '60000',
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
  return model.startsWith('mlp') || model.startsWith('slow')
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

/** Batches the worker ran for a model, and the rows in them. */
async function batchesRun(model: string): Promise<{ batches: number; rows: number }> {
  const { values } = await stack.worker.metrics.batchSize.get();
  const value = (suffix: string) =>
    values.find((v) => v.metricName === `quern_batch_size_${suffix}` && v.labels.model === model)?.value ?? 0;
  return { batches: value('count'), rows: value('sum') };
}

describe('cancel', () => {
  it('removes a queued job at once: canceled; a second cancel is 409', async () => {
    const { id } = await submit('idle-cancel');
    const res = await cancel(id);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: 'canceled', error: { code: 'canceled' } });
    expect(await stack.services.jobs.queueOf('idle-cancel').getJobState(id)).toBe('unknown');
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
    // A job submitted after it goes into the batch the dropped one waited for (due BATCH_DELAY_MS
    // after the dropped one arrived). Once that batch has run, had the drop not worked, the
    // dropped row would have run in it.
    const later = await submit('cars-held');
    await expect
      .poll(async () => (await job(later.id)).status, { timeout: BATCH_DELAY_MS + 10_000, interval: 50 })
      .toBe('succeeded');
    expect(await batchesRun('cars-held')).toEqual({ batches: 1, rows: 1 });
    expect(await job(id)).toMatchObject({ status: 'canceled', started_at: null, output: null });
  });

  it('lets a job whose batch has started complete, and says so with 409', async () => {
    // One batch of 100 rows of the slow model: it computes for far longer than a cancel takes to
    // arrive, and the cancel waits for its end (QUERN_CANCEL_WAIT_MS).
    const rows = randomRows(100, 256, 4242).map((f) => ({ features: f }));
    const res = await stack.post(
      '/v1/batch-predict',
      { model: 'slow-started', requests: rows },
      { prefer: 'respond-async' },
    );
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as JobView;
    await expect.poll(async () => (await job(id)).started_at, { timeout: 10_000, interval: 2 }).not.toBeNull();
    const refused = await cancel(id);
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { code: string }).code).toBe('job_already_started');
    expect((await job(id)).status).toBe('succeeded');
    expect(await batchesRun('slow-started')).toEqual({ batches: 1, rows: 100 });
  });

  it('refuses to cancel a finished job with 409', async () => {
    const done = await stack.post('/v1/predict', { model: 'mlp-large', features: features('mlp-large') });
    const { job_id } = (await done.json()) as { job_id: string };
    const res = await cancel(job_id);
    expect(res.status).toBe(409);
    expect(((await res.json()) as { code: string }).code).toBe('job_finished');
  });

  it('a sync caller that disconnects cancels its job if it has not started', async () => {
    const queue = stack.services.jobs.queueOf('idle-disconnect');
    const abort = new AbortController();
    const pending = stack.app.request('/v1/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
      body: JSON.stringify({ model: 'idle-disconnect', features: features('idle-disconnect') }),
      signal: abort.signal,
    });
    let id: string | undefined;
    await expect
      .poll(
        async () => {
          id = (await queue.getJobs(['prioritized', 'waiting']))[0]?.id;
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

/**
 * `count` sync predicts of one key on `model`, sent together, each willing to wait 60 s; they end
 * when `signal` aborts them. `onAnswer` runs for each that got a response.
 */
function waitingCalls(model: string, count: number, signal: AbortSignal, onAnswer = () => {}): Promise<unknown>[] {
  return Array.from({ length: count }, () =>
    Promise.resolve(
      stack.app.request('/v1/predict', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, prefer: 'wait=60' },
        body: JSON.stringify({ model, features: features(model) }),
        signal,
      }),
    )
      .then(onAnswer)
      .catch(() => undefined),
  );
}

describe('callers that leave, and callers that do not wait', () => {
  it('a shared job whose callers all disconnect is canceled before it runs', async () => {
    const queue = stack.services.jobs.queueOf('idle-shared');
    const before = new Set((await queue.getJobs(['prioritized', 'waiting'])).map((j) => j.id));
    const abort = new AbortController();
    // Twelve calls of one principal parsed together: they share jobs (one in flight at a time).
    const pending = Array.from({ length: 12 }, () =>
      Promise.resolve(
        stack.app.request('/v1/predict', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
          body: JSON.stringify({ model: 'idle-shared', features: features('idle-shared') }),
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

  it('with max_batch_size 1, concurrent calls of one principal each go out at once, none held behind another', async () => {
    const queue = stack.services.jobs.queueOf('idle-single');
    const abort = new AbortController();
    let answered = 0;
    // Six calls parsed together: each fills a job, so none gathers behind the one in flight (with
    // coalescing's one-in-flight rule alone, five would wait for the first job, or for their wait).
    const pending = waitingCalls('idle-single', 6, abort.signal, () => answered++);
    const queued = async () => (await queue.getJobs(['prioritized', 'waiting'])).length;
    await expect.poll(queued, { timeout: 10_000, interval: 10 }).toBe(6);
    // All six were queued while every caller still waited (no worker serves the model).
    expect(answered).toBe(0);
    for (const j of await queue.getJobs(['prioritized', 'waiting'])) expect(jobRowCount(j.data)).toBe(1);
    abort.abort();
    await Promise.all(pending);
  });

  it('with max_batch_size 2, five calls of one principal are queued in full jobs, none waiting for the first', async () => {
    const queue = stack.services.jobs.queueOf('idle-pair');
    const abort = new AbortController();
    const pending = waitingCalls('idle-pair', 5, abort.signal);
    const rows = async () => (await queue.getJobs(['prioritized', 'waiting'])).map((j) => jobRowCount(j.data));
    // Whichever calls arrive together: a lone first call goes at once (nothing in flight), and
    // every two gathered after it fill a job and go too. One job in flight at a time (no worker
    // serves the model) would hold all but the first job's rows for the callers' 60 s wait.
    await expect
      .poll(async () => (await rows()).reduce((a, b) => a + b, 0), { timeout: 10_000, interval: 10 })
      .toBeGreaterThanOrEqual(4);
    const sizes = await rows();
    expect(Math.max(...sizes)).toBeLessThanOrEqual(2);
    // At most one job is partial: the one that went while nothing was in flight.
    expect(sizes.filter((n) => n < 2).length).toBeLessThanOrEqual(1);
    abort.abort();
    await Promise.all(pending);
  });

  it('callers of a shared job whose waits run out each get a job of their own (202), and the shared one is canceled', async () => {
    // Six calls parsed together share a job when two or more of them reach the sync path in the same
    // turn, which the machine decides: a round without a shared job is not the case under test, so
    // it runs again, on a model (a queue) of its own that no worker serves. Six calls: few enough
    // that a shared job and one job per caller stay under this stack's queue cap (10).
    let model = '';
    let queue = stack.services.jobs.queueOf('idle-alone-0');
    let rows: number[][] = [];
    let answers: Response[] = [];
    let shared: Awaited<ReturnType<typeof queue.getJobs>> = [];
    for (let round = 0; round < 6 && shared.length === 0; round++) {
      model = `idle-alone-${round}`;
      queue = stack.services.jobs.queueOf(model);
      rows = Array.from({ length: 6 }, () => features(model));
      answers = await Promise.all(
        rows.map((row) =>
          Promise.resolve(
            stack.app.request('/v1/predict', {
              method: 'POST',
              headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, prefer: 'wait=1' },
              body: JSON.stringify({ model, features: row }),
            }),
          ),
        ),
      );
      const jobs = await queue.getJobs(['prioritized', 'waiting', 'completed', 'failed']);
      shared = jobs.filter((j) => jobRowCount(j.data) > 1);
    }
    expect(shared.length).toBeGreaterThan(0);
    const ids: string[] = [];
    for (const [i, res] of answers.entries()) {
      expect(res.status).toBe(202);
      const view = (await res.json()) as JobView;
      ids.push(view.id);
      expect(res.headers.get('quern-job-row')).toBe('0');
      // A job whose outcome is this caller's alone: its one row, no other caller's.
      const own = await queue.getJob(view.id);
      expect(own && jobRowCount(own.data)).toBe(1);
      const matrix = own ? jobMatrix(own.data) : 'missing';
      if (typeof matrix === 'string') throw new Error(`job ${view.id}: ${matrix}`);
      expect(Array.from(matrix.rows()[0] ?? [])).toEqual(rows[i]?.map((v) => Math.fround(v)));
      expect(view.status).toBe('queued');
    }
    expect(new Set(ids).size).toBe(rows.length);
    for (const j of shared) expect(ids).not.toContain(j.id);
    // Nobody follows the shared jobs any more: they are canceled, not left to run for no one.
    for (const j of shared) {
      await expect
        .poll(async () => (await job(j.id as string)).status, { timeout: 5_000, interval: 20 })
        .toBe('canceled');
    }
    // One job per caller and no more: a caller whose timer and whose group's end fired together
    // was moved once, and the queue holds exactly the callers' own jobs.
    const queued = await queue.getJobs(['prioritized', 'waiting']);
    expect(queued.map((j) => j.id).sort()).toEqual([...ids].sort());
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

  it('a caller is not held past its wait while its group has a job in flight, nor a respond-async caller', async () => {
    const model = 'idle-waits';
    const post = (prefer: string) =>
      Promise.resolve(stack.post('/v1/predict', { model, features: features('cars-mpg') }, { prefer }));
    // The first call's job takes the group's slot and, with no worker for this model, keeps it.
    const first = post('wait=20');
    const queue = stack.services.jobs.queueOf(model);
    await expect.poll(() => queue.count(), { timeout: 5_000, interval: 10 }).toBe(1);
    const started = performance.now();
    const [short, async] = await Promise.all([post('wait=1'), post('respond-async')]);
    const ms = performance.now() - started;
    expect(short.status).toBe(202);
    expect(async.status).toBe(202);
    // Each got a job of its own (the slot was taken), at its own wait, not at the first call's end.
    expect(ms).toBeLessThan(10_000);
    const ids = new Set([((await short.json()) as JobView).id, ((await async.json()) as JobView).id]);
    expect(ids.size).toBe(2);
    expect(await queue.count()).toBe(3);
    // The first call is still waiting; its job stays queued.
    expect(await Promise.race([first.then(() => 'answered'), Promise.resolve('waiting')])).toBe('waiting');
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
    const { id } = await submit('idle-sse');
    const sse = sseReader(await stack.get(`/v1/jobs/${id}/events`));
    expect((await sse.next())?.event).toBe('queued');
    expect((await sse.next(3_000))?.comment).toBe('keep-alive');
    await sse.cancel();
    await cancel(id);
  });
});

describe('idempotency', () => {
  it('100 concurrent requests with one key create one job and all get its id', async () => {
    const queue = stack.services.jobs.queueOf('idle-idem');
    const body = { model: 'idle-idem', features: features('idle-idem') };
    const responses = await Promise.all(
      Array.from({ length: 100 }, () => stack.post('/v1/jobs', body, { 'idempotency-key': 'order-77' })),
    );
    expect(responses.every((r) => r.status === 202)).toBe(true);
    const ids = new Set(await Promise.all(responses.map(async (r) => ((await r.json()) as JobView).id)));
    expect(ids.size).toBe(1);
    expect(await queue.count()).toBe(1);
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
    const queue = stack.services.jobs.queueOf('cars-expire');
    await queue.pause();
    const row = [5, 190, 105, 3100, 15, 1977];
    let id: string;
    try {
      const res = await stack.post('/v1/jobs', { model: 'cars-expire', features: row, timeout_ms: 50 });
      id = ((await res.json()) as JobView).id;
      await expect.poll(async () => (await job(id)).status, { timeout: 3_000, interval: 20 }).toBe('expired');
      const atDeadline = await job(id);
      expect(atDeadline).toMatchObject({ started_at: null, completed_at: atDeadline.expires_at });
      await queue.resume();
      await expect.poll(() => queue.getJobState(id), { timeout: 5_000, interval: 20 }).toBe('failed');
      expect(decodeFailure((await queue.getJob(id))?.failedReason).code).toBe('deadline_exceeded');
      expect(await batchesRun('cars-expire')).toEqual({ batches: 0, rows: 0 });
      const version = stack.manifest.models.find((m) => m.name === 'cars-expire')?.version ?? '';
      const keys = new KeySpace(stack.config.QUERN_REDIS_PREFIX);
      expect(await stack.client.get(keys.cache('cars-expire', version, inputHash(row)))).toBeNull();
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
    const model = 'cars-expire-sync';
    const queue = stack.services.jobs.queueOf(model);
    await queue.pause();
    try {
      const wait = { prefer: 'wait=20' };
      // Coalesced (/v1/predict), one job per call (an Idempotency-Key), and a client batch.
      const calls = [
        stack.post('/v1/predict', { model, features: [5, 191, 105, 3100, 15, 1977], timeout_ms: 300 }, wait),
        stack.post(
          '/v1/predict',
          { model, features: [5, 192, 105, 3100, 15, 1977], timeout_ms: 300 },
          {
            ...wait,
            'idempotency-key': 'deadline-sync-1',
          },
        ),
        stack.post(
          '/v1/batch-predict',
          { model, requests: [{ features: [5, 193, 105, 3100, 15, 1977] }], timeout_ms: 300 },
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
    const queue = stack.services.jobs.queueOf('mlp-priority');
    await queue.pause();
    try {
      const free = await submit('mlp-priority', { priority: 1 }, freeKey);
      expect(free.priority).toBe(5);
      const premium = await submit('mlp-priority');
      expect(premium.priority).toBe(1);
      const lowered = await submit('mlp-priority', { priority: 9 });
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
    const queue = stack.services.jobs.queueOf('idle-full');
    const depth = async () => {
      const c = await queue.getJobCounts('waiting', 'prioritized');
      return (c.waiting ?? 0) + (c.prioritized ?? 0);
    };
    for (let i = 0; i < 10; i++) await submit('idle-full');
    expect(await depth()).toBe(10);
    const res = await stack.post('/v1/jobs', { model: 'idle-full', features: CAR });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await res.json()) as { code: string }).code).toBe('queue_full');
    // The sync routes apply the same cap (/v1/predict used to enqueue past it).
    for (const [path, body, headers] of [
      ['/v1/predict', { model: 'idle-full', features: features('idle-full') }, {}],
      ['/v1/predict', { model: 'idle-full', features: features('idle-full') }, { prefer: 'respond-async' }],
      ['/v1/batch-predict', { model: 'idle-full', requests: [{ features: features('idle-full') }] }, {}],
    ] as const) {
      const sync = await stack.post(path, body, headers);
      expect(sync.status).toBe(503);
      expect(((await sync.json()) as { code: string }).code).toBe('queue_full');
    }
    expect(await depth()).toBe(10);
    // Other models are not affected.
    expect((await stack.post('/v1/jobs', { model: 'cars-mpg', features: CAR })).status).toBe(202);
  });
});
