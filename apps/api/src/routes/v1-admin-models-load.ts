import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { ModelNameParam, ModelVersionSchema, VersionParam } from './model-versions-schemas';

export const LoadVersionRequestSchema = z
  .object({
    mode: z.enum(['live', 'shadow']).default('live').openapi({
      description:
        '`live`: pinnable and routable by weight; `shadow`: gets a sample of live rows after they are answered.',
    }),
    weight: z.number().min(0).max(100).default(0).openapi({
      description: 'Live: percent of unpinned requests it takes at once (a canary); 0: pinned requests only.',
    }),
    sample: z
      .number()
      .min(0)
      .max(1)
      .default(0.1)
      .openapi({ description: 'Shadow: fraction of live jobs it also runs.' }),
  })
  .openapi('LoadVersionRequest', { example: { mode: 'live', weight: 10 } });

export const loadVersionRoute = createRoute({
  operationId: 'loadModelVersion',
  method: 'post',
  path: '/v1/admin/models/{name}/versions/{version}/load',
  tags: ['Admin'],
  summary: 'Load a model version',
  description:
    'Every worker checks the file’s SHA-256, opens the graph, checks its input and output against the manifest ' +
    'and its memory budget, and warms it in each inference thread before it takes a job; no restart. The call ' +
    'answers once every live worker has it, or `422` with the reason when one refused it: then nothing changed ' +
    'and the running versions serve on.',
  security: PROTECTED,
  middleware: [audited('model_version.load'), requireAuth('admin')] as const,
  request: {
    params: z.object({ name: ModelNameParam, version: VersionParam }),
    body: { required: false, content: { 'application/json': { schema: LoadVersionRequestSchema } } },
  },
  responses: {
    200: {
      description: 'Loaded.',
      content: {
        'application/json': {
          schema: z
            .object({
              version: ModelVersionSchema,
              workers_ready: z.number().int().openapi({ description: 'Workers that loaded and warmed it.' }),
            })
            .openapi('LoadVersionResult', {
              example: {
                version: { name: 'cars-mpg', version: '2.0.0', state: 'live', default: false, weight: 10 },
                workers_ready: 3,
              },
            }),
        },
      },
    },
    ...problems(400, 401, 403, 404, 415, 422, 429, 503),
  },
});

export function registerLoadVersion(app: OpenAPIHono<AppEnv>): void {
  app.openapi(loadVersionRoute, async (c) => {
    const { name, version } = c.req.valid('param');
    const body = c.req.valid('json') ?? { mode: 'live' as const, weight: 0, sample: 0.1 };
    const outcome = await c.get('services').modelAdmin.load(name, version, body);
    return c.json({ version: outcome.view, workers_ready: outcome.workers_ready }, 200);
  });
}
