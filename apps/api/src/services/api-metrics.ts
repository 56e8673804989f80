import {
  collectProcessMetrics,
  createMetricsRegistry,
  LATENCY_BUCKETS_SECONDS,
  MetricNames,
  type ModelQueues,
  oldestWaitingTimestamp,
} from '@quern/shared';
import type { Queue } from 'bullmq';
import { Counter, Gauge, Histogram } from 'prom-client';

const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;

export interface QueueProbe {
  queues: ReadonlyMap<string, ModelQueues>;
  /** The webhook deliveries' queue. */
  webhooks?: Queue;
  workersAlive: () => Promise<number>;
}

/**
 * The API's Prometheus metrics on a registry of its own. Queue gauges are read from BullMQ
 * when Prometheus scrapes, so every API replica reports the same, current numbers.
 */
export function createApiMetrics(probe: QueueProbe, options: { exemplars?: boolean } = {}) {
  // Exemplars (a trace id on a latency bucket) exist only in the OpenMetrics format: with tracing
  // on, /metrics speaks it; without, the classic text format, as before.
  const exemplars = options.exemplars === true;
  const registry = createMetricsRegistry(exemplars, { service: 'api' });
  collectProcessMetrics(registry);

  const httpRequests = new Counter({
    name: MetricNames.httpRequests,
    help: 'HTTP requests by method, route template and status code.',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  // `trace_id` is the exemplar's label, never a series label.
  const httpDuration = new Histogram<'method' | 'route' | 'trace_id'>({
    name: MetricNames.httpRequestDuration,
    help: 'HTTP request duration in seconds, by method and route template.',
    labelNames: ['method', 'route'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
    enableExemplars: exemplars,
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
  const webhookQueueJobs = new Gauge({
    name: MetricNames.webhookQueueJobs,
    help: 'Webhook deliveries in the webhooks queue by BullMQ state (delayed: waiting for a retry), read at scrape time.',
    labelNames: ['state'],
    registers: [registry],
  });
  const webhookOldestAge = new Gauge({
    name: MetricNames.webhookQueueOldestWaitingAge,
    help:
      'Age in seconds of the oldest webhook delivery waiting to be sent (0 when none waits), counted from ' +
      'its first attempt: a retry that is due again shows how long its event has been undelivered.',
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
    const ageOf = (oldest: number | undefined) => (oldest === undefined ? 0 : Math.max(0, (now - oldest) / 1000));
    const { webhooks } = probe;
    await Promise.all([
      ...[...probe.queues].map(async ([model, queue]) => {
        const counts = await queue.getJobCounts(...QUEUE_STATES);
        for (const state of QUEUE_STATES) queueJobs.labels(model, state).set(counts[state] ?? 0);
        const oldest = await Promise.all(queue.partitions.map((partition) => oldestWaitingTimestamp(partition)));
        const stamps = oldest.filter((t): t is number => t !== undefined);
        oldestAge.labels(model).set(ageOf(stamps.length > 0 ? Math.min(...stamps) : undefined));
      }),
      webhooks &&
        (async () => {
          const counts = await webhooks.getJobCounts(...QUEUE_STATES);
          for (const state of QUEUE_STATES) webhookQueueJobs.labels(state).set(counts[state] ?? 0);
          webhookOldestAge.set(ageOf(await oldestWaitingTimestamp(webhooks)));
        })(),
    ]);
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
