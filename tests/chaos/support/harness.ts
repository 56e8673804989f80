import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KeyStore, SCOPES } from '@quern/api';
import {
  APP_ENTRY,
  freePort,
  REPO_ROOT,
  RedisServer,
  type RedisServerOptions,
  ServiceProcess,
  seedTestKeys,
  TEST_API_KEY,
  TEST_JWT_KEYS,
  uniquePrefix,
  waitForHttp,
} from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

export const RESULTS_DIR = join(REPO_ROOT, 'tests', 'chaos', 'results');

export interface HarnessOptions {
  redis?: RedisServerOptions;
  /** Environment of every API and worker process (on top of the defaults). */
  env?: Record<string, string>;
  apis?: number;
  workers?: number;
  workerEnv?: Record<string, string>;
}

/**
 * Redis (its own redis-server, AOF on, so it can be stopped, killed and restarted), API processes
 * and worker processes, the way they are deployed, for fault-injection tests.
 */
export class Harness {
  readonly apis: { process: ServiceProcess; url: string }[] = [];
  readonly workers: ServiceProcess[] = [];
  private readonly clients: Redis[] = [];
  private workerCount = 0;

  private constructor(
    readonly redis: RedisServer,
    readonly prefix: string,
    private readonly options: HarnessOptions,
  ) {}

  static async start(options: HarnessOptions = {}): Promise<Harness> {
    const redis = await RedisServer.start({ appendonly: true, appendfsync: 'everysec', ...options.redis });
    const harness = new Harness(redis, uniquePrefix('c'), options);
    const client = harness.client();
    await seedTestKeys(new KeyStore(client, new KeySpace(harness.prefix)), SCOPES);
    for (let i = 0; i < (options.apis ?? 1); i++) await harness.startApi();
    for (let i = 0; i < (options.workers ?? 1); i++) await harness.startWorker();
    if ((options.workers ?? 1) > 0) await waitForHttp(`${harness.url}/ready`, 30_000);
    return harness;
  }

  get url(): string {
    return (this.apis[0] as { url: string }).url;
  }

  get env(): Record<string, string> {
    return {
      NODE_ENV: 'test',
      LOG_LEVEL: 'info',
      REDIS_URL: this.redis.url,
      QUERN_REDIS_PREFIX: this.prefix,
      QUERN_JWT_KEYS: TEST_JWT_KEYS,
      QUERN_RATE_PREMIUM_PER_MINUTE: '0',
      QUERN_RATE_PREMIUM_PER_HOUR: '0',
      QUERN_AUTH_FAILURES_PER_MINUTE: '100000',
      QUERN_HEARTBEAT_INTERVAL_MS: '500',
      QUERN_HEARTBEAT_TTL_MS: '3000',
      QUERN_WORKER_THREADS: '1',
      ...this.options.env,
    };
  }

  async startApi(): Promise<{ process: ServiceProcess; url: string }> {
    const port = await freePort();
    const process = new ServiceProcess({
      name: `api-${this.apis.length + 1}`,
      entry: APP_ENTRY.api,
      env: { ...this.env, PORT: String(port) },
    });
    const api = { process, url: `http://127.0.0.1:${port}` };
    this.apis.push(api);
    await waitForHttp(`${api.url}/health`, 30_000);
    return api;
  }

  /** Starts a worker; waits until it has loaded its models and started its consumers. */
  async startWorker(extraEnv: Record<string, string> = {}, waitUntilStarted = true): Promise<ServiceProcess> {
    const worker = new ServiceProcess({
      name: `worker-${++this.workerCount}`,
      entry: APP_ENTRY.worker,
      env: { ...this.env, QUERN_WORKER_PORT: String(await freePort()), ...this.options.workerEnv, ...extraEnv },
    });
    this.workers.push(worker);
    if (waitUntilStarted) await worker.waitForLog((l) => l.msg === 'worker started', 60_000);
    return worker;
  }

  /** A Redis client of the test's own, closed with the harness. */
  client(): Redis {
    const client = new Redis(this.redis.url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined);
    this.clients.push(client);
    return client;
  }

  queue(model: string): Queue {
    return new Queue(`infer-${model}`, { connection: this.client(), prefix: this.prefix });
  }

  fetch(path: string, init: RequestInit = {}, api = 0): Promise<Response> {
    const target = this.apis[api] as { url: string };
    return fetch(`${target.url}${path}`, {
      ...init,
      headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...(init.headers ?? {}) },
    });
  }

  async close(): Promise<void> {
    await Promise.all([
      ...this.apis.map((a) => a.process.stop('SIGKILL')),
      ...this.workers.map((w) => w.stop('SIGKILL')),
    ]);
    for (const c of this.clients) c.disconnect();
    await this.redis.stop();
  }
}

/**
 * Prints a test's figures. With CHAOS_RECORD=1 (`pnpm test:chaos:record`) it also records them in
 * tests/chaos/results/latest.json, the published figures of docs/reliability.md; a plain test run
 * leaves that tracked file alone.
 */
export function report(test: string, figures: Record<string, number | string | boolean>): void {
  process.stdout.write(
    `\n[chaos] ${test}\n${Object.entries(figures)
      .map(([k, v]) => `  ${k}: ${v}`)
      .join('\n')}\n`,
  );
  if (process.env.CHAOS_RECORD !== '1') return;
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, 'latest.json');
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    // first result
  }
  all[test] = { ...figures, recorded_at: new Date().toISOString() };
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
}

/** Runs `task` over `items` with at most `limit` in flight. */
export async function pool<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await task(items[i] as T, i);
      }
    }),
  );
  return results;
}
