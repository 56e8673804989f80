import { type BatchPredictRequest, isProblem, type QuernClient, type QuernProblemError } from '@quern/client';
import { DirectOrt, maxAbsDiff, OTHER_API_KEY, randomRows } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stackClient } from '../support/quern-client';
import { type Stack, startStack } from '../support/stack';

let stack: Stack;
/** The test key's client, and another principal's. */
let quern: QuernClient;
let other: QuernClient;
let cars: DirectOrt;
let mlp: DirectOrt;

const model = (name: string) => {
  const entry = stack.manifest.models.find((m) => m.name === name);
  if (!entry) throw new Error(`no model ${name}`);
  return entry;
};

beforeAll(async () => {
  stack = await startStack();
  quern = stackClient(stack);
  other = stackClient(stack, OTHER_API_KEY);
  cars = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, model('cars-mpg'));
  mlp = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, model('mlp-large'));
});

afterAll(async () => {
  await cars?.release();
  await mlp?.release();
  await stack?.close();
});

describe('end to end through API, queue, batcher and ONNX Runtime', () => {
  it('async: submit, poll until succeeded, output equal to a direct ONNX Runtime call', async () => {
    const features = [6, 250, 100, 3300, 15, 1976];
    const accepted = await quern.submit({ features });
    expect(accepted.id).toMatch(/^job_/);
    const job = await quern.wait(accepted, { initialDelayMs: 20, maxDelayMs: 20, timeoutMs: 10_000 });
    expect(job.status).toBe('succeeded');
    const [expected] = await cars.run([features]);
    const output = job.output as { prediction: number };
    expect(Math.abs(output.prediction - (expected?.[0] as number))).toBeLessThan(1e-4);
    expect(job.timings?.batch_size).toBe(1);
    expect(job.started_at).not.toBeNull();
    expect(Date.parse(job.completed_at ?? '')).toBeGreaterThanOrEqual(Date.parse(job.started_at ?? ''));
    // The times the 202 showed are the job's own, not a second clock reading taken by the queue.
    expect(job.created_at).toBe(accepted.created_at);
    expect(job.expires_at).toBe(accepted.expires_at);
    expect(Date.parse(job.started_at ?? '')).toBeGreaterThanOrEqual(Date.parse(accepted.created_at));
  });

  it('/v1/predict and /predict give the same numbers; a repeat is cached', async () => {
    const features = [4, 97, 88, 2130, 14.5, 1971];
    const first = await quern.predict({ features });
    expect(first.cached).toBe(false);
    expect(first.job_id).toMatch(/^job_/);
    expect(first.model_version).toBe('1.0.0');
    const [expected] = await cars.run([features]);
    expect(Math.abs((first.prediction as number) - (expected?.[0] as number))).toBeLessThan(1e-4);

    // The alias, as a caller of the unversioned path sends it.
    const b = (await (await stack.post('/predict', { features })).json()) as { prediction: number; cached: boolean };
    expect(b.prediction).toBe(first.prediction);
    expect(b.cached).toBe(true);
  });

  it('batch-predict returns one prediction per row, in order', async () => {
    const rows = randomRows(37, 256, 3);
    const body = await quern.batchPredict({ model: 'mlp-large', requests: rows.map((features) => ({ features })) });
    expect(body.predictions).toHaveLength(37);
    expect(maxAbsDiff(body.predictions as number[][], await mlp.run(rows))).toBeLessThan(1e-4);

    // The alias answers the same rows with the same numbers (from the cache now), in the tutorial's shape:
    // a prediction, cached flag and version per row (docs/compatibility.md).
    const { data: alias, response } = await quern.api.POST('/batch-predict', {
      body: { model: 'mlp-large', requests: rows.map((features) => ({ features })) },
    });
    expect(response.status).toBe(200);
    const perRow = alias && 'predictions' in alias ? alias.predictions : [];
    expect(perRow.map((row) => row.prediction)).toEqual(body.predictions);
    expect(perRow.every((row) => row.cached && row.model_version === body.model_version)).toBe(true);
  });

  it('batch-predict takes the rows packed as float32 (tensor): same numbers, same cache, jobs carry them packed', async () => {
    const rows = randomRows(20, 256, 31);
    const packed = (values: number[][]) => Buffer.from(Float32Array.from(values.flat()).buffer).toString('base64');
    const queue = stack.services.jobs.queueOf('mlp-large');
    const body = await quern.batchPredict({
      model: 'mlp-large',
      tensor: { dtype: 'float32', shape: [20, 256], data: packed(rows) },
    });
    expect(body.cached).toBe(false);
    expect(maxAbsDiff(body.predictions as number[][], await mlp.run(rows))).toBeLessThan(1e-4);
    // The job holds the rows packed (no JSON numbers), exactly the bytes the model read.
    const job = await queue.getJob(body.job_id ?? '');
    expect(job?.data.rows).toBeUndefined();
    expect(job?.data.input).toEqual({ count: 20, width: 256, f32: packed(rows) });

    // The same rows as JSON numbers are the same cache entries.
    const again = await quern.batchPredict({ model: 'mlp-large', requests: rows.map((features) => ({ features })) });
    expect(again.cached).toBe(true);
    expect(again.predictions).toEqual(body.predictions);
  });

  it('refuses a bad tensor with a 422 naming the field, and enqueues nothing', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const total = async () => Object.values(await queue.getJobCounts()).reduce((a, b) => a + b, 0);
    const before = await total();
    const four = Buffer.from(Float32Array.from([4, 97, 88, 2130, 14.5, 1971, 8, 350, 165, 4200, 11, 1970]).buffer);
    const cases: [unknown, string, RegExp][] = [
      [{ dtype: 'float32', shape: [2, 5], data: four.toString('base64') }, 'tensor.shape[1]', /expected 6 features/],
      [{ dtype: 'float32', shape: [3, 6], data: four.toString('base64') }, 'tensor.data', /48 bytes; 3 rows of 6/],
      [
        { dtype: 'float32', shape: [2, 6], data: `${four.toString('base64').slice(0, -4)}!!!!` },
        'tensor.data',
        /not base64/,
      ],
      [{ dtype: 'float64', shape: [2, 6], data: four.toString('base64') }, 'tensor.dtype', /./],
      [{ dtype: 'float32', shape: [101, 6], data: '' }, 'tensor.shape[0]', /at most 100 rows/],
      [
        {
          dtype: 'float32',
          shape: [2, 6],
          data: Buffer.from(Float32Array.from([1, 2, 3, 4, 5, 6, 1, 2, Number.NaN, 4, 5, 6]).buffer).toString('base64'),
        },
        'tensor.data',
        /row 1 holds a NaN/,
      ],
    ];
    // Bodies the types refuse, sent as they are: the server must refuse them too.
    const refusal = (body: unknown) =>
      quern.batchPredict(body as BatchPredictRequest).then(
        () => undefined,
        (err: unknown) => err as QuernProblemError,
      );
    for (const [tensor, field, message] of cases) {
      const err = await refusal({ model: 'cars-mpg', tensor });
      expect(isProblem(err, 'validation_failed'), JSON.stringify(tensor).slice(0, 80)).toBe(true);
      expect(err?.status).toBe(422);
      expect(err?.problem?.errors?.[0]?.field).toBe(field);
      expect(err?.problem?.errors?.[0]?.message).toMatch(message);
    }
    // Both forms, or neither: one of them must be given.
    for (const body of [
      { model: 'cars-mpg' },
      {
        model: 'cars-mpg',
        requests: [{ features: [4, 97, 88, 2130, 14.5, 1971] }],
        tensor: { dtype: 'float32', shape: [2, 6], data: four.toString('base64') },
      },
    ]) {
      const err = await refusal(body);
      expect(err?.status).toBe(422);
      expect(err?.problem?.detail).toMatch(/exactly one of requests and tensor/);
    }
    // Counted over every state: a job that got in and already finished would show too.
    expect(await total()).toBe(before);
  });

  it('gathers concurrent sync calls of one principal into shared jobs, each caller getting its own row', async () => {
    const queue = stack.services.jobs.queueOf('mlp-large');
    await queue.pause();
    const rows = randomRows(40, 256, 777);
    const pending = rows.map((features, i) => (i % 4 === 3 ? other : quern).predict({ model: 'mlp-large', features }));
    try {
      // The calls went out together: while the queue holds a principal's jobs, at most
      // QUERN_SYNC_COALESCE_IN_FLIGHT (1 by default) of them per principal are queued, not one per call;
      // the other calls gather until one of those finishes.
      const perOwner = async () => {
        const counts = new Map<string, number>();
        for (const job of await queue.getJobs(['waiting', 'prioritized'])) {
          const owner = (job.data as { owner: string }).owner;
          counts.set(owner, (counts.get(owner) ?? 0) + 1);
        }
        return counts;
      };
      await expect.poll(async () => (await perOwner()).size, { timeout: 5_000, interval: 10 }).toBe(2);
      const counts = await perOwner();
      for (const count of counts.values()) expect(count).toBe(1);
    } finally {
      await queue.resume();
    }
    const bodies = await Promise.all(pending);
    expect(
      maxAbsDiff(
        bodies.map((b) => b.prediction as number[]),
        await mlp.run(rows),
      ),
    ).toBeLessThan(1e-4);
    const jobs = new Set(bodies.map((b) => b.job_id));
    expect(jobs.size).toBeLessThan(rows.length);
    // Each shared job's rows belong to one principal, and each caller has a row of its own.
    for (const id of jobs) {
      const members = bodies.map((b, i) => ({ ...b, i })).filter((b) => b.job_id === id);
      expect(new Set(members.map((m) => m.i % 4 === 3))).toHaveProperty('size', 1);
      expect(new Set(members.map((m) => m.job_row)).size).toBe(members.length);
    }
    // A lone call at idle gets a job of its own.
    const alone = await quern.predict({ model: 'mlp-large', features: randomRows(1, 256, 778)[0] ?? [] });
    expect(alone.job_row).toBe(0);
    const job = await quern.getJob(alone.job_id ?? '');
    expect(job.output).toHaveProperty('prediction');
  });

  it('one caller whose input overflows the model gets 422; the callers sharing its job still get their predictions', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const before = await queue.count();
    await queue.pause();
    const rows = [0, 1, 2, 3, 4, 5].map((i) => [4, 100 + i, 90, 2264, 15.5, 1971]);
    rows[2] = [4, 140, 90, 2264, 15.5, 3e38]; // finite float32, but the model's output overflows
    // Raw requests, all sent in one tick (as the client's calls are not), so all six rows share one job.
    const pending = rows.map((features) => stack.post('/v1/predict', { features }));
    try {
      await expect.poll(async () => (await queue.count()) - before, { timeout: 5_000, interval: 10 }).toBe(1);
    } finally {
      await queue.resume();
    }
    const responses = await Promise.all(pending);
    const bodies = (await Promise.all(responses.map((r) => r.json()))) as {
      prediction: number;
      job_id: string;
      code: string;
      detail: string;
    }[];
    expect(responses.map((r) => r.status)).toEqual([200, 200, 422, 200, 200, 200]);
    expect(bodies[2]).toMatchObject({
      code: 'validation_failed',
      detail: expect.stringContaining('not a finite number'),
    });
    expect(bodies[2]?.detail).not.toMatch(/row \d/); // a row of someone else's shared job means nothing to this caller
    const good = bodies.filter((_, i) => i !== 2);
    const expected = await cars.run(rows.filter((_, i) => i !== 2));
    good.forEach((b, i) => {
      expect(Math.abs(b.prediction - (expected[i]?.[0] as number))).toBeLessThan(1e-4);
    });
    // The shared job failed; the other rows were sent again, together.
    expect(new Set(good.map((b) => b.job_id)).size).toBe(1);
    expect(good[0]?.job_id).not.toBe(bodies[2]?.job_id);
  });

  it('1 000 concurrent sync requests on mlp-large all succeed, correctly, in batches larger than one', async () => {
    const rows = randomRows(1000, 256, 2024);
    // Every answer a 200: none was a 202 that the client then followed to the job.
    const statuses: number[] = [];
    const client = stackClient(stack);
    client.api.use({ onResponse: ({ response }) => void statuses.push(response.status) });
    const bodies = await Promise.all(rows.map((features) => client.predict({ model: 'mlp-large', features })));
    expect(statuses).toHaveLength(1000);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(
      maxAbsDiff(
        bodies.map((b) => b.prediction as number[]),
        await mlp.run(rows),
      ),
    ).toBeLessThan(1e-4);

    // Each job records the batch it ran in: under this load, batches grew past one row.
    const sample = bodies.filter((_, i) => i % 50 === 0);
    const jobs = await Promise.all(sample.map((b) => quern.getJob(b.job_id ?? '')));
    const sizes = jobs.map((j) => j.timings?.batch_size ?? 0);
    expect(Math.max(...sizes)).toBeGreaterThan(1);
    const histogram = await stack.worker.metrics.batchSize.get();
    const count = histogram.values.find(
      (v) => v.metricName === 'quern_batch_size_count' && v.labels.model === 'mlp-large',
    );
    const sum = histogram.values.find((v) => v.metricName === 'quern_batch_size_sum' && v.labels.model === 'mlp-large');
    // Fewer batches than rows: the mean batch size is above one.
    expect(count?.value).toBeGreaterThan(0);
    expect((sum?.value ?? 0) / (count?.value ?? 1)).toBeGreaterThan(1);
  });
});
