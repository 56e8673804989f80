/**
 * `pnpm bench`: the performance benchmark. It starts its own Redis, API and worker (from the
 * built bundles, as deployed), warms up, measures every scenario side by side in one run, and
 * writes tests/bench/results/latest.json, docs/benchmarks.md and docs/benchmarks.svg.
 *
 *   pnpm bench                     # the full run (under 10 minutes on 2 cores)
 *   BENCH_DURATION=4 pnpm bench    # seconds per load point (default 8)
 *   BENCH_SMOKE=1 pnpm bench       # a few seconds in all; what CI runs so the harness cannot rot
 *   BENCH_OUT=/tmp/b BENCH_DOCS=/tmp/b pnpm bench   # write results and docs elsewhere
 *
 * The tutorial baseline (tests/bench/servers/tutorial) is installed from PyPI into
 * tests/bench/.venv on the first run and reused while its requirements.txt is unchanged.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { KeyStore } from '@quern/api';
import {
  DirectOrt,
  freePort,
  REPO_ROOT,
  RedisServer,
  randomRows,
  ServiceProcess,
  TEST_JWT_KEYS,
  uniquePrefix,
  waitForHttp,
} from '@quern/devkit';
import {
  INFERENCE_JOB_NAME,
  inferenceJobOptions,
  KeySpace,
  loadConfig,
  loadManifest,
  type ModelManifest,
  newId,
  outputSize,
  RowMatrix,
} from '@quern/shared';
import { InferencePool } from '@quern/worker';
import autocannon from 'autocannon';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { type PerfAnalyzerPoint, perfAnalyzerTool, runPerfAnalyzer } from './perf-analyzer';
import { type BenchResults, type CpuPerRequest, type LoadPoint, type VsTutorial, writeReport } from './report';
import {
  ensureTutorialVenv,
  TUTORIAL_API_KEY,
  TUTORIAL_DIR,
  TUTORIAL_RATE_LIMIT_PER_MINUTE,
  TUTORIAL_REDIS_DB,
  TutorialServer,
} from './tutorial';

const SMOKE = process.env.BENCH_SMOKE === '1';
const DURATION = SMOKE ? 1 : Number(process.env.BENCH_DURATION ?? 8);
const CONCURRENCY = SMOKE ? [1, 16] : [1, 16, 64, 256];
/** Against the tutorial's FastAPI service; CPU per request is measured at c=32. */
const VS_TUTORIAL_CONCURRENCY = SMOKE ? [1, 32] : [1, 8, 32, 128];
const CPU_CONCURRENCY = 32;
/** Rounds per side against the tutorial, alternating; each side keeps its best. */
const VS_ROUNDS = SMOKE ? 1 : 2;
const DRAIN_JOBS = SMOKE ? 500 : 20_000;
/** Tracing's cost is measured on cars-mpg sync predicts at this concurrency, with 10% of traces kept. */
const TRACING_CONCURRENCY = 64;
const TRACING_SAMPLE = 0.1;
const RESULTS_DIR = process.env.BENCH_OUT ?? join(REPO_ROOT, 'tests', 'bench', 'results');
const DOCS_DIR = process.env.BENCH_DOCS ?? join(REPO_ROOT, 'docs');
const MODELS_DIR = join(REPO_ROOT, 'models');
const THREADS = cpus().length;

const log = (message: string) => process.stdout.write(`[bench] ${message}\n`);
const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) / 100 : 0);
/** The point with the most requests per second. */
const bestOf = (points: LoadPoint[]) => points.reduce((a, b) => (b.rps > a.rps ? b : a));

// ---------------------------------------------------------------- inputs

/**
 * Unique input rows. Rows are compared as the float32 the model sees (that is the cache key),
 * so a counter must survive the rounding: `uniqueFeatures(n)` spreads it over three values that
 * are multiples of 1/4096 below 1, exact in float32, different for every n below 2^36. One
 * counter serves the whole run, so no two requests of a run share a row (`cache_hits` checks).
 */
let counter = 0;
const next = () => counter++;
function uniqueFeatures(n: number): [number, number, number] {
  return [(n % 4096) / 4096, (Math.floor(n / 4096) % 4096) / 4096, (Math.floor(n / 4096 ** 2) % 4096) / 4096];
}

/** A unique, plausible cars-mpg row. */
function carsRow(): number[] {
  const [a, b, c] = uniqueFeatures(next());
  return [4, 100 + a * 300, 70 + b * 90, 2500, 12 + c * 10, 1975];
}

/** A unique, plausible cars-mpg row as a JSON array. */
function carsFeatures(): string {
  const [a, b, c] = uniqueFeatures(next());
  return `[4,${100 + a * 300},${70 + b * 90},2500,${12 + c * 10},1975]`;
}

/** Request bodies that never repeat (no cache hits), built cheaply. */
function bodyMaker(model: 'cars-mpg' | 'mlp-large'): () => string {
  if (model === 'cars-mpg') return () => `{"model":"cars-mpg","features":${carsFeatures()}}`;
  const rest = (randomRows(1, 253, 42)[0] as number[]).map((v) => v.toFixed(6)).join(',');
  return () => `{"model":"mlp-large","features":[${uniqueFeatures(next()).join(',')},${rest}]}`;
}

/** The tutorial's body (`PredictionRequest`: features only, one model per service), the same rows. */
function tutorialBodyMaker(): () => string {
  return () => `{"features":${carsFeatures()}}`;
}

/** `rows` unique mlp-large rows per request, as JSON numbers. */
function batchBodyMaker(rows: number): () => string {
  const rest = (randomRows(1, 253, 43)[0] as number[]).map((v) => v.toFixed(6)).join(',');
  return () => {
    const requests: string[] = [];
    for (let r = 0; r < rows; r++) requests.push(`{"features":[${uniqueFeatures(next()).join(',')},${rest}]}`);
    return `{"model":"mlp-large","requests":[${requests.join(',')}]}`;
  };
}

/** The same kind of rows packed as float32 (`tensor`). */
function tensorBodyMaker(rows: number): () => string {
  const rest = (randomRows(1, 253, 43)[0] as number[]).map((v) => Number(v.toFixed(6)));
  const values = new Float32Array(rows * 256);
  for (let r = 0; r < rows; r++) values.set(rest, r * 256 + 3);
  return () => {
    for (let r = 0; r < rows; r++) values.set(uniqueFeatures(next()), r * 256);
    const data = Buffer.from(values.buffer).toString('base64');
    return `{"model":"mlp-large","tensor":{"dtype":"float32","shape":[${rows},256],"data":"${data}"}}`;
  };
}

/** The tritonclient release pinned in tests/clients/requirements.txt (its wheel ships perf_analyzer). */
function tritonclientVersion(): string {
  const text = readFileSync(join(REPO_ROOT, 'tests', 'clients', 'requirements.txt'), 'utf8');
  return /^tritonclient\[[^\]]*\]==(\S+)/m.exec(text)?.[1] ?? 'unknown';
}

// ---------------------------------------------------------------- load

async function load(
  url: string,
  path: string,
  concurrency: number,
  makeBody: () => string,
  headers: Record<string, string>,
  seconds = DURATION,
): Promise<LoadPoint> {
  const result = await autocannon({
    url,
    connections: concurrency,
    duration: seconds,
    timeout: 60,
    requests: [
      {
        method: 'POST',
        path,
        headers: { 'content-type': 'application/json', ...headers },
        setupRequest: (req) => {
          req.body = makeBody();
          return req;
        },
      },
    ],
  });
  const ok = result.requests.total - result.non2xx;
  return {
    concurrency,
    duration_s: result.duration,
    requests: result.requests.total,
    rps: Math.round((ok / result.duration) * 10) / 10,
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    non_2xx: result.non2xx,
    errors: result.errors,
  };
}

/**
 * p50 latency of requests sent one after another over one kept-alive connection, timed with
 * performance.now() (autocannon reports whole milliseconds, too coarse for an idle overhead).
 */
async function sequentialP50(
  url: string,
  path: string,
  makeBody: () => string,
  headers: Record<string, string>,
  count: number,
): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const target = new URL(path, url);
  const send = (body: string) =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        target,
        {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers },
        },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  for (let i = 0; i < 200; i++) await send(makeBody());
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const body = makeBody();
    const t = performance.now();
    await send(body);
    times.push(performance.now() - t);
  }
  agent.destroy();
  times.sort((a, b) => a - b);
  return Math.round((times[Math.floor(times.length / 2)] as number) * 1000) / 1000;
}

// ---------------------------------------------------------------- processes

function peakRssMb(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
  } catch {
    return 0;
  }
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (user + system, all threads) a process has used so far, in µs, from /proc/<pid>/stat. */
function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may hold spaces: state is field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1e6;
}

/**
 * The pid of the process that does the work, checked by its name: a wrapper (a shell, pnpm, tsx's
 * CLI) in between would make the CPU figures measure the wrong process.
 */
function processPid(pid: number | undefined, comm: string, what: string): number {
  const actual = pid ? readFileSync(`/proc/${pid}/comm`, 'utf8').trim() : 'none';
  if (!pid || !actual.startsWith(comm)) throw new Error(`${what}: pid ${pid} is ${actual}, not ${comm}`);
  return pid;
}

/** One load point, with the CPU each process spent during it, per completed request (µs). */
async function loadWithCpu(
  pids: Record<string, number>,
  run: () => Promise<LoadPoint>,
): Promise<{ point: LoadPoint; us: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMicros(pid)]));
  const point = await run();
  const completed = Math.max(1, point.requests - point.non_2xx);
  const us = Object.fromEntries(
    Object.entries(pids).map(([k, pid]) => [
      k,
      Math.round(((cpuMicros(pid) - (before[k] ?? 0)) / completed) * 10) / 10,
    ]),
  );
  return { point, us };
}

/**
 * Where the traced processes of the tracing scenario send their spans: an OTLP/HTTP endpoint that
 * reads each export request and answers 200, counting them (so the run shows spans did flow).
 */
async function startOtlpSink(): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
  let received = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/v1/traces') received++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Result-cache hits the API has answered since it started (every bench input is unique: 0). */
async function cacheHits(apiBase: string): Promise<number> {
  const text = await (await fetch(`${apiBase}/metrics`)).text();
  let hits = 0;
  for (const m of text.matchAll(/^quern_result_cache_lookups_total\{[^}]*result="hit"[^}]*\} ([\d.e+-]+)/gm)) {
    hits += Number(m[1]);
  }
  return hits;
}

async function batchStats(workerPort: number, model: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text();
  const read = (name: string) =>
    Number(new RegExp(`^${name}\\{[^}]*model="${model}"[^}]*\\} ([\\d.e+-]+)`, 'm').exec(text)?.[1] ?? 0);
  return { sum: read('quern_batch_size_sum'), count: read('quern_batch_size_count') };
}

function writeVariantModels(manifest: ModelManifest, maxBatch: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'quern-bench-models-'));
  for (const m of manifest.models) writeFileSync(join(dir, m.file), readFileSync(join(MODELS_DIR, m.file)));
  const variant = {
    ...manifest,
    models: manifest.models.map((m) =>
      m.name === 'mlp-large' ? { ...m, batching: { ...m.batching, max_batch_size: maxBatch } } : m,
    ),
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(variant, null, 2));
  return dir;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = Date.now();
  const cpu = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  const machine = {
    cores: THREADS,
    cpu,
    memory_gb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    redis: execFileSync('redis-server', ['--version']).toString().trim().split(' ')[2] ?? '',
  };
  log(`machine: ${THREADS} cores, ${cpu}; ${DURATION}s per load point${SMOKE ? ' (smoke)' : ''}`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  // First, so a machine without Python venv support fails in seconds with the fix named.
  const tutorialPython = await ensureTutorialVenv(log);
  log('building the bundles (pnpm build)');
  execFileSync(process.execPath, ['--import', 'tsx', 'packages/devkit/src/build-apps.ts'], {
    cwd: REPO_ROOT,
    stdio: 'ignore',
  });

  const manifest = loadManifest(MODELS_DIR);
  const redis = await RedisServer.start({ appendonly: true, appendfsync: 'everysec' });
  const prefix = uniquePrefix('b');
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  const { key } = await new KeyStore(client, new KeySpace(prefix)).create({
    name: 'bench',
    tier: 'premium',
    scopes: ['predict', 'jobs:read'],
  });
  const auth = { 'x-api-key': key };
  const logFile = join(RESULTS_DIR, 'bench-services.log');
  const logFd = openSync(logFile, 'w');
  const env = {
    NODE_ENV: 'production',
    LOG_LEVEL: 'info',
    REDIS_URL: redis.url,
    QUERN_REDIS_PREFIX: prefix,
    QUERN_JWT_KEYS: TEST_JWT_KEYS,
    QUERN_SECRETS_KEY: 'bench-secrets-key-0123456789abcdefghijkl',
    HOST: '127.0.0.1',
    QUERN_MODELS_DIR: MODELS_DIR,
    // The rate limiter runs (its cost is in the numbers) but never refuses.
    QUERN_RATE_PREMIUM_PER_MINUTE: '10000000',
    QUERN_RATE_PREMIUM_PER_HOUR: '100000000',
    QUERN_QUEUE_MAX_DEPTH: '10000000',
    QUERN_RETAIN_COMPLETED_COUNT: '1000000',
    QUERN_WORKER_THREADS: String(THREADS),
  };
  const apiPort = await freePort();
  const apiRss: number[] = [];
  const startApi = async (modelsDir = MODELS_DIR, extraEnv: Record<string, string> = {}) => {
    const process = new ServiceProcess({
      name: 'api',
      entry: 'apps/api/dist/main.js',
      runner: 'node',
      outputFd: logFd,
      env: { ...env, QUERN_MODELS_DIR: modelsDir, PORT: String(apiPort), ...extraEnv },
    });
    await waitForHttp(`http://127.0.0.1:${apiPort}/health`, 60_000);
    return process;
  };
  let hits = 0;
  const stopApi = async (p: ServiceProcess) => {
    apiRss.push(peakRssMb(p.pid));
    hits += await cacheHits(`http://127.0.0.1:${apiPort}`);
    await p.stop('SIGTERM');
  };
  let api = await startApi();
  const base = `http://127.0.0.1:${apiPort}`;
  const workerRss: number[] = [];
  const startWorker = async (modelsDir = MODELS_DIR, extraEnv: Record<string, string> = {}) => {
    const port = await freePort();
    const worker = new ServiceProcess({
      name: 'worker',
      entry: 'apps/worker/dist/main.js',
      runner: 'node',
      outputFd: logFd,
      env: { ...env, QUERN_MODELS_DIR: modelsDir, QUERN_WORKER_PORT: String(port), ...extraEnv },
    });
    await waitForHttp(`http://127.0.0.1:${port}/ready`, 60_000);
    return { worker, port };
  };
  const stopWorker = async (w: { worker: ServiceProcess }) => {
    workerRss.push(peakRssMb(w.worker.pid));
    await w.worker.stop('SIGTERM');
  };
  let current = await startWorker();
  await waitForHttp(`${base}/ready`, 60_000);
  const queues = Object.fromEntries(
    manifest.models.map((m) => [m.name, new Queue(`infer-${m.name}`, { connection: client, prefix })]),
  );

  // ------------------------------------------------------------ 1. limits
  log('limits: ONNX Runtime in the worker’s thread pool, a trivial Hono route, raw BullMQ');
  const pool = new InferencePool({
    threads: THREADS,
    models: manifest.models.map((m) => ({
      name: m.name,
      path: join(MODELS_DIR, m.file),
      inputName: m.input.name,
      outputName: m.output.name,
      features: m.input.features,
      outputSize: outputSize(m),
    })),
  });
  await pool.start();
  const ort: Record<string, Record<string, number>> = {};
  for (const m of manifest.models) {
    ort[m.name] = {};
    for (const batch of [1, 8, 32, 128]) {
      const input = Float32Array.from(randomRows(batch, m.input.features, batch).flat());
      let rows = 0;
      const until = performance.now() + Math.max(500, (DURATION * 1000) / 4);
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: THREADS }, async () => {
          while (performance.now() < until) {
            await pool.run(m.name, batch, input.slice());
            rows += batch;
          }
        }),
      );
      (ort[m.name] as Record<string, number>)[String(batch)] = Math.round(rows / ((performance.now() - t0) / 1000));
    }
    log(`  ORT ${m.name}: ${JSON.stringify(ort[m.name])} rows/s`);
  }
  await pool.close();
  const directLatency: Record<string, number> = {};
  for (const m of manifest.models) {
    const direct = await DirectOrt.load(MODELS_DIR, m);
    const row = randomRows(1, m.input.features, 3);
    for (let i = 0; i < 50; i++) await direct.run(row);
    const times: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      await direct.run(row);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    directLatency[m.name] = Math.round((times[Math.floor(times.length / 2)] as number) * 1000) / 1000;
    await direct.release();
  }
  log(`  direct ONNX Runtime p50, one row: ${JSON.stringify(directLatency)} ms`);

  const honoPort = await freePort();
  const hono = new ServiceProcess({
    name: 'hono',
    entry: 'tests/bench/servers/trivial-hono.ts',
    outputFd: logFd,
    env: { PORT: String(honoPort) },
  });
  await waitForHttp(`http://127.0.0.1:${honoPort}/v1/jobs`, 30_000, 404);
  await load(`http://127.0.0.1:${honoPort}`, '/v1/jobs', 64, bodyMaker('cars-mpg'), {}, 1);
  const honoPoint = await load(`http://127.0.0.1:${honoPort}`, '/v1/jobs', 64, bodyMaker('cars-mpg'), {});
  // The unit of the CPU-per-request targets, measured the way Quern's processes are (below).
  const honoCpu = await loadWithCpu({ hono: processPid(hono.pid, 'node', 'trivial Hono') }, () =>
    load(`http://127.0.0.1:${honoPort}`, '/v1/jobs', CPU_CONCURRENCY, bodyMaker('cars-mpg'), {}),
  );
  await hono.stop();
  log(`  trivial Hono route: ${honoPoint.rps} req/s; at c=${CPU_CONCURRENCY} ${honoCpu.us.hono} µs CPU per request`);

  const jobData = (n: number, model = 'cars-mpg') => {
    const now = Date.now();
    return {
      v: 1 as const,
      model,
      model_version: '1.0.0',
      // Packed, as the API writes it.
      input: {
        count: 1,
        width: 6,
        f32: RowMatrix.fromRows([[4, 100 + (n % 300), 90, 1800 + (n % 4096), 15, 1970 + (n % 13)]]).toBase64(),
      },
      mode: 'async' as const,
      owner: 'key_bench',
      request_id: newId('req'),
      created_at: now,
      deadline_at: now + 3_600_000,
      priority: 1,
    };
  };
  const jobOptions = inferenceJobOptions(loadConfig(env));
  const addJobs = async (queue: Queue, count: number, model: string) => {
    for (let sent = 0; sent < count; sent += 5_000) {
      const n = Math.min(5_000, count - sent);
      await queue.addBulk(
        Array.from({ length: n }, (_, i) => ({
          name: INFERENCE_JOB_NAME,
          data: jobData(sent + i + Math.floor(Math.random() * 1e6) * 100_000, model),
          opts: { jobId: newId('job'), priority: 1, ...jobOptions },
        })),
      );
    }
  };
  const drainRate = async (queue: Queue, count: number, resume: () => Promise<void>) => {
    const before = (await queue.getJobCounts('completed')).completed ?? 0;
    const t0 = performance.now();
    await resume();
    for (;;) {
      const done = ((await queue.getJobCounts('completed')).completed ?? 0) - before;
      if (done >= count) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    return Math.round(count / ((performance.now() - t0) / 1000));
  };

  // Raw BullMQ: the same job data through a worker that does nothing, with the same concurrency.
  const rawBullmqRate = async (): Promise<number> => {
    const noopQueue = new Queue('bench-noop', { connection: client, prefix });
    await noopQueue.pause();
    await addJobs(noopQueue, DRAIN_JOBS, 'cars-mpg');
    const noop = new ServiceProcess({
      name: 'noop',
      entry: 'tests/bench/servers/noop-worker.ts',
      outputFd: logFd,
      env: { REDIS_URL: redis.url, QUERN_REDIS_PREFIX: prefix, CONCURRENCY: String(Math.min(1024, 256 * THREADS * 2)) },
    });
    // Its consumer is up once it has moved the paused queue's marker; give it the same head start as ours.
    await new Promise((r) => setTimeout(r, 1_500));
    const rate = await drainRate(noopQueue, DRAIN_JOBS, () => noopQueue.resume());
    await noop.stop();
    await noopQueue.obliterate({ force: true });
    await noopQueue.close();
    return rate;
  };

  // ------------------------------------------------------------ 2. sync predict
  log('idle latency: one request at a time, timed to the microsecond');
  const idle: Record<string, number> = {};
  for (const model of ['cars-mpg', 'mlp-large'] as const) {
    idle[model] = await sequentialP50(base, '/v1/predict', bodyMaker(model), auth, SMOKE ? 50 : 400);
    log(`  ${model}: p50 ${idle[model]} ms`);
  }
  log('sync predict: POST /v1/predict with unique inputs');
  const sync: Record<string, (LoadPoint & { mean_batch_size: number })[]> = {};
  for (const model of ['cars-mpg', 'mlp-large'] as const) {
    sync[model] = [];
    await load(base, '/v1/predict', 16, bodyMaker(model), auth, SMOKE ? 1 : 2);
    for (const concurrency of CONCURRENCY) {
      const before = await batchStats(current.port, model);
      const point = await load(base, '/v1/predict', concurrency, bodyMaker(model), auth);
      const after = await batchStats(current.port, model);
      const mean = after.count > before.count ? (after.sum - before.sum) / (after.count - before.count) : 0;
      sync[model]?.push({ ...point, mean_batch_size: Math.round(mean * 10) / 10 });
      log(
        `  ${model} c=${concurrency}: ${point.rps} req/s, p50 ${point.p50_ms} ms, p99 ${point.p99_ms} ms, mean batch ${mean.toFixed(1)}`,
      );
    }
  }

  // ------------------------------------------------------------ 2b. against the tutorial
  // The same cars-mpg.onnx behind the tutorial's FastAPI service, one and two uvicorn workers,
  // measured next to Quern point by point (Quern, 1 worker, 2 workers at each concurrency).
  log('against the tutorial: cars-mpg, Quern /v1/predict vs the tutorial’s FastAPI /predict (1 and 2 uvicorn workers)');
  const tutorialOptions = {
    python: tutorialPython,
    redisPort: redis.port,
    modelPath: join(MODELS_DIR, 'cars-mpg.onnx'),
  };
  const tutorial1 = await TutorialServer.start({ ...tutorialOptions, port: await freePort(), workers: 1, logFd });
  const tutorial2 = await TutorialServer.start({ ...tutorialOptions, port: await freePort(), workers: 2, logFd });
  const tutorialAuth = { 'x-api-key': TUTORIAL_API_KEY };
  const quernPids = {
    api: processPid(api.pid, 'node', 'API'),
    worker: processPid(current.worker.pid, 'node', 'worker'),
    redis: processPid(redis.pid, 'redis-server', 'Redis'),
  };
  const tutorialPids = { server: processPid(tutorial1.pid, 'python', 'tutorial (1 worker)'), redis: quernPids.redis };
  const vsPoints: VsTutorial['points'] = [];
  let cpuPerRequest: CpuPerRequest | undefined;
  let seqP50: VsTutorial['sequential_p50_ms'];
  let tutorialHits: number;
  try {
    for (const t of [tutorial1, tutorial2]) {
      await load(t.url, '/predict', 8, tutorialBodyMaker(), tutorialAuth, SMOKE ? 1 : 2);
    }
    await load(base, '/v1/predict', 8, bodyMaker('cars-mpg'), auth, 1);
    const seqCount = SMOKE ? 50 : 400;
    // Each side is measured VS_ROUNDS times, the three alternating, and keeps its best: a shared VM
    // drifts within a minute, and one point per side moved a ratio by up to half between runs.
    const seqRounds: { quern: number; tutorial: number; tutorial_2w: number }[] = [];
    for (let round = 0; round < VS_ROUNDS; round++) {
      seqRounds.push({
        quern: await sequentialP50(base, '/v1/predict', bodyMaker('cars-mpg'), auth, seqCount),
        tutorial: await sequentialP50(tutorial1.url, '/predict', tutorialBodyMaker(), tutorialAuth, seqCount),
        tutorial_2w: await sequentialP50(tutorial2.url, '/predict', tutorialBodyMaker(), tutorialAuth, seqCount),
      });
    }
    seqP50 = {
      quern: Math.min(...seqRounds.map((r) => r.quern)),
      tutorial: Math.min(...seqRounds.map((r) => r.tutorial)),
      tutorial_2w: Math.min(...seqRounds.map((r) => r.tutorial_2w)),
    };
    log(
      `  one request at a time, p50 (best of ${VS_ROUNDS}): ${JSON.stringify(seqP50)} ms; rounds ${JSON.stringify(seqRounds)}`,
    );
    for (const concurrency of VS_TUTORIAL_CONCURRENCY) {
      // CPU is read at one concurrency, in the first round only (an empty pid set measures nothing).
      const withCpu = concurrency === CPU_CONCURRENCY;
      type Measured = Awaited<ReturnType<typeof loadWithCpu>>;
      const rounds: { q: Measured; t: Measured; t2: LoadPoint }[] = [];
      for (let round = 0; round < VS_ROUNDS; round++) {
        const cpuNow = withCpu && round === 0;
        const q = await loadWithCpu(cpuNow ? quernPids : {}, () =>
          load(base, '/v1/predict', concurrency, bodyMaker('cars-mpg'), auth),
        );
        const t = await loadWithCpu(cpuNow ? tutorialPids : {}, () =>
          load(tutorial1.url, '/predict', concurrency, tutorialBodyMaker(), tutorialAuth),
        );
        const t2 = await load(tutorial2.url, '/predict', concurrency, tutorialBodyMaker(), tutorialAuth);
        rounds.push({ q, t, t2 });
        log(
          `  c=${concurrency} round ${round + 1}: Quern ${q.point.rps}, tutorial ${t.point.rps}, 2 workers ${t2.rps} req/s`,
        );
      }
      const quern = bestOf(rounds.map((r) => r.q.point));
      const tutorial = bestOf(rounds.map((r) => r.t.point));
      const tutorial_2w = bestOf(rounds.map((r) => r.t2));
      // The CPU figures come from the first round, measured on both sides.
      const { q, t } = rounds[0] as (typeof rounds)[number];
      vsPoints.push({ concurrency, quern, tutorial, tutorial_2w });
      log(
        `  c=${concurrency} (best of ${VS_ROUNDS}): Quern ${quern.rps} req/s p50 ${quern.p50_ms} p99 ${quern.p99_ms} ms; ` +
          `tutorial ${tutorial.rps} req/s p50 ${tutorial.p50_ms} p99 ${tutorial.p99_ms} ms; ` +
          `2 workers ${tutorial_2w.rps} req/s p50 ${tutorial_2w.p50_ms} p99 ${tutorial_2w.p99_ms} ms`,
      );
      if (!withCpu) continue;
      const hono = honoCpu.us.hono ?? 0;
      const us = { api: q.us.api ?? 0, worker: q.us.worker ?? 0, redis: q.us.redis ?? 0, hono };
      cpuPerRequest = {
        concurrency,
        model: 'cars-mpg',
        requests: { quern: q.point.requests - q.point.non_2xx, hono: honoCpu.point.requests - honoCpu.point.non_2xx },
        us_per_request: us,
        vs_hono: { api: ratio(us.api, hono), worker: ratio(us.worker, hono), redis: ratio(us.redis, hono) },
        tutorial_us_per_request: { server: t.us.server ?? 0, redis: t.us.redis ?? 0 },
      };
      log(
        `  CPU per request at c=${concurrency}: API ${us.api} µs, worker ${us.worker} µs, Redis ${us.redis} µs; ` +
          `trivial Hono ${hono} µs; tutorial ${t.us.server} µs + Redis ${t.us.redis} µs`,
      );
    }
    tutorialHits = await tutorial1.cacheHits();
  } finally {
    await tutorial1.stop();
    await tutorial2.stop();
  }
  const vsAt = (c: number) => vsPoints.find((p) => p.concurrency === c);
  const rpsRatio = (c: number, side: 'tutorial' | 'tutorial_2w' = 'tutorial') => {
    const p = vsAt(c);
    return p ? ratio(p.quern.rps, p[side].rps) : null;
  };
  const vsTutorial: VsTutorial = {
    server: {
      code: 'tests/bench/servers/tutorial (the tutorial’s Parts 2–5)',
      command: `uvicorn ${TutorialServer.args({ port: 0, workers: 1 })
        .slice(2)
        .join(' ')
        .replace('--port 0', '--port <free>')}`,
      rate_limit_per_minute: TUTORIAL_RATE_LIMIT_PER_MINUTE,
      redis_db: TUTORIAL_REDIS_DB,
      requirements: readFileSync(join(TUTORIAL_DIR, 'requirements.txt'), 'utf8')
        .split('\n')
        .filter((l) => l.trim() && !l.startsWith('#')),
      model: 'models/cars-mpg.onnx',
      cache_hits: tutorialHits,
    },
    sequential_p50_ms: seqP50,
    points: vsPoints,
    ratios: {
      c1_p50_ratio: ratio(seqP50.quern, seqP50.tutorial),
      c8: rpsRatio(8),
      c32: rpsRatio(32),
      c128: rpsRatio(128),
      c32_2w: rpsRatio(32, 'tutorial_2w'),
      p99_below_tutorial: Object.fromEntries(
        vsPoints
          .filter((p) => p.concurrency >= 8)
          .map((p) => [String(p.concurrency), p.quern.p99_ms < p.tutorial.p99_ms]),
      ),
    },
  };
  log(`  ratios: ${JSON.stringify(vsTutorial.ratios)}; tutorial cache hits ${tutorialHits}`);

  // ------------------------------------------------------------ 3. unbatched
  log('unbatched: mlp-large with max_batch_size 1 (no batching anywhere: API and worker read the same manifest)');
  await stopWorker(current);
  await stopApi(api);
  const variantDir = writeVariantModels(manifest, 1);
  api = await startApi(variantDir);
  current = await startWorker(variantDir);
  await waitForHttp(`${base}/ready`, 60_000);
  await load(base, '/v1/predict', 16, bodyMaker('mlp-large'), auth, 1);
  const unbatched = await load(base, '/v1/predict', 64, bodyMaker('mlp-large'), auth);
  log(`  mlp-large c=64 unbatched: ${unbatched.rps} req/s, p99 ${unbatched.p99_ms} ms`);
  await stopWorker(current);
  await stopApi(api);
  rmSync(variantDir, { recursive: true, force: true });
  api = await startApi();
  current = await startWorker();
  await waitForHttp(`${base}/ready`, 60_000);

  // ------------------------------------------------------------ 4. no queue
  log('no queue: ONNX Runtime in-process per request (the baseline server)');
  const nqPort = await freePort();
  const noqueue = new ServiceProcess({
    name: 'noqueue',
    entry: 'tests/bench/servers/noqueue.ts',
    outputFd: logFd,
    env: { PORT: String(nqPort), QUERN_MODELS_DIR: MODELS_DIR },
  });
  await waitForHttp(`http://127.0.0.1:${nqPort}/v1/predict`, 30_000, 404);
  await load(`http://127.0.0.1:${nqPort}`, '/v1/predict', 16, bodyMaker('mlp-large'), {}, 1);
  const noQueue = await load(`http://127.0.0.1:${nqPort}`, '/v1/predict', 64, bodyMaker('mlp-large'), {});
  await noqueue.stop();
  log(`  mlp-large c=64 without a queue: ${noQueue.rps} req/s, p99 ${noQueue.p99_ms} ms`);

  // ------------------------------------------------------------ 5. async ingest
  log('async ingest: POST /v1/jobs → 202 (queue paused, so only the ingest path runs)');
  const carsQueue = queues['cars-mpg'] as Queue;
  await carsQueue.pause();
  await load(base, '/v1/jobs', 64, bodyMaker('cars-mpg'), auth, 1);
  const ingest = await load(base, '/v1/jobs', 64, bodyMaker('cars-mpg'), auth);
  log(`  ${ingest.rps} req/s, p99 ${ingest.p99_ms} ms`);
  await carsQueue.obliterate({ force: true });

  // ------------------------------------------------------------ 6. drain
  // Measured next to its baseline, alternately, best of two each: both are a few seconds long and
  // a shared machine's noise moved single measurements by a third between runs.
  log(`drain: ${DRAIN_JOBS} queued cars-mpg jobs, against raw BullMQ no-op jobs (best of 2 each, alternating)`);
  const drains: number[] = [];
  const raws: number[] = [];
  for (let round = 0; round < 2; round++) {
    raws.push(await rawBullmqRate());
    await carsQueue.pause();
    await addJobs(carsQueue, DRAIN_JOBS, 'cars-mpg');
    drains.push(await drainRate(carsQueue, DRAIN_JOBS, () => carsQueue.resume()));
    await carsQueue.clean(0, 0, 'completed');
  }
  const bullmqRate = Math.max(...raws);
  const drain = Math.max(...drains);
  log(`  raw BullMQ no-op: ${raws.join(', ')} jobs/s; Quern drain: ${drains.join(', ')} jobs/s`);

  // ------------------------------------------------------------ 7. client batches
  log('client batches: POST /v1/batch-predict with 100 mlp-large rows');
  await load(base, '/v1/batch-predict', 8, batchBodyMaker(100), auth, 1);
  const batchPoint = await load(base, '/v1/batch-predict', 16, batchBodyMaker(100), auth);
  const clientBatchRows = Math.round(batchPoint.rps * 100);
  log(`  JSON numbers: ${batchPoint.rps} req/s = ${clientBatchRows} rows/s, p99 ${batchPoint.p99_ms} ms`);
  await load(base, '/v1/batch-predict', 8, tensorBodyMaker(100), auth, 1);
  const tensorPoint = await load(base, '/v1/batch-predict', 16, tensorBodyMaker(100), auth);
  const tensorRows = Math.round(tensorPoint.rps * 100);
  log(`  packed float32 (tensor): ${tensorPoint.rps} req/s = ${tensorRows} rows/s, p99 ${tensorPoint.p99_ms} ms`);

  // ------------------------------------------------------------ 7b. perf_analyzer (OIP v2)
  // NVIDIA's load generator over the Open Inference Protocol, next to autocannon on /v1/predict.
  const paConcurrency = 16;
  const paRequests = SMOKE ? 300 : 10_000;
  log(`perf_analyzer: cars-mpg over /v2 (OIP), c=${paConcurrency}, ${paRequests} requests, JSON and binary tensors`);
  const paTool = await perfAnalyzerTool(log);
  const paDir = mkdtempSync(join(tmpdir(), 'quern-bench-pa-'));
  const paPoints: PerfAnalyzerPoint[] = [];
  try {
    for (const format of ['json', 'binary'] as const) {
      const point = await runPerfAnalyzer({
        tool: paTool,
        host: base.replace('http://', ''),
        apiKey: key,
        model: 'cars-mpg',
        input: 'features',
        // Twice as many unique rows as requests: no thread wraps round to a row another sent.
        rows: Array.from({ length: paRequests * 2 }, carsRow),
        dataFile: join(paDir, `${format}.json`),
        concurrency: paConcurrency,
        requests: paRequests,
        format,
      });
      paPoints.push(point);
      log(`  ${format}: ${point.infer_per_sec} infer/s, p50 ${point.p50_ms} ms, p99 ${point.p99_ms} ms`);
    }
  } finally {
    rmSync(paDir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ 7c. tracing
  // OpenTelemetry on (OTLP/HTTP protobuf to a sink that answers 200, 10% of traces kept) against
  // the same processes with it off, restarted for each; alternately, best of two each, ending off.
  log(
    `tracing: cars-mpg /v1/predict c=${TRACING_CONCURRENCY}, OTLP with ${TRACING_SAMPLE * 100}% sampling vs off ` +
      '(best of 2 each, alternating)',
  );
  const sink = await startOtlpSink();
  const tracedEnv = {
    OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
    OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
    OTEL_TRACES_SAMPLER_ARG: String(TRACING_SAMPLE),
  };
  const tracingRuns: Record<'on' | 'off', LoadPoint[]> = { on: [], off: [] };
  for (let round = 0; round < 2; round++) {
    for (const mode of ['on', 'off'] as const) {
      await stopWorker(current);
      await stopApi(api);
      const extra = mode === 'on' ? tracedEnv : {};
      api = await startApi(MODELS_DIR, extra);
      current = await startWorker(MODELS_DIR, extra);
      await waitForHttp(`${base}/ready`, 60_000);
      await load(base, '/v1/predict', TRACING_CONCURRENCY, bodyMaker('cars-mpg'), auth, 1);
      tracingRuns[mode].push(await load(base, '/v1/predict', TRACING_CONCURRENCY, bodyMaker('cars-mpg'), auth));
    }
  }
  await sink.close();
  const tracingOn = bestOf(tracingRuns.on);
  const tracingOff = bestOf(tracingRuns.off);
  const tracingCost = tracingOff.rps > 0 ? Math.round((1 - tracingOn.rps / tracingOff.rps) * 1000) / 1000 : 0;
  log(
    `  off: ${tracingRuns.off.map((p) => p.rps).join(', ')} req/s; on: ${tracingRuns.on.map((p) => p.rps).join(', ')} ` +
      `req/s; cost ${(tracingCost * 100).toFixed(1)}%; ${sink.requests()} OTLP export requests received`,
  );

  // ------------------------------------------------------------ 8. memory, ratios, report
  const rss = {
    api: Math.max(...apiRss, peakRssMb(api.pid)),
    worker: Math.max(...workerRss, peakRssMb(current.worker.pid)),
  };
  await stopWorker(current);
  await stopApi(api);
  closeSync(logFd);
  client.disconnect();
  await redis.stop();

  const find = (model: string, c: number) => sync[model]?.find((p) => p.concurrency === c);
  const mlp64 = find('mlp-large', 64) ?? find('mlp-large', Math.max(...CONCURRENCY));
  const ratios = {
    batched_vs_unbatched: ratio(mlp64?.rps ?? 0, unbatched.rps),
    batched_vs_noqueue: ratio(mlp64?.rps ?? 0, noQueue.rps),
    idle_overhead_ms: Math.round(((idle['cars-mpg'] ?? 0) - (directLatency['cars-mpg'] ?? 0)) * 100) / 100,
    ingest_vs_hono: ratio(ingest.rps, honoPoint.rps),
    drain_vs_bullmq: ratio(drain, bullmqRate),
    client_batch_vs_ort: ratio(clientBatchRows, ort['mlp-large']?.['128'] ?? 0),
    client_batch_tensor_vs_ort: ratio(tensorRows, ort['mlp-large']?.['128'] ?? 0),
    tracing_cost: tracingCost,
    rss_mb: rss,
  };
  const targets = {
    batched_vs_unbatched: { target: '≥ 3', met: ratios.batched_vs_unbatched >= 3 },
    batched_vs_noqueue: { target: '≥ 1.5', met: ratios.batched_vs_noqueue >= 1.5 },
    idle_overhead_ms: { target: '≤ 2', met: ratios.idle_overhead_ms <= 2 },
    ingest_vs_hono: { target: '≥ 0.25', met: ratios.ingest_vs_hono >= 0.25 },
    ingest_p99_ms: { target: '< 25', met: ingest.p99_ms < 25 },
    drain_vs_bullmq: { target: '≥ 0.5', met: ratios.drain_vs_bullmq >= 0.5 },
    client_batch_vs_ort: { target: '≥ 0.5', met: ratios.client_batch_vs_ort >= 0.5 },
    client_batch_tensor_vs_ort: { target: '≥ 0.5', met: ratios.client_batch_tensor_vs_ort >= 0.5 },
    tracing_cost: { target: '≤ 0.05', met: tracingCost <= 0.05 && sink.requests() > 0 },
    worker_rss_mb: { target: '≤ 400', met: rss.worker <= 400 },
    api_rss_mb: { target: '≤ 200', met: rss.api <= 200 },
    vs_tutorial_c1_p50_ratio: { target: '≤ 1.6', met: vsTutorial.ratios.c1_p50_ratio <= 1.6 },
    vs_tutorial_c8: { target: '≥ 1.5', met: (vsTutorial.ratios.c8 ?? 0) >= 1.5 },
    vs_tutorial_c32: { target: '≥ 4', met: (vsTutorial.ratios.c32 ?? 0) >= 4 },
    vs_tutorial_c128: { target: '≥ 5', met: (vsTutorial.ratios.c128 ?? 0) >= 5 },
    vs_tutorial_p99: {
      target: 'below at every c ≥ 8',
      met:
        Object.keys(vsTutorial.ratios.p99_below_tutorial).length > 0 &&
        Object.values(vsTutorial.ratios.p99_below_tutorial).every(Boolean),
    },
    vs_tutorial_c32_2w: { target: '≥ 2', met: (vsTutorial.ratios.c32_2w ?? 0) >= 2 },
    cpu_api_vs_hono: { target: '≤ 5', met: cpuPerRequest !== undefined && cpuPerRequest.vs_hono.api <= 5 },
    cpu_worker_vs_hono: { target: '≤ 2', met: cpuPerRequest !== undefined && cpuPerRequest.vs_hono.worker <= 2 },
    cpu_redis_vs_hono: { target: '≤ 2', met: cpuPerRequest !== undefined && cpuPerRequest.vs_hono.redis <= 2 },
  };
  const results: BenchResults = {
    recorded_at: new Date().toISOString(),
    smoke: SMOKE,
    duration_per_point_s: DURATION,
    total_seconds: Math.round((Date.now() - started) / 1000),
    machine,
    limits: {
      ort_rows_per_second: ort,
      direct_ort_p50_ms: directLatency,
      trivial_hono: honoPoint,
      raw_bullmq_jobs_per_second: bullmqRate,
    },
    idle_p50_ms: idle,
    sync_predict: sync,
    unbatched_mlp_large: unbatched,
    no_queue_mlp_large: noQueue,
    async_ingest: ingest,
    drain: { jobs: DRAIN_JOBS, jobs_per_second: drain },
    client_batches: { ...batchPoint, rows_per_request: 100, rows_per_second: clientBatchRows },
    client_batches_tensor: { ...tensorPoint, rows_per_request: 100, rows_per_second: tensorRows },
    perf_analyzer: {
      model: 'cars-mpg',
      tool: `perf_analyzer (tritonclient ${tritonclientVersion()}) --service-kind=triton -i http`,
      points: paPoints,
      autocannon_v1_predict: find('cars-mpg', paConcurrency) ?? null,
    },
    cache_hits: hits,
    tracing: {
      model: 'cars-mpg',
      concurrency: TRACING_CONCURRENCY,
      sampling: TRACING_SAMPLE,
      off: tracingOff,
      on: tracingOn,
      export_requests: sink.requests(),
      throughput_cost: tracingCost,
    },
    vs_tutorial: vsTutorial,
    cpu_per_request_vs_hono: cpuPerRequest ?? null,
    ratios,
    targets,
  };
  writeFileSync(join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeReport(results, DOCS_DIR);
  log(`result-cache hits in the API: ${hits} (every input is unique, so anything but 0 flatters the figures)`);
  log(`ratios: ${JSON.stringify(ratios)}`);
  log(`vs tutorial: ${JSON.stringify(vsTutorial.ratios)}; CPU vs Hono: ${JSON.stringify(cpuPerRequest?.vs_hono)}`);
  log(`targets met: ${Object.values(targets).filter((t) => t.met).length}/${Object.keys(targets).length}`);
  log(`done in ${results.total_seconds} s; results in ${join(RESULTS_DIR, 'latest.json')}`);
}

if (process.argv[1]?.endsWith('run.ts')) {
  main().catch((err: Error) => {
    process.stderr.write(`[bench] failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
