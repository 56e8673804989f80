import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisServer, type RedisServerOptions } from './redis-server';

export interface TestRedis {
  url: string;
  /** A key prefix no other test uses. */
  prefix: string;
  /** The server this test started; undefined when REDIS_URL was given (it cannot be restarted then). */
  server: RedisServer | undefined;
  /** Removes this test's keys (given Redis) or stops the server (own Redis). */
  close(): Promise<void>;
}

/** A fresh key prefix for one test (letters only, safe in queue names and Cluster hash tags). */
export function uniquePrefix(label = 't'): string {
  return `${label}${randomBytes(5).toString('hex')}`;
}

/**
 * The Redis of an integration test: its own `redis-server` on a free port (so fault tests can
 * stop and restart it), or the one at REDIS_URL when set, with a unique prefix and cleanup of
 * only this test's keys; never a FLUSHALL.
 */
export async function startTestRedis(options: RedisServerOptions & { forceOwn?: boolean } = {}): Promise<TestRedis> {
  const prefix = uniquePrefix();
  const given = process.env.REDIS_URL;
  if (given && !options.forceOwn) {
    return {
      url: given,
      prefix,
      server: undefined,
      async close() {
        const client = new Redis(given, { lazyConnect: true, maxRetriesPerRequest: 1 });
        await client.connect();
        let cursor = '0';
        do {
          const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
          cursor = next;
          if (keys.length > 0) await client.unlink(...keys);
        } while (cursor !== '0');
        await client.quit();
      },
    };
  }
  const server = await RedisServer.start({ appendonly: false, ...options });
  return { url: server.url, prefix, server, close: () => server.stop() };
}
