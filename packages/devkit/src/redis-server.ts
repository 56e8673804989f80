import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port';

export const REDIS_INSTALL_HINT = [
  'redis-server was not found on PATH. Install it, or point REDIS_URL at a Redis you run:',
  '  Debian/Ubuntu:  sudo apt-get install -y redis-server',
  '  macOS:          brew install redis',
  '  Docker:         docker compose up -d redis   (then REDIS_URL=redis://127.0.0.1:6379)',
].join('\n');

/** Path of `redis-server`, or undefined when it is not installed. */
export function findRedisServer(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export interface RedisServerOptions {
  /** Data directory (AOF files). A fresh temp dir, removed on stop, when omitted. */
  dir?: string;
  port?: number;
  appendonly?: boolean;
  appendfsync?: 'always' | 'everysec' | 'no';
  maxmemory?: string;
  /** Extra `--name value` arguments. */
  args?: string[];
  startTimeoutMs?: number;
}

/**
 * A `redis-server` child process on a free port: the embedded default of `pnpm start` and the
 * Redis of every integration test. It can be stopped and started again on the same port and
 * data dir, so fault tests can take Redis away and bring it back.
 */
export class RedisServer {
  private child: ChildProcess | undefined;
  private readonly ownsDir: boolean;
  readonly dir: string;

  private constructor(
    readonly port: number,
    dir: string | undefined,
    private readonly options: RedisServerOptions,
  ) {
    this.ownsDir = dir === undefined;
    this.dir = dir ?? mkdtempSync(join(tmpdir(), 'quern-redis-'));
    mkdirSync(this.dir, { recursive: true });
  }

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const binary = findRedisServer();
    if (!binary) throw new Error(REDIS_INSTALL_HINT);
    // A free port can be taken between the probe and the bind: try a few.
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new RedisServer(options.port ?? (await freePort()), options.dir, options);
      try {
        await server.launch(binary);
        return server;
      } catch (err) {
        lastError = err;
        await server.stop();
        if (options.port !== undefined) break;
      }
    }
    throw lastError;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private launch(binary = findRedisServer() ?? 'redis-server'): Promise<void> {
    const o = this.options;
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      this.dir,
      '--save',
      '',
      '--appendonly',
      o.appendonly === false ? 'no' : 'yes',
      '--appendfsync',
      o.appendfsync ?? 'everysec',
      '--maxmemory-policy',
      'noeviction',
      ...(o.maxmemory ? ['--maxmemory', o.maxmemory] : []),
      '--protected-mode',
      'yes',
      ...(o.args ?? []),
    ];
    // Own process group, so a terminal's Ctrl-C does not stop Redis before the apps have drained.
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    return new Promise((resolve, reject) => {
      let output = '';
      const timer = setTimeout(
        () => fail(new Error(`redis-server did not start within ${o.startTimeoutMs ?? 10_000} ms:\n${output}`)),
        o.startTimeoutMs ?? 10_000,
      );
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(err);
      };
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          child.stdout?.off('data', onData);
          child.stdout?.resume();
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.once('exit', (code) => fail(new Error(`redis-server exited with code ${code}:\n${output}`)));
    });
  }

  /** SHUTDOWN-like stop: SIGTERM lets Redis flush its AOF, then the process is waited for. */
  async stop(options: { keepDir?: boolean } = {}): Promise<void> {
    const child = this.child;
    if (child && this.running) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    this.child = undefined;
    if (this.ownsDir && !options.keepDir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Kills Redis without letting it save (SIGKILL): what a crash looks like. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child && this.running) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await exited;
    }
    this.child = undefined;
  }

  /** Starts Redis again on the same port and data dir (it reloads its AOF). */
  async restart(): Promise<void> {
    if (this.running) await this.stop({ keepDir: true });
    await this.launch();
  }
}
