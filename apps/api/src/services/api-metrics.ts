import type { RedisClient } from '@quern/shared';
import { LATENCY_BUCKETS_SECONDS, MetricNames } from '@quern/shared';
import type { Queue } from 'bullmq';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;

export interface QueueProbe {
  redis: RedisClient;
  queues: ReadonlyMap<string, Queue>;
  workersAlive: () => Promise<number>;
}

/** Every priority a job can have (`priority` is 1..100 in requests and config). */
const PRIORITIES = Array.from({ length: 100 }, (_, i) => i + 1);
const PRIORITY_SPAN = 0x100000000;

/**
 * Enqueue time of the oldest job still waiting in `queue`, or undefined. BullMQ keeps plain jobs
 * in the `wait` list (oldest at its right end) and prioritized ones in a sorted set scored
 * `priority · 2³² + arrival counter`, so the oldest of each priority is the first of its score
 * range: one read per priority that has jobs.
 */
async function oldestWaitingTimestamp(redis: RedisClient, queue: Queue): Promise<number | undefined> {
  const perPriority = await queue.getCountsPerPriority(PRIORITIES);
  const candidates: string[] = [];
  const [tail] = await redis.lrange(queue.toKey('wait'), -1, -1);
  if (tail) candidates.push(tail);
  const levels = PRIORITIES.filter((p) => (perPriority[String(p)] ?? 0) > 0);
  const firsts = await Promise.all(
    levels.map((p) =>
      redis.zrangebyscore(queue.toKey('prioritized'), p * PRIORITY_SPAN, (p + 1) * PRIORITY_SPAN - 1, 'LIMIT', 0, 1),
    ),
  );
  for (const [id] of firsts) if (id) candidates.push(id);
  const stamps = await Promise.all(candidates.map((id) => redis.hget(queue.toKey(id), 'timestamp')));
  const values = stamps.map(Number).filter((t) => Number.isFinite(t) && t > 0);
  return values.length > 0 ? Math.min(...values) : undefined;
}

/**
 * The API's Prometheus metrics on a registry of its own. Queue gauges are read from BullMQ
 * when Prometheus scrapes, so every API replica reports the same, current numbers.
 */
export function createApiMetrics(probe: QueueProbe) {
  const registry = new Registry();
  registry.setDefaultLabels({ service: 'api' });
  collectDefaultMetrics({ register: registry });

  const httpRequests = new Counter({
    name: MetricNames.httpRequests,
    help: 'HTTP requests by method, route template and status code.',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: MetricNames.httpRequestDuration,
    help: 'HTTP request duration in seconds, by method and route template.',
    labelNames: ['method', 'route'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const cacheLookups = new Counter({
    name: MetricNames.cacheLookups,
    help: 'Result-cache lookups in the API, per input row, by model and result (hit, miss).',
    labelNames: ['model', 'result'],
    registers: [registry],
  });
  const jobsSubmitted = new Counter({
    name: MetricNames.jobsSubmitted,
    help: 'Inference jobs enqueued, by model and mode (async, sync, batch).',
    labelNames: ['model', 'mode'],
    registers: [registry],
  });
  const syncWaitTimeouts = new Counter({
    name: MetricNames.syncWaitTimeouts,
    help: 'Sync requests whose wait ran out (answered 202 with the job), by model.',
    labelNames: ['model'],
    registers: [registry],
  });
  const syncAnswers = new Counter({
    name: MetricNames.syncAnswers,
    help:
      'Outcomes heard by waiting sync callers, by source: reply (pushed by the worker), events ' +
      '(QueueEvents: the reply was lost or late) or poll (the state poll: both were lost).',
    labelNames: ['source'],
    registers: [registry],
  });
  const authFailures = new Counter({
    name: MetricNames.authFailures,
    help: 'Requests refused for authentication (missing, unknown, revoked or expired credential).',
    labelNames: ['reason'],
    registers: [registry],
  });
  const rateLimited = new Counter({
    name: MetricNames.rateLimited,
    help: 'Requests refused by a rate limit, by tier.',
    labelNames: ['tier'],
    registers: [registry],
  });

  const queueJobs = new Gauge({
    name: MetricNames.queueJobs,
    help: 'Jobs in each model queue by BullMQ state, read from Redis at scrape time.',
    labelNames: ['model', 'state'],
    registers: [registry],
  });
  const oldestAge = new Gauge({
    name: MetricNames.queueOldestWaitingAge,
    help: 'Age in seconds of the oldest job waiting in each model queue (0 when none waits).',
    labelNames: ['model'],
    registers: [registry],
  });
  const workersAlive = new Gauge({
    name: MetricNames.workersAlive,
    help: 'Worker processes whose heartbeat was seen within the heartbeat TTL.',
    registers: [registry],
  });

  /** Reads queue depths from Redis; failures leave the previous values (the scrape still works). */
  async function refreshQueueGauges(): Promise<void> {
    const now = Date.now();
    await Promise.all(
      [...probe.queues].map(async ([model, queue]) => {
        const counts = await queue.getJobCounts(...QUEUE_STATES);
        for (const state of QUEUE_STATES) queueJobs.labels(model, state).set(counts[state] ?? 0);
        const oldest = await oldestWaitingTimestamp(probe.redis, queue);
        oldestAge.labels(model).set(oldest === undefined ? 0 : Math.max(0, (now - oldest) / 1000));
      }),
    );
    workersAlive.set(await probe.workersAlive());
  }

  return {
    registry,
    httpRequests,
    httpDuration,
    cacheLookups,
    jobsSubmitted,
    syncWaitTimeouts,
    syncAnswers,
    authFailures,
    rateLimited,
    refreshQueueGauges,
  };
}
export type ApiMetrics = ReturnType<typeof createApiMetrics>;
