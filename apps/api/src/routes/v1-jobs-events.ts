import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { type JobView, QuernError, TERMINAL_STATUSES } from '@quern/shared';
import { streamSSE } from 'hono/streaming';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { JobStatusSchema, PROTECTED, problems } from '../schemas';
import { JobIdParamSchema } from './v1-jobs-get';

/**
 * One event of the stream, as OpenAPI 3.1 can say it: the fields of a server-sent event, its
 * `data` the job resource as JSON (`contentMediaType` and `contentSchema`, JSON Schema 2020-12),
 * so a client or a fuzzer can check each event, not just the text of the stream.
 */
export const JobEventSchema = z
  .object({
    event: JobStatusSchema.openapi({ description: 'The state the job reached.' }),
    data: z.string().openapi({
      description: 'The job resource at that moment, as JSON.',
      contentMediaType: 'application/json',
      contentSchema: { $ref: '#/components/schemas/Job' },
    } as Record<string, unknown>),
    id: z.string().openapi({ description: 'The event’s number in this stream, from 1.' }),
  })
  .openapi('JobEvent', {
    description: 'A server-sent event of `GET /v1/jobs/{id}/events` (keep-alive comments aside).',
    example: {
      event: 'queued',
      data: JSON.stringify({
        id: 'job_8Zt0gkqNqk3v1sPzJmUoQa',
        status: 'queued',
        model: 'cars-mpg',
        model_version: '1.0.0',
        created_at: '2026-11-30T10:00:00.000Z',
        started_at: null,
        completed_at: null,
        output: null,
        error: null,
        timings: null,
        expires_at: '2026-11-30T10:10:00.000Z',
        priority: 1,
        webhook: null,
      }),
      id: '1',
    },
  });

/** `/v1/jobs/{id}/events`, and `/jobs/{id}/events` beside `/jobs/{id}` (not deprecated). */
const route = (prefix: '/v1' | '') =>
  createRoute({
    operationId: prefix ? 'streamJobEvents' : 'streamJobEventsUnversioned',
    method: 'get',
    path: `${prefix}/jobs/{id}/events`,
    tags: ['Jobs'],
    summary: prefix
      ? 'Stream a job’s state changes (server-sent events)'
      : 'Stream a job’s state changes (unversioned path)',
    description:
      'A `text/event-stream` with one event per state the job passes through: `queued` (again whenever its `queue` ' +
      'standing changes, read about once a second), `running` (a worker ' +
      'has taken the job; `started_at` is that moment, unchanged in later events), then the ' +
      'final one (`succeeded`, `failed`, `canceled` or `expired`), each with the job resource as `data`; the ' +
      'stream closes after the final event. A job that already finished gives its final event at once. ' +
      'Comment lines (`: keep-alive`) keep idle connections open.',
    security: PROTECTED,
    middleware: [requireAuth('jobs:read')] as const,
    request: { params: JobIdParamSchema },
    responses: {
      200: {
        description: 'The event stream.',
        content: {
          'text/event-stream': { schema: JobEventSchema },
        },
      },
      ...problems(401, 403, 404, 422, 429, 503),
    },
  });

export const jobEventsRoute = route('/v1');
export const jobEventsUnversionedRoute = route('');

export function registerJobEvents(app: OpenAPIHono<AppEnv>): void {
  for (const r of [jobEventsRoute, jobEventsUnversionedRoute]) {
    app.openapi(r, async (c) => {
      const { jobs, waiter, config } = c.get('services');
      const id = c.req.valid('param').id;
      const owner = c.get('principal').id;
      const first = await jobs.find(id, owner);
      if (!first) throw new QuernError('job_not_found', 'no job with this id');
      c.header('cache-control', 'no-store');
      c.header('x-accel-buffering', 'no');

      return streamSSE(c, async (stream) => {
        let last: JobView['status'] | undefined;
        // A queued job's place: a new `queued` event whenever it changes.
        let place: string | undefined;
        let seq = 0;
        let wake: (() => void) | undefined;
        // Changes are only a cue to read the job again: the events sent are always read state.
        const unsubscribe = waiter.subscribe(id, () => wake?.());
        const send = async (): Promise<boolean> => {
          const found = await jobs.find(id, owner);
          if (!found) return true;
          const view = await jobs.view(found);
          const where = view.status === 'queued' ? JSON.stringify(view.queue ?? null) : undefined;
          if (view.status === 'queued' && last === 'queued' && where !== place) {
            place = where;
            await stream.writeSSE({ event: 'queued', data: JSON.stringify(view), id: String(++seq) });
            return false;
          }
          place = where;
          if (view.status !== last) {
            // A job that ran between two reads still shows every step: queued → running → final.
            if (last === 'queued' && TERMINAL_STATUSES.includes(view.status) && view.started_at) {
              const running = {
                ...view,
                status: 'running',
                completed_at: null,
                output: null,
                error: null,
                timings: null,
              };
              await stream.writeSSE({ event: 'running', data: JSON.stringify(running), id: String(++seq) });
            }
            last = view.status;
            await stream.writeSSE({ event: view.status, data: JSON.stringify(view), id: String(++seq) });
          }
          return TERMINAL_STATUSES.includes(view.status);
        };
        try {
          let done = await send();
          let lastWrite = Date.now();
          const tick = Math.min(1_000, config.QUERN_SSE_KEEPALIVE_MS);
          // A stopping API process ends its streams; the client reconnects to another one.
          while (!done && !stream.aborted && !waiter.draining) {
            // Wake on a QueueEvents change of this job, or poll after a tick as a safety net.
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, tick);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wake = undefined;
            if (stream.aborted) break;
            const before = last;
            done = await send();
            if (last !== before) lastWrite = Date.now();
            else if (!done && Date.now() - lastWrite >= config.QUERN_SSE_KEEPALIVE_MS) {
              lastWrite = Date.now();
              await stream.write(': keep-alive\n\n');
            }
          }
        } finally {
          unsubscribe();
        }
      });
    });
  }
}
