import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

let harness: Harness;

beforeAll(async () => {
  // A key cache that outlives the test: the token request below must find the key without Redis.
  harness = await Harness.start({ workers: 1, env: { QUERN_KEY_CACHE_TTL_MS: '60000' } });
});

afterAll(async () => {
  await harness?.close();
});

async function timed(path: string, init: RequestInit = {}) {
  const started = performance.now();
  const res = await harness.fetch(path, { ...init, signal: AbortSignal.timeout(10_000) });
  const body = await res.text();
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    retryAfter: res.headers.get('retry-after'),
    body,
    ms: performance.now() - started,
  };
}

describe('fault 4: Redis down', () => {
  it('answers 503 problem+json within 2 s, reports not ready, stays alive, and recovers without a restart', async () => {
    const car = JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] });
    expect((await timed('/v1/jobs', { method: 'POST', body: car })).status).toBe(202);
    await harness.redis.stop({ keepDir: true });

    const results = [
      await timed('/v1/jobs', { method: 'POST', body: car }),
      await timed('/v1/predict', { method: 'POST', body: car }),
      await timed('/v1/jobs/job_0000000000000000000000'),
      // Bull Board's own error answers are replaced by ours.
      await timed('/admin/queues/api/queues'),
      // A key this API has not seen lately must be looked up in Redis.
      await timed('/v1/auth/token', {
        method: 'POST',
        body: '{}',
        headers: { 'x-api-key': 'qk_notcachedKey0000000000000000000000000' },
      }),
    ];
    // A key authenticated in the last QUERN_KEY_CACHE_TTL_MS is known without Redis; with no rate
    // budget configured for its tier (as in this harness), minting a token needs nothing else.
    const token = await timed('/v1/auth/token', { method: 'POST', body: '{}' });
    const ready = await timed('/ready');
    const health = await timed('/health');
    report('fault-4-redis-down', {
      statuses: results.map((r) => r.status).join(','),
      max_answer_ms: Math.round(Math.max(...results.map((r) => r.ms))),
      ready_status: ready.status,
      health_status: health.status,
    });
    for (const r of results) {
      expect(r.status).toBe(503);
      expect(r.type).toBe('application/problem+json');
      expect(Number(r.retryAfter)).toBeGreaterThan(0);
      expect(r.ms).toBeLessThan(2_000);
      expect(r.body).not.toMatch(/ioredis|ECONNREFUSED|Stream isn't writeable|\/work\/|at [A-Za-z]+ \(/);
    }
    expect(token.status).toBe(200);
    expect(JSON.parse(token.body)).toHaveProperty('access_token');
    expect(ready.status).toBe(503);
    expect(health.status).toBe(200);

    await harness.redis.restart();
    await expect
      .poll(async () => (await timed('/v1/jobs', { method: 'POST', body: car })).status, {
        timeout: 20_000,
        interval: 200,
      })
      .toBe(202);
    await expect.poll(async () => (await timed('/ready')).status, { timeout: 20_000, interval: 200 }).toBe(200);
  });
});
