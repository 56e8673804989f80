import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * Random bytes from a pool refilled 4 KiB at a time: ids are made on every request, and one
 * `randomBytes` call per id costs more than the id itself.
 */
let pool = Buffer.alloc(0);
let poolOffset = 0;
function randomByte(): number {
  if (poolOffset >= pool.length) {
    pool = randomBytes(4096);
    poolOffset = 0;
  }
  return pool[poolOffset++] as number;
}

/**
 * Random base62 characters. Rejection sampling (bytes ≥ 248 are skipped) keeps every character
 * uniformly distributed, so an id of n characters carries n·log2(62) bits of entropy.
 */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    const byte = randomByte();
    if (byte < 248) out += ALPHABET[byte % 62];
  }
  return out;
}

/** `api_…` names one API process (its reply channel). */
export type IdPrefix = 'job' | 'req' | 'key' | 'evt' | 'wrk' | 'api';

/**
 * Prefixed, unguessable ids (`job_…`, `req_…`): 22 base62 characters give ~131 bits,
 * so ids can be handed to clients without leaking counts or allowing enumeration.
 */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${randomBase62(22)}`;
}

export function isId(prefix: IdPrefix, value: string): boolean {
  return new RegExp(`^${prefix}_[0-9A-Za-z]{22}$`).test(value);
}

/** Encodes bytes as a base62 number, left-padded to the length the byte count always needs. */
function bytesToBase62(bytes: Uint8Array): string {
  const length = Math.ceil((bytes.length * 8) / Math.log2(62));
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = '';
  while (n > 0n) {
    out = ALPHABET[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out.padStart(length, '0');
}

/** Characters of a key's secret shown in logs and listings (after `qk_`). */
export const API_KEY_PREFIX_LENGTH = 8;

/**
 * A new API key: `qk_` + 32 random bytes in base62 (43 characters, 256 bits). Its first
 * characters (`qk_` + 8) are the public prefix that names the key in logs and listings.
 */
export function newApiKey(): { key: string; prefix: string } {
  const key = `qk_${bytesToBase62(randomBytes(32))}`;
  return { key, prefix: apiKeyPrefix(key) };
}

/** The loggable prefix of a key (or of anything presented as one). */
export function apiKeyPrefix(key: string): string {
  return key.slice(0, 3 + API_KEY_PREFIX_LENGTH);
}
