import { KeyStore, SCOPES } from '@quern/api';
import { QuernClient } from '@quern/client';
import {
  APP_ENTRY,
  freePort,
  randomRows,
  ServiceProcess,
  seedTestKeys,
  startTestRedis,
  TEST_API_KEY,
  TEST_JWT_KEYS,
  type TestRedis,
  waitForHttp,
} from '@quern/devkit';
import { INFERENCE_JOB_NAME, KeySpace, newId } from '@quern/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';

/**
 * API and workers as separate processes on one Redis, the way they are deployed. Each test starts
 * the processes it needs on a Redis of its own (two of them stop processes on purpose), so any
 * test runs alone and in any order.
 */
interface Processes {
  redis: TestRedis;
  env: Record<string, string>;
  api: ServiceProcess | undefined;
  baseUrl: string;
  workers: ServiceProcess[];
  startWorker(name: string): Promise<ServiceProcess>;
}

const started: Processes[] = [];

async function startProcesses(options: { api: boolean }): Promise<Processes> {
  const redis = await startTestRedis();
  const client = new Redis(redis.url);
  await seedTestKeys(new KeyStore(client, new KeySpace(redis.prefix)), SCOPES);
  client.disconnect();
  const port = await freePort();
  const env = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    REDIS_URL: redis.url,
    QUERN_REDIS_PREFIX: redis.prefix,
    QUERN_JWT_KEYS: TEST_JWT_KEYS,
    QUERN_WORKER_THREADS: '2',
    QUERN_HEARTBEAT_INTERVAL_MS: '500',
    QUERN_HEARTBEAT_TTL_MS: '3000',
    QUERN_SHUTDOWN_TIMEOUT_MS: '20000',
    QUERN_API_SHUTDOWN_GRACE_MS: '1000',
    PORT: String(port),
  };
  const procs: Processes = {
    redis,
    env,
    api: undefined,
    baseUrl: `http://127.0.0.1:${port}`,
    workers: [],
    async startWorker(name) {
      const worker = new ServiceProcess({
        name,
        entry: APP_ENTRY.worker,
        // Per-job lines are debug-level (kept off the hot path in production).
        env: { ...env, QUERN_WORKER_PORT: String(await freePort()), LOG_LEVEL: 'debug' },
      });
      procs.workers.push(worker);
      await worker.waitForLog((l) => l.msg === 'worker started', 30_000);
      return worker;
    },
  };
  started.push(procs);
  if (options.api) procs.api = new ServiceProcess({ name: 'api', entry: APP_ENTRY.api, env });
  await procs.startWorker('worker-1');
  if (options.api) await waitForHttp(`${procs.baseUrl}/ready`, 30_000);
  return procs;
}

afterEach(async () => {
  for (const procs of started.splice(0)) {
    await Promise.all([procs.api?.stop(), ...procs.workers.map((w) => w.stop())]);
    await procs.redis.close();
  }
});

const headers = { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY };

describe('separate API and worker processes', () => {
  it('run a job through; the request id joins the API’s request line and the worker’s job lines; no key is logged', async () => {
    const { api, baseUrl, workers } = await startProcesses({ api: true });
    if (!api) throw new Error('no API');
    const requestId = 'req_cross_process_test_0001';
    const quern = new QuernClient({ baseUrl, apiKey: TEST_API_KEY, headers: { 'x-request-id': requestId } });
    const body = await quern.predict({ features: [4, 120, 95, 2400, 16, 1978] });
    expect(body.prediction).toBeGreaterThan(15);
    expect(body.prediction).toBeLessThan(45);

    const job = await quern.getJob(body.job_id ?? '');
    expect(job.status).toBe('succeeded');
    const apiLine = await api.waitForLog((l) => l.request_id === requestId && l.route === '/v1/predict');
    expect(apiLine).toMatchObject({ status: 200, principal_id: expect.stringMatching(/^key_/) });
    expect(JSON.stringify(api.logs())).not.toContain(TEST_API_KEY);
    const worker = workers[0] as ServiceProcess;
    const jobLine = await worker.waitForLog((l) => l.request_id === requestId && l.msg === 'job done');
    expect(jobLine).toMatchObject({ job_id: body.job_id, model: 'cars-mpg', batch_size: 1, service: 'worker' });
  });

  it('a worker receiving SIGTERM with jobs in hand finishes them; none is left active or lost', async () => {
    const { redis, workers, startWorker } = await startProcesses({ api: false });
    const queue = new Queue(new KeySpace(redis.prefix).inferenceQueue('mlp-large'), {
      connection: new Redis(redis.url),
      prefix: redis.prefix,
    });
    try {
      // A backlog far larger than what the worker holds, added in one round trip, so the worker is
      // certainly busy with jobs in hand when the signal comes.
      const rows = randomRows(3000, 256, 99);
      const jobs = await queue.addBulk(
        rows.map((features) => ({
          name: INFERENCE_JOB_NAME,
          data: {
            v: 1 as const,
            model: 'mlp-large',
            model_version: '1.0.0',
            rows: [features],
            mode: 'async' as const,
            owner: 'key_test',
            request_id: newId('req'),
            created_at: Date.now(),
            deadline_at: Date.now() + 600_000,
            priority: 1,
          },
          opts: { jobId: newId('job') },
        })),
      );
      const ids = jobs.map((j) => j.id as string);
      const worker = workers[0] as ServiceProcess;
      await expect.poll(() => queue.getActiveCount(), { timeout: 10_000, interval: 5 }).toBeGreaterThan(0);
      const exit = await worker.stop('SIGTERM', 30_000);
      expect(exit.code).toBe(0);
      expect(await queue.getActiveCount()).toBe(0);
      const states = await Promise.all(ids.map((id) => queue.getJobState(id)));
      expect(states.every((s) => s === 'completed' || s === 'waiting')).toBe(true);
      expect(states.filter((s) => s === 'completed').length).toBeGreaterThan(0);

      // A new worker picks up whatever was still waiting: every job completes exactly once.
      await startWorker('worker-2');
      await expect
        .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 60_000, interval: 100 })
        .toBeGreaterThanOrEqual(ids.length);
      const finished = await Promise.all(ids.map((id) => queue.getJobState(id)));
      expect(finished.every((s) => s === 'completed')).toBe(true);
    } finally {
      await queue.close();
      (queue.opts.connection as Redis).disconnect();
    }
  });

  it('an API receiving SIGTERM answers its waiting sync callers 202 with the job, ends its event streams, and exits cleanly', async () => {
    const { api, baseUrl, redis } = await startProcesses({ api: true });
    if (!api) throw new Error('no API');
    const queue = new Queue(new KeySpace(redis.prefix).inferenceQueue('cars-mpg'), {
      connection: new Redis(redis.url),
      prefix: redis.prefix,
    });
    try {
      await queue.pause(); // the job stays queued: the caller would wait its full minute
      const predict = fetch(`${baseUrl}/v1/predict`, {
        method: 'POST',
        headers: { ...headers, prefer: 'wait=60' },
        body: JSON.stringify({ features: [6, 225, 105, 3400, 16, 1977] }),
      });
      let queued: string[] = [];
      await expect
        .poll(
          async () => {
            queued = (await queue.getJobs(['waiting', 'prioritized'])).map((j) => j.id as string);
            return queued.length;
          },
          { timeout: 10_000, interval: 20 },
        )
        .toBe(1);
      const jobId = queued[0] as string;
      const events = await fetch(`${baseUrl}/v1/jobs/${jobId}/events`, { headers });
      expect(events.status).toBe(200);
      const reader = (events.body as ReadableStream<Uint8Array>).getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      expect(first).toContain('event: queued');

      const exited = api.stop('SIGTERM', 30_000);
      const res = await predict;
      expect(res.status).toBe(202);
      expect(res.headers.get('location')).toBe(`/v1/jobs/${jobId}`);
      expect(((await res.json()) as { id: string; status: string }).status).toBe('queued');
      // The stream ends (the client would reconnect to another API process).
      let streamed = '';
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        streamed += new TextDecoder().decode(chunk.value);
      }
      expect(streamed).not.toContain('event: succeeded');
      // Exit 0: the server closed by itself, not by the forced exit after the grace.
      expect((await exited).code).toBe(0);
      expect(api.logs().some((l) => l.msg === 'answering sync waiters with 202' && l.waiting === 1)).toBe(true);

      // The job was not lost with the API: a worker still runs it.
      await queue.resume();
      await expect.poll(() => queue.getJobState(jobId), { timeout: 20_000, interval: 50 }).toBe('completed');
    } finally {
      await queue.close();
      (queue.opts.connection as Redis).disconnect();
    }
  });
});
