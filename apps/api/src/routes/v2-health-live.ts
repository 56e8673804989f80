import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { OIP_TAG } from './oip-common';

export const OipLiveSchema = z.object({ live: z.boolean() }).openapi('OipLive', { example: { live: true } });

export const oipLiveRoute = createRoute({
  operationId: 'oipServerLive',
  security: [],
  method: 'get',
  path: '/v2/health/live',
  tags: [OIP_TAG],
  summary: 'Server live (OIP v2)',
  description: 'Answers 200 while the process runs, whatever the state of Redis, as `/health` does.',
  responses: {
    200: { description: 'Live.', content: { 'application/json': { schema: OipLiveSchema } } },
  },
});

export function registerOipLive(app: OpenAPIHono<AppEnv>): void {
  app.openapi(oipLiveRoute, (c) => c.json({ live: true }, 200));
}
