import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { JobSchema, PROTECTED, problems } from '../schemas';

export const JobIdParamSchema = z.object({
  id: z
    .string()
    .max(64)
    .openapi({ param: { name: 'id', in: 'path' }, example: 'job_8Zt0gkqNqk3v1sPzJmUoQa' }),
});

export const getJobRoute = createRoute({
  operationId: 'getJob',
  method: 'get',
  path: '/v1/jobs/{id}',
  tags: ['Jobs'],
  summary: 'Get a job',
  description: 'The job resource with its status, output or error, and timings. Only the job’s owner sees it.',
  security: PROTECTED,
  middleware: [requireAuth('jobs:read')] as const,
  request: { params: JobIdParamSchema },
  responses: {
    200: { description: 'The job.', content: { 'application/json': { schema: JobSchema } } },
    ...problems(401, 403, 404, 429, 503),
  },
});

export function registerGetJob(app: OpenAPIHono<AppEnv>): void {
  app.openapi(getJobRoute, async (c) => {
    const { jobs } = c.get('services');
    const found = await jobs.find(c.req.valid('param').id, c.get('principal').id);
    if (!found) throw new QuernError('job_not_found', 'no job with this id');
    return c.json(await jobs.view(found), 200);
  });
}
