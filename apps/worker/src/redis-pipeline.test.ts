import { startTestRedis, type TestRedis } from '@quern/devkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisPipeline } from './redis-pipeline';

let server: TestRedis;
let redis: Redis;
let admin: Redis;

/** Calls of one command since the last CONFIG RESETSTAT, from INFO commandstats. */
async function calls(command: string): Promise<number> {
  const info = await admin.info('commandstats');
  return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
}

beforeAll(async () => {
  // A server of its own: the test changes maxmemory.
  server = await startTestRedis({ forceOwn: true });
  redis = new Redis(server.url);
  admin = new Redis(server.url);
});

afterAll(async () => {
  redis.disconnect();
  admin.disconnect();
  await server.close();
});

describe('RedisPipeline', () => {
  it('reads of one turn go out as one MGET, each caller getting its own values', async () => {
    const io = new RedisPipeline(redis, 60);
    await redis.mset(`${server.prefix}:a`, '1', `${server.prefix}:c`, '3');
    await admin.config('RESETSTAT');
    const [first, second] = await Promise.all([
      io.mget([`${server.prefix}:a`, `${server.prefix}:b`]),
      io.mget([`${server.prefix}:c`]),
    ]);
    expect(first).toEqual(['1', null]);
    expect(second).toEqual(['3']);
    expect(await calls('mget')).toBe(1);
  });

  it('writes of one tick are stored with the TTL, and the reply is published', async () => {
    const io = new RedisPipeline(redis, 60);
    const subscriber = new Redis(server.url);
    const heard = new Promise<string>((resolve) => subscriber.on('message', (_channel, message) => resolve(message)));
    await subscriber.subscribe(`${server.prefix}:reply`);
    await admin.config('RESETSTAT');
    await Promise.all([
      io.setEx([[`${server.prefix}:x`, 'X']], { channel: `${server.prefix}:reply`, message: 'done' }),
      io.setEx([[`${server.prefix}:y`, 'Y']]),
    ]);
    expect(await heard).toBe('done');
    expect(await redis.mget(`${server.prefix}:x`, `${server.prefix}:y`)).toEqual(['X', 'Y']);
    const ttl = await redis.ttl(`${server.prefix}:x`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
    expect(await calls('set')).toBe(2);
    subscriber.disconnect();
  });

  it('reports the commands Redis refuses one by one (OOM) instead of dropping them silently', async () => {
    const refused: { errors: Error[]; commands: number }[] = [];
    const io = new RedisPipeline(redis, 60, (errors, commands) => refused.push({ errors, commands }));
    await admin.config('SET', 'maxmemory', '1');
    try {
      // The writes resolve: the cache is best effort and the job's result is safe in BullMQ.
      await Promise.all([io.setEx([[`${server.prefix}:oom1`, 'v']]), io.setEx([[`${server.prefix}:oom2`, 'v']])]);
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    expect(refused).toHaveLength(1);
    expect(refused[0]?.commands).toBe(2);
    expect(refused[0]?.errors).toHaveLength(2);
    expect(refused[0]?.errors[0]?.message).toMatch(/OOM/);
    expect(await redis.exists(`${server.prefix}:oom1`)).toBe(0);
  });
});
