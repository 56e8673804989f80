import { QuernError } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import { authAttemptsOf } from '../services/auth-attempts';
import type { Scope } from '../services/principal';
import { clientAddress } from './client-address';

const CHALLENGE = 'Bearer realm="quern"';

/**
 * `X-API-Key: qk_…`, `Authorization: Bearer <key or token>`, or (for the browser pages) HTTP Basic
 * with the key as the password, which a browser asks for once and then sends by itself.
 */
export function credentialOf(header: (name: string) => string | undefined): string | undefined {
  const apiKey = header('x-api-key');
  if (apiKey) return apiKey.trim();
  const authorization = header('authorization') ?? '';
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (bearer) return bearer[1];
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization);
  if (!basic) return undefined;
  const decoded = Buffer.from(basic[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 && colon < decoded.length - 1 ? decoded.slice(colon + 1) : undefined;
}

/**
 * Authenticates the caller, applies its rate limits and checks that its credential carries
 * `scope` (null: any valid credential):
 * - no credential → 401 with `WWW-Authenticate`;
 * - too many failed attempts from this address → 429 (so keys cannot be guessed at speed); a
 *   credential not known good takes an attempt before it is checked, so bursts count too;
 * - unknown or revoked key, bad or expired token → 401 (and its attempt stays spent);
 * - over the principal's budget → 429 with `Retry-After`;
 * - valid, but without the scope → 403.
 * Every limited response carries `RateLimit-Policy` and `RateLimit`.
 */
export function requireAuth(scope: Scope | null, options: { challenge?: 'bearer' | 'basic' } = {}) {
  const challenge = options.challenge === 'basic' ? 'Basic realm="Quern admin", charset="UTF-8"' : CHALLENGE;
  return createMiddleware<AppEnv>(async (c, next) => {
    const { rateLimits, metrics, config } = c.get('services');
    const credential = credentialOf((name) => c.req.header(name));
    if (!credential) {
      metrics.authFailures.labels('missing').inc();
      throw new QuernError('unauthorized', 'send an API key in X-API-Key, or a key or token as Authorization: Bearer', {
        headers: { 'www-authenticate': challenge },
      });
    }
    const address = clientAddress(c, config.QUERN_TRUST_PROXY_HOPS);
    const result = await authAttemptsOf(c.get('services')).authenticate(address, credential);
    if (!result.ok && result.reason === 'blocked') {
      metrics.rateLimited.labels('auth_failures').inc();
      throw new QuernError('rate_limited', 'too many failed authentication attempts from this address', {
        headers: { 'retry-after': String(result.retryAfter) },
      });
    }
    if (!result.ok) {
      metrics.authFailures.labels(result.reason).inc();
      const message =
        result.reason === 'expired_token'
          ? 'the access token has expired'
          : result.reason === 'revoked_key'
            ? 'the API key has been revoked'
            : 'the credential is not valid';
      throw new QuernError('unauthorized', message, {
        headers: {
          'www-authenticate': options.challenge === 'basic' ? challenge : `${CHALLENGE}, error="invalid_token"`,
        },
      });
    }
    const { principal } = result;
    c.set('principal', principal);

    const decision = await rateLimits.consume(principal);
    for (const [name, value] of Object.entries(decision.headers)) c.header(name, value);
    if (decision.retryAfter !== undefined) {
      metrics.rateLimited.labels(principal.tier).inc();
      throw new QuernError('rate_limited', `rate limit of the ${principal.tier} tier exceeded`, {
        headers: { ...decision.headers, 'retry-after': String(decision.retryAfter) },
      });
    }
    if (scope !== null && !principal.scopes.has(scope)) {
      throw new QuernError('forbidden', `this credential lacks the "${scope}" scope`);
    }
    await next();
  });
}
