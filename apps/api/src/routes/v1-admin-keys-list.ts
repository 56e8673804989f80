import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { API_KEY_EXAMPLE, ApiKeySchema, apiKeyView } from './admin-keys-schemas';

export const listKeysRoute = createRoute({
  operationId: 'listApiKeys',
  method: 'get',
  path: '/v1/admin/keys',
  tags: ['Admin'],
  summary: 'List API keys',
  description: 'Every key, revoked ones included, oldest first. Keys are identified by id and prefix only.',
  security: PROTECTED,
  middleware: [audited('api_key.list'), requireAuth('admin')] as const,
  responses: {
    200: {
      description: 'The keys.',
      content: {
        'application/json': {
          schema: z
            .object({ data: z.array(ApiKeySchema) })
            .openapi('ApiKeyList', { example: { data: [API_KEY_EXAMPLE] } }),
        },
      },
    },
    ...problems(401, 403, 429, 503),
  },
});

export function registerListKeys(app: OpenAPIHono<AppEnv>): void {
  app.openapi(listKeysRoute, async (c) => {
    const records = await c.get('services').apiKeys.list();
    return c.json({ data: records.map(apiKeyView) }, 200);
  });
}
