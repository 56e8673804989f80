import { INFERENCE_JOB_NAME, inferenceJobOptions, loadConfig, newId } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

const TOTAL = 100_000;
const KEEP = 1_000;
let harness: Harness;

beforeAll(async () => {
  harness = await Harness.start({
    workers: 1,
    redis: { appendonly: false },
    env: { QUERN_RETAIN_COMPLETED_COUNT: String(KEEP), QUERN_WORKER_THREADS: '1' },
  });
});

afterAll(async () => {
  await harness?.close();
});

const usedMemory = async (client: ReturnType<Harness['client']>) =>
  Number(/used_memory:(\d+)/.exec((await client.info('memory')) as string)?.[1]);

describe('fault 7: retention keeps Redis memory flat', () => {
  it(`leaves at most ${KEEP} finished jobs after ${TOTAL / 1000}k jobs, and memory stops growing`, async () => {
    const queue = harness.queue('cars-mpg');
    const client = harness.client();
    // The same retention options the API puts on every job.
    const options = inferenceJobOptions(loadConfig({ ...harness.env }));
    const started = performance.now();
    const samples: { jobs: number; used: number }[] = [];
    const chunk = 5_000;
    for (let sent = 0; sent < TOTAL; sent += chunk) {
      const now = Date.now();
      await queue.addBulk(
        Array.from({ length: chunk }, (_, i) => ({
          name: INFERENCE_JOB_NAME,
          data: {
            v: 1 as const,
            model: 'cars-mpg',
            model_version: '1.0.0',
            // 500 distinct inputs: the result cache stays small, what grows would be the jobs.
            rows: [[4, 100 + ((sent + i) % 500), 90, 2300, 15, 1975]],
            mode: 'async' as const,
            owner: 'key_chaos',
            request_id: newId('req'),
            created_at: now,
            deadline_at: now + 3_600_000,
            priority: 1,
          },
          opts: { jobId: newId('job'), priority: 1, ...options },
        })),
      );
      // Each chunk drained before the sample, so memory shows what retention keeps, not what is
      // queued or in flight (a sample taken mid-drain also counts the clients' buffers).
      await expect
        .poll(
          async () => {
            const counts = await queue.getJobCounts('prioritized', 'active');
            return (counts.prioritized ?? 0) + (counts.active ?? 0);
          },
          { timeout: 60_000, interval: 100 },
        )
        .toBe(0);
      samples.push({ jobs: sent + chunk, used: await usedMemory(client) });
    }
    await expect
      .poll(async () => (await queue.getJobCounts('prioritized', 'active')).prioritized, {
        timeout: 60_000,
        interval: 100,
      })
      .toBe(0);
    await expect.poll(() => queue.getActiveCount(), { timeout: 30_000, interval: 100 }).toBe(0);
    const counts = await queue.getJobCounts('completed', 'failed');
    const seconds = (performance.now() - started) / 1000;
    const at = (n: number) => samples.find((s) => s.jobs >= n)?.used ?? 0;
    const last = samples[samples.length - 1]?.used ?? 0;
    report('fault-7-retention', {
      jobs: TOTAL,
      retained_completed: counts.completed ?? 0,
      retain_count: KEEP,
      failed: counts.failed ?? 0,
      used_memory_mb_at_20k: (at(20_000) / 1e6).toFixed(1),
      used_memory_mb_at_50k: (at(50_000) / 1e6).toFixed(1),
      used_memory_mb_at_100k: (last / 1e6).toFixed(1),
      jobs_per_second: Math.round(TOTAL / seconds),
    });
    expect(counts.completed).toBeLessThanOrEqual(KEEP);
    expect(counts.failed).toBe(0);
    // Flat: the last 80 000 jobs added less than 25% to what the first 20 000 left.
    expect(last).toBeLessThan(at(20_000) * 1.25);
  });
});
