import type { KeySpace } from './keys';
import { type BatchCommand, execBatch, type RedisClient } from './redis';
import { TurnBuffer } from './turn-buffer';

/**
 * Admission of inference jobs: the queue-depth cap of a model's queue and the per-key cap on
 * queued-or-running rows, each decided in one Lua script, so that concurrent submissions (from
 * any number of API processes) can never together pass either cap.
 *
 * The depth is what BullMQ holds waiting (`wait` list and `prioritized` set) plus the jobs
 * admitted but not added yet: each admission leaves the job's id in `queueAdmissions(model, partition)`
 * until the API clears it as its add returns (`added`, or `notAdded` for an add that failed),
 * or a later admission finds it over a second old with its job's hash there, or
 * `PENDING_ADMISSION_MS` pass (a process that died in between). So a job removed from the queue
 * (canceled, obliterated, removed by hand) stops counting at once. The count is a ZCARD; at most
 * 8 old entries are checked per admission, so nothing walks the set below the cap. Between an
 * add's return and its clearing (one event-loop turn) the job counts twice, so an admission that
 * finds the queue at its cap first drops the entries whose job is there, then decides.
 *
 * A principal's rows are a hash `keyRows(owner)`: one field per job (its row count) and `total`.
 * The API adds a job's rows when it admits it; whoever ends the job releases them (the worker
 * for a job that completed or finally failed, expired or was canceled in its hands; the API for
 * a job canceled while queued). Releasing is idempotent (a field is removed once). A job whose
 * release is lost (a process died in between) is given up at its deadline plus `LEAK_GRACE_MS`:
 * each admission repairs a few such entries of its principal, so the count cannot drift for
 * longer than that.
 *
 * The two caps are two scripts, each on the keys of one slot, so that a Redis Cluster may hold
 * a queue and a principal on different shards (see `KeySpace`): `ROWS_LUA`, on the principal's
 * keys (its row ledger and recent jobs), runs first and holds the job's rows; `ADMIT_LUA`, on the
 * queue's keys (BullMQ's `wait` and `prioritized`, the admissions and the fair-share state), then
 * checks the depth, and a refusal there gives the rows back (`UNROWS_LUA`). Each cap is counted
 * in one script, so neither is ever passed; for the one round trip a refused job's rows are held,
 * a concurrent job of the same principal near its cap may be told `concurrency_limited` where a
 * moment later it would have fitted. Where every key shares one slot (no Cluster, or a prefix
 * with a hash tag) the two steps run as one script (`ADMIT_BOTH_LUA`): one round trip, and no
 * window at all.
 */
/** BullMQ priorities (1 to 2^21) per priority class (1 to 100): each class has a band of its own. */
export const FAIR_BAND = Math.floor((2 ** 21 - 1) / 100);
/** Jobs a rebase moves per admission at most (see `ADMIT_LUA`): bounds one script's time at any depth. */
export const REBASE_CHUNK = 128;

/** The principal's step: repairs leaked entries, checks the row cap, holds the rows, lists the job. */
export const ROWS_LUA = `
local rows, exp, recent = KEYS[1], KEYS[2], KEYS[3]
local id, n, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rowCap, expiresAt, recentTtl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local stale = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 16)
for _, j in ipairs(stale) do
  local r = redis.call('HGET', rows, j)
  if r then
    redis.call('HDEL', rows, j)
    redis.call('HINCRBY', rows, 'total', -tonumber(r))
  end
  redis.call('ZREM', exp, j)
end
local held = tonumber(redis.call('HGET', rows, 'total') or '0')
local known = redis.call('HEXISTS', rows, id) == 1
if not known and rowCap > 0 and held + n > rowCap then return {2, held} end
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
local listed = redis.call('ZSCORE', recent, id) and 1 or 0
redis.call('ZADD', recent, now, id)
redis.call('ZREMRANGEBYRANK', recent, 0, -10001)
redis.call('PEXPIRE', recent, recentTtl)
return {0, held, known and 0 or 1, listed}
`;

/**
 * Takes back what `ROWS_LUA` wrote for a job its queue then refused: its rows, and its listing
 * unless it was listed before (`ARGV[2]` = 1: a client's retry of a job that still exists).
 */
export const UNROWS_LUA = `
local r = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
-- A job listed before (a client's retry of it) stays listed: it still exists.
if ARGV[2] ~= '1' then redis.call('ZREM', KEYS[3], ARGV[1]) end
if not r then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[1], 'total', -tonumber(r)) <= 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1
`;

/** The queue's step: the depth cap, the admission in flight, and the job's fair-share priority. */
export const ADMIT_LUA = `
local wait, prio, adm, fair = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jobPrefix, id = ARGV[1], ARGV[2]
local n, now, cap, pendingTtl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local class, weight, quantum, owner = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local chunkSize = tonumber(ARGV[11])
redis.call('ZREMRANGEBYSCORE', adm, '-inf', now - pendingTtl)
-- The API clears an admission as its add returns. One older than a second whose job is in the
-- queue lost its clearing (a process died in between): it goes now rather than at pendingTtl.
for _, j in ipairs(redis.call('ZRANGEBYSCORE', adm, '-inf', now - 1000, 'LIMIT', 0, 8)) do
  if redis.call('EXISTS', jobPrefix .. j) == 1 then redis.call('ZREM', adm, j) end
end
local pending = redis.call('ZCARD', adm)
if redis.call('ZSCORE', adm, id) then pending = pending - 1 end
local depth = redis.call('LLEN', wait) + redis.call('ZCARD', prio) + pending
if depth >= cap then
  -- At the cap, a job whose add has returned but whose clearing has not gone out yet counts twice
  -- (queued, and as an add in flight): those go before a refusal. Walks the adds in flight only.
  for _, j in ipairs(redis.call('ZRANGE', adm, 0, -1)) do
    if j ~= id and redis.call('EXISTS', jobPrefix .. j) == 1 then
      redis.call('ZREM', adm, j)
      depth = depth - 1
    end
  end
  if depth >= cap then return {1, depth} end
end
redis.call('ZADD', adm, now, id)
redis.call('PEXPIRE', adm, pendingTtl * 2)
-- The fast lane: a sync job is pushed to a worker's channel as it is admitted (one write from the
-- API, nothing pushed for a refused job), unless its queue is paused (BullMQ's meta.paused) or
-- holds ARGV[14] jobs or more: a push must not overtake a queue (its order, priorities, fair share).
if ARGV[12] and ARGV[12] ~= '' and depth < tonumber(ARGV[14])
  and redis.call('HEXISTS', jobPrefix .. 'meta', 'paused') == 0 then
  redis.call('PUBLISH', ARGV[12], ARGV[13])
end
-- Mean rows of recent jobs: a queued job's rows ahead are estimated from it (GET /v1/jobs/{id}).
local mean = tonumber(redis.call('HGET', fair, 'rows_mean') or n)
redis.call('HSET', fair, 'rows_mean', mean * 0.95 + n * 0.05)
redis.call('PEXPIRE', fair, 86400000)
if quantum <= 0 then return {0, class} end
-- Fair share: start-time fair queuing within the class's band of BullMQ priorities.
local TWO32 = 4294967296
-- Scores near 2^53 must reach Redis as exact integers, not in Lua's 14-digit number format.
local function int(x) return string.format('%.0f', x) end
local lo = (class - 1) * BAND + 1
local hi = lo + BAND - 1
local bKey, dKey, cKey = 'b' .. class, 'rd' .. class, 'rc' .. class
local st = redis.call('HMGET', fair, bKey, dKey, cKey, 'v' .. class, 'f' .. class .. ':' .. owner)
local base = tonumber(st[1] or '0')
-- A rebase in progress (see below): shift d; jobs at priorities below the cursor have been moved
-- (their priority is lo + tag - base), those at or above it not yet (lo + tag - (base - d)).
local d = tonumber(st[2] or '0')
local cursor = tonumber(st[3] or '0')
local function tagAt(p)
  if d > 0 and p >= cursor then return base - d + (p - lo) end
  return base + (p - lo)
end
local head = redis.call('ZRANGEBYSCORE', prio, int(lo * TWO32), int((hi + 1) * TWO32 - 1), 'LIMIT', 0, 1, 'WITHSCORES')
local headAt = head[2] and math.floor(tonumber(head[2]) / TWO32)
-- Virtual time: the start tag of the band's first queued job; with none queued (idle, or every
-- job admitted but not added yet), the last one seen, so that keys arriving together start together.
local v = tonumber(st[4] or '0')
local vMoved = false
if headAt then
  local at = tagAt(headAt)
  if at > v then
    v = at
    vMoved = true
  end
end
local fkey = 'f' .. class .. ':' .. owner
local s = math.max(v, tonumber(st[5] or '0'))
if d == 0 and headAt and s - base >= BAND / 2 then
  -- Rebase: every queued job of the band moves down by the head's offset, order kept, in chunks
  -- of at most chunkSize jobs per admission from the head on (each chunk resumes at the cursor).
  -- Only for a shift of a quarter band or more: a key whose own backlog is that long is placed
  -- at the band's end meanwhile, rather than the queue rewritten for a few numbers.
  local shift = math.min(math.floor(v - base), headAt - lo)
  if shift >= BAND / 4 then
    d, cursor, base = shift, lo, base + shift
    redis.call('HSET', fair, bKey, base, dKey, d, cKey, cursor)
    redis.call('HINCRBY', fair, 'rebases', 1)
  end
end
if d > 0 then
  local chunk = redis.call('ZRANGEBYSCORE', prio, int(cursor * TWO32), int((hi + 1) * TWO32 - 1), 'LIMIT', 0, chunkSize, 'WITHSCORES')
  local last = cursor
  for i = 1, #chunk, 2 do
    local score = tonumber(chunk[i + 1])
    last = math.floor(score / TWO32)
    -- BullMQ's layout: score = priority * 2^32 + arrival counter; the counter (its order among
    -- equal priorities) is kept, and so is the job's own priority field (read again on a retry).
    score = score - d * TWO32
    redis.call('ZADD', prio, int(score), chunk[i])
    redis.call('HSET', jobPrefix .. chunk[i], 'priority', math.floor(score / TWO32))
  end
  if #chunk < chunkSize * 2 then
    d = 0
    redis.call('HDEL', fair, dKey, cKey)
  else
    cursor = last
    redis.call('HSET', fair, cKey, cursor)
  end
end
-- A tag on the side of the cursor not moved yet is placed by the old base: the walk moves it later.
local offset = s - base
if d > 0 and lo + s - (base - d) >= cursor then offset = s - (base - d) end
offset = math.max(0, math.min(BAND - 1, math.floor(offset)))
if vMoved then
  redis.call('HSET', fair, fkey, s + n / (weight * quantum), 'v' .. class, v)
else
  redis.call('HSET', fair, fkey, s + n / (weight * quantum))
end
return {0, lo + offset}
`.replace(/BAND/g, String(FAIR_BAND));

/**
 * Both steps in one script, for a layout where every key shares one slot (no Cluster, or a
 * prefix with a hash tag): the principal's step, then the queue's, and the rows given back if the
 * queue refuses, in one round trip instead of two (the idle path has no Redis hop to spare).
 * Each step is the script above as a function of its own keys and arguments.
 */
export const ADMIT_BOTH_LUA = `
local function rowsStep(KEYS, ARGV)
${ROWS_LUA}
end
local function admitStep(KEYS, ARGV)
${ADMIT_LUA}
end
local function unrowsStep(KEYS, ARGV)
${UNROWS_LUA}
end
local owner = {KEYS[1], KEYS[2], KEYS[3]}
local r = rowsStep(owner, {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]})
if r[1] == 2 then return {2, r[2]} end
local a = admitStep({KEYS[4], KEYS[5], KEYS[6], KEYS[7]},
  {ARGV[7], ARGV[1], ARGV[2], ARGV[3], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14],
   ARGV[15], ARGV[16], ARGV[17]})
if a[1] == 1 then
  if r[3] == 1 then unrowsStep(owner, {ARGV[1], tostring(r[4])}) end
  return {1, a[2]}
end
return {0, r[2], a[2]}
`;

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

/**
 * A job BullMQ put back after a failed attempt (in `delayed` for its backoff, or queued again) or
 * after a stall: BullMQ re-adds it with the priority its hash holds, which a rebase since its
 * admission may have made late, and a new arrival counter puts behind the jobs of its number. It
 * goes to the front of its class's band instead (it had reached the front once already): the
 * `priority` field, read when the delay ends, and its score if it is queued (the band's first
 * number, arrival counter 0). Its class is the job data's `priority`.
 */
export const REQUEUED_LUA = `
local prio, job, id = KEYS[1], KEYS[2], ARGV[1]
local current = tonumber(redis.call('HGET', job, 'priority') or '0')
if current == 0 then return 0 end
local ok, data = pcall(cjson.decode, redis.call('HGET', job, 'data') or '')
local class = ok and type(data) == 'table' and tonumber(data.priority)
if not class or class < 1 or class > 100 then return 0 end
local lo = (math.floor(class) - 1) * BAND + 1
redis.call('HSET', job, 'priority', lo)
local score = redis.call('ZSCORE', prio, id)
if not score then return current ~= lo and 1 or 0 end
-- Arrival counter 0: ahead of the band's jobs of the same number, which BullMQ counted from 1.
if tonumber(score) == lo * 4294967296 then return 0 end
redis.call('ZADD', prio, string.format('%.0f', lo * 4294967296), id)
return 1
`.replace(/BAND/g, String(FAIR_BAND));

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

/**
 * A queued job's standing, never worse than an earlier read of the same job said: the floors
 * (`qpos` jobs ahead, `qrows` their rows, `qeta` the expected start, epoch ms) live in the job's
 * own BullMQ hash, so they go with the job, and are stamped with its `ats` (BullMQ's count of
 * starts): a job BullMQ puts back in the queue after a failed attempt starts a new estimate.
 * The rows ahead are estimated from the mean rows of the model's recent jobs; the start from the
 * jobs ahead and `ARGV[3]`, the completions per second (0: unknown, no new estimate).
 * Reply: nil when the job is not waiting in the `prioritized` set, else {ahead, rows, start|nil}.
 */
export const STANDING_LUA = `
local prio, wait, fair, job = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now, rate = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rank = redis.call('ZRANK', prio, id)
if not rank then return nil end
local trueAhead = redis.call('LLEN', wait) + rank
local mean = tonumber(redis.call('HGET', fair, 'rows_mean') or '1') or 1
local f = redis.call('HMGET', job, 'qpos', 'qrows', 'qeta', 'qats', 'ats')
local ats = f[5] or '0'
local same = f[4] == ats
local ahead = trueAhead
if same and f[1] then ahead = math.min(ahead, tonumber(f[1])) end
local rows = math.floor(ahead * mean + 0.5)
if same and f[2] then rows = math.min(rows, tonumber(f[2])) end
local eta = false
if rate > 0 then eta = math.floor(now + (trueAhead + 1) * 1000 / rate) end
if same and f[3] then
  local was = tonumber(f[3])
  if not eta or was < eta then eta = was end
end
local etaText = eta and string.format('%.0f', eta)
if not same or tostring(ahead) ~= f[1] or tostring(rows) ~= f[2] or (eta and etaText ~= f[3]) then
  if not same then redis.call('HDEL', job, 'qeta') end
  redis.call('HSET', job, 'qpos', ahead, 'qrows', rows, 'qats', ats)
  if eta then redis.call('HSET', job, 'qeta', etaText) end
end
return {ahead, rows, etaText or false}
`;

/** How long after its deadline a job's rows count for its principal at most, should no release come. */
export const LEAK_GRACE_MS = 10 * 60_000;
/**
 * How long an admission counts towards the depth while its job is not in the queue, should the
 * API not clear it (a process that died between the admission and the add).
 */
export const PENDING_ADMISSION_MS = 10_000;

export interface AdmitRequest {
  /** BullMQ's key prefix of the job's queue (`prefix:queueName`). */
  queueKey: string;
  model: string;
  /** The model's queue (partition) the job goes to: 0 unless the model is partitioned. */
  partition?: number;
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
  /** Jobs a rebase moves per admission at most (REBASE_CHUNK unless a test asks for fewer). */
  rebaseChunk?: number;
  /**
   * The fast lane's push to a worker: published once the job is admitted, unless its queue is
   * paused or already holds `maxAhead` jobs (queued, or admitted and being added).
   */
  push?: { channel: string; message: string; maxAhead: number } | undefined;
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
 * API and the workers release. Releases and admission clearings of one event-loop turn go out as
 * one pipeline.
 */
export class AdmissionLedger {
  private readonly admitScript: ScriptCommand;
  private readonly bothScript: ScriptCommand;
  private readonly standingScript: ScriptCommand;
  private readonly requeuedScript: ScriptCommand;
  private readonly writes: TurnBuffer<BatchCommand>;
  private readonly rowsScript: ScriptCommand;
  private readonly unrowsScript: ScriptCommand;
  private readonly releaseScript: ScriptCommand;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    onReleaseError: (err: Error) => void = () => {},
  ) {
    this.admitScript = command(redis, 'quernAdmitQueue', ADMIT_LUA, 4);
    this.bothScript = command(redis, 'quernAdmitBoth', ADMIT_BOTH_LUA, 7);
    this.rowsScript = command(redis, 'quernAdmitRows', ROWS_LUA, 3);
    this.unrowsScript = command(redis, 'quernUnadmitRows', UNROWS_LUA, 3);
    this.releaseScript = command(redis, 'quernReleaseRows', RELEASE_LUA, 2);
    // One pipeline per turn (per shard on a Cluster: the principals' and queues' keys are spread).
    const send = (commands: BatchCommand[]) => {
      execBatch(this.redis, commands).then(
        (replies) => {
          const failed = replies.find(([err]) => err);
          if (failed?.[0]) onReleaseError(failed[0]);
        },
        (err: Error) => onReleaseError(err),
      );
    };
    // Releases of rows and clearings of admissions: one pipeline per turn for both.
    this.writes = new TurnBuffer((commands) => send(commands), 'turn');
    this.standingScript = command(redis, 'quernStanding', STANDING_LUA, 4);
    this.requeuedScript = command(redis, 'quernRequeued', REQUEUED_LUA, 2);
  }

  async admit(req: AdmitRequest): Promise<AdmitDecision> {
    const now = Date.now();
    const partition = req.partition ?? 0;
    const ownerKeys = [
      this.keys.keyRows(req.owner),
      this.keys.keyRowsExpiry(req.owner),
      this.keys.ownerJobs(req.owner),
    ];
    const queueKeys = [
      `${req.queueKey}:wait`,
      `${req.queueKey}:prioritized`,
      this.keys.queueAdmissions(req.model, partition),
      this.keys.fairShare(req.model, partition),
    ];
    const rowArgs = [
      req.jobId,
      req.rows,
      now,
      req.maxRows,
      Math.max(now, req.deadlineAt) + LEAK_GRACE_MS,
      req.recentJobsTtlMs,
    ];
    const fairArgs = [
      req.priorityClass,
      req.weight,
      req.quantumRows,
      req.owner,
      req.rebaseChunk ?? REBASE_CHUNK,
      req.push?.channel ?? '',
      req.push?.message ?? '',
      req.push?.maxAhead ?? 0,
    ];
    if (!this.keys.spread) {
      // Every key in one slot: both steps in one script, one round trip.
      const [code, value, priority] = (await this.bothScript(
        ...ownerKeys,
        ...queueKeys,
        ...rowArgs,
        `${req.queueKey}:`,
        req.maxDepth,
        PENDING_ADMISSION_MS,
        ...fairArgs,
      )) as [number, number, number?];
      if (code === 2) return { kind: 'concurrency_limited', heldRows: Number(value) };
      if (code === 1) return { kind: 'queue_full', depth: Number(value) };
      return { kind: 'admitted', heldRows: Number(value), priority: Number(priority ?? req.priorityClass) };
    }
    // Spread over a Cluster: the principal's step first, its rows held before the queue's depth is counted.
    const [rowsCode, held, addedRows, listedBefore] = (await this.rowsScript(...ownerKeys, ...rowArgs)) as [
      number,
      number,
      number?,
      number?,
    ];
    if (rowsCode === 2) return { kind: 'concurrency_limited', heldRows: Number(held) };
    const giveBack = () =>
      addedRows === 1 ? this.unrowsScript(...ownerKeys, req.jobId, listedBefore ?? 0) : Promise.resolve();
    let reply: [number, number];
    try {
      reply = (await this.admitScript(
        ...queueKeys,
        `${req.queueKey}:`,
        req.jobId,
        req.rows,
        now,
        req.maxDepth,
        PENDING_ADMISSION_MS,
        ...fairArgs,
      )) as [number, number];
    } catch (err) {
      // Not admitted (Redis failed in between): the rows are not left held until their deadline.
      await giveBack().catch(() => undefined);
      throw err;
    }
    const [code, value] = reply;
    if (code === 1) {
      await giveBack();
      return { kind: 'queue_full', depth: Number(value) };
    }
    return { kind: 'admitted', heldRows: Number(held), priority: Number(value ?? req.priorityClass) };
  }

  /** The same, now: before the job's id is admitted again (a client's retry). */
  async releaseNow(owner: string, jobId: string): Promise<void> {
    await this.releaseScript(this.keys.keyRows(owner), this.keys.keyRowsExpiry(owner), jobId);
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
    this.writes.push(['quernReleaseRows', this.keys.keyRows(owner), this.keys.keyRowsExpiry(owner), jobId]);
  }

  /**
   * The admitted job's add returned: it no longer counts as an add in flight (BullMQ counts it
   * while it waits). Cleared in one pipeline per event-loop turn.
   */
  added(model: string, jobId: string, partition = 0): void {
    this.writes.push(['zrem', this.keys.queueAdmissions(model, partition), jobId]);
  }

  /**
   * A job BullMQ put back after a failed attempt or a stall goes to the front of its class's band
   * (`REQUEUED_LUA`), not where its old priority number would put it now. Fair share only.
   */
  async requeued(queueKey: string, jobId: string): Promise<boolean> {
    return (await this.requeuedScript(`${queueKey}:prioritized`, `${queueKey}:${jobId}`, jobId)) === 1;
  }

  /** The admitted job's add failed: neither its admission nor its rows count any more. */
  notAdded(model: string, owner: string, jobId: string, partition = 0): void {
    this.added(model, jobId, partition);
    this.release(owner, jobId);
  }

  /**
   * Where a queued job stands (see `STANDING_LUA`): jobs ahead of it, their rows, and when it is
   * expected to start, each never above what an earlier read of this job said. `ratePerSecond`
   * is the model's recent completions per second (0: unknown). O(log n): one ZRANK, never a walk.
   */
  async standing(
    queueKey: string,
    model: string,
    jobId: string,
    ratePerSecond = 0,
    now = Date.now(),
    partition = 0,
  ): Promise<{ ahead: number; aheadRows: number; startAt: number | null } | null> {
    const reply = (await this.standingScript(
      `${queueKey}:prioritized`,
      `${queueKey}:wait`,
      this.keys.fairShare(model, partition),
      `${queueKey}:${jobId}`,
      jobId,
      now,
      ratePerSecond,
    )) as [number, number, number | null] | null;
    if (!reply) return null;
    const [ahead, aheadRows, startAt] = reply;
    return { ahead: Number(ahead), aheadRows: Number(aheadRows), startAt: startAt === null ? null : Number(startAt) };
  }

  /** Rows the principal has queued or running now. */
  async heldRows(owner: string): Promise<number> {
    return Number((await this.redis.hget(this.keys.keyRows(owner), 'total')) ?? 0);
  }
}
