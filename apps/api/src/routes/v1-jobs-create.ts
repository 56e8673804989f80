import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { FeaturesSchema, JobSchema, ModelNameSchema, PROTECTED, problems } from '../schemas';
import { checkRows } from './inference-input';

export const CreateJobRequestSchema = z
  .object({ model: ModelNameSchema, features: FeaturesSchema })
  .openapi('CreateJobRequest');

export const createJobRoute = createRoute({
  method: 'post',
  path: '/v1/jobs',
  tags: ['Jobs'],
  summary: 'Submit an inference job',
  description: 'Enqueues one row and answers at once with the job; poll `Location` for the result.',
  security: PROTECTED,
  middleware: [requireAuth('predict')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: CreateJobRequestSchema } } } },
  responses: {
    202: {
      description: 'Accepted: the job is queued.',
      headers: z.object({ location: z.string().openapi({ example: '/v1/jobs/job_8Zt0gkqNqk3v1sPzJmUoQa' }) }),
      content: { 'application/json': { schema: JobSchema } },
    },
    ...problems(400, 401, 403, 404, 413, 415, 422, 429, 503),
  },
});

export function registerCreateJob(app: OpenAPIHono<AppEnv>): void {
  app.openapi(createJobRoute, async (c) => {
    const { models, jobs, metrics } = c.get('services');
    const body = c.req.valid('json');
    const model = models.resolve(body.model);
    checkRows(model, [body.features], () => 'features');
    const { id, data } = await jobs.submit({
      model,
      rows: [body.features],
      mode: 'async',
      owner: c.get('principal').id,
      requestId: c.get('requestId'),
    });
    metrics.jobsSubmitted.labels(model.name, 'async').inc();
    const created = new Date(data.created_at).toISOString();
    return c.json(
      {
        id,
        status: 'queued' as const,
        model: model.name,
        model_version: model.version,
        created_at: created,
        started_at: null,
        completed_at: null,
        output: null,
        error: null,
        timings: null,
      },
      202,
      { location: `/v1/jobs/${id}` },
    );
  });
}
