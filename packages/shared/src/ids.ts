import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * Encodes random bytes in base62. Rejection sampling keeps every character uniformly
 * distributed, so an id of n characters carries n·log2(62) bits of entropy.
 */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

export type IdPrefix = 'job' | 'req' | 'key' | 'evt' | 'wrk';

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
