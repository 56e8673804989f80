import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '@quern/devkit';
import { pollUntil } from './fleet';

const run = promisify(execFile);

/**
 * A local Redis Cluster of three masters (no replicas) on free ports, in a temp dir of its own:
 * `redis-server --cluster-enabled yes` three times, then `redis-cli --cluster create`. `stop()`
 * kills exactly the servers it started and removes the dir.
 */
export class LocalRedisCluster {
  private constructor(
    readonly dir: string,
    readonly ports: number[],
    private readonly servers: ChildProcess[],
  ) {}

  /** `host:port,…` for REDIS_CLUSTER_NODES. */
  get nodes(): string {
    return this.ports.map((p) => `127.0.0.1:${p}`).join(',');
  }

  static async start(masters = 3): Promise<LocalRedisCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'quern-cluster-'));
    const ports: number[] = [];
    const servers: ChildProcess[] = [];
    const cluster = new LocalRedisCluster(dir, ports, servers);
    try {
      for (let i = 0; i < masters; i++) {
        const port = await freePort();
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
            '--cluster-config-file',
            join(dir, `nodes-${port}.conf`),
            '--dir',
            dir,
            '--save',
            '',
            '--appendonly',
            'no',
            '--maxmemory-policy',
            'noeviction',
          ],
          { stdio: 'ignore', detached: true },
        );
        servers.push(child);
      }
      for (const port of ports) {
        await pollUntil(
          async () => {
            try {
              const { stdout } = await run('redis-cli', ['-p', String(port), 'ping']);
              return stdout.trim() === 'PONG' ? true : undefined;
            } catch {
              return undefined;
            }
          },
          10_000,
          () => `redis-server on ${port} did not answer`,
        );
      }
      await run('redis-cli', [
        '--cluster',
        'create',
        ...ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ]);
      for (const port of ports) {
        await pollUntil(
          async () => {
            const { stdout } = await run('redis-cli', ['-p', String(port), 'cluster', 'info']);
            return stdout.includes('cluster_state:ok') ? true : undefined;
          },
          20_000,
          () => `cluster_state not ok on ${port}`,
        );
      }
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** Keys on each master (`DBSIZE`), by port. */
  async keysPerNode(): Promise<Record<number, number>> {
    const out: Record<number, number> = {};
    for (const port of this.ports) {
      const { stdout } = await run('redis-cli', ['-p', String(port), 'dbsize']);
      out[port] = Number(stdout.trim());
    }
    return out;
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.servers.map(
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
