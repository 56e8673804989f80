import { randomRows } from '@quern/devkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

let harness: Harness;
const WAIT_S = 20;

beforeAll(async () => {
  harness = await Harness.start({ workers: 1, env: { QUERN_WAIT_POLL_INTERVAL_MS: '500' } });
});

afterAll(async () => {
  await harness?.close();
});

describe('fault 5: the QueueEvents connection killed while sync callers wait', () => {
  it('still answers every caller with its result, none past its timeout', async () => {
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
    await expect.poll(() => queue.count(), { timeout: 10_000, interval: 10 }).toBe(rows.length);

    // Kill the API's QueueEvents connections, over and over while the jobs complete.
    const admin = harness.client();
    let kills = 0;
    const killEvents = async () => {
      const list = (await admin.call('CLIENT', 'LIST')) as string;
      for (const line of list.split('\n')) {
        if (/ name=\S+:qe /.test(` ${line} `)) {
          const id = /\bid=(\d+)/.exec(line)?.[1];
          if (id) {
            await admin.call('CLIENT', 'KILL', 'ID', id).catch(() => undefined);
            kills++;
          }
        }
      }
    };
    await killEvents();
    await queue.resume();
    const until = Date.now() + 2_000;
    while (Date.now() < until) {
      await killEvents();
      await new Promise((r) => setTimeout(r, 50));
    }
    const answers = await Promise.all(callers);
    report('fault-5-queue-events-killed', {
      callers: answers.length,
      answered_200: answers.filter((a) => a.status === 200).length,
      connections_killed: kills,
      max_wait_ms: Math.round(Math.max(...answers.map((a) => a.ms))),
      timeout_ms: WAIT_S * 1000,
    });
    expect(kills).toBeGreaterThan(0);
    expect(answers.every((a) => a.status === 200 && a.body.prediction?.length === 8)).toBe(true);
    expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(WAIT_S * 1000);
  });
});
