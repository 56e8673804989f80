import { rmSync } from 'node:fs';
import type { JobView } from '@quern/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sseReader } from '../support/sse';
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
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
  rmSync(modelsDir, { recursive: true, force: true });
});

async function submit(extra: Record<string, unknown> = {}): Promise<string> {
  const features = [4, 140, 90, 2264, 15.5, 1971 + seed++ / 1000];
  const res = await stack.post('/v1/jobs', { model: 'cars-held', features, ...extra });
  expect(res.status).toBe(202);
  return ((await res.json()) as JobView).id;
}

async function job(id: string): Promise<JobView> {
  return (await (await stack.get(`/v1/jobs/${id}`)).json()) as JobView;
}

/** When the job's batch began computing: after the hold, well after the worker took it. */
const computingAt = (view: JobView) => Date.parse(view.created_at) + (view.timings?.queue_ms ?? 0);

describe('started_at', () => {
  it('is the same on the running event, the final event and GET, and is when the worker took the job', async () => {
    const id = await submit();
    const sse = sseReader(await stack.get(`/v1/jobs/${id}/events`));
    const events: { event: string; view: JobView }[] = [];
    for (let m = await sse.next(); m; m = await sse.next()) {
      if (m.event) events.push({ event: m.event, view: JSON.parse(m.data) as JobView });
    }
    const running = events.find((e) => e.event === 'running')?.view;
    const final = events.at(-1)?.view;
    expect(events.map((e) => e.event).slice(-2)).toEqual(['running', 'succeeded']);
    expect(running?.started_at).toEqual(expect.any(String));
    expect(final?.started_at).toBe(running?.started_at);
    const view = await job(id);
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
      .map((r) => JSON.parse(r.body) as { type: string; data: JobView })
      .filter((b) => b.data.id === id);
    const started = bodies.find((b) => b.type === 'job.started')?.data;
    const completed = bodies.find((b) => b.type === 'job.completed')?.data;
    expect(started?.status).toBe('running');
    expect(started?.started_at).toEqual(expect.any(String));
    expect(completed?.started_at).toBe(started?.started_at);
    expect((await job(id)).started_at).toBe(started?.started_at);
  });
});
