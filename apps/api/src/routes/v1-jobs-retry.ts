import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { JobSchema, PROTECTED, problems } from '../schemas';
import { JobIdParamSchema } from './v1-jobs-get';

export const retryJobRoute = createRoute({
  operationId: 'retryJob',
  method: 'post',
  path: '/v1/jobs/{id}/retry',
  tags: ['Jobs'],
  summary: 'Retry a failed, expired or canceled job',
  description:
    'Runs the job again under the same id, with the same input, webhook and deadline length (counted from now), ' +
    'through the same caps as a new job (`503 queue_full`, `429 concurrency_limited`). Its webhook events start a ' +
    'new cycle. Only the job’s owner can retry it; a job that is queued, running or succeeded gives ' +
    '`409 job_not_retryable`.',
  security: PROTECTED,
  middleware: [requireAuth('predict')] as const,
  request: { params: JobIdParamSchema },
  responses: {
    202: {
      description: 'Queued again.',
      headers: { location: { schema: { type: 'string' }, example: '/v1/jobs/job_8Zt0gkqNqk3v1sPzJmUoQa' } },
      content: { 'application/json': { schema: JobSchema } },
    },
    ...problems(401, 403, 404, 409, 422, 429, 503),
  },
});

export function registerRetryJob(app: OpenAPIHono<AppEnv>): void {
  app.openapi(retryJobRoute, async (c) => {
    const { jobs, metrics } = c.get('services');
    const principal = c.get('principal');
    const found = await jobs.find(c.req.valid('param').id, principal.id);
    if (!found) throw new QuernError('job_not_found', 'no job with this id');
    const view = await jobs.retry(found, principal, c.get('requestId'));
    metrics.jobsSubmitted.labels(found.data.model, 'async').inc();
    return c.json(view, 202, { location: `/v1/jobs/${view.id}` });
  });
}
