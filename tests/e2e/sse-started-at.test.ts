import { rmSync } from 'node:fs';
import type { CreateJobRequest, Job, JobEvent, QuernClient } from '@quern/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stackClient } from '../support/quern-client';
import { type Stack, startStack } from '../support/stack';
import { writeTestModels } from '../support/test-models';
import { WebhookReceiver } from '../support/webhook-receiver';

/**
 * Issue 12 #10: `started_at` has one meaning (when a worker took the job, which is when it turns
 * `running`) and never changes once shown. A batching delay holds each job in the worker's batcher
 * for over a second before it computes, so "taken" and "computing" are far apart here.
 */
const HOLD_MS = 1_500;
let stack: Stack;
let quern: QuernClient;
let modelsDir: string;
let receiver: WebhookReceiver;
let seed = 1;

beforeAll(async () => {
  receiver = await WebhookReceiver.start();
  modelsDir = writeTestModels([
    { name: 'cars-held', from: 'cars-mpg', batching: { max_delay_ms: HOLD_MS, max_batch_size: 256 } },
  ]);
  stack = await startStack({
    QUERN_MODELS_DIR: modelsDir,
    QUERN_WORKER_MODELS: 'cars-held',
    QUERN_WORKER_THREADS: '1',
    QUERN_SSE_KEEPALIVE_MS: '200',
    QUERN_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${receiver.port}`,
  });
  quern = stackClient(stack);
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

async function submit(extra: Partial<CreateJobRequest> = {}): Promise<string> {
  const features = [4, 140, 90, 2264, 15.5, 1971 + seed++ / 1000];
  return (await quern.submit({ model: 'cars-held', features, ...extra })).id;
}

/** When the job's batch began computing: after the hold, well after the worker took it. */
const computingAt = (view: Job) => Date.parse(view.created_at) + (view.timings?.queue_ms ?? 0);

describe('started_at', () => {
  it('is the same on the running event, the final event and GET, and is when the worker took the job', async () => {
    const id = await submit();
    const events: JobEvent[] = [];
    for await (const event of quern.events(id)) events.push(event);
    const running = events.find((e) => e.event === 'running')?.job;
    const final = events.at(-1)?.job;
    expect(events.map((e) => e.event).slice(-2)).toEqual(['running', 'succeeded']);
    expect(running?.started_at).toEqual(expect.any(String));
    expect(final?.started_at).toBe(running?.started_at);
    const view = await quern.getJob(id);
    expect(view.started_at).toBe(running?.started_at);
    // The job was taken, then held in the batcher, then computed: inference start is in timings.
    expect(computingAt(view) - Date.parse(view.started_at as string)).toBeGreaterThanOrEqual(HOLD_MS - 500);
    expect(Date.parse(view.completed_at as string)).toBeGreaterThanOrEqual(computingAt(view));
  });

  it('is the same in the started webhook as in the completed one and on the job', async () => {
    const before = receiver.requests.length;
    const id = await submit({ webhook: { url: receiver.url(), events: ['started', 'completed'] } });
    await receiver.waitFor(before + 2);
    const bodies = receiver.requests
      .slice(before)
      .map((r) => JSON.parse(r.body) as { type: string; data: Job })
      .filter((b) => b.data.id === id);
    const started = bodies.find((b) => b.type === 'job.started')?.data;
    const completed = bodies.find((b) => b.type === 'job.completed')?.data;
    expect(started?.status).toBe('running');
    expect(started?.started_at).toEqual(expect.any(String));
    expect(completed?.started_at).toBe(started?.started_at);
    expect((await quern.getJob(id)).started_at).toBe(started?.started_at);
  });
});
