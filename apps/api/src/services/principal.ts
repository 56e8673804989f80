/** Scopes a credential can carry; each protected route names the one it needs. */
export const SCOPES = ['predict', 'jobs:read', 'jobs:cancel', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export const TIERS = ['free', 'premium'] as const;
export type Tier = (typeof TIERS)[number];

export function isScope(value: string): value is Scope {
  return (SCOPES as readonly string[]).includes(value);
}

/** Who is calling: derived from a credential, never containing it. */
export interface Principal {
  /** Stable owner id recorded on jobs: the key id (`key_…`), or `usr_…` for an external identity. */
  id: string;
  /** Short public part of the key (`qk_` + 8), safe to log; the token's key for a token. */
  keyPrefix: string;
  name: string;
  tier: Tier;
  scopes: ReadonlySet<Scope>;
  via: 'api_key' | 'token' | 'external_token';
  /** The key's own cap on queued-or-running rows, set by an admin; the tier's when absent. */
  maxRows?: number | undefined;
  /** The key's fair-share weight within its tier, set by an admin (its tier's when absent). */
  weight?: number | undefined;
}

export type AuthFailure = 'unknown_key' | 'revoked_key' | 'invalid_token' | 'expired_token';

export type AuthResult = { ok: true; principal: Principal } | { ok: false; reason: AuthFailure };

/** Turns a presented credential into a principal, or says why it is refused. */
export interface Authenticator {
  authenticate(credential: string): Promise<AuthResult>;
}
