import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '@quern/devkit';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchResults } from './report';

/**
 * The benchmark's smoke run (`BENCH_SMOKE=1`: a second per load point, two concurrencies), so
 * the harness cannot rot between full runs. It checks the shape and sanity of what the run
 * writes, never speed: speed is for `pnpm bench` and docs/benchmarks.md. It runs the tutorial
 * baseline too, so on a fresh machine it first makes tests/bench/.venv from PyPI (a minute).
 */
const out = mkdtempSync(join(tmpdir(), 'quern-bench-smoke-'));

afterAll(() => rmSync(out, { recursive: true, force: true }));

function runSmoke(): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/bench/run.ts'], {
      cwd: REPO_ROOT,
      env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT: out, BENCH_DOCS: out },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.on('exit', (code) => resolve({ code, output }));
  });
}

describe('pnpm bench (smoke)', () => {
  it('runs every scenario and writes results, table and chart with every ratio', async () => {
    const { code, output } = await runSmoke();
    expect(code, output.slice(-2000)).toBe(0);
    const r = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as BenchResults;
    expect(r.smoke).toBe(true);
    expect(r.machine.cores).toBeGreaterThan(0);
    // Every input was unique: nothing came from the result cache.
    expect(r.cache_hits).toBe(0);
    for (const key of [
      'batched_vs_unbatched',
      'batched_vs_noqueue',
      'idle_overhead_ms',
      'ingest_vs_hono',
      'drain_vs_bullmq',
      'client_batch_vs_ort',
      'client_batch_tensor_vs_ort',
      'tracing_cost',
    ] as const) {
      expect(Number.isFinite(r.ratios[key]), key).toBe(true);
    }
    // Tracing on and off both served every request, and spans did reach the OTLP sink.
    for (const mode of ['on', 'off'] as const) {
      expect(r.tracing[mode].rps, mode).toBeGreaterThan(0);
      expect(r.tracing[mode].non_2xx, mode).toBe(0);
    }
    expect(r.tracing.export_requests).toBeGreaterThan(0);
    expect(r.ratios.rss_mb.api).toBeGreaterThan(0);
    expect(r.ratios.rss_mb.worker).toBeGreaterThan(0);
    for (const model of ['cars-mpg', 'mlp-large']) {
      const points = r.sync_predict[model] ?? [];
      expect(points.map((p) => p.concurrency)).toEqual([1, 16]);
      for (const p of points) {
        expect(p.rps, `${model} c=${p.concurrency}`).toBeGreaterThan(0);
        expect(p.non_2xx).toBe(0);
        expect(p.mean_batch_size).toBeGreaterThanOrEqual(1);
      }
    }
    for (const point of [r.unbatched_mlp_large, r.no_queue_mlp_large, r.async_ingest, r.client_batches]) {
      expect(point.rps).toBeGreaterThan(0);
      expect(point.non_2xx).toBe(0);
    }
    expect(r.client_batches_tensor.rows_per_second).toBeGreaterThan(0);
    // perf_analyzer over the Open Inference Protocol, JSON and binary, beside autocannon's point.
    expect(r.perf_analyzer.points.map((p) => p.format)).toEqual(['json', 'binary']);
    for (const p of r.perf_analyzer.points) {
      expect(p.requests, p.format).toBe(300);
      expect(p.infer_per_sec, p.format).toBeGreaterThan(0);
      expect(p.p99_ms, p.format).toBeGreaterThanOrEqual(p.p50_ms);
    }
    expect(r.perf_analyzer.autocannon_v1_predict?.concurrency).toBe(16);

    // The tutorial's FastAPI service, 1 and 2 uvicorn workers, next to Quern on cars-mpg.
    const vs = r.vs_tutorial;
    expect(vs.points.map((p) => p.concurrency)).toEqual([1, 32]);
    for (const p of vs.points) {
      for (const [side, point] of Object.entries({
        quern: p.quern,
        tutorial: p.tutorial,
        tutorial_2w: p.tutorial_2w,
      })) {
        expect(point.rps, `${side} c=${p.concurrency}`).toBeGreaterThan(0);
        expect(point.non_2xx, `${side} c=${p.concurrency}`).toBe(0);
        expect(point.errors, `${side} c=${p.concurrency}`).toBe(0);
      }
    }
    expect(vs.server.cache_hits).toBe(0);
    expect(vs.sequential_p50_ms.tutorial).toBeGreaterThan(0);
    expect(vs.ratios.c1_p50_ratio).toBeGreaterThan(0);
    expect(vs.ratios.c32).toBeGreaterThan(0);
    expect(vs.ratios.c32_2w).toBeGreaterThan(0);
    expect(Object.keys(vs.ratios.p99_below_tutorial)).toEqual(['32']);
    const cpu = r.cpu_per_request_vs_hono;
    expect(cpu?.concurrency).toBe(32);
    for (const key of ['api', 'worker', 'redis', 'hono'] as const) {
      expect(cpu?.us_per_request[key], key).toBeGreaterThan(0);
    }
    for (const key of ['api', 'worker', 'redis'] as const) expect(cpu?.vs_hono[key], key).toBeGreaterThan(0);
    expect(cpu?.tutorial_us_per_request?.server).toBeGreaterThan(0);
    for (const key of ['vs_tutorial_c1_p50_ratio', 'vs_tutorial_c32_2w', 'cpu_api_vs_hono', 'cpu_redis_vs_hono']) {
      expect(r.targets[key], key).toBeDefined();
    }
    expect(r.drain.jobs_per_second).toBeGreaterThan(0);
    expect(r.limits.ort_rows_per_second['mlp-large']?.['128']).toBeGreaterThan(0);

    const md = readFileSync(join(out, 'benchmarks.md'), 'utf8');
    expect(md).toContain('| mlp-large sync c=64, batched ÷ max_batch_size 1 |');
    expect(md).toContain(`${r.machine.cores} cores`);
    expect(md).toContain('## Against the tutorial’s FastAPI service (cars-mpg)');
    expect(md).toContain('| cars-mpg c=32: Quern req/s ÷ tutorial with 2 uvicorn workers |');
    expect(md).toContain('## CPU per request (cars-mpg, c=32)');
    expect(md).toContain('## perf_analyzer over the Open Inference Protocol (cars-mpg, c=16)');
    const svg = readFileSync(join(out, 'benchmarks.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('polyline');
    // Creating the virtualenv on a fresh machine takes a minute of the budget.
  }, 420_000);
});
