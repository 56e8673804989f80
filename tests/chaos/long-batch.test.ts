import { rmSync } from 'node:fs';
import { DirectOrt, randomRows } from '@quern/devkit';
import { INFERENCE_JOB_NAME, type InferenceResult, KeySpace, type ModelEntry, newId, RowMatrix } from '@quern/shared';
import { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSlowModel } from '../support/slow-model';
import { writeTestModels } from '../support/test-models';
import { Harness, report } from './support/harness';

const LOCK_MS = 2_000;
/** The batch is sized, on the machine at hand, to compute for this many lock durations. */
const BATCH_LOCKS = 3;
/** While it computes, every health probe is answered within this fraction of its length. */
const HEALTHZ_FRACTION = 1 / 4;
const JOBS = 40;
const ROWS_PER_JOB = 100;
const ROWS = JOBS * ROWS_PER_JOB;
const BATCHING = { max_batch_size: 4_096, max_delay_ms: 2_000 };
let harness: Harness;
let modelsDir: string;
let depth = 0;

/**
 * Milliseconds one hidden layer of the slow model takes per row on this machine: the fastest of a
 * few timed runs of a 256-row batch, on one thread as the worker runs it.
 */
async function layerRowMs(): Promise<number> {
  const depth = 10;
  let model: ModelEntry | undefined;
  const dir = writeTestModels(
    [],
    [
      (d) => {
        model = writeSlowModel(d, 'calibration', depth, BATCHING);
        return model;
      },
    ],
  );
  if (!model) throw new Error('calibration model not written');
  const ort = await DirectOrt.load(dir, model);
  try {
    const rows = randomRows(256, model.input.features, 7);
    await ort.run(rows);
    let fastest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      await ort.run(rows);
      fastest = Math.min(fastest, performance.now() - started);
    }
    return fastest / rows.length / depth;
  } finally {
    await ort.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  // 40 jobs of 100 rows of a deliberately slow model (1 M multiply-adds a row per layer), gathered
  // into one batch of 4 000 rows. Its depth is chosen from a timed run so that the batch computes
  // for BATCH_LOCKS lock durations however fast the machine is.
  depth = Math.max(1, Math.ceil((BATCH_LOCKS * LOCK_MS) / (ROWS * (await layerRowMs()))));
  modelsDir = writeTestModels([], [(dir) => writeSlowModel(dir, 'mlp-wide', depth, BATCHING)]);
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
    const events = new QueueEvents(new KeySpace(harness.prefix).inferenceQueue('mlp-wide'), {
      connection: harness.client(),
      prefix: harness.prefix,
    });
    await events.waitUntilReady();
    let stalled = 0;
    events.on('stalled', () => stalled++);
    // The worker's HTTP port shares its event loop: it must keep answering while the batch runs.
    const port = harness.workers[0]?.options.env.QUERN_WORKER_PORT;
    const probes: { sent: number; answered: number }[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const sent = Date.now();
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        await res.text();
        expect(res.status).toBe(200);
        probes.push({ sent, answered: Date.now() });
        // Pacing, not synchronisation: about 20 probes a second.
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
          // Packed, as the API writes it.
          input: {
            count: ROWS_PER_JOB,
            width: 256,
            f32: RowMatrix.fromRows(rows.slice(i * ROWS_PER_JOB, (i + 1) * ROWS_PER_JOB)).toBase64(),
          },
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
    const batch = results.reduce((a, b) => (b.timings.inference_ms > a.timings.inference_ms ? b : a));
    const longest = batch.timings.inference_ms;
    // The longest batch, in wall-clock time: it ended just before its job finished.
    const during = { from: batch.finished_at - longest, to: batch.finished_at };
    const slowestHealthz = Math.max(...probes.map((p) => p.answered - p.sent));
    const answeredDuring = probes.filter((p) => p.sent >= during.from && p.answered <= during.to).length;
    const runTwice = done.filter((j) => (j?.attemptsStarted ?? 0) > 1).length;
    report('fault-6-long-batch', {
      jobs: jobs.length,
      rows: rows.length,
      largest_batch: Math.max(...results.map((r) => r.timings.batch_size)),
      longest_batch_ms: Math.round(longest),
      lock_duration_ms: LOCK_MS,
      model_depth: depth,
      slowest_healthz_ms: Math.round(slowestHealthz),
      healthz_answered_during_batch: answeredDuring,
      stalled,
      run_twice: runTwice,
    });
    // Longer than the lock on any machine: the batch was sized for this one.
    expect(longest).toBeGreaterThan(LOCK_MS);
    // The worker kept answering while the batch computed: probes went out and came back inside
    // it, and none waited for a large part of it (an event loop blocked by the batch would
    // answer nothing inside it, and one probe only after about its whole length).
    expect(answeredDuring).toBeGreaterThanOrEqual(3);
    expect(slowestHealthz).toBeLessThan(longest * HEALTHZ_FRACTION);
    expect(stalled).toBe(0);
    expect(runTwice).toBe(0);
    expect((await queue.getJobCounts('failed')).failed).toBe(0);
    await events.close();
  });
});
