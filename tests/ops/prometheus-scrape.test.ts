import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitForHttp } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { alertRules, dashboardExpressions, RULES_FILE } from './monitoring-assets';
import { JSON_HEADERS, type ProcessStack, pollUntil, startProcessStack } from './process-stack';
import { expectSuccess, runTool } from './promtool';

/**
 * A real Prometheus scraping a running API and worker (separate processes) every second, with the
 * shipped alert rules loaded: the metrics arrive with the labels the rules and the dashboard use.
 */
const PROMETHEUS = process.env.PROMETHEUS ?? 'prometheus';

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}
interface QueryAnswer {
  status: string;
  error?: string;
  data?: { resultType: string; result: Sample[] };
}

let stack: ProcessStack;
let prometheus: ChildProcess | undefined;
let prometheusUrl: string;
let workDir: string;
const prometheusLines: string[] = [];

async function query(promql: string): Promise<QueryAnswer> {
  const res = await fetch(`${prometheusUrl}/api/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ query: promql }),
  });
  return (await res.json()) as QueryAnswer;
}

async function vector(promql: string): Promise<Sample[]> {
  const answer = await query(promql);
  if (answer.status !== 'success') throw new Error(`${promql}: ${answer.error}`);
  return answer.data?.result ?? [];
}

beforeAll(async () => {
  // A clear failure, not a skip, when Prometheus is not installed.
  expectSuccess(`${PROMETHEUS} --version`, await runTool(PROMETHEUS, ['--version']));
  // Prometheus applies discovered targets only every few seconds after it starts, so it starts
  // first, on the ports the API and the worker are about to take.
  const [port, apiPort, workerPort] = await Promise.all([freePort(), freePort(), freePort()]);
  workDir = mkdtempSync(join(tmpdir(), 'quern-prometheus-'));
  const configFile = join(workDir, 'prometheus.yml');
  writeFileSync(
    configFile,
    stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [RULES_FILE],
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
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  prometheus = child;
  child.on('error', (err) => prometheusLines.push(`spawn error: ${err.message}`));
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (chunk: Buffer) => prometheusLines.push(...chunk.toString().split('\n').filter(Boolean)));
  }
  const ready = waitForHttp(`${prometheusUrl}/-/ready`, 15_000).catch((err: Error) => {
    throw new Error(`Prometheus did not start: ${err.message}\n${prometheusLines.join('\n')}`);
  });
  const [started] = await Promise.allSettled([startProcessStack({ apiPort, workerPort }), ready]);
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
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('Prometheus scraping the API and a worker', () => {
  it('scrapes both targets: up is 1 for job quern-api and job quern-worker', async () => {
    // A scrape made before the processes listened may have recorded a 0: wait for the current value.
    const up = await pollUntil(
      'up == 1 for both jobs',
      () => vector('up'),
      (samples) =>
        ['quern-api', 'quern-worker'].every((job) => samples.some((s) => s.metric.job === job && s.value[1] === '1')),
      15_000,
    );
    const byJob = Object.fromEntries(up.map((s) => [s.metric.job, s.value[1]]));
    expect(byJob).toEqual({ 'quern-api': '1', 'quern-worker': '1' });
  });

  it('reads the queue gauges and the worker counters back with the labels the rules use', async () => {
    const jobs = await Promise.all(
      [1970, 1975, 1980].map(async (year) => {
        const res = await fetch(`${stack.apiUrl}/v1/jobs`, {
          method: 'POST',
          headers: JSON_HEADERS,
          body: JSON.stringify({ model: 'cars-mpg', features: [4, 120, 95, 2400, 16, year] }),
        });
        expect(res.status).toBe(202);
        return res.json();
      }),
    );
    expect(jobs).toHaveLength(3);

    const completed = await pollUntil(
      'quern_queue_jobs{state="completed"} through Prometheus',
      () => vector('quern_queue_jobs{job="quern-api", model="cars-mpg", state="completed"}'),
      (samples) => samples.some((s) => Number(s.value[1]) >= 3),
    );
    expect(completed[0]?.metric).toMatchObject({
      __name__: 'quern_queue_jobs',
      job: 'quern-api',
      service: 'api',
      model: 'cars-mpg',
      state: 'completed',
    });
    // Every state of every model queue is reported, waiting and prioritized included.
    const states = await vector('quern_queue_jobs{service="api", model="cars-mpg"}');
    expect(states.map((s) => s.metric.state).sort()).toEqual(
      ['active', 'completed', 'delayed', 'failed', 'prioritized', 'waiting'].sort(),
    );
    const alive = await pollUntil(
      'quern_workers_alive through Prometheus',
      () => vector('quern_workers_alive{job="quern-api"}'),
      (samples) => samples.length === 1 && samples[0]?.value[1] === '1',
    );
    expect(alive[0]?.metric).toMatchObject({ service: 'api', job: 'quern-api' });

    const finished = await pollUntil(
      'quern_jobs_finished_total through Prometheus',
      () => vector('sum by (service, model) (quern_jobs_finished_total{job="quern-worker", outcome="succeeded"})'),
      (samples) => samples.some((s) => Number(s.value[1]) >= 3),
    );
    expect(finished[0]?.metric).toEqual({ service: 'worker', model: 'cars-mpg' });
  });

  it('loads the shipped alert rules and evaluates every one of them without error, none firing', async () => {
    interface RulesAnswer {
      data: { groups: { rules: { name: string; health: string; lastError?: string; state?: string }[] }[] };
    }
    const rules = await pollUntil(
      'every rule evaluated',
      async () => {
        const res = await fetch(`${prometheusUrl}/api/v1/rules?type=alert`);
        return ((await res.json()) as RulesAnswer).data.groups.flatMap((g) => g.rules);
      },
      (list) => list.length > 0 && list.every((r) => r.health !== 'unknown'),
    );
    expect(rules.map((r) => r.name).sort()).toEqual(
      alertRules()
        .map((r) => r.alert)
        .sort(),
    );
    for (const rule of rules) {
      expect({ name: rule.name, health: rule.health, error: rule.lastError ?? '' }).toEqual({
        name: rule.name,
        health: 'ok',
        error: '',
      });
      expect(rule.state, rule.name).not.toBe('firing');
    }
  });

  it('accepts every dashboard query, and the queue and worker panels show data', async () => {
    const exprs = dashboardExpressions().filter((e) => !e.startsWith('label_values('));
    expect(exprs.length).toBeGreaterThan(20);
    const concrete = (e: string) => e.replaceAll('$model', '.*').replaceAll('$__rate_interval', '1m');
    const answers = await Promise.all(exprs.map(async (e) => ({ expr: e, answer: await query(concrete(e)) })));
    const rejected = answers.filter((a) => a.answer.status !== 'success').map((a) => `${a.expr}: ${a.answer.error}`);
    expect(rejected).toEqual([]);
    for (const expr of [
      'max by (model, state) (quern_queue_jobs{model=~"$model", state=~"waiting|prioritized|active|delayed"})',
      'max by (model) (quern_queue_oldest_waiting_age_seconds{model=~"$model"})',
      'quern_inference_pool_busy_ratio',
      'sum(quern_inference_pool_threads)',
    ]) {
      const answer = answers.find((a) => a.expr === expr);
      expect(answer, `dashboard query ${expr}`).toBeDefined();
      expect(answer?.answer.data?.result.length, expr).toBeGreaterThan(0);
    }
  });
});
