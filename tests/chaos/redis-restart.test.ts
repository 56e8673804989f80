import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomRows } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

let harness: Harness;

beforeAll(async () => {
  harness = await Harness.start({ workers: 1 });
});

afterAll(async () => {
  await harness?.close();
});

describe('fault 3: Redis restarted (SHUTDOWN, then started again on its AOF) while jobs flow', () => {
  it('keeps every job the API acknowledged, completes them all, and API and worker recover by themselves', async () => {
    const rows = randomRows(3_000, 6, 5, 1).map((r) => [4 + Math.round(r[0] as number), 150, 95, 2600, 15, 1975]);
    const acknowledged: string[] = [];
    const refused: number[] = [];
    const statuses = new Map<number, number>();
    let restartedAt = 0;
    let firstAfterRestart = 0;
    const apiPid = harness.apis[0]?.process.pid;
    const workerPid = harness.workers[0]?.pid;

    const submitter = (async () => {
      for (let i = 0; i < rows.length; i++) {
        const res = await harness
          .fetch('/v1/jobs', {
            method: 'POST',
            body: JSON.stringify({ features: [...(rows[i] as number[]).slice(0, 5), 1970 + (i % 13)] }),
          })
          .catch(() => undefined);
        const status = res?.status ?? 0;
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status === 202) {
          acknowledged.push(((await (res as Response).json()) as { id: string }).id);
          if (restartedAt && !firstAfterRestart) firstAfterRestart = Date.now();
        } else {
          refused.push(status);
          await res?.arrayBuffer();
        }
      }
    })();

    await expect.poll(() => acknowledged.length, { timeout: 20_000, interval: 10 }).toBeGreaterThan(500);
    // SHUTDOWN: Redis fsyncs its AOF and exits; then it comes back on the same port and data.
    await promisify(execFile)('redis-cli', ['-p', String(harness.redis.port), 'SHUTDOWN']).catch(() => undefined);
    await expect.poll(() => harness.redis.running, { timeout: 10_000, interval: 20 }).toBe(false);
    const acknowledgedBefore = acknowledged.length;
    await expect.poll(() => refused.length, { timeout: 10_000, interval: 20 }).toBeGreaterThan(10);
    await harness.redis.restart();
    restartedAt = Date.now();
    await submitter;

    const queue = harness.queue('cars-mpg');
    await expect
      .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 60_000, interval: 200 })
      .toBeGreaterThanOrEqual(acknowledged.length);
    const states = await Promise.all(acknowledged.map((id) => queue.getJobState(id)));
    const lost = states.filter((s) => s !== 'completed').length;
    report('fault-3-redis-restart', {
      submitted: rows.length,
      acknowledged: acknowledged.length,
      acknowledged_before_shutdown: acknowledgedBefore,
      refused_while_down: refused.length,
      refused_statuses: [...new Set(refused)].join(','),
      completed: states.filter((s) => s === 'completed').length,
      lost,
      recovery_ms: firstAfterRestart - restartedAt,
      api_restarted: harness.apis[0]?.process.pid !== apiPid,
      worker_restarted: harness.workers[0]?.pid !== workerPid,
    });
    expect(lost).toBe(0);
    expect(new Set(refused)).toEqual(new Set([503]));
    expect(harness.apis[0]?.process.running).toBe(true);
    expect(harness.workers[0]?.running).toBe(true);
    expect(harness.apis[0]?.process.pid).toBe(apiPid);
    expect(harness.workers[0]?.pid).toBe(workerPid);
  });
});
