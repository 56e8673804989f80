import { startTestRedis, type TestRedis } from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EndpointBreaker, isEndpointFailure } from './webhook-breaker';

let redis: TestRedis;
let client: Redis;
let keys: KeySpace;
let n = 0;
const origin = () => `https://receiver-${++n}.example:443`;

beforeAll(async () => {
  redis = await startTestRedis({ forceOwn: true });
  client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  keys = new KeySpace(redis.prefix);
});

afterAll(async () => {
  client?.disconnect();
  await redis?.close();
});

const options = { failures: 3, openMs: 1_000, probeMs: 500 };

describe('EndpointBreaker', () => {
  it('opens after the configured consecutive failures; a success in between starts the count again', async () => {
    const breaker = new EndpointBreaker(client, keys, options);
    const o = origin();
    const t = 1_000_000;
    expect(await breaker.failed(o, t)).toBeUndefined();
    expect(await breaker.failed(o, t)).toBeUndefined();
    const verdict = await breaker.check(o, t);
    expect(verdict).toEqual({ kind: 'closed', failures: 2 });
    await breaker.succeeded(o, verdict);
    expect(await breaker.check(o, t)).toEqual({ kind: 'closed', failures: 0 });
    expect(await breaker.failed(o, t)).toBeUndefined();
    expect(await breaker.failed(o, t)).toBeUndefined();
    expect(await breaker.failed(o, t)).toEqual({ openedUntil: t + 1_000 });
    expect(await breaker.check(o, t + 999)).toEqual({ kind: 'open', until: t + 1_000 });
    // A delivery that was already in flight failing now changes nothing.
    expect(await breaker.failed(o, t + 500)).toBeUndefined();
    expect(await breaker.check(o, t + 999)).toEqual({ kind: 'open', until: t + 1_000 });
  });

  it('lets one probe through when the open period ends; a failed probe doubles the period, a success closes', async () => {
    const breaker = new EndpointBreaker(client, keys, options);
    const o = origin();
    const t = 2_000_000;
    for (let i = 0; i < 3; i++) await breaker.failed(o, t);
    const half = t + 1_000;
    expect(await breaker.check(o, half)).toEqual({ kind: 'probe' });
    // While the probe runs, others wait for it (at most probeMs).
    expect(await breaker.check(o, half + 10)).toEqual({ kind: 'probing', until: half + 500 });
    expect(await breaker.failed(o, half + 100)).toEqual({ openedUntil: half + 100 + 2_000 });
    const second = half + 100 + 2_000;
    expect(await breaker.check(o, second - 1)).toEqual({ kind: 'open', until: second });
    // A probe that never reports (its worker died) lets another probe after probeMs.
    expect(await breaker.check(o, second)).toEqual({ kind: 'probe' });
    expect(await breaker.check(o, second + 500)).toEqual({ kind: 'probe' });
    await breaker.succeeded(o, { kind: 'probe' });
    expect(await breaker.check(o, second + 600)).toEqual({ kind: 'closed', failures: 0 });
    expect(await client.exists(keys.webhookBreaker(o))).toBe(0);
  });

  it('caps the doubling at 16× the open period, and forgets an idle failure count', async () => {
    const breaker = new EndpointBreaker(client, keys, options);
    const o = origin();
    let t = 3_000_000;
    for (let i = 0; i < 3; i++) await breaker.failed(o, t);
    const periods: number[] = [];
    for (let i = 0; i < 6; i++) {
      const until = (await breaker.check(o, t)) as { kind: 'open'; until: number };
      t = until.until;
      expect(await breaker.check(o, t)).toEqual({ kind: 'probe' });
      const reopened = await breaker.failed(o, t);
      periods.push((reopened?.openedUntil ?? 0) - t);
    }
    expect(periods).toEqual([2_000, 4_000, 8_000, 16_000, 16_000, 16_000]);
    const ttl = await client.pttl(keys.webhookBreaker(o));
    expect(ttl).toBeGreaterThan(16_000);
    expect(ttl).toBeLessThanOrEqual(16_000 + 10 * 60 * 1000);
  });

  it('is off with failures = 0, and needs no Redis then', async () => {
    const breaker = new EndpointBreaker(client, keys, { ...options, failures: 0 });
    const o = origin();
    for (let i = 0; i < 10; i++) expect(await breaker.failed(o)).toBeUndefined();
    expect(await breaker.check(o)).toEqual({ kind: 'closed', failures: 0 });
    expect(await client.exists(keys.webhookBreaker(o))).toBe(0);
  });

  it('counts timeouts, connection failures, 5xx and 429 against the receiver; other answers and refusals not', () => {
    expect(isEndpointFailure(0, { permanent: false })).toBe(true);
    expect(isEndpointFailure(0, { permanent: true })).toBe(false);
    expect(isEndpointFailure(503, undefined)).toBe(true);
    expect(isEndpointFailure(429, undefined)).toBe(true);
    for (const status of [200, 204, 302, 400, 404, 410]) expect(isEndpointFailure(status, undefined)).toBe(false);
  });

  it('judges a URL by its origin', () => {
    expect(EndpointBreaker.originOf('https://Hooks.Example.com/a/b?c')).toBe('https://hooks.example.com');
    expect(EndpointBreaker.originOf('http://127.0.0.1:9000/hook')).toBe('http://127.0.0.1:9000');
    expect(EndpointBreaker.originOf('not a url')).toBeUndefined();
  });
});
