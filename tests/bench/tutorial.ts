/**
 * The baseline a user would otherwise write: the tutorial's FastAPI service
 * (tests/bench/servers/tutorial, copied from its Parts 2–5), installed from PyPI into an ignored
 * virtualenv and served by uvicorn, one or several worker processes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, waitForHttp } from '@quern/devkit';

export const TUTORIAL_DIR = join(REPO_ROOT, 'tests', 'bench', 'servers', 'tutorial');
const VENV_DIR = join(REPO_ROOT, 'tests', 'bench', '.venv');
const STAMP = join(VENV_DIR, '.quern-requirements.sha256');
/** The tutorial's own key (app/core/security.py, `VALID_API_KEYS`, premium tier). */
export const TUTORIAL_API_KEY = 'dev-key-123';
/** Its `slowapi` limit, per minute: it runs on every request, and never refuses one. */
export const TUTORIAL_RATE_LIMIT_PER_MINUTE = 1_000_000;
/** The Redis database of its cache: the bench's Redis, away from Quern's keys (db 0). */
export const TUTORIAL_REDIS_DB = 1;

const FIX_HINT =
  'The tutorial baseline needs Python 3.10+ with venv and pip (Debian/Ubuntu: apt-get install python3 python3-venv; ' +
  'set BENCH_PYTHON to use another interpreter).';

interface RunResult {
  code: number | null;
  output: string;
  spawnError?: Error;
}

function run(command: string, args: string[], onLine?: (line: string) => void): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let partial = '';
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      if (output.length > 200_000) output = output.slice(-100_000);
      partial += text;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) onLine?.(line);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', (spawnError) => resolve({ code: null, output, spawnError }));
    child.once('close', (code) => resolve({ code, output }));
  });
}

/**
 * tests/bench/.venv with the tutorial's requirements, made once and reused while
 * requirements.txt and the interpreter stay the same (a stamp file holds their hash).
 * Returns the virtualenv's python.
 */
export async function ensureTutorialVenv(log: (message: string) => void): Promise<string> {
  const base = process.env.BENCH_PYTHON ?? 'python3';
  const version = await run(base, ['-c', 'import sys; print(sys.version)']);
  if (version.code !== 0) {
    throw new Error(`${base} does not run (${version.spawnError?.message ?? version.output.trim()}). ${FIX_HINT}`);
  }
  const requirements = readFileSync(join(TUTORIAL_DIR, 'requirements.txt'), 'utf8');
  const hash = createHash('sha256').update(requirements).update(version.output).digest('hex');
  const python = join(VENV_DIR, 'bin', 'python');
  if (existsSync(python) && existsSync(STAMP) && readFileSync(STAMP, 'utf8').trim() === hash) {
    log(`tutorial baseline: reusing ${VENV_DIR} (requirements unchanged)`);
    return python;
  }
  log(`tutorial baseline: creating ${VENV_DIR} with ${base} ${version.output.trim().split(' ')[0]}`);
  rmSync(VENV_DIR, { recursive: true, force: true });
  const venv = await run(base, ['-m', 'venv', VENV_DIR]);
  if (venv.code !== 0) {
    rmSync(VENV_DIR, { recursive: true, force: true });
    throw new Error(`\`${base} -m venv\` failed:\n${venv.output.trim()}\n${FIX_HINT}`);
  }
  log('tutorial baseline: pip install -r tests/bench/servers/tutorial/requirements.txt (from PyPI, a minute or two)');
  const pip = await run(
    python,
    [
      '-m',
      'pip',
      'install',
      '--disable-pip-version-check',
      '--no-input',
      '--progress-bar',
      'off',
      '-r',
      join(TUTORIAL_DIR, 'requirements.txt'),
    ],
    (line) => {
      if (/^(Collecting|Installing|Successfully|ERROR)/.test(line)) log(`  pip: ${line.trim()}`);
    },
  );
  if (pip.code !== 0) {
    rmSync(VENV_DIR, { recursive: true, force: true });
    throw new Error(`pip install failed (is PyPI reachable?):\n${pip.output.trim().split('\n').slice(-30).join('\n')}`);
  }
  writeFileSync(STAMP, `${hash}\n`);
  return python;
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
