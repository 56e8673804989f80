/**
 * `pnpm exec tsx tests/bench/redis-shards.ts`: the same sync `/v1/predict` load (cars-mpg, unique
 * rows, so no cache hits) against a Redis Cluster of one master and of three, with the spread key
 * layout (untagged prefix) and QUERN_QUEUE_PARTITIONS=3, through the built API and worker. It
 * records the CPU each Redis shard spends per completed request (from /proc/<pid>/stat, as
 * run.ts does for cpu_per_request_vs_hono), the API's and the worker's, and each master's share
 * of the commands (INFO commandstats). Prints JSON; extras.ts writes it to
 * tests/bench/results/redis-shards.json. Needs `pnpm build` first.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { KeyStore, SCOPES } from '@quern/api';
import {
  freePort,
  LocalRedisCluster,
  REPO_ROOT,
  ServiceProcess,
  seedTestKeys,
  TEST_API_KEY,
  TEST_JWT_KEYS,
  waitForHttp,
} from '@quern/devkit';
import { createRedis, KeySpace, loadConfig, waitForRedis } from '@quern/shared';
import autocannon from 'autocannon';

const SECONDS = Number(process.env.BENCH_SHARD_SECONDS ?? 20);
const CONCURRENCY = Number(process.env.BENCH_SHARD_CONCURRENCY ?? 32);
const PARTITIONS = 3;
const CLOCK_TICKS = 100;
const log = (msg: string) => process.stderr.write(`${msg}\n`);

function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1e6;
}

let counter = 0;
/** A cars-mpg body whose row never repeats (no cache hits). */
function body(): string {
  counter++;
  const a = (counter % 997) / 997;
  const b = (Math.floor(counter / 997) % 991) / 991;
  const c = (Math.floor(counter / 988_027) % 983) / 983;
  return `{"model":"cars-mpg","features":[4,${100 + a * 300},${70 + b * 90},2500,${12 + c * 10},1975]}`;
}

async function load(url: string, seconds: number) {
  const result = await autocannon({
    url,
    connections: CONCURRENCY,
    duration: seconds,
    timeout: 60,
    requests: [
      {
        method: 'POST',
        path: '/v1/predict',
        headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
        setupRequest: (req) => {
          req.body = body();
          return req;
        },
      },
    ],
  });
  const ok = result.requests.total - result.non2xx;
  return {
    ok,
    rps: Math.round((ok / result.duration) * 10) / 10,
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    non_2xx: result.non2xx,
  };
}

async function scenario(masters: number) {
  const cluster = await LocalRedisCluster.start({ masters });
  const processes: ServiceProcess[] = [];
  try {
    const env: Record<string, string | undefined> = {
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      REDIS_URL: undefined,
      REDIS_CLUSTER_NODES: cluster.nodes,
      QUERN_REDIS_PREFIX: 'quern',
      QUERN_QUEUE_PARTITIONS: String(PARTITIONS),
      QUERN_JWT_KEYS: TEST_JWT_KEYS,
      QUERN_SECRETS_KEY: 'bench-secrets-key-0123456789abcdefghijkl',
      HOST: '127.0.0.1',
      QUERN_MODELS_DIR: join(REPO_ROOT, 'models'),
      QUERN_RATE_PREMIUM_PER_MINUTE: '10000000',
      QUERN_RATE_PREMIUM_PER_HOUR: '100000000',
      QUERN_QUEUE_MAX_DEPTH: '10000000',
      QUERN_WORKER_THREADS: String(cpus().length),
    };
    const config = loadConfig(env);
    const seed = createRedis(config, 'consumer', { name: 'bench-seed' });
    await waitForRedis(seed, 10_000);
    await seedTestKeys(new KeyStore(seed, KeySpace.of(config)), SCOPES);
    seed.disconnect();
    const apiPort = await freePort();
    const api = new ServiceProcess({
      name: 'api',
      entry: 'apps/api/dist/main.js',
      runner: 'node',
      env: { ...env, PORT: String(apiPort) },
    });
    processes.push(api);
    const workerPort = await freePort();
    const worker = new ServiceProcess({
      name: 'worker',
      entry: 'apps/worker/dist/main.js',
      runner: 'node',
      env: { ...env, QUERN_WORKER_PORT: String(workerPort) },
    });
    processes.push(worker);
    const base = `http://127.0.0.1:${apiPort}`;
    await waitForHttp(`http://127.0.0.1:${workerPort}/ready`, 60_000);
    await waitForHttp(`${base}/ready`, 60_000);
    await load(base, 3);
    const ports = await cluster.masterPorts();
    for (const port of ports) await cluster.cli(port, 'config', 'resetstat');
    const pids = Object.fromEntries(ports.map((p) => [p, cluster.pidOf(p) as number]));
    const before = {
      api: cpuMicros(api.pid as number),
      worker: cpuMicros(worker.pid as number),
      shards: Object.fromEntries(ports.map((p) => [p, cpuMicros(pids[p] as number)])),
    };
    const point = await load(base, SECONDS);
    const per = (us: number) => Math.round((us / Math.max(1, point.ok)) * 10) / 10;
    const shardUs = ports.map((p) => per(cpuMicros(pids[p] as number) - (before.shards[p] ?? 0)));
    const calls = await Promise.all(ports.map((p) => cluster.commandCalls(p)));
    const totalCalls = calls.reduce((a, b) => a + b, 0);
    const result = {
      masters,
      ...point,
      us_per_request: {
        api: per(cpuMicros(api.pid as number) - before.api),
        worker: per(cpuMicros(worker.pid as number) - before.worker),
        redis_per_shard: shardUs,
        redis_total: Math.round(shardUs.reduce((a, b) => a + b, 0) * 10) / 10,
        redis_busiest_shard: Math.max(...shardUs),
      },
      commands_per_request: Math.round((totalCalls / Math.max(1, point.ok)) * 10) / 10,
      command_share_per_shard: calls.map((n) => Math.round((n / Math.max(1, totalCalls)) * 1000) / 1000),
    };
    log(`  ${masters} master(s): ${JSON.stringify(result)}`);
    return result;
  } catch (err) {
    for (const p of processes) log(`${p.options.name}:\n${p.lines.slice(-15).join('\n')}`);
    throw err;
  } finally {
    await Promise.all(processes.map((p) => p.stop('SIGTERM')));
    await cluster.stop();
  }
}

const load1Before = loadavg()[0] ?? 0;
log(`redis-shards: ${SECONDS}s of /v1/predict at c=${CONCURRENCY} on 1 and 3 masters (load average ${load1Before})`);
const one = await scenario(1);
const three = await scenario(3);
const loadAfter = loadavg()[0] ?? 0;
process.stdout.write(
  `${JSON.stringify(
    {
      scenario: 'sync /v1/predict, cars-mpg, unique rows; spread key layout, QUERN_QUEUE_PARTITIONS=3; 1 API, 1 worker',
      concurrency: CONCURRENCY,
      seconds: SECONDS,
      machine: { cores: cpus().length, load_average_1m: { before: load1Before, after: loadAfter } },
      note:
        // The load after the run counts the run itself: only the one before says what else ran.
        load1Before > cpus().length * 0.75
          ? `the 1-minute load average was ${load1Before} on ${cpus().length} cores before the run (other work, or the bench's own earlier scenarios): absolute rates may be low, CPU per request is the figure to read`
          : 'machine otherwise idle',
      one_master: one,
      three_masters: three,
    },
    null,
    2,
  )}\n`,
);
