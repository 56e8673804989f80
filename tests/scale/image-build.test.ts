import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, startTestRedis, TEST_JWT_KEYS, type TestRedis, uniquePrefix, waitForHttp } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DockerIgnore,
  envOf,
  execForm,
  flagsAndArgs,
  parseDockerfile,
  runCommand,
  type Stage,
  stageChain,
} from './support/docker-context';
import { pollUntil } from './support/fleet';

/**
 * `docker build` without Docker: the build stage's RUN commands, exactly as the Dockerfile has
 * them, run over a copy of the build context (.dockerignore applied), with `/out` and the pnpm
 * store mapped to temp folders. Each target's COPY instructions then assemble its /app, and the
 * image's CMD, HEALTHCHECK and the key CLI run from there against a real Redis: the deployed
 * folders hold everything the bundles need at run time, and nothing of the workspace.
 */
const exec = promisify(execFile);
const { stages, args } = parseDockerfile();
const stage = (name: string) => stages.find((s) => s.name === name) as Stage;

let tmp: string;
let redis: TestRedis;
const children: ChildProcess[] = [];
const prefix = uniquePrefix('img');
const secrets = {
  QUERN_JWT_KEYS: TEST_JWT_KEYS,
  QUERN_SECRETS_KEY: 'image-test-secrets-key-0123456789abcdef',
};

/** Runs the build stage; returns where `/out` went. */
async function runBuildStage(): Promise<string> {
  const src = join(tmp, 'src');
  const out = join(tmp, 'out');
  const files = DockerIgnore.load().copyContext(src);
  const store = execFileSync('pnpm', ['store', 'path'], { encoding: 'utf8' }).trim();
  const build = stage('build');
  const env: Record<string, string | undefined> = { ...process.env };
  for (const i of build.instructions.filter((i) => i.getKeyword() === 'ENV')) Object.assign(env, envOf(i));
  const timings: string[] = [`${files} context files`];
  for (const instruction of build.instructions.filter((i) => i.getKeyword() === 'RUN')) {
    const command = runCommand(instruction);
    if (command.startsWith('npm install -g pnpm@')) {
      // The image installs pnpm; here the same major version must be the one on PATH.
      const version = execFileSync('pnpm', ['--version'], { encoding: 'utf8' }).trim();
      expect(version.split('.')[0]).toBe(args.PNPM_VERSION);
      continue;
    }
    const mapped = command.replaceAll('/pnpm/store', store).replace(/(?<![\w.-])\/out(?=[/"\s]|$)/g, out);
    const started = Date.now();
    try {
      await exec('sh', ['-c', mapped], { cwd: src, env, maxBuffer: 64 * 1024 * 1024, timeout: 240_000 });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`RUN ${command}\nfailed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    }
    timings.push(`${command.split(' ').slice(0, 2).join(' ')}… ${Date.now() - started} ms`);
  }
  console.log(`[image] build stage: ${timings.join('; ')}`);
  return out;
}

/** Assembles a target's file system from its COPY instructions; returns its /app and ENV. */
function assemble(target: string, out: string) {
  const root = join(tmp, `image-${target}`);
  const chain = stageChain(stages, target);
  const env: Record<string, string> = {};
  let workdir = '/';
  for (const s of chain) {
    for (const i of s.instructions) {
      const keyword = i.getKeyword();
      if (keyword === 'ENV') Object.assign(env, envOf(i));
      if (keyword === 'WORKDIR') workdir = (i.getArgumentsContent() ?? '/').trim();
      if (keyword === 'COPY') {
        const { flags, args: paths } = flagsAndArgs(i);
        expect(flags.from).toBe('build');
        const dest = paths.at(-1) as string;
        for (const source of paths.slice(0, -1)) {
          cpSync(source.replace(/^\/out/, out), join(root, dest), { recursive: true });
        }
      }
    }
  }
  for (const [k, v] of Object.entries(env)) env[k] = v.replace(/^\/app(?=\/|$)/, join(root, 'app'));
  const health = chain.flatMap((s) => s.instructions.filter((i) => i.getKeyword() === 'HEALTHCHECK')).at(-1);
  const cmd = chain.flatMap((s) => s.instructions.filter((i) => i.getKeyword() === 'CMD')).at(-1);
  if (!health || !cmd) throw new Error(`${target}: no HEALTHCHECK or CMD`);
  return { app: join(root, workdir), env, health: execForm(health), cmd: execForm(cmd) };
}

/** Starts the image's CMD (with this machine's node) and resolves when `ready` is logged. */
function start(
  image: ReturnType<typeof assemble>,
  env: Record<string, string>,
  ready: string,
): Promise<{ child: ChildProcess; lines: string[] }> {
  const [binary, ...argv] = image.cmd;
  expect(binary).toBe('node');
  // A container's environment: the image's ENV and what the deployment sets, nothing of ours.
  const child = spawn(process.execPath, argv, {
    cwd: image.app,
    env: { PATH: process.env.PATH, HOME: tmp, ...image.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${ready} not logged:\n${lines.join('\n')}`)), 30_000);
    const onData = (chunk: Buffer) => {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      if (lines.some((l) => l.includes(`"msg":"${ready}"`))) {
        clearTimeout(timer);
        resolve({ child, lines });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before "${ready}":\n${lines.join('\n')}`));
    });
  });
}

function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

/** Runs a HEALTHCHECK's exec form the way Docker does (inside the container: our node). */
async function healthcheck(image: ReturnType<typeof assemble>, env: Record<string, string>): Promise<number> {
  const [binary, ...argv] = image.health;
  expect(binary).toBe('node');
  try {
    await exec(process.execPath, argv, { cwd: image.app, env: { PATH: process.env.PATH, ...image.env, ...env } });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? 1;
  }
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'quern-image-'));
  // A server of its own even when REDIS_URL is set: the images run against it in production mode.
  redis = await startTestRedis({ forceOwn: true });
});

afterAll(async () => {
  await Promise.all(children.map(stop));
  await redis?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('the images, built from the Dockerfile without Docker', () => {
  it('build, then run: API, worker and key CLI work from their deployed folders alone', async () => {
    const out = await runBuildStage();
    const api = assemble('api', out);
    const worker = assemble('worker', out);

    // Bundles only: the workspace packages are inside them, no sources and no @quern/* packages.
    for (const image of [api, worker]) {
      expect(existsSync(join(image.app, 'dist/main.js'))).toBe(true);
      expect(existsSync(join(image.app, 'src'))).toBe(false);
      expect(existsSync(join(image.app, 'node_modules/@quern'))).toBe(false);
      expect(existsSync(join(image.app, 'models/manifest.json'))).toBe(true);
    }
    expect(existsSync(join(api.app, 'dist/cli.js'))).toBe(true);
    expect(existsSync(join(worker.app, 'dist/inference-thread.mjs'))).toBe(true);
    expect(readdirSync(join(worker.app, 'models')).sort()).toEqual([
      'cars-mpg.onnx',
      'manifest.json',
      'mlp-large.onnx',
    ]);
    expect(readdirSync(join(api.app, 'models'))).toEqual(['manifest.json']);
    // Only this platform's ONNX Runtime binaries are kept.
    const napi = join(worker.app, 'node_modules/onnxruntime-node/bin/napi-v6');
    expect(readdirSync(napi)).toEqual(['linux']);
    expect(readdirSync(join(napi, 'linux'))).toEqual([process.arch]);
    const sizes = execFileSync('du', ['-sh', api.app, worker.app], { encoding: 'utf8' }).trim().replace(/\s+/g, ' ');
    console.log(`[image] /app sizes: ${sizes.replaceAll(tmp, '')}`);

    const common = { ...secrets, REDIS_URL: redis.url, QUERN_REDIS_PREFIX: prefix, HOST: '127.0.0.1' };
    const apiPort = String(await freePort());
    const workerPort = String(await freePort());
    // Production mode (the images' NODE_ENV) with the secrets a deployment must give.
    expect(api.env.NODE_ENV).toBe('production');
    const apiRun = await start(api, { ...common, PORT: apiPort }, 'api listening');
    const workerRun = await start(
      worker,
      { ...common, QUERN_WORKER_PORT: workerPort, QUERN_WORKER_THREADS: '1' },
      'worker started',
    );
    const base = `http://127.0.0.1:${apiPort}`;
    await waitForHttp(`${base}/ready`, 30_000);

    // The first key, made the way docs/deployment.md says (`node dist/cli.js keys create …`).
    const created = await exec(
      process.execPath,
      [
        'dist/cli.js',
        'keys',
        'create',
        '--name',
        'admin',
        '--tier',
        'premium',
        '--scopes',
        'predict,jobs:read,jobs:cancel,admin',
        '--json',
      ],
      { cwd: api.app, env: { PATH: process.env.PATH, ...api.env, ...common } },
    );
    const key = (JSON.parse(created.stdout) as { key: string }).key;
    expect(key).toMatch(/^qk_/);
    const headers = { 'x-api-key': key, 'content-type': 'application/json' };

    const predict = await fetch(`${base}/v1/predict`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ features: [4, 140, 90, 2264, 15.5, 1971] }),
    });
    expect(predict.status).toBe(200);
    expect(((await predict.json()) as { prediction: number }).prediction).toBeCloseTo(24.8987865, 4);
    const large = await fetch(`${base}/v1/predict`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ model: 'mlp-large', features: Array.from({ length: 256 }, (_, i) => (i % 7) / 7) }),
    });
    expect(large.status).toBe(200);
    expect(((await large.json()) as { prediction: number[] }).prediction).toHaveLength(8);

    // Assets that packages load from their own folders at run time.
    const swagger = await fetch(`${base}/docs/assets/swagger-ui-bundle.js`);
    expect(swagger.status).toBe(200);
    expect((await swagger.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    const redoc = await fetch(`${base}/redoc/assets/redoc.standalone.js`);
    expect(redoc.status).toBe(200);
    expect((await redoc.arrayBuffer()).byteLength).toBeGreaterThan(500_000);
    const basic = `Basic ${Buffer.from(`admin:${key}`).toString('base64')}`;
    const board = await fetch(`${base}/admin/queues`, { headers: { authorization: basic } });
    expect(board.status).toBe(200);
    const html = await board.text();
    const assets = [...html.matchAll(/(?:src|href)="([^"]*static\/[^"]+)"/g)].map((m) => m[1] as string);
    expect(assets.length).toBeGreaterThan(0);
    for (const asset of assets) {
      const res = await fetch(new URL(asset, `${base}/admin/queues/`), { headers: { authorization: basic } });
      expect(res.status, asset).toBe(200);
    }

    // The images' HEALTHCHECKs pass against the running processes and fail without them.
    expect(await healthcheck(api, { PORT: apiPort })).toBe(0);
    expect(await healthcheck(worker, { QUERN_WORKER_PORT: workerPort })).toBe(0);
    expect(await healthcheck(api, { PORT: String(await freePort()) })).not.toBe(0);

    // SIGTERM: both stop cleanly.
    expect(await stop(workerRun.child)).toBe(0);
    expect(await stop(apiRun.child)).toBe(0);
    await pollUntil(
      async () => (workerRun.lines.some((l) => l.includes('"msg":"worker stopped"')) ? true : undefined),
      5_000,
      () => workerRun.lines.slice(-5).join('\n'),
    );
  }, 300_000);
});
