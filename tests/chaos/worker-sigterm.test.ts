import { randomRows } from '@quern/devkit';
import { INFERENCE_JOB_NAME, KeySpace, newId } from '@quern/shared';
import { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

const DEADLINE_MS = 20_000;
let harness: Harness;

beforeAll(async () => {
  harness = await Harness.start({ workers: 1, env: { QUERN_SHUTDOWN_TIMEOUT_MS: String(DEADLINE_MS) } });
});

afterAll(async () => {
  await harness?.close();
});

describe('fault 2: SIGTERM to a worker holding a full batch', () => {
  it('finishes the batch, stalls nothing, fetches nothing after the signal, exits before its deadline', async () => {
    const queue = harness.queue('mlp-large');
    const events = new QueueEvents(new KeySpace(harness.prefix).inferenceQueue('mlp-large'), {
      connection: harness.client(),
      prefix: harness.prefix,
    });
    await events.waitUntilReady();
    let stalled = 0;
    events.on('stalled', () => stalled++);
    const worker = harness.workers[0];
    if (!worker) throw new Error('no worker');
    const workerId = worker.logs().find((l) => l.msg === 'worker started')?.worker_id as string;

    const now = Date.now();
    const jobs = await queue.addBulk(
      randomRows(3_000, 256, 77).map((features) => ({
        name: INFERENCE_JOB_NAME,
        data: {
          v: 1 as const,
          model: 'mlp-large',
          model_version: '1.0.0',
          rows: [features],
          mode: 'async' as const,
          owner: 'key_chaos',
          request_id: newId('req'),
          created_at: now,
          deadline_at: now + 600_000,
          priority: 1,
        },
        opts: { jobId: newId('job') },
      })),
    );
    // A full batch of mlp-large is 64 rows: wait until the worker holds at least that many.
    await expect.poll(() => queue.getActiveCount(), { timeout: 15_000, interval: 5 }).toBeGreaterThanOrEqual(64);
    const held = (await queue.getActive()).map((j) => j.id as string);
    const signalled = performance.now();
    const exit = await worker.stop('SIGTERM', DEADLINE_MS + 10_000);
    const exitMs = performance.now() - signalled;
    const drainingAt = Date.parse(worker.logs().find((l) => l.msg === 'draining')?.time as string);

    const all = await Promise.all(jobs.map((j) => queue.getJob(j.id as string)));
    const mine = all.filter((j) => j?.processedBy === workerId);
    const fetchedAfter = mine.filter((j) => (j?.processedOn ?? 0) > drainingAt).length;
    const heldStates = await Promise.all(held.map((id) => queue.getJobState(id)));
    report('fault-2-worker-sigterm', {
      jobs_held_at_signal: held.length,
      held_completed: heldStates.filter((s) => s === 'completed').length,
      processed_by_worker: mine.length,
      fetched_after_signal: fetchedAfter,
      stalled,
      active_after_exit: await queue.getActiveCount(),
      exit_code: exit.code ?? -1,
      exit_ms: Math.round(exitMs),
      deadline_ms: DEADLINE_MS,
    });
    expect(exit.code).toBe(0);
    expect(exitMs).toBeLessThan(DEADLINE_MS);
    expect(heldStates.every((s) => s === 'completed')).toBe(true);
    expect(fetchedAfter).toBe(0);
    expect(await queue.getActiveCount()).toBe(0);
    expect(stalled).toBe(0);
    // Nothing lost: everything not done waits for the next worker.
    const states = await Promise.all(jobs.map((j) => queue.getJobState(j.id as string)));
    expect(states.every((s) => s === 'completed' || s === 'waiting')).toBe(true);
    await events.close();
  });
});
