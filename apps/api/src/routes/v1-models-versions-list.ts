import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { problems } from '../schemas';
import { ModelNameParam, ModelVersionListSchema } from './model-versions-schemas';

export const listModelVersionsRoute = createRoute({
  operationId: 'listModelVersions',
  security: [],
  method: 'get',
  path: '/v1/models/{name}/versions',
  tags: ['Models'],
  summary: 'List a model’s versions',
  description:
    'Every version the manifest holds, whether it is loaded, and the share of unpinned requests each gets. ' +
    'Pin one with `"model": "name@version"`.',
  request: { params: z.object({ name: ModelNameParam }) },
  responses: {
    200: { description: 'The versions.', content: { 'application/json': { schema: ModelVersionListSchema } } },
    ...problems(404, 422, 503),
  },
});

export function registerListModelVersions(app: OpenAPIHono<AppEnv>): void {
  app.openapi(listModelVersionsRoute, async (c) => {
    const data = await c.get('services').modelAdmin.versions(c.req.valid('param').name);
    return c.json({ data }, 200);
  });
}
