import { KeyStore } from '@quern/api';
import {
  APP_ENTRY,
  freePort,
  ServiceProcess,
  startTestRedis,
  TEST_JWT_KEYS,
  type TestRedis,
  waitForHttp,
} from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let redis: TestRedis;
const apis: { process: ServiceProcess; url: string }[] = [];
let key: string;

beforeAll(async () => {
  redis = await startTestRedis();
  const client = new Redis(redis.url);
  ({ key } = await new KeyStore(client, new KeySpace(redis.prefix)).create({
    name: 'free-client',
    tier: 'free',
    scopes: ['jobs:read'],
  }));
  client.disconnect();
  for (const name of ['api-1', 'api-2']) {
    const port = await freePort();
    const process = new ServiceProcess({
      name,
      entry: APP_ENTRY.api,
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        REDIS_URL: redis.url,
        QUERN_REDIS_PREFIX: redis.prefix,
        QUERN_JWT_KEYS: TEST_JWT_KEYS,
        QUERN_RATE_FREE_PER_MINUTE: '100',
        QUERN_RATE_FREE_PER_HOUR: '100000',
        PORT: String(port),
      },
    });
    apis.push({ process, url: `http://127.0.0.1:${port}` });
  }
  await Promise.all(apis.map((a) => waitForHttp(`${a.url}/health`, 30_000)));
});

afterAll(async () => {
  await Promise.all(apis.map((a) => a.process.stop()));
  await redis?.close();
});

describe('rate limits across API processes', () => {
  it('two API processes on one Redis let exactly 100 of 1 000 concurrent requests through a limit of 100/min', async () => {
    const statuses = await Promise.all(
      Array.from({ length: 1000 }, async (_, i) => {
        const api = apis[i % 2] as { url: string };
        const res = await fetch(`${api.url}/v1/jobs/job_0000000000000000000000`, { headers: { 'x-api-key': key } });
        await res.arrayBuffer();
        return res.status;
      }),
    );
    const allowed = statuses.filter((s) => s === 404).length;
    const limited = statuses.filter((s) => s === 429).length;
    expect(allowed).toBe(100);
    expect(limited).toBe(900);
  });
});
