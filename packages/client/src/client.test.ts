import { describe, expect, it } from 'vitest';
import { Backoff, parseRetryAfter } from './backoff';
import { QuernClient, WaitTimeoutError } from './client';
import { isProblem, QuernProblemError } from './problem';
import type { Job, JobStatus } from './types';

/**
 * The client's own logic (polling, Retry-After, reopening event streams) against answers a test
 * chooses: the ones a real stack gives rarely or slowly (a 429 whose window ends in seconds, a
 * stream cut by an API process stopping). tests/e2e/client.test.ts runs it against the real stack.
 */

const job = (status: JobStatus): Job => ({
  id: 'job_test',
  status,
  model: 'cars-mpg',
  model_version: '1.0.0',
  created_at: '2026-12-01T10:00:00.000Z',
  started_at: status === 'queued' ? null : '2026-12-01T10:00:00.010Z',
  completed_at: status === 'succeeded' ? '2026-12-01T10:00:00.020Z' : null,
  output: status === 'succeeded' ? { prediction: 24.9 } : null,
  error: null,
  timings: null,
  expires_at: '2026-12-01T10:10:00.000Z',
  priority: 1,
  webhook: null,
});

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

const problem = (status: number, code: string, headers: Record<string, string> = {}) =>
  new Response(
    JSON.stringify({ type: `urn:quern:problem:${code}`, title: code, status, detail: code, code, request_id: 'req_x' }),
    { status, headers: { 'content-type': 'application/problem+json', ...headers } },
  );

/** A client whose every request is answered by `answers`, in turn; `at` records when each came. */
function scripted(answers: (() => Response)[]) {
  const at: number[] = [];
  const client = new QuernClient({
    baseUrl: 'http://quern.test/',
    apiKey: 'qk_test',
    fetch: async (request) => {
      expect(request.headers.get('x-api-key')).toBe('qk_test');
      at.push(performance.now());
      const answer = answers[at.length - 1];
      if (!answer) throw new Error(`no answer for request ${at.length}: ${request.method} ${request.url}`);
      return answer();
    },
  });
  return { client, at };
}

function sse(...events: JobStatus[]): () => Response {
  const text = events
    .map((s, i) => `event: ${s}\nid: ${i + 1}\ndata: ${JSON.stringify(job(s))}\n\n`)
    .join(': keep-alive\n\n');
  return () => new Response(text, { headers: { 'content-type': 'text/event-stream' } });
}

describe('Retry-After', () => {
  it('reads delay-seconds and HTTP dates', () => {
    const now = Date.parse('2026-12-01T10:00:00Z');
    expect(parseRetryAfter('7')).toBe(7);
    expect(parseRetryAfter(' 0 ')).toBe(0);
    expect(parseRetryAfter('Tue, 01 Dec 2026 10:00:30 GMT', now)).toBe(30);
    expect(parseRetryAfter('Tue, 01 Dec 2026 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });

  it('replaces a shorter computed delay, and the delays grow to their cap', () => {
    const backoff = new Backoff({ initialDelayMs: 100, factor: 2, maxDelayMs: 500, jitter: 0 });
    expect([backoff.delay(), backoff.delay(), backoff.delay(), backoff.delay()]).toEqual([100, 200, 400, 500]);
    expect(backoff.delay(3)).toBe(3_000);
    const jittered = new Backoff({ initialDelayMs: 1_000, jitter: 0.2 }, () => 0);
    expect(jittered.delay()).toBe(800);
  });
});

describe('wait()', () => {
  it('polls until the job is final, waiting as long as a 429’s Retry-After asks', async () => {
    const { client, at } = scripted([
      () => json(job('queued')),
      () => problem(429, 'rate_limited', { 'retry-after': '1' }),
      () => json(job('running')),
      () => json(job('succeeded')),
    ]);
    const done = await client.wait('job_test', { initialDelayMs: 5 });
    expect(done.status).toBe('succeeded');
    expect(at).toHaveLength(4);
    // Timers may fire a hair early; the asked-for second is honoured, not the 5 ms backoff.
    expect((at[2] ?? 0) - (at[1] ?? 0)).toBeGreaterThanOrEqual(995);
  });

  it('gives up at once on a Retry-After past its deadline, and on answers not worth repeating', async () => {
    const busy = scripted([() => problem(503, 'redis_unavailable', { 'retry-after': '5' })]);
    const refused = await busy.client.wait('job_test', { timeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(isProblem(refused, 'redis_unavailable')).toBe(true);
    expect((refused as QuernProblemError).retryAfterSeconds).toBe(5);

    const gone = scripted([() => problem(404, 'job_not_found')]);
    await expect(gone.client.wait('job_test')).rejects.toSatisfy((e) => isProblem(e, 'job_not_found'));
  });

  it('ends with WaitTimeoutError holding the last state when the job outlasts timeoutMs', async () => {
    const { client } = scripted(Array.from({ length: 50 }, () => () => json(job('queued'))));
    const err = await client.wait('job_test', { timeoutMs: 50, initialDelayMs: 10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as WaitTimeoutError).job?.status).toBe('queued');
  });

  it('stops when its signal aborts', async () => {
    const { client } = scripted(Array.from({ length: 50 }, () => () => json(job('queued'))));
    const controller = new AbortController();
    const waiting = client.wait('job_test', { initialDelayMs: 10_000, signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
  });
});

describe('events()', () => {
  it('reopens a stream that closed before the final state, without giving a state twice', async () => {
    const { client, at } = scripted([sse('queued'), sse('queued', 'running'), sse('running', 'succeeded')]);
    const seen: string[] = [];
    for await (const e of client.events('job_test')) seen.push(`${e.event}:${e.id}`);
    expect(seen).toEqual(['queued:1', 'running:2', 'succeeded:2']);
    expect(at).toHaveLength(3);
  });

  it('reopens a stream cut mid-way, but not one its caller aborted', async () => {
    const cut = () =>
      new Response(
        new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode(`event: queued\ndata: ${JSON.stringify(job('queued'))}\n\n`));
            controller.error(new TypeError('terminated'));
          },
        }),
        { headers: { 'content-type': 'text/event-stream' } },
      );
    const { client } = scripted([cut, sse('queued', 'succeeded')]);
    const seen: string[] = [];
    for await (const e of client.events('job_test')) seen.push(e.event);
    expect(seen).toEqual(['queued', 'succeeded']);

    const controller = new AbortController();
    const aborted = scripted([sse('queued')]);
    const reading = (async () => {
      for await (const e of aborted.client.events('job_test', { signal: controller.signal })) {
        seen.push(e.event);
        controller.abort(new Error('stop'));
      }
    })();
    await expect(reading).rejects.toThrow('stop');
    expect(aborted.at).toHaveLength(1);
  });

  it('gives up after `reconnects` streams in a row that bring nothing new', async () => {
    const { client } = scripted([sse('queued'), sse('queued'), sse('queued')]);
    const seen: string[] = [];
    const reading = (async () => {
      for await (const e of client.events('job_test', { reconnects: 1 })) seen.push(e.event);
    })();
    await expect(reading).rejects.toThrow(/kept closing/);
    expect(seen).toEqual(['queued']);
  });
});

describe('QuernProblemError', () => {
  it('keeps the status of an answer that is not problem+json (a proxy’s), without a code', async () => {
    const { client } = scripted([() => new Response('<html>bad gateway</html>', { status: 502 })]);
    const err = (await client.getJob('job_test').catch((e: unknown) => e)) as QuernProblemError;
    expect(err).toBeInstanceOf(QuernProblemError);
    expect(err.status).toBe(502);
    expect(err.code).toBeUndefined();
    expect(err.problem).toBeUndefined();
  });
});
