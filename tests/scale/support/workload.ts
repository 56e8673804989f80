import { join } from 'node:path';
import { DirectOrt, maxAbsDiff, REPO_ROOT, randomRows } from '@quern/devkit';
import { type InferenceResult, KeySpace, loadManifest, type RedisClient } from '@quern/shared';
import { type Job, Queue } from 'bullmq';
import { pollUntil, type Submission } from './fleet';

const MODELS_DIR = join(REPO_ROOT, 'models');

/**
 * A fixed mix of jobs (deterministic rows, so a failure can be rerun exactly) and the outputs
 * ONNX Runtime gives for them when called directly, with no queue and no batcher.
 */
export interface Workload {
  jobs: Submission[];
  reference: number[][];
}

export async function makeWorkload(counts: Record<string, number>, seed = 42): Promise<Workload> {
  const manifest = loadManifest(MODELS_DIR);
  const jobs: Submission[] = [];
  const reference: number[][] = [];
  for (const [name, count] of Object.entries(counts)) {
    const entry = manifest.models.find((m) => m.name === name);
    if (!entry) throw new Error(`no model ${name}`);
    const rows = randomRows(count, entry.input.features, seed + jobs.length);
    const ort = await DirectOrt.load(MODELS_DIR, entry);
    try {
      reference.push(...(await ort.run(rows)));
    } finally {
      await ort.release();
    }
    for (const features of rows) jobs.push({ model: name, features });
  }
  // Interleave the models the way real traffic would arrive (a fixed shuffle).
  const order = jobs.map((_, i) => i);
  let state = seed;
  for (let i = order.length - 1; i > 0; i--) {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
    const j = state % (i + 1);
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return { jobs: order.map((i) => jobs[i] as Submission), reference: order.map((i) => reference[i] as number[]) };
}

/** BullMQ's view of the model queues under one prefix, read straight from Redis. */
export class QueueReader {
  readonly queues: Map<string, Queue>;

  constructor(
    connection: RedisClient,
    readonly prefix: string,
    models: readonly string[],
  ) {
    const keys = new KeySpace(prefix);
    this.queues = new Map(models.map((m) => [m, new Queue(keys.inferenceQueue(m), { connection, prefix })]));
  }

  async counts(): Promise<Record<string, number>> {
    const total: Record<string, number> = {};
    for (const queue of this.queues.values()) {
      const counts = await queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed');
      for (const [state, n] of Object.entries(counts)) total[state] = (total[state] ?? 0) + n;
    }
    return total;
  }

  /** Waits until `expected` jobs are completed or failed; returns how long that took. */
  async waitForFinished(expected: number, timeoutMs: number): Promise<Record<string, number>> {
    return pollUntil(
      async () => {
        const c = await this.counts();
        return (c.completed ?? 0) + (c.failed ?? 0) >= expected ? c : undefined;
      },
      timeoutMs,
      async () => `job counts ${JSON.stringify(await this.counts())}, expected ${expected} finished`,
      200,
    );
  }

  /** Every job of the given ids, read from Redis (state, stored result, worker that ran it). */
  async jobs(ids: readonly string[], models: readonly string[]): Promise<Job[]> {
    return Promise.all(
      ids.map(async (id, i) => {
        const queue = this.queues.get(models[i] as string);
        const job = queue ? await queue.getJob(id) : undefined;
        if (!job) throw new Error(`job ${id} not found`);
        return job;
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}

export interface Verdict {
  /** Output rows in workload order (the first row of each job's stored result). */
  outputs: number[][];
  /** Jobs per `processedBy` (worker id). */
  perWorker: Record<string, number>;
  maxDiff: number;
  notCompleted: string[];
  wrongShape: string[];
}

/** Reads every job's stored result and compares it with the reference outputs. */
export async function verify(reader: QueueReader, ids: readonly string[], workload: Workload): Promise<Verdict> {
  const jobs = await reader.jobs(
    ids,
    workload.jobs.map((j) => j.model),
  );
  const outputs: number[][] = [];
  const perWorker: Record<string, number> = {};
  const notCompleted: string[] = [];
  const wrongShape: string[] = [];
  await Promise.all(
    jobs.map(async (job) => {
      if ((await job.getState()) !== 'completed') notCompleted.push(job.id as string);
    }),
  );
  for (const job of jobs) {
    const result = job.returnvalue as InferenceResult | null;
    // One job, one row: a stored result with more or fewer rows was written wrongly (or twice).
    if (result?.outputs.length !== 1) wrongShape.push(job.id as string);
    outputs.push(result?.outputs[0] ?? []);
    const by = job.processedBy ?? 'unknown';
    perWorker[by] = (perWorker[by] ?? 0) + 1;
  }
  return { outputs, perWorker, maxDiff: maxAbsDiff(outputs, workload.reference), notCompleted, wrongShape };
}
