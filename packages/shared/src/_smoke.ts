import { Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const url = 'redis://127.0.0.1:6379/15';
const conn = new Redis(url, { maxRetriesPerRequest: null });
const q = new Queue('smoke', { connection: conn, prefix: '{smoketest}' });
const qe = new QueueEvents('smoke', {
  connection: new Redis(url, { maxRetriesPerRequest: null }),
  prefix: '{smoketest}',
});
await qe.waitUntilReady();
qe.on('completed', ({ jobId, returnvalue }) => console.log('completed', jobId, typeof returnvalue, returnvalue));
const w = new Worker('smoke', async (job) => ({ x: job.data.x * 2 }), {
  connection: new Redis(url, { maxRetriesPerRequest: null }),
  prefix: '{smoketest}',
  concurrency: 4,
});
const j = await q.add('infer', { x: 21 }, { jobId: 'job_abc', removeOnComplete: { age: 10, count: 10 } });
console.log('added', j.id);
await new Promise((r) => setTimeout(r, 500));
const job = await q.getJob('job_abc');
console.log(await job?.getState(), job?.returnvalue, job?.processedOn, job?.finishedOn);
await w.close();
await qe.close();
await q.obliterate({ force: true });
await q.close();
conn.disconnect();
