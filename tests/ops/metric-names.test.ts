import { TEST_API_KEY } from '@quern/devkit';
import { MetricNames } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  alertRules,
  dashboardExpressions,
  type Exposition,
  familyOf,
  metricNamesIn,
  parseExposition,
  selectorLabelsIn,
} from './monitoring-assets';
import { JSON_HEADERS, type ProcessStack, pollUntil, startProcessStack } from './process-stack';
import { runTool } from './promtool';

const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

/**
 * The alert rules and the dashboard must use exactly the metric names the running processes
 * export: an API and a worker are started as separate processes, driven with a little traffic,
 * and both /metrics endpoints are compared with every PromQL expression.
 */
let stack: ProcessStack;
let api: Exposition;
let worker: Exposition;
/** The two /metrics answers as scraped, for promtool. */
const texts = { api: '', worker: '' };

const FEATURES = [4, 140, 90, 2264, 15.5, 1971];
/** Nothing listens there: the worker refuses the address before it connects. */
const WEBHOOK_PORT = 9;

async function scrape(url: string, service: keyof typeof texts): Promise<Exposition> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  texts[service] = await res.text();
  return parseExposition(texts[service]);
}

function samplesOf(name: string): Record<string, string>[] {
  return [...(api.samples.get(name) ?? []), ...(worker.samples.get(name) ?? [])];
}

/** The metric family `name` belongs to and which process exports it, if any. */
function exportedBy(name: string): string | undefined {
  if (familyOf(name, api)) return 'api';
  if (familyOf(name, worker)) return 'worker';
  return undefined;
}

beforeAll(async () => {
  // The webhook receiver's address is allowed by the API (so the job is accepted) but not by the
  // worker, whose SSRF guard refuses it as it connects: a `refused` delivery, without any network.
  stack = await startProcessStack({
    env: { QUERN_RATE_FREE_PER_MINUTE: '2' },
    apiEnv: { QUERN_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${WEBHOOK_PORT}` },
  });
  const { apiUrl } = stack;
  const post = (path: string, body: unknown) =>
    fetch(`${apiUrl}${path}`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(body) });

  // A sync predict (cache miss, one job through the worker), then the same input again (cache hit).
  const first = await post('/v1/predict', { features: FEATURES });
  expect(first.status).toBe(200);
  expect(((await first.json()) as { cached: boolean }).cached).toBe(false);
  const second = await post('/v1/predict', { features: FEATURES });
  expect(second.status).toBe(200);
  expect(((await second.json()) as { cached: boolean }).cached).toBe(true);

  // An async job with a webhook the worker will refuse.
  const submitted = await post('/v1/jobs', {
    features: [8, 350, 165, 3693, 11.5, 1970],
    webhook: { url: `http://127.0.0.1:${WEBHOOK_PORT}/hook` },
  });
  expect(submitted.status).toBe(202);
  const { id } = (await submitted.json()) as { id: string };

  // An unknown key (401) and a free-tier key over its budget of 2 a minute (429).
  const bad = await fetch(`${apiUrl}/v1/jobs/${id}`, { headers: { 'x-api-key': 'qk_unknown_key_000000000000000000' } });
  expect(bad.status).toBe(401);
  const limited: number[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${apiUrl}/v1/jobs/job_0000000000000000000000`, {
      headers: { 'x-api-key': stack.freeKey },
    });
    await res.arrayBuffer();
    limited.push(res.status);
  }
  expect(limited).toEqual([404, 404, 429]);

  await pollUntil(
    'webhook delivery refused by the worker',
    async () => {
      const res = await fetch(`${apiUrl}/v1/jobs/${id}`, { headers: { 'x-api-key': TEST_API_KEY } });
      return (await res.json()) as { status: string; webhook?: { status: string } };
    },
    (job) => job.status === 'succeeded' && job.webhook?.status === 'failed',
    15_000,
  );
  [api, worker] = await Promise.all([scrape(stack.apiUrl, 'api'), scrape(stack.workerUrl, 'worker')]);
});

afterAll(async () => {
  await stack?.stop();
});

describe('the /metrics expositions', () => {
  // promtool exits 3 on naming warnings (a gauge named `_total`, a missing unit suffix) and 1 on
  // errors, printing one line per finding; clean means exit 0 and nothing printed.
  it.each(['api', 'worker'] as const)('promtool check metrics finds nothing to fix in the %s’s', async (service) => {
    expect(texts[service]).toContain('quern_');
    const result = await runTool(PROMTOOL, ['check', 'metrics'], undefined, texts[service]);
    expect(result.output.trim()).toBe('');
    expect(result.code).toBe(0);
  });

  it('promtool check metrics would catch a misnamed metric (the check above can fail)', async () => {
    const bad = `${texts.api}# HELP quern_bad_total A gauge named like a counter.\n# TYPE quern_bad_total gauge\nquern_bad_total 1\n`;
    const result = await runTool(PROMTOOL, ['check', 'metrics'], undefined, bad);
    expect(result.output).toContain('quern_bad_total');
    expect(result.code).not.toBe(0);
  });

  it('the API reports the webhooks queue: depth by state and the age of its oldest waiting delivery', () => {
    const depth = api.samples.get(MetricNames.webhookQueueJobs) ?? [];
    expect(depth.map((s) => s.state).sort()).toEqual(
      ['active', 'completed', 'delayed', 'failed', 'prioritized', 'waiting'].sort(),
    );
    // The refused delivery of the traffic above has finished in the webhooks queue.
    const finished = [
      ...texts.api.matchAll(/^quern_webhook_queue_jobs\{[^}]*state="(completed|failed)"[^}]*\} (\S+)$/gm),
    ];
    expect(finished.reduce((sum, m) => sum + Number(m[2]), 0)).toBeGreaterThanOrEqual(1);
    expect(api.types.get(MetricNames.webhookQueueOldestWaitingAge)).toBe('gauge');
    expect(api.samples.get(MetricNames.webhookQueueOldestWaitingAge)).toHaveLength(1);
  });
});

describe('metric names in the alert rules and the dashboard', () => {
  it('the traffic produced samples of the labelled metrics (so the label checks below check something)', () => {
    for (const name of [
      'quern_http_requests_total',
      'quern_result_cache_lookups_total',
      'quern_jobs_submitted_total',
      'quern_auth_failures_total',
      'quern_rate_limited_total',
      'quern_queue_jobs',
      'quern_jobs_finished_total',
      'quern_batch_size_bucket',
      'quern_webhook_deliveries_total',
    ]) {
      expect(samplesOf(name).length, name).toBeGreaterThan(0);
    }
    expect(samplesOf('quern_webhook_deliveries_total')).toContainEqual(
      expect.objectContaining({ outcome: 'refused', service: 'worker' }),
    );
  });

  it('every metric the alert rules use is exported by the API or the worker', () => {
    const used = new Set(alertRules().flatMap((r) => metricNamesIn(r.expr)));
    expect(used.size).toBeGreaterThanOrEqual(6);
    const missing = [...used].filter((name) => !exportedBy(name));
    expect(missing, 'used in deployment/prometheus/rules but exported by neither process').toEqual([]);
  });

  it('every metric the dashboard uses is exported by the API or the worker', () => {
    const exprs = dashboardExpressions();
    expect(exprs.length).toBeGreaterThan(20);
    const used = new Set(exprs.flatMap(metricNamesIn));
    expect(used.size).toBeGreaterThanOrEqual(15);
    const missing = [...used].filter((name) => !exportedBy(name));
    expect(missing, 'used in deployment/grafana/dashboards but exported by neither process').toEqual([]);
  });

  it('the label names the rules and the dashboard select on are labels of those metrics', () => {
    const selectors = [...alertRules().map((r) => r.expr), ...dashboardExpressions()].flatMap(selectorLabelsIn);
    let checked = 0;
    const wrong: string[] = [];
    for (const { metric, labels } of selectors) {
      const samples = samplesOf(metric);
      if (samples.length === 0) continue; // a labelled counter nothing incremented: no label set to compare
      checked++;
      for (const label of labels) {
        if (label === 'job' || label === 'instance') continue; // added by Prometheus
        if (!samples.some((s) => label in s)) wrong.push(`${metric}{${label}}`);
      }
    }
    expect(checked).toBeGreaterThan(20);
    expect(wrong).toEqual([]);
  });

  it('every name in MetricNames is exported, with the service label of the process that exports it', () => {
    const names = Object.values(MetricNames);
    expect(names.length).toBeGreaterThan(15);
    for (const name of names) {
      const where = [api.types.has(name) ? 'api' : undefined, worker.types.has(name) ? 'worker' : undefined].filter(
        (w) => w !== undefined,
      );
      expect(where, `${name} should be exported by exactly one process`).toHaveLength(1);
      const service = where[0] as string;
      const exposition = service === 'api' ? api : worker;
      const type = exposition.types.get(name);
      const sampleName = type === 'histogram' ? `${name}_count` : name;
      for (const labels of exposition.samples.get(sampleName) ?? []) expect(labels.service, name).toBe(service);
    }
  });
});
