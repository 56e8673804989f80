import { seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { SCOPES } from './services/principal';
import { createServices, type Services } from './services/services';

/** Admin actions on keys and the queue dashboard leave audit lines: who, what, when. */
let redis: TestRedis;
let services: Services;
let app: ReturnType<typeof createApp>;
let lines: string[] = [];
let adminId: string;
let predictOnlyKey: string;

const logs = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
const audits = () => logs().filter((l) => l.audit === true);

function send(method: string, path: string, key?: string, body?: unknown, extra: Record<string, string> = {}) {
  return app.request(path, {
    method,
    headers: {
      ...(key ? { 'x-api-key': key } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...extra,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

beforeAll(async () => {
  redis = await startTestRedis();
  const config = testConfig(redis);
  const logger = createLogger('api', 'info', { write: (line: string) => void lines.push(line.trim()) });
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), createLogger('api', 'silent'));
  app = createApp(services, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const admin = await services.apiKeys.findByKey(TEST_API_KEY);
  if (!admin) throw new Error('the seeded test key does not authenticate');
  adminId = admin.id;
  predictOnlyKey = (await services.apiKeys.create({ name: 'no-admin', tier: 'free', scopes: ['predict'] })).key;
});

beforeEach(() => {
  lines = [];
});

afterAll(async () => {
  await services?.close();
  await redis?.close();
});

describe('audit lines', () => {
  it('creating and revoking a key: who, what, which key, the status and when', async () => {
    const before = Date.now();
    const created = await send('POST', '/v1/admin/keys', TEST_API_KEY, { name: 'audited', scopes: ['predict'] });
    expect(created.status).toBe(201);
    const { id, key } = (await created.json()) as { id: string; key: string };
    expect((await send('DELETE', `/v1/admin/keys/${id}`, TEST_API_KEY)).status).toBe(200);

    const [create, revoke] = audits();
    expect(audits()).toHaveLength(2);
    expect(create).toMatchObject({
      msg: 'audit',
      action: 'api_key.create',
      target: id,
      status: 201,
      outcome: 'done',
      actor: { id: adminId, key_prefix: TEST_API_KEY.slice(0, 11), via: 'api_key' },
      request_id: created.headers.get('x-request-id'),
    });
    expect(revoke).toMatchObject({ action: 'api_key.revoke', target: id, status: 200, actor: { id: adminId } });
    const at = Date.parse(String(create?.at));
    expect(at).toBeGreaterThanOrEqual(before - 1);
    expect(at).toBeLessThanOrEqual(Date.now());
    // The new key itself, shown once to the caller, is in no log line.
    expect(lines.join('\n')).not.toContain(key);
  });

  it('reads of keys are audited too', async () => {
    expect((await send('GET', '/v1/admin/keys', TEST_API_KEY)).status).toBe(200);
    expect(audits()).toEqual([expect.objectContaining({ action: 'api_key.list', status: 200 })]);
  });

  it('refused attempts: without a credential (actor null) and without the admin scope (actor known)', async () => {
    expect((await send('POST', '/v1/admin/keys', undefined, { name: 'x' })).status).toBe(401);
    expect((await send('DELETE', '/v1/admin/keys/key_0000000000000000000000', predictOnlyKey)).status).toBe(403);
    const [anonymous, unscoped] = audits();
    expect(anonymous).toMatchObject({ action: 'api_key.create', status: 401, outcome: 'refused', actor: null });
    expect(unscoped).toMatchObject({
      action: 'api_key.revoke',
      target: 'key_0000000000000000000000',
      status: 403,
      outcome: 'refused',
      actor: { key_prefix: predictOnlyKey.slice(0, 11) },
    });
  });

  it('the queue dashboard: opening it and changes are audited, its polled reads are not', async () => {
    const queue = services.queues[0]?.name ?? '';
    expect((await send('GET', '/admin/queues', TEST_API_KEY)).status).toBe(200);
    expect((await send('GET', '/admin/queues/api/queues', TEST_API_KEY)).status).toBe(200);
    const sameSite = { 'sec-fetch-site': 'same-origin' };
    const pause = await send('PUT', `/admin/queues/api/queues/${queue}/pause`, TEST_API_KEY, undefined, sameSite);
    expect(pause.status).toBeLessThan(300);
    await services.queues[0]?.resume();
    const forged = await send('POST', `/admin/queues/api/queues/${queue}/add`, TEST_API_KEY, {}, sameSite);
    expect(forged.status).toBe(403);

    expect(audits()).toEqual([
      expect.objectContaining({
        action: 'queue_dashboard.open',
        status: 200,
        actor: expect.objectContaining({ id: adminId }),
      }),
      expect.objectContaining({ action: 'queue_dashboard.change', target: `PUT /api/queues/${queue}/pause` }),
      expect.objectContaining({
        action: 'queue_dashboard.change',
        target: `POST /api/queues/${queue}/add`,
        status: 403,
      }),
    ]);
  });
});
