import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitForHttp } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { OtlpReceiver } from '../support/otlp-receiver';
import { JSON_HEADERS, type ProcessStack, pollUntil, startProcessStack } from './process-stack';
import { expectSuccess, runTool } from './promtool';

/**
 * Exemplars as the Grafana dashboard reads them: a real Prometheus, with exemplar storage on (as
 * the Compose file runs it), scrapes an API and a worker that trace; the latency buckets of a
 * traced request come back from Prometheus's exemplar API with the request's trace id, and the
 * counters the dashboard and alerts use keep their names under OpenMetrics.
 */
const PROMETHEUS = process.env.PROMETHEUS ?? 'prometheus';

let stack: ProcessStack;
let otlp: OtlpReceiver;
let prometheus: ChildProcess | undefined;
let prometheusUrl: string;
let workDir: string;
const prometheusLines: string[] = [];

interface ExemplarAnswer {
  status: string;
  error?: string;
  data?: { seriesLabels: Record<string, string>; exemplars: { labels: Record<string, string>; value: string }[] }[];
}

async function exemplars(promql: string): Promise<ExemplarAnswer> {
  const now = Date.now() / 1000;
  const params = new URLSearchParams({ query: promql, start: String(now - 300), end: String(now + 60) });
  return (await (await fetch(`${prometheusUrl}/api/v1/query_exemplars?${params}`)).json()) as ExemplarAnswer;
}

beforeAll(async () => {
  expectSuccess(`${PROMETHEUS} --version`, await runTool(PROMETHEUS, ['--version']));
  const [port, apiPort, workerPort] = await Promise.all([freePort(), freePort(), freePort()]);
  workDir = mkdtempSync(join(tmpdir(), 'quern-prometheus-exemplars-'));
  const configFile = join(workDir, 'prometheus.yml');
  writeFileSync(
    configFile,
    stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s' },
      scrape_configs: [
        { job_name: 'quern-api', static_configs: [{ targets: [`127.0.0.1:${apiPort}`] }] },
        { job_name: 'quern-worker', static_configs: [{ targets: [`127.0.0.1:${workerPort}`] }] },
      ],
    }),
  );
  prometheusUrl = `http://127.0.0.1:${port}`;
  const child = spawn(
    PROMETHEUS,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(workDir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--enable-feature=exemplar-storage',
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  prometheus = child;
  child.on('error', (err) => prometheusLines.push(`spawn error: ${err.message}`));
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (chunk: Buffer) => prometheusLines.push(...chunk.toString().split('\n').filter(Boolean)));
  }
  otlp = await OtlpReceiver.start();
  const ready = waitForHttp(`${prometheusUrl}/-/ready`, 15_000).catch((err: Error) => {
    throw new Error(`Prometheus did not start: ${err.message}\n${prometheusLines.join('\n')}`);
  });
  const [started] = await Promise.allSettled([
    startProcessStack({
      apiPort,
      workerPort,
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url(),
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_TRACES_SAMPLER: 'parentbased_always_on',
      },
    }),
    ready,
  ]);
  if (started.status === 'fulfilled') stack = started.value;
  await ready;
  if (started.status === 'rejected') throw started.reason;
});

afterAll(async () => {
  const child = prometheus;
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  await stack?.stop();
  await otlp?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('exemplars through a real Prometheus', () => {
  it('a traced predict’s trace id comes back as the exemplar of its latency buckets, API and worker', async () => {
    const traceId = randomBytes(16).toString('hex');
    const res = await fetch(`${stack.apiUrl}/v1/predict`, {
      method: 'POST',
      headers: { ...JSON_HEADERS, traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
      body: JSON.stringify({ features: [8, 307, 130, 3504, 12, 1970] }),
    });
    expect(res.status).toBe(200);
    const carries = (answer: ExemplarAnswer) =>
      answer.status === 'success' &&
      (answer.data ?? []).some((s) => s.exemplars.some((e) => e.labels.trace_id === traceId));
    const api = await pollUntil(
      'the request’s exemplar in Prometheus',
      () => exemplars('quern_http_request_duration_seconds_bucket{job="quern-api", route="/v1/predict"}'),
      carries,
      20_000,
      250,
    );
    const series = api.data?.find((s) => s.exemplars.some((e) => e.labels.trace_id === traceId));
    expect(series?.seriesLabels).toMatchObject({
      __name__: 'quern_http_request_duration_seconds_bucket',
      method: 'POST',
    });
    await pollUntil(
      'the job’s exemplar in Prometheus',
      () => exemplars('quern_job_duration_seconds_bucket{job="quern-worker", model="cars-mpg"}'),
      carries,
      20_000,
      250,
    );
  });

  it('scraped as OpenMetrics, the counters keep the names the dashboard and the alerts use', async () => {
    const answer = await pollUntil(
      'quern_http_requests_total in Prometheus',
      async () =>
        (await (
          await fetch(`${prometheusUrl}/api/v1/query?${new URLSearchParams({ query: 'quern_http_requests_total' })}`)
        ).json()) as { status: string; data?: { result: unknown[] } },
      (a) => a.status === 'success' && (a.data?.result.length ?? 0) > 0,
      20_000,
      250,
    );
    expect(answer.data?.result.length).toBeGreaterThan(0);
    const worker = (await (
      await fetch(`${prometheusUrl}/api/v1/query?${new URLSearchParams({ query: 'quern_jobs_finished_total' })}`)
    ).json()) as { data?: { result: unknown[] } };
    expect(worker.data?.result.length).toBeGreaterThan(0);
  });
});
