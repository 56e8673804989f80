import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { UsageQuerySchema, UsageSchema, usageView } from './usage-schemas';

export const usageRoute = createRoute({
  operationId: 'getUsage',
  method: 'get',
  path: '/v1/usage',
  tags: ['Jobs'],
  summary: 'Your usage per hour',
  description:
    'Jobs, rows and inference time of your key per hour, written by the workers as jobs end (kept ' +
    '`QUERN_USAGE_RETENTION_DAYS`). An access token shows the usage of the key it was issued for.',
  security: PROTECTED,
  middleware: [requireAuth('jobs:read')] as const,
  request: { query: UsageQuerySchema },
  responses: {
    200: { description: 'Usage per hour.', content: { 'application/json': { schema: UsageSchema } } },
    ...problems(401, 403, 422, 429, 503),
  },
});

export function registerUsage(app: OpenAPIHono<AppEnv>): void {
  app.openapi(usageRoute, async (c) => {
    const { hours } = c.req.valid('query');
    const owner = c.get('principal').id;
    return c.json(usageView(owner, await c.get('services').usage.read(owner, hours)), 200);
  });
}
