/**
 * Python virtualenvs for the tools and baselines the tests and the bench take from PyPI
 * (the tutorial's FastAPI service, tritonclient, perf_analyzer, schemathesis, pytest). Each is
 * made once from a pinned requirements file and reused while that file and the interpreter stay
 * the same (a stamp file holds their hash). The folders are ignored by git.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import lockfile from 'proper-lockfile';
import { REPO_ROOT } from './service-process';

const FIX_HINT =
  'Needs Python 3.10+ with venv and pip (Debian/Ubuntu: apt-get install python3 python3-venv; ' +
  'set QUERN_PYTHON to use another interpreter).';

export interface RunResult {
  code: number | null;
  output: string;
  spawnError?: Error;
  /** Killed after `timeoutMs` without having exited. */
  timedOut?: boolean;
}

/** Runs a command from the repository root, collecting its output; `onLine` sees each line. */
export function runCommand(
  command: string,
  args: string[],
  options: { onLine?: (line: string) => void; env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? REPO_ROOT,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let timedOut = false;
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, options.timeoutMs);
    let output = '';
    let partial = '';
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      if (output.length > 400_000) output = output.slice(-200_000);
      partial += text;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) options.onLine?.(line);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', (spawnError) => {
      clearTimeout(timer);
      resolve({ code: null, output, spawnError });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve(timedOut ? { code, output, timedOut } : { code, output });
    });
  });
}

export interface PythonVenv {
  dir: string;
  python: string;
  /** An executable the venv installed (`bin/<name>`). */
  bin(name: string): string;
}

/**
 * The virtualenv at `dir` (relative to the repository root) with `requirements` installed,
 * made on first use (pip's progress is passed to `log`, line by line) and reused after. Test
 * files run in parallel and share a venv (tests/clients/.venv): one makes it while the others
 * wait on a lock (outside the repository, so git never sees it), then reuse it.
 */
export async function ensurePythonVenv(options: {
  dir: string;
  requirements: string;
  label: string;
  log?: (message: string) => void;
}): Promise<PythonVenv> {
  const dir = join(REPO_ROOT, options.dir);
  const lockPath = join(tmpdir(), `quern-venv-${createHash('sha256').update(dir).digest('hex').slice(0, 16)}.lock`);
  const release = await lockfile.lock(dir, {
    realpath: false,
    lockfilePath: lockPath,
    // A pip install takes a minute or two: wait up to 10 minutes for another process's.
    retries: { retries: 600, factor: 1, minTimeout: 1_000, maxTimeout: 1_000 },
  });
  try {
    return await makeVenv(options);
  } finally {
    await release();
  }
}

async function makeVenv(options: {
  dir: string;
  requirements: string;
  label: string;
  log?: (message: string) => void;
}): Promise<PythonVenv> {
  const log = options.log ?? ((message: string) => process.stderr.write(`${message}\n`));
  const dir = join(REPO_ROOT, options.dir);
  const requirementsPath = join(REPO_ROOT, options.requirements);
  const stamp = join(dir, '.quern-requirements.sha256');
  const python = join(dir, 'bin', 'python');
  const venv: PythonVenv = { dir, python, bin: (name) => join(dir, 'bin', name) };
  const base = process.env.QUERN_PYTHON ?? process.env.BENCH_PYTHON ?? 'python3';
  const version = await runCommand(base, ['-c', 'import sys; print(sys.version)']);
  if (version.code !== 0) {
    throw new Error(`${base} does not run (${version.spawnError?.message ?? version.output.trim()}). ${FIX_HINT}`);
  }
  const requirements = readFileSync(requirementsPath, 'utf8');
  const hash = createHash('sha256').update(requirements).update(version.output).digest('hex');
  if (existsSync(python) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === hash) {
    log(`${options.label}: reusing ${relative(REPO_ROOT, dir)} (requirements unchanged)`);
    return venv;
  }
  log(`${options.label}: creating ${relative(REPO_ROOT, dir)} with ${base} ${version.output.trim().split(' ')[0]}`);
  rmSync(dir, { recursive: true, force: true });
  const made = await runCommand(base, ['-m', 'venv', dir]);
  if (made.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`\`${base} -m venv\` failed:\n${made.output.trim()}\n${FIX_HINT}`);
  }
  log(`${options.label}: pip install -r ${options.requirements} (from PyPI, a minute or two)`);
  const pip = await runCommand(
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
      requirementsPath,
    ],
    { onLine: (line) => /^(Collecting|Installing|Successfully|ERROR)/.test(line) && log(`  pip: ${line.trim()}`) },
  );
  if (pip.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`pip install failed (is PyPI reachable?):\n${pip.output.trim().split('\n').slice(-30).join('\n')}`);
  }
  writeFileSync(stamp, `${hash}\n`);
  return venv;
}
