import { createApp, createServices, SCOPES, type Services } from '@quern/api';
import { seedTestKeys, startTestRedis, TEST_API_KEY, type TestRedis, testConfig } from '@quern/devkit';
import { type Config, createLogger, KeySpace, loadManifest, type ModelManifest } from '@quern/shared';
import { WorkerRuntime } from '@quern/worker';
import { Redis } from 'ioredis';

export interface Stack {
  redis: TestRedis;
  /** A Redis connection of the test's own, to look at or plant what the processes keep. */
  client: Redis;
  /** The stack's key layout (packages/shared/src/keys.ts). */
  keys: KeySpace;
  config: Config;
  manifest: ModelManifest;
  services: Services;
  app: ReturnType<typeof createApp>;
  worker: WorkerRuntime;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response> | Response;
  get(path: string, key?: string): Promise<Response> | Response;
  close(): Promise<void>;
}

/**
 * API and one worker runtime in this process, on a Redis of the test's own: the whole request
 * path with real Redis, BullMQ and ONNX Runtime, driven through `app.request`. With `redis`, the
 * stack uses that Redis and prefix instead (one stack after another on the same data, as in an
 * upgrade) and leaves it open when it closes.
 */
export async function startStack(
  overrides: Record<string, string> = {},
  options: { redis?: TestRedis } = {},
): Promise<Stack> {
  const redis = options.redis ?? (await startTestRedis());
  const config = testConfig(redis, overrides);
  const manifest = loadManifest(config.QUERN_MODELS_DIR);
  const logger = createLogger('api', 'silent');
  const services = createServices(config, manifest, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const app = createApp(services, logger);
  const worker = await WorkerRuntime.start({ config, manifest, logger: createLogger('worker', 'silent') });
  const client = new Redis(redis.url);
  return {
    redis,
    client,
    keys: new KeySpace(config.QUERN_REDIS_PREFIX),
    config,
    manifest,
    services,
    app,
    worker,
    post: (path, body, headers = {}) =>
      app.request(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...headers },
        body: JSON.stringify(body),
      }),
    get: (path, key = TEST_API_KEY) => app.request(path, { headers: { 'x-api-key': key } }),
    async close() {
      client.disconnect();
      await worker.close(10_000);
      await services.close();
      if (!options.redis) await redis.close();
    },
  };
}
