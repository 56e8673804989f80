import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePorts } from './free-port';

const run = promisify(execFile);

/** Path of `redis-cli` (the cluster is created with it), or undefined when it is not installed. */
export async function findRedisCli(): Promise<string | undefined> {
  try {
    return (await run('sh', ['-c', 'command -v redis-cli'])).stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

async function pollFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface LocalRedisClusterOptions {
  masters?: number;
  /** Replicas of each master (0: none). */
  replicas?: number;
  /** How long `start` may take in all, retries included (default 60 s: within the tests' setup hooks). */
  timeoutMs?: number;
}

/** One line of `CLUSTER NODES`: a node's port, role and, for a replica, its master's id. */
export interface ClusterNodeInfo {
  id: string;
  port: number;
  role: 'master' | 'replica';
  masterId: string | undefined;
  /** Slot ranges a master serves (`0-5460`, …). */
  slots: string[];
}

/**
 * A local Redis Cluster on free ports, in a temp dir of its own: `redis-server --cluster-enabled
 * yes` per node, then `redis-cli --cluster create` (masters first, then their replicas). For the
 * Cluster tests and benchmarks: it reads each node's role, command counts (`INFO commandstats`)
 * and pid, fails a master over to its replica, and `stop()` kills exactly the servers it started
 * and removes the dir.
 */
export class LocalRedisCluster {
  private constructor(
    readonly dir: string,
    readonly ports: number[],
    private readonly servers: Map<number, ChildProcess>,
  ) {}

  /** `host:port,…` of every node, for REDIS_CLUSTER_NODES. */
  get nodes(): string {
    return this.ports.map((p) => `127.0.0.1:${p}`).join(',');
  }

  /** The redis-server pid of the node on `port`. */
  pidOf(port: number): number | undefined {
    return this.servers.get(port)?.pid;
  }

  /**
   * Starts the cluster; a start whose cluster does not come up healthy is torn down and tried
   * again on new ports (up to three times, within `timeoutMs` in all). On a loaded machine a
   * node's first gossip can be late enough for the cluster to stall, and a port that was free when
   * picked can be taken before its server binds it.
   */
  static async start(options: LocalRedisClusterOptions = {}): Promise<LocalRedisCluster> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (let attempt = 1; ; attempt++) {
      try {
        return await LocalRedisCluster.startOnce(options, Math.min(30_000, deadline - Date.now()));
      } catch (err) {
        // Another attempt only with time for one left (a setup hook that times out first would
        // leave the servers of an attempt in progress running).
        if (attempt >= 3 || deadline - Date.now() < 20_000) throw err;
        process.stderr.write(`[redis-cluster] start attempt ${attempt} failed (${(err as Error).message}); retrying\n`);
      }
    }
  }

  private static async startOnce(options: LocalRedisClusterOptions, healthyMs: number): Promise<LocalRedisCluster> {
    const masters = options.masters ?? 3;
    const replicas = options.replicas ?? 0;
    if (!(await findRedisCli()))
      throw new Error('redis-cli was not found on PATH: it comes with redis-server (redis-tools)');
    const dir = mkdtempSync(join(tmpdir(), 'quern-cluster-'));
    const ports: number[] = [];
    const servers = new Map<number, ChildProcess>();
    const cluster = new LocalRedisCluster(dir, ports, servers);
    try {
      const nodes = masters * (1 + replicas);
      // Each node's cluster bus gets a free port of its own (`--cluster-port`), not the default
      // port + 10,000, which nobody checked and which does not exist above port 55,535.
      const picked = await freePorts(nodes * 2);
      for (let i = 0; i < nodes; i++) {
        const port = picked[i * 2] as number;
        ports.push(port);
        const child = spawn(
          'redis-server',
          [
            '--port',
            String(port),
            '--bind',
            '127.0.0.1',
            '--cluster-enabled',
            'yes',
            '--cluster-port',
            String(picked[i * 2 + 1]),
            '--cluster-config-file',
            join(dir, `nodes-${port}.conf`),
            // A node that never met another announces no address of its own (a one-master cluster).
            '--cluster-announce-ip',
            '127.0.0.1',
            // A failed master is replaced within about a second (the default is 15 s). Nodes on a
            // loaded machine may then mark each other failing for a moment: a start whose cluster
            // does not come up healthy is retried (`start`).
            '--cluster-node-timeout',
            '1000',
            '--dir',
            dir,
            '--dbfilename',
            `dump-${port}.rdb`,
            '--save',
            '',
            '--appendonly',
            'no',
            '--maxmemory-policy',
            'noeviction',
          ],
          { stdio: 'ignore', detached: true },
        );
        servers.set(port, child);
      }
      for (const port of ports) {
        const child = servers.get(port) as ChildProcess;
        const state = await pollFor(
          async () => {
            // A server that exited (its port taken meanwhile) fails the attempt now; a PONG would
            // come from whatever holds the port.
            if (child.exitCode !== null || child.signalCode !== null) return 'exited';
            return (await cluster.cli(port, 'ping')).trim() === 'PONG' ? 'up' : undefined;
          },
          10_000,
          `redis-server on ${port} did not answer`,
        );
        if (state === 'exited') throw new Error(`redis-server on ${port} exited (its port or bus port was taken?)`);
      }
      if (masters >= 3) {
        // redis-cli gives the first `masters` nodes the slots and makes the others their replicas.
        await run('redis-cli', [
          '--cluster',
          'create',
          ...ports.map((p) => `127.0.0.1:${p}`),
          '--cluster-replicas',
          String(replicas),
          '--cluster-yes',
        ]);
      } else {
        // redis-cli wants three masters at least: fewer get equal slot ranges and meet by hand.
        if (replicas > 0) throw new Error('replicas need three masters or more');
        for (const [i, port] of ports.entries()) {
          const from = Math.floor((i * 16_384) / masters);
          const to = Math.floor(((i + 1) * 16_384) / masters) - 1;
          await cluster.cli(port, 'cluster', 'addslotsrange', String(from), String(to));
          if (i > 0) await cluster.cli(port, 'cluster', 'meet', '127.0.0.1', String(ports[0]));
        }
      }
      await cluster.waitHealthy(masters, replicas, healthyMs);
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** Runs a redis-cli command against one node; its stdout. */
  async cli(port: number, ...args: string[]): Promise<string> {
    return (await run('redis-cli', ['-p', String(port), ...args])).stdout;
  }

  /** Every node as `CLUSTER NODES` on `port` (any live node) sees it. */
  async topology(port = this.livePorts()[0] as number): Promise<ClusterNodeInfo[]> {
    const text = await this.cli(port, 'cluster', 'nodes');
    return text
      .trim()
      .split('\n')
      .filter((line) => line.length > 0 && !line.includes('fail'))
      .map((line) => {
        const [id = '', address = '', flags = '', master = '-', , , , , ...slots] = line.split(' ');
        return {
          id,
          port: Number(address.split('@')[0]?.split(':')[1]),
          role: flags.includes('master') ? 'master' : 'replica',
          masterId: master === '-' ? undefined : master,
          slots,
        } satisfies ClusterNodeInfo;
      });
  }

  /** Ports of the nodes serving slots now. */
  async masterPorts(): Promise<number[]> {
    return (await this.topology())
      .filter((n) => n.role === 'master' && n.slots.length > 0)
      .map((n) => n.port)
      .sort((a, b) => a - b);
  }

  /**
   * Resolves once every live node says the cluster is ok and sees `masters` masters with `replicas`
   * replicas each, within `timeoutMs` for all of them.
   */
  async waitHealthy(masters: number, replicas: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const port of this.livePorts()) {
      await pollFor(
        async () => {
          if (!(await this.cli(port, 'cluster', 'info')).includes('cluster_state:ok')) return undefined;
          const nodes = await this.topology(port);
          const m = nodes.filter((n) => n.role === 'master' && n.slots.length > 0).length;
          const r = nodes.filter((n) => n.role === 'replica').length;
          return m === masters && r === masters * replicas ? true : undefined;
        },
        Math.max(0, deadline - Date.now()),
        `cluster not healthy on ${port}`,
      );
    }
  }

  /** Calls per command since the node's start or its last `CONFIG RESETSTAT` (`INFO commandstats`). */
  async commandCalls(port: number): Promise<number> {
    const text = await this.cli(port, 'info', 'commandstats');
    let calls = 0;
    for (const match of text.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) calls += Number(match[1]);
    return calls;
  }

  /**
   * A planned failover of the master on `port`: `CLUSTER FAILOVER` on one of its replicas, which
   * takes the master's slots over; resolves with the new master's port once the cluster agrees.
   */
  async failover(port: number, timeoutMs = 20_000): Promise<number> {
    const nodes = await this.topology(port);
    const master = nodes.find((n) => n.port === port);
    const replica = nodes.find((n) => n.role === 'replica' && n.masterId === master?.id);
    if (master?.role !== 'master' || !replica) throw new Error(`no replica of a master on ${port}`);
    await this.cli(replica.port, 'cluster', 'failover');
    await pollFor(
      async () => {
        for (const p of this.livePorts()) {
          const seen = await this.topology(p);
          const promoted = seen.find((n) => n.port === replica.port);
          if (promoted?.role !== 'master' || promoted.slots.length === 0) return undefined;
        }
        return (await this.cli(replica.port, 'cluster', 'info')).includes('cluster_state:ok') ? true : undefined;
      },
      timeoutMs,
      `replica ${replica.port} did not take over from ${port}`,
    );
    return replica.port;
  }

  /** Keys on each master (`DBSIZE`), by port. */
  async keysPerNode(): Promise<Record<number, number>> {
    const out: Record<number, number> = {};
    for (const port of await this.masterPorts()) out[port] = Number((await this.cli(port, 'dbsize')).trim());
    return out;
  }

  private livePorts(): number[] {
    return this.ports.filter((p) => {
      const child = this.servers.get(p);
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    });
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.servers.values()].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
