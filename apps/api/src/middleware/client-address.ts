import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';

/**
 * The client's address for per-address limits. With `trustedHops` proxies in front (config
 * QUERN_TRUST_PROXY_HOPS), the entry those proxies appended to X-Forwarded-For; otherwise the
 * socket's peer. Never trusts a header a client could forge when no proxy is declared.
 */
export function clientAddress(c: Context, trustedHops: number): string {
  let socket = 'unknown';
  try {
    socket = getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    // app.request() in tests has no socket
  }
  if (trustedHops === 0) return socket;
  const forwarded = (c.req.header('x-forwarded-for') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return forwarded[forwarded.length - trustedHops] ?? socket;
}
