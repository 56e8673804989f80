import { KeyStore, SCOPES } from '@quern/api';
import { seedTestKeys, startTestRedis, type TestRedis, uniquePrefix } from '@quern/devkit';
import { KeySpace } from '@quern/shared';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fleet, fleetEnv, pollUntil, submitJobs } from './support/fleet';
import { makeWorkload, QueueReader, verify } from './support/workload';

/**
 * A worker killed with SIGKILL in the middle of a run (no drain, no goodbye): the jobs it held
 * keep their lock until it expires, another worker takes them up as stalled, and every job still
 * completes exactly once with the right output.
 */
const MODELS = ['cars-mpg', 'mlp-large'];
const COUNTS = { 'cars-mpg': 4_500, 'mlp-large': 500 };
const TOTAL = 5_000;

let redis: TestRedis;
let client: Redis;
let fleet: Fleet | undefined;
let reader: QueueReader | undefined;

beforeAll(async () => {
  // A server of its own even when REDIS_URL is set: the test writes thousands of jobs under a prefix
  // of its own.
  redis = await startTestRedis({ forceOwn: true });
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  await fleet?.stopAll();
  await reader?.close();
  client?.disconnect();
  await redis?.close();
});

describe('a worker killed mid-run', () => {
  it('loses no job: its jobs are recovered as stalled and every job completes once with the right output', async () => {
    const workload = await makeWorkload(COUNTS, 7);
    const prefix = uniquePrefix('kill');
    await seedTestKeys(new KeyStore(client, new KeySpace(prefix)), SCOPES);
    fleet = new Fleet(
      fleetEnv({
        REDIS_URL: redis.url,
        QUERN_REDIS_PREFIX: prefix,
        // Stalled jobs are noticed within about 2 s instead of the default 30 s.
        QUERN_LOCK_DURATION_MS: '2000',
        QUERN_STALLED_INTERVAL_MS: '1000',
      }),
    );
    const api = await fleet.startApi();
    const [, victim] = await Promise.all([
      fleet.startWorker('worker-1'),
      fleet.startWorker('worker-2'),
      fleet.startWorker('worker-3'),
    ]);
    if (!victim) throw new Error('worker-2 did not start');
    await fleet.ready();
    const activeReader = new QueueReader(client, prefix, MODELS);
    reader = activeReader;

    const started = Date.now();
    const submitted = submitJobs(api.baseUrl, workload.jobs, 64);

    // In the middle of the run, while the victim holds jobs: freeze it (SIGSTOP) so what it holds
    // stays put while we look, and SIGKILL it if it holds any; else let it go on and look again.
    const victimActive = async () => {
      const active: Job[] = [];
      for (const queue of activeReader.queues.values()) active.push(...(await queue.getJobs(['active'])));
      return active.filter((j) => j.processedBy === victim.id).map((j) => j.id as string);
    };
    const heldAtKill = await pollUntil(
      async () => {
        const c = await activeReader.counts();
        if ((c.completed ?? 0) < TOTAL / 5) return undefined;
        victim.process.child.kill('SIGSTOP');
        const held = await victimActive();
        if (held.length > 0) return held;
        victim.process.child.kill('SIGCONT');
        return undefined;
      },
      60_000,
      async () => `the victim never held a job: ${JSON.stringify(await activeReader.counts())}`,
      20,
    );
    const exit = await victim.process.stop('SIGKILL');
    const killedAtMs = Date.now() - started;
    expect(exit.signal).toBe('SIGKILL');
    const completedAtKill = (await activeReader.counts()).completed ?? 0;

    const ids = await submitted;
    const counts = await activeReader.waitForFinished(TOTAL, 60_000);
    const finishedMs = Date.now() - started;
    const verdict = await verify(activeReader, ids, workload);
    const jobs = await activeReader.jobs(
      ids,
      workload.jobs.map((j) => j.model),
    );
    const byId = new Map(jobs.map((j) => [j.id as string, j]));
    const recovered = heldAtKill.map((id) => byId.get(id));
    console.log(
      `[scale] SIGKILL: ${TOTAL} jobs, 3 workers, worker-2 killed at ${killedAtMs} ms with ${completedAtKill} jobs ` +
        `completed and ${heldAtKill.length} in its hands; all finished after ${finishedMs} ms; ` +
        `per worker (processedBy) ${JSON.stringify(verdict.perWorker)}; recovered jobs' stalledCounter ` +
        `${JSON.stringify([...new Set(recovered.map((j) => j?.stalledCounter))])}; max |diff| ${verdict.maxDiff}`,
    );

    expect(counts.failed ?? 0).toBe(0);
    expect(counts.completed).toBe(TOTAL);
    expect(verdict.notCompleted).toEqual([]);
    // Exactly one output row stored per job, the right one.
    expect(verdict.wrongShape).toEqual([]);
    expect(verdict.maxDiff).toBeLessThanOrEqual(1e-4);
    // Each job was finished once: BullMQ counts a finish in attemptsMade.
    expect(jobs.filter((j) => j.attemptsMade !== 1).map((j) => j.id)).toEqual([]);
    // The jobs the victim held were taken up as stalled and completed by a surviving worker.
    for (const job of recovered) {
      expect(job?.processedBy).not.toBe(victim.id);
      expect(job?.stalledCounter).toBeGreaterThanOrEqual(1);
    }
    const survivors = fleet.workers.filter((w) => w !== victim).map((w) => w.id);
    for (const id of survivors) expect(verdict.perWorker[id]).toBeGreaterThan(0);
  });
});
