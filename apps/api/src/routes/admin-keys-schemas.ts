import { z } from '@hono/zod-openapi';
import type { ApiKeyRecord } from '../services/key-store';
import { SCOPES, TIERS } from '../services/principal';

/** A key as the admin API shows it, for the OpenAPI document's examples. */
export const API_KEY_EXAMPLE = {
  id: 'key_3n9Vd0tqZyXbL2m8Qe4RkA',
  name: 'billing-service',
  tier: 'premium',
  scopes: ['predict', 'jobs:read'],
  prefix: 'qk_4f8Gh2Kq',
  created_at: '2026-11-30T10:00:00.000Z',
  revoked_at: null,
  weight: null,
  max_rows: null,
};

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
    weight: z
      .number()
      .nullable()
      .openapi({
        description:
          'Share of its tier’s queue against other keys of the tier (null: the tier’s weight, 1 by default). ' +
          'docs/scheduling.md.',
      }),
    max_rows: z.number().int().nullable().openapi({
      description: 'Rows it may have queued or running at once (null: its tier’s `QUERN_CONCURRENCY_*_ROWS`).',
    }),
  })
  .openapi('ApiKey', { example: API_KEY_EXAMPLE });

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
    weight: record.weight,
    max_rows: record.max_rows,
  };
}
