/** Scopes a credential can carry; each protected route names the one it needs. */
export const SCOPES = ['predict', 'jobs:read', 'jobs:cancel', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export type Tier = 'free' | 'premium';

/** Who is calling: derived from a credential, never containing it. */
export interface Principal {
  /** Stable owner id recorded on jobs (`key_…`). */
  id: string;
  /** Short public part of the key, safe to log. */
  keyPrefix: string;
  name: string;
  tier: Tier;
  scopes: ReadonlySet<Scope>;
  via: 'api_key' | 'token';
}

/** Turns a presented credential into a principal, or null when it is not valid. */
export interface Authenticator {
  authenticate(credential: string): Promise<Principal | null>;
}
