import {
  type InferenceResult,
  type JobErrorCode,
  type ModelEntry,
  QuernError,
  type RowMatrix,
  type SubmitMode,
} from '@quern/shared';
import type { Context } from 'hono';
import type { AppEnv } from '../env';
import type { JobView } from '../services/job-service';
import { followJob, outcomeOf } from '../services/sync-follow';
import { waitPreference } from './inference-input';
import { claimJob, findReplayedJob } from './submission';

export type SyncOutcome =
  | { kind: 'completed'; jobId: string; result: InferenceResult }
  /** The wait ran out: the job goes on; the caller answers 202 with it. */
  | { kind: 'pending'; jobId: string; view: JobView };

/** The problem a sync call answers when its job did not succeed. */
export function failure(jobId: string, code: JobErrorCode | 'gone', message: string): QuernError {
  const extra = { job_id: jobId };
  switch (code) {
    case 'invalid_input':
      return new QuernError('validation_failed', message, { extra });
    case 'canceled':
    case 'gone':
      return new QuernError('job_canceled', 'the job was canceled before it ran', { extra });
    case 'deadline_exceeded':
      return new QuernError('job_expired', 'the job was still queued at its deadline (timeout_ms)', { extra });
    default:
      return new QuernError('inference_failed', 'the job failed; GET /v1/jobs/{id} shows why', { extra });
  }
}

/** A sync call answered 202 because its wait ran out (a shutdown's early answers are not). */
export function countWaitRanOut(c: Context<AppEnv>, model: ModelEntry): void {
  const { waiter, metrics } = c.get('services');
  if (!waiter.draining) metrics.syncWaitTimeouts.labels(model.name).inc();
}

/**
 * Enqueues a job and waits for it, for `/v1/predict` and `/v1/batch-predict`. The waiter is
 * registered before the job is added, so a result that comes back at once is not missed. With an
 * Idempotency-Key used before, it waits for (or answers from) the original job instead. A caller
 * that disconnects cancels its job if the job has not started.
 */
export async function runSyncJob(
  c: Context<AppEnv>,
  route: string,
  body: unknown,
  model: ModelEntry,
  input: RowMatrix,
  mode: SubmitMode,
  options: { timeoutMs?: number | undefined; priority?: number | undefined; cacheChecked?: boolean },
): Promise<SyncOutcome> {
  const { jobs, waiter, metrics } = c.get('services');
  const principal = c.get('principal');
  const waitMs = waitPreference(c);
  const claim = await claimJob(c, route, body, model);
  const jobId = claim.jobId;
  const handle = waiter.register(jobId, model.name);
  let deadlineAt = Number.POSITIVE_INFINITY;

  if (claim.replayed) {
    const found = await findReplayedJob(c, jobId);
    deadlineAt = found.data.deadline_at;
    const now = outcomeOf(await jobs.snapshot(found), model);
    if (now.kind !== 'pending') {
      handle.cancel();
      if (now.kind === 'completed') return { kind: 'completed', jobId, result: now.result };
      throw now.kind === 'failed' ? failure(jobId, now.code, now.message) : failure(jobId, 'gone', '');
    }
  } else {
    try {
      const submitted = await jobs.submit({
        model,
        input,
        mode,
        principal,
        requestId: c.get('requestId'),
        jobId,
        ...options,
      });
      deadlineAt = submitted.data.deadline_at;
    } catch (err) {
      handle.cancel();
      await claim.release();
      throw err;
    }
    metrics.jobsSubmitted.labels(model.name, mode).inc();
  }

  // A caller that goes away no longer needs the answer: drop the job if no batch has it yet.
  const signal = c.req.raw.signal;
  const onAbort = () => {
    handle.cancel();
    if (claim.replayed) return;
    void jobs
      .find(jobId, principal.id)
      .then((found) => (found ? jobs.cancel(found) : undefined))
      .catch((err: Error) => c.get('logger').warn({ err: err.message, job_id: jobId }, 'cancel on disconnect failed'));
  };
  signal.addEventListener('abort', onAbort, { once: true });
  const outcome = await followJob({
    waiter,
    jobs,
    handle,
    jobId,
    owner: principal.id,
    model,
    waitMs,
    deadlineAt,
    signal,
    stop: () => signal.aborted || waiter.draining,
  });
  signal.removeEventListener('abort', onAbort);

  switch (outcome.kind) {
    case 'completed':
      return { kind: 'completed', jobId, result: outcome.result };
    case 'failed':
      throw failure(jobId, outcome.code, outcome.message);
    case 'gone':
      throw failure(jobId, 'gone', '');
    case 'pending':
      if (signal.aborted) throw new QuernError('job_canceled', 'the client went away', { extra: { job_id: jobId } });
      countWaitRanOut(c, model);
      return { kind: 'pending', jobId, view: outcome.view };
  }
}
