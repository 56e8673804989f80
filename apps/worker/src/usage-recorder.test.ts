import { startTestRedis, type TestRedis } from '@quern/devkit';
import { hourOf, KeySpace, UsageRecorder } from '@quern/shared';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** The worker's usage writes: one turn's finished jobs, summed per key and hour before they go out. */

let redis: TestRedis;
let client: Redis;

beforeAll(async () => {
  // A server of its own: the test counts the commands it receives.
  redis = await startTestRedis({ forceOwn: true });
  client = new Redis(redis.url);
});

afterAll(async () => {
  client.disconnect();
  await redis.close();
});

const calls = async (command: string): Promise<number> =>
  Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await client.info('commandstats'))?.[1] ?? 0);

describe('UsageRecorder', () => {
  it('sums the jobs of one turn per key and hour: the same totals, a few commands per key', async () => {
    const keys = new KeySpace(redis.prefix);
    const recorder = new UsageRecorder(client, keys, 1);
    const at = Date.UTC(2026, 11, 3, 10, 30);
    const before = { hincrby: await calls('hincrby'), expire: await calls('expire') };
    for (let i = 0; i < 6; i++) recorder.record({ owner: 'key_a', at, succeeded: true, rows: 10, inferenceMs: 1.5 });
    recorder.record({ owner: 'key_a', at, succeeded: false, rows: 3, inferenceMs: 0 });
    recorder.record({ owner: 'key_b', at, succeeded: true, rows: 2, inferenceMs: 0.25 });
    // The previous hour is a hash of its own.
    recorder.record({ owner: 'key_a', at: at - 3_600_000, succeeded: true, rows: 1, inferenceMs: 1 });

    const hash = (owner: string, ms: number) => client.hgetall(keys.usage(owner, hourOf(ms)));
    await expect.poll(async () => (await hash('key_b', at)).jobs, { timeout: 5_000 }).toBe('1');
    expect(await hash('key_a', at)).toEqual({ jobs: '6', rows: '60', inference_ms: '9', failed_jobs: '1' });
    expect(await hash('key_b', at)).toEqual({ jobs: '1', rows: '2', inference_ms: '0.25' });
    expect(await hash('key_a', at - 3_600_000)).toEqual({ jobs: '1', rows: '1', inference_ms: '1' });
    const ttl = await client.ttl(keys.usage('key_a', hourOf(at)));
    expect(ttl).toBeGreaterThan(86_000);
    expect(ttl).toBeLessThanOrEqual(86_400);
    // Three hashes: jobs and rows for each (the failure once more for key_a), one EXPIRE each;
    // one command per job would have been 17 HINCRBY and 9 EXPIRE.
    expect((await calls('hincrby')) - before.hincrby).toBe(7);
    expect((await calls('expire')) - before.expire).toBe(3);
  });
});
