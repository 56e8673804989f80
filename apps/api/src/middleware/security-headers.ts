import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';

/**
 * Headers on every response: no MIME sniffing, no framing, no referrer, and API answers (job
 * results above all) are never stored by a shared cache.
 */
export function securityHeaders() {
  return createMiddleware<AppEnv>(async (c, next) => {
    await next();
    c.header('x-content-type-options', 'nosniff');
    c.header('x-frame-options', 'DENY');
    c.header('referrer-policy', 'no-referrer');
    if (!c.res.headers.has('cache-control')) c.header('cache-control', 'no-store');
    if (!c.res.headers.has('content-security-policy')) {
      c.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    }
  });
}
