/**
 * The bench's measurements of single operations, run by `pnpm bench` after the main run
 * (run.ts), each as a process of its own so one's Redis and workers never disturb another's:
 *
 * - scheduling.ts: what fair share and admission cost (drain and sync, on against off) and the
 *   queue ETA's error at a steady backlog;
 * - queue-standing.ts: what a queued job's position costs at 100,000 queued jobs, against
 *   BullMQ's own listing;
 * - version-rollout.ts: a model version rolled out under steady load, p99 per phase;
 * - redis-shards.ts: the same sync load on a Redis Cluster of one master and of three (spread keys,
 *   partitioned queues), Redis CPU per request on each shard.
 *
 * Each writes tests/bench/results/<name>.json (BENCH_OUT elsewhere). `BENCH_EXTRAS=scheduling,…`
 * runs only those named.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { type BenchResults, writeReport } from './report';

const RESULTS_DIR = process.env.BENCH_OUT ?? join(REPO_ROOT, 'tests', 'bench', 'results');

/** Scripts that print their result as JSON on stdout; version-rollout writes its own file. */
const EXTRAS: { name: string; printsJson: boolean }[] = [
  { name: 'scheduling', printsJson: true },
  { name: 'queue-standing', printsJson: true },
  { name: 'version-rollout', printsJson: false },
  { name: 'redis-shards', printsJson: true },
];

const only = process.env.BENCH_EXTRAS?.split(',').map((s) => s.trim());
mkdirSync(RESULTS_DIR, { recursive: true });
let failed = 0;
for (const { name, printsJson } of EXTRAS) {
  if (only && !only.includes(name)) continue;
  const started = Date.now();
  process.stderr.write(`--- bench extra: ${name}\n`);
  // Its progress goes to this terminal as it comes; its stdout is the result.
  const child = spawn(process.execPath, ['--import', 'tsx', join('tests', 'bench', `${name}.ts`)], {
    cwd: REPO_ROOT,
    stdio: ['ignore', printsJson ? 'pipe' : 'inherit', 'inherit'],
  });
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  if (code !== 0) {
    failed++;
    process.stderr.write(`${name} failed (exit ${code})\n`);
    continue;
  }
  if (printsJson) {
    let result: unknown;
    try {
      result = JSON.parse(stdout);
    } catch {
      failed++;
      process.stderr.write(`${name} printed no JSON result:\n${stdout.slice(-2_000)}\n`);
      continue;
    }
    writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  }
  process.stderr.write(`${name}: done in ${Math.round((Date.now() - started) / 1000)} s\n`);
}
// docs/benchmarks.md carries these scenarios' sections: written again from the main run's results
// and the files just written (run.ts wrote it before they existed).
const latest = join(RESULTS_DIR, 'latest.json');
if (!process.env.BENCH_OUT && existsSync(latest)) {
  writeReport(
    JSON.parse(readFileSync(latest, 'utf8')) as BenchResults,
    process.env.BENCH_DOCS ?? join(REPO_ROOT, 'docs'),
  );
  process.stderr.write('docs/benchmarks.md written again with these results\n');
}
if (failed > 0) process.exit(1);
