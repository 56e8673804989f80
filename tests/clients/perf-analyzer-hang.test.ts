import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runPerfAnalyzerCommand } from '../bench/perf-analyzer';

/**
 * perf_analyzer in `--request-count` mode sometimes never exits although every request was
 * answered; the bench and the OIP client test run it through `runPerfAnalyzerCommand`, which
 * kills a run that does not finish in time and runs it once more. Checked with a stand-in that
 * hangs as many times as it is told to.
 */

const dir = mkdtempSync(join(tmpdir(), 'quern-pa-hang-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A script that counts its runs in `runs` and sleeps (a hang) for its first `hangs` runs. */
function standIn(name: string, hangs: number): { path: string; runs: () => number } {
  const path = join(dir, name);
  const counter = join(dir, `${name}.runs`);
  writeFileSync(counter, '');
  writeFileSync(
    path,
    `#!/bin/sh\necho run >> "${counter}"\nif [ "$(wc -l < "${counter}")" -le ${hangs} ]; then exec sleep 30; fi\necho "Throughput: 123.4 infer/sec"\n`,
  );
  chmodSync(path, 0o755);
  return { path, runs: () => readFileSync(counter, 'utf8').split('\n').filter(Boolean).length };
}

describe('runPerfAnalyzerCommand', () => {
  it('kills a run that hangs and runs it once more', async () => {
    const tool = standIn('hangs-once', 1);
    const run = await runPerfAnalyzerCommand(tool.path, [], process.env, 1_000);
    expect(run.code).toBe(0);
    expect(run.timedOut).toBeUndefined();
    expect(run.output).toContain('Throughput: 123.4 infer/sec');
    expect(tool.runs()).toBe(2);
  });

  it('gives up after a second hang, saying so', async () => {
    const tool = standIn('hangs-always', 10);
    const run = await runPerfAnalyzerCommand(tool.path, [], process.env, 500);
    expect(run.timedOut).toBe(true);
    expect(run.code).not.toBe(0);
    expect(run.output).toMatch(/killed: no exit within 0.5 s, twice/);
    expect(tool.runs()).toBe(2);
  });

  it('runs a tool that finishes once', async () => {
    const tool = standIn('never-hangs', 0);
    const run = await runPerfAnalyzerCommand(tool.path, [], process.env, 5_000);
    expect(run.code).toBe(0);
    expect(tool.runs()).toBe(1);
  });
});
