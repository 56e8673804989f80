import { QuernError } from '@quern/shared';
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import type { Scope } from '../services/principal';
import { clientAddress } from './client-address';
import { presetHeaders } from './node-headers';

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

/** The scope each middleware made by `requireAuth` asks for: the reference docs read it from the app. */
const requiredScopes = new WeakMap<object, Scope | null>();

/** The scope `handler` asks for if `requireAuth` made it (null: any valid credential), else undefined. */
export function requiredScopeOf(handler: object): Scope | null | undefined {
  return requiredScopes.get(handler);
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
export function requireAuth(
  scope: Scope | null,
  options: {
    challenge?: 'bearer' | 'basic';
    /**
     * The hot routes: the rate-limit scripts are sent now but their answer is awaited by the
     * handler (`admitted`), together with its own first Redis read, so both share one round
     * trip. A request that fails before the handler asks (validation, scope) still hears 429
     * first if it was over its budget, and every request is counted, as without it.
     */
    deferRateLimit?: boolean;
  } = {},
) {
  const basic = options.challenge === 'basic';
  const challenge = basic ? 'Basic realm="Quern admin", charset="UTF-8"' : CHALLENGE;
  /** What a person who cancelled the browser's sign-in dialog reads: what to enter there. */
  const basicHint = 'sign in with HTTP Basic: any user name, and an API key with the admin scope as the password';
  const middleware = createMiddleware<AppEnv>(async (c, next) => {
    const { rateLimits, metrics, config } = c.get('services');
    const credential = credentialOf((name) => c.req.header(name));
    if (!credential) {
      metrics.authFailures.labels('missing').inc();
      const detail = basic ? basicHint : 'send an API key in X-API-Key, or a key or token as Authorization: Bearer';
      throw new QuernError('unauthorized', detail, { headers: { 'www-authenticate': challenge } });
    }
    const address = clientAddress(c, config.QUERN_TRUST_PROXY_HOPS);
    const result = await c.get('services').authAttempts.authenticate(address, credential);
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
      throw new QuernError('unauthorized', basic ? `${message}; ${basicHint}` : message, {
        headers: {
          'www-authenticate': basic ? challenge : `${CHALLENGE}, error="invalid_token"`,
        },
      });
    }
    const { principal } = result;
    c.set('principal', principal);

    const pending = rateLimits.consume(principal);
    let checked: Promise<void> | undefined;
    const enforce = () => {
      checked ??= pending.then((decision) => {
        presetHeaders(c, decision.headers);
        if (decision.retryAfter !== undefined) {
          metrics.rateLimited.labels(principal.tier).inc();
          throw new QuernError('rate_limited', `rate limit of the ${principal.tier} tier exceeded`, {
            headers: { ...decision.headers, 'retry-after': String(decision.retryAfter) },
          });
        }
      });
      return checked;
    };
    if (!options.deferRateLimit) await enforce();
    else pending.catch(() => undefined); // awaited through `enforce`; never an unhandled rejection
    if (scope !== null && !principal.scopes.has(scope)) {
      await enforce();
      throw new QuernError('forbidden', `this credential lacks the "${scope}" scope`);
    }
    if (!options.deferRateLimit) {
      await next();
      return;
    }
    c.set('rateLimit', enforce);
    // Hono turns a handler's error into its response inside `next()`. A request that was answered
    // without asking (a validation error, a 404) still hears 429 first if it was over budget.
    await next();
    await enforce();
  });
  requiredScopes.set(middleware, scope);
  return middleware;
}

/**
 * Waits for the request's rate-limit decision (sent by `requireAuth` with `deferRateLimit`)
 * alongside `work`, so the two Redis round trips overlap; throws the 429 if over budget.
 */
export async function admitted<T>(c: Context<AppEnv>, work: Promise<T>): Promise<T> {
  const check = c.get('rateLimit');
  if (!check) return work;
  work.catch(() => undefined); // the 429 comes first; a failed `work` is reported below
  await check();
  return work;
}
