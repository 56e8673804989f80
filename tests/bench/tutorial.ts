/**
 * The baseline a user would otherwise write: the tutorial's FastAPI service
 * (tests/bench/servers/tutorial, copied from its Parts 2–5), installed from PyPI into an ignored
 * virtualenv and served by uvicorn, one or several worker processes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePythonVenv, REPO_ROOT, waitForHttp } from '@quern/devkit';

export const TUTORIAL_DIR = join(REPO_ROOT, 'tests', 'bench', 'servers', 'tutorial');
/** The tutorial's own key (app/core/security.py, `VALID_API_KEYS`, premium tier). */
export const TUTORIAL_API_KEY = 'dev-key-123';
/** Its `slowapi` limit, per minute: it runs on every request, and never refuses one. */
export const TUTORIAL_RATE_LIMIT_PER_MINUTE = 1_000_000;
/** The Redis database of its cache: the bench's Redis, away from Quern's keys (db 0). */
export const TUTORIAL_REDIS_DB = 1;

/**
 * tests/bench/.venv with the tutorial's requirements (`ensurePythonVenv`: made once, reused while
 * requirements.txt and the interpreter stay the same). Returns the virtualenv's python.
 */
export async function ensureTutorialVenv(log: (message: string) => void): Promise<string> {
  const venv = await ensurePythonVenv({
    dir: join('tests', 'bench', '.venv'),
    requirements: join('tests', 'bench', 'servers', 'tutorial', 'requirements.txt'),
    label: 'tutorial baseline',
    log,
  });
  return venv.python;
}

export interface TutorialServerOptions {
  python: string;
  port: number;
  /** uvicorn `--workers`: 1 serves from the one process it starts; more fork a supervisor's workers. */
  workers: number;
  redisPort: number;
  modelPath: string;
  /** Where its output goes as well (the bench's service log). */
  logFd?: number;
}

/**
 * The tutorial app under uvicorn at the settings a user would pick for a benchmark:
 * `uvicorn[standard]`'s uvloop and httptools, log level warning (no access log line per request).
 */
export class TutorialServer {
  private readonly lines: string[] = [];
  private readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    readonly options: TutorialServerOptions,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let partial = '';
    const onData = (chunk: Buffer) => {
      if (options.logFd !== undefined) writeSync(options.logFd, chunk);
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      this.lines.push(...lines);
      if (this.lines.length > 2_000) this.lines.splice(0, 1_000);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  }

  /** The command line, as the doc states it. */
  static args(options: Pick<TutorialServerOptions, 'port' | 'workers'>): string[] {
    return [
      '-m',
      'uvicorn',
      'app.main:app',
      '--host',
      '127.0.0.1',
      '--port',
      String(options.port),
      '--workers',
      String(options.workers),
      '--loop',
      'uvloop',
      '--http',
      'httptools',
      '--log-level',
      'warning',
    ];
  }

  /** Starts it and resolves once every worker has loaded the model and /health answers. */
  static async start(options: TutorialServerOptions): Promise<TutorialServer> {
    const child = spawn(options.python, TutorialServer.args(options), {
      cwd: TUTORIAL_DIR,
      env: {
        PATH: process.env.PATH,
        PYTHONUNBUFFERED: '1',
        // Keeps __pycache__ out of the source tree.
        PYTHONDONTWRITEBYTECODE: '1',
        SECRET_KEY: 'bench-tutorial-secret',
        REDIS_HOST: '127.0.0.1',
        REDIS_PORT: String(options.redisPort),
        REDIS_DB: String(TUTORIAL_REDIS_DB),
        RATE_LIMIT_PER_MINUTE: String(TUTORIAL_RATE_LIMIT_PER_MINUTE),
        MODEL_PATH: options.modelPath,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Own process group, so stop() reaches uvicorn's workers too.
      detached: true,
    });
    const server = new TutorialServer(child, options);
    await server.waitForModelLoads(60_000);
    await waitForHttp(`${server.url}/health`, 30_000);
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.options.port}`;
  }

  /** The process it started: with one worker, the one that serves. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Each worker logs "Model loaded successfully" from the tutorial's startup hook. */
  private waitForModelLoads(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const check = () => {
        const loaded = this.lines.filter((l) => l.includes('Model loaded successfully')).length;
        if (loaded >= this.options.workers) return resolve();
        const running = this.child.exitCode === null && this.child.signalCode === null;
        if (!running || Date.now() > deadline) {
          return reject(
            new Error(
              `tutorial server (${this.options.workers} workers) ${running ? 'did not load its model in time' : 'exited'}:\n` +
                this.lines.slice(-20).join('\n'),
            ),
          );
        }
        setTimeout(check, 50);
      };
      check();
    });
  }

  /** Cache hits its (single-process) /metrics counts; every bench input is unique, so 0. */
  async cacheHits(): Promise<number> {
    const text = (await (await fetch(`${this.url}/metrics`)).json()) as string;
    return Number(/^cache_hits_total ([\d.e+-]+)/m.exec(text)?.[1] ?? Number.NaN);
  }

  async stop(): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return;
    process.kill(-pid, 'SIGTERM');
    const timer = setTimeout(() => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}
