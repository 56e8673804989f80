import type { ApiConfig, KeySpace, RedisClient } from '@quern/shared';
import type { Principal, Tier } from './principal';

interface Budget {
  name: 'minute' | 'hour';
  seconds: number;
  points: number;
  /** The counter's key without the principal (`<prefix>:<tier>:<window>`). */
  prefix: string;
}

export interface RateDecision {
  /** `RateLimit-Policy` and `RateLimit` (IETF httpapi-ratelimit-headers), set on every limited route. */
  headers: Record<string, string>;
  /** Seconds to wait when refused; undefined when allowed. */
  retryAfter: number | undefined;
}

/**
 * Every window of one principal in one script: a request is counted in all of them or, when one
 * has no room, in none (a refused request is served by no one, so a client retrying through a
 * minute's refusals does not spend its hour). Fixed windows that start at a window's first
 * request, as rate-limiter-flexible keeps them (same keys and values: a rolling upgrade keeps the
 * counts). KEYS: a counter per window; ARGV: limit and window length in ms, per window. Returns
 * count and ms left per window, then 1 when refused.
 */
const CONSUME_LUA = `
local refused = 0
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') + 1 > tonumber(ARGV[2 * i - 1]) then refused = 1 end
end
local out = {}
for i = 1, #KEYS do
  local count
  if refused == 1 then count = tonumber(redis.call('GET', KEYS[i]) or '0') else count = redis.call('INCR', KEYS[i]) end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl == -1 then
    -- A counter without an expiry (written by hand, or by another writer) would refuse forever.
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
    ttl = tonumber(ARGV[2 * i])
  elseif ttl < 0 then
    -- No counter yet (refused on another window): a whole window.
    ttl = tonumber(ARGV[2 * i])
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
out[#out + 1] = refused
return out
`;

type ConsumeCommand = (...args: (string | number)[]) => Promise<number[]>;

/**
 * Per-principal budgets per tier (a minute and an hour window); the limit on failed
 * authentications per client address is `AuthAttempts`'s. Counters live in Redis, so every API
 * process shares them, and both windows are checked and counted by one script: one command per
 * request on the hot path (rate-limiter-flexible, used before, sent one script per window and a
 * second round trip to give points back). If Redis cannot be reached the call throws and the
 * request is refused with 503: traffic is never let through unlimited.
 */
export class RateLimits {
  private readonly budgets: Record<Tier, Budget[]>;
  /** The script per number of budgets (keys): 1 or 2. */
  private readonly consumeScripts: Partial<Record<number, ConsumeCommand>> = {};

  constructor(
    redis: RedisClient,
    private readonly keys: KeySpace,
    config: ApiConfig,
  ) {
    const tier = (t: Tier, perMinute: number, perHour: number): Budget[] => [
      ...(perMinute > 0
        ? [{ name: 'minute' as const, seconds: 60, points: perMinute, prefix: keys.rateLimit(`${t}:minute`) }]
        : []),
      ...(perHour > 0
        ? [{ name: 'hour' as const, seconds: 3600, points: perHour, prefix: keys.rateLimit(`${t}:hour`) }]
        : []),
    ];
    this.budgets = {
      free: tier('free', config.QUERN_RATE_FREE_PER_MINUTE, config.QUERN_RATE_FREE_PER_HOUR),
      premium: tier('premium', config.QUERN_RATE_PREMIUM_PER_MINUTE, config.QUERN_RATE_PREMIUM_PER_HOUR),
    };
    // A fixed number of keys per script: with auto-pipelining on a Cluster, ioredis places a
    // script's call by its first argument, which must then be a key (not the key count).
    for (const n of [1, 2]) {
      const name = `quernRateLimit${n}`;
      if (!(name in redis)) redis.defineCommand(name, { lua: CONSUME_LUA, numberOfKeys: n });
      this.consumeScripts[n] = (redis as unknown as Record<string, ConsumeCommand>)[name]?.bind(redis);
    }
  }

  /** Counts one request against each of the principal's budgets, or against none when one is spent. */
  async consume(principal: Principal): Promise<RateDecision> {
    const budgets = this.budgets[principal.tier];
    if (budgets.length === 0) return { headers: {}, retryAfter: undefined };
    const consume = this.consumeScripts[budgets.length] as ConsumeCommand;
    const reply = await consume(
      // The principal's windows, used together by one script: one slot (its hash tag on a spread Cluster).
      ...budgets.map((b) => `${b.prefix}:${this.keys.principal(principal.id)}`),
      ...budgets.flatMap((b) => [b.points, b.seconds * 1000]),
    );
    const refused = reply[budgets.length * 2] === 1;
    const policy = budgets.map((b) => `"${b.name}";q=${b.points};w=${b.seconds}`);
    const state = budgets.map((b, i) => {
      const count = Number(reply[i * 2]);
      const remaining = Math.max(0, b.points - count);
      return { budget: b, remaining, secondsLeft: Math.ceil(Number(reply[i * 2 + 1]) / 1000), full: count >= b.points };
    });
    // Refused: wait until every spent window has room again.
    const retryAfter = refused ? Math.max(1, ...state.filter((s) => s.full).map((s) => s.secondsLeft)) : undefined;
    return {
      headers: {
        'ratelimit-policy': policy.join(', '),
        ratelimit: state.map((s) => `"${s.budget.name}";r=${s.remaining};t=${s.secondsLeft}`).join(', '),
      },
      retryAfter,
    };
  }
}
