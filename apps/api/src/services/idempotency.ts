import { createHash } from 'node:crypto';
import { type KeySpace, newId, QuernError, type RedisClient } from '@quern/shared';
import type { FoundJob, JobService } from './job-service';

/** Canonical JSON: object keys sorted, so the same body always hashes the same. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export type IdempotencyClaim =
  /**
   * First use of the key: create the job with this id, then `confirm()` (the record then lives
   * the full TTL); `release()` if creating it fails.
   */
  | { kind: 'new'; jobId: string; confirm: () => Promise<void>; release: () => Promise<void> }
  /**
   * The key was used before with the same request: answer with that job. `confirmed` is false
   * while the first request has not said its job exists: it may still be on its way, or that
   * request died (or Redis stalled) between the claim and the enqueue. Past `CLAIM_GRACE_MS` the
   * retry creates the job itself, under the same id (BullMQ adds a job id once), and confirms.
   */
  | { kind: 'replay'; jobId: string; confirmed: boolean; claimedAt: number; confirm: () => Promise<void> };

const KEY_SYNTAX = /^[\x21-\x7e]{1,255}$/;

/** How long an unconfirmed claim lives: a claim never outlives, by much, the request that made it. */
export const CLAIM_TTL_SECONDS = 60;
/** How long a retry waits for the first request's job before it creates the job itself. */
export const CLAIM_GRACE_MS = 2_000;

/** Confirms the claim of ARGV[1]'s job (or records it again if it expired and nobody took the key). */
const CONFIRM = `
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).job_id ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1`;

/** Removes the claim only if it is still ARGV[1]'s job's. */
const RELEASE = `
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).job_id == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

interface IdempotencyRecord {
  fingerprint: string;
  job_id: string;
  /** Epoch ms of the claim. */
  at: number;
  /** The job exists (the record then lives the full TTL). */
  confirmed?: boolean;
}

/**
 * `Idempotency-Key` for job-creating requests. The first request with a key claims it with an
 * atomic `SET NX` (so 100 concurrent requests create one job) for a short while, and confirms it
 * for QUERN_IDEMPOTENCY_TTL_SECONDS (24 h) once its job exists; a later request with the same
 * key and request gets the same job, with a different request a 422. A claim whose request
 * never enqueued (a crash, a Redis stall that ran the `SET` after the client had given up) is
 * taken over by the next retry, which creates the job under the claimed id. Scoped per principal.
 */
export class Idempotency {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeySpace,
    private readonly ttlSeconds: number,
  ) {}

  async claim(owner: string, idempotencyKey: string, route: string, body: unknown): Promise<IdempotencyClaim> {
    if (!KEY_SYNTAX.test(idempotencyKey)) {
      throw new QuernError('validation_failed', 'Idempotency-Key must be 1 to 255 visible ASCII characters', {
        errors: [{ field: 'Idempotency-Key', message: 'must be 1 to 255 visible ASCII characters' }],
      });
    }
    const key = this.keys.idempotency(owner, createHash('sha256').update(idempotencyKey).digest('base64url'));
    const fingerprint = createHash('sha256')
      .update(`${route}\n${canonical(body)}`)
      .digest('base64url');
    const record: IdempotencyRecord = { fingerprint, job_id: newId('job'), at: Date.now() };
    // Both only touch the record of this claim's job: a claim that outlived its 60 s (a long stall)
    // may have been taken by another request since.
    const confirm = (r: IdempotencyRecord) => async () => {
      await this.redis.eval(CONFIRM, 1, key, r.job_id, JSON.stringify({ ...r, confirmed: true }), this.ttlSeconds);
    };
    const claimed = await this.redis.set(key, JSON.stringify(record), 'EX', CLAIM_TTL_SECONDS, 'NX');
    if (claimed === 'OK') {
      return {
        kind: 'new',
        jobId: record.job_id,
        confirm: confirm(record),
        release: async () => void (await this.redis.eval(RELEASE, 1, key, record.job_id)),
      };
    }
    const existing = await this.redis.get(key);
    if (existing === null) {
      // The first request failed and released the key in between: this one may try again.
      return this.claim(owner, idempotencyKey, route, body);
    }
    const found = JSON.parse(existing) as IdempotencyRecord;
    if (found.fingerprint !== fingerprint) {
      throw new QuernError(
        'idempotency_key_reused',
        'this Idempotency-Key was used with a different request in the last 24 hours',
        { extra: { job_id: found.job_id } },
      );
    }
    return {
      kind: 'replay',
      jobId: found.job_id,
      // Records of older versions had no claim time: their job was created.
      confirmed: found.confirmed === true || found.at === undefined,
      claimedAt: found.at ?? 0,
      confirm: confirm(found),
    };
  }
}

/**
 * The job an earlier request with the same Idempotency-Key created. It may still be on its way
 * into the queue (that request claimed the key a moment ago), so look for it for a short while.
 * A claim nobody confirmed within CLAIM_GRACE_MS has no request behind it any more (it crashed,
 * or Redis ran its claim after it had given up): this request then creates the job, under the
 * claimed id, with `create`. BullMQ adds a job id once, so a late first request adds nothing.
 */
export async function findClaimedJob(
  jobs: JobService,
  owner: string,
  claim: Extract<IdempotencyClaim, { kind: 'replay' }>,
  create: () => Promise<unknown>,
): Promise<FoundJob> {
  const giveUpAt = Date.now() + 5_000;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    const found = await jobs.find(claim.jobId, owner);
    if (found) return found;
    const now = Date.now();
    if (!claim.confirmed && now >= claim.claimedAt + CLAIM_GRACE_MS) {
      await create();
      await claim.confirm();
      const created = await jobs.find(claim.jobId, owner);
      if (created) return created;
    }
    if (now > giveUpAt) {
      throw new QuernError('service_unavailable', 'the request with this Idempotency-Key is still being processed', {
        headers: { 'retry-after': '1' },
      });
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}
