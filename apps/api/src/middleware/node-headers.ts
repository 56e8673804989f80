import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Context } from 'hono';

/** What @hono/node-server passes as `c.env`: Node's request and response (absent under `app.request()`). */
interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

const nodeOf = (c: Context): NodeBindings => (c.env ?? {}) as NodeBindings;

/**
 * Sets headers that every answer to this request carries, before the handler runs. Served by
 * @hono/node-server they go straight onto Node's response (`setHeader`, which validates with a
 * regular expression), and the `writeHead` of whatever response the route builds merges them
 * under its own headers, so a route still overrides one by setting it (it cannot delete one).
 * Hono's `c.header()` would instead build a WHATWG `Headers` whose per-header validation was
 * about 2.5% of the API's CPU per request. Without Node (`app.request()` in tests, or once the
 * headers are sent) it is `c.header()`.
 */
export function presetHeaders(c: Context, headers: Record<string, string>): void {
  const outgoing = nodeOf(c).outgoing;
  if (outgoing && !outgoing.headersSent) {
    for (const name in headers) outgoing.setHeader(name, headers[name] as string);
  } else {
    for (const name in headers) c.header(name, headers[name]);
  }
}

/**
 * Makes `c.req.header()` without a name (what Hono's validator calls for a route that declares
 * request headers, such as `Prefer` on the predict routes) read Node's parsed header object.
 * @hono/node-server otherwise materialises a full WHATWG `Headers` from the raw header list for
 * it, about 2.5% of the API's CPU per request. Node's object has the same lower-case names and
 * the same `, `-joined duplicates, and drops the duplicates of single-valued headers (Node's
 * documented list), as the named lookups, which node-server already serves from it, do.
 */
export function readHeadersFromNode(c: Context): void {
  const incoming = nodeOf(c).incoming;
  if (!incoming) return;
  const named = c.req.header.bind(c.req) as (name: string) => string | undefined;
  const all = (): Record<string, string> => {
    const out: Record<string, string> = Object.create(null);
    const parsed = incoming.headers;
    for (const name in parsed) {
      const value = parsed[name];
      if (typeof value === 'string') out[name] = value;
      else if (Array.isArray(value)) out[name] = value.join(', ');
    }
    return out;
  };
  // An own property of this request's HonoRequest only; the prototype is untouched.
  Object.defineProperty(c.req, 'header', {
    value: (name?: string) => (name === undefined ? all() : named(name)),
    configurable: true,
  });
}
