/**
 * NVIDIA's perf_analyzer (from tritonclient's wheel, in tests/clients/.venv) driving Quern over
 * the Open Inference Protocol, so the bench records its figures beside its own (autocannon on
 * `/v1/predict`). Every request carries a row of its own from a data file, as the bench's own
 * requests do: nothing is answered from the result cache.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePythonVenv, type RunResult, runCommand } from '@quern/devkit';

export interface PerfAnalyzerPoint {
  /** Tensors sent and received as JSON numbers or as binary (the binary tensor extension). */
  format: 'json' | 'binary';
  concurrency: number;
  requests: number;
  infer_per_sec: number;
  p50_ms: number;
  p99_ms: number;
  avg_ms: number;
}

/** The virtualenv with perf_analyzer, and the loader path its libcudart needs. */
export async function perfAnalyzerTool(
  log: (message: string) => void,
): Promise<{ binary: string; env: NodeJS.ProcessEnv }> {
  const venv = await ensurePythonVenv({
    dir: 'tests/clients/.venv',
    requirements: 'tests/clients/requirements.txt',
    label: 'perf_analyzer',
    log,
  });
  const lib = join(venv.dir, 'lib');
  const python = readdirSync(lib).find((d) => d.startsWith('python3')) ?? 'python3';
  const cuda = join(lib, python, 'site-packages', 'nvidia', 'cuda_runtime', 'lib');
  const path = [cuda, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
  return { binary: venv.bin('perf_analyzer'), env: { ...process.env, LD_LIBRARY_PATH: path } };
}

const usec = (output: string, label: string): number => {
  const match = new RegExp(`${label}: (\\d+) usec`).exec(output);
  if (!match) throw new Error(`perf_analyzer printed no ${label}:\n${output.slice(-2000)}`);
  return Math.round(Number(match[1]) / 10) / 100;
};

/**
 * Runs perf_analyzer once more if it hangs. In `--request-count` mode it sometimes never leaves
 * its measurement loop although the server answered every request (seen 2 to 3 times in 40 runs
 * against the built service, before and after this project's latest changes: a race in the
 * tool, whose threads have all exited while its main thread keeps sleeping); a run that does not
 * finish within `timeoutMs` is killed and started again, once.
 */
export async function runPerfAnalyzerCommand(
  binary: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<RunResult> {
  const first = await runCommand(binary, args, { env, timeoutMs });
  if (!first.timedOut) return first;
  process.stderr.write(
    `perf_analyzer did not finish in ${timeoutMs / 1000} s (its count-mode hang); running it again\n`,
  );
  const second = await runCommand(binary, args, { env, timeoutMs });
  return second.timedOut
    ? { ...second, output: `${second.output}\n(killed: no exit within ${timeoutMs / 1000} s, twice)` }
    : second;
}

/**
 * One perf_analyzer run of `requests` requests at `concurrency`, one row each, taken from `rows`
 * (written to `dataFile`; give at least twice as many rows as requests so no thread wraps round).
 */
export async function runPerfAnalyzer(options: {
  tool: { binary: string; env: NodeJS.ProcessEnv };
  /** host:port */
  host: string;
  apiKey: string;
  model: string;
  input: string;
  rows: number[][];
  dataFile: string;
  concurrency: number;
  requests: number;
  format: 'json' | 'binary';
}): Promise<PerfAnalyzerPoint> {
  // perf_analyzer reads FP32 data only from JSON numbers written as floats: `4.0`, not `4`.
  const float = (v: number) => (Number.isInteger(v) ? v.toFixed(1) : String(v));
  const entries = options.rows.map((row) => `{${JSON.stringify(options.input)}:[${row.map(float).join(',')}]}`);
  writeFileSync(options.dataFile, `{"data":[${entries.join(',')}]}`);
  const run = await runPerfAnalyzerCommand(
    options.tool.binary,
    [
      '-m',
      options.model,
      '--service-kind=triton',
      '-i',
      'http',
      '-u',
      options.host,
      '-H',
      `X-API-Key: ${options.apiKey}`,
      `--input-tensor-format=${options.format}`,
      `--output-tensor-format=${options.format}`,
      '--input-data',
      options.dataFile,
      '--concurrency-range',
      String(options.concurrency),
      '--request-count',
      String(options.requests),
    ],
    options.tool.env,
    30_000 + options.requests * 10,
  );
  if (run.code !== 0) throw new Error(`perf_analyzer failed (${run.code}):\n${run.output.slice(-3000)}`);
  const throughput = /Throughput: ([\d.]+) infer\/sec/.exec(run.output);
  const count = /Request count: (\d+)/.exec(run.output);
  if (!throughput || !count) throw new Error(`perf_analyzer printed no throughput:\n${run.output.slice(-2000)}`);
  return {
    format: options.format,
    concurrency: options.concurrency,
    requests: Number(count[1]),
    infer_per_sec: Math.round(Number(throughput[1]) * 10) / 10,
    p50_ms: usec(run.output, 'p50 latency'),
    p99_ms: usec(run.output, 'p99 latency'),
    avg_ms: usec(run.output, 'Avg latency'),
  };
}
