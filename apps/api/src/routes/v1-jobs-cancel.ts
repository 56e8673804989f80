import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { JobSchema, PROTECTED, problems } from '../schemas';
import { JobIdParamSchema } from './v1-jobs-get';

/** `DELETE /v1/jobs/{id}`, and `/jobs/{id}`, the path the service was specified with (not deprecated). */
const route = (prefix: '/v1' | '') =>
  createRoute({
    operationId: prefix ? 'cancelJob' : 'cancelJobUnversioned',
    method: 'delete',
    path: `${prefix}/jobs/{id}`,
    tags: ['Jobs'],
    summary: prefix ? 'Cancel a job' : 'Cancel a job (unversioned path)',
    description:
      'A queued job is removed at once and becomes `canceled` (200). A job a worker already holds is ' +
      'canceled if its batch has not started (200, `canceled`); if the batch had started it completes, and ' +
      'the answer is 409 `job_already_started`. A finished job gives 409 `job_finished`. If the worker does ' +
      'not answer within a moment the request is accepted (202) and the job resource tells the outcome.',
    security: PROTECTED,
    middleware: [requireAuth('jobs:cancel')] as const,
    request: { params: JobIdParamSchema },
    responses: {
      200: { description: 'Canceled.', content: { 'application/json': { schema: JobSchema } } },
      202: {
        description: 'Cancel requested; the worker decides.',
        content: { 'application/json': { schema: JobSchema } },
      },
      ...problems(401, 403, 404, 409, 422, 429, 503),
    },
  });

export const cancelJobRoute = route('/v1');
export const cancelJobUnversionedRoute = route('');

export function registerCancelJob(app: OpenAPIHono<AppEnv>): void {
  for (const r of [cancelJobRoute, cancelJobUnversionedRoute]) {
    app.openapi(r, async (c) => {
      const { jobs, waiter, config } = c.get('services');
      const id = c.req.valid('param').id;
      const found = await jobs.find(id, c.get('principal').id);
      if (!found) throw new QuernError('job_not_found', 'no job with this id');
      // Listen before asking, so the worker's answer (the job failing as canceled, or completing) is not missed.
      const handle = waiter.register(id, found.data.model);
      const outcome = await jobs.cancel(found).catch((err: unknown) => {
        handle.cancel();
        throw err;
      });
      if (outcome.kind !== 'requested') handle.cancel();
      if (outcome.kind === 'canceled') return c.json(outcome.view, 200);
      if (outcome.kind === 'finished') {
        throw new QuernError('job_finished', `the job already ended as ${outcome.view.status}`, {
          extra: { job_id: outcome.view.id },
        });
      }
      const result = await handle.wait(config.QUERN_CANCEL_WAIT_MS);
      const view = await jobs.view((await jobs.find(id, c.get('principal').id)) ?? found);
      if (view.status === 'canceled') return c.json(view, 200);
      if (result.kind === 'completed' || view.status === 'succeeded') {
        throw new QuernError('job_already_started', 'the job’s batch had already started; it completed', {
          extra: { job_id: view.id },
        });
      }
      return c.json(view, 202);
    });
  }
}
