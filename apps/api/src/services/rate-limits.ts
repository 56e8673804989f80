import type { Config, KeySpace, RedisClient } from '@quern/shared';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Principal, Tier } from './principal';

interface Budget {
  name: 'minute' | 'hour';
  seconds: number;
  limiter: RateLimiterRedis;
}

export interface RateDecision {
  /** `RateLimit-Policy` and `RateLimit` (IETF httpapi-ratelimit-headers), set on every limited route. */
  headers: Record<string, string>;
  /** Seconds to wait when refused; undefined when allowed. */
  retryAfter: number | undefined;
}

/**
 * Per-principal budgets per tier (a minute and an hour window), and a limit on failed
 * authentications per client address. Counters live in Redis (rate-limiter-flexible's atomic
 * Lua), so every API process shares them. If Redis cannot be reached the calls throw and the
 * request is refused with 503: traffic is never let through unlimited.
 */
export class RateLimits {
  private readonly budgets: Record<Tier, Budget[]>;
  private readonly authFailures: RateLimiterRedis;
  private readonly redis: RedisClient;
  /** Addresses seen not blocked, and when: rechecked in Redis after a second (bounded size). */
  private readonly clear = new Map<string, number>();

  constructor(redis: RedisClient, keys: KeySpace, config: Config) {
    const make = (name: string, points: number, seconds: number) =>
      new RateLimiterRedis({
        storeClient: redis,
        keyPrefix: keys.rateLimit(name),
        points,
        duration: seconds,
        rejectIfRedisNotReady: true,
      });
    const tier = (t: Tier, perMinute: number, perHour: number): Budget[] => [
      ...(perMinute > 0 ? [{ name: 'minute' as const, seconds: 60, limiter: make(`${t}:minute`, perMinute, 60) }] : []),
      ...(perHour > 0 ? [{ name: 'hour' as const, seconds: 3600, limiter: make(`${t}:hour`, perHour, 3600) }] : []),
    ];
    this.budgets = {
      free: tier('free', config.QUERN_RATE_FREE_PER_MINUTE, config.QUERN_RATE_FREE_PER_HOUR),
      premium: tier('premium', config.QUERN_RATE_PREMIUM_PER_MINUTE, config.QUERN_RATE_PREMIUM_PER_HOUR),
    };
    this.authFailures = make('authfail', config.QUERN_AUTH_FAILURES_PER_MINUTE, 60);
    this.redis = redis;
  }

  /** Counts one request against each of the principal's budgets. */
  async consume(principal: Principal): Promise<RateDecision> {
    const budgets = this.budgets[principal.tier];
    if (budgets.length === 0) return { headers: {}, retryAfter: undefined };
    const results = await Promise.all(
      budgets.map(async (b) => {
        try {
          const res = await b.limiter.consume(principal.id, 1);
          return { budget: b, remaining: res.remainingPoints, msBeforeNext: res.msBeforeNext, refused: false };
        } catch (err) {
          if (err instanceof RateLimiterRes) {
            return { budget: b, remaining: err.remainingPoints, msBeforeNext: err.msBeforeNext, refused: true };
          }
          throw err; // Redis error: the caller answers 503
        }
      }),
    );
    const policy = results.map(({ budget }) => `"${budget.name}";q=${budget.limiter.points};w=${budget.seconds}`);
    const refused = results.filter((r) => r.refused);
    if (refused.length > 0) {
      // A refused request is served by no one: the budgets that had room get their point back, so
      // a client retrying through a minute's refusals does not also spend its hour.
      await Promise.all(
        results
          .filter((r) => !r.refused)
          .map(async (r) => {
            await r.budget.limiter.reward(principal.id, 1);
            r.remaining += 1;
          }),
      );
    }
    const state = results.map(
      ({ budget, remaining, msBeforeNext }) => `"${budget.name}";r=${remaining};t=${Math.ceil(msBeforeNext / 1000)}`,
    );
    const retryAfter =
      refused.length > 0 ? Math.max(1, ...refused.map((r) => Math.ceil(r.msBeforeNext / 1000))) : undefined;
    return { headers: { 'ratelimit-policy': policy.join(', '), ratelimit: state.join(', ') }, retryAfter };
  }

  /** Seconds until `address` may try to authenticate again, or 0 when it may now. */
  async authBlockedFor(address: string): Promise<number> {
    // A client that just passed this check is not asked again for a second: the check guards
    // against guessing, and one second of a single process's traffic is not a guessing attack.
    const seen = this.clear.get(address);
    if (seen !== undefined && Date.now() - seen < 1_000) return 0;
    // Two plain reads, not the library's MULTI: reads still work when Redis is full (maxmemory),
    // so a full Redis answers 503 at the write that needs room, not at every request.
    const key = this.authFailures.getKey(address);
    const [count, ttl] = (await this.redis.pipeline().get(key).pttl(key).exec()) ?? [];
    if (count?.[0] || ttl?.[0]) throw count?.[0] ?? ttl?.[0];
    if (Number(count?.[1] ?? 0) < this.authFailures.points) {
      if (this.clear.size > 10_000) this.clear.clear();
      this.clear.set(address, Date.now());
      return 0;
    }
    return Math.max(1, Math.ceil(Number(ttl?.[1] ?? 1000) / 1000));
  }

  async recordAuthFailure(address: string): Promise<void> {
    this.clear.delete(address);
    try {
      await this.authFailures.consume(address, 1);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
    }
  }
}
