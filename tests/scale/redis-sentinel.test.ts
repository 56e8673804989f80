import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findRedisServer, freePort, RedisServer, uniquePrefix } from '@quern/devkit';
import { inputHash, KeySpace } from '@quern/shared';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';
import { pollUntil } from './support/fleet';

/**
 * Quern behind Redis Sentinel: a master, a replica and one Sentinel (Debian's redis-server runs
 * as a Sentinel with `--sentinel`). The API and the worker find the master through the Sentinel
 * (REDIS_SENTINELS), and keep answering after the master dies and the Sentinel promotes the
 * replica.
 */
const MASTER_NAME = 'quern-master';

let master: RedisServer;
let replica: RedisServer;
let sentinel: { port: number; child: ChildProcess; dir: string };
let sentinelClient: Redis;
let stack: Stack;

async function masterPort(): Promise<number> {
  const addr = (await sentinelClient.call('SENTINEL', 'get-master-addr-by-name', MASTER_NAME)) as string[] | null;
  return Number(addr?.[1]);
}

async function startSentinel(monitorPort: number) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'quern-sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  // Sentinel rewrites its own config file: it must be a writable file of its own.
  writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${monitorPort} 1`,
      `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
      `sentinel failover-timeout ${MASTER_NAME} 10000`,
      '',
    ].join('\n'),
  );
  const child = spawn(findRedisServer() ?? 'redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  return { port, child, dir };
}

beforeAll(async () => {
  // No 5 s wait before the first full sync (the default delay of a diskless sync).
  master = await RedisServer.start({ appendonly: false, args: ['--repl-diskless-sync-delay', '0'] });
  replica = await RedisServer.start({
    appendonly: false,
    args: ['--replicaof', '127.0.0.1', String(master.port), '--repl-diskless-sync-delay', '0'],
  });
  sentinel = await startSentinel(master.port);
  sentinelClient = new Redis({ port: sentinel.port, host: '127.0.0.1', maxRetriesPerRequest: null });
  sentinelClient.on('error', () => undefined);
  // The Sentinel knows the master and has found its replica (it asks the master for them).
  await pollUntil(
    async () => ((await masterPort()) === master.port ? true : undefined),
    15_000,
    async () => `the Sentinel names port ${await masterPort()} as the master`,
  );
  await pollUntil(
    async () =>
      ((await sentinelClient.call('SENTINEL', 'replicas', MASTER_NAME)) as unknown[]).length === 1 ? true : undefined,
    30_000,
    () => 'the Sentinel has not found the replica',
    200,
  );
  const prefix = uniquePrefix('sen');
  stack = await startStack(
    { REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`, REDIS_SENTINEL_MASTER: MASTER_NAME },
    // REDIS_URL (this server) is ignored when REDIS_SENTINELS is set; closing is done below.
    { redis: { url: master.url, prefix, server: master, close: async () => undefined } },
  );
}, 90_000);

afterAll(async () => {
  try {
    // A stack whose clients cannot reach a master may not close: the servers are stopped anyway.
    await Promise.race([stack?.close(), new Promise((resolve) => setTimeout(resolve, 20_000))]);
  } finally {
    sentinelClient?.disconnect();
    if (sentinel) {
      sentinel.child.kill('SIGTERM');
      rmSync(sentinel.dir, { recursive: true, force: true });
    }
    await replica?.stop();
    await master?.stop();
  }
}, 60_000);

async function predict(cylinders: number) {
  const res = await stack.post('/v1/predict', { model: 'cars-mpg', features: [cylinders, 140, 90, 2264, 15.5, 1971] });
  return { status: res.status, body: (await res.json()) as { prediction?: number; cached?: boolean } };
}

async function replicaInfo(): Promise<string> {
  const client = new Redis(replica.url);
  try {
    return await client.info('replication');
  } finally {
    client.disconnect();
  }
}

/** Names of the clients connected to a server, less the Sentinel's own. */
async function named(server: RedisServer): Promise<string[]> {
  const client = new Redis(server.url);
  try {
    const list = (await client.client('LIST')) as string;
    return [...list.matchAll(/ name=(\S+)/g)]
      .map((m) => m[1] ?? '')
      .filter((n) => n !== '' && !n.startsWith('sentinel-'));
  } finally {
    client.disconnect();
  }
}

describe('behind Redis Sentinel', () => {
  it('follows a planned failover (SENTINEL FAILOVER): every client moves to the new master', async () => {
    expect((await predict(3)).status).toBe(200);
    expect((await named(master)).length).toBeGreaterThan(0);
    // A planned failover promotes a replica that has the data: wait until the link is up.
    await pollUntil(
      async () => (/master_link_status:up/.test(await replicaInfo()) ? true : undefined),
      30_000,
      () => 'the replica never synced with the master',
      100,
    );
    // ...and has what the stack wrote (its keys above all): WAIT until the replica acknowledged
    // every write so far, then check that it holds the key store.
    const onMaster = new Redis(master.url);
    const onReplica = new Redis(replica.url);
    try {
      expect(Number(await onMaster.call('WAIT', '1', '10000'))).toBe(1);
      expect(await onReplica.exists(new KeySpace(stack.config.QUERN_REDIS_PREFIX).apiKeyIds())).toBe(1);
    } finally {
      onMaster.disconnect();
      onReplica.disconnect();
    }
    await sentinelClient.call('SENTINEL', 'FAILOVER', MASTER_NAME);
    await pollUntil(
      async () => ((await masterPort()) === replica.port ? true : undefined),
      30_000,
      async () => `the Sentinel still names port ${await masterPort()}`,
    );
    // The roles are swapped from here on (also for the next test, which kills the master of now).
    [master, replica] = [replica, master];
    // The old master is alive and now a replica: a client left on it would read stale data and
    // have its writes refused. Every connection (API, worker, queues, blocking reads) moves to the
    // new master as the Sentinel announces the switch (+switch-master: about 0.3 s here). The bound
    // is what tells the two apart: clients that only reconnect when dropped took about 10 s.
    await pollUntil(
      async () => ((await named(replica)).length === 0 && (await named(master)).length > 0 ? true : undefined),
      5_000,
      async () =>
        `clients on the old master: ${(await named(replica)).join(', ') || 'none'}; ` +
        `on the new one: ${(await named(master)).join(', ') || 'none'}`,
      250,
    );
    let last: Awaited<ReturnType<typeof predict>> | undefined;
    await pollUntil(
      async () => {
        last = await predict(5);
        return last.status === 200 ? true : undefined;
      },
      30_000,
      () => `no prediction succeeded after the planned failover (last: ${JSON.stringify(last)})`,
      250,
    );
  });

  it('finds the master through the Sentinel and, when the master dies, carries on with the promoted replica', async () => {
    const before = await predict(4);
    expect(before.status).toBe(200);
    expect(before.body.cached).toBe(false);
    expect((await named(master)).length).toBeGreaterThan(0);
    // The cache entry has reached the replica (replication is asynchronous).
    const replicaClient = new Redis(replica.url);
    try {
      const key = new KeySpace(stack.config.QUERN_REDIS_PREFIX).cache(
        'cars-mpg',
        '1.0.0',
        inputHash([4, 140, 90, 2264, 15.5, 1971]),
      );
      await pollUntil(
        async () => ((await replicaClient.get(key)) !== null ? true : undefined),
        10_000,
        () => 'the cache entry did not reach the replica',
        20,
      );
    } finally {
      replicaClient.disconnect();
    }

    await master.kill();
    await pollUntil(
      async () => ((await masterPort()) === replica.port ? true : undefined),
      30_000,
      async () => `the Sentinel still names port ${await masterPort()}`,
    );
    // The clients ask the Sentinel again and reach the new master: a prediction (a queue write, the
    // worker, its reply) succeeds, and what was cached before the failure is still there.
    await pollUntil(
      async () => ((await predict(6)).status === 200 ? true : undefined),
      30_000,
      () => 'no prediction succeeded after the failover',
      250,
    );
    const cached = await predict(4);
    expect(cached).toEqual({ status: 200, body: expect.objectContaining({ cached: true }) });
    expect(cached.body.prediction).toBe(before.body.prediction);
    expect((await named(replica)).length).toBeGreaterThan(0);
  });
});
