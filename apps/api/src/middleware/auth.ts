import { QuernError } from '@quern/shared';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import type { Scope } from '../services/principal';

const CHALLENGE = 'Bearer realm="quern", error="invalid_token"';

/** `X-API-Key: qk_…` or `Authorization: Bearer <key or token>`. */
export function credentialOf(header: (name: string) => string | undefined): string | undefined {
  const apiKey = header('x-api-key');
  if (apiKey) return apiKey.trim();
  const authorization = header('authorization');
  const match = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization) : null;
  return match?.[1];
}

/**
 * Authenticates the caller and checks that its credential carries `scope`. No credential or a
 * bad one → 401 with `WWW-Authenticate`; a valid one without the scope → 403.
 */
export function requireAuth(scope: Scope) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const services = c.get('services');
    const credential = credentialOf((name) => c.req.header(name));
    if (!credential) {
      services.metrics.authFailures.labels('missing').inc();
      throw new QuernError('unauthorized', 'send an API key in X-API-Key or Authorization: Bearer', {
        headers: { 'www-authenticate': 'Bearer realm="quern"' },
      });
    }
    const principal = await services.auth.authenticate(credential);
    if (!principal) {
      services.metrics.authFailures.labels('invalid').inc();
      throw new QuernError('unauthorized', 'the credential is not valid', {
        headers: { 'www-authenticate': CHALLENGE },
      });
    }
    c.set('principal', principal);
    if (!principal.scopes.has(scope)) {
      throw new QuernError('forbidden', `this credential lacks the "${scope}" scope`);
    }
    await next();
  });
}
