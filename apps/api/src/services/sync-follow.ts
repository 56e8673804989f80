import { type InferenceResult, type JobErrorCode, type JobSnapshot, jobView, type ModelEntry } from '@quern/shared';
import type { JobService, JobView } from './job-service';
import { completedEvent, type ResultWaiter, type WaitHandle } from './result-waiter';

/** What a sync call learns about its job: an outcome, or `pending` (the job goes on; 202). */
export type FollowOutcome =
  | { kind: 'completed'; result: InferenceResult }
  | { kind: 'failed'; code: JobErrorCode; message: string }
  /** The job no longer exists (canceled while queued, or removed). */
  | { kind: 'gone' }
  | { kind: 'pending'; view: JobView };

/** A little past the deadline, so that a job still queued then surely reads `expired`. */
const DEADLINE_MARGIN_MS = 25;

/** A job's snapshot as a sync caller hears it: a finished job gives its real answer. */
export function outcomeOf(snapshot: JobSnapshot, model: ModelEntry): FollowOutcome {
  const view = jobView(snapshot, model);
  switch (view.status) {
    case 'succeeded':
      return completedEvent(snapshot.returnvalue);
    case 'failed':
    case 'expired':
    case 'canceled':
      return {
        kind: 'failed',
        code: (view.error?.code as JobErrorCode | undefined) ?? 'internal_error',
        message: view.error?.message ?? '',
      };
    default:
      return { kind: 'pending', view };
  }
}

/** The job's state now, read from Redis, as a sync caller hears it. */
export async function currentOutcome(
  jobs: JobService,
  jobId: string,
  owner: string,
  model: ModelEntry,
): Promise<FollowOutcome> {
  const found = await jobs.find(jobId, owner);
  return found ? outcomeOf(await jobs.snapshot(found), model) : { kind: 'gone' };
}

/**
 * Follows a job for a sync caller, for up to `waitMs`. `timeout_ms` bounds only the time a job
 * spends queued, so at the deadline the job is read: still queued means expired (the caller hears
 * so at once, not at the end of its wait); a job a worker holds may still finish (or be dropped
 * by the worker as expired), so the wait goes on. When the wait runs out, a job that finished in
 * the meantime gives its answer; otherwise the caller gets `pending`. `stop` ends the wait early
 * (the client went away, or the process is shutting down).
 */
export async function followJob(args: {
  waiter: ResultWaiter;
  jobs: JobService;
  handle: WaitHandle;
  jobId: string;
  owner: string;
  model: ModelEntry;
  waitMs: number;
  deadlineAt: number;
  /** A caller that goes away: the wait in progress ends at once. */
  signal?: AbortSignal;
  stop: () => boolean;
}): Promise<FollowOutcome> {
  const { waiter, jobs, jobId, owner, model, stop } = args;
  const endAt = Date.now() + args.waitMs;
  let handle = args.handle;
  args.signal?.addEventListener('abort', () => handle.cancel(), { once: true });
  let untilDeadline = Math.max(0, args.deadlineAt - Date.now()) + DEADLINE_MARGIN_MS;
  for (;;) {
    const outcome = await handle.wait(Math.min(Math.max(0, endAt - Date.now()), untilDeadline));
    if (outcome.kind !== 'timeout') return outcome;
    untilDeadline = Number.POSITIVE_INFINITY;
    if (stop() || Date.now() >= endAt) return currentOutcome(jobs, jobId, owner, model);
    // The deadline passed with time left to wait: register again before reading, so that an
    // event between the read and the wait is not missed.
    handle = waiter.register(jobId, model.name);
    const now = await currentOutcome(jobs, jobId, owner, model);
    if (now.kind !== 'pending' || now.view.status !== 'running') {
      handle.cancel();
      return now;
    }
  }
}
