import {
  type ApiConfig,
  createRedis,
  KeySpace,
  type Logger,
  listenForReplies,
  loadManifest,
  type ModelManifest,
  ModelQueues,
  modelPartitions,
  newId,
  type RedisClient,
  SecretBox,
  type Tracing,
  UsageReader,
  WebhookDispatcher,
  WebhookSecrets,
  waitForRedis,
} from '@quern/shared';
import { Queue, QueueEvents } from 'bullmq';
import { type ApiMetrics, createApiMetrics } from './api-metrics';
import { AuthAttempts } from './auth-attempts';
import { CredentialAuthenticator } from './credential-authenticator';
import { DrainMeter } from './drain-meter';
import { FastLane } from './fast-lane';
import { Idempotency } from './idempotency';
import { JobService } from './job-service';
import { KeyStore } from './key-store';
import { ModelAdmin } from './model-admin';
import { ModelRegistry, syncModelRouting } from './model-registry';
import { SCOPES } from './principal';
import { RateLimits } from './rate-limits';
import { ResultCache } from './result-cache';
import { ResultWaiter } from './result-waiter';
import { SyncPath } from './sync-path';
import { TokenService } from './token-service';

/** Collaborators of every route, passed to `createApp` and read with `c.get('services')`. */
export interface Services {
  config: ApiConfig;
  /** Every BullMQ queue: one per model and partition, and the webhook deliveries. */
  queues: Queue[];
  models: ModelRegistry;
  /** Loads, unloads and traffic splits of model versions (the admin routes). */
  modelAdmin: ModelAdmin;
  jobs: JobService;
  waiter: ResultWaiter;
  cache: ResultCache;
  auth: CredentialAuthenticator;
  apiKeys: KeyStore;
  tokens: TokenService;
  rateLimits: RateLimits;
  /** Authentication under the per-address limit on failed attempts. */
  authAttempts: AuthAttempts;
  idempotency: Idempotency;
  /** The synchronous path (`/v1/predict`, `/v1/batch-predict`): enqueue, wait, answer. */
  sync: SyncPath;
  /** Small sync jobs pushed to an idle worker as well (QUERN_SYNC_FAST_LANE; undefined when off). */
  fastLane: FastLane | undefined;
  webhookSecrets: WebhookSecrets;
  /** Usage per key and hour, as the workers record it. */
  usage: UsageReader;
  metrics: ApiMetrics;
  /** The OpenTelemetry SDK, when the OTEL_* variables turn tracing on. */
  tracing: Tracing | undefined;
  /** The request-path connection is up now (an error while it is not is Redis's, not the caller's). */
  redisUp(): boolean;
  /** Redis answers and a worker heartbeat was seen within the TTL. */
  readiness(): Promise<{ redis: boolean; workers: number }>;
  /** Resolves when every request-path connection is up (rejects after `timeoutMs`). */
  connected(timeoutMs: number): Promise<void>;
  /**
   * Creates or refreshes QUERN_DEV_API_KEY as a premium key with every scope (never in production):
   * now when Redis is up, else when it next connects.
   */
  ensureDevKey(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens the API's Redis connections and builds its services. Only `main.ts` and tests call
 * this; `createApp` itself opens nothing.
 */
export function createServices(
  config: ApiConfig,
  manifest: ModelManifest,
  logger: Logger,
  tracing?: Tracing,
): Services {
  const keys = KeySpace.of(config, (model) => modelPartitions(manifest, model, config.QUERN_QUEUE_PARTITIONS));
  // Request path: fail fast (no offline queue) so a request gets 503 instead of hanging.
  const redis = createRedis(config, 'producer', { name: 'api', logger });
  // BullMQ's queues get a connection of their own: its many Lua scripts would make every
  // pipeline of `redis` (auto-pipelining batches each tick's commands) expensive to build.
  const queueRedis = createRedis(config, 'producer', { name: 'api-queues', logger, autoPipelining: false });
  const models = new ModelRegistry(manifest, () => loadManifest(config.QUERN_MODELS_DIR));
  const queues = new Map<string, ModelQueues>();
  const events = new Map<string, { queue: ModelQueues; events: QueueEvents[] }>();
  const eventConnections: RedisClient[] = [];
  for (const model of models.names()) {
    const queue = ModelQueues.open(keys, model, {
      connection: queueRedis,
      prefix: config.QUERN_REDIS_PREFIX,
    });
    queue.on('error', (err) => logger.warn({ model, err: err.message }, 'queue error'));
    queues.set(model, queue);
    // QueueEvents blocks on XREAD: it needs a connection of its own that waits out outages
    // (one per partition: on a Cluster each partition's stream may live on another shard).
    const streams = queue.partitions.map((partition) => {
      const connection = createRedis(config, 'consumer', { name: `api-events-${partition.name}`, logger });
      eventConnections.push(connection);
      return new QueueEvents(partition.name, { connection, prefix: config.QUERN_REDIS_PREFIX });
    });
    events.set(model, { queue, events: streams });
  }
  const webhookQueue = new Queue(keys.webhookQueue(), { connection: queueRedis, prefix: config.QUERN_REDIS_PREFIX });
  webhookQueue.on('error', (err) => logger.warn({ err: err.message }, 'queue error'));
  const workersAlive = async () => redis.zcount(keys.workers(), Date.now() - config.QUERN_HEARTBEAT_TTL_MS, '+inf');
  const metrics = createApiMetrics(
    { queues, webhooks: webhookQueue, workersAlive },
    { exemplars: tracing !== undefined },
  );
  const waiter = new ResultWaiter(events, config.QUERN_WAIT_POLL_INTERVAL_MS, logger, (source) =>
    metrics.syncAnswers.labels(source).inc(),
  );
  waiter.start();
  // Workers push the answers of this process's sync jobs to its own reply channel: a subscribed
  // connection takes no other commands, so it is one of its own.
  const instance = newId('api');
  const replies = createRedis(config, 'consumer', { name: 'api-replies', logger });
  eventConnections.push(replies);
  const listening = listenForReplies(replies, keys, instance, (reply) => waiter.deliver(reply)).catch((err: Error) =>
    logger.warn({ err: err.message }, 'reply channel not subscribed'),
  );
  // Model routing (versions, canary weights) changes at run time: heard on the same connection.
  const routing = syncModelRouting(models, redis, replies, keys, logger).catch((err: Error) =>
    logger.warn({ err: err.message }, 'model routing not read'),
  );
  const drain = new DrainMeter(events);

  const apiKeys = new KeyStore(redis, keys);
  const tokens = new TokenService(config, logger);
  const auth = new CredentialAuthenticator(apiKeys, tokens, config.QUERN_KEY_CACHE_TTL_MS);

  const fastLane = config.QUERN_SYNC_FAST_LANE
    ? new FastLane(redis, keys, config.QUERN_HEARTBEAT_TTL_MS, () => sync.callers, logger)
    : undefined;
  const jobs = new JobService({
    queues,
    models,
    config,
    redis,
    keys,
    drainRate: (model) => drain.perSecond(model),
    webhooks: new WebhookDispatcher(webhookQueue, redis, keys, config),
    tracer: tracing?.tracer,
    logger,
    recentReply: (id) => waiter.recentReply(id),
    fastLane,
  });
  const sync = new SyncPath(
    jobs,
    waiter,
    {
      maxRows: config.QUERN_SYNC_COALESCE_MAX_ROWS,
      maxInFlight: config.QUERN_SYNC_COALESCE_IN_FLIGHT,
      replyTo: instance,
    },
    logger,
    (model, mode) => metrics.jobsSubmitted.labels(model, mode).inc(),
  );

  return {
    config,
    tracing,
    queues: [...[...queues.values()].flatMap((q) => q.partitions), webhookQueue],
    models,
    modelAdmin: new ModelAdmin(models, redis, keys, config, logger),
    jobs,
    fastLane,
    sync,
    waiter,
    cache: new ResultCache(redis, keys, config.QUERN_CACHE_TTL_SECONDS),
    auth,
    authAttempts: new AuthAttempts(auth, redis, keys, config.QUERN_AUTH_FAILURES_PER_MINUTE),
    apiKeys,
    tokens,
    rateLimits: new RateLimits(redis, keys, config),
    idempotency: new Idempotency(redis, keys, config.QUERN_IDEMPOTENCY_TTL_SECONDS),
    usage: new UsageReader(redis, keys),
    webhookSecrets: new WebhookSecrets(
      redis,
      keys,
      new SecretBox(config.QUERN_SECRETS_KEY),
      config.QUERN_WEBHOOK_ROTATION_OVERLAP_SECONDS,
    ),
    metrics,
    redisUp: () => redis.status === 'ready',
    async connected(timeoutMs: number) {
      await Promise.all([waitForRedis(redis, timeoutMs), waitForRedis(queueRedis, timeoutMs), listening, routing]);
    },
    async readiness() {
      try {
        await redis.ping();
        return { redis: true, workers: await workersAlive() };
      } catch {
        return { redis: false, workers: 0 };
      }
    },
    async ensureDevKey() {
      if (!config.QUERN_DEV_API_KEY || config.NODE_ENV === 'production') return;
      if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
      await apiKeys.upsertKnownKey(config.QUERN_DEV_API_KEY, {
        name: 'development',
        tier: 'premium',
        scopes: [...SCOPES],
      });
    },
    async close() {
      // Bounded: with Redis gone, graceful closes would wait for it forever.
      const within = (p: Promise<unknown>) =>
        Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, 2_000).unref())]);
      await waiter.close();
      await within(Promise.all([...events.values()].flatMap((e) => e.events.map((stream) => stream.close()))));
      await within(Promise.all([...queues.values(), webhookQueue].map((q) => q.close())));
      for (const c of [...eventConnections, redis, queueRedis]) c.disconnect();
    },
  };
}
