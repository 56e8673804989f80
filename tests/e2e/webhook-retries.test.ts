import { type DeliveryState, deliveryJobId, type JobView, WEBHOOK_QUEUE } from '@quern/shared';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from '../support/stack';
import { WebhookReceiver } from '../support/webhook-receiver';

/**
 * The webhook retry schedule, seen from outside: a receiver that always fails gets one attempt
 * plus one per schedule entry, each retry after that entry's delay with ±20% jitter (published on
 * the job resource as next_attempt_at, and kept by the retry itself), different deliveries spread
 * apart, and after the last entry the delivery gives up as failed.
 */
const SCHEDULE = [500, 2_500, 5_000];
const JITTER = 0.2;
/** A retry may be this late on a busy machine; less than the gap between two schedule entries. */
const LATE_SLACK_MS = 1_000;
const DELIVERIES = 3;

let stack: Stack;
let failing: WebhookReceiver;

beforeAll(async () => {
  failing = await WebhookReceiver.start(() => ({ status: 503 }));
  stack = await startStack({
    QUERN_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${failing.port}`,
    QUERN_WEBHOOK_RETRY_SCHEDULE_MS: SCHEDULE.join(','),
    // The receiver's circuit breaker would hold retries back: off, so only the schedule counts.
    QUERN_WEBHOOK_BREAKER_FAILURES: '0',
  });
});

afterAll(async () => {
  await stack?.close();
  await failing?.close();
});

async function job(id: string): Promise<JobView> {
  return (await (await stack.get(`/v1/jobs/${id}`)).json()) as JobView;
}

describe('webhook retries', () => {
  it('follows the schedule with ±20% jitter, spreads deliveries apart, and gives up after the last entry', async () => {
    const ids: string[] = [];
    for (let i = 0; i < DELIVERIES; i++) {
      const res = await stack.post('/v1/jobs', {
        features: [4, 140, 90, 2264, 15.5, 1970 + i],
        webhook: { url: failing.url() },
      });
      expect(res.status).toBe(202);
      ids.push(((await res.json()) as JobView).id);
    }

    // Every state the job resources show, per job and attempt, until every delivery has ended.
    const seen = new Map<string, Map<number, DeliveryState>>(ids.map((id) => [id, new Map()]));
    const total = SCHEDULE.reduce((a, b) => a + b, 0);
    await expect
      .poll(
        async () => {
          let ended = 0;
          for (const id of ids) {
            const [delivery] = (await job(id)).webhook?.deliveries ?? [];
            if (!delivery) continue;
            seen.get(id)?.set(delivery.attempts, delivery);
            if (delivery.status !== 'pending' && delivery.status !== 'retrying') ended++;
          }
          return ended;
        },
        { timeout: total * (1 + JITTER) + 15_000, interval: 20 },
      )
      .toBe(DELIVERIES);

    const firstDelays: number[] = [];
    for (const id of ids) {
      const states = seen.get(id) as Map<number, DeliveryState>;
      const requests = failing.requests
        .filter((r) => (JSON.parse(r.body) as { data: { id: string } }).data.id === id)
        .map((r) => ({ ...r, epochMs: performance.timeOrigin + r.at }));
      // One attempt plus one per schedule entry, all of one delivery (one webhook-id).
      expect(requests).toHaveLength(SCHEDULE.length + 1);
      expect(new Set(requests.map((r) => r.headers['webhook-id'])).size).toBe(1);
      for (const [i, base] of SCHEDULE.entries()) {
        const attempt = i + 1;
        const state = states.get(attempt);
        expect(state, `${id}: attempt ${attempt} shown as retrying`).toMatchObject({
          status: 'retrying',
          last_status_code: 503,
        });
        const nextAt = Date.parse(state?.next_attempt_at ?? '');
        // The published delay: the schedule's entry, jittered by at most 20% (next_attempt_at is
        // computed a moment before the state's updated_at).
        const delay = nextAt - Date.parse(state?.updated_at ?? '');
        expect(delay, `${id}: delay before retry ${attempt}`).toBeGreaterThanOrEqual(base * (1 - JITTER) - 50);
        expect(delay, `${id}: delay before retry ${attempt}`).toBeLessThanOrEqual(base * (1 + JITTER));
        if (attempt === 1) firstDelays.push(delay);
        // The retry itself keeps that time: never early, and not a schedule entry late.
        const retry = requests[attempt] as { epochMs: number };
        expect(retry.epochMs, `${id}: retry ${attempt} not early`).toBeGreaterThanOrEqual(nextAt - 20);
        expect(retry.epochMs, `${id}: retry ${attempt} not late`).toBeLessThanOrEqual(nextAt + LATE_SLACK_MS);
      }
      // After the last entry: given up, nothing more scheduled.
      expect(states.get(SCHEDULE.length + 1)).toMatchObject({
        status: 'failed',
        attempts: SCHEDULE.length + 1,
        last_status_code: 503,
        next_attempt_at: null,
      });
    }
    // Jitter: deliveries that failed together do not retry in lockstep.
    expect(new Set(firstDelays).size).toBeGreaterThan(1);

    // BullMQ agrees: each delivery ended failed after its attempts, so no further request can come.
    const deliveries = new Queue(WEBHOOK_QUEUE, {
      connection: stack.client,
      prefix: stack.config.QUERN_REDIS_PREFIX,
    });
    try {
      for (const id of ids) {
        const delivery = await deliveries.getJob(deliveryJobId(id, 'completed'));
        expect(await delivery?.getState()).toBe('failed');
        expect(delivery?.attemptsMade).toBe(SCHEDULE.length + 1);
      }
    } finally {
      await deliveries.close();
    }
    expect(failing.requests).toHaveLength(DELIVERIES * (SCHEDULE.length + 1));
  });
});
