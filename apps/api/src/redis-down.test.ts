import { seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from './app';
import { SCOPES } from './services/principal';
import { createServices, type Services } from './services/services';

let redis: TestRedis;
let services: Services;
let app: ReturnType<typeof createApp>;

const submit = () =>
  app.request('/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
    body: JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] }),
  });

beforeAll(async () => {
  // Its own redis-server, since this test stops and restarts it.
  redis = await startTestRedis({ forceOwn: true, appendonly: true });
  const config = testConfig(redis);
  const logger = createLogger('api', 'silent');
  services = createServices(config, loadManifest(config.QUERN_MODELS_DIR), logger);
  app = createApp(services, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
});

afterAll(async () => {
  await services.close();
  await redis.close();
});

describe('when Redis is unreachable', () => {
  it('answers 503 problem+json at once, keeps /health up, and recovers without a restart', async () => {
    expect((await submit()).status).toBe(202);
    await redis.server?.stop({ keepDir: true });

    const started = performance.now();
    const res = await submit();
    const elapsed = performance.now() - started;
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.headers.get('retry-after')).toBe('5');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body.code).toBe('redis_unavailable');
    expect(JSON.stringify(body)).not.toMatch(/ioredis|ECONNREFUSED|Stream isn't writeable|at \//);
    expect(elapsed).toBeLessThan(2_000);

    expect((await app.request('/health')).status).toBe(200);
    const ready = await app.request('/ready');
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ redis: 'unreachable' });

    await redis.server?.restart();
    await services.connected(15_000);
    expect((await submit()).status).toBe(202);
  });
});
