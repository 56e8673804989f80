import type { KeySpace } from './keys';
import type { RedisClient } from './redis';
import { TurnBuffer } from './turn-buffer';

/**
 * Admission of inference jobs: the queue-depth cap of a model and the per-key cap on
 * queued-or-running rows, decided in one Lua script, so that concurrent submissions (from any
 * number of API processes) can never together pass either cap.
 *
 * The depth is what BullMQ holds waiting (`wait` list and `prioritized` set) plus the jobs
 * admitted but not added yet: each admission leaves the job's id in `queueAdmissions(model)`
 * until the script sees the job's hash exist (BullMQ added it; it is counted as waiting from
 * then on) or 30 s pass (an add that failed). That set only holds adds in flight, so walking it
 * costs the number of concurrent submissions, never the queue's length.
 *
 * A principal's rows are a hash `keyRows(owner)`: one field per job (its row count) and `total`.
 * The API adds a job's rows when it admits it; whoever ends the job releases them (the worker
 * for a job that completed or finally failed, expired or was canceled in its hands; the API for
 * a job canceled while queued). Releasing is idempotent (a field is removed once). A job whose
 * release is lost (a process died in between) is given up at its deadline plus `LEAK_GRACE_MS`:
 * each admission repairs a few such entries of its principal, so the count cannot drift for
 * longer than that.
 *
 * Keys of one model's queue and of one principal are used together: in a Redis Cluster they
 * share the prefix's hash tag (`{quern}`), as every Quern key does.
 */
/** BullMQ priorities (1 to 2^21) per priority class (1 to 100): each class has a band of its own. */
export const FAIR_BAND = Math.floor((2 ** 21 - 1) / 100);

export const ADMIT_LUA = `
local wait, prio, adm, rows, exp, fair, recent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local jobPrefix, id = ARGV[1], ARGV[2]
local n, now, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local rowCap, expiresAt, pendingTtl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local class, weight, quantum, owner = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12]
local recentTtl = tonumber(ARGV[13])
local stale = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 16)
for _, j in ipairs(stale) do
  local r = redis.call('HGET', rows, j)
  if r then
    redis.call('HDEL', rows, j)
    redis.call('HINCRBY', rows, 'total', -tonumber(r))
  end
  redis.call('ZREM', exp, j)
end
redis.call('ZREMRANGEBYSCORE', adm, '-inf', now - pendingTtl)
local pending = 0
for _, j in ipairs(redis.call('ZRANGE', adm, 0, -1)) do
  if j ~= id and redis.call('EXISTS', jobPrefix .. j) == 1 then
    redis.call('ZREM', adm, j)
  elseif j ~= id then
    pending = pending + 1
  end
end
local depth = redis.call('LLEN', wait) + redis.call('ZCARD', prio) + pending
if depth >= cap then return {1, depth} end
local held = tonumber(redis.call('HGET', rows, 'total') or '0')
local known = redis.call('HEXISTS', rows, id) == 1
if not known and rowCap > 0 and held + n > rowCap then return {2, held} end
redis.call('ZADD', adm, now, id)
redis.call('PEXPIRE', adm, pendingTtl * 2)
if not known then
  redis.call('HSET', rows, id, n)
  held = redis.call('HINCRBY', rows, 'total', n)
  redis.call('ZADD', exp, expiresAt, id)
  local ttl = expiresAt - now
  if redis.call('PTTL', rows) < ttl then
    redis.call('PEXPIRE', rows, ttl)
    redis.call('PEXPIRE', exp, ttl)
  end
end
-- The owner's recent jobs (GET /v1/jobs), at most 10,000, kept as long as failed jobs are.
redis.call('ZADD', recent, now, id)
redis.call('ZREMRANGEBYRANK', recent, 0, -10001)
redis.call('PEXPIRE', recent, recentTtl)
-- Mean rows of recent jobs: a queued job's rows ahead are estimated from it (GET /v1/jobs/{id}).
local mean = tonumber(redis.call('HGET', fair, 'rows_mean') or n)
redis.call('HSET', fair, 'rows_mean', mean * 0.95 + n * 0.05)
redis.call('PEXPIRE', fair, 86400000)
if quantum <= 0 then return {0, held, class} end
-- Fair share: start-time fair queuing within the class's band of BullMQ priorities.
local TWO32 = 4294967296
-- Scores near 2^53 must reach Redis as exact integers, not in Lua's 14-digit number format.
local function int(x) return string.format('%.0f', x) end
local lo = (class - 1) * BAND + 1
local hi = lo + BAND - 1
local base = tonumber(redis.call('HGET', fair, 'b' .. class) or '0')
local head = redis.call('ZRANGEBYSCORE', prio, int(lo * TWO32), int((hi + 1) * TWO32 - 1), 'LIMIT', 0, 1, 'WITHSCORES')
-- Virtual time: the start tag of the band's first queued job; with none queued (idle, or every
-- job admitted but not added yet), the last one seen, so that keys arriving together start together.
local v = tonumber(redis.call('HGET', fair, 'v' .. class) or '0')
if head[2] then
  local at = base + (math.floor(tonumber(head[2]) / TWO32) - lo)
  if at > v then
    v = at
    redis.call('HSET', fair, 'v' .. class, v)
  end
end
local fkey = 'f' .. class .. ':' .. owner
local s = math.max(v, tonumber(redis.call('HGET', fair, fkey) or '0'))
if s - base >= BAND / 2 and head[2] then
  -- Rebase: shift every queued job of the band down by the head's offset, order kept.
  local d = math.floor(v - base)
  if d > 0 then
    local queued = redis.call('ZRANGEBYSCORE', prio, int(lo * TWO32), int((hi + 1) * TWO32 - 1), 'WITHSCORES')
    for i = 1, #queued, 2 do
      local score = tonumber(queued[i + 1]) - d * TWO32
      redis.call('ZADD', prio, int(score), queued[i])
      redis.call('HSET', jobPrefix .. queued[i], 'priority', math.floor(score / TWO32))
    end
    base = base + d
    redis.call('HSET', fair, 'b' .. class, base)
    redis.call('HINCRBY', fair, 'rebases', 1)
  end
end
local offset = math.min(BAND - 1, math.floor(s - base))
redis.call('HSET', fair, fkey, s + n / (weight * quantum))
redis.call('PEXPIRE', fair, 86400000)
return {0, held, lo + offset}
`.replace(/BAND/g, String(FAIR_BAND));

/** Jobs read at the front of each band by `oldestWaitingTimestamp`. */
const OLDEST_SCAN_PER_BAND = 64;
const TWO32 = 2 ** 32;

/** The parts of a BullMQ queue the oldest-job reader needs (a `Queue` has them). */
export interface WaitingQueue {
  /** BullMQ 6: the Redis backend, whose `client` is the queue's connection. */
  getBackend(): { client: Promise<unknown> };
  toKey(type: string): string;
}

/**
 * Enqueue time of the oldest job still waiting in a queue, or undefined. This module gives jobs
 * their BullMQ priorities (one band per priority class, fair-share order inside it), so it reads
 * them back: BullMQ keeps prioritized jobs in a sorted set scored `priority · 2³² + arrival`. With
 * fair share a key's jobs keep their order, and each waiting key's first job starts near the
 * front of its band, so the oldest is among the first jobs of each band (exact while fewer than
 * 64 keys of one class have jobs waiting; past that, the oldest of the first 64). With fair share
 * off a class's jobs have its own priority, first in first out. Plain jobs wait in the `wait`
 * list, oldest at its right end. At most one read per band and class that has jobs, at scrape
 * time, never on a request's path.
 */
export async function oldestWaitingTimestamp(queue: WaitingQueue): Promise<number | undefined> {
  const redis = (await queue.getBackend().client) as RedisClient;
  const prioritized = queue.toKey('prioritized');
  const ranges: [number, number, number][] = [];
  for (let c = 1; c <= 100; c++) {
    const lo = (c - 1) * FAIR_BAND + 1;
    ranges.push([lo * TWO32, (lo + FAIR_BAND) * TWO32 - 1, OLDEST_SCAN_PER_BAND]);
    // Fair share off: the class's own priority number (inside the first band).
    ranges.push([c * TWO32, (c + 1) * TWO32 - 1, 1]);
  }
  const pipeline = redis.pipeline();
  pipeline.lrange(queue.toKey('wait'), -1, -1);
  for (const [min, max, count] of ranges) pipeline.zrangebyscore(prioritized, min, max, 'LIMIT', 0, count);
  const replies = (await pipeline.exec()) ?? [];
  const ids = new Set<string>();
  for (const [err, found] of replies) if (!err) for (const id of found as string[]) ids.add(id);
  if (ids.size === 0) return undefined;
  const stamps = redis.pipeline();
  for (const id of ids) stamps.hget(queue.toKey(id), 'timestamp');
  const values = ((await stamps.exec()) ?? [])
    .map(([err, value]) => (err ? Number.NaN : Number(value)))
    .filter((t) => Number.isFinite(t) && t > 0);
  return values.length > 0 ? Math.min(...values) : undefined;
}

export const RELEASE_LUA = `
local r = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not r then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[1], 'total', -tonumber(r)) <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 1
`;

/** How long after its deadline a job's rows count for its principal at most, should no release come. */
export const LEAK_GRACE_MS = 10 * 60_000;
/** How long an admission counts towards the depth while its job is not in the queue. */
export const PENDING_ADMISSION_MS = 30_000;

export interface AdmitRequest {
  /** BullMQ's key prefix of the model's queue (`prefix:queueName`). */
  queueKey: string;
  model: string;
  owner: string;
  jobId: string;
  rows: number;
  /** The queue's depth cap. */
  maxDepth: number;
  /** The principal's cap on queued-or-running rows (0: none). */
  maxRows: number;
  deadlineAt: number;
  /** The job's priority class (1 highest, up to 100): the tier's, or a lower one the caller asked for. */
  priorityClass: number;
  /** Fair share: the key's weight (1 normal), and rows per step of virtual time (0: fair share off). */
  weight: number;
  quantumRows: number;
  /** How long the owner's list of recent jobs is kept after its last job (ms). */
  recentJobsTtlMs: number;
}

/** Why a job was not admitted, with the number that was over its cap. */
export type AdmitDecision =
  /** `priority`: the BullMQ priority to add the job with (its class's own number when fair share is off). */
  | { kind: 'admitted'; heldRows: number; priority: number }
  | { kind: 'queue_full'; depth: number }
  | { kind: 'concurrency_limited'; heldRows: number };

type ScriptCommand = (...args: (string | number)[]) => Promise<unknown>;

function command(redis: RedisClient, name: string, lua: string, keys: number): ScriptCommand {
  if (!(name in redis)) redis.defineCommand(name, { lua, numberOfKeys: keys });
  const fn = (redis as unknown as Record<string, ScriptCommand>)[name] as ScriptCommand;
  return fn.bind(redis);
}

/**
 * The per-principal row ledger and the queue-depth cap (see `ADMIT_LUA`): the API admits, the
 * API and the workers release. Releases of one event-loop turn go out as one pipeline.
 */
export class AdmissionLedger {
  private readonly admitScript: ScriptCommand;
  private readonly releases: TurnBuffer<{ owner: string; jobId: string }>;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    onReleaseError: (err: Error) => void = () => {},
  ) {
    this.admitScript = command(redis, 'quernAdmit', ADMIT_LUA, 7);
    command(redis, 'quernReleaseRows', RELEASE_LUA, 2);
    this.releases = new TurnBuffer((items) => {
      const pipeline = this.redis.pipeline() as unknown as Record<string, ScriptCommand> & {
        exec: () => Promise<unknown>;
      };
      for (const { owner, jobId } of items) {
        pipeline.quernReleaseRows?.(this.keys.keyRows(owner), this.keys.keyRowsExpiry(owner), jobId);
      }
      pipeline.exec().catch((err: Error) => onReleaseError(err));
    }, 'turn');
  }

  async admit(req: AdmitRequest): Promise<AdmitDecision> {
    const now = Date.now();
    const reply = (await this.admitScript(
      `${req.queueKey}:wait`,
      `${req.queueKey}:prioritized`,
      this.keys.queueAdmissions(req.model),
      this.keys.keyRows(req.owner),
      this.keys.keyRowsExpiry(req.owner),
      this.keys.fairShare(req.model),
      this.keys.ownerJobs(req.owner),
      `${req.queueKey}:`,
      req.jobId,
      req.rows,
      now,
      req.maxDepth,
      req.maxRows,
      Math.max(now, req.deadlineAt) + LEAK_GRACE_MS,
      PENDING_ADMISSION_MS,
      req.priorityClass,
      req.weight,
      req.quantumRows,
      req.owner,
      req.recentJobsTtlMs,
    )) as [number, number, number?];
    const [code, value, priority] = reply;
    if (code === 1) return { kind: 'queue_full', depth: Number(value) };
    if (code === 2) return { kind: 'concurrency_limited', heldRows: Number(value) };
    return { kind: 'admitted', heldRows: Number(value), priority: Number(priority ?? req.priorityClass) };
  }

  /** The same, now: before the job's id is admitted again (a client's retry). */
  async releaseNow(owner: string, jobId: string): Promise<void> {
    const fn = (this.redis as unknown as Record<string, ScriptCommand>).quernReleaseRows as ScriptCommand;
    await fn.call(this.redis, this.keys.keyRows(owner), this.keys.keyRowsExpiry(owner), jobId);
  }

  /** A page of the owner's recent job ids, newest first, created before `before` (epoch ms, exclusive). */
  async recentJobs(owner: string, before: number, count: number): Promise<{ id: string; at: number }[]> {
    const flat = await this.redis.zrevrangebyscore(
      this.keys.ownerJobs(owner),
      Number.isFinite(before) ? `(${before}` : '+inf',
      '-inf',
      'WITHSCORES',
      'LIMIT',
      0,
      count,
    );
    const out: { id: string; at: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i] as string, at: Number(flat[i + 1]) });
    return out;
  }

  /** The job ended (or was never added): its rows stop counting for its owner. Idempotent. */
  release(owner: string, jobId: string): void {
    this.releases.push({ owner, jobId });
  }

  /**
   * Where a queued job stands: jobs ahead of it (its rank in BullMQ's priority order, after the
   * `wait` list), and the mean rows of recent jobs of its model. O(log n): one ZRANK, never a walk.
   */
  async standing(queueKey: string, model: string, jobId: string): Promise<{ ahead: number; meanRows: number } | null> {
    const [rank, waiting, mean] = await Promise.all([
      this.redis.zrank(`${queueKey}:prioritized`, jobId),
      this.redis.llen(`${queueKey}:wait`),
      this.redis.hget(this.keys.fairShare(model), 'rows_mean'),
    ]);
    if (rank === null) return null;
    return { ahead: waiting + rank, meanRows: Number(mean ?? 1) || 1 };
  }

  /** Rows the principal has queued or running now. */
  async heldRows(owner: string): Promise<number> {
    return Number((await this.redis.hget(this.keys.keyRows(owner), 'total')) ?? 0);
  }
}
