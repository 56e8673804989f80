import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { ApiKeySchema, apiKeyView, KeyIdParamSchema } from './admin-keys-schemas';

export const getKeyRoute = createRoute({
  operationId: 'getApiKey',
  method: 'get',
  path: '/v1/admin/keys/{id}',
  tags: ['Admin'],
  summary: 'Get an API key',
  security: PROTECTED,
  middleware: [audited('api_key.read'), requireAuth('admin')] as const,
  request: { params: KeyIdParamSchema },
  responses: {
    200: { description: 'The key.', content: { 'application/json': { schema: ApiKeySchema } } },
    ...problems(401, 403, 404, 422, 429, 503),
  },
});

export function registerGetKey(app: OpenAPIHono<AppEnv>): void {
  app.openapi(getKeyRoute, async (c) => {
    const record = await c.get('services').apiKeys.get(c.req.valid('param').id);
    if (!record) throw new QuernError('not_found', 'no API key with this id');
    return c.json(apiKeyView(record), 200);
  });
}
