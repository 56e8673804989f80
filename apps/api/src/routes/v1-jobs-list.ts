import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { JOB_STATUSES } from '@quern/shared';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { JobSchema, PROTECTED, problems } from '../schemas';

export const ListJobsQuerySchema = z.object({
  status: z
    .enum(JOB_STATUSES)
    .optional()
    .openapi({ param: { name: 'status', in: 'query' }, example: 'failed' }),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(100)
    .default(20)
    .openapi({ param: { name: 'limit', in: 'query' }, example: 20 }),
  cursor: z
    .string()
    .max(128)
    .regex(/^\d+~job_[0-9A-Za-z]+$/, 'a next_cursor from an earlier page')
    .optional()
    .openapi({ param: { name: 'cursor', in: 'query' }, description: 'The `next_cursor` of the previous page.' }),
});

export const JobListSchema = z
  .object({
    data: z.array(JobSchema),
    next_cursor: z.string().nullable().openapi({ description: 'Pass as `cursor` for the next page; null at the end.' }),
  })
  .openapi('JobList', {
    example: { data: [], next_cursor: null },
  });

export const listJobsRoute = createRoute({
  operationId: 'listJobs',
  method: 'get',
  path: '/v1/jobs',
  tags: ['Jobs'],
  summary: 'List your recent jobs',
  description:
    'Your own jobs, newest first, optionally of one `status` (`GET /v1/jobs?status=failed`). A page reads at most ' +
    '4 × `limit` of your recent jobs, so a rare status may give a short (even empty) page with a `next_cursor`: ' +
    'follow it until it is null. The most recent 10,000 jobs are listed, for as long as failed jobs are kept.',
  security: PROTECTED,
  middleware: [requireAuth('jobs:read')] as const,
  request: { query: ListJobsQuerySchema },
  responses: {
    200: { description: 'A page of jobs.', content: { 'application/json': { schema: JobListSchema } } },
    ...problems(401, 403, 422, 429, 503),
  },
});

export function registerListJobs(app: OpenAPIHono<AppEnv>): void {
  app.openapi(listJobsRoute, async (c) => {
    const query = c.req.valid('query');
    const page = await c.get('services').jobs.listOwn(c.get('principal').id, query);
    return c.json(page, 200);
  });
}
