/**
 * `pnpm exec tsx tests/bench/scheduling.ts` (or `BENCH_EXTRAS=scheduling pnpm bench:extras`): what
 * fair share and admission cost, and how good the queue ETA is. API and one worker in this process
 * on a Redis of its own, `mlp-large`:
 *
 * - drain: 4 keys queue 3,000 rows each (jobs of 10 rows) with no worker; a worker then drains
 *   them; rows per second from the worker's start to the last completion (counted by BullMQ,
 *   one ZCARD every 5 ms: nothing else competes with the worker), with QUERN_FAIR_SHARE on and
 *   off; and the CPU time it took (this process's, inference threads included, plus Redis's)
 *   per row drained, and per job queued (admission and add);
 * - sync: 32 concurrent callers of `POST /v1/predict` for 4 s; calls per second and CPU time
 *   per call, on and off;
 * - ETA: at a steady backlog (fair share on; 15 s after 3 s of warm-up, in which the drain rate
 *   is still being measured), each 10th job's `eta_ms` as it is queued against the moment a
 *   worker really took it: median and p90 absolute error.
 *
 * Prints JSON (`pnpm bench` writes it to tests/bench/results/scheduling.json); docs/scheduling.md
 * quotes the figures. Numbers on a shared machine are noisy: each comparison is RUNS (9) pairs
 * of runs, after one of each not counted (warm-up), on and off in alternating order (so
 * neighbours weigh on both alike), and the figures are medians; every run is kept in the result.
 * The throughput of a run depends on what else the machine runs meanwhile; its CPU time per row
 * or call much less so, which makes that the steadier measure of what fair share costs. Both
 * sides run at the same, default settings, which are each side's best (fair share adds no
 * setting of its own); with fair share off the worker batches its prefetched jobs in one lane.
 */
import { createApp, createServices, SCOPES } from '@quern/api';
import { OTHER_API_KEY, seedTestKeys, startTestRedis, TEST_API_KEY, testConfig, uniquePrefix } from '@quern/devkit';
import { createLogger, loadManifest } from '@quern/shared';
import { WorkerRuntime } from '@quern/worker';
import { Redis } from 'ioredis';

const MODEL = 'mlp-large';
const WIDTH = 256;
const redis = await startTestRedis({ forceOwn: true });
const logger = createLogger('api', 'silent');

const row = () => Array.from({ length: WIDTH }, () => Math.random() * 2 - 1);

async function stack(fair: boolean) {
  const config = testConfig(
    { url: redis.url, prefix: uniquePrefix('b') },
    {
      QUERN_FAIR_SHARE: fair ? 'true' : 'false',
      QUERN_RATE_PREMIUM_PER_MINUTE: '0',
      QUERN_RATE_PREMIUM_PER_HOUR: '0',
      QUERN_CACHE_TTL_SECONDS: '0',
    },
  );
  const manifest = loadManifest(config.QUERN_MODELS_DIR);
  const services = createServices(config, manifest, logger);
  await services.connected(10_000);
  await seedTestKeys(services.apiKeys, SCOPES);
  const keys = [TEST_API_KEY, OTHER_API_KEY];
  for (const name of ['c', 'd']) {
    const created = await services.apiKeys.create({ name, tier: 'premium', scopes: ['predict', 'jobs:read'] });
    keys.push(created.key);
  }
  const app = createApp(services, logger);
  const post = (path: string, key: string, body: unknown, prefer = 'respond-async') =>
    app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key, prefer },
      body: JSON.stringify(body),
    });
  const get = async (path: string, key: string) =>
    (await app.request(path, { headers: { 'x-api-key': key } })).json() as Promise<Record<string, unknown>>;
  let worker: WorkerRuntime | undefined;
  return {
    services,
    keys,
    post,
    get,
    async startWorker() {
      worker = await WorkerRuntime.start({ config, manifest, logger: createLogger('worker', 'silent') });
    },
    async close() {
      await worker?.close(10_000);
      await services.close();
    },
  };
}

type Stack = Awaited<ReturnType<typeof stack>>;

async function queueRows(s: Stack, perKey: number): Promise<{ id: string; key: string }[]> {
  const jobs: { id: string; key: string }[] = [];
  for (let at = 0; at < perKey; at += 10 * 20) {
    const burst = s.keys.flatMap((key) =>
      Array.from({ length: Math.min(20, (perKey - at) / 10) }, async () => {
        const requests = Array.from({ length: 10 }, () => ({ features: row() }));
        const res = await s.post('/v1/batch-predict', key, { model: MODEL, requests });
        return { id: ((await res.json()) as { id: string }).id, key };
      }),
    );
    jobs.push(...(await Promise.all(burst)));
  }
  return jobs;
}

const admin = new Redis(redis.url);

/**
 * CPU time (µs) so far of this process (API, worker and its inference threads) plus Redis's:
 * what a run cost, however busy the machine's other processes kept the cores meanwhile.
 */
async function cpuMicros(): Promise<number> {
  const { user, system } = process.cpuUsage();
  const info = await admin.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return user + system + (field('used_cpu_user') + field('used_cpu_sys')) * 1e6;
}

/**
 * Drain rows/s of one queued backlog and the CPU time per row of draining it; the CPU time per
 * job of queueing it (the API's admission and add, Redis's scripts).
 */
async function drain(fair: boolean) {
  const s = await stack(fair);
  try {
    const before = await cpuMicros();
    const jobs = await queueRows(s, 3_000);
    const queued = await cpuMicros();
    const queue = s.services.jobs.queueOf(MODEL);
    await s.startWorker();
    const started = performance.now();
    const drainFrom = await cpuMicros();
    for (;;) {
      const counts = await queue.getJobCounts('completed', 'failed');
      if ((counts.completed ?? 0) + (counts.failed ?? 0) >= jobs.length) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const seconds = (performance.now() - started) / 1000;
    const drained = await cpuMicros();
    const failed = (await queue.getJobCounts('failed')).failed ?? 0;
    if (failed > 0) throw new Error(`${failed} jobs failed`);
    return {
      rows_per_second: Math.round((jobs.length * 10) / seconds),
      cpu_us_per_row: Number(((drained - drainFrom) / (jobs.length * 10)).toFixed(1)),
      queue_cpu_us_per_job: Number(((queued - before) / jobs.length).toFixed(1)),
    };
  } finally {
    await s.close();
  }
}

/**
 * The ETA at a steady load: for 15 s the 4 keys keep about 1,000 jobs of 10 rows queued; every
 * 10th job's ETA is read as it is queued, and compared with when a worker took it.
 */
async function eta() {
  const s = await stack(true);
  try {
    await s.startWorker();
    // The first seconds are not a steady load: the drain rate is still being measured.
    const steadyFrom = performance.now() + 3_000;
    const until = steadyFrom + 15_000;
    const sampled: { id: string; key: string; predicted: number }[] = [];
    let submitted = 0;
    let done = 0;
    const all: { id: string; key: string }[] = [];
    while (performance.now() < until) {
      if (submitted - done < 1_000) {
        const jobs = await queueRows(s, 50);
        for (const job of jobs) {
          all.push(job);
          if (++submitted % 10 !== 0 || performance.now() < steadyFrom) continue;
          const view = (await s.get(`/v1/jobs/${job.id}`, job.key)) as { queue?: { eta_ms: number | null } | null };
          if (view.queue?.eta_ms != null) sampled.push({ ...job, predicted: Date.now() + view.queue.eta_ms });
        }
      }
      const oldest = all[done];
      if (oldest && ((await s.get(`/v1/jobs/${oldest.id}`, oldest.key)) as { status: string }).status === 'succeeded') {
        done++;
      }
    }
    const errors: number[] = [];
    for (const job of sampled) {
      for (;;) {
        const view = (await s.get(`/v1/jobs/${job.id}`, job.key)) as { status: string; started_at: string | null };
        if (view.status === 'succeeded') {
          errors.push(Math.abs(job.predicted - Date.parse(view.started_at ?? '')));
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    errors.sort((a, b) => a - b);
    const at = (q: number) => Math.round(errors[Math.floor(errors.length * q)] ?? Number.NaN);
    return { readings: errors.length, median_abs_error_ms: at(0.5), p90_abs_error_ms: at(0.9) };
  } finally {
    await s.close();
  }
}

/** Sync calls per second: 32 callers in a loop for 4 s. */
async function sync(fair: boolean) {
  const s = await stack(fair);
  try {
    await s.startWorker();
    let calls = 0;
    const from = await cpuMicros();
    const until = performance.now() + 4_000;
    await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const key = s.keys[i % s.keys.length] as string;
        while (performance.now() < until) {
          const res = await s.post('/v1/predict', key, { model: MODEL, features: row() }, 'wait=10');
          if (res.status === 200) calls++;
          await res.body?.cancel();
        }
      }),
    );
    const used = (await cpuMicros()) - from;
    return { calls_per_second: Math.round(calls / 4), cpu_us_per_call: Number((used / calls).toFixed(1)) };
  } finally {
    await s.close();
  }
}

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

/**
 * `runs` pairs, fair share on and off in alternating order; per figure the median of each side,
 * their ratio, and the median of the pairs' own ratios (each pair ran side by side in time).
 */
async function compare(runs: number, fn: (fair: boolean) => Promise<Record<string, number>>) {
  const seen: Record<'fair' | 'fifo', Record<string, number>[]> = { fair: [], fifo: [] };
  // A run of each first, not counted: the first runs of a process pay for its warm-up (JIT).
  for (const fair of [true, false]) await fn(fair);
  for (let i = 0; i < runs; i++) {
    for (const fair of i % 2 === 0 ? [true, false] : [false, true]) {
      const result = await fn(fair);
      seen[fair ? 'fair' : 'fifo'].push(result);
      process.stderr.write(`  ${fn.name} ${fair ? 'fair' : 'fifo'} ${JSON.stringify(result)}\n`);
    }
  }
  const out: Record<string, unknown> = { runs };
  for (const name of Object.keys(seen.fair[0] ?? {})) {
    const fair = seen.fair.map((r) => r[name] as number);
    const fifo = seen.fifo.map((r) => r[name] as number);
    out[name] = {
      fair: median(fair),
      fifo: median(fifo),
      fair_vs_fifo: Number((median(fair) / median(fifo)).toFixed(3)),
      pair_ratio_median: Number(median(fair.map((f, i) => f / (fifo[i] as number))).toFixed(3)),
      fair_runs: fair,
      fifo_runs: fifo,
    };
  }
  return out;
}

const RUNS = Number(process.env.SCHEDULING_RUNS ?? 9);

try {
  const result = {
    drain: await compare(RUNS, drain),
    sync: await compare(RUNS, sync),
    eta: await eta(),
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} finally {
  admin.disconnect();
  await redis.close();
}
