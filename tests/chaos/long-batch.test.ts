import { rmSync } from 'node:fs';
import { randomRows } from '@quern/devkit';
import { INFERENCE_JOB_NAME, type InferenceResult, newId } from '@quern/shared';
import { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSlowModel } from '../support/slow-model';
import { writeTestModels } from '../support/test-models';
import { Harness, report } from './support/harness';

const LOCK_MS = 2_000;
const JOBS = 40;
const ROWS_PER_JOB = 100;
let harness: Harness;
let modelsDir: string;

beforeAll(async () => {
  // 40 jobs of 100 rows of a deliberately slow model (~40 M multiply-adds a row), gathered into
  // batches of up to 4 096 rows: one batch computes for longer than the lock lasts.
  modelsDir = writeTestModels(
    [],
    [(dir) => writeSlowModel(dir, 'mlp-wide', 40, { max_batch_size: 4_096, max_delay_ms: 2_000 })],
  );
  harness = await Harness.start({
    workers: 1,
    env: {
      QUERN_MODELS_DIR: modelsDir,
      QUERN_WORKER_MODELS: 'mlp-wide',
      QUERN_LOCK_DURATION_MS: String(LOCK_MS),
      QUERN_STALLED_INTERVAL_MS: '1000',
    },
  });
});

afterAll(async () => {
  await harness?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

describe('fault 6: a batch that takes longer than the lock duration', () => {
  it('does not stall and does not run twice: locks are renewed while the batch computes off the main thread', async () => {
    const queue = harness.queue('mlp-wide');
    const events = new QueueEvents('infer-mlp-wide', { connection: harness.client(), prefix: harness.prefix });
    await events.waitUntilReady();
    let stalled = 0;
    events.on('stalled', () => stalled++);
    // The worker's HTTP port shares its event loop: it must keep answering while the batch runs.
    const port = harness.workers[0]?.options.env.QUERN_WORKER_PORT;
    let slowestHealthz = 0;
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const started = performance.now();
        await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.text());
        slowestHealthz = Math.max(slowestHealthz, performance.now() - started);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const now = Date.now();
    const rows = randomRows(JOBS * ROWS_PER_JOB, 256, 31);
    const jobs = await queue.addBulk(
      Array.from({ length: JOBS }, (_, i) => ({
        name: INFERENCE_JOB_NAME,
        data: {
          v: 1 as const,
          model: 'mlp-wide',
          model_version: '1.0.0',
          rows: rows.slice(i * ROWS_PER_JOB, (i + 1) * ROWS_PER_JOB),
          mode: 'batch' as const,
          owner: 'key_chaos',
          request_id: newId('req'),
          created_at: now,
          deadline_at: now + 600_000,
          priority: 1,
        },
        opts: { jobId: newId('job') },
      })),
    );
    await expect
      .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 90_000, interval: 250 })
      .toBe(jobs.length);
    probing = false;
    await prober;
    const done = await Promise.all(jobs.map((j) => queue.getJob(j.id as string)));
    const results = done.map((j) => j?.returnvalue as InferenceResult);
    const longest = Math.max(...results.map((r) => r.timings.inference_ms));
    const runTwice = done.filter((j) => (j?.attemptsStarted ?? 0) > 1).length;
    report('fault-6-long-batch', {
      jobs: jobs.length,
      rows: rows.length,
      largest_batch: Math.max(...results.map((r) => r.timings.batch_size)),
      longest_batch_ms: Math.round(longest),
      lock_duration_ms: LOCK_MS,
      slowest_healthz_ms: Math.round(slowestHealthz),
      stalled,
      run_twice: runTwice,
    });
    expect(longest).toBeGreaterThan(LOCK_MS);
    expect(stalled).toBe(0);
    expect(runTwice).toBe(0);
    expect((await queue.getJobCounts('failed')).failed).toBe(0);
    await events.close();
  });
});
