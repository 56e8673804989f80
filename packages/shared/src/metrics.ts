import {
  collectDefaultMetrics,
  type Metric,
  type OpenMetricsContentType,
  type PrometheusContentType,
  Registry,
} from 'prom-client';

/** A registry in the classic text format, or in OpenMetrics (the one format that carries exemplars). */
export type MetricsRegistry = Registry<PrometheusContentType> | Registry<OpenMetricsContentType>;

const labelsOf = new WeakMap<MetricsRegistry, Record<string, string>>();
const textTwins = new WeakMap<MetricsRegistry, Registry>();

/**
 * A service's registry, every series labelled `defaultLabels`. With tracing on, `openMetrics`
 * makes it speak OpenMetrics, so latency buckets can carry a trace id as their exemplar;
 * otherwise the classic text format, as before.
 */
export function createMetricsRegistry(openMetrics: boolean, defaultLabels: Record<string, string>): MetricsRegistry {
  const registry: MetricsRegistry = openMetrics ? new Registry<OpenMetricsContentType>() : new Registry();
  if (openMetrics) (registry as Registry<OpenMetricsContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  registry.setDefaultLabels(defaultLabels);
  labelsOf.set(registry, defaultLabels);
  return registry;
}

/**
 * A metric as the text format names it. Rendering OpenMetrics, prom-client renames a counter's
 * family without its `_total` (and keeps that name on the object); the text format's family is
 * the sample name, with `_total`. Counters get a view with that name; other metrics are shared.
 */
function textView(metric: Metric): Metric {
  const read = metric as unknown as { type: string; name: string; help: string; get(): Promise<{ name: string }> };
  if (read.type !== 'counter') return metric;
  const name = read.name.endsWith('_total') ? read.name : `${read.name}_total`;
  const view = {
    name,
    help: read.help,
    type: read.type,
    aggregator: 'sum',
    get: async () => ({ ...(await read.get()), name }),
  };
  return view as unknown as Metric;
}

/**
 * The registry to answer a scrape with: OpenMetrics (with exemplars) only to a scraper that asks
 * for it in `Accept`, as Prometheus does; anyone else (curl, `promtool check metrics`, older
 * scrapers) gets the same metrics in the classic text format, from a twin registry that shares
 * the metric objects.
 */
export function registryFor(registry: MetricsRegistry, accept: string | undefined): MetricsRegistry {
  if (registry.contentType !== Registry.OPENMETRICS_CONTENT_TYPE) return registry;
  if (accept?.includes('application/openmetrics-text')) return registry;
  let twin = textTwins.get(registry);
  if (!twin) {
    twin = new Registry();
    twin.setDefaultLabels(labelsOf.get(registry) ?? {});
    // getMetricsAsArray() hands out the metric objects themselves (its type says less).
    for (const metric of registry.getMetricsAsArray() as unknown as Metric[]) twin.registerMetric(textView(metric));
    textTwins.set(registry, twin);
  }
  return twin;
}

/**
 * Names of every Prometheus metric Quern exports. The alert rules, the Grafana dashboard and a
 * test that scrapes the running processes all use these names, so they live in one place.
 * Units follow Prometheus conventions: `_total` counters, `_seconds`, `_bytes`, ratios 0..1.
 */
export const MetricNames = {
  // API
  httpRequests: 'quern_http_requests_total',
  httpRequestDuration: 'quern_http_request_duration_seconds',
  cacheLookups: 'quern_result_cache_lookups_total',
  jobsSubmitted: 'quern_jobs_submitted_total',
  syncWaitTimeouts: 'quern_sync_wait_timeouts_total',
  syncAnswers: 'quern_sync_answers_total',
  authFailures: 'quern_auth_failures_total',
  rateLimited: 'quern_rate_limited_total',
  queueJobs: 'quern_queue_jobs',
  queueOldestWaitingAge: 'quern_queue_oldest_waiting_age_seconds',
  workersAlive: 'quern_workers_alive',
  webhookQueueJobs: 'quern_webhook_queue_jobs',
  webhookQueueOldestWaitingAge: 'quern_webhook_queue_oldest_waiting_age_seconds',
  // Worker
  batchSize: 'quern_batch_size',
  inferenceDuration: 'quern_inference_duration_seconds',
  jobQueueWait: 'quern_job_queue_wait_seconds',
  jobDuration: 'quern_job_duration_seconds',
  jobsFinished: 'quern_jobs_finished_total',
  fastLane: 'quern_fast_lane_jobs_total',
  poolBusyRatio: 'quern_inference_pool_busy_ratio',
  poolThreads: 'quern_inference_pool_threads',
  webhookDeliveries: 'quern_webhook_deliveries_total',
  webhookDeliveryDuration: 'quern_webhook_delivery_duration_seconds',
  webhookDeferred: 'quern_webhook_deliveries_deferred_total',
  webhookCircuitOpened: 'quern_webhook_circuit_opened_total',
  // Worker, per model version (canary and shadow comparisons)
  versionJobs: 'quern_model_version_jobs_total',
  versionJobDuration: 'quern_model_version_job_duration_seconds',
  versionBatchSize: 'quern_model_version_batch_size',
  shadowRows: 'quern_shadow_rows_total',
  shadowRowMeanAbsDiff: 'quern_shadow_row_mean_abs_diff',
  shadowMaxAbsDiff: 'quern_shadow_max_abs_diff',
} as const;

/**
 * prom-client's default process metrics export three gauges whose names end in `_total`
 * (`nodejs_active_handles_total`, `…_requests_total`, `…_resources_total`), which Prometheus
 * reserves for counters (`promtool check metrics` warns). Their per-type gauges
 * (`nodejs_active_handles{type}` …) stay; `sum()` of those is the same number.
 */
const NON_COUNTERS_NAMED_TOTAL = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
] as const;

/** prom-client's default process and Node.js metrics on `registry`, without the misnamed ones. */
export function collectProcessMetrics(registry: MetricsRegistry): void {
  collectDefaultMetrics({ register: registry as Registry });
  for (const name of NON_COUNTERS_NAMED_TOTAL) registry.removeSingleMetric(name);
}

/** Histogram buckets for batch sizes: powers of two up to the largest batch a model allows. */
export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/** Latency buckets from 1 ms to 60 s. */
export const LATENCY_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
