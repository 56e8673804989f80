/**
 * `pnpm exec tsx tests/bench/queue-standing.ts [jobs]`: what reading a queued job's standing costs
 * at a deep queue (100,000 jobs by default), against finding it by BullMQ's own listing; and what
 * the admission that starts a fair-share rebase of a band that deep costs, in chunks and at once.
 * Prints JSON; docs/scheduling.md quotes the figures. Runs on a Redis of its own.
 */
import { startTestRedis } from '@quern/devkit';
import { AdmissionLedger, FAIR_BAND, KeySpace, REBASE_CHUNK } from '@quern/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

const JOBS = Number(process.argv[2] ?? 100_000);
const redis = await startTestRedis({ forceOwn: true });
const client = new Redis(redis.url, { maxRetriesPerRequest: null });
const keys = new KeySpace(redis.prefix);
const queue = new Queue('infer-bench', { connection: client, prefix: redis.prefix });
const ledger = new AdmissionLedger(client, keys);
const queueKey = `${redis.prefix}:infer-bench`;

try {
  for (let at = 0; at < JOBS; at += 1_000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1_000, JOBS - at) }, (_, k) => ({
        name: 'infer',
        data: { rows: 1 },
        opts: { jobId: `job_${at + k}`, priority: 1 + ((at + k) % 5_000) },
      })),
    );
  }
  const target = `job_${JOBS - 1}`;
  const time = async (runs: number, fn: () => Promise<unknown>) => {
    const started = performance.now();
    for (let i = 0; i < runs; i++) await fn();
    return (performance.now() - started) / runs;
  };
  /** Redis's own time per run of `fn` (INFO commandstats), by command, over `runs` runs. */
  const commandMicros = async (fn: () => Promise<unknown>, runs = 1) => {
    await client.config('RESETSTAT');
    for (let i = 0; i < runs; i++) await fn();
    const info = await client.info('commandstats');
    return Object.fromEntries(
      [...info.matchAll(/cmdstat_(\w+):calls=(\d+),usec=(\d+)/g)]
        .filter(([, name]) => name !== 'config' && name !== 'info')
        .map(([, name, calls, usec]) => [
          name,
          { calls: Number(calls) / runs, usec: Number((Number(usec) / runs).toFixed(2)) },
        ]),
    );
  };
  // A drain rate of 50 jobs/s: the ETA's floor is read and kept too. (The script's \`evalsha\`
  // time includes the commands it runs, also listed on their own.)
  const read = () => ledger.standing(queueKey, 'bench', target, 50);
  const standing = await read();
  const standingMs = await time(1_000, read);
  const standingRedis = await commandMicros(read, 1_000);
  // What a position costs through BullMQ's public listing: every waiting job id, then a search.
  const walk = async () => {
    const ids = (await queue.getJobs(['prioritized'], 0, -1, true)).map((j) => j.id);
    return ids.indexOf(target);
  };
  const walkMs = await time(3, walk);
  const walkRedis = await commandMicros(walk);
  // A rebase at this depth: class 1's band holds as many jobs, 6,000 to 11,000 numbers past its
  // base, and a key's tag reaches half the band. The admission that starts the rebase moves at most
  // REBASE_CHUNK of them (what one script holds Redis for); with no chunks it would move them all.
  const rebase = async (chunk: number) => {
    const prefix = `${redis.prefix}rb${chunk}`;
    const rbQueue = new Queue('infer-rb', { connection: client, prefix });
    const rbKeys = new KeySpace(prefix);
    for (let at = 0; at < JOBS; at += 1_000) {
      await rbQueue.addBulk(
        Array.from({ length: Math.min(1_000, JOBS - at) }, (_, k) => ({
          name: 'infer',
          data: { rows: 1 },
          opts: { jobId: `job_${at + k}`, priority: 6_001 + ((at + k) % 5_000) },
        })),
      );
    }
    await client.hset(rbKeys.fairShare('bench'), 'f1:flooder', FAIR_BAND / 2);
    await client.config('RESETSTAT');
    const started = performance.now();
    await new AdmissionLedger(client, rbKeys).admit({
      queueKey: `${prefix}:infer-rb`,
      model: 'bench',
      owner: 'flooder',
      jobId: 'job_new',
      rows: 1,
      maxDepth: 1_000_000_000,
      maxRows: 0,
      deadlineAt: Date.now() + 60_000,
      priorityClass: 1,
      weight: 1,
      quantumRows: 16,
      recentJobsTtlMs: 60_000,
      rebaseChunk: chunk,
    });
    const ms = performance.now() - started;
    // The script's time (the first call of a script may come as EVAL, after EVALSHA's NOSCRIPT).
    let usec = 0;
    for (const [, value] of (await client.info('commandstats')).matchAll(
      /cmdstat_eval(?:sha)?:calls=\d+,usec=(\d+)/g,
    )) {
      usec += Number(value);
    }
    const rebases = Number(await client.hget(rbKeys.fairShare('bench'), 'rebases'));
    await rbQueue.obliterate({ force: true });
    await rbQueue.close();
    if (rebases !== 1) throw new Error(`expected one rebase, saw ${rebases}`);
    return { jobs_moved: Math.min(chunk, JOBS), ms: Number(ms.toFixed(2)), redis_ms: Number((usec / 1000).toFixed(2)) };
  };
  const rebaseChunk = await rebase(REBASE_CHUNK);
  const rebaseAtOnce = await rebase(JOBS);
  process.stdout.write(
    `${JSON.stringify(
      {
        queued_jobs: JOBS,
        standing,
        standing_ms_per_read: Number(standingMs.toFixed(3)),
        standing_redis_commands: standingRedis,
        bullmq_listing_ms_per_read: Number(walkMs.toFixed(1)),
        bullmq_listing_redis_commands: walkRedis,
        rebase_admission_in_chunks: rebaseChunk,
        rebase_admission_at_once: rebaseAtOnce,
      },
      null,
      2,
    )}\n`,
  );
} finally {
  await queue.close();
  client.disconnect();
  await redis.close();
}
