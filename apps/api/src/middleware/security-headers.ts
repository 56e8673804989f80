import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';

/**
 * Headers on every response: no MIME sniffing, no framing, no referrer, and API answers (job
 * results above all) are never stored by a shared cache. They are set before the handler runs,
 * as defaults a route can override (the docs page sets its own CSP and caching); setting them
 * afterwards would make Hono copy the finished response once per header.
 */
export function securityHeaders() {
  return createMiddleware<AppEnv>(async (c, next) => {
    c.header('x-content-type-options', 'nosniff');
    c.header('x-frame-options', 'DENY');
    c.header('referrer-policy', 'no-referrer');
    c.header('cache-control', 'no-store');
    c.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    await next();
  });
}
