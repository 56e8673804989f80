import { createHash, randomBytes } from 'node:crypto';
import type { ApiConfig, Logger } from '@quern/shared';
import {
  createRemoteJWKSet,
  decodeJwt,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
} from 'jose';
import type { ApiKeyRecord } from './key-store';
import { isScope, type Scope, type Tier } from './principal';

const ALGORITHM = 'HS256';

export interface IssuedToken {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
}

/** What a verified token says about its bearer. */
export type TokenClaims =
  | { kind: 'local'; keyId: string; scopes: Scope[] }
  | { kind: 'external'; subject: string; issuer: string; scopes: Scope[]; tier: Tier };

export type TokenError = 'invalid_token' | 'expired_token';

function scopesOf(value: unknown): Scope[] {
  const list = typeof value === 'string' ? value.split(' ') : Array.isArray(value) ? value : [];
  return list.filter((s): s is Scope => typeof s === 'string' && isScope(s));
}

/**
 * Short-lived access tokens, HS256-signed with `jose`. `QUERN_JWT_KEYS` holds `kid:secret` pairs:
 * the first signs, every one verifies, so keys rotate without a gap (add the new key second,
 * roll it to first, drop the old one after the token lifetime). Verification pins the algorithm,
 * requires `exp`, checks `iss` and `aud` and allows a small clock skew. Tokens of an external
 * identity provider are verified against its JWKS when configured.
 */
export class TokenService {
  private readonly keys = new Map<string, Uint8Array>();
  private readonly signingKid: string;
  private readonly remoteJwks: JWTVerifyGetKey | undefined;

  constructor(
    private readonly config: ApiConfig,
    logger: Logger,
  ) {
    for (const entry of config.QUERN_JWT_KEYS) {
      const colon = entry.indexOf(':');
      this.keys.set(entry.slice(0, colon), new TextEncoder().encode(entry.slice(colon + 1)));
    }
    if (this.keys.size === 0) {
      // Development only (config refuses this in production): tokens die with the process.
      this.keys.set('ephemeral', randomBytes(32));
      logger.warn('QUERN_JWT_KEYS is not set: signing tokens with an ephemeral key');
    }
    this.signingKid = [...this.keys.keys()][0] as string;
    this.remoteJwks = config.QUERN_OIDC_JWKS_URL
      ? createRemoteJWKSet(new URL(config.QUERN_OIDC_JWKS_URL), { timeoutDuration: 3_000, cooldownDuration: 30_000 })
      : undefined;
  }

  async issue(
    record: ApiKeyRecord,
    scopes: Scope[],
    ttlSeconds = this.config.QUERN_JWT_TTL_SECONDS,
  ): Promise<IssuedToken> {
    const key = this.keys.get(this.signingKid) as Uint8Array;
    const scope = scopes.join(' ');
    const token = await new SignJWT({ scope })
      .setProtectedHeader({ alg: ALGORITHM, kid: this.signingKid, typ: 'JWT' })
      .setSubject(record.id)
      .setIssuer(this.config.QUERN_JWT_ISSUER)
      .setAudience(this.config.QUERN_JWT_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
      .setJti(randomBytes(12).toString('base64url'))
      .sign(key);
    return { access_token: token, token_type: 'Bearer', expires_in: ttlSeconds, scope };
  }

  /** True for anything shaped like a JWT (three base64url parts); API keys start with `qk_`. */
  static looksLikeJwt(credential: string): boolean {
    return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(credential);
  }

  async verify(token: string): Promise<{ ok: true; claims: TokenClaims } | { ok: false; error: TokenError }> {
    let issuer: unknown;
    try {
      issuer = decodeJwt(token).iss;
    } catch {
      return { ok: false, error: 'invalid_token' };
    }
    try {
      if (this.remoteJwks && issuer === this.config.QUERN_OIDC_ISSUER) {
        const { payload } = await jwtVerify(token, this.remoteJwks, {
          algorithms: this.config.QUERN_OIDC_ALGORITHMS,
          issuer: this.config.QUERN_OIDC_ISSUER,
          audience: this.config.QUERN_OIDC_AUDIENCE,
          clockTolerance: this.config.QUERN_JWT_CLOCK_TOLERANCE_SECONDS,
          requiredClaims: ['exp', 'sub'],
        });
        return { ok: true, claims: this.externalClaims(payload) };
      }
      const { payload } = await jwtVerify(
        token,
        (header) => {
          const key = header.kid ? this.keys.get(header.kid) : undefined;
          if (!key) throw new joseErrors.JWKSNoMatchingKey();
          return key;
        },
        {
          algorithms: [ALGORITHM],
          issuer: this.config.QUERN_JWT_ISSUER,
          audience: this.config.QUERN_JWT_AUDIENCE,
          clockTolerance: this.config.QUERN_JWT_CLOCK_TOLERANCE_SECONDS,
          requiredClaims: ['exp', 'sub', 'iat'],
        },
      );
      return { ok: true, claims: { kind: 'local', keyId: payload.sub as string, scopes: scopesOf(payload.scope) } };
    } catch (err) {
      return { ok: false, error: err instanceof joseErrors.JWTExpired ? 'expired_token' : 'invalid_token' };
    }
  }

  private externalClaims(payload: JWTPayload): TokenClaims {
    const tierClaim = payload[this.config.QUERN_OIDC_TIER_CLAIM];
    return {
      kind: 'external',
      subject: payload.sub as string,
      issuer: payload.iss as string,
      scopes: scopesOf(payload[this.config.QUERN_OIDC_SCOPE_CLAIM]),
      tier: tierClaim === 'premium' ? 'premium' : 'free',
    };
  }
}

/** Owner id of an external identity: stable per issuer and subject, and not the subject itself. */
export function externalPrincipalId(issuer: string, subject: string): string {
  const digest = createHash('sha256').update(`${issuer}\u0000${subject}`).digest('base64url');
  return `usr_${digest.replace(/[-_]/g, '').slice(0, 22)}`;
}
