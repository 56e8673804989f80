import { join } from 'node:path';
import { DirectOrt, maxAbsDiff, REPO_ROOT, randomRows } from '@quern/devkit';
import { type InferenceResult, KeySpace, loadManifest } from '@quern/shared';
import { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, pool, report } from './support/harness';

const LOCK_MS = 2_000;
const STALLED_MS = 1_000;
let harness: Harness;

beforeAll(async () => {
  harness = await Harness.start({
    workers: 2,
    env: {
      QUERN_LOCK_DURATION_MS: String(LOCK_MS),
      QUERN_STALLED_INTERVAL_MS: String(STALLED_MS),
      QUERN_MAX_STALLED_COUNT: '20',
      QUERN_JOB_ATTEMPTS: '5',
    },
  });
});

afterAll(async () => {
  await harness?.close();
});

function workerIdOf(lines: Record<string, unknown>[]): string | undefined {
  return lines.find((l) => l.msg === 'worker started')?.worker_id as string | undefined;
}

describe('fault 1: a worker killed with SIGKILL every 2 s while 5 000 jobs are submitted', () => {
  it('completes every job once, with correct outputs, each killed job recovered within the stall window', async () => {
    const model = loadManifest(join(REPO_ROOT, 'models')).models.find((m) => m.name === 'mlp-large');
    if (!model) throw new Error('mlp-large missing');
    const queue = harness.queue('mlp-large');
    const events = new QueueEvents(new KeySpace(harness.prefix).inferenceQueue('mlp-large'), {
      connection: harness.client(),
      prefix: harness.prefix,
    });
    await events.waitUntilReady();
    const completions = new Map<string, number>();
    events.on('completed', ({ jobId }) => completions.set(jobId, (completions.get(jobId) ?? 0) + 1));

    const rows = randomRows(5_000, 256, 1234);
    const ids: string[] = new Array(rows.length);
    let acknowledged = 0;
    const kills: { at: number; workerId: string; held: string[] }[] = [];
    let submitting = true;

    // The killer: every 2 s, SIGKILL the newest worker and start a replacement.
    const killer = (async () => {
      while (submitting) {
        await new Promise((r) => setTimeout(r, 2_000));
        if (!submitting) break;
        const victim = harness.workers[harness.workers.length - 1];
        if (!victim?.running) continue;
        const workerId = workerIdOf(victim.logs());
        await victim.stop('SIGKILL');
        const at = Date.now();
        const held = (await queue.getActive()).filter((j) => j.processedBy === workerId).map((j) => j.id as string);
        kills.push({ at, workerId: workerId ?? '?', held });
        await harness.startWorker();
      }
    })();

    // Submit at a steady rate (~500/s) through the API, so kills land while jobs flow.
    const started = Date.now();
    await pool(rows, 20, async (features, i) => {
      const due = started + i * 2;
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      const res = await harness.fetch('/v1/jobs', {
        method: 'POST',
        body: JSON.stringify({ model: 'mlp-large', features }),
      });
      expect(res.status).toBe(202);
      acknowledged++;
      ids[i] = ((await res.json()) as { id: string }).id;
    });
    // Keep killing for a little while after the last submission too.
    await new Promise((r) => setTimeout(r, 2_500));
    submitting = false;
    await killer;

    await expect
      .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 60_000, interval: 250 })
      .toBeGreaterThanOrEqual(ids.length);
    const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
    const states = await Promise.all(ids.map((id) => queue.getJobState(id)));
    const lost = states.filter((s) => s !== 'completed').length;
    const outputs = jobs.map((j) => ((j?.returnvalue as InferenceResult | undefined)?.outputs[0] ?? []) as number[]);
    const direct = await DirectOrt.load(join(REPO_ROOT, 'models'), model);
    const expected = await direct.run(rows);
    await direct.release();
    const rerun = jobs.filter((j) => (j?.attemptsStarted ?? 0) > 1).length;
    const duplicated = [...completions.values()].filter((n) => n > 1).length;

    // Recovery: a job held by a killed worker starts again within lock duration + stalled interval.
    const recovery: number[] = [];
    for (const kill of kills) {
      for (const id of kill.held) {
        const job = jobs[ids.indexOf(id)];
        if (job?.processedOn) recovery.push(job.processedOn - kill.at);
      }
    }
    const maxRecovery = recovery.length > 0 ? Math.max(...recovery) : 0;
    report('fault-1-worker-sigkill', {
      submitted: rows.length,
      acknowledged,
      completed: states.filter((s) => s === 'completed').length,
      lost,
      duplicated_results: duplicated,
      kills: kills.length,
      jobs_held_by_killed_workers: recovery.length,
      jobs_run_again: rerun,
      max_recovery_ms: maxRecovery,
      stall_window_ms: LOCK_MS + STALLED_MS,
      max_abs_error: maxAbsDiff(outputs, expected),
    });
    expect(acknowledged).toBe(rows.length);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(kills.length).toBeGreaterThanOrEqual(3);
    expect(recovery.length).toBeGreaterThan(0);
    // The stall window, plus the time the stalled checker and a batch need to pick the job up again.
    expect(maxRecovery).toBeLessThanOrEqual(LOCK_MS + STALLED_MS + 1_500);
    expect(maxAbsDiff(outputs, expected)).toBeLessThan(1e-4);
    await events.close();
  });
});
