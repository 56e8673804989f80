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

/** `/v1/jobs/{id}`, and `/jobs/{id}`, the path the service was specified with (not deprecated). */
const route = (prefix: '/v1' | '') =>
  createRoute({
    operationId: prefix ? 'getJob' : 'getJobUnversioned',
    method: 'get',
    path: `${prefix}/jobs/{id}`,
    tags: ['Jobs'],
    summary: prefix ? 'Get a job' : 'Get a job (unversioned path)',
    description: 'The job resource with its status, output or error, and timings. Only the job’s owner sees it.',
    security: PROTECTED,
    middleware: [requireAuth('jobs:read')] as const,
    request: { params: JobIdParamSchema },
    responses: {
      200: { description: 'The job.', content: { 'application/json': { schema: JobSchema } } },
      ...problems(401, 403, 404, 422, 429, 503),
    },
  });

export const getJobRoute = route('/v1');
export const getJobUnversionedRoute = route('');

export function registerGetJob(app: OpenAPIHono<AppEnv>): void {
  for (const r of [getJobRoute, getJobUnversionedRoute]) {
    app.openapi(r, async (c) => {
      const { jobs } = c.get('services');
      const found = await jobs.find(c.req.valid('param').id, c.get('principal').id);
      if (!found) throw new QuernError('job_not_found', 'no job with this id');
      return c.json(await jobs.view(found), 200);
    });
  }
}
