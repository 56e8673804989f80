import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { QuernError } from '@quern/shared';
import type { AppEnv } from '../env';
import { credentialOf, requireAuth } from '../middleware/auth';
import { PROTECTED, problems } from '../schemas';
import { SCOPES } from '../services/principal';

export const TokenRequestSchema = z
  .object({
    scopes: z
      .array(z.enum(SCOPES))
      .min(1)
      .optional()
      .openapi({ description: 'Narrow the token to these scopes (default: all of the key’s).', example: ['predict'] }),
    ttl_seconds: z
      .number()
      .int()
      .min(60)
      .optional()
      .openapi({ description: 'Shorter lifetime than the default (capped by the server).', example: 300 }),
  })
  .openapi('TokenRequest', { example: { scopes: ['predict'], ttl_seconds: 300 } });

export const TokenResponseSchema = z
  .object({
    access_token: z.string(),
    token_type: z.literal('Bearer'),
    expires_in: z.number().int().openapi({ description: 'Seconds until the token expires.', example: 900 }),
    scope: z.string().openapi({ example: 'predict jobs:read' }),
  })
  .openapi('TokenResponse', {
    example: {
      access_token:
        'eyJhbGciOiJIUzI1NiIsImtpZCI6InF1ZXJuLTEiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJrZXlfM245VmQwdHFaeVhiTDJtOFFlNFJrQSJ9.c2lnbmF0dXJl',
      token_type: 'Bearer',
      expires_in: 300,
      scope: 'predict',
    },
  });

export const authTokenRoute = createRoute({
  operationId: 'createAccessToken',
  method: 'post',
  path: '/v1/auth/token',
  tags: ['Auth'],
  summary: 'Exchange an API key for a short-lived access token',
  description:
    'Authenticate with an API key (not a token). The token is a JWT to send as `Authorization: Bearer`; ' +
    'it carries the key’s scopes (or fewer) and stops working when the key is revoked.',
  security: PROTECTED,
  middleware: [requireAuth(null)] as const,
  request: { body: { required: false, content: { 'application/json': { schema: TokenRequestSchema } } } },
  responses: {
    200: { description: 'The token.', content: { 'application/json': { schema: TokenResponseSchema } } },
    ...problems(400, 401, 403, 415, 422, 429, 503),
  },
});

export function registerAuthToken(app: OpenAPIHono<AppEnv>): void {
  app.openapi(authTokenRoute, async (c) => {
    const { auth, tokens, config } = c.get('services');
    const credential = credentialOf((name) => c.req.header(name)) ?? '';
    const key = await auth.activeKey(credential);
    if (!key) throw new QuernError('forbidden', 'tokens are issued for API keys only, not for other tokens');
    const body = c.req.valid('json') ?? {};
    const wanted = body.scopes ?? key.scopes;
    const missing = wanted.filter((s) => !key.scopes.includes(s));
    if (missing.length > 0) throw new QuernError('forbidden', `the key lacks the scopes: ${missing.join(', ')}`);
    const ttl = Math.min(body.ttl_seconds ?? config.QUERN_JWT_TTL_SECONDS, config.QUERN_JWT_TTL_SECONDS);
    return c.json(await tokens.issue(key, wanted, ttl), 200);
  });
}
