import { DirectOrt, maxAbsDiff, randomRows, startTestRedis, type TestRedis, testConfig } from '@quern/devkit';
import {
  type Config,
  createLogger,
  decodeFailure,
  FAIR_BAND,
  INFERENCE_JOB_NAME,
  type InferenceJobData,
  type InferenceResult,
  inferenceJobOptions,
  inputHash,
  type JobReply,
  KeySpace,
  listenForReplies,
  loadManifest,
  type ModelManifest,
  newId,
  RowMatrix,
  WEBHOOK_QUEUE,
} from '@quern/shared';
import { type Job, Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerRuntime } from './worker-runtime';

let redis: TestRedis;
let config: Config;
let manifest: ModelManifest;
let client: Redis;
const logger = createLogger('worker', 'silent');

/** Job data as the API writes it: the rows packed as float32 (`input`). */
function jobData(model: string, rows: number[][], version = '1.0.0'): InferenceJobData {
  const { rows: _json, ...rest } = legacyJobData(model, rows, version);
  const matrix = RowMatrix.fromRows(rows);
  return { ...rest, input: { count: matrix.count, width: matrix.width, f32: matrix.toBase64() } };
}

/** Job data as older APIs wrote it: the rows as JSON numbers (`rows`), still read by workers. */
function legacyJobData(model: string, rows: number[][], version = '1.0.0'): InferenceJobData {
  return {
    v: 1,
    model,
    model_version: version,
    rows,
    mode: 'async',
    owner: 'key_test',
    request_id: newId('req'),
    created_at: Date.now(),
    deadline_at: Date.now() + 600_000,
    priority: 1,
  };
}

beforeAll(async () => {
  redis = await startTestRedis();
  config = testConfig(redis);
  manifest = loadManifest(config.QUERN_MODELS_DIR);
  client = new Redis(redis.url);
});

afterAll(async () => {
  client.disconnect();
  await redis.close();
});

describe('WorkerRuntime (real Redis, BullMQ and ONNX Runtime)', () => {
  it('completes jobs with ONNX Runtime’s outputs, batches under load and writes the result cache', async () => {
    const runtime = await WorkerRuntime.start({ config, manifest, logger });
    const keys = new KeySpace(config.QUERN_REDIS_PREFIX);
    const queue = new Queue(keys.inferenceQueue('mlp-large'), {
      connection: client,
      prefix: config.QUERN_REDIS_PREFIX,
    });
    const events = new QueueEvents(keys.inferenceQueue('mlp-large'), {
      connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
      prefix: config.QUERN_REDIS_PREFIX,
    });
    await events.waitUntilReady();
    queue.setMaxListeners(1000);
    const model = manifest.models.find((m) => m.name === 'mlp-large');
    if (!model) throw new Error('mlp-large missing from the manifest');
    const direct = await DirectOrt.load(config.QUERN_MODELS_DIR, model);
    try {
      const rows = randomRows(300, 256, 7);
      const jobs = await queue.addBulk(
        rows.map((row) => ({
          name: INFERENCE_JOB_NAME,
          data: jobData('mlp-large', [row]),
          opts: { jobId: newId('job'), ...inferenceJobOptions(config) },
        })),
      );
      const results = (await Promise.all(jobs.map((j) => j.waitUntilFinished(events, 30_000)))) as InferenceResult[];
      const expected = await direct.run(rows);
      expect(
        maxAbsDiff(
          results.map((r) => r.outputs[0] ?? []),
          expected,
        ),
      ).toBeLessThan(1e-4);
      // 300 jobs added at once on 2 threads: rows gathered into batches larger than one.
      expect(Math.max(...results.map((r) => r.timings.batch_size))).toBeGreaterThan(1);
      expect(results.every((r) => r.model_version === model.version)).toBe(true);

      const cached = await client.get(keys.cache('mlp-large', model.version, inputHash(rows[0] as number[])));
      expect(JSON.parse(cached ?? 'null')).toEqual(results[0]?.outputs[0]);

      // The same input again is answered from the cache, without a batch.
      const again = await queue.add(INFERENCE_JOB_NAME, jobData('mlp-large', [rows[0] as number[]]), {
        jobId: newId('job'),
      });
      const againResult = (await again.waitUntilFinished(events, 10_000)) as InferenceResult;
      expect(againResult.cached).toEqual([true]);
      expect(againResult.timings.batch_size).toBe(0);
      expect(againResult.outputs[0]).toEqual(results[0]?.outputs[0]);
    } finally {
      await direct.release();
      await events.close();
      await queue.close();
      await runtime.close();
    }
  });

  it('still completes a job in the legacy `rows` format (JSON numbers, from older APIs)', async () => {
    const runtime = await WorkerRuntime.start({ config, manifest, logger });
    const keys = new KeySpace(config.QUERN_REDIS_PREFIX);
    const queue = new Queue(keys.inferenceQueue('cars-mpg'), { connection: client, prefix: config.QUERN_REDIS_PREFIX });
    const events = new QueueEvents(keys.inferenceQueue('cars-mpg'), {
      connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
      prefix: config.QUERN_REDIS_PREFIX,
    });
    await events.waitUntilReady();
    const model = manifest.models.find((m) => m.name === 'cars-mpg');
    if (!model) throw new Error('cars-mpg missing from the manifest');
    const direct = await DirectOrt.load(config.QUERN_MODELS_DIR, model);
    try {
      const rows = [
        [4, 141, 90, 2264, 15.5, 1971],
        [8, 350, 165, 3693, 11.5, 1970],
      ];
      const data = legacyJobData('cars-mpg', rows);
      expect(data.input).toBeUndefined();
      const job = await queue.add(INFERENCE_JOB_NAME, data, { jobId: newId('job') });
      const result = (await job.waitUntilFinished(events, 10_000)) as InferenceResult;
      expect(maxAbsDiff(result.outputs, await direct.run(rows))).toBeLessThan(1e-4);
      expect(result.cached).toEqual([false, false]);
      // Cached under the same key as the packed form of the row: the float32 values the model read.
      const cached = await client.get(keys.cache('cars-mpg', model.version, inputHash(rows[1] as number[])));
      expect(JSON.parse(cached ?? 'null')).toEqual(result.outputs[1]);
    } finally {
      await direct.release();
      await events.close();
      await queue.close();
      await runtime.close();
    }
  });

  it('pushes a sync job’s answer to the reply channel it names, success and failure', async () => {
    const runtime = await WorkerRuntime.start({ config, manifest, logger });
    const keys = new KeySpace(config.QUERN_REDIS_PREFIX);
    const queue = new Queue(keys.inferenceQueue('cars-mpg'), { connection: client, prefix: config.QUERN_REDIS_PREFIX });
    const subscriber = new Redis(redis.url);
    const replies: JobReply[] = [];
    const events = new QueueEvents(keys.inferenceQueue('cars-mpg'), {
      connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
      prefix: config.QUERN_REDIS_PREFIX,
    });
    await events.waitUntilReady();
    try {
      await listenForReplies(subscriber, keys, 'api_replytest', (r) => replies.push(r));
      const ok = await queue.add(
        INFERENCE_JOB_NAME,
        { ...jobData('cars-mpg', [[4, 140, 90, 2264, 15.5, 71]]), reply_to: 'api_replytest' },
        { jobId: newId('job') },
      );
      const result = (await ok.waitUntilFinished(events, 10_000)) as InferenceResult;
      await expect.poll(() => replies.length).toBe(1);
      expect(replies[0]).toEqual({ kind: 'completed', job_id: ok.id, result });
      // Past its deadline: the failure is pushed too, with its code.
      const late = await queue.add(
        INFERENCE_JOB_NAME,
        {
          ...jobData('cars-mpg', [[4, 140, 90, 2264, 15.5, 72]]),
          deadline_at: Date.now() - 1,
          reply_to: 'api_replytest',
        },
        { jobId: newId('job') },
      );
      await expect(late.waitUntilFinished(events, 10_000)).rejects.toThrow(/deadline_exceeded/);
      await expect.poll(() => replies.length).toBe(2);
      expect(replies[1]).toMatchObject({ kind: 'failed', job_id: late.id, failure: { code: 'deadline_exceeded' } });
      // A job that names no reply channel publishes nothing.
      const plain = await queue.add(INFERENCE_JOB_NAME, jobData('cars-mpg', [[4, 140, 90, 2264, 15.5, 73]]), {
        jobId: newId('job'),
      });
      await plain.waitUntilFinished(events, 10_000);
      expect(replies).toHaveLength(2);
    } finally {
      subscriber.disconnect();
      await events.close();
      await queue.close();
      await runtime.close();
    }
  });

  it('fails a job with invalid data at once (no retries) with the invalid_input code', async () => {
    const runtime = await WorkerRuntime.start({ config, manifest, logger });
    const keys = new KeySpace(config.QUERN_REDIS_PREFIX);
    const queue = new Queue(keys.inferenceQueue('cars-mpg'), { connection: client, prefix: config.QUERN_REDIS_PREFIX });
    const events = new QueueEvents(keys.inferenceQueue('cars-mpg'), {
      connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
      prefix: config.QUERN_REDIS_PREFIX,
    });
    await events.waitUntilReady();
    try {
      const job = await queue.add(INFERENCE_JOB_NAME, jobData('cars-mpg', [[1, 2, 3]]), {
        jobId: newId('job'),
        attempts: 3,
      });
      const reason = await job.waitUntilFinished(events, 10_000).then(
        () => 'succeeded',
        (err: Error) => err.message,
      );
      expect(decodeFailure(reason)).toEqual({ code: 'invalid_input', message: 'row 0 has 3 features, expected 6' });
      const failed = await queue.getJob(job.id as string);
      expect(failed?.attemptsMade).toBe(1);

      // Packed input is checked as closely as JSON rows: a NaN the API would have refused.
      const packed = await queue.add(
        INFERENCE_JOB_NAME,
        jobData('cars-mpg', [
          [1, 2, 3, 4, 5, 6],
          [1, 2, Number.NaN, 4, 5, 6],
        ]),
        {
          jobId: newId('job'),
          attempts: 3,
        },
      );
      const packedReason = await packed.waitUntilFinished(events, 10_000).then(
        () => 'succeeded',
        (err: Error) => err.message,
      );
      expect(decodeFailure(packedReason)).toMatchObject({
        code: 'invalid_input',
        message: expect.stringMatching(/^row 1 holds a NaN or an infinity/),
      });

      // A finite float32 input that overflows inside the model: the job fails naming the row, it
      // does not succeed with a null prediction, and nothing is cached for it.
      const huge = [4, 140, 90, 2264, 15.5, 3e38];
      const overflow = await queue.add(
        INFERENCE_JOB_NAME,
        jobData('cars-mpg', [[4, 140, 90, 2264, 15.5, 1971], huge]),
        { jobId: newId('job'), attempts: 3 },
      );
      const overflowReason = await overflow.waitUntilFinished(events, 10_000).then(
        () => 'succeeded',
        (err: Error) => err.message,
      );
      // The row travels as a field, not inside the wording.
      expect(decodeFailure(overflowReason)).toMatchObject({ code: 'invalid_input', row: 1 });
      expect((await queue.getJob(overflow.id as string))?.attemptsMade).toBe(1);
      expect(await client.get(keys.cache('cars-mpg', '1.0.0', inputHash(Float32Array.from(huge))))).toBeNull();
    } finally {
      await events.close();
      await queue.close();
      await runtime.close();
    }
  });

  /**
   * A queue whose first job a worker takes and then dies with (it never finishes and stops
   * renewing its lock, as a killed process would): `die()` once the job is added, then a
   * WorkerRuntime started on `config` meets the stalled job.
   */
  async function stallingQueue(suffix: string, maxStalledCount: string) {
    const config = testConfig(redis, {
      QUERN_REDIS_PREFIX: `${redis.prefix}${suffix}`,
      QUERN_MAX_STALLED_COUNT: maxStalledCount,
      QUERN_STALLED_INTERVAL_MS: '1000',
      QUERN_LOCK_DURATION_MS: '1000',
    });
    const name = new KeySpace(config.QUERN_REDIS_PREFIX).inferenceQueue('cars-mpg');
    const queue = new Queue(name, { connection: client, prefix: config.QUERN_REDIS_PREFIX });
    let taken: () => void = () => undefined;
    const holding = new Promise<void>((resolve) => {
      taken = resolve;
    });
    const doomed = new Worker(
      name,
      () => {
        taken();
        return new Promise(() => undefined); // never finishes: this worker is about to die
      },
      {
        connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
        prefix: config.QUERN_REDIS_PREFIX,
        lockDuration: 1000,
        // Its own stall check would claim the queue's check slot for the default 30 s.
        skipStalledCheck: true,
      },
    );
    const die = async () => {
      await holding;
      await doomed.close(true);
      (doomed.opts.connection as Redis).disconnect();
    };
    return { config, queue, die };
  }

  it('a job that stalled goes back to the front of its fair-share band, then runs', async () => {
    // A worker takes the job and dies; one stall is allowed, so BullMQ puts the job back in the
    // queue with the number it was admitted with (5,000 into class 5's band), and this worker
    // moves it to the band's front before it runs it.
    const { config: stallConfig, queue, die } = await stallingQueue('requeue', '1');
    const runtime = { current: undefined as WorkerRuntime | undefined };
    try {
      const lo = 4 * FAIR_BAND + 1;
      const data = { ...jobData('cars-mpg', [[4, 140, 90, 2264, 15.5, 1971]]), priority: 5 };
      const job = await queue.add(INFERENCE_JOB_NAME, data, { jobId: newId('job'), attempts: 3, priority: lo + 5_000 });
      await die();
      runtime.current = await WorkerRuntime.start({ config: stallConfig, manifest, logger });
      await expect
        .poll(() => queue.getJobState(job.id as string), { timeout: 15_000, interval: 100 })
        .toBe('completed');
      const done = await queue.getJob(job.id as string);
      expect(done?.stalledCounter).toBe(1);
      expect(done?.priority).toBe(lo);
    } finally {
      await runtime.current?.close();
      await queue.close();
    }
  });

  it('a job BullMQ fails for stalling too often reads worker_lost and still sends its failed webhook', async () => {
    // A worker takes the job and dies (its lock is no longer renewed); with a stall limit of 0 the
    // first stall fails the job, and BullMQ does so without calling our processor.
    const { config: stallConfig, queue, die } = await stallingQueue('stall', '0');
    const webhooks = new Queue(WEBHOOK_QUEUE, { connection: client, prefix: stallConfig.QUERN_REDIS_PREFIX });
    const runtime = { current: undefined as WorkerRuntime | undefined };
    try {
      const data = {
        ...jobData('cars-mpg', [[4, 140, 90, 2264, 15.5, 1971]]),
        webhook: { url: 'https://example.com/hook', events: ['failed' as const] },
      };
      const job = await queue.add(INFERENCE_JOB_NAME, data, { jobId: newId('job'), attempts: 3 });
      await die();
      runtime.current = await WorkerRuntime.start({ config: stallConfig, manifest, logger });
      await expect.poll(() => queue.getJobState(job.id as string), { timeout: 15_000, interval: 100 }).toBe('failed');
      const failed = await queue.getJob(job.id as string);
      expect(decodeFailure(failed?.failedReason).code).toBe('worker_lost');
      await expect
        .poll(async () => (await webhooks.getJob(`${job.id}.failed`))?.data.event, { timeout: 5_000 })
        .toBe('failed');
      const payload = JSON.parse((await webhooks.getJob(`${job.id}.failed`))?.data.payload) as {
        type: string;
        data: { status: string; error: { code: string } };
      };
      expect(payload).toMatchObject({ type: 'job.failed', data: { status: 'failed', error: { code: 'worker_lost' } } });
    } finally {
      await runtime.current?.close();
      await webhooks.close();
      await queue.close();
    }
  });

  it('on close, finishes every job it holds and leaves none active', async () => {
    const runtime = await WorkerRuntime.start({ config, manifest, logger });
    const keys = new KeySpace(config.QUERN_REDIS_PREFIX);
    const queue = new Queue(keys.inferenceQueue('mlp-large'), {
      connection: client,
      prefix: config.QUERN_REDIS_PREFIX,
    });
    try {
      const rows = randomRows(2000, 256, 11);
      const jobs = await queue.addBulk(
        rows.map((row) => ({
          name: INFERENCE_JOB_NAME,
          data: jobData('mlp-large', [row]),
          opts: { jobId: newId('job'), ...inferenceJobOptions(config) },
        })),
      );
      // Wait until the worker holds jobs, then shut it down while it does.
      await expect.poll(() => queue.getActiveCount(), { timeout: 10_000, interval: 5 }).toBeGreaterThan(0);
      const { forced } = await runtime.close(30_000);
      expect(forced).toBe(false);
      expect(await queue.getActiveCount()).toBe(0);
      const states = await Promise.all(jobs.map((j: Job) => queue.getJobState(j.id as string)));
      // Every job is either done or still waiting for the next worker: none lost, none stuck.
      expect(states.every((s) => s === 'completed' || s === 'waiting')).toBe(true);
      expect(states.filter((s) => s === 'completed').length).toBeGreaterThan(0);
    } finally {
      await queue.close();
      await runtime.close();
    }
  });
});
