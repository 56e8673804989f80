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

/** An IPv6 prefix whose addresses carry IPv4 addresses, and where (as bytes of the IPv6 address). */
interface Embedding {
  prefix: [ipaddr.IPv6, number];
  /** Byte offsets of each embedded IPv4 address (all must be public), or refused outright. */
  at: readonly (readonly number[])[] | 'refused';
  /** Teredo stores its client address with every bit flipped. */
  flip?: readonly boolean[];
}

const cidr = (range: string) => ipaddr.IPv6.parseCIDR(range);
const last32 = [12, 13, 14, 15];

/**
 * Every IPv6 form that carries an IPv4 address, since a relay, translator or dual-stack socket
 * may deliver to that IPv4 address. `ipaddr.js` calls some of them (IPv4-compatible `::a.b.c.d`)
 * unicast, so they are decoded here rather than trusted by range name.
 */
const embeddings: readonly Embedding[] = [
  // IPv4-compatible (deprecated, RFC 4291): `[::127.0.0.1]` parses to `::7f00:1`.
  { prefix: cidr('::/96'), at: [last32] },
  // IPv4-mapped: a dual-stack socket connects to the IPv4 address.
  { prefix: cidr('::ffff:0:0/96'), at: [last32] },
  // IPv4-translated (SIIT, RFC 6145).
  { prefix: cidr('::ffff:0:0:0/96'), at: [last32] },
  // NAT64 well-known prefix (RFC 6052): /96 layout only.
  { prefix: cidr('64:ff9b::/96'), at: [last32] },
  // NAT64 local-use prefix (RFC 8215): the operator's own translator, with a layout (/48 to /96)
  // that cannot be known from the address, so none is trusted (allow-list such receivers).
  { prefix: cidr('64:ff9b:1::/48'), at: 'refused' },
  // 6to4 (RFC 3056): the site's IPv4 address in bits 16–47.
  { prefix: cidr('2002::/16'), at: [[2, 3, 4, 5]] },
  // Teredo (RFC 4380): the server in bits 32–63, the client XORed with 0xffffffff in the last 32.
  { prefix: cidr('2001::/32'), at: [[4, 5, 6, 7], last32], flip: [false, true] },
];

function isPublicIPv4(address: ipaddr.IPv4): boolean {
  return address.range() === 'unicast';
}

/** The IPv4 addresses an IPv6 address carries, 'refused', or undefined for a plain IPv6 address. */
function embeddedIPv4(address: ipaddr.IPv6): ipaddr.IPv4[] | 'refused' | undefined {
  const embedding = embeddings.find((e) => address.match(e.prefix));
  if (!embedding) return undefined;
  if (embedding.at === 'refused') return 'refused';
  const bytes = address.toByteArray();
  return embedding.at.map(
    (offsets, i) => new ipaddr.IPv4(offsets.map((o) => ((bytes[o] ?? 0) ^ (embedding.flip?.[i] ? 0xff : 0)) & 0xff)),
  );
}

/**
 * True only for globally routable unicast addresses. Loopback, private, link-local, CGNAT,
 * multicast, broadcast, unspecified, unique-local and reserved addresses are refused. An IPv6
 * form that carries an IPv4 address (IPv4-compatible, IPv4-mapped, SIIT, NAT64, 6to4, Teredo) is
 * judged by the IPv4 address(es) inside: public only if every one of them is. The NAT64
 * local-use prefix `64:ff9b:1::/48` is refused outright.
 */
export function isPublicAddress(address: string): boolean {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.parse(address);
  } catch {
    return false;
  }
  if (parsed.kind() === 'ipv4') return isPublicIPv4(parsed as ipaddr.IPv4);
  const embedded = embeddedIPv4(parsed as ipaddr.IPv6);
  if (embedded === 'refused') return false;
  if (embedded) return embedded.every(isPublicIPv4);
  return parsed.range() === 'unicast';
}

function bareHost(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

/**
 * Checks what can be known from the URL alone: scheme, no credentials in it, and for an IP
 * literal (in any spelling the URL parser accepts: decimal, octal, hex, IPv6 forms carrying IPv4) whether
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
