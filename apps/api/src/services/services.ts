import { type Config, createRedis, KeySpace, type Logger, type ModelManifest } from '@quern/shared';
import { Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { type ApiMetrics, createApiMetrics } from './api-metrics';
import { JobService } from './job-service';
import { ModelRegistry } from './model-registry';
import type { Authenticator } from './principal';
import { ResultCache } from './result-cache';
import { ResultWaiter } from './result-waiter';
import { StaticKeyAuthenticator } from './static-key-authenticator';

/** Collaborators of every route, passed to `createApp` and read with `c.get('services')`. */
export interface Services {
  config: Config;
  keys: KeySpace;
  redis: Redis;
  models: ModelRegistry;
  jobs: JobService;
  waiter: ResultWaiter;
  cache: ResultCache;
  auth: Authenticator;
  metrics: ApiMetrics;
  /** Redis answers and a worker heartbeat was seen within the TTL. */
  readiness(): Promise<{ redis: boolean; workers: number }>;
  close(): Promise<void>;
}

/**
 * Opens the API's Redis connections and builds its services. Only `main.ts` and tests call
 * this; `createApp` itself opens nothing.
 */
export function createServices(config: Config, manifest: ModelManifest, logger: Logger): Services {
  const keys = new KeySpace(config.QUERN_REDIS_PREFIX);
  // Request path: fail fast (no offline queue) so a request gets 503 instead of hanging.
  const redis = createRedis(config.REDIS_URL, 'producer', { name: 'api', logger });
  const models = new ModelRegistry(manifest);
  const queues = new Map<string, Queue>();
  const events = new Map<string, { queue: Queue; events: QueueEvents }>();
  const eventConnections: Redis[] = [];
  for (const model of models.names()) {
    const queue = new Queue(keys.inferenceQueue(model), { connection: redis, prefix: config.QUERN_REDIS_PREFIX });
    queue.on('error', (err) => logger.warn({ model, err: err.message }, 'queue error'));
    queues.set(model, queue);
    // QueueEvents blocks on XREAD: it needs a connection of its own that waits out outages.
    const connection = createRedis(config.REDIS_URL, 'consumer', { name: `api-events-${model}`, logger });
    eventConnections.push(connection);
    const queueEvents = new QueueEvents(keys.inferenceQueue(model), {
      connection,
      prefix: config.QUERN_REDIS_PREFIX,
    });
    events.set(model, { queue, events: queueEvents });
  }
  const waiter = new ResultWaiter(events, config.QUERN_WAIT_POLL_INTERVAL_MS, logger);
  waiter.start();

  const workersAlive = async () => redis.zcount(keys.workers(), Date.now() - config.QUERN_HEARTBEAT_TTL_MS, '+inf');

  return {
    config,
    keys,
    redis,
    models,
    jobs: new JobService(queues, models, config),
    waiter,
    cache: new ResultCache(redis, keys, config.QUERN_CACHE_TTL_SECONDS),
    auth: new StaticKeyAuthenticator(config.QUERN_API_KEYS, config.QUERN_DEV_API_KEY),
    metrics: createApiMetrics({ queues, workersAlive }),
    async readiness() {
      try {
        await redis.ping();
        return { redis: true, workers: await workersAlive() };
      } catch {
        return { redis: false, workers: 0 };
      }
    },
    async close() {
      await waiter.close();
      await Promise.all([...events.values()].map((e) => e.events.close().catch(() => undefined)));
      await Promise.all([...queues.values()].map((q) => q.close().catch(() => undefined)));
      await Promise.all(eventConnections.map((c) => c.quit().catch(() => c.disconnect())));
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
