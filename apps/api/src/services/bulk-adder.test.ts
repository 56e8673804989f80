import { startTestRedis, type TestRedis } from '@quern/devkit';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BulkAdder } from './bulk-adder';

let server: TestRedis;
let admin: Redis;
let connection: Redis;
let queue: Queue;

beforeAll(async () => {
  // A server of its own: the test changes maxmemory.
  server = await startTestRedis({ forceOwn: true });
  admin = new Redis(server.url);
  connection = new Redis(server.url, { maxRetriesPerRequest: null });
  queue = new Queue('bulk', { connection, prefix: server.prefix });
  await queue.waitUntilReady();
});

afterAll(async () => {
  await queue.close();
  connection.disconnect();
  admin.disconnect();
  await server.close();
});

describe('BulkAdder', () => {
  it('adds the jobs of one turn together, in order, each caller getting its own job', async () => {
    const adder = new BulkAdder(queue);
    const jobs = await Promise.all([1, 2, 3].map((n) => adder.add('job', { n }, { jobId: `many-${n}` })));
    expect(jobs.map((j) => j.id)).toEqual(['many-1', 'many-2', 'many-3']);
    expect(jobs.map((j) => (j.data as { n: number }).n)).toEqual([1, 2, 3]);
    expect(await queue.getJobState('many-2')).toBe('waiting');
    const alone = await adder.add('job', { n: 4 }, { jobId: 'alone', priority: 3 });
    expect(await queue.getJobState(alone.id as string)).toBe('prioritized');
  });

  it('rejects every caller of a batch that Redis refuses, and a lone add too', async () => {
    const adder = new BulkAdder(queue);
    await admin.config('SET', 'maxmemory', '1');
    try {
      const results = await Promise.allSettled([adder.add('job', { n: 5 }, {}), adder.add('job', { n: 6 }, {})]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      await expect(adder.add('job', { n: 7 }, { jobId: 'refused' })).rejects.toThrow();
      expect(await queue.getJobState('refused')).toBe('unknown');
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
  });
});
