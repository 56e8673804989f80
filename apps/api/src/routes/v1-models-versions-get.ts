import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { problems } from '../schemas';
import { ModelNameParam, ModelVersionSchema, VersionParam } from './model-versions-schemas';

export const getModelVersionRoute = createRoute({
  operationId: 'getModelVersion',
  security: [],
  method: 'get',
  path: '/v1/models/{name}/versions/{version}',
  tags: ['Models'],
  summary: 'Get a model version',
  description:
    'Its state and traffic share; for a shadow version, how far its outputs were from the default version’s on ' +
    'the rows it was sent (maximum and mean absolute difference), the check to make before promoting it.',
  request: { params: z.object({ name: ModelNameParam, version: VersionParam }) },
  responses: {
    200: { description: 'The version.', content: { 'application/json': { schema: ModelVersionSchema } } },
    ...problems(404, 422, 503),
  },
});

export function registerGetModelVersion(app: OpenAPIHono<AppEnv>): void {
  app.openapi(getModelVersionRoute, async (c) => {
    const { name, version } = c.req.valid('param');
    return c.json(await c.get('services').modelAdmin.version(name, version), 200);
  });
}
