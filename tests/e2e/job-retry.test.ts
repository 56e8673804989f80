import { createApp, createServices, SCOPES, type Services } from '@quern/api';
import { OTHER_API_KEY, seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, deliveryJobId, loadManifest, WEBHOOK_QUEUE } from '@quern/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** Client retry (`POST /v1/jobs/{id}/retry`) and the owner's job list (`GET /v1/jobs`), no worker running. */

const CAR = [4, 140, 90, 2264, 15.5, 1971];

let redis: TestRedis;
let services: Services;
let app: ReturnType<typeof createApp>;
let prefix: string;

beforeAll(async () => {
  redis = await startTestRedis();
  const config = testConfig(redis, { QUERN_WEBHOOK_ALLOW_HOSTS: '127.0.0.1' });
  prefix = config.QUERN_REDIS_PREFIX;
  const logger = createLogger('api', 'silent');
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  app = createApp(services, logger);
});

afterAll(async () => {
  await services.close();
  await redis.close();
});

const call = (method: string, path: string, body?: unknown, key = TEST_API_KEY) =>
  app.request(path, {
    method,
    headers: { 'content-type': 'application/json', 'x-api-key': key },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

interface Job {
  id: string;
  status: string;
  expires_at: string;
  created_at: string;
}

const submit = async (extra: Record<string, unknown> = {}) =>
  (await (await call('POST', '/v1/jobs', { model: 'cars-mpg', features: CAR, ...extra })).json()) as Job;

describe('POST /v1/jobs/{id}/retry', () => {
  it('runs a canceled job again under its id, with a new webhook cycle; only its owner, only when it ended', async () => {
    const job = await submit({ webhook: { url: 'http://127.0.0.1:9/hook', events: ['canceled'] } });
    const early = await call('POST', `/v1/jobs/${job.id}/retry`);
    expect(early.status).toBe(409);
    expect(await early.json()).toMatchObject({ code: 'job_not_retryable' });

    expect((await call('DELETE', `/v1/jobs/${job.id}`)).status).toBe(200);
    expect((await call('POST', `/v1/jobs/${job.id}/retry`, undefined, OTHER_API_KEY)).status).toBe(404);
    const again = await call('POST', `/v1/jobs/${job.id}/retry`);
    expect(again.status).toBe(202);
    expect(again.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(await again.json()).toMatchObject({ id: job.id, status: 'queued' });
    expect(await (await call('GET', `/v1/jobs/${job.id}`)).json()).toMatchObject({ id: job.id, status: 'queued' });

    // Canceled again: the second run's `canceled` event is a delivery of its own.
    expect((await call('DELETE', `/v1/jobs/${job.id}`)).status).toBe(200);
    const client = new Redis(redis.url);
    const webhooks = new Queue(WEBHOOK_QUEUE, { connection: client, prefix });
    try {
      expect(await webhooks.getJob(deliveryJobId(job.id, 'canceled'))).toBeTruthy();
      expect(await webhooks.getJob(deliveryJobId(job.id, 'canceled', 2))).toBeTruthy();
    } finally {
      await webhooks.close();
      client.disconnect();
    }
  });

  it('gives an expired job a new deadline of the same length, counted from the retry', async () => {
    const job = await submit({ timeout_ms: 50 });
    await expect
      .poll(async () => ((await (await call('GET', `/v1/jobs/${job.id}`)).json()) as Job).status)
      .toBe('expired');
    const res = await call('POST', `/v1/jobs/${job.id}/retry`);
    expect(res.status).toBe(202);
    const again = (await res.json()) as Job;
    expect(again.status).toBe('queued');
    expect(Date.parse(again.expires_at) - Date.parse(again.created_at)).toBe(50);
    expect(Date.parse(again.created_at)).toBeGreaterThan(Date.parse(job.created_at));
  });

  it('a retry the full queue refuses leaves the job as it was: readable, canceled, listed', async () => {
    const config = testConfig({ url: redis.url, prefix: `${prefix}-cap1` }, { QUERN_QUEUE_MAX_DEPTH: '1' });
    const logger = createLogger('api', 'silent');
    const capped = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
    try {
      await capped.connected(10_000);
      await seedTestKeys(capped.apiKeys, SCOPES);
      const cappedApp = createApp(capped, logger);
      const send = (method: string, path: string, body?: unknown) =>
        cappedApp.request(path, {
          method,
          headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      const first = (await (await send('POST', '/v1/jobs', { model: 'cars-mpg', features: CAR })).json()) as Job;
      expect((await send('DELETE', `/v1/jobs/${first.id}`)).status).toBe(200);
      const second = (await (await send('POST', '/v1/jobs', { model: 'cars-mpg', features: CAR })).json()) as Job;
      expect(second.status).toBe('queued');

      const refused = await send('POST', `/v1/jobs/${first.id}/retry`);
      expect(refused.status).toBe(503);
      expect(await refused.json()).toMatchObject({ code: 'queue_full' });
      expect(await (await send('GET', `/v1/jobs/${first.id}`)).json()).toMatchObject({
        id: first.id,
        status: 'canceled',
      });
      const listed = (await (await send('GET', '/v1/jobs?limit=10')).json()) as { data: Job[] };
      expect(listed.data.map((j) => j.id)).toContain(first.id);

      // Room again: the same retry goes through.
      expect((await send('DELETE', `/v1/jobs/${second.id}`)).status).toBe(200);
      const again = await send('POST', `/v1/jobs/${first.id}/retry`);
      expect(again.status).toBe(202);
      expect(await again.json()).toMatchObject({ id: first.id, status: 'queued' });
    } finally {
      await capped.close();
    }
  });

  it('answers 404 for an unknown id', async () => {
    expect((await call('POST', '/v1/jobs/job_0000000000000000000000/retry')).status).toBe(404);
  });
});

describe('GET /v1/jobs', () => {
  it('lists only the caller’s jobs, newest first, by status, page by page', async () => {
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) {
      const job = await submit();
      mine.push(job.id);
      if (i % 2 === 0) expect((await call('DELETE', `/v1/jobs/${job.id}`)).status).toBe(200);
    }
    const canceled = [mine[4], mine[2], mine[0]];
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = `/v1/jobs?status=canceled&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const res = await call('GET', query);
      expect(res.status).toBe(200);
      const page = (await res.json()) as { data: Job[]; next_cursor: string | null };
      for (const job of page.data) expect(job.status).toBe('canceled');
      seen.push(...page.data.map((j) => j.id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor && pages < 20);
    // Newest first; the earlier tests' canceled jobs of this key come after these three.
    expect(seen.slice(0, 3)).toEqual(canceled);
    expect(new Set(seen).size).toBe(seen.length);

    const all = (await (await call('GET', '/v1/jobs?limit=3')).json()) as { data: Job[] };
    expect(all.data.map((j) => j.id)).toEqual([mine[4], mine[3], mine[2]]);
    const others = (await (await call('GET', '/v1/jobs', undefined, OTHER_API_KEY)).json()) as { data: Job[] };
    expect(others.data).toEqual([]);
    expect((await call('GET', '/v1/jobs?status=lost')).status).toBe(422);
    expect((await call('GET', '/v1/jobs?limit=1000')).status).toBe(422);
  });
});
