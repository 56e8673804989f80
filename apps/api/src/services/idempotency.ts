import { createHash } from 'node:crypto';
import { type KeySpace, newId, QuernError, type RedisClient } from '@quern/shared';

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
  /** First use of the key: create the job with this id, and `release()` if creating fails. */
  | { kind: 'new'; jobId: string; release: () => Promise<void> }
  /** The key was used before with the same request: answer with that job. */
  | { kind: 'replay'; jobId: string };

const KEY_SYNTAX = /^[\x21-\x7e]{1,255}$/;

/**
 * `Idempotency-Key` for job-creating requests. The first request with a key claims it with an
 * atomic `SET NX` (so 100 concurrent requests create one job) and records the job id and a hash of
 * the request; a later one with the same key and request gets the same job, with a different
 * request a 422. Records live QUERN_IDEMPOTENCY_TTL_SECONDS (24 h) and are scoped per principal.
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
    const jobId = newId('job');
    const claimed = await this.redis.set(
      key,
      JSON.stringify({ fingerprint, job_id: jobId }),
      'EX',
      this.ttlSeconds,
      'NX',
    );
    if (claimed === 'OK') {
      return { kind: 'new', jobId, release: async () => void (await this.redis.del(key)) };
    }
    const existing = await this.redis.get(key);
    if (existing === null) {
      // The first request failed and released the key in between: this one may try again.
      return this.claim(owner, idempotencyKey, route, body);
    }
    const record = JSON.parse(existing) as { fingerprint: string; job_id: string };
    if (record.fingerprint !== fingerprint) {
      throw new QuernError(
        'idempotency_key_reused',
        'this Idempotency-Key was used with a different request in the last 24 hours',
        { extra: { job_id: record.job_id } },
      );
    }
    return { kind: 'replay', jobId: record.job_id };
  }
}
