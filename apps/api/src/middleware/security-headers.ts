import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import { presetHeaders } from './node-headers';

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
};

/**
 * Headers on every response: no MIME sniffing, no framing, no referrer, and API answers (job
 * results above all) are never stored by a shared cache. They are set before the handler runs,
 * as defaults a route can override (the docs page sets its own CSP and caching); setting them
 * afterwards would make Hono copy the finished response once per header (see `presetHeaders`).
 */
export function securityHeaders() {
  return createMiddleware<AppEnv>(async (c, next) => {
    presetHeaders(c, SECURITY_HEADERS);
    await next();
  });
}
