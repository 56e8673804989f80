import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { ModelEntry } from '@quern/shared';
import type { AppEnv } from '../env';
import { ModelSchema } from '../schemas';

/** The default model as `GET /v1/models/{name}` shows it, for the OpenAPI document's examples. */
export const MODEL_EXAMPLE = {
  name: 'cars-mpg',
  version: '1.0.0',
  description: 'Predicts fuel economy (miles per US gallon) of a 1970–1982 car.',
  input: {
    name: 'features',
    features: 6,
    feature_names: ['cylinders', 'displacement', 'horsepower', 'weight', 'acceleration', 'year'],
  },
  output: { name: 'mpg', shape: [1] },
  batching: { max_batch_size: 256, max_delay_ms: 0 },
  default: true,
};

/** A manifest entry as the API shows it (the file path and hash stay internal). */
export function modelView(model: ModelEntry, defaultName: string) {
  return {
    name: model.name,
    version: model.version,
    description: model.description,
    input: model.input,
    output: model.output,
    batching: model.batching,
    default: model.name === defaultName,
  };
}

export const listModelsRoute = createRoute({
  operationId: 'listModels',
  security: [],
  method: 'get',
  path: '/v1/models',
  tags: ['Models'],
  summary: 'List models',
  description: 'Every model this service serves, with its input and output spec and batching settings.',
  responses: {
    200: {
      description: 'The models.',
      content: {
        'application/json': {
          schema: z.object({ data: z.array(ModelSchema) }).openapi('ModelList', { example: { data: [MODEL_EXAMPLE] } }),
        },
      },
    },
  },
});

export function registerListModels(app: OpenAPIHono<AppEnv>): void {
  app.openapi(listModelsRoute, (c) => {
    const { models } = c.get('services');
    return c.json({ data: models.list().map((m) => modelView(m, models.defaultName)) }, 200);
  });
}
