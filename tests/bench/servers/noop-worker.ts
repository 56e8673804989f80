/** The ceiling of BullMQ on this machine: a worker whose processor does nothing. */
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

const worker = new Worker('bench-noop', async () => ({ ok: true }), {
  connection: new Redis(process.env.REDIS_URL as string, { maxRetriesPerRequest: null }),
  prefix: process.env.QUERN_REDIS_PREFIX as string,
  concurrency: Number(process.env.CONCURRENCY ?? 1024),
  removeOnComplete: { count: 100_000 },
});
worker.on('ready', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => void worker.close().then(() => process.exit(0)));
