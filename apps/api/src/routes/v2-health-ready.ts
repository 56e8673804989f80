import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { OIP_TAG } from './oip-common';

export const OipReadySchema = z.object({ ready: z.boolean() }).openapi('OipReady', { example: { ready: true } });

export const oipReadyRoute = createRoute({
  operationId: 'oipServerReady',
  security: [],
  method: 'get',
  path: '/v2/health/ready',
  tags: [OIP_TAG],
  summary: 'Server ready (OIP v2)',
  description: 'Ready, as `/ready`, when Redis answers and at least one worker’s heartbeat was seen recently.',
  responses: {
    200: { description: 'Ready.', content: { 'application/json': { schema: OipReadySchema } } },
    503: { description: 'Not ready.', content: { 'application/json': { schema: OipReadySchema } } },
  },
});

export function registerOipReady(app: OpenAPIHono<AppEnv>): void {
  app.openapi(oipReadyRoute, async (c) => {
    const { redis, workers } = await c.get('services').readiness();
    return redis && workers > 0 ? c.json({ ready: true }, 200) : c.json({ ready: false }, 503);
  });
}
