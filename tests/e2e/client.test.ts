import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { serve } from '@hono/node-server';
import { isProblem, type JobEvent, QuernClient, QuernProblemError, verifyWebhook } from '@quern/client';
import { DirectOrt, OTHER_API_KEY, REPO_ROOT, TEST_API_KEY } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';
import { WebhookReceiver } from '../support/webhook-receiver';

/**
 * @quern/client against the whole stack (API, worker, Redis, ONNX Runtime) over real HTTP: the
 * API served on a loopback port, the client calling it with the global fetch.
 */
let stack: Stack;
let server: Server;
let baseUrl: string;
let receiver: WebhookReceiver;
let cars: DirectOrt;
let seed = 0;

/** A cars-mpg row no other test of this file sends, so the result cache never answers it. */
const car = () => [4, 140, 90, 2264, 15.5, 1971 + ++seed / 1000];

/** The statuses of the responses a client saw, by method and path, to follow what it did. */
function recordingClient(key = TEST_API_KEY) {
  const seen: { method: string; path: string; status: number }[] = [];
  const client = new QuernClient({
    baseUrl,
    apiKey: key,
    fetch: async (request) => {
      const response = await fetch(request);
      seen.push({ method: request.method, path: new URL(request.url).pathname, status: response.status });
      return response;
    },
  });
  return { client, seen };
}

beforeAll(async () => {
  receiver = await WebhookReceiver.start();
  stack = await startStack({ QUERN_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${receiver.port}` });
  server = serve({ fetch: stack.app.fetch, hostname: '127.0.0.1', port: 0 }) as Server;
  if (!server.listening) await once(server, 'listening');
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const model = stack.manifest.models.find((m) => m.name === 'cars-mpg');
  if (!model) throw new Error('no cars-mpg in the manifest');
  cars = await DirectOrt.load(stack.config.QUERN_MODELS_DIR, model);
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await cars?.release();
  await stack?.close();
  await receiver?.close();
});

describe('@quern/client against a running stack', () => {
  it('predict: the model’s number, then the same from the cache', async () => {
    const client = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const features = car();
    const first = await client.predict({ model: 'cars-mpg', features });
    expect(first.cached).toBe(false);
    expect(first.job_id).toMatch(/^job_/);
    const [expected] = await cars.run([features]);
    expect(Math.abs((first.prediction as number) - (expected?.[0] as number))).toBeLessThan(1e-4);
    const again = await client.predict({ model: 'cars-mpg', features });
    expect(again).toMatchObject({ prediction: first.prediction, cached: true, job_id: null });
  });

  it('predict follows a 202 (the server’s wait ran out) to the job’s result', async () => {
    const { client, seen } = recordingClient();
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const features = car();
    await queue.pause();
    let pending: ReturnType<QuernClient['predict']> | undefined;
    try {
      pending = client.predict({ features }, { waitSeconds: 1, follow: { initialDelayMs: 20 } });
      await expect
        .poll(() => seen.some((s) => s.path === '/v1/predict' && s.status === 202), { timeout: 10_000 })
        .toBe(true);
    } finally {
      await queue.resume();
    }
    const answer = await pending;
    const [expected] = await cars.run([features]);
    expect(Math.abs((answer?.prediction as number) - (expected?.[0] as number))).toBeLessThan(1e-4);
    expect(answer).toMatchObject({ job_id: expect.stringMatching(/^job_/), job_row: 0, cached: false });
    // It got there by polling the job the 202 named.
    expect(seen.filter((s) => s.path === `/v1/jobs/${answer?.job_id}`).at(-1)?.status).toBe(200);
  });

  it('submit + wait: queued at once, then the succeeded job with its output', async () => {
    const { client, seen } = recordingClient();
    const queue = stack.services.jobs.queueOf('cars-mpg');
    const features = car();
    await queue.pause();
    let job: Awaited<ReturnType<QuernClient['submit']>>;
    try {
      job = await client.submit({ features, priority: 5 });
      expect(job).toMatchObject({ status: 'queued', model: 'cars-mpg', output: null });
    } finally {
      await queue.resume();
    }
    const done = await client.wait(job, { initialDelayMs: 20, timeoutMs: 30_000 });
    expect(done).toMatchObject({ id: job.id, status: 'succeeded', created_at: job.created_at });
    const [expected] = await cars.run([features]);
    const output = done.output as { prediction: number };
    expect(Math.abs(output.prediction - (expected?.[0] as number))).toBeLessThan(1e-4);
    expect(seen.filter((s) => s.path === `/v1/jobs/${job.id}`).every((s) => s.status === 200)).toBe(true);
  });

  it('events: queued, running, succeeded, each with the job, then the iteration ends', async () => {
    const client = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const queue = stack.services.jobs.queueOf('cars-mpg');
    await queue.pause();
    const events: JobEvent[] = [];
    let job: Awaited<ReturnType<QuernClient['submit']>> | undefined;
    try {
      job = await client.submit({ features: car() });
      const iterator = client.events(job.id);
      const first = await iterator.next();
      expect(first.value).toMatchObject({ event: 'queued', job: { id: job.id, status: 'queued' } });
      events.push(first.value as JobEvent);
      await queue.resume();
      for await (const event of { [Symbol.asyncIterator]: () => iterator }) events.push(event);
    } finally {
      await queue.resume();
    }
    expect(events.map((e) => e.event)).toEqual(['queued', 'running', 'succeeded']);
    expect(events.map((e) => e.job.status)).toEqual(['queued', 'running', 'succeeded']);
    expect(events.at(-1)?.job.output).toEqual({ prediction: expect.any(Number) });
    expect(events.at(-1)?.job).toEqual(await client.getJob(job?.id ?? ''));
  });

  it('submit with an Idempotency-Key gives the same job twice; cancel, then a typed 409; models', async () => {
    const client = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const queue = stack.services.jobs.queueOf('cars-mpg');
    await queue.pause();
    try {
      const body = { features: car() };
      const first = await client.submit(body, { idempotencyKey: `client-test-${seed}` });
      const again = await client.submit(body, { idempotencyKey: `client-test-${seed}` });
      expect(again.id).toBe(first.id);
      const canceled = await client.cancel(first.id);
      expect(canceled).toMatchObject({ id: first.id, status: 'canceled' });
      const twice = await client.cancel(first.id).catch((e: unknown) => e);
      expect(isProblem(twice, 'job_finished')).toBe(true);
      expect((twice as QuernProblemError).status).toBe(409);
      // A canceled job is final: wait() returns it rather than throwing.
      expect((await client.wait(first)).status).toBe('canceled');
    } finally {
      await queue.resume();
    }
    const models = await client.models();
    expect(models.map((m) => m.name)).toEqual(expect.arrayContaining(['cars-mpg', 'mlp-large']));
  });

  it('retry, the recent jobs page by page, and usage', async () => {
    const { client, seen } = recordingClient();
    const usedBefore = (await client.usage({ hours: 1 })).total.jobs;
    const queue = stack.services.jobs.queueOf('cars-mpg');
    await queue.pause();
    const ids: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const job = await client.submit({ features: car() });
        expect((await client.cancel(job.id)).status).toBe('canceled');
        ids.push(job.id);
      }
    } finally {
      await queue.resume();
    }
    // Newest first, two per page: the iteration follows next_cursor.
    const listed: string[] = [];
    for await (const job of client.jobs({ status: 'canceled', limit: 2 })) {
      expect(job.status).toBe('canceled');
      listed.push(job.id);
    }
    expect(listed.filter((id) => ids.includes(id))).toEqual([...ids].reverse());
    expect(seen.filter((r) => r.method === 'GET' && r.path === '/v1/jobs').length).toBeGreaterThanOrEqual(2);
    const page = await client.listJobs({ status: 'canceled', limit: 1 });
    expect(page.data.map((j) => j.id)).toEqual([ids[2]]);
    expect(page.next_cursor).not.toBeNull();
    // The last one, run again under its id; a job that is not final cannot be retried.
    const again = await client.retry(ids[2] as string);
    expect(again).toMatchObject({ id: ids[2], status: 'queued' });
    expect((await client.wait(again, { initialDelayMs: 20, timeoutMs: 30_000 })).status).toBe('succeeded');
    const refused = await client.retry(ids[2] as string).catch((e: unknown) => e);
    expect(isProblem(refused, 'job_not_retryable')).toBe(true);
    expect((refused as QuernProblemError).status).toBe(409);
    // Its run counts in the key's usage (workers write it as jobs end).
    await expect
      .poll(async () => (await client.usage({ hours: 1 })).total.jobs, { timeout: 10_000, interval: 100 })
      .toBeGreaterThanOrEqual(usedBefore + 1);
  });

  it('reaches any operation of the document through its typed api: Open Inference Protocol v2', async () => {
    const client = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const features = car();
    const { data, response } = await client.api.POST('/v2/models/{name}/infer', {
      params: { path: { name: 'cars-mpg' } },
      body: { id: 'client-oip', inputs: [{ name: 'features', shape: [1, 6], datatype: 'FP32', data: features }] },
    });
    expect(response.status).toBe(200);
    // The route may also answer bytes (the binary tensor extension) or a job (202): narrow to the JSON answer.
    const answer = typeof data === 'object' && data !== null && 'outputs' in data ? data : undefined;
    expect(answer).toMatchObject({ model_name: 'cars-mpg', id: 'client-oip' });
    const [expected] = await cars.run([features]);
    expect(Math.abs((answer?.outputs[0]?.data?.[0] ?? Number.NaN) - (expected?.[0] as number))).toBeLessThan(1e-4);
  });

  it('authenticates with access tokens: one given, or a function asked before each request', async () => {
    const keyed = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const issued: string[] = [];
    const renewing = new QuernClient({
      baseUrl,
      token: async () => {
        const { access_token } = await keyed.accessToken({ scopes: ['predict', 'jobs:read'], ttl_seconds: 60 });
        issued.push(access_token);
        return access_token;
      },
    });
    const job = await renewing.submit({ features: car() });
    expect((await renewing.wait(job, { initialDelayMs: 20 })).status).toBe('succeeded');
    expect(issued.length).toBeGreaterThanOrEqual(2);
    expect(new Set(issued).size).toBe(issued.length);
    // A token narrowed to reading cannot cancel: the scope is the token's, not the key's.
    const reader = new QuernClient({
      baseUrl,
      token: (await keyed.accessToken({ scopes: ['jobs:read'] })).access_token,
    });
    expect((await reader.getJob(job.id)).id).toBe(job.id);
    const refused = await reader.cancel(job.id).catch((e: unknown) => e);
    expect(isProblem(refused, 'forbidden')).toBe(true);
  });

  it('error answers are QuernProblemError with the problem’s code, fields and request id', async () => {
    const client = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const invalid = await client.predict({ features: [1, 2, 3] }).catch((err: unknown) => err);
    expect(invalid).toBeInstanceOf(QuernProblemError);
    expect(isProblem(invalid, 'validation_failed')).toBe(true);
    const problem = invalid as QuernProblemError;
    expect(problem.status).toBe(422);
    expect(problem.problem?.errors?.[0]?.field).toBe('features');
    expect(problem.requestId).toMatch(/^req_/);
    expect(problem.message).toContain('validation_failed');

    const unknownModel = await client.submit({ model: 'no-such-model', features: car() }).catch((e: unknown) => e);
    expect(isProblem(unknownModel, 'model_not_found')).toBe(true);

    // A job is its owner's alone: another principal's client sees no such job.
    const job = await client.submit({ features: car() });
    const other = new QuernClient({ baseUrl, apiKey: OTHER_API_KEY });
    const foreign = await other.getJob(job.id).catch((e: unknown) => e);
    expect(isProblem(foreign, 'job_not_found')).toBe(true);
    expect((foreign as QuernProblemError).status).toBe(404);
    await expect(other.wait(job.id)).rejects.toThrow(QuernProblemError);

    const anonymous = new QuernClient({ baseUrl });
    const refused = await anonymous.getJob(job.id).catch((e: unknown) => e);
    expect(isProblem(refused, 'unauthorized')).toBe(true);
    expect((refused as QuernProblemError).status).toBe(401);
    await expect(anonymous.events(job.id).next()).rejects.toSatisfy((e) => isProblem(e, 'unauthorized'));
  });

  it('verifyWebhook accepts a delivery the worker sent, and refuses it altered', async () => {
    const client = new QuernClient({ baseUrl, apiKey: TEST_API_KEY });
    const before = receiver.requests.length;
    const job = await client.submit({ features: car(), webhook: { url: receiver.url(), events: ['completed'] } });
    await receiver.waitFor(before + 1);
    const delivery = receiver.requests[before];
    if (!delivery) throw new Error('no delivery');
    const secret = await client.webhookSecret();
    const event = verifyWebhook(delivery.body, delivery.headers, secret);
    expect(event.type).toBe('job.completed');
    expect(event.data).toMatchObject({ id: job.id, status: 'succeeded', output: { prediction: expect.any(Number) } });
    // The same checks through Fetch's Headers, as a receiver on a fetch-based server has them.
    const headers = new Headers();
    for (const [name, value] of Object.entries(delivery.headers))
      if (typeof value === 'string') headers.set(name, value);
    expect(verifyWebhook(delivery.body, headers, secret).data.id).toBe(job.id);
    const forged = delivery.body.replace('"succeeded"', '"failed"');
    expect(forged).not.toBe(delivery.body);
    expect(() => verifyWebhook(forged, delivery.headers, secret)).toThrow();
    const otherSecret = await new QuernClient({ baseUrl, apiKey: OTHER_API_KEY }).webhookSecret();
    expect(() => verifyWebhook(delivery.body, delivery.headers, otherSecret)).toThrow();
  });

  it('type-checks and runs the README’s TypeScript example as written, against this API', async () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toContain("from '@quern/client'");
    // The same code, with the package found in this workspace and the API on this test's port.
    const source = (example ?? '')
      .replace("'@quern/client'", JSON.stringify(join(REPO_ROOT, 'packages/client/src/index.ts')))
      .replaceAll('http://127.0.0.1:8000', baseUrl);
    const dir = mkdtempSync(join(tmpdir(), 'quern-readme-'));
    try {
      writeFileSync(join(dir, 'example.mts'), source);
      // Strict, as the workspace is: a call the API no longer takes fails here.
      const tsconfig = {
        extends: join(REPO_ROOT, 'tsconfig.base.json'),
        compilerOptions: { allowImportingTsExtensions: true, typeRoots: [join(REPO_ROOT, 'node_modules/@types')] },
        files: ['example.mts'],
      };
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
      await promisify(execFile)(join(REPO_ROOT, 'node_modules/.bin/tsc'), ['-p', join(dir, 'tsconfig.json')], {
        timeout: 60_000,
      }).catch((err: { stdout?: string }) => {
        throw new Error(`the README's example does not type-check:\n${err.stdout ?? err}`);
      });
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(dir, 'example.mts')], {
        cwd: REPO_ROOT,
        env: { ...process.env, KEY: TEST_API_KEY },
        timeout: 30_000,
      });
      expect(stdout).toMatch(/^succeeded \{ prediction: \d+\.\d+ \} \d+\.\d+\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
