import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { API_VERSION } from '../version';

/**
 * The tutorial's `HealthResponse` (`{status: "healthy", model_loaded, version}`), which its
 * clients and tests read. It says nothing of Redis or the workers, on purpose: a liveness probe
 * that failed with Redis would restart every API process during an outage. `/ready` tells those.
 */
export const HealthSchema = z
  .object({
    status: z.literal('healthy'),
    model_loaded: z.boolean().openapi({
      description:
        'True when this process holds the model manifest and its default model. The API never loads the ' +
        '.onnx files (the workers do): whether a worker is up is `/ready`.',
    }),
    version: z.string().openapi({ description: 'The API’s version (`info.version` of the OpenAPI document).' }),
  })
  .openapi('Health', { example: { status: 'healthy', model_loaded: true, version: API_VERSION } });

export const healthRoute = createRoute({
  operationId: 'getHealth',
  security: [],
  method: 'get',
  path: '/health',
  tags: ['Operations'],
  summary: 'Liveness',
  description: 'Answers 200 while the process runs, whatever the state of Redis: restart only if this fails.',
  responses: {
    200: { description: 'Alive.', content: { 'application/json': { schema: HealthSchema } } },
  },
});

export function registerHealth(app: OpenAPIHono<AppEnv>): void {
  app.openapi(healthRoute, (c) => {
    const { models } = c.get('services');
    const loaded = models.find(models.defaultName) !== undefined;
    return c.json({ status: 'healthy' as const, model_loaded: loaded, version: API_VERSION }, 200);
  });
}
