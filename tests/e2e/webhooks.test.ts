import { TEST_API_KEY } from '@quern/devkit';
import { type Config, type JobView, WEBHOOK_QUEUE } from '@quern/shared';
import { postWebhook } from '@quern/worker';
import { Queue } from 'bullmq';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';
import { WebhookReceiver } from '../support/webhook-receiver';

let stack: Stack;
let ok: WebhookReceiver;
let flaky: WebhookReceiver;
let gone: WebhookReceiver;
let redirect: WebhookReceiver;
let trap: WebhookReceiver;
const CAR = [4, 140, 90, 2264, 15.5, 1971];

beforeAll(async () => {
  trap = await WebhookReceiver.start();
  ok = await WebhookReceiver.start();
  // 500, 500, then 200.
  flaky = await WebhookReceiver.start((i) => ({ status: i < 2 ? 500 : 200 }));
  gone = await WebhookReceiver.start(() => ({ status: 410 }));
  redirect = await WebhookReceiver.start(() => ({ status: 302, headers: { location: trap.url('/stolen') } }));
  stack = await startStack({
    // Only these receivers are trusted; the trap (also on loopback) is not.
    QUERN_WEBHOOK_ALLOW_HOSTS: [ok, flaky, gone, redirect].map((r) => `127.0.0.1:${r.port}`).join(','),
    QUERN_WEBHOOK_RETRY_SCHEDULE_MS: '250,750,2000',
  });
});

afterAll(async () => {
  await stack?.close();
  for (const r of [ok, flaky, gone, redirect, trap]) await r?.close();
});

async function secret(): Promise<string> {
  return ((await (await stack.get('/v1/webhooks/secret')).json()) as { secret: string }).secret;
}

async function submit(url: string, events?: string[]): Promise<string> {
  const res = await stack.post('/v1/jobs', { features: CAR, webhook: { url, ...(events ? { events } : {}) } });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

async function job(id: string): Promise<JobView> {
  return (await (await stack.get(`/v1/jobs/${id}`)).json()) as JobView;
}

function headers(req: { headers: Record<string, string | string[] | undefined> }): Record<string, string> {
  return {
    'webhook-id': String(req.headers['webhook-id']),
    'webhook-timestamp': String(req.headers['webhook-timestamp']),
    'webhook-signature': String(req.headers['webhook-signature']),
  };
}

describe('signed webhooks', () => {
  it('delivers started and completed, each verified by standardwebhooks, carrying the job resource', async () => {
    const before = ok.requests.length;
    const id = await submit(ok.url(), ['started', 'completed']);
    await ok.waitFor(before + 2);
    const wh = new Webhook(await secret());
    const events = ok.requests
      .slice(before)
      .map((r) => wh.verify(r.body, headers(r)) as { type: string; data: JobView });
    expect(events.map((e) => e.type).sort()).toEqual(['job.completed', 'job.started']);
    const completed = events.find((e) => e.type === 'job.completed')?.data;
    expect(completed).toMatchObject({ id, status: 'succeeded' });
    expect(completed?.output).toEqual({ prediction: expect.any(Number) });
    // The job resource shows the delivery, and reads as succeeded by the time the receiver could ask.
    await expect.poll(async () => (await job(id)).webhook?.status, { timeout: 5_000 }).toBe('delivered');
    const view = await job(id);
    expect(view.status).toBe('succeeded');
    expect(view.webhook).toMatchObject({ url: ok.url(), attempts: 1, last_status_code: 200, next_attempt_at: null });
  });

  it('retries a receiver that answers 500 twice: three attempts, one webhook-id, growing gaps', async () => {
    const id = await submit(flaky.url());
    await flaky.waitFor(3);
    const ids = new Set(flaky.requests.map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(1);
    const wh = new Webhook(await secret());
    for (const r of flaky.requests) expect(() => wh.verify(r.body, headers(r))).not.toThrow();
    const [a, b, c] = flaky.requests.map((r) => r.at) as [number, number, number];
    expect(c - b).toBeGreaterThan(b - a);
    await expect.poll(async () => (await job(id)).webhook?.status, { timeout: 5_000 }).toBe('delivered');
    expect((await job(id)).webhook).toMatchObject({ attempts: 3, last_status_code: 200 });
  });

  it('sends canceled for a job canceled while queued (the API removes it; no worker sees it)', async () => {
    const queue = stack.services.jobs.queueOf('cars-mpg');
    await queue.pause();
    try {
      const before = ok.requests.length;
      const id = await submit(ok.url(), ['canceled', 'completed']);
      const res = await stack.app.request(`/v1/jobs/${id}`, {
        method: 'DELETE',
        headers: { 'x-api-key': TEST_API_KEY },
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as JobView).status).toBe('canceled');
      await ok.waitFor(before + 1);
      const [request] = ok.requests.slice(before);
      const event = new Webhook(await secret()).verify(request?.body ?? '', headers(request as never)) as {
        type: string;
        data: JobView;
      };
      expect(event.type).toBe('job.canceled');
      expect(event.data).toMatchObject({ id, status: 'canceled', output: null });
      await expect.poll(async () => (await job(id)).webhook?.status, { timeout: 5_000 }).toBe('delivered');
    } finally {
      await queue.resume();
    }
  });

  it('stops at 410 Gone after one attempt', async () => {
    const id = await submit(gone.url());
    await gone.waitFor(1);
    await expect.poll(async () => (await job(id)).webhook?.status, { timeout: 5_000 }).toBe('gone');
    const deliveries = new Queue(WEBHOOK_QUEUE, {
      connection: stack.client,
      prefix: stack.config.QUERN_REDIS_PREFIX,
    });
    const delivery = await deliveries.getJob(`${id}.completed`);
    expect(await delivery?.getState()).toBe('failed');
    expect(delivery?.attemptsMade).toBe(1);
    expect(gone.requests).toHaveLength(1);
    await deliveries.close();
  });

  it('during a secret rotation sends both signatures, each verifiable with its secret', async () => {
    const old = await secret();
    const rotated = await stack.post('/v1/webhooks/secret/rotate', {});
    const fresh = (await rotated.json()) as { secret: string; previous_expires_at: string | null };
    expect(fresh.secret).not.toBe(old);
    expect(fresh.previous_expires_at).not.toBeNull();
    const before = ok.requests.length;
    await submit(ok.url());
    await ok.waitFor(before + 1);
    const req = ok.requests[before] as Parameters<typeof headers>[0] & { body: string };
    expect(String(req.headers['webhook-signature']).split(' ')).toHaveLength(2);
    expect(() => new Webhook(fresh.secret).verify(req.body, headers(req))).not.toThrow();
    expect(() => new Webhook(old).verify(req.body, headers(req))).not.toThrow();
  });
});

describe('SSRF guard', () => {
  const refused = (port: number) => [
    `http://127.0.0.1:${port}/`,
    `http://[::1]:${port}/`,
    `http://[::ffff:127.0.0.1]:${port}/`,
    `http://0.0.0.0:${port}/`,
    'http://169.254.169.254/latest/meta-data/',
    'http://10.0.0.1/',
    'http://172.16.0.1/',
    'http://192.168.1.1/',
    'http://100.64.0.1/',
    'http://[fc00::1]/',
    `http://2130706433:${port}/`,
    `http://0177.0.0.1:${port}/`,
    `http://localhost:${port}/`,
  ];

  it('refuses every private, loopback and odd spelling of one at submit time with 422', async () => {
    const before = await stack.services.jobs.queueOf('cars-mpg').count();
    for (const url of refused(trap.port)) {
      const res = await stack.post('/v1/jobs', { features: CAR, webhook: { url } });
      expect(res.status, url).toBe(422);
      const body = (await res.json()) as { errors: { field: string }[] };
      expect(body.errors[0]?.field).toBe('webhook.url');
    }
    expect(await stack.services.jobs.queueOf('cars-mpg').count()).toBe(before);
    expect(trap.connections).toBe(0);
  });

  it('refuses them again when sending (a name is checked as the socket connects), and never follows a redirect', async () => {
    const policy = { allowHttp: true, allowHosts: [`127.0.0.1:${redirect.port}`] };
    for (const url of refused(trap.port)) {
      await expect(postWebhook(url, '{}', {}, { timeoutMs: 2_000, policy }), url).rejects.toThrow();
    }
    // The allowed receiver answers 302 to the trap: the delivery fails and is retried, the trap sees nothing.
    const id = await submit(redirect.url());
    await redirect.waitFor(1);
    await expect.poll(async () => (await job(id)).webhook?.last_status_code, { timeout: 5_000 }).toBe(302);
    expect((await job(id)).webhook?.status).toBe('retrying');
    expect(trap.connections).toBe(0);
    expect(trap.requests).toHaveLength(0);
  });
});

describe('secrets at rest', () => {
  it('keeps the signing secret only sealed in Redis', async () => {
    const plain = await secret();
    const config: Config = stack.config;
    const stored = await stack.client.hgetall(
      `${config.QUERN_REDIS_PREFIX}:whsec:${(await stack.services.apiKeys.findByKey(TEST_API_KEY))?.id}`,
    );
    expect(stored.current).toMatch(/^v1\./);
    expect(JSON.stringify(stored)).not.toContain(plain.slice(6));
  });
});
