import type { KeySpace, RedisClient } from '@quern/shared';

/** What an origin's circuit says about one delivery to it. */
export type BreakerVerdict =
  /** Send it. `failures`: consecutive failures so far (a success resets them). */
  | { kind: 'closed'; failures: number }
  /** Half-open: send it as the one probe; its outcome closes or re-opens the circuit. */
  | { kind: 'probe' }
  /** Hold it back, without an attempt, until `until` (ms since epoch). */
  | { kind: 'open'; until: number }
  /** Another delivery is probing the origin now: hold this one back until about `until`. */
  | { kind: 'probing'; until: number };

export interface BreakerOptions {
  /** Consecutive failures that open the circuit; 0 turns the breaker off. */
  failures: number;
  /** First open period; each failed probe doubles it, up to 16×. */
  openMs: number;
  /** How long a probe may take before another delivery may probe (the delivery timeout and a margin). */
  probeMs: number;
}

/** A failure state untouched this long is forgotten: failures must be consecutive and recent. */
const IDLE_MS = 10 * 60 * 1000;

// State, one hash per origin: failures (consecutive), open_until, probe_until, opens (consecutive
// openings without a success, for the doubling). Times are the callers' clocks, in ms.
const CLAIM = `
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'open_until', 'probe_until', 'failures')
local openUntil = tonumber(s[1]) or 0
if openUntil == 0 then return {0, tonumber(s[3]) or 0} end
if now < openUntil then return {1, openUntil} end
local probeUntil = tonumber(s[2]) or 0
if now < probeUntil then return {2, probeUntil} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {3, 0}
`;

const FAIL = `
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local idle = tonumber(ARGV[4])
local openUntil = tonumber(redis.call('HGET', KEYS[1], 'open_until')) or 0
if now < openUntil then return {0, openUntil} end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if openUntil > 0 or failures >= threshold then
  local opens = redis.call('HINCRBY', KEYS[1], 'opens', 1)
  local ms = base * 2 ^ math.min(opens - 1, 4)
  local untilMs = now + ms
  redis.call('HSET', KEYS[1], 'open_until', untilMs, 'failures', 0, 'probe_until', 0)
  redis.call('PEXPIRE', KEYS[1], ms + idle)
  return {1, untilMs}
end
redis.call('PEXPIRE', KEYS[1], idle)
return {0, 0}
`;

/**
 * A circuit breaker per webhook receiver origin (`scheme://host:port`), kept in Redis so every
 * worker process sees the same state. `QUERN_WEBHOOK_BREAKER_FAILURES` consecutive failures
 * (timeout, connection failure, 5xx, 429) open it: for the open period the origin's deliveries
 * are held back without an attempt. Then one delivery probes it: a success closes the circuit, a
 * failure opens it again for twice as long (up to 16× `QUERN_WEBHOOK_BREAKER_OPEN_MS`).
 * A receiver that keeps timing out thus costs a few delivery slots per open period, not one per
 * delivery. Each check is one Redis round trip; each outcome at most one more.
 */
export class EndpointBreaker {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly options: BreakerOptions,
  ) {}

  get enabled(): boolean {
    return this.options.failures > 0;
  }

  /** The origin a delivery URL is judged by, or undefined for a URL that does not parse. */
  static originOf(url: string): string | undefined {
    try {
      return new URL(url).origin;
    } catch {
      return undefined;
    }
  }

  async check(origin: string, now = Date.now()): Promise<BreakerVerdict> {
    if (!this.enabled) return { kind: 'closed', failures: 0 };
    const [code, value] = (await this.redis.eval(
      CLAIM,
      1,
      this.keys.webhookBreaker(origin),
      now,
      this.options.probeMs,
    )) as [number, number];
    switch (code) {
      case 1:
        return { kind: 'open', until: value };
      case 2:
        return { kind: 'probing', until: value };
      case 3:
        return { kind: 'probe' };
      default:
        return { kind: 'closed', failures: value };
    }
  }

  /** The origin answered: close its circuit (nothing to write when it was closed with no failures). */
  async succeeded(origin: string, verdict: BreakerVerdict): Promise<void> {
    if (!this.enabled || (verdict.kind === 'closed' && verdict.failures === 0)) return;
    await this.redis.del(this.keys.webhookBreaker(origin));
  }

  /** The origin failed: returns when its circuit opened, if this failure opened it. */
  async failed(origin: string, now = Date.now()): Promise<{ openedUntil: number } | undefined> {
    if (!this.enabled) return undefined;
    const [opened, until] = (await this.redis.eval(
      FAIL,
      1,
      this.keys.webhookBreaker(origin),
      now,
      this.options.failures,
      this.options.openMs,
      IDLE_MS,
    )) as [number, number];
    return opened === 1 ? { openedUntil: until } : undefined;
  }
}

/** Whether an attempt's outcome counts against the receiver: it timed out, could not connect, or answered 5xx or 429. */
export function isEndpointFailure(status: number, failure: { permanent: boolean } | undefined): boolean {
  if (failure) return !failure.permanent;
  return status >= 500 || status === 429;
}
