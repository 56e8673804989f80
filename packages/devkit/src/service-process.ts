import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Root of the repository (devkit lives in packages/devkit/src). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export const APP_ENTRY = {
  api: 'apps/api/src/main.ts',
  worker: 'apps/worker/src/main.ts',
} as const;

export interface ServiceProcessOptions {
  name: string;
  entry: string;
  env: Record<string, string | undefined>;
  /** Called with every output line (JSON log lines from pino). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** `tsx` (default) runs TypeScript sources; `node` runs a built bundle (an app's dist/main.js). */
  runner?: 'tsx' | 'node';
  /** Send the output to this file descriptor instead of keeping it (benchmarks: no parsing cost). */
  outputFd?: number;
}

/**
 * An API or worker run as its own process with tsx, the way it is deployed (one process per
 * role). Output lines are kept so tests can read what the process logged.
 */
export class ServiceProcess {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly options: ServiceProcessOptions) {
    const args = options.runner === 'node' ? [options.entry] : ['--import', 'tsx', options.entry];
    this.child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...options.env },
      stdio:
        options.outputFd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', options.outputFd, options.outputFd],
      // Own process group: a Ctrl-C in the terminal reaches only the launcher, which then stops
      // the apps in order (worker drains while Redis is still up) with one signal each.
      detached: true,
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    for (const stream of ['stdout', 'stderr'] as const) {
      let buffered = '';
      this.child[stream]?.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          this.lines.push(line);
          if (this.lines.length > 20_000) this.lines.splice(0, 10_000);
          options.onLine?.(line, stream);
          nl = buffered.indexOf('\n');
        }
      });
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Parsed JSON log lines (non-JSON lines are skipped). */
  logs(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.lines) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // partial or foreign line
      }
    }
    return out;
  }

  /** Resolves when a log line satisfies `match`, rejects after `timeoutMs` or if the process exits. */
  waitForLog(match: (entry: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const existing = this.logs().find(match);
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const onData = () => {
        const found = this.logs().find(match);
        if (found) {
          cleanup();
          resolve(found);
        }
      };
      const onExit = () => {
        cleanup();
        reject(
          new Error(`${this.options.name} exited before the awaited log line:\n${this.lines.slice(-20).join('\n')}`),
        );
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `${this.options.name}: awaited log line not seen in ${timeoutMs} ms:\n${this.lines.slice(-20).join('\n')}`,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout?.off('data', onData);
        this.child.stderr?.off('data', onData);
        this.child.off('exit', onExit);
      };
      // Listeners registered after ours in the constructor: lines are already parsed when these run.
      this.child.stdout?.on('data', onData);
      this.child.stderr?.on('data', onData);
      this.child.once('exit', onExit);
    });
  }

  /** Sends `signal` and waits for the process to exit (SIGKILL after `timeoutMs`). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30_000) {
    if (!this.running) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** Polls `url` until it answers with `status` (default 200), or rejects after `timeoutMs`. */
export async function waitForHttp(url: string, timeoutMs = 30_000, status = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (res.status === status) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms (last: ${last})`);
}
