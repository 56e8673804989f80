import { randomRows } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, pool, report } from './support/harness';

let harness: Harness;

beforeAll(async () => {
  // No worker yet: jobs pile up until Redis is full.
  harness = await Harness.start({ workers: 0, redis: { appendonly: false, maxmemory: '12mb' } });
});

afterAll(async () => {
  await harness?.close();
});

describe('fault 8: Redis at maxmemory with noeviction', () => {
  it('answers 503 with Retry-After, never 500, and loses nothing it acknowledged', async () => {
    const rows = randomRows(6_000, 256, 8);
    const acknowledged: string[] = [];
    const statuses = new Map<number, number>();
    const bodies: string[] = [];
    await pool(rows, 16, async (features) => {
      const res = await harness.fetch('/v1/jobs', {
        method: 'POST',
        body: JSON.stringify({ model: 'mlp-large', features }),
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 202) acknowledged.push(((await res.json()) as { id: string }).id);
      else {
        expect(res.headers.get('content-type')).toBe('application/problem+json');
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
        bodies.push(await res.text());
      }
    });
    report('fault-8-maxmemory', {
      submitted: rows.length,
      acknowledged: acknowledged.length,
      refused_503: statuses.get(503) ?? 0,
      status_500: statuses.get(500) ?? 0,
      other_statuses: [...statuses.keys()].filter((s) => s !== 202 && s !== 503).join(',') || 'none',
    });
    expect(statuses.get(503) ?? 0).toBeGreaterThan(0);
    expect([...statuses.keys()].sort()).toEqual([202, 503]);
    // The detail tells what to do, never Redis' own words (request ids are random: only the detail is checked).
    const odd = bodies.filter((b) => {
      const problem = JSON.parse(b) as { code: string; detail: string };
      return problem.code !== 'redis_unavailable' || /OOM|maxmemory|ioredis|script/.test(problem.detail);
    });
    expect(odd.slice(0, 3)).toEqual([]);

    // Make room and start a worker: everything acknowledged completes.
    await harness.client().config('SET', 'maxmemory', '0');
    await harness.startWorker();
    const queue = harness.queue('mlp-large');
    await expect
      .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 60_000, interval: 200 })
      .toBeGreaterThanOrEqual(acknowledged.length);
    const states = await Promise.all(acknowledged.map((id) => queue.getJobState(id)));
    expect(states.filter((s) => s !== 'completed')).toEqual([]);
  });
});
