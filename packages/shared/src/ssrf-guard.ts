import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import ipaddr from 'ipaddr.js';

/**
 * Which webhook URLs may be called. `allowHosts` entries (`host` or `host:port`) are trusted
 * receivers that may sit on private addresses (tests, internal services).
 */
export interface UrlPolicy {
  allowHttp: boolean;
  allowHosts: readonly string[];
}

export type UrlCheck =
  | {
      ok: true;
      url: URL;
      /** The bare host (no IPv6 brackets). */
      host: string;
      allowListed: boolean;
      /** A host name (not an IP literal, not allow-listed): its addresses must be checked when resolved. */
      needsResolve: boolean;
    }
  | { ok: false; reason: string };

/**
 * True only for globally routable unicast addresses. Loopback, private, link-local, CGNAT,
 * multicast, broadcast, unspecified, unique-local, reserved, 6to4/Teredo/NAT64 (which can embed
 * private IPv4) are refused; an IPv4-mapped IPv6 address is judged by the IPv4 address inside.
 */
export function isPublicAddress(address: string): boolean {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.parse(address);
  } catch {
    return false;
  }
  if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) {
    parsed = (parsed as ipaddr.IPv6).toIPv4Address();
  }
  return parsed.range() === 'unicast';
}

function bareHost(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

/**
 * Checks what can be known from the URL alone: scheme, no credentials in it, and for an IP
 * literal (in any spelling the URL parser accepts: decimal, octal, hex, IPv4-mapped) whether
 * the address is public. Host names are checked when they are resolved.
 */
export function checkWebhookUrl(raw: string, policy: UrlPolicy): UrlCheck {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'is not a valid absolute URL' };
  }
  if (raw.length > 2048) return { ok: false, reason: 'is longer than 2048 characters' };
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { ok: false, reason: policy.allowHttp ? 'must use http or https' : 'must use https' };
  }
  if (url.protocol === 'http:' && !policy.allowHttp) return { ok: false, reason: 'must use https' };
  if (url.username || url.password) return { ok: false, reason: 'must not contain credentials' };
  const host = bareHost(url.hostname).toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const allowListed = policy.allowHosts.some((entry) => {
    const e = entry.toLowerCase();
    return e === host || e === `${host}:${port}` || e === `[${host}]:${port}`;
  });
  if (allowListed) return { ok: true, url, host, allowListed, needsResolve: false };
  if (ipaddr.isValid(host)) {
    return isPublicAddress(host)
      ? { ok: true, url, host, allowListed, needsResolve: false }
      : { ok: false, reason: 'points to a non-public address' };
  }
  return { ok: true, url, host, allowListed, needsResolve: true };
}

/** `dns.lookup` with `all: true`, or a stand-in (tests use one to play DNS rebinding). */
export type Resolver = (
  hostname: string,
  options: { all: true; family: number },
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

const systemResolver: Resolver = (hostname, options, callback) => dnsLookup(hostname, options, callback);

/** Resolves a host name the way the connection will, and checks every address it gives. */
export function resolvePublic(
  hostname: string,
  resolver: Resolver = systemResolver,
): Promise<{ ok: true; addresses: string[] } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    resolver(hostname, { all: true, family: 0 }, (err, addresses) => {
      if (err || addresses.length === 0) {
        resolve({ ok: false, reason: 'host name does not resolve' });
        return;
      }
      const list = addresses.map((a) => a.address);
      resolve(
        list.every(isPublicAddress)
          ? { ok: true, addresses: list }
          : { ok: false, reason: 'resolves to a non-public address' },
      );
    });
  });
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for `http.request`: the address is checked when the socket connects, with the same
 * resolution the socket then uses, so a name that resolves to a public address when checked and
 * to a private one when connecting (DNS rebinding) gets nowhere. Any non-public address refuses
 * the whole name.
 */
export function guardedLookup(allowListed: boolean, resolver: Resolver = systemResolver) {
  return (hostname: string, opts: LookupOptions, callback: LookupCallback): void => {
    const family =
      typeof opts.family === 'number' ? opts.family : opts.family === 'IPv6' ? 6 : opts.family === 'IPv4' ? 4 : 0;
    resolver(hostname, { all: true, family }, (err, addresses) => {
      if (err) return callback(err, opts.all ? [] : '', 0);
      if (!allowListed && !addresses.every((a) => isPublicAddress(a.address))) {
        const refused = Object.assign(new Error(`webhook host ${hostname} resolves to a non-public address`), {
          code: 'ESSRF',
        });
        return callback(refused, opts.all ? [] : '', 0);
      }
      if (opts.all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error('no address'), { code: 'ENOTFOUND' }), '', 0);
      return callback(null, first.address, first.family);
    });
  };
}
