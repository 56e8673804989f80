import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startTestRedis, type TestRedis } from '@quern/devkit';
import { devStatePath, writeDevState } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisTarget, runCli, targetNotes } from './cli';

// Every case sets REDIS_URL or a state file: the CLI's default (127.0.0.1:6379) is never dialled.
let redis: TestRedis;
const dirs: string[] = [];

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'quern-cli-'));
  dirs.push(dir);
  return dir;
}

function state(redisUrl: string, prefix?: string) {
  return {
    redis_url: redisUrl,
    ...(prefix ? { redis_prefix: prefix } : {}),
    api_url: 'http://127.0.0.1:8000',
    pid: process.pid,
    started_at: new Date().toISOString(),
  };
}

/** Runs the CLI as `pnpm quern` would, with only `env` (no REDIS_URL unless given). */
async function cli(argv: string[], env: Record<string, string>) {
  const out: string[] = [];
  const notes: string[] = [];
  const code = await runCli(
    argv,
    (l) => out.push(l),
    { NODE_ENV: 'test', ...env },
    (l) => notes.push(l),
  );
  return { code, out, notes };
}

beforeAll(async () => {
  redis = await startTestRedis();
});

afterAll(async () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  await redis.close();
});

describe('which Redis the key CLI talks to', () => {
  it('finds the Redis of a running pnpm start without REDIS_URL, and says so', async () => {
    const dir = dataDir();
    writeDevState(dir, state(redis.url, redis.prefix));
    const created = await cli(['keys', 'create', '--name', 'found-it', '--json'], { QUERN_DATA_DIR: dir });
    expect(created.code).toBe(0);
    const listed = await cli(['keys', 'list', '--json'], { QUERN_DATA_DIR: dir });
    expect(listed.code).toBe(0);
    const records = JSON.parse(listed.out[0] as string) as { name: string }[];
    expect(records.map((r) => r.name)).toContain('found-it');
    expect(listed.notes.join('\n')).toContain(`using the Redis of pnpm start, ${redis.url} (${devStatePath(dir)})`);
    // REDIS_URL, when set, wins over the state file (and needs no note).
    const other = await cli(['keys', 'list', '--json'], {
      QUERN_DATA_DIR: dir,
      REDIS_URL: redis.url,
      QUERN_REDIS_PREFIX: `${redis.prefix}other`,
    });
    expect(JSON.parse(other.out[0] as string)).toEqual([]);
    expect(other.notes).toEqual([]);
  });

  it('refuses a state file whose Redis does not answer, naming it and the file', async () => {
    const dir = dataDir();
    const port = await freePort();
    writeDevState(dir, state(`redis://127.0.0.1:${port}`));
    await expect(cli(['keys', 'list'], { QUERN_DATA_DIR: dir })).rejects.toThrow(
      `redis://127.0.0.1:${port}, recorded by pnpm start in ${devStatePath(dir)}, does not answer`,
    );
  });

  it('names an unreachable Redis without its password', async () => {
    const port = await freePort();
    const failure = await cli(['keys', 'list'], { REDIS_URL: `redis://:s3cret@127.0.0.1:${port}` }).catch(
      (err: Error) => err,
    );
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toContain(`cannot reach Redis at redis://:***@127.0.0.1:${port}`);
    expect((failure as Error).message).toContain('set REDIS_URL');
    expect((failure as Error).message).not.toContain('s3cret');
  });

  it('without REDIS_URL or a running pnpm start, chooses the default and names it', () => {
    const target = redisTarget({ QUERN_DATA_DIR: dataDir() });
    expect(target).toMatchObject({ from: 'default', described: 'redis://127.0.0.1:6379' });
    expect(targetNotes(target)).toEqual([
      'quern: using redis://127.0.0.1:6379: REDIS_URL is not set and no pnpm start is running.',
      'quern: set REDIS_URL=redis://HOST:PORT to use another Redis.',
    ]);
  });
});
