import {
  BATCH_SIZE_BUCKETS,
  collectProcessMetrics,
  createMetricsRegistry,
  LATENCY_BUCKETS_SECONDS,
  MetricNames,
} from '@quern/shared';
import { Counter, Gauge, Histogram } from 'prom-client';

/** The worker's Prometheus metrics, on a registry of its own (no global state between tests). */
export function createWorkerMetrics(options: { busyMs: () => number; threads: number; exemplars?: boolean }) {
  // Exemplars exist only in the OpenMetrics format: with tracing on, /metrics speaks it.
  const exemplars = options.exemplars === true;
  const registry = createMetricsRegistry(exemplars, { service: 'worker' });
  collectProcessMetrics(registry);

  const batchSize = new Histogram({
    name: MetricNames.batchSize,
    help: 'Rows per ONNX Runtime call.',
    labelNames: ['model'],
    buckets: BATCH_SIZE_BUCKETS,
    registers: [registry],
  });
  const inferenceDuration = new Histogram({
    name: MetricNames.inferenceDuration,
    help: 'Time inside one ONNX Runtime call (one batch), in seconds.',
    labelNames: ['model'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  // `trace_id` (on both job histograms) is the exemplar's label, never a series label.
  const queueWait = new Histogram<'model' | 'trace_id'>({
    name: MetricNames.jobQueueWait,
    help: 'Time from enqueue to the start of the job’s batch, in seconds.',
    labelNames: ['model'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
    enableExemplars: exemplars,
  });
  const jobDuration = new Histogram<'model' | 'trace_id'>({
    name: MetricNames.jobDuration,
    help: 'Time from enqueue to the job’s result being published, in seconds.',
    labelNames: ['model'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
    enableExemplars: exemplars,
  });
  const jobsFinished = new Counter({
    name: MetricNames.jobsFinished,
    help: 'Jobs this worker finished, by model and outcome (succeeded, failed, retried, canceled, expired).',
    labelNames: ['model', 'outcome'],
    registers: [registry],
  });
  const fastLane = new Counter({
    name: MetricNames.fastLane,
    help:
      'Sync jobs pushed to this worker over the fast lane, by outcome: answered (before BullMQ handed the job ' +
      'over), busy (rows were waiting: left to the queue), skipped (not eligible: left to the queue); and ' +
      'recorded: jobs pushed to another worker that BullMQ handed this one, completed from that early answer.',
    labelNames: ['model', 'outcome'],
    registers: [registry],
  });
  // Per version, so an operator can compare a canary with the version it may replace.
  const versionJobs = new Counter({
    name: MetricNames.versionJobs,
    help: 'Jobs this worker finished, by model, version and outcome (succeeded, failed, retried, canceled, expired).',
    labelNames: ['model', 'version', 'outcome'],
    registers: [registry],
  });
  const versionJobDuration = new Histogram({
    name: MetricNames.versionJobDuration,
    help: 'Time from enqueue to the job’s result being published, by model version, in seconds.',
    labelNames: ['model', 'version'],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const versionBatchSize = new Histogram({
    name: MetricNames.versionBatchSize,
    help: 'Rows per ONNX Runtime call, by model version (shadow runs included).',
    labelNames: ['model', 'version'],
    buckets: BATCH_SIZE_BUCKETS,
    registers: [registry],
  });
  const shadowRows = new Counter({
    name: MetricNames.shadowRows,
    help: 'Live rows a shadow version also ran, by outcome (compared, skipped: the worker was busy, failed).',
    labelNames: ['model', 'version', 'outcome'],
    registers: [registry],
  });
  const shadowRowMeanAbsDiff = new Histogram({
    name: MetricNames.shadowRowMeanAbsDiff,
    help: 'Per sampled row, the mean absolute difference between the shadow version’s outputs and the live ones.',
    labelNames: ['model', 'version'],
    buckets: [1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 100],
    registers: [registry],
  });
  const shadowMaxAbsDiff = new Gauge({
    name: MetricNames.shadowMaxAbsDiff,
    help: 'Largest absolute difference between a shadow version’s output and the live one seen by this worker.',
    labelNames: ['model', 'version'],
    registers: [registry],
  });
  new Gauge({
    name: MetricNames.poolThreads,
    help: 'Inference threads in this worker.',
    registers: [registry],
    collect() {
      this.set(options.threads);
    },
  });
  // Busy ratio over the interval since the previous scrape, so it tracks the current load.
  let lastBusy = options.busyMs();
  let lastAt = performance.now();
  new Gauge({
    name: MetricNames.poolBusyRatio,
    help: 'Fraction of inference-thread time spent running batches since the previous scrape (0..1).',
    registers: [registry],
    collect() {
      const busy = options.busyMs();
      const now = performance.now();
      const capacity = (now - lastAt) * options.threads;
      this.set(capacity > 0 ? Math.min(1, Math.max(0, (busy - lastBusy) / capacity)) : 0);
      lastBusy = busy;
      lastAt = now;
    },
  });

  const webhookDeliveries = new Counter({
    name: MetricNames.webhookDeliveries,
    help: 'Webhook delivery attempts by outcome (delivered, retried, failed, gone, refused).',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const webhookDuration = new Histogram({
    name: MetricNames.webhookDeliveryDuration,
    help: 'Duration of one webhook delivery attempt, in seconds.',
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });

  const webhookDeferred = new Counter({
    name: MetricNames.webhookDeferred,
    help:
      'Webhook deliveries put back without an attempt, by reason (owner_busy: the principal has ' +
      'QUERN_WEBHOOK_PER_OWNER_CONCURRENCY deliveries in flight here; endpoint_open: the receiver origin’s ' +
      'circuit is open or being probed; result_pending: the job is still being published).',
    labelNames: ['reason'],
    registers: [registry],
  });
  const webhookCircuitOpened = new Counter({
    name: MetricNames.webhookCircuitOpened,
    help: 'Times a failure seen by this worker opened (or re-opened) a webhook receiver origin’s circuit.',
    registers: [registry],
  });

  return {
    registry,
    versionJobs,
    versionJobDuration,
    versionBatchSize,
    shadowRows,
    shadowRowMeanAbsDiff,
    shadowMaxAbsDiff,
    batchSize,
    inferenceDuration,
    queueWait,
    jobDuration,
    jobsFinished,
    fastLane,
    webhookDeliveries,
    webhookDuration,
    webhookDeferred,
    webhookCircuitOpened,
  };
}
export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
