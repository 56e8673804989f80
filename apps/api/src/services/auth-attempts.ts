import type { KeySpace, RedisClient } from '@quern/shared';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { AuthFailure, AuthResult, Principal } from './principal';

/** What `AuthAttempts` needs of the authenticator. */
export interface RecallingAuthenticator {
  authenticate(credential: string): Promise<AuthResult>;
  /** The principal of a credential this process verified within its cache lifetime, without Redis. */
  recall(credential: string): Principal | undefined;
}

export type AuthAttempt =
  | { ok: true; principal: Principal }
  | { ok: false; reason: AuthFailure }
  /** Too many failed attempts from this address: the credential was not checked. */
  | { ok: false; reason: 'blocked'; retryAfter: number };

/**
 * Authentication under a limit on failed attempts per client address, so keys cannot be guessed
 * at speed. A credential this process does not already know to be good takes one attempt from
 * the address's budget before it is checked (an atomic consume in Redis, so a parallel burst
 * cannot all see room), and gets it back when it passes; a credential that fails keeps it spent.
 * Concurrent checks of one credential from one address share one attempt, so a client's cold
 * burst with a good key is not mistaken for guessing. A credential known good (the
 * authenticator's cache) costs no write: only the address's block is read, at most once a second
 * (a known-good credential is no guess, so a block that began within that second can wait).
 */
export class AuthAttempts {
  private readonly limiter: RateLimiterRedis;
  /**
   * Addresses seen with room, and when (bounded size): a credential known good skips Redis for a
   * second after. A failed credential or a refused attempt drops the entry.
   */
  private readonly clear = new Map<string, number>();
  private readonly inFlight = new Map<string, Promise<AuthAttempt>>();

  constructor(
    private readonly auth: RecallingAuthenticator,
    private readonly redis: RedisClient,
    keys: KeySpace,
    failuresPerMinute: number,
  ) {
    this.limiter = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix: keys.rateLimit('authfail'),
      points: failuresPerMinute,
      duration: 60,
      rejectIfRedisNotReady: true,
    });
  }

  async authenticate(address: string, credential: string): Promise<AuthAttempt> {
    const known = this.auth.recall(credential);
    if (known) {
      const retryAfter = await this.blockedFor(address);
      return retryAfter > 0 ? { ok: false, reason: 'blocked', retryAfter } : { ok: true, principal: known };
    }
    const key = `${address}\n${credential}`;
    const shared = this.inFlight.get(key);
    if (shared) return shared;
    const attempt = this.checkReserved(address, credential).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, attempt);
    return attempt;
  }

  private async checkReserved(address: string, credential: string): Promise<AuthAttempt> {
    let reserved: RateLimiterRes;
    try {
      reserved = await this.limiter.consume(address, 1);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err; // Redis error: the caller answers 503
      this.clear.delete(address);
      return { ok: false, reason: 'blocked', retryAfter: Math.max(1, Math.ceil(err.msBeforeNext / 1000)) };
    }
    // Given back only within its window: after it, a reward would start the next one below zero.
    const windowEnds = Date.now() + reserved.msBeforeNext;
    const refund = async () => {
      if (Date.now() < windowEnds) await this.limiter.reward(address, 1);
    };
    let result: AuthResult;
    try {
      result = await this.auth.authenticate(credential);
    } catch (err) {
      // Not a guess that failed, but a check that could not be made.
      await refund().catch(() => undefined);
      throw err;
    }
    if (!result.ok) {
      this.clear.delete(address);
      return result;
    }
    await refund();
    this.markClear(address);
    return result;
  }

  private markClear(address: string): void {
    if (this.clear.size > 10_000) this.clear.clear();
    this.clear.set(address, Date.now());
  }

  /** Seconds until `address` may try again, 0 when it may now. */
  private async blockedFor(address: string): Promise<number> {
    const seen = this.clear.get(address);
    if (seen !== undefined && Date.now() - seen < 1_000) return 0;
    // Two plain reads, not the library's MULTI: reads still work when Redis is full (maxmemory).
    const key = this.limiter.getKey(address);
    const [count, ttl] = (await this.redis.pipeline().get(key).pttl(key).exec()) ?? [];
    if (count?.[0] || ttl?.[0]) throw count?.[0] ?? ttl?.[0];
    if (Number(count?.[1] ?? 0) < this.limiter.points) {
      this.markClear(address);
      return 0;
    }
    return Math.max(1, Math.ceil(Number(ttl?.[1] ?? 1000) / 1000));
  }
}
