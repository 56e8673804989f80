import { createServer, type Server } from 'node:net';
import {
  APP_ENTRY,
  freePort,
  ServiceProcess,
  startTestRedis,
  TEST_JWT_KEYS,
  type TestRedis,
  waitForHttp,
} from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** What a person at a terminal reads: readable lines, quiet probes, and a port clash that says what to set. */
let redis: TestRedis;
const started: ServiceProcess[] = [];
let held: Server | undefined;

beforeAll(async () => {
  redis = await startTestRedis();
});

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop('SIGTERM', 10_000)));
  held?.close();
  await redis?.close();
});

function baseEnv(port: number): Record<string, string> {
  return {
    NODE_ENV: 'test',
    REDIS_URL: redis.url,
    QUERN_REDIS_PREFIX: redis.prefix,
    QUERN_JWT_KEYS: TEST_JWT_KEYS,
    PORT: String(port),
  };
}

async function startApi(env: Record<string, string>): Promise<{ api: ServiceProcess; url: string }> {
  const port = await freePort();
  const api = new ServiceProcess({ name: 'api', entry: APP_ENTRY.api, env: { ...baseEnv(port), ...env } });
  started.push(api);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/health`, 30_000);
  return { api, url };
}

/** Waits until `count` lines match, then returns every matching line. */
async function linesMatching(process: ServiceProcess, pattern: RegExp, count: number): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const found = process.lines.filter((l) => pattern.test(l));
    if (found.length >= count) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${count} lines matching ${pattern}:\n${process.lines.join('\n')}`);
}

describe('the console', () => {
  it('LOG_FORMAT=pretty: one readable line per request; probes at debug level', async () => {
    const { api, url } = await startApi({ LOG_FORMAT: 'pretty', LOG_LEVEL: 'debug' });
    expect((await fetch(`${url}/health`)).status).toBe(200);
    expect((await fetch(`${url}/v1/jobs/job_0000000000000000000000`)).status).toBe(401);
    const [probe] = await linesMatching(api, /GET \/health 200/, 1);
    const [request] = await linesMatching(api, /GET \/v1\/jobs\/:id 401/, 1);
    expect(probe).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] DEBUG: \[api\] GET \/health 200 [\d.]+ ms \{"request_id":"req_/);
    expect(request).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: \[api\] GET \/v1\/jobs\/:id 401 [\d.]+ ms /);
    // Not a terminal and not asked for: nothing else is JSON either.
    expect(api.lines.filter((l) => l.startsWith('{'))).toEqual([]);
  });

  it('JSON when not at a terminal; at info level probes and scrapes write no line, other requests one', async () => {
    const { api, url } = await startApi({ LOG_LEVEL: 'info' });
    for (const path of ['/health', '/ready', '/metrics']) await (await fetch(`${url}${path}`)).arrayBuffer();
    expect((await fetch(`${url}/v1/jobs/job_0000000000000000000000`)).status).toBe(401);
    await api.waitForLog((l) => l.msg === 'request' && l.route === '/v1/jobs/:id');
    const routes = api
      .logs()
      .filter((l) => l.msg === 'request')
      .map((l) => l.route);
    expect(routes).toEqual(['/v1/jobs/:id']);
  });

  it('a port in use: the API and the worker exit naming the variable to set', async () => {
    held = createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => held?.listen(port, '127.0.0.1', resolve));
    const api = new ServiceProcess({ name: 'api', entry: APP_ENTRY.api, env: { ...baseEnv(port), HOST: '127.0.0.1' } });
    const worker = new ServiceProcess({
      name: 'worker',
      entry: APP_ENTRY.worker,
      env: { ...baseEnv(await freePort()), HOST: '127.0.0.1', QUERN_WORKER_PORT: String(port) },
    });
    started.push(api, worker);
    const [apiExit, workerExit] = await Promise.all([api.exited, worker.exited]);
    expect(apiExit.code).toBe(1);
    expect(workerExit.code).toBe(1);
    expect(api.logs()).toContainEqual(
      expect.objectContaining({
        level: 'fatal',
        msg: `port ${port} is already in use: set PORT to a free port (PORT=…)`,
      }),
    );
    expect(worker.logs()).toContainEqual(
      expect.objectContaining({ level: 'fatal', msg: expect.stringContaining('set QUERN_WORKER_PORT to a free port') }),
    );
  });
});
