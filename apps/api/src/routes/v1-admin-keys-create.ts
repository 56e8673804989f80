import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { SCOPES, TIERS } from '../services/principal';
import { API_KEY_EXAMPLE, ApiKeySchema, apiKeyView } from './admin-keys-schemas';

export const CreateKeyRequestSchema = z
  .object({
    // At most 100 characters as sent (the documented maxLength), at least one once trimmed.
    name: z.string().max(100).trim().min(1).openapi({ example: 'billing-service' }),
    tier: z.enum(TIERS).default('free'),
    scopes: z
      .array(z.enum(SCOPES))
      .min(1)
      .default(['predict', 'jobs:read', 'jobs:cancel'])
      .openapi({ example: ['predict', 'jobs:read'] }),
  })
  .openapi('CreateKeyRequest', {
    example: { name: 'billing-service', tier: 'premium', scopes: ['predict', 'jobs:read'] },
  });

export const createKeyRoute = createRoute({
  operationId: 'createApiKey',
  method: 'post',
  path: '/v1/admin/keys',
  tags: ['Admin'],
  summary: 'Create an API key',
  description: 'The answer holds the key itself: it is shown this once and never stored (only its SHA-256 is).',
  security: PROTECTED,
  middleware: [audited('api_key.create'), requireAuth('admin')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: CreateKeyRequestSchema } } } },
  responses: {
    201: {
      description: 'Created.',
      headers: z.object({ location: z.string() }),
      links: {
        GetApiKey: { operationId: 'getApiKey', parameters: { id: '$response.body#/id' }, description: 'Read the key.' },
        RevokeApiKey: {
          operationId: 'revokeApiKey',
          parameters: { id: '$response.body#/id' },
          description: 'Revoke the key.',
        },
      },
      content: {
        'application/json': {
          schema: ApiKeySchema.extend({
            key: z.string().openapi({ description: 'The API key. Shown once.', example: 'qk_4f8Gh2Kq…' }),
          }).openapi('CreatedApiKey', {
            example: { ...API_KEY_EXAMPLE, key: 'qk_4f8Gh2KqT0pXw9LmZr3Vb7NcYd5Ha1Se' },
          }),
        },
      },
    },
    ...problems(400, 401, 403, 415, 422, 429, 503),
  },
});

export function registerCreateKey(app: OpenAPIHono<AppEnv>): void {
  app.openapi(createKeyRoute, async (c) => {
    const body = c.req.valid('json');
    const { key, record } = await c.get('services').apiKeys.create(body);
    c.get('logger').info({ key_id: record.id, key_prefix: record.prefix, tier: record.tier }, 'api key created');
    return c.json({ ...apiKeyView(record), key }, 201, { location: `/v1/admin/keys/${record.id}` });
  });
}
