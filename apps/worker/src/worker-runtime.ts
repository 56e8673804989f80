import {
  AdmissionLedger,
  createRedis,
  jobRetention,
  KeySpace,
  type Logger,
  listenForRouting,
  type ModelManifest,
  ModelQueues,
  modelPartitions,
  newId,
  parseModelRef,
  type RedisClient,
  type Tracing,
  UsageRecorder,
  WebhookDispatcher,
  type WorkerConfig,
} from '@quern/shared';
import { Queue, Worker } from 'bullmq';
import { BatchScheduler } from './batch-scheduler';
import { CancelListener } from './cancel-listener';
import { type FastJobHandler, FastLaneListener } from './fast-lane';
import { Heartbeat } from './heartbeat';
import { InferencePool } from './inference-pool';
import { createFailedListener, createInferenceProcessor } from './inference-processor';
import { JobTracer } from './job-tracing';
import { createWorkerMetrics, type WorkerMetrics } from './metrics';
import { ModelSet, resolveServedModels, type ServedModel } from './models';
import { RedisPipeline } from './redis-pipeline';
import { requeueListeners } from './requeue';
import { rowsReleaseListeners } from './rows-release';
import { ShadowRunner } from './shadow-runner';
import { TurnLimiter } from './turn-limiter';

import { createWebhookSender } from './webhook-sender';

/** Most queued jobs read to tell whether a draining version still has one. */
const DRAIN_SCAN_MAX_JOBS = 5_000;

export interface WorkerRuntimeOptions {
  config: WorkerConfig;
  manifest: ModelManifest;
  logger: Logger;
  /** The OpenTelemetry SDK, when the OTEL_* variables turn tracing on. */
  tracing?: Tracing | undefined;
}

/**
 * Everything one worker process runs: the inference thread pool, the batch scheduler, one
 * BullMQ consumer per served model and the heartbeat. `main.ts` adds signals and the HTTP port;
 * tests start it in-process against their own Redis.
 */
export class WorkerRuntime {
  private closing: Promise<{ forced: boolean }> | undefined;
  private readonly consumers: Worker[] = [];
  private readonly queues: Queue[] = [];
  private cancels: CancelListener | undefined;
  private fastLane: FastLaneListener | undefined;
  /** Connections this runtime opened; BullMQ does not close connections it was handed. */
  private readonly connections: RedisClient[] = [];

  readonly id: string;
  /** The default version of each model this worker consumes (one consumer each). */
  readonly served: ServedModel[];
  /** Every version held now, kept in step with the model routing in Redis. */
  readonly models: ModelSet;
  readonly pool: InferencePool;
  readonly scheduler: BatchScheduler;
  readonly metrics: WorkerMetrics;
  private readonly options: WorkerRuntimeOptions;
  private readonly redis: RedisClient;
  private readonly heartbeat: Heartbeat;
  private readonly tracer: JobTracer | undefined;

  private constructor(parts: {
    id: string;
    options: WorkerRuntimeOptions;
    served: ServedModel[];
    models: ModelSet;
    pool: InferencePool;
    scheduler: BatchScheduler;
    metrics: WorkerMetrics;
    redis: RedisClient;
    heartbeat: Heartbeat;
    tracer: JobTracer | undefined;
  }) {
    this.id = parts.id;
    this.options = parts.options;
    this.served = parts.served;
    this.models = parts.models;
    this.pool = parts.pool;
    this.scheduler = parts.scheduler;
    this.metrics = parts.metrics;
    this.redis = parts.redis;
    this.heartbeat = parts.heartbeat;
    this.tracer = parts.tracer;
  }

  static async start(options: WorkerRuntimeOptions): Promise<WorkerRuntime> {
    const { config, manifest, logger } = options;
    const defaults = await resolveServedModels(manifest, config.QUERN_MODELS_DIR, config.QUERN_WORKER_MODELS);
    const keys = KeySpace.of(config, (model) => modelPartitions(manifest, model, config.QUERN_QUEUE_PARTITIONS));
    const redis = createRedis(config, 'consumer', { name: 'worker', logger });
    const id = newId('wrk');
    // Every version the model routing holds (the manifest's, until an operator changes it).
    const models = new ModelSet(manifest, {
      modelsDir: config.QUERN_MODELS_DIR,
      names: defaults.map((m) => m.entry.name),
      workerId: id,
      redis,
      keys,
      logger,
      sessionsPerVersion: config.QUERN_WORKER_THREADS + (config.QUERN_WORKER_INLINE_MAX_ROWS > 0 ? 1 : 0),
      memoryBudgetMb: config.QUERN_WORKER_MODEL_MEMORY_MB,
    });
    const versions = await models.initial();
    // One consumer per model: its routing's default version (or the manifest's) is the processor's own.
    const served = defaults.map(
      (d) =>
        versions.find(
          (v) => v.entry.name === d.entry.name && v.entry.version === models.routing(d.entry.name)?.default_version,
        ) ?? d,
    );
    let scheduler: BatchScheduler | undefined;
    const pool = new InferencePool({
      models: versions.map((m) => m.pool),
      threads: config.QUERN_WORKER_THREADS,
      inline: { maxRows: config.QUERN_WORKER_INLINE_MAX_ROWS, maxMs: config.QUERN_WORKER_INLINE_MAX_MS },
      onIdle: () => scheduler?.pump(),
      onThreadExit: ({ index, code }) => logger.warn({ thread: index, code }, 'inference thread exited'),
    });
    await pool.start();
    const metrics = createWorkerMetrics({
      busyMs: () => pool.busyMs(),
      threads: pool.size,
      exemplars: options.tracing !== undefined,
    });
    const tracer = options.tracing && new JobTracer(options.tracing.tracer);
    scheduler = new BatchScheduler(
      pool,
      versions.map((m) => ({
        name: m.pool.name,
        features: m.pool.features,
        outputSize: m.pool.outputSize,
        maxBatchSize: m.entry.batching.max_batch_size,
        maxDelayMs: m.entry.batching.max_delay_ms,
      })),
      {
        onBatch: ({ model: ref, rows, inferenceMs }) => {
          const { name: model, version } = parseModelRef(ref);
          metrics.batchSize.labels(model).observe(rows);
          metrics.versionBatchSize.labels(model, version ?? '').observe(rows);
          metrics.inferenceDuration.labels(model).observe(inferenceMs / 1000);
        },
        ...(tracer
          ? {
              onTracedBatch: (batch) =>
                tracer.batch({
                  ...batch,
                  model: parseModelRef(batch.model).name,
                  version: parseModelRef(batch.model).version ?? '',
                  finishedAt: Date.now(),
                }),
            }
          : {}),
      },
    );
    await models.attach(pool, scheduler);
    const runtime = new WorkerRuntime({
      id,
      options,
      served,
      models,
      pool,
      scheduler,
      metrics,
      redis,
      heartbeat: new Heartbeat(
        redis,
        keys,
        id,
        config.QUERN_HEARTBEAT_INTERVAL_MS,
        config.QUERN_HEARTBEAT_TTL_MS,
        logger,
      ),
      tracer,
    });
    await runtime.startConsumers(keys);
    return runtime;
  }

  private async startConsumers(keys: KeySpace): Promise<void> {
    const { config, logger } = this.options;
    const retention = jobRetention(config);
    this.connections.push(this.redis);
    // Queue producers (webhook deliveries, state checks) get their own connection: BullMQ defines its
    // Lua scripts on it, which would make every pipeline the processor builds on `redis` costly.
    const queueRedis = createRedis(config, 'consumer', { name: 'worker-queues', logger });
    this.connections.push(queueRedis);
    const cancels = new CancelListener(config, keys, this.scheduler, logger);
    this.cancels = cancels;
    await cancels.start();
    const webhookQueue = new Queue(keys.webhookQueue(), { connection: queueRedis, prefix: config.QUERN_REDIS_PREFIX });
    this.queues.push(webhookQueue);
    // Every BullMQ object gets an error listener (BullMQ prints errors nobody listens to).
    webhookQueue.on('error', (err) => logger.warn({ err: err.message }, 'queue error'));
    const webhooks = new WebhookDispatcher(webhookQueue, this.redis, keys, config);
    const inferenceQueues = new Map<string, ModelQueues>();
    const turns = new TurnLimiter(64);
    const ledger = new AdmissionLedger(this.redis, keys, (err) =>
      logger.warn({ err: err.message }, 'rows of finished jobs not released'),
    );
    const releases = rowsReleaseListeners(
      ledger,
      new UsageRecorder(this.redis, keys, config.QUERN_USAGE_RETENTION_DAYS, (err) =>
        logger.warn({ err: err.message }, 'usage of finished jobs not recorded'),
      ),
    );
    // Refusals come in every flush while Redis is full: one line per 5 s, with the count since.
    let refusedSince = 0;
    let lastRefusalLog = 0;
    const io = new RedisPipeline(this.redis, config.QUERN_CACHE_TTL_SECONDS, (errors, commands) => {
      refusedSince += errors.length;
      if (Date.now() - lastRefusalLog < 5_000) return;
      lastRefusalLog = Date.now();
      logger.warn(
        { refused: refusedSince, commands, err: errors[0]?.message },
        'redis refused result-cache writes or replies (jobs still complete; callers fall back to queue events)',
      );
      refusedSince = 0;
    });
    const shadows = new ShadowRunner({
      models: this.models,
      scheduler: this.scheduler,
      redis: this.redis,
      keys,
      metrics: this.metrics,
      logger,
      // Live rows waiting for more than a batch per thread: the shadow copies wait for a calmer moment.
      maxPendingRows: Math.max(...this.served.map((m) => m.entry.batching.max_batch_size)) * this.pool.size,
    });
    const fastHandlers = new Map<string, FastJobHandler>();
    for (const model of this.served) {
      const name = model.entry.name;
      const concurrency =
        config.QUERN_WORKER_PREFETCH > 0
          ? config.QUERN_WORKER_PREFETCH
          : Math.min(1024, model.entry.batching.max_batch_size * this.pool.size * 2);
      const processor = createInferenceProcessor(model, {
        config,
        keys,
        io,
        scheduler: this.scheduler,
        cancels,
        webhooks,
        turns,
        metrics: this.metrics,
        logger,
        tracer: this.tracer,
        models: this.models,
        shadows,
        workerId: this.id,
      });
      fastHandlers.set(name, processor.fast);
      const queues = ModelQueues.open(keys, name, {
        connection: queueRedis,
        prefix: config.QUERN_REDIS_PREFIX,
      });
      this.queues.push(...queues.partitions);
      queues.on('error', (err) => logger.warn({ model: name, err: err.message }, 'queue error'));
      inferenceQueues.set(name, queues);
      // One consumer per partition, all feeding the model's one processor: the batch scheduler
      // batches across partitions, and the prefetch is shared among them.
      const onFailed = createFailedListener(model.entry, { metrics: this.metrics, webhooks, logger });
      for (const partition of queues.partitions) {
        const connection = createRedis(config, 'consumer', { name: `worker-${partition.name}`, logger });
        this.connections.push(connection);
        const consumer = new Worker(partition.name, processor, {
          connection,
          prefix: config.QUERN_REDIS_PREFIX,
          name: this.id,
          concurrency: Math.max(1, Math.ceil(concurrency / queues.partitions.length)),
          lockDuration: config.QUERN_LOCK_DURATION_MS,
          stalledInterval: config.QUERN_STALLED_INTERVAL_MS,
          maxStalledCount: config.QUERN_MAX_STALLED_COUNT,
          removeOnComplete: retention.removeOnComplete,
          removeOnFail: retention.removeOnFail,
        });
        consumer.on('failed', onFailed);
        consumer.on('completed', releases.completed);
        consumer.on('failed', releases.failed);
        if (config.QUERN_FAIR_SHARE) {
          // A retried or stalled job goes back to the front of its band, not behind it.
          const requeue = requeueListeners(ledger, `${config.QUERN_REDIS_PREFIX}:${partition.name}`, (err) =>
            logger.warn({ model: name, err: err.message }, 'requeued job not placed'),
          );
          consumer.on('failed', requeue.failed);
          consumer.on('stalled', requeue.stalled);
        }
        consumer.on('error', (err) => logger.warn({ model: name, err: err.message }, 'consumer error'));
        this.consumers.push(consumer);
      }
    }
    this.models.probeQueues(async (name, version) => {
      const queues = inferenceQueues.get(name);
      if (!queues) return true;
      const states = ['waiting', 'prioritized', 'delayed', 'active', 'waiting-children'] as const;
      const counts = await queues.getJobCounts(...states);
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      if (total === 0) return false;
      // A deep queue is not read job by job: the version then stays until its drain ends.
      if (total > DRAIN_SCAN_MAX_JOBS) return true;
      const jobs = (await Promise.all(queues.partitions.map((q) => q.getJobs([...states], 0, total)))).flat();
      return jobs.some((job) => (job?.data as { model_version?: unknown } | undefined)?.model_version === version);
    });
    // Webhook deliveries: I/O bound, on their own queue, sent by every worker process.
    const sender = createWebhookSender({
      config,
      keys,
      redis: this.redis,
      inferenceQueues,
      metrics: this.metrics,
      logger,
      tracer: this.options.tracing?.tracer,
    });
    this.consumers.push(sender.worker);
    this.connections.push(sender.connection);
    // Versions are loaded and released at run time: every routing change is heard here.
    const routing = createRedis(config, 'consumer', { name: 'worker-routing', logger });
    this.connections.push(routing);
    await listenForRouting(routing, keys, (name) => {
      this.models
        .reconcile(name)
        .catch((err: Error) => logger.warn({ model: name, err: err.message }, 'model routing not applied'));
    });
    this.heartbeat.start();
    if (config.QUERN_SYNC_FAST_LANE) {
      this.fastLane = new FastLaneListener(
        config,
        this.redis,
        keys,
        this.id,
        fastHandlers,
        config.QUERN_HEARTBEAT_INTERVAL_MS,
        config.QUERN_HEARTBEAT_TTL_MS,
        logger,
      );
      await this.fastLane.start();
    }
    logger.info(
      {
        worker_id: this.id,
        models: this.models.all().map((m) => m.pool.name),
        threads: this.pool.size,
        inline_models: this.pool.inlineModels(),
      },
      'worker started',
    );
  }

  /** True once every consumer is connected and not shutting down. */
  isReady(): boolean {
    return this.closing === undefined && this.consumers.every((c) => c.isRunning()) && this.redis.status === 'ready';
  }

  /**
   * Stops taking jobs, lets the jobs in hand (fetched, batched or running) finish, then closes.
   * After `timeoutMs` it stops waiting: unfinished jobs keep their lock until it expires and
   * another worker picks them up as stalled, so nothing is lost either way.
   */
  close(timeoutMs = this.options.config.QUERN_SHUTDOWN_TIMEOUT_MS): Promise<{ forced: boolean }> {
    this.closing ??= (async () => {
      // No more early answers (at once; the withdrawal's round trips go on beside the drain) and no
      // more fetches: jobs in hand still finish, through BullMQ, which the drain waits for.
      const withdrawn = this.fastLane?.stop();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const drained = Promise.all(this.consumers.map((c) => c.close())).then(() => 'drained' as const);
      const outcome = await Promise.race([drained, timedOut]);
      clearTimeout(timer);
      const forced = outcome === 'timeout';
      if (forced) await Promise.all(this.consumers.map((c) => c.close(true)));
      // (Raced with a second: during a Redis outage its withdrawal never returns; the TTL ends it.)
      await Promise.race([withdrawn, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
      this.scheduler.close();
      this.models.stop();
      await this.cancels?.close();
      await Promise.all(this.queues.map((q) => q.close().catch(() => undefined)));
      await this.heartbeat.stop();
      await this.pool.close();
      await Promise.all(this.connections.map((c) => c.quit().catch(() => c.disconnect())));
      return { forced };
    })();
    return this.closing;
  }
}
