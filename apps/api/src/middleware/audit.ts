import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../env';
import { clientAddress } from './client-address';

/** What an audited request did, and to what; `undefined` leaves the request out of the audit. */
export type AuditAction = { action: string; target?: string } | undefined;

/**
 * The target of a request that created something: the id at the end of its `Location`.
 * Created keys have no id in the path yet.
 */
function createdId(c: Context<AppEnv>): string | undefined {
  const location = c.res.headers.get('location');
  return location ? location.slice(location.lastIndexOf('/') + 1) : undefined;
}

/**
 * One audit line per administrative request, written once its answer is known: who (the
 * principal's id, key prefix and how it signed in, and the client's address), what (the action,
 * its target and the status it got, refusals included) and when (`at`, ISO 8601). The lines carry
 * `audit: true` and the message `audit`, so a log pipeline can route them apart from the rest.
 * Registered before the route's auth, so an attempt without a valid admin credential is recorded
 * too (with `actor: null`).
 */
export function audited(describe: string | ((c: Context<AppEnv>) => AuditAction)) {
  return createMiddleware<AppEnv>(async (c, next) => {
    try {
      await next();
    } finally {
      const what: AuditAction =
        typeof describe === 'string' ? { action: describe, target: c.req.param('id') ?? createdId(c) } : describe(c);
      if (what) {
        const principal = c.get('principal');
        const status = c.res.status;
        c.get('logger').info(
          {
            audit: true,
            action: what.action,
            target: what.target,
            outcome: status < 400 ? 'done' : status < 500 ? 'refused' : 'failed',
            status,
            actor: principal ? { id: principal.id, key_prefix: principal.keyPrefix, via: principal.via } : null,
            client_address: clientAddress(c, c.get('services').config.QUERN_TRUST_PROXY_HOPS),
            at: new Date().toISOString(),
          },
          'audit',
        );
      }
    }
  });
}
