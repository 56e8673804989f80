/**
 * A version rollout under steady load, measured: `pnpm exec tsx tests/bench/version-rollout.ts`.
 *
 * An API and a worker (separate processes, from source) serve cars-mpg 1.0.0 to a steady sync
 * load (autocannon, `ROLLOUT_CONNECTIONS` connections, result cache off so every call is
 * computed). Phase by phase, with the load running: `steady`; `load-10`: 2.0.0 (a re-seeded build)
 * is added to the manifest and loaded with 10% of the traffic; `shift-100`: it takes all of it;
 * `promote-unload`: it becomes the default and 1.0.0 is unloaded. Each phase reports its p99 and
 * any failed request; the bar is no failure and no phase p99 above twice the steady one.
 * Writes `tests/bench/results/version-rollout.json`. `pnpm bench` runs it after the main run
 * (tests/bench/extras.ts), as it does the other single-operation measurements.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KeyStore } from '@quern/api';
import {
  APP_ENTRY,
  freePort,
  REPO_ROOT,
  RedisServer,
  ServiceProcess,
  TEST_JWT_KEYS,
  uniquePrefix,
  waitForHttp,
} from '@quern/devkit';
import { KeySpace, type ModelEntry, type ModelManifest } from '@quern/shared';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { buildCarsMpg, CARS_MPG_CONFIG } from '../../models/build/cars-mpg';
import { writeTestModels } from '../support/test-models';

const PHASE_SECONDS = Number(process.env.ROLLOUT_PHASE_SECONDS ?? 8);
const CONNECTIONS = Number(process.env.ROLLOUT_CONNECTIONS ?? 16);
const RESULTS = process.env.BENCH_OUT ?? join(REPO_ROOT, 'tests', 'bench', 'results');

interface Phase {
  phase: string;
  requests: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  non_2xx: number;
  errors: number;
  /** The admin call made at the phase's start, and its status. */
  action?: { call: string; status: number; ms: number };
}

const log = (line: string) => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const dir = writeTestModels([]);
  const manifestPath = join(dir, 'manifest.json');
  const redis = await RedisServer.start();
  const prefix = uniquePrefix('rollout');
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  const services: ServiceProcess[] = [];
  try {
    const { key } = await new KeyStore(client, new KeySpace(prefix)).create({
      name: 'rollout',
      tier: 'premium',
      scopes: ['predict', 'admin'],
    });
    const env = {
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      REDIS_URL: redis.url,
      QUERN_REDIS_PREFIX: prefix,
      QUERN_JWT_KEYS: TEST_JWT_KEYS,
      QUERN_SECRETS_KEY: 'rollout-secrets-key-0123456789abcdefghij',
      HOST: '127.0.0.1',
      QUERN_MODELS_DIR: dir,
      QUERN_CACHE_TTL_SECONDS: '0',
      QUERN_RATE_PREMIUM_PER_MINUTE: '10000000',
      QUERN_RATE_PREMIUM_PER_HOUR: '100000000',
      QUERN_QUEUE_MAX_DEPTH: '10000000',
      // Drained jobs are released soon after the unload rather than after a day.
      QUERN_JOB_TIMEOUT_MAX_MS: '60000',
      QUERN_JOB_TIMEOUT_DEFAULT_MS: '30000',
    };
    const apiPort = await freePort();
    const workerPort = await freePort();
    services.push(
      new ServiceProcess({
        name: 'worker',
        entry: APP_ENTRY.worker,
        env: { ...env, QUERN_WORKER_PORT: String(workerPort) },
        onLine: (line) => {
          if (process.env.ROLLOUT_VERBOSE) log(line);
        },
      }),
    );
    await waitForHttp(`http://127.0.0.1:${workerPort}/ready`, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; the worker said: ${services[0]?.lines.slice(-5).join(' | ')}`);
    });
    services.push(new ServiceProcess({ name: 'api', entry: APP_ENTRY.api, env: { ...env, PORT: String(apiPort) } }));
    const base = `http://127.0.0.1:${apiPort}`;
    await waitForHttp(`${base}/ready`, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; the API said: ${services[1]?.lines.slice(-5).join(' | ')}`);
    });
    const headers = { 'content-type': 'application/json', 'x-api-key': key };

    const admin = async (path: string, body: unknown) => {
      const t = performance.now();
      const res = await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
      const text = await res.text();
      if (res.status !== 200) log(`  ${path}: ${res.status} ${text}`);
      return { call: path, status: res.status, ms: Math.round(performance.now() - t) };
    };
    let n = 0;
    const run = async (phase: string, action?: () => Promise<Phase['action']>): Promise<Phase> => {
      const load = autocannon({
        url: base,
        connections: CONNECTIONS,
        duration: PHASE_SECONDS,
        timeout: 30,
        requests: [
          {
            method: 'POST',
            path: '/v1/predict',
            headers,
            setupRequest: (req) => {
              n++;
              req.body = JSON.stringify({
                features: [
                  4 + (n % 5),
                  100 + (n % 250),
                  70 + (n % 90),
                  2000 + (n % 2000),
                  12 + (n % 8),
                  1970 + (n % 13),
                ],
              });
              return req;
            },
          },
        ],
      });
      // The admin call goes out a second into the phase, while the load runs.
      const done = action ? new Promise((r) => setTimeout(r, 1_000)).then(action) : Promise.resolve(undefined);
      const [result, called] = await Promise.all([load, done]);
      const out: Phase = {
        phase,
        requests: result.requests.total,
        p50_ms: result.latency.p50,
        p99_ms: result.latency.p99,
        max_ms: result.latency.max,
        non_2xx: result.non2xx,
        errors: result.errors,
        ...(called ? { action: called } : {}),
      };
      log(`${phase}: ${JSON.stringify(out)}`);
      return out;
    };

    // Trained now, not during the load: training holds this process's event loop (the load generator's).
    const rebuilt = buildCarsMpg({ ...CARS_MPG_CONFIG, seed: 2024 });
    const phases: Phase[] = [];
    phases.push(await run('warm-up'));
    phases.push(await run('steady'));
    phases.push(
      await run('load-10', async () => {
        // 2.0.0 appears in the manifest with the service running, then is loaded with 10% of traffic.
        writeFileSync(join(dir, 'cars-mpg-2.onnx'), rebuilt.onnx);
        const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as ModelManifest;
        const v1 = manifest.models.find((m) => m.name === 'cars-mpg') as ModelEntry;
        manifest.versions = [
          {
            ...v1,
            version: '2.0.0',
            file: 'cars-mpg-2.onnx',
            sha256: createHash('sha256').update(rebuilt.onnx).digest('hex'),
          },
        ];
        writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
        return admin('/v1/admin/models/cars-mpg/versions/2.0.0/load', { weight: 10 });
      }),
    );
    phases.push(
      await run('shift-100', () => admin('/v1/admin/models/cars-mpg/routing', { weights: { '2.0.0': 100 } })),
    );
    phases.push(
      await run('promote-unload', async () => {
        const promoted = await admin('/v1/admin/models/cars-mpg/routing', { default_version: '2.0.0' });
        if (promoted.status !== 200) return promoted;
        return admin('/v1/admin/models/cars-mpg/versions/1.0.0/unload', {});
      }),
    );
    const steady = phases.find((p) => p.phase === 'steady') as Phase;
    const rollout = phases.filter((p) => p.action);
    const worst = Math.max(...rollout.map((p) => p.p99_ms));
    const failed = phases.reduce((sum, p) => sum + p.non_2xx + p.errors, 0);
    const summary = {
      connections: CONNECTIONS,
      phase_seconds: PHASE_SECONDS,
      steady_p99_ms: steady.p99_ms,
      worst_rollout_p99_ms: worst,
      p99_ratio: steady.p99_ms > 0 ? Math.round((worst / steady.p99_ms) * 100) / 100 : null,
      failed_requests: failed,
      within_bar: failed === 0 && worst <= 2 * steady.p99_ms,
      phases,
    };
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, 'version-rollout.json'), `${JSON.stringify(summary, null, 2)}\n`);
    log(
      `steady p99 ${steady.p99_ms} ms, worst rollout-phase p99 ${worst} ms (×${summary.p99_ratio}), ` +
        `${failed} failed requests: ${summary.within_bar ? 'within' : 'outside'} the bar`,
    );
  } finally {
    for (const s of services.reverse()) await s.stop('SIGTERM').catch(() => undefined);
    client.disconnect();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
