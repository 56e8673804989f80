import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { KeyIdParamSchema } from './admin-keys-schemas';
import { UsageQuerySchema, UsageSchema, usageView } from './usage-schemas';

export const keyUsageRoute = createRoute({
  operationId: 'getApiKeyUsage',
  method: 'get',
  path: '/v1/admin/keys/{id}/usage',
  tags: ['Admin'],
  summary: 'An API key’s usage per hour',
  description: 'The same as `GET /v1/usage`, for any key.',
  security: PROTECTED,
  middleware: [audited('api_key.usage'), requireAuth('admin')] as const,
  request: { params: KeyIdParamSchema, query: UsageQuerySchema },
  responses: {
    200: { description: 'Usage per hour.', content: { 'application/json': { schema: UsageSchema } } },
    ...problems(401, 403, 404, 422, 429, 503),
  },
});

export function registerKeyUsage(app: OpenAPIHono<AppEnv>): void {
  app.openapi(keyUsageRoute, async (c) => {
    const services = c.get('services');
    const record = await services.apiKeys.get(c.req.valid('param').id);
    if (!record) throw new QuernError('not_found', 'no API key with this id');
    const { hours } = c.req.valid('query');
    return c.json(usageView(record.id, await services.usage.read(record.id, hours)), 200);
  });
}
