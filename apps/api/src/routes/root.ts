import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';

export const rootRoute = createRoute({
  operationId: 'getIndex',
  security: [],
  method: 'get',
  path: '/',
  tags: ['Operations'],
  summary: 'Service index',
  responses: {
    200: {
      description: 'Where things are.',
      content: {
        'application/json': {
          schema: z
            .object({ service: z.string(), docs: z.string(), openapi: z.string(), models: z.string() })
            .openapi('ServiceIndex', {
              example: { service: 'quern', docs: '/docs', openapi: '/openapi.json', models: '/v1/models' },
            }),
        },
      },
    },
  },
});

export function registerRoot(app: OpenAPIHono<AppEnv>): void {
  app.openapi(rootRoute, (c) =>
    c.json({ service: 'quern', docs: '/docs', openapi: '/openapi.json', models: '/v1/models' }, 200),
  );
}
