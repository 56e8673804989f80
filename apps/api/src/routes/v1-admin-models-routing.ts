import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { ModelNameParam, ModelVersionListSchema } from './model-versions-schemas';

export const RoutingRequestSchema = z
  .object({
    default_version: z
      .string()
      .max(64)
      .optional()
      .openapi({ description: 'Promote: this live version becomes the default and takes what the canaries leave.' }),
    weights: z
      .record(z.string().max(64), z.number().min(0).max(100))
      .optional()
      .openapi({ description: 'Canary weights (percent of unpinned requests) of live versions; 0 rolls one back.' }),
  })
  .openapi('ModelRoutingRequest', { example: { weights: { '2.0.0': 10 } } });

export const setRoutingRoute = createRoute({
  operationId: 'setModelRouting',
  method: 'post',
  path: '/v1/admin/models/{name}/routing',
  tags: ['Admin'],
  summary: 'Split traffic between versions, promote or roll back',
  description:
    'Unpinned requests go to a live version by weight, sticky per API key (one caller sees one version while the ' +
    'weights stay). `{"weights": {"2.0.0": 10}}` sends 10% to 2.0.0; `{"default_version": "2.0.0"}` promotes ' +
    'it; `{"weights": {"2.0.0": 0}}` rolls it back. Every API process follows at once.',
  security: PROTECTED,
  middleware: [audited('model_routing.set'), requireAuth('admin')] as const,
  request: {
    params: z.object({ name: ModelNameParam }),
    // Every field is optional, so no body is the empty change (the routing as it is), not an error.
    body: { required: false, content: { 'application/json': { schema: RoutingRequestSchema } } },
  },
  responses: {
    200: { description: 'The versions now.', content: { 'application/json': { schema: ModelVersionListSchema } } },
    ...problems(400, 401, 403, 404, 415, 422, 429, 503),
  },
});

export function registerSetRouting(app: OpenAPIHono<AppEnv>): void {
  app.openapi(setRoutingRoute, async (c) => {
    const data = await c.get('services').modelAdmin.route(c.req.valid('param').name, c.req.valid('json'));
    return c.json({ data }, 200);
  });
}
