import { createHash } from 'node:crypto';
import { type Authenticator, type Principal, SCOPES } from './principal';

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/**
 * Keys configured by environment (`QUERN_API_KEYS`, `QUERN_DEV_API_KEY`). Only SHA-256 digests
 * are kept in memory; the owner id is derived from the digest, so it is stable across restarts
 * and reveals nothing about the key.
 */
export class StaticKeyAuthenticator implements Authenticator {
  private readonly byDigest = new Map<string, Principal>();

  constructor(entries: readonly string[], devKey?: string) {
    const all = [...entries];
    if (devKey) all.push(`dev:${devKey}`);
    for (const entry of all) {
      const colon = entry.indexOf(':');
      const [name, key] = colon > 0 ? [entry.slice(0, colon), entry.slice(colon + 1)] : ['env', entry];
      if (key.length < 16) throw new Error('every API key must be at least 16 characters');
      const digest = sha256(key);
      this.byDigest.set(digest.toString('hex'), {
        id: `key_${digest.subarray(0, 12).toString('base64url')}`,
        keyPrefix: key.slice(0, 8),
        name,
        tier: 'premium',
        scopes: new Set(SCOPES),
        via: 'api_key',
      });
    }
  }

  async authenticate(credential: string): Promise<Principal | null> {
    return this.byDigest.get(sha256(credential).toString('hex')) ?? null;
  }
}
