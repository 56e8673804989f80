import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { audited } from '../middleware/audit';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { ApiKeySchema, apiKeyView, KeyIdParamSchema } from './admin-keys-schemas';

export const UpdateKeyRequestSchema = z
  .object({
    weight: z.number().min(0.01).max(1000).nullable().optional().openapi({
      description:
        'Share of its tier’s queue: 2 gets about twice the rows of a key of weight 1 while both wait. null: 1.',
    }),
    max_rows: z.number().int().min(0).max(100_000_000).nullable().optional().openapi({
      description: 'Rows it may have queued or running at once (0: no cap). null: its tier’s.',
    }),
  })
  .strict()
  .openapi('UpdateApiKeyRequest', { example: { weight: 2, max_rows: 50_000 } });

export const updateKeyRoute = createRoute({
  operationId: 'updateApiKey',
  method: 'patch',
  path: '/v1/admin/keys/{id}',
  tags: ['Admin'],
  summary: 'Set an API key’s queue share and row cap',
  description:
    'Takes effect on every API process within the key cache lifetime (`QUERN_KEY_CACHE_TTL_MS`), for jobs ' +
    'submitted from then on. Fields left out are kept; null restores the default.',
  security: PROTECTED,
  middleware: [audited('api_key.update'), requireAuth('admin')] as const,
  request: {
    params: KeyIdParamSchema,
    // Every field is optional, so no body is the empty change (the key as it is), not an error.
    body: { required: false, content: { 'application/json': { schema: UpdateKeyRequestSchema } } },
  },
  responses: {
    200: { description: 'The key.', content: { 'application/json': { schema: ApiKeySchema } } },
    ...problems(400, 401, 403, 404, 415, 422, 429, 503),
  },
});

export function registerUpdateKey(app: OpenAPIHono<AppEnv>): void {
  app.openapi(updateKeyRoute, async (c) => {
    const record = await c.get('services').apiKeys.setLimits(c.req.valid('param').id, c.req.valid('json'));
    if (!record) throw new QuernError('not_found', 'no API key with this id');
    return c.json(apiKeyView(record), 200);
  });
}
