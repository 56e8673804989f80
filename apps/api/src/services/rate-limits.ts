import type { ApiConfig, KeySpace, RedisClient } from '@quern/shared';
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
 * Per-principal budgets per tier (a minute and an hour window); the limit on failed
 * authentications per client address is `AuthAttempts`'s. Counters live in Redis
 * (rate-limiter-flexible's atomic Lua), so every API process shares them. If Redis cannot be reached the calls throw and the
 * request is refused with 503: traffic is never let through unlimited.
 */
export class RateLimits {
  private readonly budgets: Record<Tier, Budget[]>;

  constructor(redis: RedisClient, keys: KeySpace, config: ApiConfig) {
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
}
