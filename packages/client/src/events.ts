import { EventSourceParserStream } from 'eventsource-parser/stream';
import type { Client } from 'openapi-fetch';
import { Backoff, sleep } from './backoff';
import { QuernProblemError } from './problem';
import type { paths } from './schema';
import { isFinal, type Job, type JobStatus } from './types';

/** One state change of a job, from its event stream. */
export interface JobEvent {
  /** The state the job entered: `queued`, `running`, then the final one. */
  event: JobStatus;
  /** The event's `id` field on its stream (numbers from 1 on each connection). */
  id: string | undefined;
  /** The job resource in that state. */
  job: Job;
}

/**
 * Reads `GET /v1/jobs/{id}/events` with eventsource-parser until the final state. A stream that
 * ends or is cut before then is opened again. The server sends the job's current state first on
 * every connection, so after a reconnect the state the caller already has is skipped.
 */
export async function* jobEvents(
  api: Client<paths>,
  id: string,
  options: { signal?: AbortSignal; reconnects?: number },
): AsyncGenerator<JobEvent> {
  const backoff = new Backoff({ initialDelayMs: 250, maxDelayMs: 5_000, factor: 2 });
  const reconnects = options.reconnects ?? 3;
  let last: JobStatus | undefined;
  let fruitless = 0;
  for (;;) {
    const { data, error, response } = await api.GET('/v1/jobs/{id}/events', {
      params: { path: { id } },
      headers: { accept: 'text/event-stream' },
      parseAs: 'stream',
      signal: options.signal,
    });
    if (error !== undefined || !data) throw new QuernProblemError(response, error);
    const reader = data.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
    let progressed = false;
    try {
      for (;;) {
        let next: Awaited<ReturnType<typeof reader.read>>;
        try {
          next = await reader.read();
        } catch (err) {
          // A connection cut mid-stream (a process killed, a proxy timing out) counts as closed;
          // the caller's own abort does not.
          if (options.signal?.aborted) throw err;
          break;
        }
        const { done, value } = next;
        if (done) break;
        // Comments (`: keep-alive`) never reach here; every event the server sends names a state.
        if (!value.event) continue;
        const job = JSON.parse(value.data) as Job;
        if (job.status === last) continue;
        last = job.status;
        progressed = true;
        yield { event: job.status, id: value.id, job };
        if (isFinal(job.status)) return;
      }
    } finally {
      // Also when the caller stops iterating early: closes the connection.
      await reader.cancel().catch(() => undefined);
    }
    fruitless = progressed ? 0 : fruitless + 1;
    if (fruitless > reconnects) {
      throw new Error(`the event stream of job ${id} kept closing before the job finished`);
    }
    await sleep(backoff.delay(), options.signal);
  }
}
