import { APP_ENTRY, freePort, ServiceProcess, TEST_API_KEY, TEST_JWT_KEYS, waitForHttp } from '@quern/devkit';

/**
 * API and worker processes started the way they are deployed (one process per role, each with its
 * own port), for the horizontal-scale tests. Every process this module starts is stopped by
 * `stopAll`.
 */
export interface WorkerHandle {
  process: ServiceProcess;
  /** The worker's id (`wrk_…`): BullMQ's worker name, recorded on each job as `processedBy`. */
  id: string;
  metricsUrl: string;
}

export interface ApiHandle {
  process: ServiceProcess;
  baseUrl: string;
}

/** Settings every process of a scale test shares: production-like, quiet, no rate limits. */
export function fleetEnv(redis: Record<string, string | undefined>): Record<string, string | undefined> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    QUERN_JWT_KEYS: TEST_JWT_KEYS,
    QUERN_SECRETS_KEY: 'scale-test-secrets-key-0123456789abcdef',
    // Thousands of requests from one client and one key.
    QUERN_RATE_PREMIUM_PER_MINUTE: '0',
    QUERN_RATE_PREMIUM_PER_HOUR: '0',
    QUERN_AUTH_FAILURES_PER_MINUTE: '100000',
    QUERN_WORKER_THREADS: '1',
    QUERN_HEARTBEAT_INTERVAL_MS: '500',
    QUERN_HEARTBEAT_TTL_MS: '3000',
    QUERN_WAIT_POLL_INTERVAL_MS: '250',
    // Keep every finished job, so the test can read each one's stored result.
    QUERN_RETAIN_COMPLETED_COUNT: '1000000',
    QUERN_SHUTDOWN_TIMEOUT_MS: '10000',
    ...redis,
  };
}

export class Fleet {
  readonly workers: WorkerHandle[] = [];
  api: ApiHandle | undefined;

  constructor(readonly env: Record<string, string | undefined>) {}

  async startApi(extra: Record<string, string> = {}): Promise<ApiHandle> {
    const port = await freePort();
    const proc = new ServiceProcess({
      name: 'api',
      entry: APP_ENTRY.api,
      env: { ...this.env, ...extra, PORT: String(port) },
    });
    this.api = { process: proc, baseUrl: `http://127.0.0.1:${port}` };
    await proc.waitForLog((l) => l.msg === 'api listening', 30_000);
    return this.api;
  }

  async startWorker(name: string, extra: Record<string, string> = {}): Promise<WorkerHandle> {
    const port = await freePort();
    const proc = new ServiceProcess({
      name,
      entry: APP_ENTRY.worker,
      env: { ...this.env, ...extra, QUERN_WORKER_PORT: String(port) },
    });
    const handle: WorkerHandle = { process: proc, id: '', metricsUrl: `http://127.0.0.1:${port}/metrics` };
    this.workers.push(handle);
    const started = await proc.waitForLog((l) => l.msg === 'worker started', 30_000);
    handle.id = String(started.worker_id);
    await waitForHttp(`http://127.0.0.1:${port}/ready`, 30_000);
    return handle;
  }

  /** Resolves once the API reports ready: Redis answers and a worker heartbeat is fresh. */
  async ready(): Promise<void> {
    if (!this.api) throw new Error('no API started');
    await waitForHttp(`${this.api.baseUrl}/ready`, 30_000);
  }

  async stopAll(): Promise<void> {
    await Promise.all([this.api?.process.stop(), ...this.workers.map((w) => w.process.stop('SIGTERM', 15_000))]);
  }
}

export const API_HEADERS = { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY };

/** Runs `task` over `items` with at most `limit` in flight; results keep the items' order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, task: (item: T, i: number) => Promise<R>) {
  const results = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i] as T, i);
    }
  });
  await Promise.all(lanes);
  return results;
}

export interface Submission {
  model: string;
  features: number[];
}

/** `POST /v1/jobs` for each submission, `concurrency` at a time; returns the job ids in order. */
export async function submitJobs(baseUrl: string, jobs: readonly Submission[], concurrency = 64): Promise<string[]> {
  return mapLimit(jobs, concurrency, async (job) => {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(`${baseUrl}/v1/jobs`, {
        method: 'POST',
        headers: API_HEADERS,
        body: JSON.stringify({ model: job.model, features: job.features }),
      });
      const body = (await res.json()) as { id?: string; code?: string };
      if (res.status === 202 && body.id) return body.id;
      // Nothing else is expected; a transient 503 (Redis busy) is retried a few times.
      if (res.status !== 503 || attempt >= 5) throw new Error(`POST /v1/jobs answered ${res.status}: ${body.code}`);
    }
  });
}

/** Polls `probe` until it returns a value, or throws after `timeoutMs` with `describe()`. */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  describe: () => Promise<string> | string,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${await describe()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Sum of a counter's samples in a Prometheus text exposition, filtered by label values. */
export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const matches = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (!matches) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
}
