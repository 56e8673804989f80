import {
  OTHER_API_KEY,
  seedTestKeys,
  startTestRedis,
  TEST_API_KEY,
  type TestRedis,
  testConfig,
  uniquePrefix,
} from '@quern/devkit';
import { createLogger, encodeCachedRow, FAIR_BAND, inputHash, KeySpace, loadManifest } from '@quern/shared';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { SCOPES } from './services/principal';
import { createServices, type Services } from './services/services';

let redis: TestRedis;
let services: Services;
let app: ReturnType<typeof createApp>;
let client: Redis;

const CAR = [4, 140, 90, 2264, 15.5, 1971];

function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  return app.request(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function get(path: string, key = TEST_API_KEY) {
  return app.request(path, { headers: { 'x-api-key': key } });
}

async function expectProblem(res: Response, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toBe('application/problem+json');
  const body = (await res.json()) as Record<string, unknown>;
  expect(body).toMatchObject({ status, code, type: `urn:quern:problem:${code}` });
  expect(typeof body.title).toBe('string');
  expect(typeof body.detail).toBe('string');
  expect(body.request_id).toBe(res.headers.get('x-request-id'));
  return body;
}

beforeAll(async () => {
  redis = await startTestRedis();
  // No worker runs in this file: these tests cover the edge on its own.
  const config = testConfig(redis, { QUERN_SYNC_WAIT_DEFAULT_MS: '300' });
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), createLogger('api', 'silent'));
  app = createApp(services, createLogger('api', 'silent'));
  client = new Redis(redis.url);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
});

afterAll(async () => {
  client.disconnect();
  await services.close();
  await redis.close();
});

describe('errors are problem+json with the right status', () => {
  it('401 without a credential, with WWW-Authenticate', async () => {
    const res = await app.request('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ features: CAR }),
    });
    await expectProblem(res, 401, 'unauthorized');
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="quern"/);
  });

  it('401 with an unknown key, also as a bearer credential', async () => {
    await expectProblem(
      await post('/v1/jobs', { features: CAR }, { 'x-api-key': 'qk_not_a_real_key_000000000' }),
      401,
      'unauthorized',
    );
    const res = await app.request('/v1/jobs/job_0000000000000000000000', {
      headers: { authorization: 'Bearer qk_not_a_real_key_000000000' },
    });
    await expectProblem(res, 401, 'unauthorized');
  });

  it('accepts the key as Authorization: Bearer', async () => {
    const res = await app.request('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
      body: JSON.stringify({ features: CAR }),
    });
    expect(res.status).toBe(202);
  });

  it('400 for malformed JSON', async () => {
    await expectProblem(await post('/v1/jobs', '{"features": [1, 2,'), 400, 'malformed_request');
  });

  it('415 for a body that is not JSON', async () => {
    const res = await app.request('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'x-api-key': TEST_API_KEY },
      body: 'features=1',
    });
    await expectProblem(res, 415, 'unsupported_media_type');
  });

  it('422 naming the field for a wrong feature count', async () => {
    const body = await expectProblem(await post('/v1/jobs', { features: [1, 2, 3] }), 422, 'validation_failed');
    expect(body.errors).toEqual([{ field: 'features', message: 'expected 6 features for model cars-mpg, got 3' }]);
  });

  it('422 naming the element for a non-finite or non-numeric feature', async () => {
    // JSON.parse turns 1e999 into Infinity: it must not reach the model.
    const infinite = await expectProblem(
      await post('/v1/jobs', '{"features":[4,140,1e999,2264,15.5,1971]}'),
      422,
      'validation_failed',
    );
    expect(infinite.errors).toEqual([expect.objectContaining({ field: 'features[2]' })]);
    const text = await expectProblem(
      await post('/v1/predict', { features: [4, 'x', 90, 2264, 15.5, 1971] }),
      422,
      'validation_failed',
    );
    expect(text.errors).toEqual([expect.objectContaining({ field: 'features[1]' })]);
    const huge = await expectProblem(
      await post('/v1/jobs', { features: [4, 140, 1e39, 2264, 15.5, 1971] }),
      422,
      'validation_failed',
    );
    expect(huge.errors).toEqual([expect.objectContaining({ field: 'features[2]' })]);
  });

  it('422 for a missing body field and for batch rows over the limit', async () => {
    const missing = await expectProblem(await post('/v1/jobs', { model: 'cars-mpg' }), 422, 'validation_failed');
    expect(missing.errors).toEqual([expect.objectContaining({ field: 'features' })]);
    const rows = Array.from({ length: 101 }, () => ({ features: CAR }));
    const tooMany = await expectProblem(await post('/v1/batch-predict', { requests: rows }), 422, 'validation_failed');
    expect(tooMany.errors).toEqual([expect.objectContaining({ field: 'requests' })]);
    const badRow = await expectProblem(
      await post('/v1/batch-predict', { requests: [{ features: CAR }, { features: [1] }] }),
      422,
      'validation_failed',
    );
    expect(badRow.errors).toEqual([expect.objectContaining({ field: 'requests[1].features' })]);
  });

  it('404 for an unknown model, job or route', async () => {
    await expectProblem(await post('/v1/jobs', { model: 'nope', features: CAR }), 404, 'model_not_found');
    await expectProblem(await get('/v1/models/nope'), 404, 'model_not_found');
    await expectProblem(await get('/v1/jobs/job_0000000000000000000000'), 404, 'job_not_found');
    await expectProblem(await get('/v1/jobs/not-even-an-id'), 404, 'job_not_found');
    await expectProblem(await get('/v1/nothing-here'), 404, 'not_found');
  });

  it('405 with Allow for a method a served path does not take (RFC 9110)', async () => {
    const put = await app.request('/v1/jobs/job_0000000000000000000000', { method: 'PUT' });
    await expectProblem(put.clone(), 405, 'method_not_allowed');
    expect(put.headers.get('allow')).toBe('DELETE, GET, HEAD');
    const patch = await app.request('/v1/predict', { method: 'PATCH' });
    await expectProblem(patch.clone(), 405, 'method_not_allowed');
    expect(patch.headers.get('allow')).toBe('POST');
    // A path nothing serves stays a 404, whatever the method.
    await expectProblem(await app.request('/v1/nothing-here', { method: 'PUT' }), 404, 'not_found');
  });

  it('422 for a key name longer than its documented 100 characters, spaces around it included', async () => {
    const padded = `    ${'n'.repeat(98)}`;
    await expectProblem(await post('/v1/admin/keys', { name: padded }), 422, 'validation_failed');
    await expectProblem(await post('/v1/admin/keys', { name: '   ' }), 422, 'validation_failed');
    const created = await post('/v1/admin/keys', { name: `  ${'n'.repeat(98)}` });
    expect(created.status).toBe(201);
    expect(((await created.json()) as { name: string }).name).toBe('n'.repeat(98));
  });

  it('413 for a body over the limit', async () => {
    const big = JSON.stringify({ features: Array.from({ length: 300_000 }, () => 1.5) });
    expect(big.length).toBeGreaterThan(1024 * 1024);
    await expectProblem(await post('/v1/jobs', big), 413, 'payload_too_large');
  });
});

describe('jobs', () => {
  it('POST /v1/jobs answers 202 with Location and a queued job resource with a random id', async () => {
    const res = await post('/v1/jobs', { features: CAR });
    expect(res.status).toBe(202);
    const job = (await res.json()) as Record<string, unknown>;
    expect(job.id).toMatch(/^job_[0-9A-Za-z]{22}$/);
    expect(res.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(job).toMatchObject({
      status: 'queued',
      model: 'cars-mpg',
      model_version: '1.0.0',
      output: null,
      error: null,
    });

    const read = await get(`/v1/jobs/${job.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toMatchObject({ id: job.id, status: 'queued' });
    expect(read.headers.get('cache-control')).toBe('no-store');
  });

  it('another key cannot see the job: 404 exactly like a job that does not exist', async () => {
    const job = (await (await post('/v1/jobs', { features: CAR })).json()) as { id: string };
    const other = await get(`/v1/jobs/${job.id}`, OTHER_API_KEY);
    const missing = await get('/v1/jobs/job_0000000000000000000000', OTHER_API_KEY);
    const a = await expectProblem(other, 404, 'job_not_found');
    const b = await expectProblem(missing, 404, 'job_not_found');
    expect(a.detail).toBe(b.detail);
  });

  it('never writes the API key into job data', async () => {
    const job = (await (await post('/v1/jobs', { features: CAR })).json()) as { id: string };
    const hash = await client.hgetall(services.jobs.queueOf('cars-mpg').toKey(job.id));
    expect(hash.data).toBeDefined();
    expect(JSON.stringify(hash)).not.toContain(TEST_API_KEY);
    expect(JSON.parse(hash.data as string)).toMatchObject({ owner: expect.stringMatching(/^key_/), mode: 'async' });
  });
});

describe('/v1/predict without a worker', () => {
  it('answers a cached input at once (cached: true) without enqueueing a job', async () => {
    const features = [6, 200, 100, 3000, 14, 1975];
    await client.set(
      new KeySpace(redis.prefix).cache('cars-mpg', '1.0.0', inputHash(features)),
      encodeCachedRow([21.5]),
    );
    const before = await services.jobs.queueOf('cars-mpg').count();
    const res = await post('/v1/predict', { features });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ prediction: 21.5, cached: true, job_id: null, model_version: '1.0.0' });
    expect(await services.jobs.queueOf('cars-mpg').count()).toBe(before);
  });

  it('answers 202 with the job and Location when the wait runs out; the job is kept', async () => {
    const res = await post('/v1/predict', { features: [8, 400, 200, 4500, 10, 1970] }, { prefer: 'wait=0.2' });
    expect(res.status).toBe(202);
    expect(res.headers.get('preference-applied')).toBe('wait=0.2');
    const job = (await res.json()) as { id: string; status: string };
    expect(res.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(job.status).toBe('queued');
    expect(await services.jobs.queueOf('cars-mpg').getJobState(job.id)).toBe('prioritized');
  });

  it('a job a worker took before its deadline is waited for past it: timeout_ms bounds the queueing, not the run', async () => {
    // A queue of its own (its own key prefix): no job another test left is taken, and nothing
    // another test reads is answered by the stand-in worker below.
    const own = testConfig({ url: redis.url, prefix: uniquePrefix() }, { QUERN_SYNC_WAIT_DEFAULT_MS: '300' });
    const ownServices = createServices(own, loadManifest(own.QUERN_MODELS_DIR), createLogger('api', 'silent'));
    const ownApp = createApp(ownServices, createLogger('api', 'silent'));
    // A stand-in worker whose inference outlasts each job's deadline, however long taking it took.
    const worker = new Worker(
      'infer-cars-mpg',
      async (job) => {
        const deadline = Number(job.data.deadline_at ?? 0);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - Date.now()) + 300));
        const rows = Number(job.data.input?.count ?? job.data.rows?.length ?? 1);
        const now = Date.now();
        return {
          outputs: Array.from({ length: rows }, () => [33.5]),
          cached: Array.from({ length: rows }, () => false),
          model_version: '1.0.0',
          started_at: now - 300,
          finished_at: now,
          timings: { queue_ms: 1, inference_ms: 300, batch_size: rows },
        };
      },
      {
        connection: new Redis(redis.url, { maxRetriesPerRequest: null }),
        prefix: own.QUERN_REDIS_PREFIX,
        concurrency: 10,
      },
    );
    try {
      await ownServices.connected(10_000);
      await seedTestKeys(ownServices.apiKeys, SCOPES);
      // The worker takes jobs before any deadline starts: a job of its own has gone through it.
      const queue = ownServices.jobs.queueOf('cars-mpg');
      const probe = await queue.add('infer', {});
      await expect
        .poll(() => queue.getJobState(probe.id as string), { timeout: 10_000, interval: 20 })
        .toBe('completed');
      const body = (i: number) => ({ features: [6, 250, 100, 3300, 15, 1960 + i], timeout_ms: 1_000 });
      const send = (i: number, headers: Record<string, string>) =>
        ownApp.request('/v1/predict', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, prefer: 'wait=10', ...headers },
          body: JSON.stringify(body(i)),
        });
      const [coalesced, single] = await Promise.all([
        send(1, {}),
        send(2, { 'idempotency-key': 'deadline-running-1' }),
      ]);
      for (const res of [coalesced, single]) {
        expect(res.status).toBe(200);
        expect(((await res.json()) as { prediction: number }).prediction).toBe(33.5);
      }
    } finally {
      await worker.close();
      (worker.opts.connection as Redis).disconnect();
      await ownServices.close();
      const left = await client.keys(`${own.QUERN_REDIS_PREFIX}:*`);
      if (left.length > 0) await client.del(...left);
    }
  });

  it('Preference-Applied names what was honoured, and nothing for a preference it could not read', async () => {
    const features = (i: number) => ({ features: [8, 400, 200, 4500, 10, 1960 + i] });
    const async = await post('/v1/predict', features(1), { prefer: 'respond-async' });
    expect(async.status).toBe(202);
    expect(async.headers.get('preference-applied')).toBe('respond-async');
    const junk = await post('/v1/predict', features(2), { prefer: 'wait=abc, respond-async=no' });
    expect(junk.status).toBe(202); // the default wait (300 ms here) ran out
    expect(junk.headers.get('preference-applied')).toBeNull();
    const capped = await post('/v1/batch-predict', { requests: [features(3)] }, { prefer: 'wait=0.1' });
    expect(capped.headers.get('preference-applied')).toBe('wait=0.1');
  });
});

describe('operations', () => {
  it('/health is 200; /ready is 503 without a worker heartbeat and 200 with one', async () => {
    expect((await app.request('/health')).status).toBe(200);
    const notReady = await app.request('/ready');
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toMatchObject({ status: 'not_ready', redis: 'ok', workers: 0 });
    await client.zadd(`${redis.prefix}:workers`, Date.now(), 'wrk_test');
    const ready = await app.request('/ready');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', workers: 1 });
    await client.zrem(`${redis.prefix}:workers`, 'wrk_test');
  });

  it('GET /v1/models lists both models; GET /v1/models/{name} gives one', async () => {
    const list = (await (await get('/v1/models')).json()) as { data: { name: string; default: boolean }[] };
    expect(list.data.map((m) => m.name).sort()).toEqual(['cars-mpg', 'mlp-large']);
    expect(list.data.find((m) => m.default)?.name).toBe('cars-mpg');
    const one = (await (await get('/v1/models/mlp-large')).json()) as Record<string, unknown>;
    expect(one).toMatchObject({ name: 'mlp-large', input: { features: 256 }, output: { shape: [8] } });
    expect(one).not.toHaveProperty('file');
  });

  it('/openapi.json documents every route; /docs serves Swagger UI from the app itself', async () => {
    const doc = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, unknown> };
    for (const path of [
      '/v1/jobs',
      '/v1/jobs/{id}',
      '/v1/predict',
      '/v1/batch-predict',
      '/predict',
      '/batch-predict',
      '/v1/models',
      '/v1/models/{name}',
      '/health',
      '/ready',
      '/metrics',
    ]) {
      expect(doc.paths).toHaveProperty([path]);
    }
    const html = await (await app.request('/docs')).text();
    expect(html).toContain('/docs/assets/swagger-ui-bundle.js');
    expect(html).not.toMatch(/https?:\/\/(cdn|unpkg|jsdelivr)/);
    const bundle = await app.request('/docs/assets/swagger-ui-bundle.js');
    expect(bundle.status).toBe(200);
    expect((await bundle.text()).length).toBeGreaterThan(100_000);
  });

  it('reports the age of the oldest waiting job across plain and prioritized jobs', async () => {
    const queue = services.jobs.queueOf('mlp-large');
    const now = Date.now();
    // Many newer premium jobs ahead of the oldest (a free one): it must still be found.
    for (let i = 0; i < 15; i++) await queue.add('infer', {}, { timestamp: now - 10_000 + i, priority: 1 });
    await queue.add('infer', {}, { timestamp: now - 120_000, priority: 5 });
    await queue.add('infer', {}, { timestamp: now - 60_000 });
    await queue.add('infer', {}, { timestamp: now - 5_000, priority: 5 });
    const text = await (await app.request('/metrics')).text();
    const age = Number(
      /quern_queue_oldest_waiting_age_seconds\{model="mlp-large",service="api"\} ([\d.]+)/.exec(text)?.[1],
    );
    expect(age).toBeGreaterThanOrEqual(120);
    expect(age).toBeLessThan(130);
    await queue.obliterate({ force: true });
  });

  it('finds the oldest waiting job inside the fair-share bands too, not only at a band’s front', async () => {
    const queue = services.jobs.queueOf('mlp-large');
    const now = Date.now();
    const free = 4 * FAIR_BAND + 1; // the band of priority class 5
    // Premium jobs of several keys, newer; in the free band a newer job ahead of the oldest one
    // (another key's, with an earlier fair-share tag), as fair share orders them.
    for (let i = 0; i < 20; i++) await queue.add('infer', {}, { timestamp: now - 9_000 + i, priority: 1 + i * 7 });
    await queue.add('infer', {}, { timestamp: now - 3_000, priority: free + 10 });
    await queue.add('infer', {}, { timestamp: now - 90_000, priority: free + 50 });
    const text = await (await app.request('/metrics')).text();
    const age = Number(
      /quern_queue_oldest_waiting_age_seconds\{model="mlp-large",service="api"\} ([\d.]+)/.exec(text)?.[1],
    );
    expect(age).toBeGreaterThanOrEqual(90);
    expect(age).toBeLessThan(100);
    await queue.obliterate({ force: true });
  });

  it('/metrics exposes queue depth read from Redis and request counters', async () => {
    await post('/v1/jobs', { features: CAR });
    const text = await (await app.request('/metrics')).text();
    expect(text).toMatch(/quern_queue_jobs\{model="cars-mpg",state="prioritized",service="api"\} [1-9]/);
    expect(text).toContain('quern_http_requests_total{method="POST",route="/v1/jobs",status="202",service="api"}');
    expect(text).toContain('quern_jobs_submitted_total{model="cars-mpg",mode="async",service="api"}');
  });
});

describe('job input format (QUERN_JOB_INPUT_FORMAT)', () => {
  it('writes packed float32 rows by default, JSON numbers with `json` (for workers of older versions)', async () => {
    const dataOf = async (id: string, s: Services) => (await s.jobs.queueOf('cars-mpg').getJob(id))?.data;
    const packed = (await (await post('/v1/jobs', { features: CAR })).json()) as { id: string };
    const data = await dataOf(packed.id, services);
    expect(data?.rows).toBeUndefined();
    expect(data?.input).toMatchObject({ count: 1, width: 6 });

    const config = testConfig(redis, { QUERN_JOB_INPUT_FORMAT: 'json' });
    const jsonServices = createServices(config, loadManifest(config.QUERN_MODELS_DIR), createLogger('api', 'silent'));
    try {
      await jsonServices.connected(10_000);
      const jsonApp = createApp(jsonServices, createLogger('api', 'silent'));
      const res = await jsonApp.request('/v1/jobs', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
        body: JSON.stringify({ features: CAR }),
      });
      expect(res.status).toBe(202);
      const legacy = await dataOf(((await res.json()) as { id: string }).id, jsonServices);
      expect(legacy?.input).toBeUndefined();
      // The numbers as float32 reads them (15.5 and the integers are exact).
      expect(legacy?.rows).toEqual([CAR]);
    } finally {
      await jsonServices.close();
    }
  });
});

describe('queue dashboard API', () => {
  it('answers 404 for an id that names a queue key instead of a job (Redis would say WRONGTYPE)', async () => {
    const created = (await (await post('/v1/jobs', { features: CAR })).json()) as { id: string };
    for (const id of ['completed', 'meta', 'events', 'id', 'wait', 'job_short']) {
      const res = await get(`/admin/queues/api/queues/infer-cars-mpg/${id}`);
      expect(res.status, id).toBe(404);
      expect(((await res.json()) as { code: string }).code).toBe('job_not_found');
    }
    const logs = await get('/admin/queues/api/queues/infer-cars-mpg/completed/logs');
    expect(logs.status).toBe(404);
    // A real job id goes through to Bull Board, which shows the job.
    const job = await get(`/admin/queues/api/queues/infer-cars-mpg/${created.id}`);
    expect(job.status).toBe(200);
    expect(JSON.stringify(await job.json())).toContain(created.id);
  });

  const send = (method: string, path: string, headers: Record<string, string> = {}, body = '{}') =>
    app.request(`http://quern.test${path}`, {
      method,
      headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, host: 'quern.test', ...headers },
      body,
    });

  it('refuses to create or edit jobs: a job added to the webhooks queue would be signed with any principal’s secret', async () => {
    const webhooks = services.queues.find((q) => q.name === 'webhooks');
    expect(webhooks).toBeDefined();
    const before = await webhooks?.count();
    const forged = JSON.stringify({ name: 'deliver', data: { owner: 'key_victim', url: 'http://127.0.0.1:9/x' } });
    await expectProblem(await send('POST', '/admin/queues/api/queues/webhooks/add', {}, forged), 403, 'forbidden');
    expect(await webhooks?.count()).toBe(before);
    const created = (await (await post('/v1/jobs', { features: CAR })).json()) as { id: string };
    for (const [method, path] of [
      ['POST', '/admin/queues/api/queues/infer-cars-mpg/add'],
      ['PATCH', `/admin/queues/api/queues/infer-cars-mpg/${created.id}/update-data`],
      ['PUT', '/admin/queues/api/queues/infer-cars-mpg/obliterate'],
      ['PUT', '/admin/queues/api/queues/infer-cars-mpg/concurrency'],
      ['PUT', '/admin/queues/api/queues/infer-cars-mpg/job-schedulers/s1'],
    ] as const) {
      await expectProblem(await send(method, path), 403, 'forbidden');
    }
    const job = (await (await get(`/admin/queues/api/queues/infer-cars-mpg/${created.id}`)).json()) as {
      job: { data: { owner: string } };
    };
    expect(job.job.data.owner).toMatch(/^key_/);
  });

  it('takes changes from its own page only: a cross-site request cannot use an admin’s remembered credentials', async () => {
    const queue = services.queues.find((q) => q.name === 'infer-cars-mpg');
    const crossSite = await send('PUT', '/admin/queues/api/queues/infer-cars-mpg/pause', {
      origin: 'https://evil.example',
      'sec-fetch-site': 'cross-site',
    });
    await expectProblem(crossSite, 403, 'forbidden');
    await expectProblem(
      await send('PUT', '/admin/queues/api/queues/infer-cars-mpg/pause', { origin: 'https://evil.example' }),
      403,
      'forbidden',
    );
    expect(await queue?.isPaused()).toBe(false);
    // The dashboard's own page (same host; behind a TLS proxy the scheme differs) may pause and resume.
    const own = { origin: 'https://quern.test', 'sec-fetch-site': 'same-origin' };
    expect((await send('PUT', '/admin/queues/api/queues/infer-cars-mpg/pause', own)).status).toBe(200);
    expect(await queue?.isPaused()).toBe(true);
    expect((await send('PUT', '/admin/queues/api/queues/infer-cars-mpg/resume', own)).status).toBe(200);
    expect(await queue?.isPaused()).toBe(false);
    // Behind a proxy that rewrites Host the page's Origin names another host; the browser's
    // Sec-Fetch-Site still says same-origin, and decides.
    const proxied = { origin: 'https://queues.example.com', 'sec-fetch-site': 'same-origin' };
    expect((await send('PUT', '/admin/queues/api/queues/infer-cars-mpg/pause', proxied)).status).toBe(200);
    expect((await send('PUT', '/admin/queues/api/queues/infer-cars-mpg/resume', proxied)).status).toBe(200);
  });

  it('serves the dashboard’s own per-queue panels (metrics, workers, rate limit, job options)', async () => {
    for (const panel of ['metrics', 'workers', 'rate-limit', 'default-job-options']) {
      const res = await get(`/admin/queues/api/queues/infer-cars-mpg/${panel}`);
      expect(res.status, panel).toBe(200);
    }
  });
});
