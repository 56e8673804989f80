import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { ApiKeySchema, apiKeyView, KeyIdParamSchema } from './admin-keys-schemas';

export const revokeKeyRoute = createRoute({
  operationId: 'revokeApiKey',
  method: 'delete',
  path: '/v1/admin/keys/{id}',
  tags: ['Admin'],
  summary: 'Revoke an API key',
  description:
    'The key, and every token issued for it, stops working on every API process within the key cache ' +
    'lifetime (`QUERN_KEY_CACHE_TTL_MS`, 5 s by default). Revoking twice is harmless.',
  security: PROTECTED,
  middleware: [audited('api_key.revoke'), requireAuth('admin')] as const,
  request: { params: KeyIdParamSchema },
  responses: {
    200: { description: 'The revoked key.', content: { 'application/json': { schema: ApiKeySchema } } },
    ...problems(401, 403, 404, 422, 429, 503),
  },
});

export function registerRevokeKey(app: OpenAPIHono<AppEnv>): void {
  app.openapi(revokeKeyRoute, async (c) => {
    const record = await c.get('services').apiKeys.revoke(c.req.valid('param').id);
    if (!record) throw new QuernError('not_found', 'no API key with this id');
    c.get('logger').info({ key_id: record.id, key_prefix: record.prefix }, 'api key revoked');
    return c.json(apiKeyView(record), 200);
  });
}
