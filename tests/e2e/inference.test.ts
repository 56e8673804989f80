import { DirectOrt, maxAbsDiff, OTHER_API_KEY, randomRows } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';

let stack: Stack;
let cars: DirectOrt;
let mlp: DirectOrt;

const model = (name: string) => {
  const entry = stack.manifest.models.find((m) => m.name === name);
  if (!entry) throw new Error(`no model ${name}`);
  return entry;
};

beforeAll(async () => {
  stack = await startStack();
  cars = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, model('cars-mpg'));
  mlp = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, model('mlp-large'));
});

afterAll(async () => {
  await cars?.release();
  await mlp?.release();
  await stack?.close();
});

interface JobBody {
  id: string;
  status: string;
  output: { prediction: number | number[] } | null;
  timings: { queue_ms: number; inference_ms: number; batch_size: number } | null;
  created_at: string;
  expires_at: string;
  started_at: string | null;
  completed_at: string | null;
}

describe('end to end through API, queue, batcher and ONNX Runtime', () => {
  it('async: submit, poll until succeeded, output equal to a direct ONNX Runtime call', async () => {
    const features = [6, 250, 100, 3300, 15, 1976];
    const created = await stack.post('/v1/jobs', { features });
    expect(created.status).toBe(202);
    const accepted = (await created.json()) as JobBody;
    const { id } = accepted;
    let job: JobBody | undefined;
    await expect
      .poll(
        async () => {
          job = (await (await stack.get(`/v1/jobs/${id}`)).json()) as JobBody;
          return job.status;
        },
        { timeout: 10_000, interval: 20 },
      )
      .toBe('succeeded');
    const [expected] = await cars.run([features]);
    expect(Math.abs((job?.output?.prediction as number) - (expected?.[0] as number))).toBeLessThan(1e-4);
    expect(job?.timings?.batch_size).toBe(1);
    expect(job?.started_at).not.toBeNull();
    expect(Date.parse(job?.completed_at ?? '')).toBeGreaterThanOrEqual(Date.parse(job?.started_at ?? ''));
    // The times the 202 showed are the job's own, not a second clock reading taken by the queue.
    expect(job?.created_at).toBe(accepted.created_at);
    expect(job?.expires_at).toBe(accepted.expires_at);
    expect(Date.parse(job?.started_at ?? '')).toBeGreaterThanOrEqual(Date.parse(accepted.created_at));
  });

  it('/v1/predict and /predict give the same numbers; a repeat is cached', async () => {
    const features = [4, 97, 88, 2130, 14.5, 1971];
    const a = await stack.post('/v1/predict', { features });
    expect(a.status).toBe(200);
    const first = (await a.json()) as { prediction: number; cached: boolean; job_id: string; model_version: string };
    expect(first.cached).toBe(false);
    expect(first.job_id).toMatch(/^job_/);
    expect(first.model_version).toBe('1.0.0');
    const [expected] = await cars.run([features]);
    expect(Math.abs(first.prediction - (expected?.[0] as number))).toBeLessThan(1e-4);

    const b = (await (await stack.post('/predict', { features })).json()) as { prediction: number; cached: boolean };
    expect(b.prediction).toBe(first.prediction);
    expect(b.cached).toBe(true);
  });

  it('batch-predict returns one prediction per row, in order', async () => {
    const rows = randomRows(37, 256, 3);
    const res = await stack.post('/v1/batch-predict', {
      model: 'mlp-large',
      requests: rows.map((features) => ({ features })),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { predictions: number[][]; job_id: string };
    expect(body.predictions).toHaveLength(37);
    expect(maxAbsDiff(body.predictions, await mlp.run(rows))).toBeLessThan(1e-4);

    // The alias answers the same rows the same way (from the cache now).
    const alias = (await (
      await stack.post('/batch-predict', { model: 'mlp-large', requests: rows.map((features) => ({ features })) })
    ).json()) as { predictions: number[][]; cached: boolean };
    expect(alias.predictions).toEqual(body.predictions);
    expect(alias.cached).toBe(true);
  });

  it('batch-predict takes the rows packed as float32 (tensor): same numbers, same cache, jobs carry them packed', async () => {
    const rows = randomRows(20, 256, 31);
    const packed = (values: number[][]) => Buffer.from(Float32Array.from(values.flat()).buffer).toString('base64');
    const queue = stack.services.jobs.queueOf('mlp-large');
    const res = await stack.post('/v1/batch-predict', {
      model: 'mlp-large',
      tensor: { dtype: 'float32', shape: [20, 256], data: packed(rows) },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { predictions: number[][]; job_id: string; cached: boolean };
    expect(body.cached).toBe(false);
    expect(maxAbsDiff(body.predictions, await mlp.run(rows))).toBeLessThan(1e-4);
    // The job holds the rows packed (no JSON numbers), exactly the bytes the model read.
    const job = await queue.getJob(body.job_id);
    expect(job?.data.rows).toBeUndefined();
    expect(job?.data.input).toEqual({ count: 20, width: 256, f32: packed(rows) });

    // The same rows as JSON numbers are the same cache entries.
    const json = await stack.post('/v1/batch-predict', {
      model: 'mlp-large',
      requests: rows.map((features) => ({ features })),
    });
    const again = (await json.json()) as { predictions: number[][]; cached: boolean };
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
    for (const [tensor, field, message] of cases) {
      const res = await stack.post('/v1/batch-predict', { model: 'cars-mpg', tensor });
      expect(res.status, JSON.stringify(tensor).slice(0, 80)).toBe(422);
      const problem = (await res.json()) as { errors: { field: string; message: string }[] };
      expect(problem.errors[0]?.field).toBe(field);
      expect(problem.errors[0]?.message).toMatch(message);
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
      const res = await stack.post('/v1/batch-predict', body);
      expect(res.status).toBe(422);
      expect(((await res.json()) as { detail: string }).detail).toMatch(/exactly one of requests and tensor/);
    }
    // Counted over every state: a job that got in and already finished would show too.
    expect(await total()).toBe(before);
  });

  it('gathers concurrent sync calls of one principal into shared jobs, each caller getting its own row', async () => {
    const queue = stack.services.jobs.queueOf('mlp-large');
    await queue.pause();
    const rows = randomRows(40, 256, 777);
    const pending = rows.map((features, i) =>
      stack.post('/v1/predict', { model: 'mlp-large', features }, i % 4 === 3 ? { 'x-api-key': OTHER_API_KEY } : {}),
    );
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
    const bodies = (await Promise.all((await Promise.all(pending)).map((r) => r.json()))) as {
      prediction: number[];
      job_id: string;
      job_row: number;
    }[];
    expect(
      maxAbsDiff(
        bodies.map((b) => b.prediction),
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
    const alone = (await (
      await stack.post('/v1/predict', { model: 'mlp-large', features: randomRows(1, 256, 778)[0] })
    ).json()) as {
      job_row: number;
      job_id: string;
    };
    expect(alone.job_row).toBe(0);
    const job = (await (await stack.get(`/v1/jobs/${alone.job_id}`)).json()) as { output: unknown };
    expect(job.output).toHaveProperty('prediction');
  });

  it('one caller whose input overflows the model gets 422; the callers sharing its job still get their predictions', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const before = await queue.count();
    await queue.pause();
    const rows = [0, 1, 2, 3, 4, 5].map((i) => [4, 100 + i, 90, 2264, 15.5, 1971]);
    rows[2] = [4, 140, 90, 2264, 15.5, 3e38]; // finite float32, but the model's output overflows
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
    const responses = await Promise.all(
      rows.map((features) => stack.post('/v1/predict', { model: 'mlp-large', features })),
    );
    expect(responses.map((r) => r.status).every((s) => s === 200)).toBe(true);
    const bodies = (await Promise.all(responses.map((r) => r.json()))) as { prediction: number[]; job_id: string }[];
    expect(
      maxAbsDiff(
        bodies.map((b) => b.prediction),
        await mlp.run(rows),
      ),
    ).toBeLessThan(1e-4);

    // Each job records the batch it ran in: under this load, batches grew past one row.
    const sample = bodies.filter((_, i) => i % 50 === 0);
    const jobs = (await Promise.all(
      sample.map(async (b) => (await stack.get(`/v1/jobs/${b.job_id}`)).json()),
    )) as JobBody[];
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
