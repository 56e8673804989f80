import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { ModelNameParam, ModelVersionSchema, VersionParam } from './model-versions-schemas';

export const unloadVersionRoute = createRoute({
  operationId: 'unloadModelVersion',
  method: 'post',
  path: '/v1/admin/models/{name}/versions/{version}/unload',
  tags: ['Admin'],
  summary: 'Unload a model version',
  description:
    'The version takes no new jobs at once; workers keep it until every job already queued for it has run (or ' +
    'passed its deadline), then release it. The default version cannot be unloaded: make another the default first.',
  security: PROTECTED,
  middleware: [audited('model_version.unload'), requireAuth('admin')] as const,
  request: { params: z.object({ name: ModelNameParam, version: VersionParam }) },
  responses: {
    200: { description: 'Draining.', content: { 'application/json': { schema: ModelVersionSchema } } },
    ...problems(401, 403, 404, 422, 429, 503),
  },
});

export function registerUnloadVersion(app: OpenAPIHono<AppEnv>): void {
  app.openapi(unloadVersionRoute, async (c) => {
    const { name, version } = c.req.valid('param');
    return c.json(await c.get('services').modelAdmin.unload(name, version), 200);
  });
}
