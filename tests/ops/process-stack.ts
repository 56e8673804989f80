import { KeyStore, SCOPES } from '@quern/api';
import {
  APP_ENTRY,
  freePort,
  ServiceProcess,
  seedTestKeys,
  startTestRedis,
  TEST_API_KEY,
  TEST_JWT_KEYS,
  type TestRedis,
  waitForHttp,
} from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import { Redis } from 'ioredis';

/** An API and a worker as separate processes on a Redis of their own, the way they are deployed. */
export interface ProcessStack {
  redis: TestRedis;
  api: ServiceProcess;
  worker: ServiceProcess;
  apiPort: number;
  workerPort: number;
  apiUrl: string;
  workerUrl: string;
  /** A free-tier key (scope `jobs:read`) for rate-limit traffic. */
  freeKey: string;
  stop(): Promise<void>;
}

export interface ProcessStackOptions {
  /** Environment of both processes, over the defaults. */
  env?: Record<string, string>;
  /** Environment of the API only. */
  apiEnv?: Record<string, string>;
  /** Environment of the worker only. */
  workerEnv?: Record<string, string>;
  /** Ports to listen on (free ones otherwise), for a scraper configured before the stack starts. */
  apiPort?: number;
  workerPort?: number;
}

export const JSON_HEADERS = { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY };

/**
 * Starts Redis, then the API and a worker in parallel, and resolves once the API is ready (it has
 * seen the worker's heartbeat) and the worker's metrics port answers. Whatever started is stopped
 * again if start-up fails.
 */
export async function startProcessStack(options: ProcessStackOptions = {}): Promise<ProcessStack> {
  const redis = await startTestRedis();
  const started: ServiceProcess[] = [];
  const stop = async () => {
    await Promise.all(started.map((p) => p.stop('SIGTERM', 15_000)));
    await redis.close();
  };
  try {
    const client = new Redis(redis.url);
    const keys = new KeyStore(client, new KeySpace(redis.prefix));
    await seedTestKeys(keys, SCOPES);
    const { key: freeKey } = await keys.create({ name: 'ops-free', tier: 'free', scopes: ['jobs:read'] });
    client.disconnect();

    const apiPort = options.apiPort ?? (await freePort());
    const workerPort = options.workerPort ?? (await freePort());
    const env = {
      NODE_ENV: 'test',
      LOG_LEVEL: 'info',
      REDIS_URL: redis.url,
      QUERN_REDIS_PREFIX: redis.prefix,
      QUERN_JWT_KEYS: TEST_JWT_KEYS,
      QUERN_WORKER_THREADS: '2',
      QUERN_HEARTBEAT_INTERVAL_MS: '500',
      QUERN_HEARTBEAT_TTL_MS: '3000',
      QUERN_WAIT_POLL_INTERVAL_MS: '250',
      QUERN_SHUTDOWN_TIMEOUT_MS: '5000',
      PORT: String(apiPort),
      QUERN_WORKER_PORT: String(workerPort),
      ...options.env,
    };
    const worker = new ServiceProcess({
      name: 'worker',
      entry: APP_ENTRY.worker,
      env: { ...env, ...options.workerEnv },
    });
    started.push(worker);
    const api = new ServiceProcess({ name: 'api', entry: APP_ENTRY.api, env: { ...env, ...options.apiEnv } });
    started.push(api);
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    const workerUrl = `http://127.0.0.1:${workerPort}`;
    await Promise.all([waitForHttp(`${workerUrl}/ready`, 30_000), waitForHttp(`${apiUrl}/ready`, 30_000)]);
    return { redis, api, worker, apiPort, workerPort, apiUrl, workerUrl, freeKey, stop };
  } catch (err) {
    for (const p of started) process.stderr.write(`--- ${p.options.name}\n${p.lines.slice(-20).join('\n')}\n`);
    await stop();
    throw err;
  }
}

/** Polls `read` until `accept` holds for its value, or throws after `timeoutMs` with the last value seen. */
export async function pollUntil<T>(
  what: string,
  read: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs = 10_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      last = await read();
      if (accept(last)) return last;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const detail = last === undefined ? String(lastError) : JSON.stringify(last);
  throw new Error(`${what}: not reached within ${timeoutMs} ms (last: ${detail})`);
}
