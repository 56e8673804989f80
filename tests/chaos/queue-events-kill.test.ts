import { randomRows } from '@quern/devkit';
import { describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

const WAIT_S = 20;

/** The API's QueueEvents connections: BullMQ names one `…:qe`; reconnected, it carries ours. */
const EVENTS = /name=(\S+:qe|api-events-\S+) /;
/** The API's reply subscription: what workers push answers to. */
const REPLIES = /name=api-replies /;

/** Kills every connection of the API that `pattern` matches; returns how many. */
async function killEvents(harness: Harness, pattern: RegExp): Promise<number> {
  const admin = harness.client();
  let kills = 0;
  const list = (await admin.call('CLIENT', 'LIST')) as string;
  for (const line of list.split('\n')) {
    if (pattern.test(` ${line} `)) {
      const id = /\bid=(\d+)/.exec(line)?.[1];
      if (id) {
        await admin.call('CLIENT', 'KILL', 'ID', id).catch(() => undefined);
        kills++;
      }
    }
  }
  return kills;
}

/**
 * 60 sync callers of one principal wait on mlp-large while the queue is paused; the API's
 * QueueEvents connections are killed, the queue resumes, and they are killed again and again
 * for two seconds while the jobs complete. `jobsBeforeResume` is how many jobs must be queued
 * before the first kill.
 */
async function scenario(
  harness: Harness,
  name: string,
  jobsBeforeResume: (callers: number) => number,
  pattern: RegExp = EVENTS,
) {
  const queue = harness.queue('mlp-large');
  await queue.pause();
  const rows = randomRows(60, 256, 9);
  const started = performance.now();
  const callers = rows.map(async (features) => {
    const res = await harness.fetch('/v1/predict', {
      method: 'POST',
      headers: { prefer: `wait=${WAIT_S}` },
      body: JSON.stringify({ model: 'mlp-large', features }),
    });
    return {
      status: res.status,
      body: (await res.json()) as { prediction?: number[] },
      ms: performance.now() - started,
    };
  });
  await expect.poll(() => queue.count(), { timeout: 10_000, interval: 10 }).toBe(jobsBeforeResume(rows.length));

  let kills = await killEvents(harness, pattern);
  await queue.resume();
  const until = Date.now() + 2_000;
  while (Date.now() < until) {
    kills += await killEvents(harness, pattern);
    await new Promise((r) => setTimeout(r, 50));
  }
  const answers = await Promise.all(callers);
  report(name, {
    callers: answers.length,
    answered_200: answers.filter((a) => a.status === 200).length,
    connections_killed: kills,
    max_wait_ms: Math.round(Math.max(...answers.map((a) => a.ms))),
    timeout_ms: WAIT_S * 1000,
  });
  // Killed again after reconnecting, not just once.
  expect(kills).toBeGreaterThan(pattern === REPLIES ? 1 : 2);
  expect(answers.every((a) => a.status === 200 && a.body.prediction?.length === 8)).toBe(true);
  expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(WAIT_S * 1000);
}

describe('fault 5: the QueueEvents connection (and the reply channel) killed while sync callers wait', () => {
  it('still answers every caller with its result, none past its timeout (a job per caller)', async () => {
    // Coalescing off: every caller has a job of its own in Redis before the first kill.
    const harness = await Harness.start({
      workers: 1,
      env: { QUERN_WAIT_POLL_INTERVAL_MS: '500', QUERN_SYNC_COALESCE_IN_FLIGHT: '0' },
    });
    try {
      await scenario(harness, 'fault-5-queue-events-killed', (callers) => callers);
    } finally {
      await harness.close();
    }
  });

  it('and with the callers coalesced into shared jobs (the default)', async () => {
    // One job in flight per principal and model (the default): the rest of the callers join jobs
    // sent after it finishes, while the event connections keep dying.
    const harness = await Harness.start({ workers: 1, env: { QUERN_WAIT_POLL_INTERVAL_MS: '500' } });
    try {
      await scenario(harness, 'fault-5-queue-events-killed-coalesced', () => 1);
    } finally {
      await harness.close();
    }
  });

  it('and with the workers’ replies lost too: QueueEvents or the poll answer', async () => {
    // The reply subscription dies again and again with the event connections: every reply
    // published meanwhile is lost, so the fallbacks must answer.
    const harness = await Harness.start({ workers: 1, env: { QUERN_WAIT_POLL_INTERVAL_MS: '500' } });
    try {
      await scenario(
        harness,
        'fault-5-replies-and-events-killed',
        () => 1,
        new RegExp(`${REPLIES.source}|${EVENTS.source}`),
      );
      const metrics = await (await harness.fetch('/metrics')).text();
      // Some callers were answered by a fallback, not by a reply.
      expect(metrics).toMatch(/quern_sync_answers_total\{source="(events|poll)"[^}]*\} [1-9]/);
    } finally {
      await harness.close();
    }
  });

  it('and with only the replies lost: the callers still get their answers', async () => {
    const harness = await Harness.start({ workers: 1, env: { QUERN_WAIT_POLL_INTERVAL_MS: '500' } });
    try {
      await scenario(harness, 'fault-5-replies-killed', () => 1, REPLIES);
    } finally {
      await harness.close();
    }
  });
});
