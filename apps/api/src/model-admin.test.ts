import { seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { SCOPES } from './services/principal';
import { createServices, type Services } from './services/services';

/**
 * The version admin routes against a real Redis, with no worker running: what they refuse before
 * any worker is asked, and that a load does not hang when no worker can confirm it.
 */
let redis: TestRedis;
let services: Services;
let app: ReturnType<typeof createApp>;

beforeAll(async () => {
  redis = await startTestRedis();
  const config = testConfig(redis);
  const logger = createLogger('api', 'silent');
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  app = createApp(services, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
});

afterAll(async () => {
  await services?.close();
  await redis?.close();
});

const post = async (path: string, body: unknown) => {
  const res = await app.request(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
};

describe('model version admin without workers', () => {
  it('answers a load at once with no worker to confirm it (workers that start load it)', async () => {
    const loaded = await post('/v1/admin/models/cars-mpg/versions/1.0.0/load', { weight: 0 });
    expect(loaded.status).toBe(200);
    expect(loaded.body).toMatchObject({
      workers_ready: 0,
      version: { version: '1.0.0', state: 'live', default: true },
    });
    // Below the 60 s a load waits for slow workers: a load that waited for absent ones fails here.
  }, 30_000);

  it('refuses what cannot be routed, naming the field', async () => {
    expect((await post('/v1/admin/models/nope/versions/1.0.0/load', {})).status).toBe(404);
    expect((await post('/v1/admin/models/cars-mpg/versions/7.0.0/load', {})).status).toBe(404);
    const over = await post('/v1/admin/models/cars-mpg/routing', { weights: { '1.0.0': 150 } });
    expect(over.status).toBe(422);
    const notLive = await post('/v1/admin/models/cars-mpg/routing', { default_version: '7.0.0' });
    expect(notLive.status).toBe(422);
    expect(notLive.body.errors).toEqual([{ field: 'default_version', message: expect.stringContaining('not live') }]);
    const shadowDefault = await post('/v1/admin/models/cars-mpg/versions/1.0.0/load', { mode: 'shadow' });
    expect(shadowDefault.status).toBe(422);
    expect(shadowDefault.body.errors).toEqual([{ field: 'mode', message: expect.stringContaining('default version') }]);
    const unloadDefault = await post('/v1/admin/models/cars-mpg/versions/1.0.0/unload', {});
    expect(unloadDefault.status).toBe(422);
    expect(String(unloadDefault.body.detail)).toContain('make another version the default first');
  });

  it('lists the versions publicly, and 404s an unknown one', async () => {
    const list = await app.request('/v1/models/cars-mpg/versions');
    expect(list.status).toBe(200);
    expect(((await list.json()) as { data: unknown[] }).data).toEqual([
      expect.objectContaining({ version: '1.0.0', state: 'live', default: true, weight: 100 }),
    ]);
    expect((await app.request('/v1/models/cars-mpg/versions/7.0.0')).status).toBe(404);
    expect((await app.request('/v1/models/nope/versions')).status).toBe(404);
  });
});
