import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';

const ReadySchema = z
  .object({
    status: z.enum(['ready', 'not_ready']),
    redis: z.enum(['ok', 'unreachable']),
    workers: z.number().int().openapi({ description: 'Workers whose heartbeat was seen within the TTL.' }),
  })
  .openapi('Readiness', { example: { status: 'ready', redis: 'ok', workers: 2 } });

export const readyRoute = createRoute({
  operationId: 'getReadiness',
  security: [],
  method: 'get',
  path: '/ready',
  tags: ['Operations'],
  summary: 'Readiness',
  description: 'Ready when Redis answers and at least one worker’s heartbeat was seen recently.',
  responses: {
    200: { description: 'Ready.', content: { 'application/json': { schema: ReadySchema } } },
    503: { description: 'Not ready.', content: { 'application/json': { schema: ReadySchema } } },
  },
});

export function registerReady(app: OpenAPIHono<AppEnv>): void {
  app.openapi(readyRoute, async (c) => {
    const { redis, workers } = await c.get('services').readiness();
    const body = { redis: redis ? ('ok' as const) : ('unreachable' as const), workers };
    return redis && workers > 0
      ? c.json({ status: 'ready' as const, ...body }, 200)
      : c.json({ status: 'not_ready' as const, ...body }, 503);
  });
}
