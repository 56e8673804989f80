import {
  FAILURE_KINDS,
  type JobFailure,
  type ModelEntry,
  type OipJobFormat,
  QuernError,
  type RowMatrix,
} from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';
import { admitted } from '../middleware/auth';
import type { SyncCall, SyncOutcome } from '../services/sync-path';
import { waitPreference } from './inference-input';
import { claimJob } from './submission';

/** The problem a sync call answers when its job did not succeed (`undefined`: the job is gone). */
export function failure(jobId: string, failed: JobFailure | undefined): QuernError {
  const extra = { job_id: jobId };
  const problem = failed ? FAILURE_KINDS[failed.code].problem : 'job_canceled';
  switch (problem) {
    case 'validation_failed':
      return new QuernError(problem, failed?.message ?? '', { extra });
    case 'job_canceled':
      return new QuernError(problem, 'the job was canceled before it ran', { extra });
    case 'job_expired':
      return new QuernError(
        problem,
        failed?.message ?? 'the job was still queued at its deadline (timeout_ms, or Cancel-After)',
        { extra },
      );
    default:
      return new QuernError('inference_failed', 'the job failed; GET /v1/jobs/{id} shows why', { extra });
  }
}

/**
 * How a sync route starts: the wait the caller asked for (`Prefer`), and whether the result
 * cache may answer. `Prefer: respond-async` (or `wait=0`) always answers 202 with a job, so the
 * cache is left to the worker then, as it is with an Idempotency-Key (the answer must come from
 * the key's job).
 */
export function syncPreferences(c: Context<AppEnv>): { waitMs: number; useCache: boolean } {
  const waitMs = waitPreference(c);
  const idempotent = c.req.header('idempotency-key') !== undefined;
  return { waitMs, useCache: waitMs > 0 && !idempotent && c.get('services').cache.enabled };
}

/** The request's span and context when tracing is on (else undefined, and nothing is built). */
function traceOf(c: Context<AppEnv>): SyncCall['trace'] {
  const span = c.get('span');
  const context = c.get('traceContext');
  return span && context ? { span, context } : undefined;
}

/**
 * Runs one sync call through the sync path (`SyncPath`) and returns its outcome, `completed` or
 * `pending`; a failed job becomes the matching problem. The job id comes from the
 * Idempotency-Key when there is one (`claimJob`, which also applies the queue's depth cap).
 */
export async function runSync(
  c: Context<AppEnv>,
  args: {
    route: string;
    body: unknown;
    model: ModelEntry;
    input: RowMatrix;
    mode: 'sync' | 'batch';
    waitMs: number;
    cacheChecked: boolean;
    timeoutMs: number | undefined;
    /** Run deadline from `Cancel-After` (the /v1 routes read it with `cancelAfterMs`, before this). */
    runTimeoutMs?: number | undefined;
    priority: number | undefined;
    oip?: OipJobFormat | undefined;
  },
): Promise<Extract<SyncOutcome, { kind: 'completed' | 'pending' }>> {
  const { sync, waiter, metrics } = c.get('services');
  const claim = await claimJob(c, args.route, args.body, args.model);
  const outcome = await sync.run({
    principal: c.get('principal'),
    model: args.model,
    input: args.input,
    mode: args.mode,
    priority: args.priority,
    timeoutMs: args.timeoutMs,
    runTimeoutMs: args.runTimeoutMs,
    requestId: c.get('requestId'),
    waitMs: args.waitMs,
    signal: c.req.raw.signal,
    cacheChecked: args.cacheChecked,
    oip: args.oip,
    claim: c.req.header('idempotency-key') === undefined ? undefined : claim,
    trace: traceOf(c),
  });
  if (outcome.kind === 'failed') throw failure(outcome.jobId, outcome.failure);
  if (outcome.kind === 'gone') throw failure(outcome.jobId, undefined);
  // A 202 because the wait ran out: operators read it as a backlog signal. Not when the caller
  // asked not to wait, nor a shutdown's early answers.
  if (outcome.kind === 'pending' && args.waitMs > 0 && !waiter.draining) {
    metrics.syncWaitTimeouts.labels(args.model.name).inc();
  }
  return outcome;
}

/**
 * The cached outputs of `rows` (null where missing), read together with the rate-limit decision
 * in one round trip (`admitted`), and counted as hits and misses. Without the cache (`useCache`
 * false), only the rate-limit decision is awaited.
 */
export async function cachedRows(
  c: Context<AppEnv>,
  model: ModelEntry,
  rows: readonly (readonly number[] | Float32Array)[],
  useCache: boolean,
): Promise<(number[] | null)[]> {
  const { cache, metrics } = c.get('services');
  const hits = await admitted(c, useCache ? cache.lookup(model, rows) : Promise.resolve(rows.map(() => null)));
  if (useCache) {
    const hitCount = hits.filter((h) => h !== null).length;
    metrics.cacheLookups.labels(model.name, 'hit').inc(hitCount);
    metrics.cacheLookups.labels(model.name, 'miss').inc(rows.length - hitCount);
  }
  return hits;
}
