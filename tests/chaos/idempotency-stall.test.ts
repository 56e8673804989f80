import { describe, expect, it } from 'vitest';
import { Harness, report } from './support/harness';

/**
 * Issue 12 #1: a request with an Idempotency-Key sent while Redis is frozen answers 503; its
 * `SET NX` claim still runs when Redis resumes. The client's retry with the same key and body
 * must then create the job (under the claimed id) instead of answering "still being processed"
 * for the claim's whole life.
 */
describe('fault 10: an Idempotency-Key used while Redis was frozen', () => {
  it('is usable again as soon as Redis resumes: the retry creates the job', async () => {
    const harness = await Harness.start({ workers: 1 });
    try {
      const pid = harness.redis.pid as number;
      const body = JSON.stringify({ model: 'cars-mpg', features: [4, 121, 110, 2600, 12.8, 1977] });
      const send = () => harness.fetch('/v1/jobs', { method: 'POST', headers: { 'idempotency-key': 'stall-1' }, body });

      // Warm the key cache, so the frozen request gets as far as its claim.
      expect((await harness.fetch('/v1/jobs/job_0000000000000000000000')).status).toBe(404);
      process.kill(pid, 'SIGSTOP');
      let frozen: Response;
      try {
        frozen = await send();
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      expect(frozen.status).toBe(503);

      // The claim ran when Redis resumed: the key now names a job that no request created.
      const admin = harness.client();
      await expect.poll(async () => (await admin.keys(`${harness.prefix}:idem:*`)).length).toBe(1);
      const started = performance.now();
      const retry = await send();
      const retryMs = performance.now() - started;
      expect(retry.status).toBe(202);
      const job = (await retry.json()) as { id: string };
      const again = await send();
      expect(again.status).toBe(202);
      expect(((await again.json()) as { id: string }).id).toBe(job.id);
      await expect
        .poll(async () => ((await (await harness.fetch(`/v1/jobs/${job.id}`)).json()) as { status: string }).status, {
          timeout: 15_000,
          interval: 50,
        })
        .toBe('succeeded');
      report('fault-10-idempotency-after-stall', {
        first: frozen.status,
        retry: retry.status,
        retry_ms: Math.round(retryMs),
      });
    } finally {
      await harness.close();
    }
  });
});
