import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../env';
import { requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';

export const WebhookSecretSchema = z
  .object({
    secret: z
      .string()
      .openapi({ description: 'Standard Webhooks signing secret.', example: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }),
    created_at: z.string().openapi({ format: 'date-time' }),
    previous_expires_at: z.string().nullable().openapi({
      format: 'date-time',
      description: 'After a rotation: until when deliveries also carry the old signature.',
    }),
  })
  .openapi('WebhookSecret', {
    example: {
      secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      created_at: '2026-11-30T10:00:00.000Z',
      previous_expires_at: null,
    },
  });

export const getWebhookSecretRoute = createRoute({
  operationId: 'getWebhookSecret',
  method: 'get',
  path: '/v1/webhooks/secret',
  tags: ['Webhooks'],
  summary: 'Get your webhook signing secret',
  description:
    'Created on first use. Verify deliveries with it (Standard Webhooks; e.g. the `standardwebhooks` package).',
  security: PROTECTED,
  middleware: [requireAuth('predict')] as const,
  responses: {
    200: { description: 'The secret.', content: { 'application/json': { schema: WebhookSecretSchema } } },
    ...problems(401, 403, 429, 503),
  },
});

export const rotateWebhookSecretRoute = createRoute({
  operationId: 'rotateWebhookSecret',
  method: 'post',
  path: '/v1/webhooks/secret/rotate',
  tags: ['Webhooks'],
  summary: 'Rotate your webhook signing secret',
  description:
    'Makes a new secret. Until `previous_expires_at` (24 h by default) deliveries carry two signatures, one ' +
    'per secret, so receivers can switch without missing a delivery.',
  security: PROTECTED,
  middleware: [requireAuth('predict')] as const,
  responses: {
    200: { description: 'The new secret.', content: { 'application/json': { schema: WebhookSecretSchema } } },
    ...problems(401, 403, 429, 503),
  },
});

export function registerWebhookSecret(app: OpenAPIHono<AppEnv>): void {
  app.openapi(getWebhookSecretRoute, async (c) =>
    c.json(await c.get('services').webhookSecrets.get(c.get('principal').id), 200),
  );
  app.openapi(rotateWebhookSecretRoute, async (c) =>
    c.json(await c.get('services').webhookSecrets.rotate(c.get('principal').id), 200),
  );
}
