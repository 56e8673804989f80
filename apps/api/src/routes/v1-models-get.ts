import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { ModelSchema, problems } from '../schemas';
import { MODEL_EXAMPLE, modelView } from './v1-models-list';

export const getModelRoute = createRoute({
  operationId: 'getModel',
  security: [],
  method: 'get',
  path: '/v1/models/{name}',
  tags: ['Models'],
  summary: 'Get a model',
  request: {
    params: z.object({
      name: z
        .string()
        .max(63)
        .openapi({ param: { name: 'name', in: 'path' }, example: 'cars-mpg' }),
    }),
  },
  responses: {
    200: {
      description: 'The model.',
      content: { 'application/json': { schema: ModelSchema, example: MODEL_EXAMPLE } },
    },
    ...problems(404, 422),
  },
});

export function registerGetModel(app: OpenAPIHono<AppEnv>): void {
  app.openapi(getModelRoute, (c) => {
    const { models } = c.get('services');
    const { name } = c.req.valid('param');
    // The default version (canary weights pick per caller, not for this page); 404 for an unknown name.
    const model = models.find(name) ?? models.resolve(name);
    return c.json(modelView(model, models.defaultName), 200);
  });
}
