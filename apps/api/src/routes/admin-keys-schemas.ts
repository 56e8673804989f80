import { z } from '@hono/zod-openapi';
import type { ApiKeyRecord } from '../services/key-store';
import { SCOPES, TIERS } from '../services/principal';

export const ApiKeySchema = z
  .object({
    id: z.string().openapi({ example: 'key_3n9Vd0tqZyXbL2m8Qe4RkA' }),
    name: z.string().openapi({ example: 'billing-service' }),
    tier: z.enum(TIERS),
    scopes: z.array(z.enum(SCOPES)),
    prefix: z
      .string()
      .openapi({ description: 'Public start of the key, as it appears in logs.', example: 'qk_4f8Gh2Kq' }),
    created_at: z.string().openapi({ format: 'date-time' }),
    revoked_at: z.string().nullable().openapi({ format: 'date-time' }),
  })
  .openapi('ApiKey');

export const KeyIdParamSchema = z.object({
  id: z
    .string()
    .max(64)
    .openapi({ param: { name: 'id', in: 'path' }, example: 'key_3n9Vd0tqZyXbL2m8Qe4RkA' }),
});

/** A key record as the admin API shows it; the key itself is never part of it. */
export function apiKeyView(record: ApiKeyRecord): z.infer<typeof ApiKeySchema> {
  return {
    id: record.id,
    name: record.name,
    tier: record.tier,
    scopes: record.scopes,
    prefix: record.prefix,
    created_at: new Date(record.created_at).toISOString(),
    revoked_at: record.revoked_at === null ? null : new Date(record.revoked_at).toISOString(),
  };
}
