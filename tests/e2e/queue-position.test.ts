import { createApp, createServices, SCOPES, type Services } from '@quern/api';
import { OTHER_API_KEY, seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { WorkerRuntime } from '@quern/worker';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sseReader } from '../support/sse';

/**
 * A queued job's standing on GET /v1/jobs/{id} and its event stream (docs/scheduling.md): position
 * (jobs ahead), rows ahead and an ETA; read with one ZRANK, whatever the queue's length.
 */

const MODEL = 'mlp-large';
const WIDTH = 256;

interface Standing {
  position: number;
  ahead_rows: number;
  eta_ms: number | null;
}
interface JobBody {
  id: string;
  status: string;
  queue?: Standing | null;
}

let redis: TestRedis;
let services: Services | undefined;
let worker: WorkerRuntime | undefined;

beforeAll(async () => {
  redis = await startTestRedis();
});

afterEach(async () => {
  await worker?.close(10_000);
  await services?.close();
  worker = undefined;
  services = undefined;
});

afterAll(async () => {
  await redis.close();
});

async function stack(prefix: string) {
  const config = testConfig(
    { url: redis.url, prefix },
    {
      QUERN_RATE_PREMIUM_PER_MINUTE: '0',
      QUERN_RATE_PREMIUM_PER_HOUR: '0',
      QUERN_CACHE_TTL_SECONDS: '0',
      QUERN_SSE_KEEPALIVE_MS: '100',
      QUERN_WORKER_THREADS: '1',
      // A small prefetch: the last job stays queued (in Redis) for most of the drain.
      QUERN_WORKER_PREFETCH: '16',
    },
  );
  const manifest = loadManifest(config.QUERN_MODELS_DIR);
  const logger = createLogger('api', 'silent');
  services = createServices(config, manifest, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const app = createApp(services, logger);
  const submit = async (key: string, rows: number, priority?: number) => {
    const requests = Array.from({ length: rows }, () => ({
      features: Array.from({ length: WIDTH }, () => Math.random()),
    }));
    const res = await app.request('/v1/batch-predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key, prefer: 'respond-async' },
      body: JSON.stringify({ model: MODEL, requests, ...(priority ? { priority } : {}) }),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as JobBody).id;
  };
  const read = async (id: string, key = TEST_API_KEY) =>
    (await (await app.request(`/v1/jobs/${id}`, { headers: { 'x-api-key': key } })).json()) as JobBody;
  const startWorker = async () => {
    worker = await WorkerRuntime.start({ config, manifest, logger: createLogger('worker', 'silent') });
  };
  const stopWorker = async () => {
    await worker?.close(10_000);
    worker = undefined;
  };
  return { app, submit, read, startWorker, stopWorker, config, services: services as Services };
}

describe('queue position and ETA', () => {
  it('counts the jobs ahead exactly, estimates their rows, and shows no ETA before anything drained', async () => {
    const { submit, read } = await stack('qpos');
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push(await submit(TEST_API_KEY, 4));
    const last = await read(ids[29] as string);
    expect(last.status).toBe('queued');
    expect(last.queue).toEqual({ position: 29, ahead_rows: 116, eta_ms: null });
    expect((await read(ids[0] as string)).queue?.position).toBe(0);
    // A job of a lower class (priority 3) waits behind them all, and behind class-1 jobs that come later.
    const lower = await submit(OTHER_API_KEY, 1, 3);
    expect((await read(lower, OTHER_API_KEY)).queue?.position).toBe(30);
    // A class-1 job that comes later goes ahead of it: the position never rises, it holds at 30
    // until the jobs ahead really are fewer.
    await submit(TEST_API_KEY, 1);
    expect((await read(lower, OTHER_API_KEY)).queue?.position).toBe(30);
  });

  it('a draining queue: position never grows, an ETA appears, and the stream sends each change as `queued`', async () => {
    const { app, submit, read, startWorker } = await stack('qdrain');
    const ids: string[] = [];
    for (let i = 0; i < 600; i++) ids.push(await submit(TEST_API_KEY, 8));
    const lastId = ids[ids.length - 1] as string;
    const stream = await app.request(`/v1/jobs/${lastId}/events`, { headers: { 'x-api-key': TEST_API_KEY } });
    const events = sseReader(stream);
    // Read the stream as a client does, while the test polls the job beside it.
    const queued: number[] = [];
    const reading = (async () => {
      for (;;) {
        const message = await events.next(60_000);
        if (message?.comment !== undefined) continue;
        if (message?.event !== 'queued') break;
        queued.push((JSON.parse(message.data) as JobBody).queue?.position ?? -1);
      }
      await events.cancel();
    })();
    await startWorker();
    const positions: number[] = [];
    const etas: (number | null)[] = [];
    for (;;) {
      const job = await read(lastId);
      if (job.status !== 'queued') break;
      if (job.queue) {
        positions.push(job.queue.position);
        etas.push(job.queue.eta_ms);
      }
      // Paces the reads (a client polls too): the stream's own reads need turns of the event loop.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(positions.length).toBeGreaterThan(2);
    for (let i = 1; i < positions.length; i++) {
      expect(positions[i]).toBeLessThanOrEqual(positions[i - 1] as number);
    }
    expect(etas.some((eta) => eta !== null && eta > 0)).toBe(true);
    await reading;
    expect(queued.length).toBeGreaterThan(1);
    expect(queued[0]).toBe(599);
    for (let i = 1; i < queued.length; i++) expect(queued[i]).toBeLessThan(queued[i - 1] as number);
  }, 120_000);

  it('position, rows ahead and ETA never rise: not when the drain slows or stops, nor when fair share puts jobs ahead', async () => {
    const { app, submit, read, startWorker, stopWorker, config, services } = await stack('qmono');
    const queue = services.jobs.queueOf(MODEL);
    const client = new Redis(redis.url);
    const rank = async (id: string) =>
      Number(await client.zrank(`${config.QUERN_REDIS_PREFIX}:${queue.name}:prioritized`, id));
    for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 50 }, () => submit(TEST_API_KEY, 4)));
    const target = await submit(TEST_API_KEY, 4);
    const stream = await app.request(`/v1/jobs/${target}/events`, { headers: { 'x-api-key': TEST_API_KEY } });
    const events = sseReader(stream);
    const streamed: Standing[] = [];
    const reading = (async () => {
      for (;;) {
        const message = await events.next(60_000);
        if (message?.comment !== undefined) continue;
        if (message?.event !== 'queued') break;
        const standing = (JSON.parse(message.data) as JobBody).queue;
        if (standing) streamed.push(standing);
      }
      await events.cancel();
    })();
    const polled: Standing[] = [];
    const poll = async (until: () => Promise<boolean>) => {
      for (;;) {
        const job = await read(target);
        if (job.status !== 'queued') return false;
        if (job.queue) polled.push(job.queue);
        if (await until()) return true;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    try {
      // Draining: an ETA appears.
      await startWorker();
      expect(await poll(async () => (await rank(target)) < 700 && polled.some((s) => s.eta_ms !== null))).toBe(true);
      // The worker stops: the measured drain rate falls, so a fresh estimate would grow with every read.
      // The ETA counts down to 0 and stays there: the job is late.
      await stopWorker();
      const stoppedAt = Date.now();
      // It reaches 0 when the last estimate's time has passed (plus slack for a loaded machine).
      const countdownMs = Math.min(90_000, (polled.at(-1)?.eta_ms ?? 0) + 10_000);
      expect(await poll(async () => polled.at(-1)?.eta_ms === 0 || Date.now() - stoppedAt > countdownMs)).toBe(true);
      expect(polled.at(-1)?.eta_ms).toBe(0);
      // Another key's jobs: fair share places them ahead of the first key's backlog.
      const before = await rank(target);
      const others = await Promise.all(Array.from({ length: 40 }, () => submit(OTHER_API_KEY, 4)));
      expect(await rank(target)).toBe(before + others.length);
      expect(await poll(async () => true)).toBe(true);
      // A worker again, until the job is taken.
      await startWorker();
      expect(await poll(async () => false)).toBe(false);
    } finally {
      client.disconnect();
    }
    await reading;
    for (const seen of [polled, streamed]) {
      expect(seen.length).toBeGreaterThan(5);
      for (let i = 1; i < seen.length; i++) {
        const [was, now] = [seen[i - 1] as Standing, seen[i] as Standing];
        expect(now.position).toBeLessThanOrEqual(was.position);
        expect(now.ahead_rows).toBeLessThanOrEqual(was.ahead_rows);
        if (was.eta_ms !== null) {
          expect(now.eta_ms).not.toBeNull();
          expect(now.eta_ms as number).toBeLessThanOrEqual(was.eta_ms);
        }
      }
    }
  }, 120_000);
});
