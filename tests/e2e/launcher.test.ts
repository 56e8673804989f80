import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, REPO_ROOT, ServiceProcess } from '@quern/devkit';
import { devStatePath, readDevState } from '@quern/shared';
import { afterAll, describe, expect, it } from 'vitest';

/** `pnpm start`, the newcomer's first command: embedded Redis, API and worker, a dev key, Ctrl-C. */
const dataDir = mkdtempSync(join(tmpdir(), 'quern-launcher-'));
let launcher: ServiceProcess | undefined;

afterAll(async () => {
  await launcher?.stop('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

/** Starts `pnpm start`'s launcher on a free port and waits for its banner. */
async function startLauncher(
  extraEnv: Record<string, string> = {},
): Promise<{ launcher: ServiceProcess; port: number }> {
  const port = await freePort();
  const env: Record<string, string | undefined> = {
    PORT: String(port),
    QUERN_DATA_DIR: dataDir,
    REDIS_URL: undefined,
    ...extraEnv,
  };
  const started = new ServiceProcess({
    name: 'launcher',
    entry: join(REPO_ROOT, 'packages/devkit/src/start.ts'),
    env,
  });
  launcher = started;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`launcher not ready:\n${started.lines.join('\n')}`)), 60_000);
    started.child.stdout?.on('data', () => {
      if (started.lines.some((l) => l.includes('Ctrl-C stops everything'))) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { launcher: started, port };
}

/**
 * `pnpm quern …` in another terminal: no REDIS_URL, run from a directory inside the repository.
 * Only called once the launcher's state file is there, so it never falls back to a system Redis.
 */
async function quern(...argv: string[]): Promise<{ stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, QUERN_DATA_DIR: dataDir };
  for (const name of ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES', 'QUERN_REDIS_PREFIX']) delete env[name];
  return promisify(execFile)(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'apps/api/src/cli.ts'), ...argv], {
    cwd: join(REPO_ROOT, 'apps/api'),
    env,
    timeout: 30_000,
  });
}

/** Whether anything accepts a TCP connection on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('pnpm start', () => {
  it('starts Redis, API and worker, prints a working key, and stops everything on SIGINT', async () => {
    // As at a terminal: the apps' lines readable, one a request.
    const { launcher, port } = await startLauncher({ LOG_FORMAT: 'pretty' });
    const out = launcher.lines.join('\n');
    expect(out).toContain(`API       http://127.0.0.1:${port}`);
    expect(out).toContain(`Docs      http://127.0.0.1:${port}/docs`);
    const key = readFileSync(join(dataDir, 'dev-api-key'), 'utf8').trim();
    expect(out).toContain(key);

    const res = await fetch(`http://127.0.0.1:${port}/v1/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key },
      body: JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { prediction: number }).prediction).toBeGreaterThan(10);
    await expect
      .poll(() => launcher.lines.find((l) => / INFO: \[api\] POST \/v1\/predict 200 [\d.]+ ms /.test(l)))
      .toBeDefined();
    expect(launcher.lines.filter((l) => l.startsWith('{"level"'))).toEqual([]);

    // The key CLI finds this launcher's Redis (a new port every start) through its state file.
    const redisUrl = /Redis {5}(redis:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
    expect(readDevState(dataDir)).toMatchObject({ redis_url: redisUrl, api_url: `http://127.0.0.1:${port}` });
    const listed = await quern('keys', 'list', '--json');
    expect((JSON.parse(listed.stdout) as { name: string }[]).map((r) => r.name)).toContain('development');
    expect(listed.stderr).toContain(`using the Redis of pnpm start, ${redisUrl}`);

    const exit = await launcher.stop('SIGINT', 30_000);
    expect(exit.code).toBe(0);
    expect(launcher.lines.join('\n')).toContain('[quern] stopped');
    // Stopped, it leaves no state behind for the CLI to trust.
    expect(existsSync(devStatePath(dataDir))).toBe(false);
    // Nothing it started is left listening.
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
  });

  it('stops Redis, API and worker when its terminal closes (SIGHUP)', async () => {
    const { launcher, port } = await startLauncher();
    const out = launcher.lines.join('\n');
    const redisPort = Number(/Redis {5}redis:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
    const workerPort = Number(/worker: http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)?.[1]);
    expect(await listening(redisPort)).toBe(true);
    expect(await listening(workerPort)).toBe(true);

    const exit = await launcher.stop('SIGHUP', 30_000);
    expect(exit.code).toBe(0);
    expect(launcher.lines.join('\n')).toContain('[quern] stopped');
    for (const p of [port, workerPort, redisPort]) expect(await listening(p)).toBe(false);
  });
});
