import { decodeJwt } from 'jose';
import type { ApiKeyRecord, KeyStore } from './key-store';
import { sha256Hex } from './key-store';
import type { Authenticator, AuthResult, Principal } from './principal';
import { externalPrincipalId, TokenService } from './token-service';

interface Cached {
  record: ApiKeyRecord | null;
  expires: number;
}

const MAX_CACHED = 10_000;

/** Evicts the oldest entry of a bounded cache before one is added. */
function makeRoom<V>(cache: Map<string, V>): void {
  if (cache.size < MAX_CACHED) return;
  const oldest = cache.keys().next().value;
  if (oldest !== undefined) cache.delete(oldest);
}

/**
 * Authenticates API keys (against the key store) and access tokens (signature, then the key
 * they were issued for must still be active). Key records are cached in this process for
 * `cacheTtlMs`, so a revoked key stops working on every API process within that time; so are
 * verified tokens (never past their `exp`).
 */
export class CredentialAuthenticator implements Authenticator {
  private readonly cache = new Map<string, Cached>();
  private readonly tokenCache = new Map<string, { principal: Principal; expires: number }>();

  constructor(
    private readonly store: KeyStore,
    private readonly tokens: TokenService,
    private readonly cacheTtlMs: number,
  ) {}

  async authenticate(credential: string): Promise<AuthResult> {
    if (TokenService.looksLikeJwt(credential)) return this.authenticateToken(credential);
    const record = await this.cached(`h:${sha256Hex(credential)}`, () => this.store.findByKey(credential));
    if (!record) return { ok: false, reason: 'unknown_key' };
    if (record.revoked_at !== null) return { ok: false, reason: 'revoked_key' };
    return { ok: true, principal: principalOf(record, new Set(record.scopes), 'api_key') };
  }

  /**
   * The principal of a credential verified within the cache lifetime, answered from this process
   * alone (no Redis): what lets the failed-authentication limit skip credentials known to be good.
   */
  recall(credential: string): Principal | undefined {
    const now = Date.now();
    if (TokenService.looksLikeJwt(credential)) {
      const hit = this.tokenCache.get(sha256Hex(credential));
      return hit && hit.expires > now ? hit.principal : undefined;
    }
    const hit = this.cache.get(`h:${sha256Hex(credential)}`);
    if (!hit || hit.expires <= now || !hit.record || hit.record.revoked_at !== null) return undefined;
    return principalOf(hit.record, new Set(hit.record.scopes), 'api_key');
  }

  /** The active key record for `credential` when it is an API key (the token exchange needs it). */
  async activeKey(credential: string): Promise<ApiKeyRecord | null> {
    if (TokenService.looksLikeJwt(credential)) return null;
    const record = await this.cached(`h:${sha256Hex(credential)}`, () => this.store.findByKey(credential));
    return record && record.revoked_at === null ? record : null;
  }

  private async authenticateToken(token: string): Promise<AuthResult> {
    const result = await this.verifyToken(token);
    if (result.ok && this.cacheTtlMs > 0) {
      const exp = decodeJwt(token).exp;
      const expires = Math.min(Date.now() + this.cacheTtlMs, typeof exp === 'number' ? exp * 1000 : 0);
      makeRoom(this.tokenCache);
      this.tokenCache.set(sha256Hex(token), { principal: result.principal, expires });
    }
    return result;
  }

  private async verifyToken(token: string): Promise<AuthResult> {
    const verified = await this.tokens.verify(token);
    if (!verified.ok) return { ok: false, reason: verified.error };
    const { claims } = verified;
    if (claims.kind === 'external') {
      return {
        ok: true,
        principal: {
          id: externalPrincipalId(claims.issuer, claims.subject),
          keyPrefix: 'external',
          name: 'external',
          tier: claims.tier,
          scopes: new Set(claims.scopes),
          via: 'external_token',
        },
      };
    }
    const record = await this.cached(`i:${claims.keyId}`, () => this.store.get(claims.keyId));
    if (!record) return { ok: false, reason: 'invalid_token' };
    if (record.revoked_at !== null) return { ok: false, reason: 'revoked_key' };
    // A token never carries more than its key has now.
    const scopes = new Set(claims.scopes.filter((s) => record.scopes.includes(s)));
    return { ok: true, principal: principalOf(record, scopes, 'token') };
  }

  private async cached(key: string, load: () => Promise<ApiKeyRecord | null>): Promise<ApiKeyRecord | null> {
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) return hit.record;
    const record = await load();
    if (this.cacheTtlMs > 0) {
      makeRoom(this.cache);
      this.cache.delete(key);
      this.cache.set(key, { record, expires: now + this.cacheTtlMs });
    }
    return record;
  }
}

function principalOf(record: ApiKeyRecord, scopes: Principal['scopes'], via: Principal['via']): Principal {
  return {
    id: record.id,
    keyPrefix: record.prefix,
    name: record.name,
    tier: record.tier,
    scopes,
    via,
    ...(record.weight !== null ? { weight: record.weight } : {}),
    ...(record.max_rows !== null ? { maxRows: record.max_rows } : {}),
  };
}
