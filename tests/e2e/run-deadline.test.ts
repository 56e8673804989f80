import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSlowModel } from '../support/slow-model';
import { type Stack, startStack } from '../support/stack';
import { writeTestModels } from '../support/test-models';

/**
 * The run deadline (`Cancel-After` on POST /v1/jobs and the sync routes): unlike `timeout_ms`, it covers the run. A job
 * still queued then ends `expired`; one whose batch ends after it ends `expired` too, without output.
 */

let stack: Stack;
let modelsDir: string;
const CAR = [4, 140, 90, 2264, 15.5, 1971];
let seed = 7;
const row = () =>
  Array.from({ length: 256 }, () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  });

interface Job {
  id: string;
  status: string;
  output: unknown;
  error: { code: string; message: string } | null;
}

beforeAll(async () => {
  modelsDir = writeTestModels(
    [{ name: 'cars-cancel-after', from: 'cars-mpg' }],
    // 800 layers, rows gathered for 300 ms: a batch of 201 rows computes for about a second or more.
    [(dir) => writeSlowModel(dir, 'slow-cancel-after', 800, { max_batch_size: 256, max_delay_ms: 300 })],
  );
  stack = await startStack({ QUERN_MODELS_DIR: modelsDir, QUERN_CACHE_TTL_SECONDS: '0' });
});

afterAll(async () => {
  await stack?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

const read = async (id: string) => (await (await stack.get(`/v1/jobs/${id}`)).json()) as Job;

describe('Cancel-After: a run deadline', () => {
  it('a job whose batch ends after its run deadline is expired, without output', async () => {
    // A big job and ours gather into one batch (max_delay_ms 300) that runs past our deadline.
    const bigJob = () =>
      stack.post(
        '/v1/batch-predict',
        { model: 'slow-cancel-after', requests: Array.from({ length: 100 }, () => ({ features: row() })) },
        { prefer: 'respond-async' },
      );
    const [big, big2] = await Promise.all([bigJob(), bigJob()]);
    expect(big.status).toBe(202);
    expect(big2.status).toBe(202);
    const res = await stack.post(
      '/v1/jobs',
      { model: 'slow-cancel-after', features: row() },
      { 'cancel-after': '700ms' },
    );
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as Job;
    let job: Job | undefined;
    await expect
      .poll(
        async () => {
          job = await read(id);
          return job.status;
        },
        { timeout: 60_000 },
      )
      .toBe('expired');
    expect(job?.output).toBeNull();
    expect(job?.error?.code).toBe('deadline_exceeded');
    // Whichever came first on this machine: the batch started before the deadline and ended after it
    // (the usual case), or it had not started by then and the job was dropped.
    expect(job?.error?.message).toMatch(/run deadline|still queued at its deadline/);
    // The job without a run deadline in the same batch succeeded.
    const bigId = ((await big.json()) as Job).id;
    await expect.poll(async () => (await read(bigId)).status, { timeout: 60_000 }).toBe('succeeded');
  }, 90_000);

  it('a job still queued at its run deadline is expired, whatever its timeout_ms', async () => {
    const queue = stack.services.jobs.queueOf('cars-cancel-after');
    await queue.pause();
    try {
      const res = await stack.post(
        '/v1/jobs',
        { model: 'cars-cancel-after', features: CAR, timeout_ms: 600_000 },
        { 'cancel-after': '150ms' },
      );
      expect(res.status).toBe(202);
      const { id } = (await res.json()) as Job;
      await expect.poll(async () => (await read(id)).status).toBe('expired');
    } finally {
      await queue.resume();
    }
  });

  it('a sync call is answered 504 at its run deadline, not at the end of its wait', async () => {
    const queue = stack.services.jobs.queueOf('cars-cancel-after');
    await queue.pause();
    try {
      for (const [path, body] of [
        ['/v1/predict', { model: 'cars-cancel-after', features: CAR }],
        ['/v1/batch-predict', { model: 'cars-cancel-after', requests: [{ features: CAR }, { features: CAR }] }],
      ] as const) {
        // Waits up to 60 s; the job cannot run (its queue is paused), so only the deadline ends it.
        const res = await stack.post(path, body, { 'cancel-after': '200ms', prefer: 'wait=60' });
        expect(res.status).toBe(504);
        const problem = (await res.json()) as { code: string; job_id?: string };
        expect(problem.code).toBe('job_expired');
      }
    } finally {
      await queue.resume();
    }
  });

  it('refuses a Cancel-After that is not a duration, on every route that takes it, before queueing', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const before = await queue.count();
    for (const value of ['soon', '0s', '-5s', '10d']) {
      for (const [path, body] of [
        ['/v1/jobs', { model: 'cars-mpg', features: CAR }],
        ['/v1/predict', { model: 'cars-mpg', features: CAR }],
        ['/v1/batch-predict', { model: 'cars-mpg', requests: [{ features: CAR }] }],
      ] as const) {
        const res = await stack.post(path, body, { 'cancel-after': value });
        expect(res.status, `${path} ${value}`).toBe(422);
        expect(await res.json()).toMatchObject({ code: 'validation_failed', errors: [{ field: 'cancel-after' }] });
      }
    }
    expect(await queue.count()).toBe(before);
  });
});
