/**
 * Soak test (not in CI): a steady rate of mixed traffic for a while, reporting request errors, p99
 * latency per minute and the RSS growth of the API and the worker.
 *
 *   pnpm soak                      # 10 minutes at 200 requests/s
 *   SOAK_MINUTES=2 SOAK_RATE=400 pnpm soak
 *
 * Results go to tests/chaos/results/soak.json.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomRows } from '@quern/devkit';
import { Harness, RESULTS_DIR } from './support/harness';

const minutes = Number(process.env.SOAK_MINUTES ?? 10);
const rate = Number(process.env.SOAK_RATE ?? 200);

function rssMb(pid: number | undefined): number {
  if (!pid) return 0;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

const harness = await Harness.start({ workers: 1, env: { QUERN_WORKER_THREADS: '2' } });
const apiPid = harness.apis[0]?.process.pid;
const workerPid = harness.workers[0]?.pid;
const mlpRows = randomRows(5_000, 256, 4);
const perMinute: {
  minute: number;
  requests: number;
  errors: number;
  p50_ms: number;
  p99_ms: number;
  api_rss_mb: number;
  worker_rss_mb: number;
}[] = [];
const start = Date.now();
let sent = 0;
let latencies: number[] = [];
let errors = 0;
let requests = 0;
let inFlight = 0;
process.stdout.write(`soak: ${minutes} min at ${rate} req/s (mixed /v1/predict on both models and /v1/jobs)\n`);

const rssAtStart = { api: rssMb(apiPid), worker: rssMb(workerPid) };
while (Date.now() - start < minutes * 60_000) {
  const due = start + (sent * 1000) / rate;
  if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
  const i = sent++;
  const kind = i % 10;
  const body =
    kind < 5
      ? { model: 'cars-mpg', features: [4 + (i % 5), 100 + (i % 300), 90, 2300 + (i % 900), 15, 1970 + (i % 13)] }
      : { model: 'mlp-large', features: mlpRows[i % mlpRows.length] };
  const path = kind < 8 ? '/v1/predict' : '/v1/jobs';
  inFlight++;
  const t = performance.now();
  harness
    .fetch(path, { method: 'POST', body: JSON.stringify(body) })
    .then(async (res) => {
      await res.arrayBuffer();
      if (res.status >= 400) errors++;
    })
    .catch(() => {
      errors++;
    })
    .finally(() => {
      inFlight--;
      requests++;
      latencies.push(performance.now() - t);
    });
  const minute = Math.floor((Date.now() - start) / 60_000);
  if (minute > perMinute.length - 1 + 1 || (perMinute.length === 0 && minute >= 1)) {
    perMinute.push({
      minute: perMinute.length + 1,
      requests,
      errors,
      p50_ms: Math.round(percentile(latencies, 50) * 10) / 10,
      p99_ms: Math.round(percentile(latencies, 99) * 10) / 10,
      api_rss_mb: Math.round(rssMb(apiPid)),
      worker_rss_mb: Math.round(rssMb(workerPid)),
    });
    process.stdout.write(`${JSON.stringify(perMinute[perMinute.length - 1])}\n`);
    latencies = [];
    requests = 0;
    errors = 0;
  }
}
while (inFlight > 0) await new Promise((r) => setTimeout(r, 50));
const result = {
  machine: `${(await import('node:os')).cpus().length} cores`,
  minutes,
  rate_per_second: rate,
  total_requests: sent,
  total_errors: perMinute.reduce((n, m) => n + m.errors, 0) + errors,
  rss_mb_start: { api: Math.round(rssAtStart.api), worker: Math.round(rssAtStart.worker) },
  rss_mb_end: { api: Math.round(rssMb(apiPid)), worker: Math.round(rssMb(workerPid)) },
  per_minute: perMinute,
};
writeFileSync(join(RESULTS_DIR, 'soak.json'), `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify({ ...result, per_minute: undefined }, null, 2)}\n`);
await harness.close();
