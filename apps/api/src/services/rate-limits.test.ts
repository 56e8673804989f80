import { startTestRedis, type TestRedis, testConfig } from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import { Redis } from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from './principal';
import { RateLimits } from './rate-limits';

let server: TestRedis;
let redis: Redis;

const principal = (id: string): Principal => ({
  id,
  keyPrefix: 'qk_test',
  name: id,
  tier: 'free',
  scopes: new Set(),
  via: 'api_key',
});

beforeAll(async () => {
  server = await startTestRedis();
  redis = new Redis(server.url);
});

afterAll(async () => {
  redis.disconnect();
  await server.close();
});

function limits(perMinute: number, perHour: number) {
  const config = testConfig(server, {
    QUERN_RATE_FREE_PER_MINUTE: String(perMinute),
    QUERN_RATE_FREE_PER_HOUR: String(perHour),
  });
  return new RateLimits(redis, new KeySpace(server.prefix), config);
}

describe('RateLimits (both windows in one script)', () => {
  it('counts a burst exactly: of 50 concurrent requests a budget of 7 lets 7 through, and refusals cost nothing', async () => {
    const rl = limits(7, 100);
    const decisions = await Promise.all(Array.from({ length: 50 }, () => rl.consume(principal('key_burst'))));
    expect(decisions.filter((d) => d.retryAfter === undefined)).toHaveLength(7);
    const refused = decisions.find((d) => d.retryAfter !== undefined);
    expect(refused?.retryAfter).toBeGreaterThanOrEqual(1);
    expect(refused?.retryAfter).toBeLessThanOrEqual(60);
    // The hour window counted the 7 served only.
    expect(refused?.headers.ratelimit).toMatch(/^"minute";r=0;t=\d+, "hour";r=93;t=\d+$/);
  });

  it('gives a counter that has no expiry one, so a full window cannot refuse forever', async () => {
    const rl = limits(3, 0);
    const key = `${new KeySpace(server.prefix).rateLimit('free:minute')}:key_noexpiry`;
    await redis.set(key, '9');
    const decision = await rl.consume(principal('key_noexpiry'));
    expect(decision.retryAfter).toBeDefined();
    const ttl = await redis.pttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it('reads the counters rate-limiter-flexible wrote (a rolling upgrade keeps the counts)', async () => {
    const keys = new KeySpace(server.prefix);
    const old = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix: keys.rateLimit('free:minute'),
      points: 5,
      duration: 60,
    });
    for (let i = 0; i < 4; i++) await old.consume('key_upgrade', 1);
    const rl = limits(5, 0);
    const first = await rl.consume(principal('key_upgrade'));
    expect(first.retryAfter).toBeUndefined();
    expect(first.headers.ratelimit).toMatch(/^"minute";r=0;/);
    expect((await rl.consume(principal('key_upgrade'))).retryAfter).toBeDefined();
  });
});
