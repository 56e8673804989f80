import { DirectOrt, randomRows } from '@quern/devkit';
import { AdmissionLedger, createLogger, MetricNames } from '@quern/shared';
import { WorkerRuntime } from '@quern/worker';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../ops/process-stack';
import { type Stack, startStack } from '../support/stack';

/**
 * The sync fast lane (QUERN_SYNC_FAST_LANE, docs/architecture.md): a small sync job is also pushed
 * over pub/sub to a worker, which answers it before BullMQ hands the job over; the BullMQ job stays
 * the record. Real Redis, BullMQ and ONNX Runtime; API and worker in this process.
 */

let stack: Stack;
let cars: DirectOrt;
let counter = 0;
/** A row no other call sent (the cache never answers it). */
const uniqueRow = () => [4, 100 + counter++, 90, 2264, 15.5, 1971];

/** A prom-client metric as far as these tests read it. */
interface Metric {
  get(): Promise<{ values: { value: number; labels: Record<string, string | number>; metricName?: string }[] }>;
}

async function counterValue(metric: Metric, labels: Record<string, string>): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))
    .reduce((sum, v) => sum + v.value, 0);
}

async function batchesRun(metric: Metric): Promise<number> {
  const { values } = await metric.get();
  return (
    values.find((v) => v.metricName === `${MetricNames.batchSize}_count` && v.labels.model === 'cars-mpg')?.value ?? 0
  );
}

const answered = () => counterValue(stack.worker.metrics.fastLane, { model: 'cars-mpg', outcome: 'answered' });

/** Waits until the API's view of cars-mpg's announced workers (read once a second) passes `accept`. */
const untilLane = (what: string, accept: (workers: readonly string[]) => boolean) =>
  pollUntil(what, async () => stack.services.fastLane?.workersOf('cars-mpg') ?? [], accept);

async function predict(features: number[]): Promise<{ prediction: number; job_id: string }> {
  const res = await stack.post('/v1/predict', { features });
  expect(res.status).toBe(200);
  return (await res.json()) as { prediction: number; job_id: string };
}

async function expectMatchesOrt(features: number[], prediction: number): Promise<void> {
  const [expected] = await cars.run([features]);
  expect(Math.abs(prediction - (expected?.[0] as number))).toBeLessThan(1e-4);
}

/** Polls the job until BullMQ recorded it as succeeded; returns its output. */
async function recorded(jobId: string): Promise<{ prediction: number }> {
  const job = await pollUntil(
    `job ${jobId} recorded`,
    async () => (await (await stack.get(`/v1/jobs/${jobId}`)).json()) as { status: string; output?: unknown },
    (j) => j.status === 'succeeded',
  );
  return job.output as { prediction: number };
}

/** The call's answer matches ONNX Runtime, and BullMQ recorded the same output for its job. */
async function expectAnswered(features: number[], body: { prediction: number; job_id: string }): Promise<void> {
  await expectMatchesOrt(features, body.prediction);
  expect((await recorded(body.job_id)).prediction).toBe(body.prediction);
}

beforeAll(async () => {
  stack = await startStack();
  const entry = stack.manifest.models.find((m) => m.name === 'cars-mpg');
  if (!entry) throw new Error('no cars-mpg in the manifest');
  cars = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, entry);
  // The API reads the announced workers in the background: wait until it knows this one.
  await untilLane('the API knows the worker’s fast lane', (workers) => workers.includes(stack.worker.id));
});

afterAll(async () => {
  await cars?.release();
  await stack?.close();
});

describe('the sync fast lane', () => {
  it('an idle worker answers a sync call early; BullMQ records the same result, computed once', async () => {
    const before = await answered();
    const batchesBefore = await batchesRun(stack.worker.metrics.batchSize);
    const features = uniqueRow();
    const body = await predict(features);
    await expectMatchesOrt(features, body.prediction);
    expect(await answered()).toBe(before + 1);

    // The record: the BullMQ job completes with the answer the caller got, without a second run.
    const output = await recorded(body.job_id);
    expect(output.prediction).toBe(body.prediction);
    expect(await batchesRun(stack.worker.metrics.batchSize)).toBe(batchesBefore + 1);

    // The early answer wrote the cache entry with the reply: the same row again is a hit.
    const again = (await (await stack.post('/v1/predict', { features })).json()) as { cached: boolean };
    expect(again.cached).toBe(true);
  });

  it('a push to a worker that is gone loses nothing: those calls are answered through the queue', async () => {
    // An announced worker that no longer listens (it died within the heartbeat TTL).
    const gone = 'wrk_gone0000000000000000';
    await stack.client.zadd(stack.keys.fastLaneWorkers('cars-mpg'), Date.now() + 60_000, gone);
    await untilLane('the API knows the gone worker', (workers) => workers.includes(gone) && workers.length === 2);
    const before = await answered();
    const calls = 6;
    for (let i = 0; i < calls; i++) {
      const features = uniqueRow();
      await expectAnswered(features, await predict(features));
    }
    // Round robin over the two: half went to the gone worker and were answered by the queue alone.
    expect(await answered()).toBe(before + calls / 2);
    await stack.client.zrem(stack.keys.fastLaneWorkers('cars-mpg'), gone);
  });

  it('with two workers, a job answered by one and handed to the other by BullMQ runs once', async () => {
    const second = await WorkerRuntime.start({
      config: stack.config,
      manifest: stack.manifest,
      logger: createLogger('worker', 'silent'),
    });
    const workers = [stack.worker, second];
    const total = async (outcome: string) =>
      (await Promise.all(workers.map((w) => counterValue(w.metrics.fastLane, { model: 'cars-mpg', outcome })))).reduce(
        (a, b) => a + b,
        0,
      );
    const batches = async () =>
      (await Promise.all(workers.map((w) => batchesRun(w.metrics.batchSize)))).reduce((a, b) => a + b, 0);
    try {
      await untilLane(
        'the API knows both workers',
        (known) => known.includes(second.id) && known.includes(stack.worker.id),
      );
      const [answeredBefore, recordedBefore, batchesBefore] = [
        await total('answered'),
        await total('recorded'),
        await batches(),
      ];
      const calls = 12;
      for (let i = 0; i < calls; i++) {
        const features = uniqueRow();
        await expectAnswered(features, await predict(features));
      }
      expect(await total('answered')).toBe(answeredBefore + calls);
      // BullMQ gave some jobs to the worker that did not answer them: completed from the answer's record.
      expect(await total('recorded')).toBeGreaterThan(recordedBefore);
      // One inference per job, whichever worker BullMQ handed it to.
      expect(await batches()).toBe(batchesBefore + calls);
    } finally {
      await second.close(10_000);
    }
  });

  it('a paused queue is not bypassed: the call waits for the queue like any other', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const before = await answered();
    await queue.pause();
    let jobId: string;
    try {
      const res = await stack.post('/v1/predict', { features: uniqueRow() }, { prefer: 'wait=1' });
      expect(res.status).toBe(202);
      jobId = ((await res.json()) as { id: string }).id;
      expect(await answered()).toBe(before);
    } finally {
      await queue.resume();
    }
    await recorded(jobId);
    expect(await answered()).toBe(before);
  });

  it('a busy worker (rows waiting for a thread) leaves a pushed job to the queue', async () => {
    const mlp = stack.worker.served.find((m) => m.entry.name === 'mlp-large');
    if (!mlp) throw new Error('the worker serves no mlp-large');
    const busy = () => counterValue(stack.worker.metrics.fastLane, { model: 'cars-mpg', outcome: 'busy' });
    await untilLane('the API knows this worker alone', (known) => known.length === 1 && known[0] === stack.worker.id);
    const [answeredBefore, busyBefore] = [await answered(), await busy()];
    // Rows of the heavy model straight into the worker's scheduler: they wait for its threads a while.
    const backlog = stack.worker.scheduler.submit(mlp.pool.name, randomRows(60_000, 256, 5));
    try {
      expect(stack.worker.scheduler.pendingRows()).toBeGreaterThan(0);
      const features = uniqueRow();
      const call = predict(features);
      await pollUntil('the push heard as busy', busy, (n) => n === busyBefore + 1);
      await expectAnswered(features, await call);
      expect(await answered()).toBe(answeredBefore);
    } finally {
      await backlog;
    }
  });

  it('a job that is not a small sync call is never pushed', async () => {
    const before = await answered();
    // An async job: no one waits on a reply channel for it.
    const res = await stack.post('/v1/jobs', { features: uniqueRow() });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    await recorded(id);
    // A sync call that asks not to wait (202 with the job, always).
    const pending = await stack.post('/v1/predict', { features: uniqueRow() }, { prefer: 'respond-async' });
    expect(pending.status).toBe(202);
    await recorded(((await pending.json()) as { id: string }).id);
    expect(await answered()).toBe(before);
  });

  it('with QUERN_SYNC_FAST_LANE=false nothing is announced or pushed', async () => {
    const other = await startStack({ QUERN_SYNC_FAST_LANE: 'false' });
    try {
      expect(await other.client.zcard(other.keys.fastLaneWorkers('cars-mpg'))).toBe(0);
      expect(other.services.fastLane).toBeUndefined();
      const res = await other.post('/v1/predict', { features: uniqueRow() });
      expect(res.status).toBe(200);
      expect(await counterValue(other.worker.metrics.fastLane, { model: 'cars-mpg', outcome: 'answered' })).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('a worker that drains withdraws from the lane', async () => {
    expect(await stack.client.zscore(stack.keys.fastLaneWorkers('cars-mpg'), stack.worker.id)).not.toBeNull();
    await stack.worker.close(10_000);
    expect(await stack.client.zscore(stack.keys.fastLaneWorkers('cars-mpg'), stack.worker.id)).toBeNull();
  });
});

describe('the push, as the admission script sends it', () => {
  // A queue no worker consumes: what waits in it stays there.
  const queueName = 'infer-fastlane-probe';
  const request = (jobId: string, maxDepth = 100) => ({
    queueKey: `${stack.config.QUERN_REDIS_PREFIX}:${queueName}`,
    model: 'fastlane-probe',
    owner: 'key_fastlane_probe',
    jobId,
    rows: 1,
    maxDepth,
    maxRows: 0,
    deadlineAt: Date.now() + 60_000,
    priorityClass: 1,
    weight: 1,
    quantumRows: 0,
    recentJobsTtlMs: 60_000,
    push: { channel: stack.keys.fastLaneChannel('wrk_probe'), message: jobId, maxAhead: 4 },
  });

  it('goes out only for an admitted job, into a queue that is neither paused nor holding jobs', async () => {
    const subscriber = new Redis(stack.redis.url);
    const heard: string[] = [];
    subscriber.on('message', (_channel: string, message: string) => heard.push(message));
    await subscriber.subscribe(stack.keys.fastLaneChannel('wrk_probe'));
    const queue = new Queue(queueName, { connection: stack.client, prefix: stack.config.QUERN_REDIS_PREFIX });
    const ledger = new AdmissionLedger(stack.client, stack.keys);
    // A marker the subscriber hears after everything published before it: nothing else to wait on.
    const heardAll = async () => {
      const marker = `marker-${heard.length}-${Date.now()}`;
      await stack.client.publish(stack.keys.fastLaneChannel('wrk_probe'), marker);
      await pollUntil('the marker heard', async () => heard.includes(marker), Boolean);
      return heard.filter((m) => !m.startsWith('marker-'));
    };
    try {
      expect((await ledger.admit(request('job_probe_empty'))).kind).toBe('admitted');
      expect(await heardAll()).toEqual(['job_probe_empty']);

      // Refused (the queue's cap): nothing to compute.
      expect((await ledger.admit(request('job_probe_refused', 0))).kind).toBe('queue_full');
      // Paused: the queue's order holds, and so does the operator's pause.
      await queue.pause();
      expect((await ledger.admit(request('job_probe_paused'))).kind).toBe('admitted');
      await queue.resume();
      // Jobs queued ahead: three (an idle service's last few, not yet handed over) still let a
      // push through; four would be overtaken by it. (Admissions cleared: only queued jobs count.)
      const queued = async (n: number) => {
        await stack.client.del(stack.keys.queueAdmissions('fastlane-probe'));
        await queue.obliterate({ force: true });
        await queue.addBulk(
          Array.from({ length: n }, (_, i) => ({ name: 'infer', data: { i }, opts: { jobId: `ahead-${n}-${i}` } })),
        );
      };
      await queued(3);
      expect((await ledger.admit(request('job_probe_behind_3'))).kind).toBe('admitted');
      await queued(4);
      expect((await ledger.admit(request('job_probe_behind_4'))).kind).toBe('admitted');
      expect(await heardAll()).toEqual(['job_probe_empty', 'job_probe_behind_3']);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      subscriber.disconnect();
    }
  });
});
