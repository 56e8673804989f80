/**
 * `pnpm start`: the whole service on one machine. Without REDIS_URL it starts a local
 * redis-server (data under .data/redis, AOF on, noeviction) on a free port; then one API and one
 * worker process. Once they are up it records where its Redis is in .data/dev.json, which
 * `pnpm quern` reads (the port changes every start), and removes it on stop. Ctrl-C stops
 * everything it started. At a terminal it prints the apps' JSON log lines as readable ones
 * (LOG_FORMAT=json keeps them JSON).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  isPretty,
  type LogFormat,
  newApiKey,
  readableLogLines,
  redactRedisUrl,
  removeDevState,
  writeDevState,
} from '@quern/shared';
import { freePort } from './free-port';
import { findRedisServer, REDIS_INSTALL_HINT, RedisServer } from './redis-server';
import { APP_ENTRY, REPO_ROOT, ServiceProcess, waitForHttp } from './service-process';

/** Where the embedded Redis keeps its data and the development key is kept (QUERN_DATA_DIR overrides). */
const DATA_DIR = process.env.QUERN_DATA_DIR ?? join(REPO_ROOT, '.data');

function say(message: string): void {
  process.stdout.write(`[quern] ${message}\n`);
}

/** The development key: QUERN_DEV_API_KEY, or one generated once and kept in .data/. */
function devApiKey(): string {
  if (process.env.QUERN_DEV_API_KEY) return process.env.QUERN_DEV_API_KEY;
  const file = join(DATA_DIR, 'dev-api-key');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const { key } = newApiKey();
  mkdirSync(DATA_DIR, { recursive: true });
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return key;
}

async function main(): Promise<void> {
  if (process.env.NODE_ENV === 'production') {
    say('pnpm start is the development launcher; in production run pnpm start:api and pnpm start:worker.');
    process.exit(2);
  }
  const format = (process.env.LOG_FORMAT ?? 'auto') as LogFormat;
  if (!['auto', 'json', 'pretty'].includes(format)) {
    say(`LOG_FORMAT must be auto, json or pretty (got ${JSON.stringify(format)})`);
    process.exit(2);
  }
  let redis: RedisServer | undefined;
  let redisUrl = process.env.REDIS_URL;
  if (!redisUrl) {
    if (!findRedisServer()) {
      process.stderr.write(`${REDIS_INSTALL_HINT}\n`);
      process.exit(1);
    }
    redis = await RedisServer.start({ dir: join(DATA_DIR, 'redis'), appendonly: true });
    redisUrl = redis.url;
    say(`redis-server started on ${redisUrl} (data in ${join(DATA_DIR, 'redis')})`);
  } else {
    say('using REDIS_URL from the environment');
  }

  const port = process.env.PORT ?? '8000';
  const key = devApiKey();
  const env = {
    NODE_ENV: process.env.NODE_ENV ?? 'development',
    REDIS_URL: redisUrl,
    PORT: port,
    QUERN_DEV_API_KEY: key,
    QUERN_WORKER_PORT: process.env.QUERN_WORKER_PORT ?? String(await freePort()),
    LOG_FORMAT: 'json',
  };
  // The apps write JSON lines into their pipes; a person at a terminal reads them as readable lines.
  const readable = isPretty(format, process.stdout.isTTY)
    ? readableLogLines(process.stdout.hasColors?.() ?? false)
    : undefined;
  const echo = (line: string) => process.stdout.write(`${readable ? readable(line) : line}\n`);
  const api = new ServiceProcess({ name: 'api', entry: APP_ENTRY.api, env, onLine: echo });
  const worker = new ServiceProcess({ name: 'worker', entry: APP_ENTRY.worker, env, onLine: echo });

  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('stopping…');
    removeDevState(DATA_DIR, process.pid);
    // API and worker first (the worker finishes the jobs it holds), Redis last.
    await Promise.all([api.stop('SIGTERM'), worker.stop('SIGTERM')]);
    if (redis) await redis.stop({ keepDir: true });
    say('stopped');
    process.exit(code);
  };
  // Ctrl-C, a process manager, or the terminal closing (SIGHUP): the children sit in their own
  // process groups, so unless the launcher stops them they would outlive it, holding their ports.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void stopAll(0));
  // With the terminal gone, writing to it fails (EIO); that must not kill the launcher mid-stop.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  for (const child of [api, worker]) {
    void child.exited.then(({ code, signal }) => {
      if (!stopping) {
        say(`${child.options.name} exited unexpectedly (code ${code}, signal ${signal}); stopping everything`);
        void stopAll(1);
      }
    });
  }

  const base = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${base}/ready`, 60_000);
  } catch (err) {
    say(`the service did not become ready: ${(err as Error).message}`);
    await stopAll(1);
    return;
  }
  writeDevState(DATA_DIR, {
    redis_url: redisUrl,
    ...(process.env.QUERN_REDIS_PREFIX ? { redis_prefix: process.env.QUERN_REDIS_PREFIX } : {}),
    api_url: base,
    pid: process.pid,
    started_at: new Date().toISOString(),
  });
  say('');
  say(`API       ${base}`);
  say(`Docs      ${base}/docs`);
  say(`Metrics   ${base}/metrics  (worker: http://127.0.0.1:${env.QUERN_WORKER_PORT}/metrics)`);
  say(`API key   ${key}   (development only: premium, every scope)`);
  say(`Redis     ${redactRedisUrl(redisUrl)}   (pnpm quern keys list finds it while this runs)`);
  say('');
  say(`Try:  curl -s -H 'X-API-Key: ${key}' -H 'content-type: application/json' \\`);
  say(`        -d '{"features":[4,140,90,2264,15.5,1971]}' ${base}/v1/predict`);
  say('Ctrl-C stops everything.');
}

main().catch((err: Error) => {
  process.stderr.write(`[quern] ${err.message}\n`);
  process.exit(1);
});
